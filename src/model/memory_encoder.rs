//! The memory encoder (reference: `sam2/modeling/memory_encoder.py`): turns a frame's image
//! feature and its predicted mask into a memory for later frames. The mask is downsampled to
//! the feature grid by strided convolutions (`MaskDownSampler`), added to a projection of the
//! image feature, mixed by ConvNeXt blocks (`Fuser` of `CXBlock`s), projected to the memory
//! width, and paired with a sine position encoding.
//!
//! The ConvNeXt blocks' depthwise convolution runs a direct CPU kernel for f32 (Candle splits a
//! grouped convolution into one convolution per channel, 256 tiny im2col products at t512);
//! other devices use Candle's grouped convolution.

use crate::model::config::{CxBlockConfig, FuserConfig, MaskDownSamplerConfig, MemoryEncoderConfig};
use crate::model::position_encoding::PositionEmbeddingSine;
use crate::model::sam2_utils::{
    Activation, ChannelOrder, LAYER_NORM_2D_EPS, LayerNorm, Linear, PointwiseConv2d, StridedConv2d, to_channels_first,
};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use rayon::prelude::*;

/// Epsilon of the ConvNeXt block's channel LayerNorm.
const CX_BLOCK_NORM_EPS: f64 = 1e-6;

/// Downsamples a mask `[B, 1, H, W]` by `total_stride`: repeated [strided conv, LayerNorm2d,
/// GELU] stages multiplying the channels by `stride²`, then a 1x1 conv to `embed_dim`. The
/// channel norm and GELU run on a channels-last view (the same normalisation, done by the
/// last-dimension LayerNorm kernel).
#[derive(Debug, Clone)]
pub struct MaskDownSampler {
    /// (`encoder.{3i}` conv, `encoder.{3i+1}` norm) per stage.
    stages: Vec<(StridedConv2d, LayerNorm)>,
    /// The final 1x1 conv over channels-last pixels.
    out_proj: Linear,
}

impl MaskDownSampler {
    /// Loads `encoder.*` under `vb`.
    pub fn new(vb: VarBuilder, config: &MaskDownSamplerConfig) -> Result<Self> {
        let Some(num_layers) = config.num_layers() else {
            candle_core::bail!(
                "mask downsampler: total_stride {} is not a power of stride {}",
                config.total_stride,
                config.stride
            );
        };
        Self::from_layers(
            vb.pp("encoder"),
            [config.kernel_size, config.stride, config.padding],
            num_layers,
            config.embed_dim,
        )
    }

    /// The sequence under `vb` (conv `{3i}`, norm `{3i+1}`, GELU, ..., 1x1 conv `{3n}`) with
    /// `[kernel, stride, padding]` convolutions; also the prompt encoder's mask branch.
    pub fn from_layers(vb: VarBuilder, [kernel, stride, padding]: [usize; 3], num_layers: usize, embed_dim: usize) -> Result<Self> {
        let mut channels = 1;
        let mut stages = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            let out = channels * stride * stride;
            stages.push((
                StridedConv2d::new(vb.pp(3 * i), channels, out, kernel, stride, padding)?,
                LayerNorm::new(vb.pp(3 * i + 1), out, LAYER_NORM_2D_EPS)?,
            ));
            channels = out;
        }
        let out_proj = Linear::pointwise_conv(vb.pp(3 * num_layers), channels, embed_dim)?;
        Ok(Self { stages, out_proj })
    }
}

impl Module for MaskDownSampler {
    /// `[B, 1, H, W]` → `[B, embed_dim, H/total_stride, W/total_stride]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Channels-first input, channels-last from the first stage on.
        let mut x = x.clone();
        let mut order = ChannelOrder::First;
        for (conv, norm) in &self.stages {
            x = norm.forward_activated(&conv.forward(&x, order)?, Activation::Gelu)?;
            order = ChannelOrder::Last;
        }
        if order == ChannelOrder::First {
            x = x.permute((0, 2, 3, 1))?;
        }
        to_channels_first(&self.out_proj.forward(&x)?)
    }
}

/// Per-channel (depthwise) `k x k` convolution with stride 1 and zero padding, with bias.
#[derive(Debug, Clone)]
struct DepthwiseConv2d {
    /// `[C, 1, k, k]`.
    weight: Tensor,
    /// `[C]`.
    bias: Tensor,
    padding: usize,
    /// Candle's grouped convolution, for devices without the direct kernel.
    grouped: Conv2d,
}

impl DepthwiseConv2d {
    fn new(vb: VarBuilder, channels: usize, kernel_size: usize, padding: usize) -> Result<Self> {
        let weight = vb.get((channels, 1, kernel_size, kernel_size), "weight")?;
        let bias = vb.get(channels, "bias")?;
        let config = Conv2dConfig {
            padding,
            groups: channels,
            ..Default::default()
        };
        Ok(Self {
            grouped: Conv2d::new(weight.clone(), Some(bias.clone()), config),
            weight,
            bias,
            padding,
        })
    }
}

impl Module for DepthwiseConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            x.contiguous()?.apply_op3_no_bwd(
                &self.weight,
                &self.bias,
                &DepthwiseKernel {
                    padding: self.padding,
                },
            )
        } else {
            self.grouped.forward(x)
        }
    }
}

/// The direct CPU kernel behind `DepthwiseConv2d`: one output plane per task, accumulated tap
/// by tap over whole rows so the inner loop runs over contiguous memory.
struct DepthwiseKernel {
    padding: usize,
}

impl CustomOp3 for DepthwiseKernel {
    fn name(&self) -> &'static str {
        "sam2-depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        x_layout: &Layout,
        ws: &CpuStorage,
        w_layout: &Layout,
        bs: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let slice = |storage: &'_ CpuStorage, layout: &Layout, what: &str| -> Result<Vec<f32>> {
            let CpuStorage::F32(data) = storage else {
                candle_core::bail!("depthwise convolution: {what} must be f32");
            };
            match layout.contiguous_offsets() {
                Some((start, end)) => Ok(data[start..end].to_vec()),
                None => candle_core::bail!("depthwise convolution: {what} must be contiguous"),
            }
        };
        let CpuStorage::F32(x_data) = xs else {
            candle_core::bail!("depthwise convolution: input must be f32");
        };
        let Some((x_start, x_end)) = x_layout.contiguous_offsets() else {
            candle_core::bail!("depthwise convolution: input must be contiguous");
        };
        let x = &x_data[x_start..x_end];
        let weight = slice(ws, w_layout, "weight")?;
        let bias = slice(bs, b_layout, "bias")?;
        let (batch, channels, h, w) = x_layout.shape().dims4()?;
        let (wc, _, k, k2) = w_layout.shape().dims4()?;
        let p = self.padding;
        if wc != channels || k != k2 || bias.len() != channels || h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!(
                "depthwise convolution: input {:?}, weight {:?}, bias {} do not fit",
                x_layout.shape(),
                w_layout.shape(),
                bias.len()
            );
        }
        let (oh, ow) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
        let mut out = vec![0f32; batch * channels * oh * ow];
        if !out.is_empty() {
            out.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, dst)| {
                let c = plane % channels;
                let src = &x[plane * h * w..(plane + 1) * h * w];
                dst.fill(bias[c]);
                for ky in 0..k {
                    // Output rows whose input row oy + ky - p lies inside the image.
                    let oy_start = p.saturating_sub(ky);
                    let oy_end = (h + p).saturating_sub(ky).min(oh);
                    for kx in 0..k {
                        let tap = weight[(c * k + ky) * k + kx];
                        let ox_start = p.saturating_sub(kx);
                        let ox_end = (w + p).saturating_sub(kx).min(ow);
                        if ox_start >= ox_end {
                            continue;
                        }
                        for oy in oy_start..oy_end {
                            let iy = oy + ky - p;
                            let ix_start = ox_start + kx - p;
                            let out_row = &mut dst[oy * ow + ox_start..oy * ow + ox_end];
                            let in_row = &src[iy * w + ix_start..iy * w + ix_start + out_row.len()];
                            for (o, &i) in out_row.iter_mut().zip(in_row) {
                                *o += tap * i;
                            }
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, channels, oh, ow))))
    }
}

/// The block's spatial convolution: depthwise (`use_dwconv`, SAM2's setting) or dense.
#[derive(Debug, Clone)]
enum DwConv {
    Depthwise(DepthwiseConv2d),
    Dense(Conv2d),
}

/// ConvNeXt block: depthwise conv, channel LayerNorm, pointwise MLP with 4x expansion and GELU,
/// optional layer scale `gamma`, residual connection.
#[derive(Debug, Clone)]
pub struct CxBlock {
    dwconv: DwConv,
    norm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Option<Tensor>,
}

impl CxBlock {
    pub fn new(vb: VarBuilder, config: &CxBlockConfig) -> Result<Self> {
        let dim = config.dim;
        let dwconv = if config.use_dwconv {
            DwConv::Depthwise(DepthwiseConv2d::new(vb.pp("dwconv"), dim, config.kernel_size, config.padding)?)
        } else {
            let dense = Conv2dConfig {
                padding: config.padding,
                ..Default::default()
            };
            DwConv::Dense(candle_nn::conv2d(dim, dim, config.kernel_size, dense, vb.pp("dwconv"))?)
        };
        let gamma = if config.layer_scale_init_value > 0.0 {
            Some(vb.get(dim, "gamma")?)
        } else {
            None
        };
        Ok(Self {
            dwconv,
            norm: LayerNorm::new(vb.pp("norm"), dim, CX_BLOCK_NORM_EPS)?,
            pwconv1: Linear::new(vb.pp("pwconv1"), dim, 4 * dim)?,
            pwconv2: Linear::new(vb.pp("pwconv2"), 4 * dim, dim)?,
            gamma,
        })
    }
}

impl Module for CxBlock {
    /// `[B, C, H, W]` → `[B, C, H, W]`; the norm and MLP run channels-last.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.dwconv {
            DwConv::Depthwise(conv) => conv.forward(x)?,
            DwConv::Dense(conv) => conv.forward(x)?,
        };
        let y = y.permute((0, 2, 3, 1))?;
        let y = self.norm.forward(&y)?;
        let y = self.pwconv1.forward_fused(&y, Some(Activation::Gelu), None)?;
        let mut y = self.pwconv2.forward(&y)?;
        if let Some(gamma) = &self.gamma {
            y = y.broadcast_mul(gamma)?;
        }
        x + y.permute((0, 3, 1, 2))?
    }
}

/// Optional 1x1 input projection followed by `num_layers` ConvNeXt blocks.
#[derive(Debug, Clone)]
pub struct Fuser {
    proj: Option<PointwiseConv2d>,
    layers: Vec<CxBlock>,
}

impl Fuser {
    pub fn new(vb: VarBuilder, config: &FuserConfig) -> Result<Self> {
        let proj = match (config.input_projection, config.dim) {
            (true, Some(dim)) => Some(PointwiseConv2d::new(vb.pp("proj"), dim, dim)?),
            (true, None) => candle_core::bail!("fuser input projection needs `dim`"),
            (false, _) => None,
        };
        let layers = (0..config.num_layers)
            .map(|i| CxBlock::new(vb.pp("layers").pp(i), &config.layer))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { proj, layers })
    }
}

impl Module for Fuser {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = match &self.proj {
            Some(proj) => proj.forward(x)?,
            None => x.clone(),
        };
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}

/// A new memory: features `[B, M, He, We]` and their position encoding `[B, M, He, We]`.
#[derive(Debug, Clone)]
pub struct EncodedMemory {
    pub features: Tensor,
    pub pos_enc: Tensor,
}

/// `MemoryEncoder`.
#[derive(Debug)]
pub struct MemoryEncoder {
    mask_downsampler: MaskDownSampler,
    pix_feat_proj: PointwiseConv2d,
    fuser: Fuser,
    /// 1x1 conv to `out_dim`; absent when `out_dim == in_dim` (identity).
    out_proj: Option<PointwiseConv2d>,
    position_encoding: PositionEmbeddingSine,
}

impl MemoryEncoder {
    /// Loads the encoder under `vb` (`memory_encoder`).
    pub fn new(vb: VarBuilder, config: &MemoryEncoderConfig) -> Result<Self> {
        let in_dim = config.in_dim;
        let out_proj = if config.out_dim != in_dim {
            Some(PointwiseConv2d::new(vb.pp("out_proj"), in_dim, config.out_dim)?)
        } else {
            None
        };
        Ok(Self {
            mask_downsampler: MaskDownSampler::new(vb.pp("mask_downsampler"), &config.mask_downsampler)?,
            pix_feat_proj: PointwiseConv2d::new(vb.pp("pix_feat_proj"), in_dim, in_dim)?,
            fuser: Fuser::new(vb.pp("fuser"), &config.fuser)?,
            out_proj,
            position_encoding: PositionEmbeddingSine::new(&config.position_encoding)?,
        })
    }

    /// The mask branch alone: `[B, 1, S, S]` → `[B, C, He, We]`.
    pub fn downsample_mask(&self, masks: &Tensor) -> Result<Tensor> {
        self.mask_downsampler.forward(masks)
    }

    /// The image branch alone (`pix_feat_proj`).
    pub fn project_pixel_features(&self, pix_feat: &Tensor) -> Result<Tensor> {
        self.pix_feat_proj.forward(pix_feat)
    }

    /// The ConvNeXt fuser applied to the sum of both branches.
    pub fn fuse(&self, x: &Tensor) -> Result<Tensor> {
        self.fuser.forward(x)
    }

    /// Projection of fused features to the memory width (`out_proj`).
    pub fn project_output(&self, x: &Tensor) -> Result<Tensor> {
        match &self.out_proj {
            Some(conv) => conv.forward(x),
            None => Ok(x.clone()),
        }
    }

    /// Encodes `pix_feat` `[B, C, He, We]` with `masks` `[B, 1, S, S]`; the masks go through a
    /// sigmoid first unless `skip_mask_sigmoid` (SAM2Base applies its own scaling and skips it).
    pub fn forward(&self, pix_feat: &Tensor, masks: &Tensor, skip_mask_sigmoid: bool) -> Result<EncodedMemory> {
        let masks = if skip_mask_sigmoid {
            masks.clone()
        } else {
            candle_nn::ops::sigmoid(masks)?
        };
        let masks = self.downsample_mask(&masks)?;
        let x = (self.project_pixel_features(pix_feat)? + masks)?;
        let features = self.project_output(&self.fuse(&x)?)?;
        let pos_enc = self.position_encoding.forward(&features)?;
        Ok(EncodedMemory { features, pos_enc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    fn values(n: usize, phase: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.71 + phase).sin() * 1.3).collect()
    }

    #[test]
    fn depthwise_kernel_matches_grouped_convolution() {
        let dev = Device::Cpu;
        for (channels, h, w, k, padding) in [(5, 9, 7, 7, 3), (3, 6, 11, 3, 1), (2, 8, 8, 3, 0), (4, 3, 4, 7, 3)] {
            let x = Tensor::from_vec(values(2 * channels * h * w, 0.3), (2, channels, h, w), &dev).unwrap();
            let weight = Tensor::from_vec(values(channels * k * k, 1.1), (channels, 1, k, k), &dev).unwrap();
            let bias = Tensor::from_vec(values(channels, 2.0), channels, &dev).unwrap();
            let mut map = HashMap::new();
            map.insert("weight".to_string(), weight);
            map.insert("bias".to_string(), bias);
            let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
            let conv = DepthwiseConv2d::new(vb, channels, k, padding).unwrap();
            let direct = conv.forward(&x).unwrap();
            let grouped = conv.grouped.forward(&x).unwrap();
            let err = crate::model::test_support::max_abs_diff(&direct, &grouped);
            assert!(err < 1e-5, "{channels}x{h}x{w} k{k} p{padding}: {err}");
        }
    }
}
