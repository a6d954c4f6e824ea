//! Multi-head scaled dot-product attention on strided `[B, N, C]` views: row blocks of the
//! queries in parallel, scores by one product, softmax with the division deferred to the
//! output, then the value product.

use super::math::exp_approx;
use super::{RowView, f32_data, par_blocks, rows_per_task, thread_count, threaded};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

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
        let threads = thread_count();
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
