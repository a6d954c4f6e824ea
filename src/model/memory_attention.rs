//! Memory attention (reference: `sam2/modeling/memory_attention.py`): conditions the current
//! frame's stride-16 features on the memory bank. Each layer runs pre-norm RoPE self-attention
//! over the frame's tokens, pre-norm RoPE cross-attention to the memories (spatial memory tokens
//! rotated frame by frame, trailing object-pointer tokens not rotated), and a pre-norm
//! feed-forward block; a final LayerNorm closes the stack.
//!
//! Sequences are batch-first `[B, tokens, channels]` (the reference's layers run batch-first;
//! its sequence-first interface is a transpose around them).

use crate::model::config::{MemoryAttentionConfig, MemoryAttentionLayerConfig};
use crate::model::sam2_utils::{Activation, LayerNorm, Linear};
use crate::model::transformer::{RoPEAttention, TRANSFORMER_NORM_EPS};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Weight of the current frame's position encoding added to its features at the input.
const INPUT_POS_SCALE: f64 = 0.1;

/// One `MemoryAttentionLayer`.
#[derive(Debug, Clone)]
pub struct MemoryAttentionLayer {
    self_attn: RoPEAttention,
    cross_attn_image: RoPEAttention,
    linear1: Linear,
    linear2: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
    activation: Activation,
    pos_enc_at_attn: bool,
    pos_enc_at_cross_attn_queries: bool,
    pos_enc_at_cross_attn_keys: bool,
}

impl MemoryAttentionLayer {
    pub fn new(vb: VarBuilder, config: &MemoryAttentionLayerConfig) -> Result<Self> {
        let d = config.d_model;
        let norm = |name: &str| LayerNorm::new(vb.pp(name), d, TRANSFORMER_NORM_EPS);
        Ok(Self {
            self_attn: RoPEAttention::new(vb.pp("self_attn"), &config.self_attention)?,
            cross_attn_image: RoPEAttention::new(
                vb.pp("cross_attn_image"),
                &config.cross_attention,
            )?,
            linear1: Linear::new(vb.pp("linear1"), d, config.dim_feedforward)?,
            linear2: Linear::new(vb.pp("linear2"), config.dim_feedforward, d)?,
            norm1: norm("norm1")?,
            norm2: norm("norm2")?,
            norm3: norm("norm3")?,
            activation: config.activation,
            pos_enc_at_attn: config.pos_enc_at_attn,
            pos_enc_at_cross_attn_queries: config.pos_enc_at_cross_attn_queries,
            pos_enc_at_cross_attn_keys: config.pos_enc_at_cross_attn_keys,
        })
    }

    /// `tgt` `[B, N, C]` with `query_pos`, attending to `memory` `[B, Nm, M]` with keys as
    /// `keys` says.
    fn forward(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        keys: LayerKeys,
        query_pos: &Tensor,
    ) -> Result<Tensor> {
        let normed = self.norm1.forward(tgt)?;
        let qk = if self.pos_enc_at_attn {
            (&normed + query_pos)?
        } else {
            normed.clone()
        };
        let tgt = self.self_attn.forward(&qk, &qk, &normed, 0, Some(tgt))?;

        let normed = self.norm2.forward(&tgt)?;
        let q = if self.pos_enc_at_cross_attn_queries {
            (&normed + query_pos)?
        } else {
            normed
        };
        let tgt = match keys {
            LayerKeys::Inputs { inputs, num_k_exclude_rope } => self
                .cross_attn_image
                .forward(&q, inputs, memory, num_k_exclude_rope, Some(&tgt))?,
            LayerKeys::Rotated(keys) => self
                .cross_attn_image
                .forward_with_rotated_keys(&q, &keys, memory, Some(&tgt))?,
        };

        let normed = self.norm3.forward(&tgt)?;
        let hidden = self
            .linear1
            .forward_fused(&normed, Some(self.activation), None)?;
        self.linear2.forward_fused(&hidden, None, Some(&tgt))
    }

    /// What the cross-attention's keys are made of: the memory plus its position encoding
    /// when the layer adds it to the keys, else the memory alone.
    fn key_inputs(&self, memory: &Tensor, pos: &Tensor) -> Result<Tensor> {
        if self.pos_enc_at_cross_attn_keys {
            memory + pos
        } else {
            Ok(memory.clone())
        }
    }
}

/// Where a layer's cross-attention keys come from.
enum LayerKeys<'a> {
    /// Projected and rotated from `inputs` `[B, Nm, M]`, the last `num_k_exclude_rope` tokens
    /// not rotated (the reference computation).
    Inputs {
        inputs: &'a Tensor,
        num_k_exclude_rope: usize,
    },
    /// Already projected and rotated, `[B, Nm, C']`.
    Rotated(Tensor),
}

/// `MemoryAttention`: a stack of layers and a final LayerNorm.
#[derive(Debug, Clone)]
pub struct MemoryAttention {
    layers: Vec<MemoryAttentionLayer>,
    norm: LayerNorm,
    pos_enc_at_input: bool,
}

impl MemoryAttention {
    /// Loads `layers.{i}` and `norm` under `vb` (`memory_attention`).
    pub fn new(vb: VarBuilder, config: &MemoryAttentionConfig) -> Result<Self> {
        let layers = (0..config.num_layers)
            .map(|i| MemoryAttentionLayer::new(vb.pp("layers").pp(i), &config.layer))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            norm: LayerNorm::new(vb.pp("norm"), config.d_model, TRANSFORMER_NORM_EPS)?,
            pos_enc_at_input: config.pos_enc_at_input,
        })
    }

    /// Conditions `curr` `[B, N, C]` (position encoding `curr_pos`) on `memory` `[B, Nm, M]`
    /// (position encoding `memory_pos`) whose last `num_obj_ptr_tokens` tokens are object
    /// pointers: `[B, N, C]`.
    pub fn forward(
        &self,
        curr: &Tensor,
        curr_pos: &Tensor,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_obj_ptr_tokens: usize,
    ) -> Result<Tensor> {
        Ok(self
            .forward_with_layer_outputs(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens)?
            .0)
    }

    /// `forward`, also returning each layer's output (before the final norm).
    pub fn forward_with_layer_outputs(
        &self,
        curr: &Tensor,
        curr_pos: &Tensor,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_obj_ptr_tokens: usize,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        // The memory plus its position encoding, computed once for all layers that use it.
        let with_pos = self
            .layers
            .iter()
            .any(|layer| layer.pos_enc_at_cross_attn_keys)
            .then(|| memory + memory_pos)
            .transpose()?;
        self.run(curr, curr_pos, memory, |i| {
            Ok(LayerKeys::Inputs {
                inputs: match &with_pos {
                    Some(with_pos) if self.layers[i].pos_enc_at_cross_attn_keys => with_pos,
                    _ => memory,
                },
                num_k_exclude_rope: num_obj_ptr_tokens,
            })
        })
    }

    /// `forward` with each layer's cross-attention keys already projected and rotated:
    /// `layer_keys(i)` gives layer i's `[B, Nm, C']` when the layer runs (so only one layer's
    /// keys are held at a time), as `Sam2Base::condition_on_cached_memory` assembles them.
    pub fn forward_with_rotated_keys(
        &self,
        curr: &Tensor,
        curr_pos: &Tensor,
        memory: &Tensor,
        layer_keys: impl Fn(usize) -> Result<Tensor>,
    ) -> Result<Tensor> {
        Ok(self
            .run(curr, curr_pos, memory, |i| Ok(LayerKeys::Rotated(layer_keys(i)?)))?
            .0)
    }

    /// The layers' cross-attention keys of one spatial memory `memory` `[B, N, M]` (one frame
    /// of N grid tokens) with its spatial position encoding `spatial_pos` `[B, N, M]`: per
    /// layer `[B, N, C']`, without the memory's temporal encoding (see `temporal_keys`).
    pub fn spatial_memory_keys(&self, memory: &Tensor, spatial_pos: &Tensor) -> Result<Vec<Tensor>> {
        self.layers
            .iter()
            .map(|layer| layer.cross_attn_image.rotated_keys(&layer.key_inputs(memory, spatial_pos)?))
            .collect()
    }

    /// What a memory's temporal encoding `tpos` `[M]` adds to each layer's
    /// `spatial_memory_keys` on an N-token grid: per layer `[1, N, C']`, `None` for layers
    /// whose keys take no position encoding.
    pub fn temporal_keys(&self, tpos: &Tensor, tokens: usize) -> Result<Vec<Option<Tensor>>> {
        self.layers
            .iter()
            .map(|layer| {
                layer
                    .pos_enc_at_cross_attn_keys
                    .then(|| layer.cross_attn_image.rotated_key_offset(tpos, tokens))
                    .transpose()
            })
            .collect()
    }

    /// The layers' (unrotated) cross-attention keys of object-pointer tokens `pointers`
    /// `[B, P, M]` with position encoding `pos`: per layer `[B, P, C']`.
    pub fn pointer_keys(&self, pointers: &Tensor, pos: &Tensor) -> Result<Vec<Tensor>> {
        self.layers
            .iter()
            .map(|layer| layer.cross_attn_image.unrotated_keys(&layer.key_inputs(pointers, pos)?))
            .collect()
    }

    fn run<'a>(
        &self,
        curr: &Tensor,
        curr_pos: &Tensor,
        memory: &Tensor,
        layer_keys: impl Fn(usize) -> Result<LayerKeys<'a>>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        if curr.dim(0)? != memory.dim(0)? {
            candle_core::bail!(
                "memory attention: batch of the frame ({}) and of the memory ({}) differ",
                curr.dim(0)?,
                memory.dim(0)?
            );
        }
        let mut output = if self.pos_enc_at_input {
            (curr + curr_pos.affine(INPUT_POS_SCALE, 0.0)?)?
        } else {
            curr.clone()
        };
        let mut layer_outputs = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            output = layer.forward(&output, memory, layer_keys(i)?, curr_pos)?;
            layer_outputs.push(output.clone());
        }
        Ok((self.norm.forward(&output)?, layer_outputs))
    }
}
