//! Rotary position encoding of `[B, N, heads·d]` tokens in one pass.

use super::{contiguous_slice, f32_data, par_blocks, rows_per_task};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

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
