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
//! * `im2col`: the patch matrix of a strided convolution, so that Hiera's 7x7 stride-4 patch
//!   embedding becomes one matrix product producing channels-last output (candle's convolution
//!   runs near 6 GFLOP/s on it and returns channels-first);
//! * `max_pool_grid`, `window_partition`, `window_unpartition`: Hiera's token-grid
//!   reshuffles as single parallel passes (candle would pad, permute, copy and add in separate,
//!   mostly single-threaded passes), reading pooled inputs straight from strided views.
//!
//! Matrix products go through `gemm`, the library candle itself uses on the CPU.

use crate::model::sam2_utils::Activation;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Whether `x` can take these kernels: f32 data on the CPU.
pub(crate) fn applies_to(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

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

/// Defines `fn $name` that runs `$body` compiled for AVX2 when the processor has it (checked
/// at run time), and for the baseline target otherwise. Only the vector width differs: Rust
/// never fuses a multiply and an add, so both give the same bits.
macro_rules! vectorised {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the processor supports AVX2, checked just above.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// Rows of a product's output that one parallel task computes: enough that packing the other
/// operand is amortised, few enough that every thread gets a couple of tasks.
fn rows_per_task(rows: usize) -> usize {
    let threads = candle_core::utils::get_num_threads().max(1);
    rows.div_ceil(2 * threads).clamp(64, 256)
}

/// A vector of `len` values that `fill` computes in parallel, block by block
/// (`fill(block index, block)`, blocks of `block` values). Each task zeroes its own block
/// before filling it, while it is in cache, instead of one thread zeroing the whole vector.
fn par_blocks(len: usize, block: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(block.max(1))
        .enumerate()
        .for_each(|(index, values)| {
            values.fill(MaybeUninit::new(0.0));
            // SAFETY: every value of the block was initialised just above.
            let values = unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) };
            fill(index, values);
        });
    // SAFETY: the blocks cover 0..len and each one was initialised.
    unsafe { out.set_len(len) };
    out
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
        let out = if width > 0 {
            let block = width * rows_per_task(xs.len() / width);
            par_blocks(xs.len(), block, |index, dst| {
                normalise_rows(
                    dst,
                    &xs[index * block..][..dst.len()],
                    weight,
                    bias,
                    self.eps,
                )
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

/// `activation(x [M, K] · w_t [K, N] + bias [N]) + residual [M, N]`: `[M, N]`.
pub(crate) fn linear(
    x: &Tensor,
    weight_t: &Tensor,
    bias: &Tensor,
    activation: Option<Activation>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let op = LinearOp {
        activation,
        residual: residual.map(|r| r.contiguous()).transpose()?,
    };
    x.contiguous()?.apply_op3_no_bwd(weight_t, bias, &op)
}

struct LinearOp {
    activation: Option<Activation>,
    residual: Option<Tensor>,
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
        if n == 0 || m == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((m, n))));
        }
        let residual_guard = self.residual.as_ref().map(|r| r.storage_and_layout());
        let residual = match &residual_guard {
            None => None,
            Some((storage, layout)) => {
                let candle_core::Storage::Cpu(storage) = &**storage else {
                    candle_core::bail!("linear kernel: the residual must be on the CPU");
                };
                let data = contiguous_slice(
                    f32_data(storage, "linear residual")?,
                    layout,
                    "linear residual",
                )?;
                if data.len() != m * n {
                    candle_core::bail!(
                        "linear kernel: residual {:?} does not match [{m}, {n}]",
                        layout.shape()
                    );
                }
                Some(data)
            }
        };
        // Row blocks in parallel, each with a single-threaded product (the weight packing is
        // amortised over up to 256 rows): the block's bias, residual and activation passes run
        // while it is still in cache. A single block uses the threaded product instead.
        let rows = rows_per_task(m);
        let inner = if rows >= m {
            threaded()
        } else {
            Parallelism::None
        };
        let out = par_blocks(m * n, rows * n, |block, dst| {
            let first = block * rows;
            let count = dst.len() / n;
            let residual = residual.map(|r| &r[first * n..(first + count) * n]);
            // The product accumulates onto the bias, and onto the residual too when no
            // activation sits between them.
            match (self.activation, residual) {
                (None, Some(residual)) => {
                    for (row, res) in dst.chunks_exact_mut(n).zip(residual.chunks_exact(n)) {
                        for ((d, r), b) in row.iter_mut().zip(res).zip(bias) {
                            *d = r + b;
                        }
                    }
                }
                _ => dst
                    .chunks_exact_mut(n)
                    .for_each(|row| row.copy_from_slice(bias)),
            }
            if k > 0 {
                // SAFETY: `xs` holds m·k values (row stride k), `weight_t` k·n (row
                // stride n) and `dst` count·n (row stride n) starting at row `first`, as
                // checked above; gemm reads and writes within them.
                unsafe {
                    gemm::gemm(
                        count,
                        n,
                        k,
                        dst.as_mut_ptr(),
                        1,
                        n as isize,
                        true,
                        xs.as_ptr().add(first * k),
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
                        inner,
                    );
                }
            }
            if let Some(activation) = self.activation {
                activate(dst, activation);
                if let Some(residual) = residual {
                    dst.iter_mut().zip(residual).for_each(|(v, r)| *v += r);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

vectorised! {
    /// Applies `activation` to every value of `values`.
    fn activate(values: &mut [f32], activation: Activation) = activate_scalar
}

#[inline(always)]
fn activate_scalar(values: &mut [f32], activation: Activation) {
    match activation {
        Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Gelu => values.iter_mut().for_each(|v| *v = gelu_erf(*v)),
    }
}

/// PyTorch's default GELU, `x/2 · (1 + erf(x/√2))`, with `erf` evaluated like PyTorch's
/// vectorised CPU kernel does.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf(x) ≈ sign(x)·(1 − t·r(t)·e^(−x²))`, `t = 1/(1 + p|x|)` (Abramowitz & Stegun 7.1.26;
/// with f32 rounding the absolute error stays below 6e-7): the approximation PyTorch's
/// vectorised CPU `erf` uses. Written branch-free so loops over it vectorise.
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let r =
        (((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6;
    (1.0 - r * t * exp_approx(-a * a)).copysign(x)
}

/// `e^x` for `x` in [-87, 88] (clamped outside) with a relative error of a few ulp: range
/// reduction by ln 2 and the Cephes polynomial, branch-free and free of float-to-int
/// conversions so that loops over it vectorise.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let poly = p * r * r + r + 1.0;
    poly * f32::from_bits(((k + 127) << 23) as u32)
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

vectorised! {
    /// Replaces every `width`-long row of `scores` by `exp(row − max(row))` and writes the
    /// reciprocal of its sum to `inv_sums`: the softmax, with the division left to the
    /// (narrower) attention output.
    fn exp_rows(scores: &mut [f32], width: usize, inv_sums: &mut [f32]) = exp_rows_scalar
}

#[inline(always)]
fn exp_rows_scalar(scores: &mut [f32], width: usize, inv_sums: &mut [f32]) {
    for (row, inv_sum) in scores.chunks_exact_mut(width).zip(inv_sums) {
        let (octets, tail) = row.as_chunks::<8>();
        let mut lanes = [f32::NEG_INFINITY; 8];
        for octet in octets {
            for (lane, &v) in lanes.iter_mut().zip(octet) {
                *lane = lane.max(v);
            }
        }
        let max = lanes
            .iter()
            .chain(tail)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sums = [0f32; 8];
        let (octets, tail) = row.as_chunks_mut::<8>();
        for octet in octets {
            for (sum, v) in sums.iter_mut().zip(octet) {
                *v = exp_approx(*v - max);
                *sum += *v;
            }
        }
        let mut sum = 0f32;
        for v in tail {
            *v = exp_approx(*v - max);
            sum += *v;
        }
        *inv_sum = 1.0 / (sums.iter().sum::<f32>() + sum);
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
        let shape = Shape::from((batch, nq, out_width));
        if shape.elem_count() == 0 {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        let threads = candle_core::utils::get_num_threads().max(1);
        // Tasks are blocks of query rows (all heads): a whole batch entry each when there are
        // enough entries (Hiera's windows), else row blocks of the few entries. A lone task
        // uses the threaded products instead.
        let rows = if batch >= threads {
            nq
        } else {
            rows_per_task(nq)
        };
        let inner = if batch == 1 && rows >= nq {
            threaded()
        } else {
            Parallelism::None
        };
        let run = |b: usize, first: usize, out_rows: &mut [f32]| {
            let count = out_rows.len() / out_width;
            let mut scores = vec![0f32; count * nk];
            let mut inv_sums = vec![0f32; count];
            for h in 0..heads {
                if nk == 0 {
                    continue;
                }
                // SAFETY: RowView::new checked that every (b, n, c) of each view lies inside
                // its storage, and rows first..first+count are rows of q; `scores` is
                // count·nk and `out_rows` is count·out_width, written with row stride
                // out_width from column h·value_dim, below out_width.
                unsafe {
                    gemm::gemm(
                        count,
                        nk,
                        head_dim,
                        scores.as_mut_ptr(),
                        1,
                        nk as isize,
                        false,
                        qs.as_ptr().add(
                            q.offset + b * q.batch_stride + first * q.row_stride + h * head_dim,
                        ),
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
                exp_rows(&mut scores, nk, &mut inv_sums);
                unsafe {
                    gemm::gemm(
                        count,
                        value_dim,
                        nk,
                        out_rows.as_mut_ptr().add(h * value_dim),
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
                for (row, &inv_sum) in out_rows.chunks_exact_mut(out_width).zip(&inv_sums) {
                    row[h * value_dim..(h + 1) * value_dim]
                        .iter_mut()
                        .for_each(|o| *o *= inv_sum);
                }
            }
        };
        let out = par_blocks(batch * nq * out_width, nq * out_width, |b, out_b| {
            out_b
                .par_chunks_mut(rows * out_width)
                .enumerate()
                .for_each(|(block, out_rows)| run(b, block * rows, out_rows));
        });
        Ok((CpuStorage::F32(out), shape))
    }
}

/// Rotary encoding of `x [B, N, heads·d]`: in every head, channel pair `(2i, 2i+1)` of token
/// `n < rotated` is rotated by the angle in row `n mod T` of `cos`/`sin` `[T, d/2]` (candle's
/// `rope_i` arithmetic, without its head transposes and repeated tables); tokens from `rotated`
/// on are copied unchanged.
pub(crate) fn rotate_pairs(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    heads: usize,
    rotated: usize,
) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(cos, sin, &RotatePairs { heads, rotated })
}

struct RotatePairs {
    heads: usize,
    rotated: usize,
}

impl CustomOp3 for RotatePairs {
    fn name(&self) -> &'static str {
        "sam2-rotate-pairs"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        cos: &CpuStorage,
        cos_layout: &Layout,
        sin: &CpuStorage,
        sin_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_slice(f32_data(xs, "rotary input")?, xs_layout, "rotary input")?;
        let cos = contiguous_slice(
            f32_data(cos, "rotary cosines")?,
            cos_layout,
            "rotary cosines",
        )?;
        let sin = contiguous_slice(f32_data(sin, "rotary sines")?, sin_layout, "rotary sines")?;
        let (_, n, c) = xs_layout.shape().dims3()?;
        let (table_rows, half) = cos_layout.shape().dims2()?;
        let heads = self.heads;
        if heads == 0
            || c != heads * 2 * half
            || sin_layout.shape() != cos_layout.shape()
            || self.rotated > n
            || (self.rotated > 0 && table_rows == 0)
        {
            candle_core::bail!(
                "rotary encoding: input {:?} with {heads} heads, tables {:?}, {} rotated tokens do not fit",
                xs_layout.shape(),
                cos_layout.shape(),
                self.rotated
            );
        }
        if xs.is_empty() {
            return Ok((CpuStorage::F32(Vec::new()), xs_layout.shape().clone()));
        }
        let rows = rows_per_task(xs.len() / c);
        let out = par_blocks(xs.len(), rows * c, |block, dst| {
            let src = &xs[block * rows * c..][..dst.len()];
            for (r, (dst, src)) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)).enumerate() {
                let token = (block * rows + r) % n;
                if token >= self.rotated {
                    dst.copy_from_slice(src);
                    continue;
                }
                let angles = (token % table_rows) * half;
                let (cos, sin) = (&cos[angles..angles + half], &sin[angles..angles + half]);
                for (dst, src) in dst
                    .chunks_exact_mut(2 * half)
                    .zip(src.chunks_exact(2 * half))
                {
                    for i in 0..half {
                        let (a, b) = (src[2 * i], src[2 * i + 1]);
                        dst[2 * i] = a * cos[i] - b * sin[i];
                        dst[2 * i + 1] = a * sin[i] + b * cos[i];
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), xs_layout.shape().clone()))
    }
}

/// Patch matrix of `x [B, C, H, W]` for a `k x k` convolution with the given stride and zero
/// padding: `[B·Ho·Wo, C·k·k]`, rows in output-pixel order, columns in `(c, ky, kx)` order
/// (the layout of a PyTorch convolution weight flattened to `[out, C·k·k]`).
pub(crate) fn im2col(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Im2Col {
        kernel,
        stride,
        padding,
    })
}

struct Im2Col {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "sam2-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let data = contiguous_slice(f32_data(storage, "im2col input")?, layout, "im2col input")?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if k == 0 || s == 0 || h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("im2col: kernel {k} stride {s} padding {p} on a {h}x{w} input");
        }
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let width = c * k * k;
        let mut out = vec![0f32; b * ho * wo * width];
        out.par_chunks_mut(wo * width)
            .enumerate()
            .for_each(|(row, dst)| {
                let (img, oy) = (row / ho, row % ho);
                for ox in 0..wo {
                    let cell = &mut dst[ox * width..(ox + 1) * width];
                    for ci in 0..c {
                        for ky in 0..k {
                            let Some(y) = (oy * s + ky).checked_sub(p).filter(|&y| y < h) else {
                                continue;
                            };
                            let src_row = ((img * c + ci) * h + y) * w;
                            for kx in 0..k {
                                if let Some(x) = (ox * s + kx).checked_sub(p).filter(|&x| x < w) {
                                    cell[(ci * k + ky) * k + kx] = data[src_row + x];
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b * ho * wo, width))))
    }
}

/// Max-pools the row-major `h x w` token grid of each entry of `x [G, h·w, C]` (a view whose
/// channels are contiguous) over `sy x sx` cells, floor mode: `[G, h/sy, w/sx, C]`.
pub(crate) fn max_pool_grid(
    x: &Tensor,
    grid: (usize, usize),
    stride: [usize; 2],
) -> Result<Tensor> {
    x.apply_op1_no_bwd(&MaxPoolGrid { grid, stride })
}

struct MaxPoolGrid {
    grid: (usize, usize),
    stride: [usize; 2],
}

impl CustomOp1 for MaxPoolGrid {
    fn name(&self) -> &'static str {
        "sam2-max-pool-grid"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let data = f32_data(storage, "max pool input")?;
        let x = RowView::new(data, layout, "max pool input")?;
        let (h, w) = self.grid;
        let [sy, sx] = self.stride;
        if x.rows != h * w || sy == 0 || sx == 0 {
            candle_core::bail!("max pool: {} tokens are not a {h}x{w} grid", x.rows);
        }
        let (ho, wo, c) = (h / sy, w / sx, x.width);
        let mut out = vec![0f32; x.batch * ho * wo * c];
        if !out.is_empty() {
            out.par_chunks_mut(wo * c)
                .enumerate()
                .for_each(|(row, dst)| {
                    let (g, oy) = (row / ho, row % ho);
                    for ox in 0..wo {
                        let cell = &mut dst[ox * c..(ox + 1) * c];
                        for dy in 0..sy {
                            for dx in 0..sx {
                                let token = (oy * sy + dy) * w + ox * sx + dx;
                                let start = x.offset + g * x.batch_stride + token * x.row_stride;
                                let src = &data[start..start + c];
                                if dy == 0 && dx == 0 {
                                    cell.copy_from_slice(src);
                                } else {
                                    cell.iter_mut().zip(src).for_each(|(m, &v)| *m = m.max(v));
                                }
                            }
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((x.batch, ho, wo, c))))
    }
}

/// Splits `x [B, H, W, C]` into `[B·nh·nw, s, s, C]` windows, padding H and W up to multiples
/// of `s` with the per-channel values `pad [C]`.
pub(crate) fn window_partition(x: &Tensor, s: usize, pad: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&pad.contiguous()?, &WindowPartition { s })
}

struct WindowPartition {
    s: usize,
}

impl CustomOp2 for WindowPartition {
    fn name(&self) -> &'static str {
        "sam2-window-partition"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        pad: &CpuStorage,
        pad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let data = contiguous_slice(f32_data(storage, "window input")?, layout, "window input")?;
        let pad = contiguous_slice(
            f32_data(pad, "window padding")?,
            pad_layout,
            "window padding",
        )?;
        let (b, h, w, c) = layout.shape().dims4()?;
        let s = self.s;
        if s == 0 || pad.len() != c {
            candle_core::bail!(
                "window partition: window {s}, padding of {} for {c} channels",
                pad.len()
            );
        }
        let (nh, nw) = (h.div_ceil(s), w.div_ceil(s));
        let size = b * nh * nw * s * s * c;
        let mut out = if size == 0 {
            Vec::new()
        } else {
            pad.repeat(size / c)
        };
        if !out.is_empty() {
            out.par_chunks_mut(s * s * c)
                .enumerate()
                .for_each(|(window, dst)| {
                    let (img, iy, ix) = (window / (nh * nw), (window / nw) % nh, window % nw);
                    let cols = s.min(w - ix * s);
                    for r in 0..s.min(h.saturating_sub(iy * s)) {
                        let start = ((img * h + iy * s + r) * w + ix * s) * c;
                        dst[r * s * c..r * s * c + cols * c]
                            .copy_from_slice(&data[start..start + cols * c]);
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((b * nh * nw, s, s, c))))
    }
}

/// Reassembles `[B·nh·nw, s, s, C]` windows into a `[B, h, w, C]` grid, dropping the padding
/// beyond `h x w`.
pub(crate) fn window_unpartition(
    windows: &Tensor,
    (b, h, w): (usize, usize, usize),
) -> Result<Tensor> {
    windows
        .contiguous()?
        .apply_op1_no_bwd(&WindowUnpartition { b, h, w })
}

struct WindowUnpartition {
    b: usize,
    h: usize,
    w: usize,
}

impl CustomOp1 for WindowUnpartition {
    fn name(&self) -> &'static str {
        "sam2-window-unpartition"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let windows = contiguous_slice(f32_data(storage, "windows")?, layout, "windows")?;
        let (n, s, s2, c) = layout.shape().dims4()?;
        let (b, h, w) = (self.b, self.h, self.w);
        let (nh, nw) = (h.div_ceil(s.max(1)), w.div_ceil(s.max(1)));
        if s != s2 || n != b * nh * nw {
            candle_core::bail!(
                "window unpartition: windows {:?} do not tile a {b}x{h}x{w} grid",
                layout.shape()
            );
        }
        let mut out = vec![0f32; b * h * w * c];
        if !out.is_empty() {
            out.par_chunks_mut(w * c)
                .enumerate()
                .for_each(|(row, dst)| {
                    let (img, y) = (row / h, row % h);
                    let (iy, r) = (y / s, y % s);
                    for ix in 0..nw {
                        let cols = s.min(w - ix * s);
                        let start = (((img * nh + iy) * nw + ix) * s + r) * s * c;
                        dst[ix * s * c..ix * s * c + cols * c]
                            .copy_from_slice(&windows[start..start + cols * c]);
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate_over_the_softmax_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = ((-87.0 + 175.0 * i as f64 / 200_000.0) as f32) as f64;
            let want = x.exp();
            let got = exp_approx(x as f32) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(-1000.0) < 1e-37 && exp_approx(-1000.0) >= 0.0);
    }

    #[test]
    fn erf_and_gelu_match_the_exact_functions() {
        let mut worst = 0f64;
        for i in 0..=100_000 {
            let x = ((-6.0 + 12.0 * i as f64 / 100_000.0) as f32) as f64;
            let want = libm_erf(x);
            worst = worst.max((erf_approx(x as f32) as f64 - want).abs());
            let gelu_want = 0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2));
            assert!((gelu_erf(x as f32) as f64 - gelu_want).abs() < 1e-6 * (1.0 + x.abs()));
        }
        assert!(worst < 6e-7, "worst absolute error {worst}");
    }

    /// Reference erf in f64 (candle's own, from libm).
    fn libm_erf(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }
}
