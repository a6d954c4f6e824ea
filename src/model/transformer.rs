//! Attention layers (reference: `sam2/modeling/sam/transformer.py`): the multi-head `Attention`
//! with an internal down-projection and a separate key/value input width, its rotary variant
//! `RoPEAttention` used by memory attention, and the mask decoder's `TwoWayTransformer` built
//! from `TwoWayAttentionBlock`s.
//!
//! Tensors are batch-first `[B, tokens, channels]` with the heads as consecutive channel
//! slices, the layout the shared `scaled_dot_product_attention` reads directly, so heads are
//! never split into a separate dimension except to rotate them (RoPE with several heads).

use crate::model::config::RoPEAttentionConfig;
use crate::model::position_encoding::AxialRope;
use crate::model::sam2_utils::{Activation, LayerNorm, Linear, Mlp, scaled_dot_product_attention};
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Epsilon of the transformers' `nn.LayerNorm` (PyTorch's default).
pub const TRANSFORMER_NORM_EPS: f64 = 1e-5;

/// Multi-head attention whose queries, keys and values are projected to
/// `embedding_dim / downsample_rate` channels; keys and values may come in with another width
/// (`kv_in_dim`).
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
}

impl Attention {
    /// Loads `q_proj`, `k_proj`, `v_proj` and `out_proj` under `vb`.
    pub fn new(
        vb: VarBuilder,
        embedding_dim: usize,
        num_heads: usize,
        downsample_rate: usize,
        kv_in_dim: Option<usize>,
    ) -> Result<Self> {
        if downsample_rate == 0 || num_heads == 0 {
            candle_core::bail!("attention needs a positive downsample rate and head count");
        }
        let internal_dim = embedding_dim / downsample_rate;
        if internal_dim == 0 || !internal_dim.is_multiple_of(num_heads) {
            candle_core::bail!(
                "{num_heads} heads do not divide the internal attention width {internal_dim}"
            );
        }
        let kv_in_dim = kv_in_dim.unwrap_or(embedding_dim);
        Ok(Self {
            q_proj: Linear::new(vb.pp("q_proj"), embedding_dim, internal_dim)?,
            k_proj: Linear::new(vb.pp("k_proj"), kv_in_dim, internal_dim)?,
            v_proj: Linear::new(vb.pp("v_proj"), kv_in_dim, internal_dim)?,
            out_proj: Linear::new(vb.pp("out_proj"), internal_dim, embedding_dim)?,
            num_heads,
        })
    }

    /// Width of one head after the input projection.
    pub fn head_dim(&self) -> usize {
        self.q_proj.out_dim() / self.num_heads
    }

    /// Attention of projected queries and keys over the raw values `v` `[B, Nk, kv_in_dim]`,
    /// projected back to `embedding_dim`, plus `residual` when given (added in the output
    /// projection's blocks on the CPU). With one head whose value inputs are narrower than the
    /// projected values (memory attention reads 64-channel memories into 256 channels) the raw
    /// values are weighted first and the result projected:
    /// `softmax(q kᵀ/√d) · (v W_vᵀ + b_v) = (softmax(q kᵀ/√d) · v) W_vᵀ + b_v`, because every
    /// softmax row sums to one (equal up to rounding, with the value product at the narrower
    /// width).
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let out = if self.num_heads == 1 && self.v_proj.in_dim() < self.v_proj.out_dim() {
            self.v_proj.forward(&scaled_dot_product_attention(q, k, v, 1)?)?
        } else {
            scaled_dot_product_attention(q, k, &self.v_proj.forward(v)?, self.num_heads)?
        };
        self.out_proj.forward_fused(&out, None, residual)
    }

    /// `q` `[B, Nq, C]`, `k` and `v` `[B, Nk, kv_in_dim]` → `[B, Nq, C]`, plus `residual`
    /// `[B, Nq, C]` when given.
    pub fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.attend(&self.q_proj.forward(q)?, &self.k_proj.forward(k)?, v, residual)
    }
}

/// `Attention` with 2-D axial rotary position encoding of queries and keys. Queries are a square
/// token grid; keys are the same grid, or (with `rope_k_repeat`) several copies of it, e.g. one
/// per memory frame. Trailing keys that are not grid tokens (object pointers) are excluded from
/// the rotation with `num_k_exclude_rope`.
#[derive(Debug, Clone)]
pub struct RoPEAttention {
    attention: Attention,
    rope: AxialRope,
    rope_theta: f64,
    rope_k_repeat: bool,
    device: Device,
}

impl RoPEAttention {
    /// Loads the projections under `vb` and builds the rotation tables for `feat_sizes`.
    pub fn new(vb: VarBuilder, config: &RoPEAttentionConfig) -> Result<Self> {
        let attention = Attention::new(
            vb.clone(),
            config.embedding_dim,
            config.num_heads,
            config.downsample_rate,
            Some(config.kv_dim()),
        )?;
        let [end_x, end_y] = config.feat_sizes;
        let rope = AxialRope::new(
            attention.head_dim(),
            end_x,
            end_y,
            config.rope_theta,
            vb.device(),
        )?;
        Ok(Self {
            attention,
            rope,
            rope_theta: config.rope_theta,
            rope_k_repeat: config.rope_k_repeat,
            device: vb.device().clone(),
        })
    }

    /// Rotation tables for `tokens` queries: the configured grid, or (like the reference) a
    /// square grid recomputed for another query count.
    fn rope_for(&self, tokens: usize) -> Result<AxialRope> {
        if tokens == self.rope.tokens() {
            return Ok(self.rope.clone());
        }
        let side = (tokens as f64).sqrt().round() as usize;
        if side * side != tokens {
            candle_core::bail!("RoPE attention needs a square query grid, got {tokens} tokens");
        }
        AxialRope::new(
            self.attention.head_dim(),
            side,
            side,
            self.rope_theta,
            &self.device,
        )
    }

    /// `q` `[B, Nq, C]`, `k` and `v` `[B, Nk, kv_in_dim]` → `[B, Nq, C]`, plus `residual`
    /// `[B, Nq, C]` when given; the last `num_k_exclude_rope` keys are not rotated.
    pub fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        num_k_exclude_rope: usize,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let nq = q.dim(1)?;
        let nk = k.dim(1)?;
        if nq != nk && !self.rope_k_repeat {
            candle_core::bail!(
                "RoPE attention without rope_k_repeat needs as many keys as queries ({nk} vs {nq})"
            );
        }
        let Some(num_k_rope) = nk.checked_sub(num_k_exclude_rope) else {
            candle_core::bail!("{num_k_exclude_rope} keys to exclude from RoPE but only {nk} keys");
        };
        let k = self.attention.k_proj.forward(k)?;
        let k = self.rope_for(nq)?.rotate(&k, self.attention.num_heads, num_k_rope, self.rope_k_repeat)?;
        self.forward_with_rotated_keys(q, &k, v, residual)
    }

    /// `forward` with the keys already projected and rotated (`[B, Nk, C']`), e.g. assembled
    /// from `rotated_keys` of memories attended to before.
    pub fn forward_with_rotated_keys(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let attention = &self.attention;
        let nq = q.dim(1)?;
        let q = self.rope_for(nq)?.rotate(&attention.q_proj.forward(q)?, attention.num_heads, nq, false)?;
        attention.attend(&q, k, v, residual)
    }

    /// The keys `forward` makes of one grid's worth of key inputs `k` `[B, N, kv_in_dim]` (one
    /// memory frame of N tokens): projected and rotated with the angles of an N-token grid.
    pub fn rotated_keys(&self, k: &Tensor) -> Result<Tensor> {
        let n = k.dim(1)?;
        self.rope_for(n)?.rotate(&self.attention.k_proj.forward(k)?, self.attention.num_heads, n, false)
    }

    /// What adding `offset` `[kv_in_dim]` to every key input of an N-token grid adds to its
    /// `rotated_keys`: the offset projected without the bias, then rotated, `[1, N, C']`.
    /// Projection and rotation are linear, so
    /// `rotated_keys(k + offset) = rotated_keys(k) + rotated_key_offset(offset, N)`.
    pub fn rotated_key_offset(&self, offset: &Tensor, tokens: usize) -> Result<Tensor> {
        let projected = self.attention.k_proj.project(&offset.unsqueeze(0)?)?;
        let width = projected.dim(1)?;
        let grid = projected.unsqueeze(0)?.broadcast_as((1, tokens, width))?.contiguous()?;
        self.rope_for(tokens)?.rotate(&grid, self.attention.num_heads, tokens, false)
    }

    /// Keys `forward` leaves unrotated (object pointers): `k` `[B, N, kv_in_dim]` projected.
    pub fn unrotated_keys(&self, k: &Tensor) -> Result<Tensor> {
        self.attention.k_proj.forward(k)
    }
}

/// One block of the two-way transformer: token self-attention, token→image cross-attention, an
/// MLP on the tokens, and image→token cross-attention, each followed by a LayerNorm.
#[derive(Debug, Clone)]
pub struct TwoWayAttentionBlock {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_attn_token_to_image: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_attn_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    pub fn new(
        vb: VarBuilder,
        embedding_dim: usize,
        num_heads: usize,
        mlp_dim: usize,
        attention_downsample_rate: usize,
        skip_first_layer_pe: bool,
    ) -> Result<Self> {
        let norm = |name: &str| LayerNorm::new(vb.pp(name), embedding_dim, TRANSFORMER_NORM_EPS);
        let cross = |name: &str| {
            Attention::new(
                vb.pp(name),
                embedding_dim,
                num_heads,
                attention_downsample_rate,
                None,
            )
        };
        Ok(Self {
            self_attn: Attention::new(vb.pp("self_attn"), embedding_dim, num_heads, 1, None)?,
            norm1: norm("norm1")?,
            cross_attn_token_to_image: cross("cross_attn_token_to_image")?,
            norm2: norm("norm2")?,
            mlp: Mlp::new(
                vb.pp("mlp"),
                embedding_dim,
                mlp_dim,
                embedding_dim,
                2,
                Activation::Relu,
                false,
            )?,
            norm3: norm("norm3")?,
            norm4: norm("norm4")?,
            cross_attn_image_to_token: cross("cross_attn_image_to_token")?,
            skip_first_layer_pe,
        })
    }

    /// `queries` `[B, Nt, C]` (with `query_pe`), `keys` `[B, HW, C]` (with `key_pe`) →
    /// updated `(queries, keys)`.
    pub fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries, None)?
        } else {
            let q = (queries + query_pe)?;
            self.self_attn.forward(&q, &q, queries, Some(queries))?
        };
        let queries = self.norm1.forward(&queries)?;

        let k = keys.broadcast_add(key_pe)?;
        let q = (&queries + query_pe)?;
        let queries = self
            .cross_attn_token_to_image
            .forward(&q, &k, keys, Some(&queries))?;
        let queries = self.norm2.forward(&queries)?;

        let queries = self
            .norm3
            .forward(&self.mlp.forward_with_residual(&queries, &queries)?)?;

        let q = (&queries + query_pe)?;
        let keys = self
            .cross_attn_image_to_token
            .forward(&k, &q, &queries, Some(keys))?;
        let keys = self.norm4.forward(&keys)?;
        Ok((queries, keys))
    }
}

/// The mask decoder's transformer: `depth` two-way blocks, then a final token→image attention
/// and LayerNorm on the tokens.
#[derive(Debug, Clone)]
pub struct TwoWayTransformer {
    layers: Vec<TwoWayAttentionBlock>,
    final_attn_token_to_image: Attention,
    norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    /// Attention in the cross blocks is down-projected by `attention_downsample_rate`.
    pub fn new(
        vb: VarBuilder,
        depth: usize,
        embedding_dim: usize,
        num_heads: usize,
        mlp_dim: usize,
        attention_downsample_rate: usize,
    ) -> Result<Self> {
        let layers = (0..depth)
            .map(|i| {
                TwoWayAttentionBlock::new(
                    vb.pp("layers").pp(i),
                    embedding_dim,
                    num_heads,
                    mlp_dim,
                    attention_downsample_rate,
                    i == 0,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            final_attn_token_to_image: Attention::new(
                vb.pp("final_attn_token_to_image"),
                embedding_dim,
                num_heads,
                attention_downsample_rate,
                None,
            )?,
            norm_final_attn: LayerNorm::new(
                vb.pp("norm_final_attn"),
                embedding_dim,
                TRANSFORMER_NORM_EPS,
            )?,
        })
    }

    /// `image_embedding` `[B, C, H, W]`, `image_pe` `[1 or B, C, H, W]`, `point_embedding`
    /// `[B, Nt, C]` → processed tokens `[B, Nt, C]` and image tokens `[B, HW, C]`.
    pub fn forward(
        &self,
        image_embedding: &Tensor,
        image_pe: &Tensor,
        point_embedding: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let to_tokens =
            |x: &Tensor| -> Result<Tensor> { x.flatten_from(2)?.transpose(1, 2)?.contiguous() };
        let image_tokens = to_tokens(image_embedding)?;
        let image_pe = to_tokens(image_pe)?;
        let mut queries = point_embedding.clone();
        let mut keys = image_tokens;
        for layer in &self.layers {
            (queries, keys) = layer.forward(&queries, &keys, point_embedding, &image_pe)?;
        }
        let q = (&queries + point_embedding)?;
        let k = keys.broadcast_add(&image_pe)?;
        let queries = self
            .final_attn_token_to_image
            .forward(&q, &k, &keys, Some(&queries))?;
        let queries = self.norm_final_attn.forward(&queries)?;
        Ok((queries, keys))
    }
}
