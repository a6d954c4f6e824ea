//! The SAM prompt encoder (reference: `sam2/modeling/sam/prompt_encoder.py`): embeds point
//! prompts as sparse tokens and a low-resolution mask prompt as a dense feature map, and owns
//! the random-Fourier position encoding of the image grid (`get_dense_pe`).
//!
//! SAM2 never hands boxes to the prompt encoder: its predictors turn a box into two points with
//! labels 2 (top-left) and 3 (bottom-right), and `SAM2Base` always calls the encoder with
//! `boxes=None`, so a padding point (label -1) is always appended. This port therefore takes
//! points only and always pads.

use crate::model::position_encoding::PositionEmbeddingRandom;
use crate::model::memory_encoder::MaskDownSampler;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Label of the padding point appended to every prompt; its embedding is `not_a_point_embed`.
pub const PADDING_LABEL: i64 = -1;

/// Point prompts of a batch: `coords` `[B, N, 2]` (x, y) in model-input pixels, `labels`
/// `[B, N]` (0 negative click, 1 positive click, 2 / 3 box corners, -1 padding), any numeric
/// dtype.
#[derive(Debug, Clone)]
pub struct PointPrompt {
    pub coords: Tensor,
    pub labels: Tensor,
}

impl PointPrompt {
    /// Builds a prompt for one image from (x, y) pixel coordinates and labels.
    pub fn from_points(points: &[[f32; 2]], labels: &[i64], device: &candle_core::Device) -> Result<Self> {
        if points.len() != labels.len() {
            candle_core::bail!(
                "{} point coordinates but {} labels",
                points.len(),
                labels.len()
            );
        }
        let flat: Vec<f32> = points.iter().flat_map(|p| p.iter().copied()).collect();
        Ok(Self {
            coords: Tensor::from_vec(flat, (1, points.len(), 2), device)?,
            labels: Tensor::from_vec(labels.to_vec(), (1, labels.len()), device)?,
        })
    }

    /// The prompt `SAM2Base` uses when a frame has no points: one padding point at (0, 0).
    pub fn padding_only(batch: usize, device: &candle_core::Device) -> Result<Self> {
        Ok(Self {
            coords: Tensor::zeros((batch, 1, 2), DType::F32, device)?,
            labels: Tensor::full(PADDING_LABEL, (batch, 1), device)?,
        })
    }

    /// Number of points per image (without the padding point the encoder appends).
    pub fn num_points(&self) -> Result<usize> {
        self.labels.dim(1)
    }
}

/// `PromptEncoder` with SAM2's fixed hyper-parameters (4 point embeddings, `mask_in_chans` 16,
/// GELU in the mask branch).
#[derive(Debug, Clone)]
pub struct PromptEncoder {
    embed_dim: usize,
    image_embedding_size: (usize, usize),
    input_image_size: (usize, usize),
    pe_layer: PositionEmbeddingRandom,
    /// `point_embeddings.{0..3}` `[1, C]`: negative, positive, box top-left, box bottom-right.
    point_embeddings: Vec<Tensor>,
    not_a_point_embed: Tensor,
    no_mask_embed: Tensor,
    /// `mask_downscaling`: two 2x2 stride-2 [conv, LayerNorm2d, GELU] stages (1 → 4 → 16
    /// channels; SAM2 fixes `mask_in_chans` to 16), then a 1x1 conv to `embed_dim`.
    mask_downscaling: MaskDownSampler,
    /// `get_dense_pe()`, `[1, C, He, We]`, computed once.
    dense_pe: Tensor,
}

impl PromptEncoder {
    /// Loads the weights under `vb` (`sam_prompt_encoder` in a SAM2 checkpoint).
    /// `image_embedding_size` is the stride-16 grid `(H, W)`, `input_image_size` the model input
    /// `(H, W)` in pixels.
    pub fn new(
        vb: VarBuilder,
        embed_dim: usize,
        image_embedding_size: (usize, usize),
        input_image_size: (usize, usize),
    ) -> Result<Self> {
        if !embed_dim.is_multiple_of(2) {
            candle_core::bail!("prompt embedding dimension must be even, got {embed_dim}");
        }
        let pe_layer = PositionEmbeddingRandom::new(vb.pp("pe_layer"), embed_dim / 2)?;
        let point_embeddings = (0..4)
            .map(|i| vb.pp("point_embeddings").pp(i).get((1, embed_dim), "weight"))
            .collect::<Result<Vec<_>>>()?;
        let not_a_point_embed = vb.pp("not_a_point_embed").get((1, embed_dim), "weight")?;
        let no_mask_embed = vb.pp("no_mask_embed").get((1, embed_dim), "weight")?;
        let mask_downscaling = MaskDownSampler::from_layers(vb.pp("mask_downscaling"), [2, 2, 0], 2, embed_dim)?;
        let (eh, ew) = image_embedding_size;
        let dense_pe = pe_layer.forward(eh, ew)?.unsqueeze(0)?;
        Ok(Self {
            embed_dim,
            image_embedding_size,
            input_image_size,
            pe_layer,
            point_embeddings,
            not_a_point_embed,
            no_mask_embed,
            mask_downscaling,
            dense_pe,
        })
    }

    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// Spatial size a mask prompt must have: 4x the embedding grid (`mask_input_size`).
    pub fn mask_input_size(&self) -> (usize, usize) {
        (4 * self.image_embedding_size.0, 4 * self.image_embedding_size.1)
    }

    /// Position encoding of the embedding grid, `[1, C, He, We]` (`get_dense_pe`).
    pub fn get_dense_pe(&self) -> &Tensor {
        &self.dense_pe
    }

    /// Sparse embeddings `[B, N + 1, C]` of the points plus the padding point
    /// (`_embed_points(pad=True)`).
    fn embed_points(&self, points: &PointPrompt) -> Result<Tensor> {
        let coords = points.coords.to_dtype(DType::F32)?;
        let labels = points.labels.to_dtype(DType::F32)?;
        let (b, n, two) = coords.dims3()?;
        if two != 2 || labels.dims() != [b, n] {
            candle_core::bail!(
                "point prompt needs coords [B, N, 2] and labels [B, N], got {:?} and {:?}",
                coords.dims(),
                labels.dims()
            );
        }
        let device = coords.device().clone();
        let shifted = (coords + 0.5)?;
        let coords = Tensor::cat(&[&shifted, &Tensor::zeros((b, 1, 2), DType::F32, &device)?], 1)?;
        let pad_labels = Tensor::full(PADDING_LABEL as f32, (b, 1), &device)?;
        let labels = Tensor::cat(&[&labels, &pad_labels], 1)?;
        let pe = self
            .pe_layer
            .forward_with_coords(&coords, self.input_image_size)?;
        let shape = pe.shape().clone();
        let is_label = |value: f32| -> Result<Tensor> {
            labels.eq(value as f64)?.unsqueeze(2)?.broadcast_as(&shape)
        };
        let not_a_point = self.not_a_point_embed.broadcast_as(&shape)?;
        let mut embedding = is_label(PADDING_LABEL as f32)?.where_cond(&not_a_point, &pe)?;
        for (label, table) in self.point_embeddings.iter().enumerate() {
            let added = embedding.broadcast_add(table)?;
            embedding = is_label(label as f32)?.where_cond(&added, &embedding)?;
        }
        Ok(embedding)
    }

    /// Dense embedding of a mask prompt `[B, 1, 4He, 4We]` (`mask_downscaling`): `[B, C, He, We]`.
    fn embed_mask(&self, mask: &Tensor) -> Result<Tensor> {
        let (_, channels, h, w) = mask.dims4()?;
        if channels != 1 || (h, w) != self.mask_input_size() {
            candle_core::bail!(
                "mask prompt must be [B, 1, {}, {}], got {:?}",
                self.mask_input_size().0,
                self.mask_input_size().1,
                mask.dims()
            );
        }
        self.mask_downscaling.forward(&mask.to_dtype(DType::F32)?)
    }

    /// Embeds point prompts and an optional mask prompt (`forward(points, boxes=None, masks)`):
    /// sparse `[B, N + 1, C]` and dense `[B, C, He, We]` embeddings. Without a mask the dense
    /// embedding is `no_mask_embed` at every position.
    pub fn forward(&self, points: &PointPrompt, mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let sparse = self.embed_points(points)?;
        let batch = sparse.dim(0)?;
        let dense = match mask {
            Some(mask) => {
                if mask.dim(0)? != batch {
                    candle_core::bail!(
                        "mask prompt batch {} differs from point prompt batch {batch}",
                        mask.dim(0)?
                    );
                }
                self.embed_mask(mask)?
            }
            None => {
                let (eh, ew) = self.image_embedding_size;
                self.no_mask_embed
                    .reshape((1, self.embed_dim, 1, 1))?
                    .broadcast_as((batch, self.embed_dim, eh, ew))?
                    .contiguous()?
            }
        };
        Ok((sparse, dense))
    }
}
