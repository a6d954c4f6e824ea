//! The memory encoder (reference: `sam2/modeling/memory_encoder.py`): turns a frame's image
//! feature and its predicted mask into a memory for later frames. The mask is downsampled to
//! the feature grid by strided convolutions (`MaskDownSampler`), added to a projection of the
//! image feature, mixed by ConvNeXt blocks (`Fuser` of `CXBlock`s), projected to the memory
//! width, and paired with a sine position encoding.

use crate::model::config::{CxBlockConfig, FuserConfig, MaskDownSamplerConfig, MemoryEncoderConfig};
use crate::model::position_encoding::PositionEmbeddingSine;
use crate::model::sam2_utils::{Activation, LayerNorm, LayerNorm2d, Linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

/// Epsilon of the ConvNeXt block's channel LayerNorm.
const CX_BLOCK_NORM_EPS: f64 = 1e-6;

/// Downsamples a mask `[B, 1, H, W]` by `total_stride`: repeated [strided conv, LayerNorm2d,
/// GELU] stages multiplying the channels by `stride²`, then a 1x1 conv to `embed_dim`.
#[derive(Debug, Clone)]
pub struct MaskDownSampler {
    stages: Vec<(Conv2d, LayerNorm2d)>,
    out_proj: Conv2d,
}

impl MaskDownSampler {
    /// Loads `encoder.{3i}` (conv), `encoder.{3i+1}` (norm) and the final 1x1 conv under `vb`.
    pub fn new(vb: VarBuilder, config: &MaskDownSamplerConfig) -> Result<Self> {
        let Some(num_layers) = config.num_layers() else {
            candle_core::bail!(
                "mask downsampler: total_stride {} is not a power of stride {}",
                config.total_stride,
                config.stride
            );
        };
        let conv = Conv2dConfig {
            padding: config.padding,
            stride: config.stride,
            ..Default::default()
        };
        let vb = vb.pp("encoder");
        let mut channels = 1;
        let mut stages = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            let out = channels * config.stride * config.stride;
            stages.push((
                candle_nn::conv2d(channels, out, config.kernel_size, conv, vb.pp(3 * i))?,
                LayerNorm2d::new(vb.pp(3 * i + 1), out)?,
            ));
            channels = out;
        }
        let out_proj =
            candle_nn::conv2d(channels, config.embed_dim, 1, Default::default(), vb.pp(3 * num_layers))?;
        Ok(Self { stages, out_proj })
    }
}

impl Module for MaskDownSampler {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (conv, norm) in &self.stages {
            x = Activation::Gelu.apply(&norm.forward(&conv.forward(&x)?)?)?;
        }
        self.out_proj.forward(&x)
    }
}

/// ConvNeXt block: depthwise conv, channel LayerNorm, pointwise MLP with 4x expansion and GELU,
/// optional layer scale `gamma`, residual connection.
#[derive(Debug, Clone)]
pub struct CxBlock {
    dwconv: Conv2d,
    norm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Option<Tensor>,
}

impl CxBlock {
    pub fn new(vb: VarBuilder, config: &CxBlockConfig) -> Result<Self> {
        let dim = config.dim;
        let dw = Conv2dConfig {
            padding: config.padding,
            groups: if config.use_dwconv { dim } else { 1 },
            ..Default::default()
        };
        let gamma = if config.layer_scale_init_value > 0.0 {
            Some(vb.get(dim, "gamma")?)
        } else {
            None
        };
        Ok(Self {
            dwconv: candle_nn::conv2d(dim, dim, config.kernel_size, dw, vb.pp("dwconv"))?,
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
        let y = self.dwconv.forward(x)?.permute((0, 2, 3, 1))?;
        let y = self.norm.forward(&y)?;
        let y = self.pwconv1.forward_activated(&y, Some(Activation::Gelu))?;
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
    proj: Option<Conv2d>,
    layers: Vec<CxBlock>,
}

impl Fuser {
    pub fn new(vb: VarBuilder, config: &FuserConfig) -> Result<Self> {
        let proj = match (config.input_projection, config.dim) {
            (true, Some(dim)) => Some(candle_nn::conv2d(dim, dim, 1, Default::default(), vb.pp("proj"))?),
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
    pix_feat_proj: Conv2d,
    fuser: Fuser,
    /// 1x1 conv to `out_dim`; absent when `out_dim == in_dim` (identity).
    out_proj: Option<Conv2d>,
    position_encoding: PositionEmbeddingSine,
}

impl MemoryEncoder {
    /// Loads the encoder under `vb` (`memory_encoder`).
    pub fn new(vb: VarBuilder, config: &MemoryEncoderConfig) -> Result<Self> {
        let in_dim = config.in_dim;
        let out_proj = if config.out_dim != in_dim {
            Some(candle_nn::conv2d(in_dim, config.out_dim, 1, Default::default(), vb.pp("out_proj"))?)
        } else {
            None
        };
        Ok(Self {
            mask_downsampler: MaskDownSampler::new(vb.pp("mask_downsampler"), &config.mask_downsampler)?,
            pix_feat_proj: candle_nn::conv2d(in_dim, in_dim, 1, Default::default(), vb.pp("pix_feat_proj"))?,
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
