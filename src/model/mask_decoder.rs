//! The SAM mask decoder (reference: `sam2/modeling/sam/mask_decoder.py`): output tokens (object
//! score, IoU, 1 single-mask + 3 multimask tokens) attend to the image through the two-way
//! transformer; the image tokens are upscaled 4x with the high-resolution backbone features
//! mixed in, and per-token hypernetwork MLPs turn the mask tokens into mask logits. Also owns
//! `conv_s0` / `conv_s1`, which project the stride-4 / stride-8 backbone features once per
//! image, and the selection of the output mask (multimask, or the single mask with the
//! stability fallback).
//!
//! Mask selection needs a handful of scalars (IoU predictions and stability scores) on the host;
//! the chosen masks are then gathered on the tensors' device.
//!
//! The upscaling runs channels-last on the transformer's image tokens: each stride-2, kernel-2
//! transposed convolution maps every pixel to its own 2x2 output block, i.e. one linear layer
//! to 4 x C_out values per pixel and a pixel shuffle.

use crate::model::config::{MaskDecoderExtraArgs, ModelConfig};
use crate::model::sam2_utils::{Activation, LAYER_NORM_2D_EPS, LayerNorm, Linear, Mlp, PointwiseConv2d};
use crate::model::transformer::TwoWayTransformer;
use candle_core::{DType, IndexOp, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Multimask outputs (there is one more mask token: the single-mask token 0).
pub const NUM_MULTIMASK_OUTPUTS: usize = 3;
/// Hyper-parameters SAM2 fixes for the decoder's two-way transformer.
pub const TRANSFORMER_DEPTH: usize = 2;
pub const TRANSFORMER_MLP_DIM: usize = 2048;
pub const TRANSFORMER_NUM_HEADS: usize = 8;
pub const ATTENTION_DOWNSAMPLE_RATE: usize = 2;
/// IoU head: MLP with this depth and hidden width.
pub const IOU_HEAD_DEPTH: usize = 3;
pub const IOU_HEAD_HIDDEN_DIM: usize = 256;
/// Object-score value used when the decoder has no object-score head (sigmoid(10) ≈ 1).
const DEFAULT_OBJECT_SCORE: f64 = 10.0;

/// Everything `predict_masks` computes for every mask token.
#[derive(Debug, Clone)]
pub struct MaskPrediction {
    /// `[B, 4, 4He, 4We]`: token 0 single mask, tokens 1..3 multimask.
    pub masks: Tensor,
    /// `[B, 4]` predicted IoU of each mask.
    pub iou_pred: Tensor,
    /// `[B, 4, C]` transformer outputs of the mask tokens.
    pub mask_tokens_out: Tensor,
    /// `[B, 1]` object-presence logit.
    pub object_score_logits: Tensor,
}

/// What `MaskDecoder::forward` returns: the selected masks and their tokens.
#[derive(Debug, Clone)]
pub struct MaskDecoderOutput {
    /// `[B, M, 4He, 4We]` with M = 3 (multimask) or 1.
    pub masks: Tensor,
    /// `[B, M]`.
    pub iou_pred: Tensor,
    /// `[B, 3, C]` multimask tokens when multimask output uses them for object pointers, else
    /// `[B, 1, C]` token 0 (even when the stability fallback returned a multimask mask).
    pub sam_tokens_out: Tensor,
    /// `[B, 1]`.
    pub object_score_logits: Tensor,
    /// For each batch entry, the decoder token whose mask is in `masks` (single-mask output
    /// only: 0, or 1..3 after the stability fallback; empty for multimask output).
    pub single_mask_token: Vec<usize>,
    /// The full prediction the selection was made from.
    pub prediction: MaskPrediction,
}

/// `nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)` on channels-last images.
#[derive(Debug, Clone)]
struct TransposedConv2x2 {
    /// `[4·c_out, c_in]` weight with outputs ordered (dy, dx, c_out), bias repeated per cell.
    linear: Linear,
    out_channels: usize,
}

impl TransposedConv2x2 {
    /// Loads the PyTorch weight `[c_in, c_out, 2, 2]` and bias `[c_out]` under `vb`.
    fn new(vb: VarBuilder, in_channels: usize, out_channels: usize) -> Result<Self> {
        let weight = vb
            .get((in_channels, out_channels, 2, 2), "weight")?
            .permute((2, 3, 1, 0))?
            .reshape((4 * out_channels, in_channels))?;
        let bias = vb.get(out_channels, "bias")?.repeat(4)?;
        Ok(Self {
            linear: Linear::from_parts(&weight, bias)?,
            out_channels,
        })
    }

    /// `[B, H, W, c_in]` → `[B, 2H, 2W, c_out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, _) = x.dims4()?;
        self.linear
            .forward(x)?
            .reshape((b, h, w, 2, 2, self.out_channels))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b, 2 * h, 2 * w, self.out_channels))
    }
}

/// `[B, C, H, W]` → a channels-last view `[B, H, W, C]`.
fn channels_last(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 2, 3, 1))
}

/// The object-score head the configuration asks for.
#[derive(Debug, Clone)]
enum ObjectScoreHead {
    /// `pred_obj_scores_mlp`: 3-layer MLP.
    Mlp(Mlp),
    /// `pred_obj_scores` without the MLP: one linear layer.
    Linear(Linear),
    /// No head: every frame scores `DEFAULT_OBJECT_SCORE`.
    Constant,
}

/// `MaskDecoder` as SAM2Base builds it.
#[derive(Debug, Clone)]
pub struct MaskDecoder {
    transformer_dim: usize,
    transformer: TwoWayTransformer,
    /// `[T, C]`: (object-score token,) IoU token, 4 mask tokens, in the order they enter.
    output_tokens: Tensor,
    /// Index of the IoU token in `output_tokens` (1 with an object-score token, else 0).
    iou_token_index: usize,
    upscale_conv1: TransposedConv2x2,
    /// The upscaling's `LayerNorm2d`, applied over the last dimension of channels-last data.
    upscale_norm: LayerNorm,
    upscale_conv2: TransposedConv2x2,
    /// `conv_s0`, `conv_s1` when high-resolution features are used.
    high_res_projections: Option<(PointwiseConv2d, PointwiseConv2d)>,
    hypernetworks: Vec<Mlp>,
    iou_prediction_head: Mlp,
    object_score_head: ObjectScoreHead,
    use_multimask_token_for_obj_ptr: bool,
    extra: MaskDecoderExtraArgs,
}

impl MaskDecoder {
    /// Loads the decoder under `vb` (`sam_mask_decoder`) with the flags of `config`.
    pub fn new(vb: VarBuilder, config: &ModelConfig) -> Result<Self> {
        let c = config.hidden_dim();
        if !c.is_multiple_of(8) {
            candle_core::bail!("mask decoder width must be a multiple of 8, got {c}");
        }
        let transformer = TwoWayTransformer::new(
            vb.pp("transformer"),
            TRANSFORMER_DEPTH,
            c,
            TRANSFORMER_NUM_HEADS,
            TRANSFORMER_MLP_DIM,
            ATTENTION_DOWNSAMPLE_RATE,
        )?;
        let num_mask_tokens = NUM_MULTIMASK_OUTPUTS + 1;
        let iou_token = vb.pp("iou_token").get((1, c), "weight")?;
        let mask_tokens = vb.pp("mask_tokens").get((num_mask_tokens, c), "weight")?;
        let (output_tokens, iou_token_index) = if config.pred_obj_scores {
            let obj = vb.pp("obj_score_token").get((1, c), "weight")?;
            (Tensor::cat(&[&obj, &iou_token, &mask_tokens], 0)?, 1)
        } else {
            (Tensor::cat(&[&iou_token, &mask_tokens], 0)?, 0)
        };
        let ups = vb.pp("output_upscaling");
        let upscale_conv1 = TransposedConv2x2::new(ups.pp(0), c, c / 4)?;
        let upscale_norm = LayerNorm::new(ups.pp(1), c / 4, LAYER_NORM_2D_EPS)?;
        let upscale_conv2 = TransposedConv2x2::new(ups.pp(3), c / 4, c / 8)?;
        let high_res_projections = if config.use_high_res_features_in_sam {
            Some((
                PointwiseConv2d::new(vb.pp("conv_s0"), c, c / 8)?,
                PointwiseConv2d::new(vb.pp("conv_s1"), c, c / 4)?,
            ))
        } else {
            None
        };
        let hypernetworks = (0..num_mask_tokens)
            .map(|i| {
                Mlp::new(
                    vb.pp("output_hypernetworks_mlps").pp(i),
                    c,
                    c,
                    c / 8,
                    3,
                    Activation::Relu,
                    false,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let iou_prediction_head = Mlp::new(
            vb.pp("iou_prediction_head"),
            c,
            IOU_HEAD_HIDDEN_DIM,
            num_mask_tokens,
            IOU_HEAD_DEPTH,
            Activation::Relu,
            config.iou_prediction_use_sigmoid,
        )?;
        let head_vb = vb.pp("pred_obj_score_head");
        let object_score_head = match (config.pred_obj_scores, config.pred_obj_scores_mlp) {
            (true, true) => {
                ObjectScoreHead::Mlp(Mlp::new(head_vb, c, c, 1, 3, Activation::Relu, false)?)
            }
            (true, false) => ObjectScoreHead::Linear(Linear::new(head_vb, c, 1)?),
            (false, _) => ObjectScoreHead::Constant,
        };
        Ok(Self {
            transformer_dim: c,
            transformer,
            output_tokens,
            iou_token_index,
            upscale_conv1,
            upscale_norm,
            upscale_conv2,
            high_res_projections,
            hypernetworks,
            iou_prediction_head,
            object_score_head,
            use_multimask_token_for_obj_ptr: config.use_multimask_token_for_obj_ptr,
            extra: config.sam_mask_decoder_extra_args.clone(),
        })
    }

    /// Whether the decoder mixes in high-resolution features (and owns `conv_s0` / `conv_s1`).
    pub fn uses_high_res_features(&self) -> bool {
        self.high_res_projections.is_some()
    }

    /// Projects the stride-4 and stride-8 backbone features `[B, C, 4He, 4We]`,
    /// `[B, C, 2He, 2We]` to `C/8` and `C/4` channels (what `SAM2Base.forward_image` caches).
    pub fn project_high_res_features(&self, fpn0: &Tensor, fpn1: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some((conv_s0, conv_s1)) = &self.high_res_projections else {
            candle_core::bail!("this mask decoder does not use high-resolution features");
        };
        Ok((conv_s0.forward(fpn0)?, conv_s1.forward(fpn1)?))
    }

    /// Predicts the masks of all tokens (`predict_masks`). `image_embeddings` `[B, C, He, We]`,
    /// `image_pe` `[1, C, He, We]`, `sparse_prompt_embeddings` `[B, N, C]`,
    /// `dense_prompt_embeddings` `[B, C, He, We]`; `high_res_features` are the projected
    /// `(s0 [B, C/8, 4He, 4We], s1 [B, C/4, 2He, 2We])`.
    pub fn predict_masks(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse_prompt_embeddings: &Tensor,
        dense_prompt_embeddings: &Tensor,
        high_res_features: Option<(&Tensor, &Tensor)>,
    ) -> Result<MaskPrediction> {
        let (b, c, h, w) = image_embeddings.dims4()?;
        if c != self.transformer_dim || sparse_prompt_embeddings.dim(0)? != b {
            candle_core::bail!(
                "mask decoder: image embeddings {:?} and sparse prompts {:?} do not match width {}",
                image_embeddings.dims(),
                sparse_prompt_embeddings.dims(),
                self.transformer_dim
            );
        }
        let num_output = self.output_tokens.dim(0)?;
        let output_tokens = self.output_tokens.unsqueeze(0)?.broadcast_as((b, num_output, c))?;
        let tokens = Tensor::cat(&[&output_tokens, sparse_prompt_embeddings], 1)?;
        let src = (image_embeddings + dense_prompt_embeddings)?;

        let (hs, src) = self.transformer.forward(&src, image_pe, &tokens)?;
        let s = self.iou_token_index;
        let num_mask_tokens = self.hypernetworks.len();
        let iou_token_out = hs.i((.., s, ..))?;
        let mask_tokens_out = hs.narrow(1, s + 1, num_mask_tokens)?;

        let high_res = match (high_res_features, self.uses_high_res_features()) {
            (Some((s0, s1)), true) => Some((channels_last(s0)?, channels_last(s1)?)),
            (None, false) => None,
            (given, _) => candle_core::bail!(
                "mask decoder {} high-resolution features but {} given",
                if self.uses_high_res_features() { "needs" } else { "takes no" },
                if given.is_some() { "they were" } else { "none were" }
            ),
        };
        // Channels-last throughout: the image tokens are already [B, HW, C].
        let mut x = self.upscale_conv1.forward(&src.reshape((b, h, w, c))?)?;
        if let Some((_, s1)) = &high_res {
            x = (x + s1)?;
        }
        let x = self.upscale_norm.forward_activated(&x, Activation::Gelu)?;
        let mut x = self.upscale_conv2.forward(&x)?;
        if let Some((s0, _)) = &high_res {
            x = (x + s0)?;
        }
        let upscaled = Activation::Gelu.apply(&x)?;

        let hyper_in = self
            .hypernetworks
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&mask_tokens_out.i((.., i, ..))?))
            .collect::<Result<Vec<_>>>()?;
        let hyper_in = Tensor::stack(&hyper_in, 1)?;
        let (_, uh, uw, uc) = upscaled.dims4()?;
        let masks = hyper_in
            .matmul(&upscaled.reshape((b, uh * uw, uc))?.t()?)?
            .reshape((b, num_mask_tokens, uh, uw))?;

        let iou_pred = self.iou_prediction_head.forward(&iou_token_out)?;
        let object_score_logits = match &self.object_score_head {
            ObjectScoreHead::Mlp(mlp) => mlp.forward(&hs.i((.., 0, ..))?)?,
            ObjectScoreHead::Linear(linear) => linear.forward(&hs.i((.., 0, ..))?)?,
            ObjectScoreHead::Constant => {
                Tensor::full(DEFAULT_OBJECT_SCORE as f32, (b, 1), hs.device())?
            }
        };
        Ok(MaskPrediction {
            masks,
            iou_pred,
            mask_tokens_out,
            object_score_logits,
        })
    }

    /// Predicts masks and selects the output (`forward`, with `repeat_image=False`): tokens 1..3
    /// when `multimask_output`; otherwise token 0, or, with `dynamic_multimask_via_stability`,
    /// the best multimask token for entries whose token-0 mask is unstable.
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse_prompt_embeddings: &Tensor,
        dense_prompt_embeddings: &Tensor,
        multimask_output: bool,
        high_res_features: Option<(&Tensor, &Tensor)>,
    ) -> Result<MaskDecoderOutput> {
        let prediction = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            high_res_features,
        )?;
        let num_mask_tokens = self.hypernetworks.len();
        let (masks, iou_pred, single_mask_token) = if multimask_output {
            (
                prediction.masks.narrow(1, 1, num_mask_tokens - 1)?,
                prediction.iou_pred.narrow(1, 1, num_mask_tokens - 1)?,
                Vec::new(),
            )
        } else {
            let tokens = if self.extra.dynamic_multimask_via_stability {
                self.stable_or_best_multimask_tokens(&prediction)?
            } else {
                vec![0; prediction.masks.dim(0)?]
            };
            let masks = select_per_batch(&prediction.masks, &tokens)?;
            let ious = select_per_batch(&prediction.iou_pred, &tokens)?;
            (masks, ious, tokens)
        };
        let sam_tokens_out = if multimask_output && self.use_multimask_token_for_obj_ptr {
            prediction.mask_tokens_out.narrow(1, 1, num_mask_tokens - 1)?
        } else {
            prediction.mask_tokens_out.narrow(1, 0, 1)?
        };
        Ok(MaskDecoderOutput {
            masks,
            iou_pred,
            sam_tokens_out,
            object_score_logits: prediction.object_score_logits.clone(),
            single_mask_token,
            prediction,
        })
    }

    /// `_dynamic_multimask_via_stability`: per batch entry, token 0 if its stability score
    /// reaches the threshold, else the multimask token with the highest predicted IoU.
    fn stable_or_best_multimask_tokens(&self, prediction: &MaskPrediction) -> Result<Vec<usize>> {
        let single = prediction.masks.narrow(1, 0, 1)?;
        let stability: Vec<f32> = stability_scores(&single, self.extra.dynamic_multimask_stability_delta)?
            .flatten_all()?
            .to_vec1()?;
        let ious: Vec<Vec<f32>> = prediction.iou_pred.to_vec2()?;
        let thresh = self.extra.dynamic_multimask_stability_thresh as f32;
        Ok(stability
            .iter()
            .zip(&ious)
            .map(|(&score, row)| {
                if score >= thresh {
                    0
                } else {
                    1 + first_argmax(&row[1..])
                }
            })
            .collect())
    }
}

/// Index of the first maximum (like `torch.argmax`); 0 for an empty slice.
pub fn first_argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Picks entry `indices[b]` along dimension 1 for every batch entry `b`, keeping the dimension:
/// `[B, K, ...]` → `[B, 1, ...]`.
pub fn select_per_batch(x: &Tensor, indices: &[usize]) -> Result<Tensor> {
    if x.dim(0)? != indices.len() {
        candle_core::bail!("{} indices for a batch of {}", indices.len(), x.dim(0)?);
    }
    let rows = indices
        .iter()
        .enumerate()
        .map(|(b, &i)| x.narrow(0, b, 1)?.narrow(1, i, 1))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
}

/// Stability score of mask logits `[B, M, H, W]` → `[B, M]`: the area above `+delta` over the
/// area above `-delta` (1 where the latter is empty).
pub fn stability_scores(mask_logits: &Tensor, delta: f64) -> Result<Tensor> {
    let flat = mask_logits.flatten_from(2)?;
    let area = |threshold: f64| -> Result<Tensor> {
        flat.gt(threshold)?.to_dtype(DType::F32)?.sum(D::Minus1)
    };
    let area_i = area(delta)?;
    let area_u = area(-delta)?;
    let ratio = (&area_i / &area_u)?;
    area_u.gt(0.0)?.where_cond(&ratio, &area_u.ones_like()?)
}
