//! Hiera's token-grid kernels: the im2col patch matrix of the strided patch embedding,
//! max-pooling of token grids, and window partition/reassembly, each one parallel pass.

use super::{RowView, contiguous_slice, f32_data, par_blocks};
use crate::model::sam2_utils::ChannelOrder;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Patch matrix of the image `x` (channels in `order`) for a `k x k` convolution with the
/// given stride and zero padding: `[B, Ho, Wo, C·k·k]`, each output pixel's patch in
/// `(c, ky, kx)` order (the layout of a PyTorch convolution weight flattened to `[out, C·k·k]`).
pub(crate) fn im2col(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    order: ChannelOrder,
) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Im2Col {
        kernel,
        stride,
        padding,
        order,
    })
}

struct Im2Col {
    kernel: usize,
    stride: usize,
    padding: usize,
    order: ChannelOrder,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "sam2-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let data = contiguous_slice(f32_data(storage, "im2col input")?, layout, "im2col input")?;
        let (b, d1, d2, d3) = layout.shape().dims4()?;
        let (c, h, w) = match self.order {
            ChannelOrder::First => (d1, d2, d3),
            ChannelOrder::Last => (d3, d1, d2),
        };
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if k == 0 || s == 0 || h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("im2col: kernel {k} stride {s} padding {p} on a {h}x{w} input");
        }
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let width = c * k * k;
        // Input coordinate of output index `o` and kernel tap `t` along one axis, if inside.
        let source =
            |o: usize, t: usize, size: usize| (o * s + t).checked_sub(p).filter(|&v| v < size);
        let out = par_blocks(b * ho * wo * width, wo * width, |row, dst| {
            let (img, oy) = (row / ho, row % ho);
            for ox in 0..wo {
                let cell = &mut dst[ox * width..(ox + 1) * width];
                for ky in 0..k {
                    let Some(y) = source(oy, ky, h) else { continue };
                    for kx in 0..k {
                        let Some(x) = source(ox, kx, w) else { continue };
                        match self.order {
                            ChannelOrder::First => {
                                for ci in 0..c {
                                    cell[(ci * k + ky) * k + kx] =
                                        data[((img * c + ci) * h + y) * w + x];
                                }
                            }
                            ChannelOrder::Last => {
                                let pixel = &data[((img * h + y) * w + x) * c..][..c];
                                for (ci, &v) in pixel.iter().enumerate() {
                                    cell[(ci * k + ky) * k + kx] = v;
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, ho, wo, width))))
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
        let out = par_blocks(x.batch * ho * wo * c, wo * c, |row, dst| {
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
        let out = par_blocks(b * h * w * c, w * c, |row, dst| {
            let (img, y) = (row / h, row % h);
            let (iy, r) = (y / s, y % s);
            for ix in 0..nw {
                let cols = s.min(w - ix * s);
                let start = (((img * nh + iy) * nw + ix) * s + r) * s * c;
                dst[ix * s * c..ix * s * c + cols * c]
                    .copy_from_slice(&windows[start..start + cols * c]);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, c))))
    }
}

/// Channels-last `x [B, H, W, C]` (contiguous) as channels-first `[B, C, H, W]`: a parallel
/// transpose in tiles of 16 channels by 64 tokens (candle's strided copy is one thread).
pub(crate) fn channels_first(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&ChannelsFirst)
}

struct ChannelsFirst;

impl CustomOp1 for ChannelsFirst {
    fn name(&self) -> &'static str {
        "sam2-channels-first"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        const CHANNELS: usize = 16;
        const TOKENS: usize = 64;
        let xs = contiguous_slice(
            f32_data(storage, "channels-last grid")?,
            layout,
            "channels-last grid",
        )?;
        let (b, h, w, c) = layout.shape().dims4()?;
        let n = h * w;
        let shape = Shape::from((b, c, h, w));
        if xs.is_empty() {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        let out = par_blocks(xs.len(), c * n, |batch, dst_batch| {
            let src = &xs[batch * c * n..(batch + 1) * c * n];
            dst_batch
                .par_chunks_mut(CHANNELS * n)
                .enumerate()
                .for_each(|(group, dst)| {
                    let (c0, channels) = (group * CHANNELS, dst.len() / n);
                    for t0 in (0..n).step_by(TOKENS) {
                        for t in t0..(t0 + TOKENS).min(n) {
                            let token = &src[t * c + c0..t * c + c0 + channels];
                            for (j, &v) in token.iter().enumerate() {
                                dst[j * n + t] = v;
                            }
                        }
                    }
                });
        });
        Ok((CpuStorage::F32(out), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn channels_first_equals_a_permuted_copy() {
        // 2 entries, 5x7 grid, 37 channels: tiles that do not divide the grid or channels.
        let values: Vec<f32> = (0..2 * 5 * 7 * 37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let x = Tensor::from_vec(values, (2, 5, 7, 37), &Device::Cpu).unwrap();
        let want = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        let got = channels_first(&x).unwrap();
        assert_eq!(got.dims(), &[2, 37, 5, 7]);
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&got), flat(&want));
    }
}
