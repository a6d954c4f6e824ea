//! The image encoder (reference: `sam2/modeling/backbones/image_encoder.py`): the Hiera trunk
//! followed by the FPN neck, which projects every trunk stage to `d_model` channels with a 1x1
//! convolution, adds upsampled coarser features on the configured top-down levels, and attaches
//! a sine position encoding to each level. `scalp` then drops the coarsest levels.

use crate::model::config::{FpnFuse, FpnInterpolation, FpnNeckConfig, ImageEncoderConfig};
use crate::model::hiera::Hiera;
use crate::model::position_encoding::PositionEmbeddingSine;
use crate::model::sam2_utils::{Linear, to_channels_first};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `FpnNeck`: lateral 1x1 convolutions, a top-down path and per-level position encodings.
#[derive(Debug)]
pub struct FpnNeck {
    /// Lateral convolutions in the reference's order: the coarsest level's first.
    convs: Vec<Linear>,
    position_encoding: PositionEmbeddingSine,
    config: FpnNeckConfig,
}

impl FpnNeck {
    /// Builds the neck from the `image_encoder.neck` weights.
    pub fn new(vb: VarBuilder, config: &FpnNeckConfig) -> Result<Self> {
        let d = config.d_model;
        let convs_vb = vb.pp("convs");
        let convs = config
            .backbone_channel_list
            .iter()
            .enumerate()
            .map(|(j, &channels)| Linear::pointwise_conv(convs_vb.pp(j).pp("conv"), channels, d))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            convs,
            position_encoding: PositionEmbeddingSine::new(&config.position_encoding)?,
            config: config.clone(),
        })
    }

    /// `trunk_features`: the trunk's stage outputs, highest resolution first, channels-last
    /// `[B, H, W, C_i]`. Returns the neck features and their position encodings per level,
    /// highest resolution first, both `[B, d_model, H, W]` (all levels, before scalp).
    pub fn forward(&self, trunk_features: &[Tensor]) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let levels = self.convs.len();
        if trunk_features.len() != levels {
            candle_core::bail!(
                "FPN neck expects {levels} trunk levels, got {}",
                trunk_features.len()
            );
        }
        let mut features: Vec<Option<Tensor>> = vec![None; levels];
        let mut positions: Vec<Option<Tensor>> = vec![None; levels];
        let mut coarser: Option<Tensor> = None;
        for i in (0..levels).rev() {
            let lateral =
                to_channels_first(&self.convs[levels - 1 - i].forward(&trunk_features[i])?)?;
            let level = match (&coarser, self.config.is_top_down_level(i)) {
                (Some(prev), true) => {
                    let (_, _, h, w) = prev.dims4()?;
                    let top_down = match self.config.fpn_interp_model {
                        FpnInterpolation::Nearest => prev.upsample_nearest2d(2 * h, 2 * w)?,
                        FpnInterpolation::Bilinear => {
                            prev.upsample_bilinear2d(2 * h, 2 * w, false)?
                        }
                    };
                    let sum = (lateral + top_down)?;
                    match self.config.fuse_type {
                        FpnFuse::Sum => sum,
                        FpnFuse::Avg => (sum / 2.0)?,
                    }
                }
                _ => lateral,
            };
            positions[i] = Some(self.position_encoding.forward(&level)?);
            features[i] = Some(level.clone());
            coarser = Some(level);
        }
        Ok((
            features.into_iter().flatten().collect(),
            positions.into_iter().flatten().collect(),
        ))
    }
}

/// What the image encoder hands to SAM2Base: the kept FPN levels and their encodings.
#[derive(Debug, Clone)]
pub struct ImageEncoderOutput {
    /// Neck features after scalp, highest resolution first, `[B, d_model, H, W]`.
    pub backbone_fpn: Vec<Tensor>,
    /// Sine position encodings of those levels, same shapes.
    pub vision_pos_enc: Vec<Tensor>,
}

impl ImageEncoderOutput {
    /// The coarsest kept level (`vision_features`, stride 16 for SAM2).
    pub fn vision_features(&self) -> Option<&Tensor> {
        self.backbone_fpn.last()
    }
}

/// `ImageEncoder`: trunk + neck + scalp.
#[derive(Debug)]
pub struct ImageEncoder {
    trunk: Hiera,
    neck: FpnNeck,
    scalp: usize,
}

impl ImageEncoder {
    /// Builds the encoder from the `image_encoder` weights.
    pub fn new(vb: VarBuilder, config: &ImageEncoderConfig) -> Result<Self> {
        let trunk_channels = config.trunk.channel_list();
        if trunk_channels != config.neck.backbone_channel_list {
            candle_core::bail!(
                "trunk channels {trunk_channels:?} do not match the neck's {:?}",
                config.neck.backbone_channel_list
            );
        }
        if config.scalp >= trunk_channels.len() {
            candle_core::bail!("scalp {} drops every feature level", config.scalp);
        }
        Ok(Self {
            trunk: Hiera::new(vb.pp("trunk"), &config.trunk)?,
            neck: FpnNeck::new(vb.pp("neck"), &config.neck)?,
            scalp: config.scalp,
        })
    }

    /// Encodes normalised `[B, 3, S, S]` images.
    pub fn forward(&self, image: &Tensor) -> Result<ImageEncoderOutput> {
        let trunk_features = self.trunk.forward(image)?;
        let (mut backbone_fpn, mut vision_pos_enc) = self.neck.forward(&trunk_features)?;
        let kept = backbone_fpn.len() - self.scalp;
        backbone_fpn.truncate(kept);
        vision_pos_enc.truncate(kept);
        Ok(ImageEncoderOutput {
            backbone_fpn,
            vision_pos_enc,
        })
    }
}
