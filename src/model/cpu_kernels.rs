//! Hand-written CPU kernels for the hot paths of the network, used for f32 tensors on the CPU
//! (callers fall back to plain candle operations on other devices):
//!
//! * `layer_norm`: two-pass normalisation over the last dimension with f64 sums (candle's fused
//!   layer norm uses E[x²] − mean², which loses digits when a token's mean is large);
//! * `linear`: `x·Wᵀ + b` with the bias pre-loaded into the output so the matrix product
//!   accumulates onto it, and the activation applied in a parallel pass — candle would add the
//!   bias and apply the activation in separate single-threaded passes;
//! * `attention`: multi-head scaled dot-product attention reading queries, keys and values
//!   straight from strided views (e.g. slices of a fused qkv projection) and writing heads back
//!   interleaved, so no head split/merge copies are needed. Many small problems (Hiera's
//!   windows) run in parallel with single-threaded products; few large ones (global attention)
//!   use the threaded product.
//!
//! Matrix products go through `gemm`, the library candle itself uses on the CPU.

use crate::model::sam2_utils::Activation;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// Elements per parallel chunk of element-wise passes.
const CHUNK: usize = 1 << 14;

fn f32_data<'a>(storage: &'a CpuStorage, what: &str) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(data) => Ok(data),
        _ => candle_core::bail!("{what}: expected f32 data"),
    }
}

fn contiguous_slice<'a>(data: &'a [f32], layout: &Layout, what: &str) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

fn threaded() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// Layer normalisation of every row of the last dimension: `(x − mean)/√(var + eps)·w + b`.
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(weight, bias, &LayerNormOp { eps })
}

struct LayerNormOp {
    eps: f64,
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
        let mut out = vec![0f32; xs.len()];
        if width > 0 {
            let eps = self.eps;
            let n = width as f64;
            out.par_chunks_mut(width)
                .zip(xs.par_chunks(width))
                .for_each(|(dst, src)| {
                    let mean = src.iter().map(|&v| v as f64).sum::<f64>() / n;
                    let var = src
                        .iter()
                        .map(|&v| {
                            let d = v as f64 - mean;
                            d * d
                        })
                        .sum::<f64>()
                        / n;
                    let inv_std = 1.0 / (var + eps).sqrt();
                    for (((d, &s), &w), &b) in dst.iter_mut().zip(src).zip(weight).zip(bias) {
                        *d = ((s as f64 - mean) * inv_std) as f32 * w + b;
                    }
                });
        }
        Ok((CpuStorage::F32(out), shape))
    }
}

/// `x [M, K] · w_t [K, N] + bias [N]`, then `activation`: `[M, N]`.
pub(crate) fn linear(
    x: &Tensor,
    weight_t: &Tensor,
    bias: &Tensor,
    activation: Option<Activation>,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(weight_t, bias, &LinearOp { activation })
}

struct LinearOp {
    activation: Option<Activation>,
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "sam2-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        weight_t: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xs_layout.shape().dims2()?;
        let (k2, n) = weight_layout.shape().dims2()?;
        if k != k2 || bias_layout.shape().dims() != [n] {
            candle_core::bail!(
                "linear kernel: input {:?}, weight {:?}, bias {:?} do not fit",
                xs_layout.shape(),
                weight_layout.shape(),
                bias_layout.shape()
            );
        }
        let xs = contiguous_slice(f32_data(xs, "linear input")?, xs_layout, "linear input")?;
        let weight_t = contiguous_slice(
            f32_data(weight_t, "linear weight")?,
            weight_layout,
            "linear weight",
        )?;
        let bias = contiguous_slice(f32_data(bias, "linear bias")?, bias_layout, "linear bias")?;
        let mut out = vec![0f32; m * n];
        if n == 0 || m == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((m, n))));
        }
        out.par_chunks_mut(n)
            .for_each(|row| row.copy_from_slice(bias));
        if k > 0 {
            // SAFETY: `xs` holds m·k values (row stride k), `weight_t` k·n (row stride n) and
            // `out` m·n (row stride n), as checked above; gemm reads and writes within them.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    xs.as_ptr(),
                    1,
                    k as isize,
                    weight_t.as_ptr(),
                    1,
                    n as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    threaded(),
                );
            }
        }
        if let Some(activation) = self.activation {
            out.par_chunks_mut(CHUNK)
                .for_each(|chunk| match activation {
                    Activation::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
                    Activation::Gelu => chunk.iter_mut().for_each(|v| *v = gelu_erf(*v)),
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// PyTorch's default GELU, `x/2 · (1 + erf(x/√2))`.
#[inline]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// A `[B, N, C]` operand read in place: element `(b, n, c)` sits at
/// `offset + b·batch_stride + n·row_stride + c`.
#[derive(Clone, Copy)]
struct RowView {
    batch: usize,
    rows: usize,
    width: usize,
    offset: usize,
    batch_stride: usize,
    row_stride: usize,
}

impl RowView {
    fn new(data: &[f32], layout: &Layout, what: &str) -> Result<Self> {
        let (batch, rows, width) = layout.shape().dims3()?;
        let stride = layout.stride();
        if width > 1 && stride[2] != 1 {
            candle_core::bail!(
                "{what}: the channel dimension must be contiguous, strides {stride:?}"
            );
        }
        let view = Self {
            batch,
            rows,
            width,
            offset: layout.start_offset(),
            batch_stride: stride[0],
            row_stride: stride[1],
        };
        if batch > 0 && rows > 0 && width > 0 {
            let last = view.offset
                + (batch - 1) * view.batch_stride
                + (rows - 1) * view.row_stride
                + width
                - 1;
            if last >= data.len() {
                candle_core::bail!("{what}: strided view reaches past its storage");
            }
        }
        Ok(view)
    }
}

/// Softmax of every `width`-long row of `scores`, in place.
fn softmax_rows(scores: &mut [f32], width: usize, parallel: bool) {
    let row = |r: &mut [f32]| {
        let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for v in r.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        r.iter_mut().for_each(|v| *v *= inv);
    };
    if parallel {
        scores.par_chunks_mut(width).for_each(row);
    } else {
        scores.chunks_mut(width).for_each(row);
    }
}

/// Multi-head attention `softmax(q kᵀ/√d) v` for `q [B, Nq, C]`, `k [B, Nk, C]`,
/// `v [B, Nk, Cv]` whose channels hold `heads` consecutive head slices; the inputs may be
/// strided views with contiguous channels. Returns `[B, Nq, Cv]`, heads interleaved the same way.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    q.apply_op3_no_bwd(k, v, &AttentionOp { heads })
}

struct AttentionOp {
    heads: usize,
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "sam2-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        q_layout: &Layout,
        ks: &CpuStorage,
        k_layout: &Layout,
        vs: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qs, ks, vs) = (
            f32_data(qs, "attention queries")?,
            f32_data(ks, "attention keys")?,
            f32_data(vs, "attention values")?,
        );
        let q = RowView::new(qs, q_layout, "attention queries")?;
        let k = RowView::new(ks, k_layout, "attention keys")?;
        let v = RowView::new(vs, v_layout, "attention values")?;
        let heads = self.heads;
        if heads == 0
            || q.batch != k.batch
            || k.batch != v.batch
            || k.rows != v.rows
            || q.width != k.width
            || q.width % heads != 0
            || v.width % heads != 0
        {
            candle_core::bail!(
                "attention: queries {:?}, keys {:?}, values {:?} do not fit {heads} heads",
                q_layout.shape(),
                k_layout.shape(),
                v_layout.shape()
            );
        }
        let (batch, nq, nk) = (q.batch, q.rows, k.rows);
        let (head_dim, value_dim, out_width) = (q.width / heads, v.width / heads, v.width);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut out = vec![0f32; batch * nq * out_width];
        let shape = Shape::from((batch, nq, out_width));
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), shape));
        }
        let threads = candle_core::utils::get_num_threads().max(1);
        // Enough independent problems: one thread each, single-threaded products.
        let across_batch = batch >= threads;
        let inner = if across_batch {
            Parallelism::None
        } else {
            threaded()
        };
        let run = |b: usize, out_b: &mut [f32]| {
            let mut scores = vec![0f32; nq * nk];
            for h in 0..heads {
                if nk == 0 {
                    continue;
                }
                // SAFETY: RowView::new checked that every (b, n, c) of each view lies inside
                // its storage; `scores` is nq·nk and `out_b` is nq·out_width, written with row
                // stride out_width from column h·value_dim, below out_width.
                unsafe {
                    gemm::gemm(
                        nq,
                        nk,
                        head_dim,
                        scores.as_mut_ptr(),
                        1,
                        nk as isize,
                        false,
                        qs.as_ptr()
                            .add(q.offset + b * q.batch_stride + h * head_dim),
                        1,
                        q.row_stride as isize,
                        ks.as_ptr()
                            .add(k.offset + b * k.batch_stride + h * head_dim),
                        k.row_stride as isize,
                        1,
                        0.0f32,
                        scale,
                        false,
                        false,
                        false,
                        inner,
                    );
                }
                softmax_rows(&mut scores, nk, !across_batch);
                unsafe {
                    gemm::gemm(
                        nq,
                        value_dim,
                        nk,
                        out_b.as_mut_ptr().add(h * value_dim),
                        1,
                        out_width as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        nk as isize,
                        vs.as_ptr()
                            .add(v.offset + b * v.batch_stride + h * value_dim),
                        1,
                        v.row_stride as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        inner,
                    );
                }
            }
        };
        let per_batch = nq * out_width;
        if across_batch {
            out.par_chunks_mut(per_batch)
                .enumerate()
                .for_each(|(b, o)| run(b, o));
        } else {
            out.chunks_mut(per_batch)
                .enumerate()
                .for_each(|(b, o)| run(b, o));
        }
        Ok((CpuStorage::F32(out), shape))
    }
}
