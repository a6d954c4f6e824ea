//! `SAM2Base` (reference: `sam2/modeling/sam2_base.py`): the whole network with the per-frame
//! steps a video predictor drives — image features with the decoder's high-resolution
//! projections (`forward_image`), the memory selection and conditioning of a frame
//! (`select_memory`, `prepare_memory_conditioned_features`: conditioning frames, the
//! `num_maskmem - 1` most recent frames in the tracking direction with their temporal slots,
//! object pointers with signed temporal offsets), the SAM heads with object-score gating, mask
//! selection and object pointers (`forward_sam_heads`), encoding a new memory
//! (`encode_new_memory`) with its bfloat16 storage rounding, and `track_step` tying them
//! together for one frame.
//!
//! The memory bank itself (which outputs are stored, as conditioning or not) belongs to the
//! video predictor (`segment::predictor`); `track_step` reads it through `MemoryBank`.
//!
//! A mask prompt on a frame is taken as that frame's output (`_use_mask_as_output`, with
//! `use_mask_input_as_output_without_sam`); its object pointer still comes from the decoder.
//! Resizing masks follows `F.interpolate(mode="bilinear", align_corners=False)`: plain
//! (Candle's `upsample_bilinear2d`) for upsampling logits, antialiased (written here as two
//! products with PyTorch's triangle-filter weight matrices) where the reference asks for it.
//!
//! Not ported: non-overlap constraints across objects (`non_overlap_masks_for_mem_enc` with a
//! batch of several objects).

use crate::model::config::{ModelConfig, Sam2Config};
use crate::model::image_encoder::{ImageEncoder, ImageEncoderOutput};
use crate::model::mask_decoder::{first_argmax, select_per_batch, MaskDecoder, MaskDecoderOutput};
use crate::model::memory_attention::MemoryAttention;
use crate::model::memory_encoder::{EncodedMemory, MemoryEncoder};
use crate::model::memory_key_cache::{MemoryKeyCache, PreparedMemory};
use crate::model::prompt_encoder::{PointPrompt, PromptEncoder};
use crate::model::sam2_utils::{get_1d_sine_pe, Activation, Linear, Mlp};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use std::collections::BTreeMap;

/// Mask logit standing for "no object" (`NO_OBJ_SCORE`).
pub const NO_OBJ_SCORE: f32 = -1024.0;
/// Temperature of the object pointers' temporal sine encoding.
const OBJ_PTR_TPOS_TEMPERATURE: f64 = 10000.0;

/// Outputs of the SAM heads for one frame (`_forward_sam_heads`).
#[derive(Debug, Clone)]
pub struct SamHeadsOutput {
    /// `[B, M, 4E, 4E]` decoder masks (M = 3 multimask or 1), `NO_OBJ_SCORE` where no object.
    pub low_res_multimasks: Tensor,
    /// `[B, M, S, S]` bilinear upsampling of `low_res_multimasks`.
    pub high_res_multimasks: Tensor,
    /// `[B, M]` predicted IoUs.
    pub ious: Tensor,
    /// `[B, 1, 4E, 4E]` the selected mask (best IoU for multimask output).
    pub low_res_masks: Tensor,
    /// `[B, 1, S, S]`.
    pub high_res_masks: Tensor,
    /// `[B, C]` object pointer (`no_obj_ptr` where no object).
    pub obj_ptr: Tensor,
    /// `[B, 1]`.
    pub object_score_logits: Tensor,
    /// Per batch entry, the decoder token whose mask was selected: 0 single-mask token,
    /// 1..3 multimask tokens (empty when a mask prompt was taken as output).
    pub selected_mask_token: Vec<usize>,
    /// The decoder's raw output (all tokens' masks and IoUs); `None` when a mask prompt was
    /// taken as output.
    pub decoder: Option<MaskDecoderOutput>,
}

/// A stored spatial memory entering a memory-attention call.
#[derive(Debug, Clone, Copy)]
pub struct SpatialMemory<'a> {
    /// `[B, M, E, E]`, f32 or the stored bf16.
    pub features: &'a Tensor,
    /// `[B, M, E, E]` spatial position encoding of the memory.
    pub pos_enc: &'a Tensor,
    /// Temporal slot: 0 for conditioning frames, 1..num_maskmem-1 for the recent frames
    /// (num_maskmem-1 = the adjacent frame).
    pub t_pos: usize,
}

/// An object pointer entering a memory-attention call.
#[derive(Debug, Clone, Copy)]
pub struct ObjectPointer<'a> {
    /// `[B, C]`.
    pub obj_ptr: &'a Tensor,
    /// Temporal offset from the current frame (signed or absolute, as the predictor computes).
    pub tpos: i64,
}

/// The memory-attention inputs built from a frame's memories (batch-first).
#[derive(Debug, Clone)]
pub struct AssembledMemory {
    /// `[B, Nm, M]`: spatial memory tokens, then object-pointer tokens.
    pub memory: Tensor,
    /// `[B, Nm, M]`.
    pub memory_pos: Tensor,
    /// Number of trailing object-pointer tokens in `memory`.
    pub num_obj_ptr_tokens: usize,
}

/// `obj_ptr_proj`: MLP, linear layer or identity depending on the configuration.
#[derive(Debug, Clone)]
enum ObjPtrProjection {
    Mlp(Mlp),
    Linear(Linear),
    Identity,
}

/// The SAM2 network with MedSAM2's flags.
#[derive(Debug)]
pub struct Sam2Base {
    config: ModelConfig,
    image_encoder: ImageEncoder,
    memory_attention: MemoryAttention,
    memory_encoder: MemoryEncoder,
    prompt_encoder: PromptEncoder,
    mask_decoder: MaskDecoder,
    obj_ptr_proj: ObjPtrProjection,
    /// `obj_ptr_tpos_proj` Linear(C, M) when `proj_tpos_enc_in_obj_ptrs`.
    obj_ptr_tpos_proj: Option<Linear>,
    /// `[num_maskmem, 1, 1, M]`.
    maskmem_tpos_enc: Tensor,
    /// `temporal_keys[t_pos][layer]`: what slot `t_pos`'s temporal encoding adds to a spatial
    /// memory's cross-attention keys on the E x E grid (`MemoryAttention::temporal_keys`).
    temporal_keys: Vec<Vec<Option<Tensor>>>,
    /// `[1, 1, C]`.
    no_mem_embed: Tensor,
    no_mem_pos_enc: Tensor,
    /// `[1, C]` when object scores and pointers are used.
    no_obj_ptr: Option<Tensor>,
    /// `[1, M]` when `no_obj_embed_spatial`.
    no_obj_embed_spatial: Option<Tensor>,
    /// Conv 4x4 stride 4 turning a mask prompt into a decoder mask prompt, when object pointers
    /// are used.
    mask_downsample: Option<Conv2d>,
}

impl Sam2Base {
    /// Builds the network from checkpoint weights (`vb` at the checkpoint root).
    pub fn new(vb: VarBuilder, config: &Sam2Config) -> Result<Self> {
        let m = &config.model;
        let c = m.hidden_dim();
        let mem_dim = m.mem_dim();
        if m.pred_obj_scores && !m.use_obj_ptrs_in_encoder {
            candle_core::bail!("pred_obj_scores without use_obj_ptrs_in_encoder is not supported");
        }
        if !c.is_multiple_of(mem_dim) {
            candle_core::bail!("memory width {mem_dim} must divide the hidden width {c}");
        }
        let e = m.image_embedding_size();
        let obj_ptr_proj = match (m.use_obj_ptrs_in_encoder, m.use_mlp_for_obj_ptr_proj) {
            (true, true) => ObjPtrProjection::Mlp(Mlp::new(
                vb.pp("obj_ptr_proj"),
                c,
                c,
                c,
                3,
                Activation::Relu,
                false,
            )?),
            (true, false) => ObjPtrProjection::Linear(Linear::new(vb.pp("obj_ptr_proj"), c, c)?),
            (false, _) => ObjPtrProjection::Identity,
        };
        let obj_ptr_tpos_proj = if m.proj_tpos_enc_in_obj_ptrs {
            Some(Linear::new(vb.pp("obj_ptr_tpos_proj"), c, mem_dim)?)
        } else {
            None
        };
        let no_obj_ptr = if m.pred_obj_scores && m.use_obj_ptrs_in_encoder {
            Some(vb.get((1, c), "no_obj_ptr")?)
        } else {
            None
        };
        let no_obj_embed_spatial = if m.no_obj_embed_spatial {
            Some(vb.get((1, mem_dim), "no_obj_embed_spatial")?)
        } else {
            None
        };
        let mask_downsample = if m.use_obj_ptrs_in_encoder {
            let cfg = Conv2dConfig {
                stride: 4,
                ..Default::default()
            };
            Some(candle_nn::conv2d(1, 1, 4, cfg, vb.pp("mask_downsample"))?)
        } else {
            None
        };
        let memory_attention = MemoryAttention::new(vb.pp("memory_attention"), &m.memory_attention)?;
        let maskmem_tpos_enc = vb.get((m.num_maskmem, 1, 1, mem_dim), "maskmem_tpos_enc")?;
        let temporal_keys = (0..m.num_maskmem)
            .map(|t_pos| memory_attention.temporal_keys(&slot_encoding(&maskmem_tpos_enc, t_pos)?.flatten_all()?, e * e))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: m.clone(),
            image_encoder: ImageEncoder::new(vb.pp("image_encoder"), &m.image_encoder)?,
            memory_attention,
            memory_encoder: MemoryEncoder::new(vb.pp("memory_encoder"), &m.memory_encoder)?,
            prompt_encoder: PromptEncoder::new(
                vb.pp("sam_prompt_encoder"),
                c,
                (e, e),
                (m.image_size, m.image_size),
            )?,
            mask_decoder: MaskDecoder::new(vb.pp("sam_mask_decoder"), m)?,
            obj_ptr_proj,
            obj_ptr_tpos_proj,
            maskmem_tpos_enc,
            temporal_keys,
            no_mem_embed: vb.get((1, 1, c), "no_mem_embed")?,
            no_mem_pos_enc: vb.get((1, 1, c), "no_mem_pos_enc")?,
            no_obj_ptr,
            no_obj_embed_spatial,
            mask_downsample,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn prompt_encoder(&self) -> &PromptEncoder {
        &self.prompt_encoder
    }

    pub fn mask_decoder(&self) -> &MaskDecoder {
        &self.mask_decoder
    }

    pub fn memory_attention(&self) -> &MemoryAttention {
        &self.memory_attention
    }

    pub fn memory_encoder(&self) -> &MemoryEncoder {
        &self.memory_encoder
    }

    /// Image features of normalised `[B, 3, S, S]` images (`forward_image`): the kept FPN levels
    /// with levels 0 and 1 already projected by the decoder's `conv_s0` / `conv_s1` when
    /// high-resolution features are used.
    pub fn forward_image(&self, image: &Tensor) -> Result<ImageEncoderOutput> {
        let mut out = self.image_encoder.forward(image)?;
        if self.mask_decoder.uses_high_res_features() {
            if out.backbone_fpn.len() < 3 {
                candle_core::bail!(
                    "high-resolution SAM features need 3 feature levels, the encoder keeps {}",
                    out.backbone_fpn.len()
                );
            }
            let (s0, s1) = self
                .mask_decoder
                .project_high_res_features(&out.backbone_fpn[0], &out.backbone_fpn[1])?;
            out.backbone_fpn[0] = s0;
            out.backbone_fpn[1] = s1;
        }
        Ok(out)
    }

    /// Whether the SAM heads output 3 masks for a frame (`_use_multimask`).
    pub fn use_multimask(&self, is_init_cond_frame: bool, num_points: usize) -> bool {
        let m = &self.config;
        m.multimask_output_in_sam
            && (is_init_cond_frame || m.multimask_output_for_tracking)
            && (m.multimask_min_pt_num..=m.multimask_max_pt_num).contains(&num_points)
    }

    /// Temporal encoding of a spatial memory in slot `t_pos`, `[1, 1, M]` (see `slot_encoding`).
    fn maskmem_tpos(&self, t_pos: usize) -> Result<Tensor> {
        slot_encoding(&self.maskmem_tpos_enc, t_pos)
    }

    /// Position encodings `[n, M]` of object pointers at temporal offsets `tpos` (normalised by
    /// `min(num_frames, max_obj_ptrs_in_encoder) - 1`, sine-encoded, projected). That divisor
    /// is 0 for a single frame, where the reference produces NaN encodings; this is an error.
    pub fn obj_ptr_pos_enc(&self, tpos: &[i64], num_frames: usize) -> Result<Tensor> {
        let m = &self.config;
        let mem_dim = m.mem_dim();
        let device = self.maskmem_tpos_enc.device();
        if !m.add_tpos_enc_to_obj_ptrs {
            return Tensor::zeros((tpos.len(), mem_dim), DType::F32, device);
        }
        let window = num_frames.min(m.max_obj_ptrs_in_encoder);
        if window < 2 {
            candle_core::bail!(
                "object-pointer offsets are normalised by min(frames, max pointers) - 1, which is \
                 {} for {num_frames} frame(s)",
                window as i64 - 1
            );
        }
        let t_diff_max = window as f32 - 1.0;
        let normalized: Vec<f32> = tpos.iter().map(|&t| t as f32 / t_diff_max).collect();
        let pos = Tensor::from_vec(normalized, tpos.len(), device)?;
        match &self.obj_ptr_tpos_proj {
            Some(proj) => proj.forward(&get_1d_sine_pe(&pos, m.hidden_dim(), OBJ_PTR_TPOS_TEMPERATURE)?),
            None => get_1d_sine_pe(&pos, mem_dim, OBJ_PTR_TPOS_TEMPERATURE),
        }
    }

    /// Concatenates the chosen memories into memory-attention inputs (step 2 of
    /// `_prepare_memory_conditioned_features`): every spatial memory's tokens with its spatial
    /// plus temporal encoding, then every object pointer split into `C / M` tokens sharing its
    /// temporal encoding. `num_frames` is the length of the frame sequence.
    pub fn assemble_memory(
        &self,
        spatial: &[SpatialMemory],
        pointers: &[ObjectPointer],
        num_frames: usize,
    ) -> Result<AssembledMemory> {
        let mut memory = Vec::with_capacity(spatial.len() + 1);
        let mut memory_pos = Vec::with_capacity(spatial.len() + 1);
        for entry in spatial {
            memory.push(memory_tokens(entry.features)?);
            memory_pos.push(memory_tokens(entry.pos_enc)?.broadcast_add(&self.maskmem_tpos(entry.t_pos)?)?);
        }
        let mut num_obj_ptr_tokens = 0;
        if let Some((tokens, pos)) = self.pointer_tokens(pointers, num_frames)? {
            num_obj_ptr_tokens = tokens.dim(1)?;
            memory.push(tokens);
            memory_pos.push(pos);
        }
        if memory.is_empty() {
            candle_core::bail!("a memory needs at least one spatial memory or object pointer");
        }
        Ok(AssembledMemory {
            memory: Tensor::cat(&memory, 1)?,
            memory_pos: Tensor::cat(&memory_pos, 1)?,
            num_obj_ptr_tokens,
        })
    }

    /// The object pointers as memory tokens `[B, P·C/M, M]` (each split into `C / M` tokens)
    /// with their temporal encodings; `None` without pointers or when the encoder uses none.
    fn pointer_tokens(&self, pointers: &[ObjectPointer], num_frames: usize) -> Result<Option<(Tensor, Tensor)>> {
        if !self.config.use_obj_ptrs_in_encoder || pointers.is_empty() {
            return Ok(None);
        }
        let mem_dim = self.config.mem_dim();
        let split = self.config.hidden_dim() / mem_dim;
        let ptrs = pointers.iter().map(|p| p.obj_ptr).collect::<Vec<_>>();
        let ptrs = Tensor::stack(&ptrs, 1)?;
        let (b, n, _) = ptrs.dims3()?;
        let tpos: Vec<i64> = pointers.iter().map(|p| p.tpos).collect();
        let pos = self
            .obj_ptr_pos_enc(&tpos, num_frames)?
            .reshape((1, n, 1, mem_dim))?
            .broadcast_as((b, n, split, mem_dim))?
            .reshape((b, n * split, mem_dim))?;
        Ok(Some((ptrs.reshape((b, n * split, mem_dim))?, pos)))
    }

    /// The frame feature the SAM heads see (`_prepare_memory_conditioned_features`):
    /// `vision_features` `[B, C, E, E]` with its position encoding `vision_pos` conditioned on
    /// `memory` by memory attention; without a memory (initial conditioning frame) the
    /// no-memory embedding is added directly or attended to, as configured.
    pub fn condition_on_memory(
        &self,
        vision_features: &Tensor,
        vision_pos: &Tensor,
        memory: Option<&AssembledMemory>,
    ) -> Result<Tensor> {
        let (b, c, _, _) = vision_features.dims4()?;
        if self.config.num_maskmem == 0 {
            return Ok(vision_features.clone());
        }
        let (memory, memory_pos, num_obj_ptr_tokens) = match memory {
            Some(mem) => (mem.memory.clone(), mem.memory_pos.clone(), mem.num_obj_ptr_tokens),
            None if self.config.directly_add_no_mem_embed => {
                let embed = self.no_mem_embed.reshape((1, c, 1, 1))?;
                return vision_features.broadcast_add(&embed);
            }
            None => {
                let mem_dim = self.config.mem_dim();
                if mem_dim != c {
                    candle_core::bail!(
                        "the no-memory token needs memory width {mem_dim} equal to the hidden width {c}"
                    );
                }
                (
                    self.no_mem_embed.broadcast_as((b, 1, c))?.contiguous()?,
                    self.no_mem_pos_enc.broadcast_as((b, 1, c))?.contiguous()?,
                    0,
                )
            }
        };
        on_tokens(vision_features, vision_pos, |curr, curr_pos| {
            self.memory_attention.forward(curr, curr_pos, &memory, &memory_pos, num_obj_ptr_tokens)
        })
    }

    /// `condition_on_memory(assemble_memory(spatial, pointers, num_frames))` with each spatial
    /// memory's tokens and keys prepared once in `cache` and reused by later calls (only the
    /// temporal-slot table is added per call): the same result up to rounding. Keeps in
    /// `cache` only the memories of this call.
    pub fn condition_on_cached_memory(
        &self,
        vision_features: &Tensor,
        vision_pos: &Tensor,
        spatial: &[SpatialMemory],
        pointers: &[ObjectPointer],
        num_frames: usize,
        cache: &MemoryKeyCache,
    ) -> Result<Tensor> {
        let (_, _, h, w) = vision_features.dims4()?;
        let attention = &self.memory_attention;
        let mut prepared = Vec::with_capacity(spatial.len());
        for entry in spatial {
            let Some(temporal) = self.temporal_keys.get(entry.t_pos) else {
                candle_core::bail!("memory slot {} outside 0..{}", entry.t_pos, self.temporal_keys.len());
            };
            let memory = cache.get_or_prepare(entry.features, || {
                let values = memory_tokens(entry.features)?;
                if values.dim(1)? != h * w {
                    candle_core::bail!("a memory of {} tokens for a {h}x{w} frame", values.dim(1)?);
                }
                let keys = attention.spatial_memory_keys(&values, &memory_tokens(entry.pos_enc)?)?;
                Ok(PreparedMemory { values, keys })
            })?;
            prepared.push((memory, temporal));
        }
        cache.retain(&spatial.iter().map(|entry| entry.features).collect::<Vec<_>>());
        let mut values: Vec<Tensor> = prepared.iter().map(|(memory, _)| memory.values.clone()).collect();
        let pointers = self.pointer_tokens(pointers, num_frames)?;
        let pointer_keys = match &pointers {
            Some((tokens, pos)) => {
                values.push(tokens.clone());
                Some(attention.pointer_keys(tokens, pos)?)
            }
            None => None,
        };
        if values.is_empty() {
            candle_core::bail!("a memory needs at least one spatial memory or object pointer");
        }
        let memory = Tensor::cat(&values, 1)?;
        // Layer i's keys: each spatial memory's prepared keys plus its slot's temporal keys,
        // then the pointers' keys.
        let layer_keys = |i: usize| -> Result<Tensor> {
            let mut keys = Vec::with_capacity(prepared.len() + 1);
            for (memory, temporal) in &prepared {
                keys.push(match &temporal[i] {
                    Some(temporal) => memory.keys[i].broadcast_add(temporal)?,
                    None => memory.keys[i].clone(),
                });
            }
            keys.extend(pointer_keys.as_ref().map(|k| k[i].clone()));
            Tensor::cat(&keys, 1)
        };
        on_tokens(vision_features, vision_pos, |curr, curr_pos| {
            attention.forward_with_rotated_keys(curr, curr_pos, &memory, layer_keys)
        })
    }

    /// Runs the prompt encoder and mask decoder on a frame feature `[B, C, E, E]`
    /// (`_forward_sam_heads`). `points`: `None` means a single padding point; `mask_input`:
    /// `[B, 1, 4E, 4E]` logits; `high_res_features`: the projected `(s0, s1)` levels.
    pub fn forward_sam_heads(
        &self,
        backbone_features: &Tensor,
        points: Option<&PointPrompt>,
        mask_input: Option<&Tensor>,
        high_res_features: Option<(&Tensor, &Tensor)>,
        multimask_output: bool,
    ) -> Result<SamHeadsOutput> {
        let (b, c, h, w) = backbone_features.dims4()?;
        let e = self.config.image_embedding_size();
        if c != self.config.hidden_dim() || h != e || w != e {
            candle_core::bail!(
                "SAM heads expect [B, {}, {e}, {e}] features, got {:?}",
                self.config.hidden_dim(),
                backbone_features.dims()
            );
        }
        let device = backbone_features.device();
        let padding;
        let points = match points {
            Some(p) => p,
            None => {
                padding = PointPrompt::padding_only(b, device)?;
                &padding
            }
        };
        let resized;
        let mask_input = match mask_input {
            Some(mask) if mask.rank() == 4 && mask.dims()[2..] != [4 * e, 4 * e] => {
                resized = resize_bilinear_antialiased(&mask.to_dtype(DType::F32)?, (4 * e, 4 * e))?;
                Some(&resized)
            }
            other => other,
        };
        let (sparse, dense) = self.prompt_encoder.forward(points, mask_input)?;
        let decoder = self.mask_decoder.forward(
            backbone_features,
            self.prompt_encoder.get_dense_pe(),
            &sparse,
            &dense,
            multimask_output,
            high_res_features,
        )?;
        let object_score_logits = decoder.object_score_logits.clone();
        let is_obj = object_score_logits.gt(0.0)?;
        let mut low_res_multimasks = decoder.masks.clone();
        if self.config.pred_obj_scores {
            let keep = is_obj.reshape((b, 1, 1, 1))?.broadcast_as(low_res_multimasks.shape())?;
            let no_obj = Tensor::full(NO_OBJ_SCORE, low_res_multimasks.shape(), device)?;
            low_res_multimasks = keep.where_cond(&low_res_multimasks, &no_obj)?;
        }
        let s = self.config.image_size;
        let high_res_multimasks = low_res_multimasks.upsample_bilinear2d(s, s, false)?;

        let (low_res_masks, high_res_masks, sam_output_token, selected_mask_token) = if multimask_output {
            let ious: Vec<Vec<f32>> = decoder.iou_pred.to_vec2()?;
            let best: Vec<usize> = ious.iter().map(|row| first_argmax(row)).collect();
            let token = if decoder.sam_tokens_out.dim(1)? > 1 {
                select_per_batch(&decoder.sam_tokens_out, &best)?
            } else {
                decoder.sam_tokens_out.narrow(1, 0, 1)?
            };
            (
                select_per_batch(&low_res_multimasks, &best)?,
                select_per_batch(&high_res_multimasks, &best)?,
                token,
                best.iter().map(|i| i + 1).collect(),
            )
        } else {
            (
                low_res_multimasks.clone(),
                high_res_multimasks.clone(),
                decoder.sam_tokens_out.narrow(1, 0, 1)?,
                decoder.single_mask_token.clone(),
            )
        };
        let sam_output_token = sam_output_token.squeeze(1)?;
        let mut obj_ptr = match &self.obj_ptr_proj {
            ObjPtrProjection::Mlp(mlp) => mlp.forward(&sam_output_token)?,
            ObjPtrProjection::Linear(linear) => linear.forward(&sam_output_token)?,
            ObjPtrProjection::Identity => sam_output_token,
        };
        if self.config.pred_obj_scores {
            let lambda = if self.config.soft_no_obj_ptr {
                candle_nn::ops::sigmoid(&object_score_logits)?
            } else {
                is_obj.to_dtype(DType::F32)?
            };
            obj_ptr = self.mix_in_no_obj_ptr(&obj_ptr, &lambda)?;
        }
        Ok(SamHeadsOutput {
            low_res_multimasks,
            high_res_multimasks,
            ious: decoder.iou_pred.clone(),
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
            selected_mask_token,
            decoder: Some(decoder),
        })
    }

    /// Blends an object pointer `[B, C]` with `no_obj_ptr` by the object presence `lambda`
    /// `[B, 1]` (scaled first with `fixed_no_obj_ptr`).
    fn mix_in_no_obj_ptr(&self, obj_ptr: &Tensor, lambda: &Tensor) -> Result<Tensor> {
        let Some(no_obj_ptr) = &self.no_obj_ptr else {
            return Ok(obj_ptr.clone());
        };
        let obj_ptr = if self.config.fixed_no_obj_ptr {
            obj_ptr.broadcast_mul(lambda)?
        } else {
            obj_ptr.clone()
        };
        obj_ptr + lambda.affine(-1.0, 1.0)?.broadcast_mul(no_obj_ptr)?
    }

    /// Takes a mask prompt `[B, 1, S, S]` (binary, any dtype) as the frame's output
    /// (`_use_mask_as_output`): logits ±10, an antialiased 4x downsampling as the low-res mask,
    /// IoU 1, object score ±10 by whether the mask has any foreground, and an object pointer
    /// from the decoder prompted with the downsampled mask.
    pub fn use_mask_as_output(
        &self,
        backbone_features: &Tensor,
        high_res_features: Option<(&Tensor, &Tensor)>,
        mask_inputs: &Tensor,
    ) -> Result<SamHeadsOutput> {
        const OUT_SCALE: f64 = 20.0;
        const OUT_BIAS: f64 = -10.0;
        let mask = mask_inputs.to_dtype(DType::F32)?;
        let (b, _, h, w) = mask.dims4()?;
        let high_res_masks = mask.affine(OUT_SCALE, OUT_BIAS)?;
        let low_res_masks = resize_bilinear_antialiased(&high_res_masks, (h / 4, w / 4))?;
        let ious = Tensor::ones((b, 1), DType::F32, mask.device())?;
        let obj_ptr = match &self.mask_downsample {
            Some(conv) => {
                let prompt = conv.forward(&mask)?;
                self.forward_sam_heads(backbone_features, None, Some(&prompt), high_res_features, false)?
                    .obj_ptr
            }
            None => Tensor::zeros((b, self.config.hidden_dim()), DType::F32, mask.device())?,
        };
        let lambda = mask.flatten_from(1)?.gt(0.0)?.max_keepdim(1)?.to_dtype(DType::F32)?;
        let object_score_logits = lambda.affine(OUT_SCALE, OUT_BIAS)?;
        let obj_ptr = if self.config.pred_obj_scores {
            self.mix_in_no_obj_ptr(&obj_ptr, &lambda)?
        } else {
            obj_ptr
        };
        Ok(SamHeadsOutput {
            low_res_multimasks: low_res_masks.clone(),
            high_res_multimasks: high_res_masks.clone(),
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
            selected_mask_token: Vec::new(),
            decoder: None,
        })
    }

    /// The memory encoder's mask input from high-resolution logits `[B, 1, S, S]`: binarized
    /// (`> 0`) for masks from point prompts when `binarize_mask_from_pts_for_mem_enc`, sigmoid
    /// otherwise, then scaled and shifted (`sigmoid_scale/bias_for_mem_enc`).
    pub fn mask_for_memory(&self, pred_masks_high_res: &Tensor, is_mask_from_pts: bool) -> Result<Tensor> {
        let m = &self.config;
        let mask = if m.binarize_mask_from_pts_for_mem_enc && is_mask_from_pts {
            pred_masks_high_res.gt(0.0)?.to_dtype(DType::F32)?
        } else {
            candle_nn::ops::sigmoid(pred_masks_high_res)?
        };
        mask.affine(m.sigmoid_scale_for_mem_enc, m.sigmoid_bias_for_mem_enc)
    }

    /// Encodes a frame's memory (`_encode_new_memory`): `pix_feat` `[B, C, E, E]` is the raw
    /// stride-16 image feature, `pred_masks_high_res` `[B, 1, S, S]` the frame's mask logits;
    /// frames judged object-free get `no_obj_embed_spatial` added everywhere. The features are
    /// f32; `to_storage_precision` gives what the predictor keeps.
    pub fn encode_new_memory(
        &self,
        pix_feat: &Tensor,
        pred_masks_high_res: &Tensor,
        object_score_logits: &Tensor,
        is_mask_from_pts: bool,
    ) -> Result<EncodedMemory> {
        if self.config.non_overlap_masks_for_mem_enc && pred_masks_high_res.dim(0)? > 1 {
            candle_core::bail!("non-overlap constraints across several objects are not supported");
        }
        let mask = self.mask_for_memory(pred_masks_high_res, is_mask_from_pts)?;
        let mut memory = self.memory_encoder.forward(pix_feat, &mask, true)?;
        if let Some(embed) = &self.no_obj_embed_spatial {
            let b = object_score_logits.dim(0)?;
            let absent = object_score_logits
                .gt(0.0)?
                .to_dtype(DType::F32)?
                .affine(-1.0, 1.0)?
                .reshape((b, 1, 1, 1))?;
            let mem_dim = embed.dim(1)?;
            let added = absent.broadcast_mul(&embed.reshape((1, mem_dim, 1, 1))?)?;
            memory.features = memory.features.broadcast_add(&added)?;
        }
        Ok(memory)
    }
}

/// The image features one frame contributes to a tracking step (from `forward_image`, possibly
/// expanded to a batch of objects).
#[derive(Debug, Clone)]
pub struct FrameFeatures {
    /// `[B, C, E, E]` stride-16 features (`vision_feats[-1]`).
    pub vision_features: Tensor,
    /// `[B, C, E, E]` their sine position encoding.
    pub vision_pos: Tensor,
    /// The decoder's projected stride-4 and stride-8 levels, when high-resolution features are
    /// used.
    pub high_res: Option<(Tensor, Tensor)>,
}

impl FrameFeatures {
    /// The pieces of a `forward_image` output that tracking uses.
    pub fn from_encoder(out: &ImageEncoderOutput, uses_high_res: bool) -> Result<Self> {
        let levels = out.backbone_fpn.len();
        let (Some(vision_features), Some(vision_pos)) = (out.backbone_fpn.last(), out.vision_pos_enc.last()) else {
            candle_core::bail!("the image encoder returned no feature level");
        };
        let high_res = if uses_high_res {
            if levels < 3 {
                candle_core::bail!("high-resolution SAM features need 3 feature levels, got {levels}");
            }
            Some((out.backbone_fpn[0].clone(), out.backbone_fpn[1].clone()))
        } else {
            None
        };
        Ok(Self { vision_features: vision_features.clone(), vision_pos: vision_pos.clone(), high_res })
    }

    /// The same features repeated for `batch` objects (`expand` in the reference); a batch of
    /// one is returned as it is.
    pub fn expand(&self, batch: usize) -> Result<Self> {
        if self.vision_features.dim(0)? == batch {
            return Ok(self.clone());
        }
        let repeat = |x: &Tensor| -> Result<Tensor> {
            let mut dims = x.dims().to_vec();
            dims[0] = batch;
            x.narrow(0, 0, 1)?.broadcast_as(dims)?.contiguous()
        };
        Ok(Self {
            vision_features: repeat(&self.vision_features)?,
            vision_pos: repeat(&self.vision_pos)?,
            high_res: match &self.high_res {
                Some((s0, s1)) => Some((repeat(s0)?, repeat(s1)?)),
                None => None,
            },
        })
    }

    /// Bytes held by the feature tensors (position encoding included).
    pub fn size_in_bytes(&self) -> usize {
        let bytes = |x: &Tensor| x.elem_count() * x.dtype().size_in_bytes();
        bytes(&self.vision_features)
            + bytes(&self.vision_pos)
            + self.high_res.as_ref().map_or(0, |(a, b)| bytes(a) + bytes(b))
    }
}

/// What the video predictor keeps of a frame's output for later frames (the "compact" output):
/// every tensor has the objects as its batch dimension.
#[derive(Debug, Clone)]
pub struct StoredFrame {
    /// `[B, M, E, E]` memory features in storage precision (bf16); `None` when the memory
    /// encoder did not run.
    pub maskmem_features: Option<Tensor>,
    /// `[B, M, E, E]` their position encoding.
    pub maskmem_pos_enc: Option<Tensor>,
    /// `[B, 1, 4E, 4E]` mask logits (after the predictor's hole filling).
    pub pred_masks: Tensor,
    /// `[B, C]` object pointers.
    pub obj_ptr: Tensor,
    /// `[B, 1]` object score logits.
    pub object_score_logits: Tensor,
    /// Per object, the decoder token whose mask was output (`None` for a mask prompt taken as
    /// output or an object without output on this frame).
    pub selected_mask_token: Vec<Option<usize>>,
}

impl StoredFrame {
    /// The entry of object `index` alone (batch of one).
    pub fn object(&self, index: usize) -> Result<Self> {
        let one = |x: &Tensor| x.narrow(0, index, 1);
        Ok(Self {
            maskmem_features: self.maskmem_features.as_ref().map(one).transpose()?,
            maskmem_pos_enc: self.maskmem_pos_enc.as_ref().map(one).transpose()?,
            pred_masks: one(&self.pred_masks)?,
            obj_ptr: one(&self.obj_ptr)?,
            object_score_logits: one(&self.object_score_logits)?,
            selected_mask_token: self.selected_mask_token.get(index).copied().into_iter().collect(),
        })
    }
}

/// The frames a tracking step may draw memories from: the conditioning frames (prompted as
/// initial frames) and the tracked or corrected ones, by frame index.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBank<'a> {
    pub cond_frames: &'a BTreeMap<usize, StoredFrame>,
    pub non_cond_frames: &'a BTreeMap<usize, StoredFrame>,
}

/// Which stored frames condition a frame, in the order they enter memory attention.
#[derive(Debug, Clone)]
pub struct MemoryPlan<'a> {
    /// (frame, temporal slot, entry): conditioning frames with slot 0, then the recent frames.
    pub spatial: Vec<(usize, usize, &'a StoredFrame)>,
    /// (frame, temporal offset, entry): object pointers.
    pub pointers: Vec<(usize, i64, &'a StoredFrame)>,
}

/// Everything one tracking step needs (`track_step`'s arguments).
#[derive(Debug, Clone, Copy)]
pub struct TrackStepInput<'a> {
    pub frame_idx: usize,
    /// A frame prompted before any tracking reached it: no memory is used.
    pub is_init_cond_frame: bool,
    pub features: &'a FrameFeatures,
    /// Clicks or box corners in model-input pixels.
    pub points: Option<&'a PointPrompt>,
    /// `[B, 1, S, S]` mask prompt.
    pub mask_inputs: Option<&'a Tensor>,
    pub bank: MemoryBank<'a>,
    /// The bank's memories prepared by earlier steps (see `condition_on_cached_memory`).
    pub memory_cache: &'a MemoryKeyCache,
    pub num_frames: usize,
    pub track_in_reverse: bool,
    pub run_mem_encoder: bool,
    /// `[B, 1, 4E, 4E]` earlier logits of this frame fed with new clicks as a mask prompt.
    pub prev_sam_mask_logits: Option<&'a Tensor>,
}

/// What one tracking step produced for a frame.
#[derive(Debug, Clone)]
pub struct TrackStepOutput {
    /// `[B, 1, 4E, 4E]` selected low-resolution mask logits (no hole filling).
    pub pred_masks: Tensor,
    /// `[B, 1, S, S]` their bilinear upsampling.
    pub pred_masks_high_res: Tensor,
    /// `[B, C]`.
    pub obj_ptr: Tensor,
    /// `[B, 1]`.
    pub object_score_logits: Tensor,
    /// IoU predictions of the returned masks (`[B, 3]` multimask, `[B, 1]` otherwise).
    pub ious: Tensor,
    /// Per object, the decoder token whose mask was selected (0 single-mask token, 1..3
    /// multimask tokens); empty when a mask prompt was taken as output.
    pub selected_mask_token: Vec<usize>,
    /// `[B, C, E, E]` the memory-conditioned feature the SAM heads saw (`None` when a mask
    /// prompt was taken as output).
    pub pix_feat_with_mem: Option<Tensor>,
    /// `[B, M, E, E]` the new memory rounded to storage precision (bf16), when the memory
    /// encoder ran.
    pub maskmem_features: Option<Tensor>,
    /// `[B, M, E, E]`.
    pub maskmem_pos_enc: Option<Tensor>,
}

/// `select_closest_cond_frames`: up to `max` conditioning frames closest to `frame_idx` (the
/// closest before, the closest at or after, then by distance); -1 = all. Returns the selected
/// and the unselected frame indices.
fn select_closest_cond_frames(frame_idx: usize, cond: &[usize], max: i64) -> (Vec<usize>, Vec<usize>) {
    if max < 0 || cond.len() <= max as usize {
        return (cond.to_vec(), Vec::new());
    }
    let mut selected = Vec::new();
    if let Some(&before) = cond.iter().filter(|&&t| t < frame_idx).max() {
        selected.push(before);
    }
    if let Some(&after) = cond.iter().filter(|&&t| t >= frame_idx).min() {
        selected.push(after);
    }
    let mut rest: Vec<usize> = cond.iter().copied().filter(|t| !selected.contains(t)).collect();
    rest.sort_by_key(|&t| t.abs_diff(frame_idx));
    let remaining = (max as usize).saturating_sub(selected.len());
    selected.extend(rest.into_iter().take(remaining));
    let unselected = cond.iter().copied().filter(|t| !selected.contains(t)).collect();
    selected.sort_unstable();
    (selected, unselected)
}

impl Sam2Base {
    /// The memory selection of `_prepare_memory_conditioned_features` for a frame that is not
    /// an initial conditioning frame: the selected conditioning frames (slot 0), then the
    /// `num_maskmem - 1` previous frames in the tracking direction (with the evaluation
    /// stride), then the object pointers of past conditioning frames and of up to
    /// `min(num_frames, max_obj_ptrs_in_encoder) - 1` previous frames.
    pub fn select_memory<'a>(
        &self,
        frame_idx: usize,
        bank: MemoryBank<'a>,
        num_frames: usize,
        track_in_reverse: bool,
    ) -> MemoryPlan<'a> {
        let m = &self.config;
        let cond_indices: Vec<usize> = bank.cond_frames.keys().copied().collect();
        let (selected, unselected) = select_closest_cond_frames(frame_idx, &cond_indices, m.max_cond_frames_in_attn);
        let previous = |t: i64| -> Option<(usize, &'a StoredFrame)> {
            let t = usize::try_from(t).ok()?;
            bank.non_cond_frames
                .get(&t)
                .or_else(|| unselected.contains(&t).then(|| bank.cond_frames.get(&t)).flatten())
                .map(|entry| (t, entry))
        };
        let mut spatial: Vec<(usize, usize, &'a StoredFrame)> =
            selected.iter().map(|&t| (t, 0, &bank.cond_frames[&t])).collect();
        let stride = m.memory_temporal_stride_for_eval.max(1) as i64;
        let frame = frame_idx as i64;
        for t_pos in 1..m.num_maskmem {
            let t_rel = (m.num_maskmem - t_pos) as i64;
            let prev = match (t_rel, track_in_reverse) {
                (1, false) => frame - 1,
                (1, true) => frame + 1,
                (_, false) => (frame - 2).div_euclid(stride) * stride - (t_rel - 2) * stride,
                (_, true) => -(-(frame + 2)).div_euclid(stride) * stride + (t_rel - 2) * stride,
            };
            if let Some((t, entry)) = previous(prev) {
                spatial.push((t, t_pos, entry));
            }
        }
        let mut pointers = Vec::new();
        if m.use_obj_ptrs_in_encoder {
            let sign: i64 = if track_in_reverse { -1 } else { 1 };
            for &t in &selected {
                let in_past = if track_in_reverse { t >= frame_idx } else { t <= frame_idx };
                if m.only_obj_ptrs_in_the_past_for_eval && !in_past {
                    continue;
                }
                let offset = if m.use_signed_tpos_enc_to_obj_ptrs {
                    (frame - t as i64) * sign
                } else {
                    (frame - t as i64).abs()
                };
                pointers.push((t, offset, &bank.cond_frames[&t]));
            }
            let window = num_frames.min(m.max_obj_ptrs_in_encoder);
            for t_diff in 1..window as i64 {
                let t = if track_in_reverse { frame + t_diff } else { frame - t_diff };
                if t < 0 || t >= num_frames as i64 {
                    break;
                }
                if let Some((t, entry)) = previous(t) {
                    pointers.push((t, t_diff, entry));
                }
            }
        }
        MemoryPlan { spatial, pointers }
    }

    /// `_prepare_memory_conditioned_features`: the frame feature the SAM heads see, conditioned
    /// on the memories `select_memory` picks (none for an initial conditioning frame), which
    /// `cache` prepares for memory attention once across steps.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_memory_conditioned_features(
        &self,
        frame_idx: usize,
        is_init_cond_frame: bool,
        features: &FrameFeatures,
        bank: MemoryBank,
        cache: &MemoryKeyCache,
        num_frames: usize,
        track_in_reverse: bool,
    ) -> Result<Tensor> {
        if is_init_cond_frame || self.config.num_maskmem == 0 {
            return self.condition_on_memory(&features.vision_features, &features.vision_pos, None);
        }
        if bank.cond_frames.is_empty() {
            candle_core::bail!("frame {frame_idx} is tracked but no frame was prompted");
        }
        let plan = self.select_memory(frame_idx, bank, num_frames, track_in_reverse);
        let spatial = plan
            .spatial
            .iter()
            .map(|&(t, t_pos, entry)| match (&entry.maskmem_features, &entry.maskmem_pos_enc) {
                (Some(features), Some(pos_enc)) => Ok(SpatialMemory { features, pos_enc, t_pos }),
                _ => candle_core::bail!("frame {t} has no encoded memory"),
            })
            .collect::<Result<Vec<_>>>()?;
        let pointers: Vec<ObjectPointer> = plan
            .pointers
            .iter()
            .map(|&(_, tpos, entry)| ObjectPointer { obj_ptr: &entry.obj_ptr, tpos })
            .collect();
        self.condition_on_cached_memory(
            &features.vision_features,
            &features.vision_pos,
            &spatial,
            &pointers,
            num_frames,
            cache,
        )
    }

    /// `track_step`: segments one frame from its prompts (or from memory alone) and, when
    /// asked, encodes the result as a new memory. A mask prompt is taken as the output when
    /// `use_mask_input_as_output_without_sam`; new clicks on an already predicted frame come
    /// with that frame's earlier logits (`prev_sam_mask_logits`) as the mask prompt.
    pub fn track_step(&self, input: &TrackStepInput) -> Result<TrackStepOutput> {
        let features = input.features;
        let high_res = features.high_res.as_ref().map(|(s0, s1)| (s0, s1));
        let (sam, pix_feat_with_mem) = match input.mask_inputs {
            Some(mask) if self.config.use_mask_input_as_output_without_sam => {
                (self.use_mask_as_output(&features.vision_features, high_res, mask)?, None)
            }
            mask_inputs => {
                let pix = self.prepare_memory_conditioned_features(
                    input.frame_idx,
                    input.is_init_cond_frame,
                    features,
                    input.bank,
                    input.memory_cache,
                    input.num_frames,
                    input.track_in_reverse,
                )?;
                let mask_inputs = match input.prev_sam_mask_logits {
                    Some(prev) if input.points.is_some() && mask_inputs.is_none() => Some(prev),
                    Some(_) => candle_core::bail!("earlier logits come only with clicks and without a mask prompt"),
                    None => mask_inputs,
                };
                let num_points = input.points.map(PointPrompt::num_points).transpose()?.unwrap_or(0);
                let multimask = self.use_multimask(input.is_init_cond_frame, num_points);
                let sam = self.forward_sam_heads(&pix, input.points, mask_inputs, high_res, multimask)?;
                (sam, Some(pix))
            }
        };
        let (maskmem_features, maskmem_pos_enc) = if input.run_mem_encoder && self.config.num_maskmem > 0 {
            let memory = self.encode_new_memory(
                &features.vision_features,
                &sam.high_res_masks,
                &sam.object_score_logits,
                input.points.is_some(),
            )?;
            (Some(to_storage_precision(&memory.features)?), Some(memory.pos_enc))
        } else {
            (None, None)
        };
        Ok(TrackStepOutput {
            pred_masks: sam.low_res_masks,
            pred_masks_high_res: sam.high_res_masks,
            obj_ptr: sam.obj_ptr,
            object_score_logits: sam.object_score_logits,
            ious: sam.ious,
            selected_mask_token: sam.selected_mask_token,
            pix_feat_with_mem,
            maskmem_features,
            maskmem_pos_enc,
        })
    }
}

/// The temporal encoding of memory slot `t_pos` in `maskmem_tpos_enc` `[num_maskmem, 1, 1, M]`:
/// entry `num_maskmem - 1 - t_pos`, `[1, 1, M]`.
fn slot_encoding(maskmem_tpos_enc: &Tensor, t_pos: usize) -> Result<Tensor> {
    let n = maskmem_tpos_enc.dim(0)?;
    if t_pos >= n {
        candle_core::bail!("memory slot {t_pos} outside 0..{n}");
    }
    maskmem_tpos_enc.get(n - 1 - t_pos)
}

/// A stored memory or its encoding `[B, M, E, E]` (any float type) as f32 tokens `[B, E·E, M]`.
fn memory_tokens(x: &Tensor) -> Result<Tensor> {
    x.to_dtype(DType::F32)?.flatten_from(2)?.transpose(1, 2)?.contiguous()
}

/// `f` applied to a frame feature `[B, C, H, W]` and its position encoding as tokens
/// `[B, H·W, C]`, its `[B, H·W, C]` result returned as a feature map `[B, C, H, W]`.
fn on_tokens(features: &Tensor, pos: &Tensor, f: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = features.dims4()?;
    let to_tokens = |x: &Tensor| -> Result<Tensor> { x.flatten_from(2)?.transpose(1, 2)?.contiguous() };
    f(&to_tokens(features)?, &to_tokens(pos)?)?.transpose(1, 2)?.reshape((b, c, h, w))
}

/// What the video predictor stores for a memory: the features rounded to bfloat16
/// (round-to-nearest-even), as `maskmem_features.to(torch.bfloat16)` does.
pub fn to_storage_precision(features: &Tensor) -> Result<Tensor> {
    features.to_dtype(DType::BF16)
}

/// Weights `[output, input]` (row-major) of PyTorch's antialiased linear resampling along one
/// axis (`_upsample_bilinear2d_aa`, align_corners=False): a triangle filter widened by the
/// downscale factor, clipped at the borders and normalised per output sample.
fn antialiased_linear_weights(input: usize, output: usize) -> Vec<f32> {
    let scale = input as f32 / output as f32;
    let (support, invscale) = if scale >= 1.0 { (scale, 1.0 / scale) } else { (1.0, 1.0) };
    let max_taps = support.ceil() as usize * 2 + 1;
    let mut weights = vec![0f32; output * input];
    for (i, row) in weights.chunks_mut(input.max(1)).enumerate() {
        let center = scale * (i as f32 + 0.5);
        let first = ((center - support + 0.5) as i64).max(0) as usize;
        let end = ((center + support + 0.5) as i64).clamp(0, input as i64) as usize;
        let taps = end.saturating_sub(first).min(max_taps);
        let mut total = 0f32;
        for j in 0..taps {
            let x = (j as f32 + first as f32 - center + 0.5) * invscale;
            let w = (1.0 - x.abs()).max(0.0);
            row[first + j] = w;
            total += w;
        }
        if total != 0.0 {
            for w in &mut row[first..first + taps] {
                *w /= total;
            }
        }
    }
    weights
}

/// `F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)` for
/// `[B, C, H, W]` f32 tensors, as a product with each axis's weight matrix (width first).
pub fn resize_bilinear_antialiased(x: &Tensor, (out_h, out_w): (usize, usize)) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let device = x.device();
    let along_w = Tensor::from_vec(antialiased_linear_weights(w, out_w), (out_w, w), device)?;
    let along_h = Tensor::from_vec(antialiased_linear_weights(h, out_h), (out_h, h), device)?;
    let rows = x.reshape((b * c, h, w))?.broadcast_matmul(&along_w.t()?)?;
    along_h.broadcast_matmul(&rows)?.reshape((b, c, out_h, out_w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `sin(0.37 i) * 7` for i = 0.., shaped `[2, 1, 12, 10]`, the input of the reference values.
    fn wave() -> Tensor {
        let values: Vec<f32> = (0..240).map(|i| (i as f32 * 0.37).sin() * 7.0).collect();
        Tensor::from_vec(values, (2, 1, 12, 10), &Device::Cpu).unwrap()
    }

    fn assert_rows(got: &Tensor, want: &[&[f32]]) {
        let got: Vec<Vec<f32>> = got.to_vec2().unwrap();
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.iter().zip(w.iter()) {
                assert!((a - b).abs() < 2e-6, "{a} vs {b}");
            }
        }
    }

    // Reference values: torch 2.15 F.interpolate(x, size, mode="bilinear",
    // align_corners=False, antialias=True).
    #[test]
    fn antialiased_downsampling_matches_torch() {
        let x = wave();
        let y = resize_bilinear_antialiased(&x, (3, 4)).unwrap();
        assert_rows(
            &y.get(0).unwrap().get(0).unwrap(),
            &[
                &[0.067641474, 0.347_310_8, 0.3895348, 0.1603018],
                &[-0.095845714, -0.0418826, 0.0460563, 0.097_137_18],
                &[-0.17887788, -0.395_917_7, -0.33608297, -0.047569044],
            ],
        );
        let y = resize_bilinear_antialiased(&x, (5, 7)).unwrap();
        assert_rows(
            &y.get(1).unwrap().get(0).unwrap().narrow(0, 0, 2).unwrap(),
            &[
                &[0.030_917_55, 0.320_924_4, 0.555_663_1, 0.644_739_4, 0.546_207_9, 0.30453497, 0.012057655],
                &[-0.20475686, -0.061027914, 0.112_137_2, 0.25636905, 0.32600203, 0.309_730_1, 0.22184294],
            ],
        );
    }

    #[test]
    fn antialiased_upsampling_matches_torch() {
        let x = wave().narrow(2, 0, 5).unwrap().narrow(3, 0, 4).unwrap().contiguous().unwrap();
        let y = resize_bilinear_antialiased(&x, (8, 9)).unwrap();
        let plane = y.get(0).unwrap().get(0).unwrap();
        let first_last = Tensor::cat(&[plane.narrow(0, 0, 1).unwrap(), plane.narrow(0, 7, 1).unwrap()], 0);
        assert_rows(
            &first_last.unwrap(),
            &[
                &[0.0, 0.42188475, 1.5469106, 2.652_903, 3.6256618, 4.5984206, 5.322_745, 6.011_578, 6.269_891],
                &[5.5177636, 5.1959224, 4.3376784, 3.4524658, 2.378469, 1.3044723, 0.1688817, -0.97550803, -1.4046544],
            ],
        );
    }

    #[test]
    fn four_fold_downsampling_uses_the_widened_triangle() {
        // Interior output samples weigh 8 inputs by (1, 3, 5, 7, 7, 5, 3, 1) / 32.
        let w = antialiased_linear_weights(16, 4);
        let row1: Vec<f32> = w[16..32].to_vec();
        let want = [0., 0., 1., 3., 5., 7., 7., 5., 3., 1., 0., 0., 0., 0., 0., 0.];
        for (g, k) in row1.iter().zip(want) {
            assert!((g - k / 32.0).abs() < 1e-7);
        }
        // At the border the clipped filter is renormalised: (5, 7, 7, 5, 3, 1) / 28.
        let row0: Vec<f32> = w[..6].to_vec();
        for (g, k) in row0.iter().zip([5., 7., 7., 5., 3., 1.]) {
            assert!((g - k / 28.0).abs() < 1e-7, "{row0:?}");
        }
    }
}
