//! Layer normalisation over the last dimension, two-pass with f64 sums, optionally followed
//! by an activation on the same block.

use super::activation::activate;
use super::{contiguous_slice, f32_data, par_blocks, rows_per_task};
use crate::model::sam2_utils::Activation;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// Layer normalisation of every row of the last dimension, `(x − mean)/√(var + eps)·w + b`,
/// then `activation` when given.
pub(crate) fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    activation: Option<Activation>,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(weight, bias, &LayerNormOp { eps, activation })
}

struct LayerNormOp {
    eps: f64,
    activation: Option<Activation>,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "sam2-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_slice(
            f32_data(xs, "layer norm input")?,
            xs_layout,
            "layer norm input",
        )?;
        let weight = contiguous_slice(
            f32_data(weight, "layer norm weight")?,
            weight_layout,
            "layer norm weight",
        )?;
        let bias = contiguous_slice(
            f32_data(bias, "layer norm bias")?,
            bias_layout,
            "layer norm bias",
        )?;
        let shape = xs_layout.shape().clone();
        let width = shape.dims().last().copied().unwrap_or(1);
        if weight.len() != width || bias.len() != width {
            candle_core::bail!(
                "layer norm over {width} features got weight {} and bias {}",
                weight.len(),
                bias.len()
            );
        }
        let out = if width > 0 {
            let block = width * rows_per_task(xs.len() / width);
            par_blocks(xs.len(), block, |index, dst| {
                normalise_rows(
                    dst,
                    &xs[index * block..][..dst.len()],
                    weight,
                    bias,
                    self.eps,
                );
                if let Some(activation) = self.activation {
                    activate(dst, activation);
                }
            })
        } else {
            Vec::new()
        };
        Ok((CpuStorage::F32(out), shape))
    }
}

vectorised! {
    /// Layer-normalises every `weight.len()`-wide row of `src` into `dst`.
    fn normalise_rows(dst: &mut [f32], src: &[f32], weight: &[f32], bias: &[f32], eps: f64) =
        normalise_rows_scalar
}

#[inline(always)]
fn normalise_rows_scalar(dst: &mut [f32], src: &[f32], weight: &[f32], bias: &[f32], eps: f64) {
    let width = weight.len();
    let n = width as f64;
    for (dst, src) in dst.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
        let mean = lane_sum(src, |v| v as f64) / n;
        let var = lane_sum(src, |v| {
            let d = v as f64 - mean;
            d * d
        }) / n;
        let inv_std = 1.0 / (var + eps).sqrt();
        for (((d, &s), &w), &b) in dst.iter_mut().zip(src).zip(weight).zip(bias) {
            *d = ((s as f64 - mean) * inv_std) as f32 * w + b;
        }
    }
}

/// `Σ f(v)` over `values` in f64, accumulated in four interleaved lanes so that it
/// vectorises (the f64 sums of f32 inputs are exact enough that the order does not show).
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0f64; 4];
    let (quads, tail) = values.as_chunks::<4>();
    for quad in quads {
        for (lane, &v) in lanes.iter_mut().zip(quad) {
            *lane += f(v);
        }
    }
    let tail: f64 = tail.iter().map(|&v| f(v)).sum();
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}
