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

    /// `tgt` `[B, N, C]` with `query_pos`, `memory` `[B, Nm, M]` with `pos`; the last
    /// `num_k_exclude_rope` memory tokens are not rotated.
    pub fn forward(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        pos: &Tensor,
        query_pos: &Tensor,
        num_k_exclude_rope: usize,
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
        let k = if self.pos_enc_at_cross_attn_keys {
            (memory + pos)?
        } else {
            memory.clone()
        };
        let tgt = self
            .cross_attn_image
            .forward(&q, &k, memory, num_k_exclude_rope, Some(&tgt))?;

        let normed = self.norm3.forward(&tgt)?;
        let hidden = self
            .linear1
            .forward_fused(&normed, Some(self.activation), None)?;
        self.linear2.forward_fused(&hidden, None, Some(&tgt))
    }
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
        for layer in &self.layers {
            output = layer.forward(&output, memory, memory_pos, curr_pos, num_obj_ptr_tokens)?;
            layer_outputs.push(output.clone());
        }
        Ok((self.norm.forward(&output)?, layer_outputs))
    }
}
