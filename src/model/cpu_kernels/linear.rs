//! `activation(x·Wᵀ + b) + residual` as parallel row blocks, each a single-threaded product
//! onto the pre-loaded bias (and residual) followed by the activation while the block is in cache.

use super::activation::activate;
use super::{contiguous_slice, f32_data, par_blocks, rows_per_task, threaded};
use crate::model::sam2_utils::Activation;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;

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
