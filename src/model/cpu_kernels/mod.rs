//! Hand-written CPU kernels for the hot paths of the network, used for f32 tensors on the CPU
//! (callers fall back to plain candle operations on other devices). Each submodule owns one
//! kernel family:
//!
//! * `norm`: layer normalisation with f64 sums (candle's fused layer norm uses E[x²] − mean²,
//!   which loses digits when a token's mean is large);
//! * `linear`: `x·Wᵀ + b` with bias, residual and activation fused into the product's row
//!   blocks;
//! * `attention`: multi-head scaled dot-product attention reading strided views (slices of a
//!   fused qkv projection) and writing heads back interleaved;
//! * `rope`: rotary position encoding of every head in one pass;
//! * `grid`: the patch matrix of Hiera's strided patch embedding and its token-grid reshuffles
//!   (q-pooling, window partition and reassembly, channels-last to channels-first);
//! * `activation`: ReLU and GELU over a tensor, and the in-place pass other kernels fuse into
//!   their blocks;
//! * `math`: the branch-free `exp`, `erf` and GELU the kernels vectorise.
//!
//! Shared here: the row-block parallelism (independent row blocks, each with a
//! single-threaded `gemm` product, the library candle itself uses on the CPU) and the
//! AVX2 dispatch of element-wise loops.

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Defines `fn $name` that runs `$body` compiled for AVX2 when the processor has it (checked
/// at run time), and for the baseline target otherwise. Only the vector width differs: Rust
/// never fuses a multiply and an add, so both give the same bits.
macro_rules! vectorised {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
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

mod activation;
mod attention;
mod grid;
mod linear;
mod math;
mod norm;
mod rope;

pub(crate) use activation::activation;
pub(crate) use attention::attention;
pub(crate) use grid::{channels_first, im2col, max_pool_grid, window_partition, window_unpartition};
pub(crate) use linear::linear;
pub(crate) use norm::layer_norm;
pub(crate) use rope::rotate_pairs;

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

/// Rows of a product's output that one parallel task computes: enough that packing the other
/// operand is amortised, few enough that every thread gets a couple of tasks.
fn rows_per_task(rows: usize) -> usize {
    let threads = thread_count();
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

/// Threads of the pool the kernels run on. (candle's `get_num_threads` would count the
/// physical cores by reading /proc/cpuinfo on every call.)
fn thread_count() -> usize {
    rayon::current_num_threads().max(1)
}

fn threaded() -> Parallelism {
    match thread_count() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
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
