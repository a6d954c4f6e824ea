//! The model configuration, read from the yaml files SAM2 and MedSAM2 publish (the hydra
//! `model:` tree of e.g. `sam2.1_hiera_t512.yaml`).
//!
//! Every component section must name the class the reference would instantiate (`_target_`)
//! and may only use that class's constructor arguments; omitted arguments take the reference
//! constructor's default, and arguments without a default are required. After parsing, the
//! overrides of MedSAM2's `build_sam2_video_predictor_npz` are applied (or, when the file has a
//! top-level `predictor_overrides` section, like the parity fixtures' `config.yaml`, those).
//! Other top-level sections (trainer, data, ...) are ignored; `${...}` interpolations are not
//! resolved, so training configs are not readable.
//!
//! The built-in default is MedSAM2's `sam2.1_hiera_t512.yaml`, kept in
//! `assets/configs/sam2.1_hiera_t512.yaml`.

use crate::model::sam2_utils::Activation;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// MedSAM2's 512 px SAM2.1 Hiera-tiny configuration, embedded in the binary.
const T512_YAML: &str = include_str!("../../assets/configs/sam2.1_hiera_t512.yaml");

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read model configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model configuration{}: {message}", origin_suffix(.origin))]
    Invalid {
        origin: Option<PathBuf>,
        message: String,
    },
}

fn origin_suffix(origin: &Option<PathBuf>) -> String {
    origin
        .as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// A complete SAM2 model configuration with the predictor builder's overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Sam2Config {
    pub model: ModelConfig,
}

/// Which predictor builder's hydra overrides go on top of the file's `model:` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PredictorBuilder {
    /// MedSAM2's `build_sam2_video_predictor_npz` (its volume scripts), or the file's own
    /// `predictor_overrides` section when it has one.
    #[default]
    Npz,
    /// `build_sam2_video_predictor` as MedSAM2's video script calls it: the post-processing
    /// overrides only with `apply_postprocessing`, and `non_overlap_masks` as given. A
    /// `predictor_overrides` section (written for the volume builder) does not apply.
    Video { apply_postprocessing: bool, non_overlap_masks: bool },
}

impl Sam2Config {
    /// Parses a yaml document (an official SAM2 / MedSAM2 config file's text).
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_yaml_str_for(text, PredictorBuilder::Npz)
    }

    /// Parses a yaml document with `builder`'s overrides.
    pub fn from_yaml_str_for(text: &str, builder: PredictorBuilder) -> Result<Self, ConfigError> {
        parse(text, builder).map_err(|message| ConfigError::Invalid {
            origin: None,
            message,
        })
    }

    /// Reads and parses a yaml configuration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_file_for(path, PredictorBuilder::Npz)
    }

    /// Reads and parses a yaml configuration file with `builder`'s overrides.
    pub fn from_file_for(path: impl AsRef<Path>, builder: PredictorBuilder) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&text, builder).map_err(|message| ConfigError::Invalid {
            origin: Some(path.to_path_buf()),
            message,
        })
    }

    /// MedSAM2's `sam2.1_hiera_t512.yaml` with the overrides of its video-predictor builder.
    pub fn default_t512() -> Self {
        Self::default_t512_for(PredictorBuilder::Npz)
    }

    /// MedSAM2's `sam2.1_hiera_t512.yaml` with `builder`'s overrides.
    pub fn default_t512_for(builder: PredictorBuilder) -> Self {
        // The embedded file is parsed by a unit test; it cannot fail at run time.
        Self::from_yaml_str_for(T512_YAML, builder).expect("embedded t512 configuration is valid")
    }
}

/// Top level of a config file: only `model` (and the fixtures' `predictor_overrides`) matter.
#[derive(Deserialize)]
struct ConfigFile {
    model: Option<ModelConfig>,
    predictor_overrides: Option<PredictorOverrides>,
}

fn parse(text: &str, builder: PredictorBuilder) -> Result<Sam2Config, String> {
    let file: ConfigFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut model = file
        .model
        .ok_or_else(|| "the file has no top-level `model:` section (training configs, which keep it under `trainer:`, are not supported)".to_string())?;
    match builder {
        PredictorBuilder::Npz => file
            .predictor_overrides
            .unwrap_or_else(PredictorOverrides::medsam2_npz_builder)
            .apply_to(&mut model),
        PredictorBuilder::Video { apply_postprocessing, non_overlap_masks } => {
            if apply_postprocessing {
                PredictorOverrides::medsam2_npz_builder().apply_to(&mut model);
            }
            model.non_overlap_masks = non_overlap_masks;
        }
    }
    model.validate()?;
    Ok(Sam2Config { model })
}

/// Classes `model._target_` may name: SAM2Base or one of the video predictors built on it.
const MODEL_TARGETS: &[&str] = &[
    "sam2.modeling.sam2_base.SAM2Base",
    "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "sam2.sam2_video_predictor_legacy.SAM2VideoPredictor",
    "sam2.sam2_video_predictor_npz.SAM2VideoPredictorNPZ",
];

fn check_target(section: &str, found: &str, expected: &str) -> Result<(), String> {
    if found == expected {
        Ok(())
    } else {
        Err(format!(
            "{section}: unsupported _target_ `{found}` (this port implements `{expected}`)"
        ))
    }
}

fn default_true() -> bool {
    true
}

/// The `model` section: the constructor arguments of SAM2Base and of the (legacy) video
/// predictor that MedSAM2 builds. Defaults are the reference constructors' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(rename = "_target_")]
    pub target: Option<String>,
    pub image_encoder: ImageEncoderConfig,
    pub memory_attention: MemoryAttentionConfig,
    pub memory_encoder: MemoryEncoderConfig,
    #[serde(default = "ModelConfig::default_num_maskmem")]
    pub num_maskmem: usize,
    #[serde(default = "ModelConfig::default_image_size")]
    pub image_size: usize,
    #[serde(default = "ModelConfig::default_backbone_stride")]
    pub backbone_stride: usize,
    #[serde(default = "ModelConfig::default_sigmoid_scale")]
    pub sigmoid_scale_for_mem_enc: f64,
    #[serde(default)]
    pub sigmoid_bias_for_mem_enc: f64,
    #[serde(default)]
    pub binarize_mask_from_pts_for_mem_enc: bool,
    #[serde(default)]
    pub use_mask_input_as_output_without_sam: bool,
    /// -1 = no limit.
    #[serde(default = "ModelConfig::default_max_cond_frames")]
    pub max_cond_frames_in_attn: i64,
    #[serde(default)]
    pub directly_add_no_mem_embed: bool,
    #[serde(default)]
    pub use_high_res_features_in_sam: bool,
    #[serde(default)]
    pub multimask_output_in_sam: bool,
    #[serde(default = "ModelConfig::default_multimask_pt_num")]
    pub multimask_min_pt_num: usize,
    #[serde(default = "ModelConfig::default_multimask_pt_num")]
    pub multimask_max_pt_num: usize,
    #[serde(default)]
    pub multimask_output_for_tracking: bool,
    #[serde(default)]
    pub use_multimask_token_for_obj_ptr: bool,
    #[serde(default)]
    pub iou_prediction_use_sigmoid: bool,
    #[serde(default = "ModelConfig::default_temporal_stride")]
    pub memory_temporal_stride_for_eval: usize,
    #[serde(default)]
    pub non_overlap_masks_for_mem_enc: bool,
    #[serde(default)]
    pub use_obj_ptrs_in_encoder: bool,
    #[serde(default = "ModelConfig::default_max_obj_ptrs")]
    pub max_obj_ptrs_in_encoder: usize,
    #[serde(default = "default_true")]
    pub add_tpos_enc_to_obj_ptrs: bool,
    #[serde(default)]
    pub proj_tpos_enc_in_obj_ptrs: bool,
    #[serde(default)]
    pub use_signed_tpos_enc_to_obj_ptrs: bool,
    #[serde(default)]
    pub only_obj_ptrs_in_the_past_for_eval: bool,
    #[serde(default)]
    pub pred_obj_scores: bool,
    #[serde(default)]
    pub pred_obj_scores_mlp: bool,
    #[serde(default)]
    pub fixed_no_obj_ptr: bool,
    #[serde(default)]
    pub soft_no_obj_ptr: bool,
    #[serde(default)]
    pub use_mlp_for_obj_ptr_proj: bool,
    #[serde(default)]
    pub no_obj_embed_spatial: bool,
    /// `None` in the yaml means the mask decoder's own defaults, which this struct's defaults are.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sam_mask_decoder_extra_args: MaskDecoderExtraArgs,
    /// Accepted for compatibility; a PyTorch compilation switch with no meaning here.
    #[serde(default)]
    pub compile_image_encoder: bool,
    /// Video predictor: fill background holes up to this area (low-res pixels) in output masks.
    #[serde(default)]
    pub fill_hole_area: usize,
    /// Video predictor: non-overlap constraint between objects' output masks.
    #[serde(default)]
    pub non_overlap_masks: bool,
    #[serde(default)]
    pub clear_non_cond_mem_around_input: bool,
    #[serde(default)]
    pub clear_non_cond_mem_for_multi_obj: bool,
    #[serde(default)]
    pub add_all_frames_to_correct_as_cond: bool,
}

impl ModelConfig {
    fn default_num_maskmem() -> usize {
        7
    }
    fn default_image_size() -> usize {
        512
    }
    fn default_backbone_stride() -> usize {
        16
    }
    fn default_sigmoid_scale() -> f64 {
        1.0
    }
    fn default_max_cond_frames() -> i64 {
        -1
    }
    fn default_multimask_pt_num() -> usize {
        1
    }
    fn default_temporal_stride() -> usize {
        1
    }
    fn default_max_obj_ptrs() -> usize {
        16
    }

    /// Checks the reference constructors' assertions and what this port supports.
    fn validate(&self) -> Result<(), String> {
        if let Some(target) = &self.target
            && !MODEL_TARGETS.contains(&target.as_str())
        {
            return Err(format!(
                "model: unsupported _target_ `{target}` (expected one of {})",
                MODEL_TARGETS.join(", ")
            ));
        }
        self.image_encoder.validate()?;
        self.memory_attention.validate()?;
        self.memory_encoder.validate()?;
        if self.backbone_stride == 0 || !self.image_size.is_multiple_of(self.backbone_stride) {
            return Err(format!(
                "model: image_size {} is not a multiple of backbone_stride {}",
                self.image_size, self.backbone_stride
            ));
        }
        if self.num_maskmem == 0 {
            return Err("model: num_maskmem must be at least 1".into());
        }
        if self.proj_tpos_enc_in_obj_ptrs && !self.add_tpos_enc_to_obj_ptrs {
            return Err("model: proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs".into());
        }
        if self.fixed_no_obj_ptr && !(self.pred_obj_scores && self.use_obj_ptrs_in_encoder) {
            return Err(
                "model: fixed_no_obj_ptr needs pred_obj_scores and use_obj_ptrs_in_encoder".into(),
            );
        }
        if self.memory_temporal_stride_for_eval == 0 {
            return Err("model: memory_temporal_stride_for_eval must be at least 1".into());
        }
        Ok(())
    }

    /// Hidden dimension of the SAM heads and memory attention (`image_encoder.neck.d_model`).
    pub fn hidden_dim(&self) -> usize {
        self.image_encoder.neck.d_model
    }

    /// Channels of a stored memory: the memory encoder's `out_dim` (`mem_dim` in SAM2Base).
    pub fn mem_dim(&self) -> usize {
        self.memory_encoder.out_dim
    }

    /// Side of the stride-16 feature grid (`sam_image_embedding_size`).
    pub fn image_embedding_size(&self) -> usize {
        self.image_size / self.backbone_stride
    }
}

/// Deserialises `null` as the type's default (hydra passes `None` for `key: null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Extra MaskDecoder arguments (`sam_mask_decoder_extra_args`): the dynamic fallback from the
/// single-mask token to the best multimask token when the single mask is unstable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskDecoderExtraArgs {
    #[serde(default)]
    pub dynamic_multimask_via_stability: bool,
    #[serde(default = "MaskDecoderExtraArgs::default_delta")]
    pub dynamic_multimask_stability_delta: f64,
    #[serde(default = "MaskDecoderExtraArgs::default_thresh")]
    pub dynamic_multimask_stability_thresh: f64,
}

impl MaskDecoderExtraArgs {
    fn default_delta() -> f64 {
        0.05
    }
    fn default_thresh() -> f64 {
        0.98
    }
}

impl Default for MaskDecoderExtraArgs {
    fn default() -> Self {
        Self {
            dynamic_multimask_via_stability: false,
            dynamic_multimask_stability_delta: Self::default_delta(),
            dynamic_multimask_stability_thresh: Self::default_thresh(),
        }
    }
}

/// The hydra overrides a predictor builder applies on top of the file (`++model.x=y`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictorOverrides {
    pub sam_mask_decoder_extra_args: Option<MaskDecoderExtraArgs>,
    pub binarize_mask_from_pts_for_mem_enc: Option<bool>,
    pub fill_hole_area: Option<usize>,
}

impl PredictorOverrides {
    /// What MedSAM2's `build_sam2_video_predictor_npz` (apply_postprocessing=True) sets, and
    /// `build_sam2_video_predictor` with apply_postprocessing=True: the same five overrides.
    pub fn medsam2_npz_builder() -> Self {
        Self {
            sam_mask_decoder_extra_args: Some(MaskDecoderExtraArgs {
                dynamic_multimask_via_stability: true,
                dynamic_multimask_stability_delta: 0.05,
                dynamic_multimask_stability_thresh: 0.98,
            }),
            binarize_mask_from_pts_for_mem_enc: Some(true),
            fill_hole_area: Some(8),
        }
    }

    fn apply_to(&self, model: &mut ModelConfig) {
        if let Some(args) = &self.sam_mask_decoder_extra_args {
            model.sam_mask_decoder_extra_args = args.clone();
        }
        if let Some(binarize) = self.binarize_mask_from_pts_for_mem_enc {
            model.binarize_mask_from_pts_for_mem_enc = binarize;
        }
        if let Some(area) = self.fill_hole_area {
            model.fill_hole_area = area;
        }
    }
}

/// `ImageEncoder`: Hiera trunk + FPN neck; `scalp` drops that many lowest-resolution levels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEncoderConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub trunk: HieraConfig,
    pub neck: FpnNeckConfig,
    #[serde(default)]
    pub scalp: usize,
}

impl ImageEncoderConfig {
    fn validate(&self) -> Result<(), String> {
        check_target(
            "image_encoder",
            &self.target,
            "sam2.modeling.backbones.image_encoder.ImageEncoder",
        )?;
        self.trunk.validate()?;
        self.neck.validate()?;
        let trunk_channels = self.trunk.channel_list();
        if trunk_channels != self.neck.backbone_channel_list {
            return Err(format!(
                "image_encoder: trunk channels {trunk_channels:?} do not match the neck's \
                 backbone_channel_list {:?}",
                self.neck.backbone_channel_list
            ));
        }
        if self.scalp >= self.neck.backbone_channel_list.len() {
            return Err(format!(
                "image_encoder: scalp {} leaves no feature level out of {}",
                self.scalp,
                self.neck.backbone_channel_list.len()
            ));
        }
        Ok(())
    }
}

/// The most blocks a Hiera trunk may have (the largest published one has 48).
const MAX_TRUNK_BLOCKS: usize = 1024;
/// The widest channel or head count any component may have (published models stay under 2048).
const MAX_WIDTH: usize = 1 << 16;

/// `Hiera` trunk (hieradet.py) hyper-parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HieraConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    #[serde(default = "HieraConfig::default_embed_dim")]
    pub embed_dim: usize,
    #[serde(default = "HieraConfig::default_num_heads")]
    pub num_heads: usize,
    /// Training-only (stochastic depth); ignored.
    #[serde(default)]
    pub drop_path_rate: f64,
    #[serde(default = "HieraConfig::default_q_pool")]
    pub q_pool: usize,
    #[serde(default = "HieraConfig::default_q_stride")]
    pub q_stride: [usize; 2],
    #[serde(default = "HieraConfig::default_stages")]
    pub stages: Vec<usize>,
    #[serde(default = "HieraConfig::default_mul")]
    pub dim_mul: f64,
    #[serde(default = "HieraConfig::default_mul")]
    pub head_mul: f64,
    #[serde(default = "HieraConfig::default_bkg_size")]
    pub window_pos_embed_bkg_spatial_size: [usize; 2],
    #[serde(default = "HieraConfig::default_window_spec")]
    pub window_spec: Vec<usize>,
    #[serde(default = "HieraConfig::default_global_blocks")]
    pub global_att_blocks: Vec<usize>,
    /// Path of separate trunk weights; must be absent (weights come from the checkpoint).
    #[serde(default)]
    pub weights_path: Option<String>,
    #[serde(default = "default_true")]
    pub return_interm_layers: bool,
}

/// Shape of one Hiera block, derived from the trunk configuration exactly as the reference
/// constructor loops over blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HieraBlockSpec {
    pub dim: usize,
    pub dim_out: usize,
    pub num_heads: usize,
    /// 0 = global attention.
    pub window_size: usize,
    /// Q-pooling (and stride of the shortcut pooling) at the first block of a stage.
    pub q_stride: Option<[usize; 2]>,
}

impl HieraConfig {
    fn default_embed_dim() -> usize {
        96
    }
    fn default_num_heads() -> usize {
        1
    }
    fn default_q_pool() -> usize {
        3
    }
    fn default_q_stride() -> [usize; 2] {
        [2, 2]
    }
    fn default_stages() -> Vec<usize> {
        vec![2, 3, 16, 3]
    }
    fn default_mul() -> f64 {
        2.0
    }
    fn default_bkg_size() -> [usize; 2] {
        [14, 14]
    }
    fn default_window_spec() -> Vec<usize> {
        vec![8, 4, 14, 7]
    }
    fn default_global_blocks() -> Vec<usize> {
        vec![12, 16, 20]
    }

    fn validate(&self) -> Result<(), String> {
        check_target(
            "image_encoder.trunk",
            &self.target,
            "sam2.modeling.backbones.hieradet.Hiera",
        )?;
        if self.stages.is_empty() || self.stages.contains(&0) {
            return Err(format!(
                "image_encoder.trunk: invalid stages {:?}",
                self.stages
            ));
        }
        if self.stages.len() != self.window_spec.len() {
            return Err(format!(
                "image_encoder.trunk: {} stages but {} window sizes",
                self.stages.len(),
                self.window_spec.len()
            ));
        }
        if self.q_pool > self.stages.len() - 1 {
            return Err(format!(
                "image_encoder.trunk: q_pool {} exceeds the {} stage transitions",
                self.q_pool,
                self.stages.len() - 1
            ));
        }
        if self.q_stride.contains(&0) || self.embed_dim == 0 || self.num_heads == 0 {
            return Err("image_encoder.trunk: zero-sized dimension".into());
        }
        // The published trunks have 12 to 48 blocks and widths up to 1152; far larger values
        // are a damaged file, refused before the per-block table is built.
        let depth = self
            .stages
            .iter()
            .try_fold(0usize, |total, &n| total.checked_add(n));
        if depth.is_none_or(|d| d > MAX_TRUNK_BLOCKS) {
            return Err(format!(
                "image_encoder.trunk: stages {:?} add up to more than {MAX_TRUNK_BLOCKS} blocks",
                self.stages
            ));
        }
        if self.embed_dim > MAX_WIDTH || self.num_heads > MAX_WIDTH {
            return Err(format!(
                "image_encoder.trunk: embed_dim {} or num_heads {} exceeds {MAX_WIDTH}",
                self.embed_dim, self.num_heads
            ));
        }
        if !(self.dim_mul.is_finite()
            && self.head_mul.is_finite()
            && self.dim_mul > 0.0
            && self.head_mul > 0.0)
        {
            return Err(format!(
                "image_encoder.trunk: dim_mul {} and head_mul {} must be positive",
                self.dim_mul, self.head_mul
            ));
        }
        if self.weights_path.is_some() {
            return Err(
                "image_encoder.trunk: weights_path is not supported; weights come from the checkpoint"
                    .into(),
            );
        }
        for spec in self.block_specs() {
            if spec.num_heads == 0 || spec.dim_out == 0 || spec.dim_out > MAX_WIDTH {
                return Err(format!(
                    "image_encoder.trunk: a block of width {} with {} heads",
                    spec.dim_out, spec.num_heads
                ));
            }
            if spec.dim_out % spec.num_heads != 0 {
                return Err(format!(
                    "image_encoder.trunk: {} heads do not divide dimension {}",
                    spec.num_heads, spec.dim_out
                ));
            }
            if let Some([sy, sx]) = spec.q_stride
                && spec.window_size > 0
                && !(spec.window_size.is_multiple_of(sy) && spec.window_size.is_multiple_of(sx))
            {
                return Err(format!(
                    "image_encoder.trunk: window {} is not divisible by the q stride",
                    spec.window_size
                ));
            }
        }
        Ok(())
    }

    /// Index of the last block of each stage (`stage_ends`).
    pub fn stage_ends(&self) -> Vec<usize> {
        self.stages
            .iter()
            .scan(0, |total, &n| {
                *total += n;
                Some(*total - 1)
            })
            .collect()
    }

    /// Per-block dimensions, heads, window sizes and q-pooling, in block order.
    pub fn block_specs(&self) -> Vec<HieraBlockSpec> {
        let stage_ends = self.stage_ends();
        let q_pool_blocks: Vec<usize> = stage_ends[..stage_ends.len() - 1]
            .iter()
            .map(|e| e + 1)
            .take(self.q_pool)
            .collect();
        let depth: usize = self.stages.iter().sum();
        let mut embed_dim = self.embed_dim;
        let mut num_heads = self.num_heads;
        let mut cur_stage = 1;
        let mut specs = Vec::with_capacity(depth);
        for i in 0..depth {
            let mut dim_out = embed_dim;
            // The window size lags one block: a stage's first block still uses the previous
            // stage's window.
            let mut window_size = self.window_spec[cur_stage - 1];
            if self.global_att_blocks.contains(&i) {
                window_size = 0;
            }
            if i > 0 && stage_ends.contains(&(i - 1)) {
                dim_out = (embed_dim as f64 * self.dim_mul) as usize;
                num_heads = (num_heads as f64 * self.head_mul) as usize;
                cur_stage += 1;
            }
            specs.push(HieraBlockSpec {
                dim: embed_dim,
                dim_out,
                num_heads,
                window_size,
                q_stride: q_pool_blocks.contains(&i).then_some(self.q_stride),
            });
            embed_dim = dim_out;
        }
        specs
    }

    /// Output channels of the returned stages, lowest resolution first (`channel_list`).
    pub fn channel_list(&self) -> Vec<usize> {
        let specs = self.block_specs();
        if self.return_interm_layers {
            self.stage_ends()
                .iter()
                .rev()
                .map(|&e| specs[e].dim_out)
                .collect()
        } else {
            specs.last().map(|s| vec![s.dim_out]).unwrap_or_default()
        }
    }
}

/// Upsampling mode of the FPN top-down path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FpnInterpolation {
    Nearest,
    Bilinear,
}

/// How top-down and lateral features combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FpnFuse {
    Sum,
    Avg,
}

/// `FpnNeck` hyper-parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpnNeckConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub position_encoding: PositionEmbeddingSineConfig,
    pub d_model: usize,
    /// Trunk output channels, lowest resolution first.
    pub backbone_channel_list: Vec<usize>,
    #[serde(default = "FpnNeckConfig::default_kernel_size")]
    pub kernel_size: usize,
    #[serde(default = "FpnNeckConfig::default_kernel_size")]
    pub stride: usize,
    #[serde(default)]
    pub padding: usize,
    #[serde(default = "FpnNeckConfig::default_interp")]
    pub fpn_interp_model: FpnInterpolation,
    #[serde(default = "FpnNeckConfig::default_fuse")]
    pub fuse_type: FpnFuse,
    /// Levels (0 = highest resolution) that receive top-down features; `None` = all.
    #[serde(default)]
    pub fpn_top_down_levels: Option<Vec<usize>>,
}

impl FpnNeckConfig {
    fn default_kernel_size() -> usize {
        1
    }
    fn default_interp() -> FpnInterpolation {
        FpnInterpolation::Bilinear
    }
    fn default_fuse() -> FpnFuse {
        FpnFuse::Sum
    }

    fn validate(&self) -> Result<(), String> {
        check_target(
            "image_encoder.neck",
            &self.target,
            "sam2.modeling.backbones.image_encoder.FpnNeck",
        )?;
        self.position_encoding
            .validate("image_encoder.neck.position_encoding")?;
        if (self.kernel_size, self.stride, self.padding) != (1, 1, 0) {
            return Err(format!(
                "image_encoder.neck: only 1x1 lateral convolutions are supported (got kernel {}, \
                 stride {}, padding {})",
                self.kernel_size, self.stride, self.padding
            ));
        }
        if self.backbone_channel_list.is_empty() || self.d_model == 0 {
            return Err("image_encoder.neck: empty backbone_channel_list or d_model".into());
        }
        Ok(())
    }

    /// Whether output level `level` (0 = highest resolution) receives top-down features.
    pub fn is_top_down_level(&self, level: usize) -> bool {
        match &self.fpn_top_down_levels {
            Some(levels) => levels.contains(&level),
            None => true,
        }
    }
}

/// `PositionEmbeddingSine` hyper-parameters (`num_pos_feats` is the total channel count).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionEmbeddingSineConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub num_pos_feats: usize,
    #[serde(default = "PositionEmbeddingSineConfig::default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// `None` = 2π.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Cache warm-up switches of the reference (CUDA compilation only); ignored.
    #[serde(default)]
    pub warmup_cache: Option<bool>,
    #[serde(default)]
    pub image_size: Option<usize>,
    #[serde(default)]
    pub strides: Option<Vec<usize>>,
}

impl PositionEmbeddingSineConfig {
    fn default_temperature() -> f64 {
        10000.0
    }

    fn validate(&self, section: &str) -> Result<(), String> {
        check_target(
            section,
            &self.target,
            "sam2.modeling.position_encoding.PositionEmbeddingSine",
        )?;
        if self.num_pos_feats == 0 || !self.num_pos_feats.is_multiple_of(2) {
            return Err(format!(
                "{section}: num_pos_feats must be even and positive, got {}",
                self.num_pos_feats
            ));
        }
        if self.scale.is_some() && !self.normalize {
            return Err(format!("{section}: scale needs normalize: true"));
        }
        Ok(())
    }
}

/// `MemoryAttention` hyper-parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryAttentionConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub d_model: usize,
    pub pos_enc_at_input: bool,
    pub layer: MemoryAttentionLayerConfig,
    pub num_layers: usize,
    #[serde(default = "default_true")]
    pub batch_first: bool,
}

impl MemoryAttentionConfig {
    fn validate(&self) -> Result<(), String> {
        check_target(
            "memory_attention",
            &self.target,
            "sam2.modeling.memory_attention.MemoryAttention",
        )?;
        self.layer.validate()
    }
}

/// `MemoryAttentionLayer` hyper-parameters (all required by the reference constructor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryAttentionLayerConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub activation: Activation,
    pub cross_attention: RoPEAttentionConfig,
    pub d_model: usize,
    pub dim_feedforward: usize,
    /// Training-only; ignored.
    pub dropout: f64,
    pub pos_enc_at_attn: bool,
    pub pos_enc_at_cross_attn_keys: bool,
    pub pos_enc_at_cross_attn_queries: bool,
    pub self_attention: RoPEAttentionConfig,
}

impl MemoryAttentionLayerConfig {
    fn validate(&self) -> Result<(), String> {
        check_target(
            "memory_attention.layer",
            &self.target,
            "sam2.modeling.memory_attention.MemoryAttentionLayer",
        )?;
        self.self_attention
            .validate("memory_attention.layer.self_attention")?;
        self.cross_attention
            .validate("memory_attention.layer.cross_attention")
    }
}

/// `RoPEAttention` hyper-parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoPEAttentionConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub embedding_dim: usize,
    pub num_heads: usize,
    #[serde(default = "RoPEAttentionConfig::default_downsample_rate")]
    pub downsample_rate: usize,
    /// Training-only; ignored.
    #[serde(default)]
    pub dropout: f64,
    /// Input channels of keys and values; `None` = `embedding_dim`.
    #[serde(default)]
    pub kv_in_dim: Option<usize>,
    #[serde(default = "RoPEAttentionConfig::default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_k_repeat: bool,
    /// RoPE grid `[end_x, end_y]` the frequencies are first computed for.
    #[serde(default = "RoPEAttentionConfig::default_feat_sizes")]
    pub feat_sizes: [usize; 2],
}

impl RoPEAttentionConfig {
    fn default_downsample_rate() -> usize {
        1
    }
    fn default_theta() -> f64 {
        10000.0
    }
    fn default_feat_sizes() -> [usize; 2] {
        [64, 64]
    }

    fn validate(&self, section: &str) -> Result<(), String> {
        check_target(
            section,
            &self.target,
            "sam2.modeling.sam.transformer.RoPEAttention",
        )?;
        if self.downsample_rate == 0 || self.num_heads == 0 {
            return Err(format!(
                "{section}: downsample_rate and num_heads must be positive"
            ));
        }
        let internal = self.internal_dim();
        if internal == 0 || !internal.is_multiple_of(self.num_heads) {
            return Err(format!(
                "{section}: {} heads do not divide the internal dimension {internal}",
                self.num_heads
            ));
        }
        if !(internal / self.num_heads).is_multiple_of(4) {
            return Err(format!(
                "{section}: RoPE needs a head dimension divisible by 4, got {}",
                internal / self.num_heads
            ));
        }
        Ok(())
    }

    /// `embedding_dim / downsample_rate`: width of the projected queries, keys and values.
    pub fn internal_dim(&self) -> usize {
        self.embedding_dim / self.downsample_rate
    }

    /// Input width of keys and values.
    pub fn kv_dim(&self) -> usize {
        self.kv_in_dim.unwrap_or(self.embedding_dim)
    }
}

/// `MemoryEncoder` hyper-parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryEncoderConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub out_dim: usize,
    pub mask_downsampler: MaskDownSamplerConfig,
    pub fuser: FuserConfig,
    pub position_encoding: PositionEmbeddingSineConfig,
    #[serde(default = "MemoryEncoderConfig::default_in_dim")]
    pub in_dim: usize,
}

impl MemoryEncoderConfig {
    fn default_in_dim() -> usize {
        256
    }

    fn validate(&self) -> Result<(), String> {
        check_target(
            "memory_encoder",
            &self.target,
            "sam2.modeling.memory_encoder.MemoryEncoder",
        )?;
        self.position_encoding
            .validate("memory_encoder.position_encoding")?;
        self.mask_downsampler.validate()?;
        self.fuser.validate()
    }
}

/// `MaskDownSampler` hyper-parameters (activation is GELU, fixed by the reference).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskDownSamplerConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    #[serde(default = "MaskDownSamplerConfig::default_embed_dim")]
    pub embed_dim: usize,
    #[serde(default = "MaskDownSamplerConfig::default_four")]
    pub kernel_size: usize,
    #[serde(default = "MaskDownSamplerConfig::default_four")]
    pub stride: usize,
    #[serde(default)]
    pub padding: usize,
    #[serde(default = "MaskDownSamplerConfig::default_total_stride")]
    pub total_stride: usize,
}

impl MaskDownSamplerConfig {
    fn default_embed_dim() -> usize {
        256
    }
    fn default_four() -> usize {
        4
    }
    fn default_total_stride() -> usize {
        16
    }

    fn validate(&self) -> Result<(), String> {
        check_target(
            "memory_encoder.mask_downsampler",
            &self.target,
            "sam2.modeling.memory_encoder.MaskDownSampler",
        )?;
        if self.stride < 2 || self.num_layers().is_none() {
            return Err(format!(
                "memory_encoder.mask_downsampler: total_stride {} is not a power of stride {}",
                self.total_stride, self.stride
            ));
        }
        Ok(())
    }

    /// Number of strided conv layers: n with `stride^n == total_stride`.
    pub fn num_layers(&self) -> Option<usize> {
        if self.stride < 2 {
            return None;
        }
        let mut n = 0;
        let mut reach = 1usize;
        while reach < self.total_stride {
            reach = reach.checked_mul(self.stride)?;
            n += 1;
        }
        (reach == self.total_stride).then_some(n)
    }
}

/// `Fuser` hyper-parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FuserConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub layer: CxBlockConfig,
    pub num_layers: usize,
    #[serde(default)]
    pub dim: Option<usize>,
    #[serde(default)]
    pub input_projection: bool,
}

impl FuserConfig {
    fn validate(&self) -> Result<(), String> {
        check_target(
            "memory_encoder.fuser",
            &self.target,
            "sam2.modeling.memory_encoder.Fuser",
        )?;
        if self.input_projection && self.dim.is_none() {
            return Err("memory_encoder.fuser: input_projection needs dim".into());
        }
        self.layer.validate()
    }
}

/// `CXBlock` (ConvNeXt block) hyper-parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CxBlockConfig {
    #[serde(rename = "_target_")]
    pub target: String,
    pub dim: usize,
    #[serde(default = "CxBlockConfig::default_kernel_size")]
    pub kernel_size: usize,
    #[serde(default = "CxBlockConfig::default_padding")]
    pub padding: usize,
    /// Training-only; ignored.
    #[serde(default)]
    pub drop_path: f64,
    /// > 0: the block has a learned layer-scale `gamma`.
    #[serde(default = "CxBlockConfig::default_layer_scale")]
    pub layer_scale_init_value: f64,
    #[serde(default = "default_true")]
    pub use_dwconv: bool,
}

impl CxBlockConfig {
    fn default_kernel_size() -> usize {
        7
    }
    fn default_padding() -> usize {
        3
    }
    fn default_layer_scale() -> f64 {
        1e-6
    }

    fn validate(&self) -> Result<(), String> {
        check_target(
            "memory_encoder.fuser.layer",
            &self.target,
            "sam2.modeling.memory_encoder.CXBlock",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sam2-mini/config.yaml"
    );

    #[test]
    fn t512_default_matches_medsam2() {
        let cfg = Sam2Config::default_t512();
        let m = &cfg.model;
        assert_eq!(m.image_size, 512);
        let trunk = &m.image_encoder.trunk;
        assert_eq!((trunk.embed_dim, trunk.num_heads), (96, 1));
        assert_eq!(trunk.stages, vec![1, 2, 7, 2]);
        assert_eq!(trunk.global_att_blocks, vec![5, 7, 9]);
        assert_eq!(trunk.window_spec, vec![8, 4, 14, 7]);
        assert_eq!(trunk.window_pos_embed_bkg_spatial_size, [7, 7]);
        assert_eq!(trunk.channel_list(), vec![768, 384, 192, 96]);
        assert_eq!(m.image_encoder.neck.d_model, 256);
        assert_eq!(
            m.image_encoder.neck.fpn_interp_model,
            FpnInterpolation::Nearest
        );
        assert!(!m.image_encoder.neck.is_top_down_level(1));
        assert!(m.image_encoder.neck.is_top_down_level(2));
        assert_eq!(m.image_encoder.scalp, 1);
        let layer = &m.memory_attention.layer;
        assert_eq!(m.memory_attention.num_layers, 4);
        assert_eq!(layer.activation, Activation::Relu);
        assert_eq!(layer.dim_feedforward, 2048);
        assert_eq!(layer.self_attention.feat_sizes, [32, 32]);
        assert!(!layer.self_attention.rope_k_repeat);
        assert!(layer.cross_attention.rope_k_repeat);
        assert_eq!(layer.cross_attention.kv_dim(), 64);
        assert_eq!(m.memory_encoder.out_dim, 64);
        assert_eq!(m.memory_encoder.in_dim, 256);
        assert_eq!(m.memory_encoder.mask_downsampler.embed_dim, 256);
        assert_eq!(m.memory_encoder.mask_downsampler.num_layers(), Some(4));
        assert_eq!(m.memory_encoder.fuser.layer.layer_scale_init_value, 1e-6);
        assert_eq!(
            (m.hidden_dim(), m.mem_dim(), m.image_embedding_size()),
            (256, 64, 32)
        );
        assert_eq!(
            (m.sigmoid_scale_for_mem_enc, m.sigmoid_bias_for_mem_enc),
            (20.0, -10.0)
        );
        assert_eq!((m.multimask_min_pt_num, m.multimask_max_pt_num), (0, 1));
        assert!(m.use_obj_ptrs_in_encoder && m.proj_tpos_enc_in_obj_ptrs);
        assert!(m.use_signed_tpos_enc_to_obj_ptrs && m.no_obj_embed_spatial);
        assert_eq!(m.max_obj_ptrs_in_encoder, 16);
        assert_eq!(m.max_cond_frames_in_attn, -1);
        // build_sam2_video_predictor_npz overrides.
        assert!(
            m.sam_mask_decoder_extra_args
                .dynamic_multimask_via_stability
        );
        assert_eq!(
            m.sam_mask_decoder_extra_args
                .dynamic_multimask_stability_delta,
            0.05
        );
        assert_eq!(
            m.sam_mask_decoder_extra_args
                .dynamic_multimask_stability_thresh,
            0.98
        );
        assert!(m.binarize_mask_from_pts_for_mem_enc);
        assert_eq!(m.fill_hole_area, 8);
        assert!(!m.non_overlap_masks && !m.add_all_frames_to_correct_as_cond);
    }

    #[test]
    fn t512_hiera_blocks_follow_the_reference_schedule() {
        let specs = Sam2Config::default_t512()
            .model
            .image_encoder
            .trunk
            .block_specs();
        let summary: Vec<(usize, usize, usize, usize, bool)> = specs
            .iter()
            .map(|s| {
                (
                    s.dim,
                    s.dim_out,
                    s.num_heads,
                    s.window_size,
                    s.q_stride.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (96, 96, 1, 8, false),
                (96, 192, 2, 8, true),
                (192, 192, 2, 4, false),
                (192, 384, 4, 4, true),
                (384, 384, 4, 14, false),
                (384, 384, 4, 0, false),
                (384, 384, 4, 14, false),
                (384, 384, 4, 0, false),
                (384, 384, 4, 14, false),
                (384, 384, 4, 0, false),
                (384, 768, 8, 14, true),
                (768, 768, 8, 7, false),
            ]
        );
    }

    #[test]
    fn mini_fixture_config_parses() {
        let cfg = Sam2Config::from_file(MINI).unwrap();
        let m = &cfg.model;
        assert_eq!(m.target, None);
        assert_eq!(m.image_size, 128);
        assert_eq!(m.image_encoder.trunk.stages, vec![1, 1, 2, 1]);
        assert_eq!(m.image_encoder.trunk.channel_list(), vec![128, 64, 32, 16]);
        assert_eq!(m.memory_attention.layer.cross_attention.kv_dim(), 16);
        assert_eq!(m.memory_encoder.in_dim, 32);
        assert_eq!(m.memory_encoder.mask_downsampler.embed_dim, 32);
        assert_eq!(m.fill_hole_area, 8);
        assert!(
            m.sam_mask_decoder_extra_args
                .dynamic_multimask_via_stability
        );
        let windows: Vec<usize> = m
            .image_encoder
            .trunk
            .block_specs()
            .iter()
            .map(|s| s.window_size)
            .collect();
        assert_eq!(windows, vec![8, 8, 4, 0, 14]);
    }

    #[test]
    fn the_video_builder_ignores_predictor_overrides_unless_post_processing() {
        let text = T512_YAML.to_string() + "\npredictor_overrides:\n  fill_hole_area: 3\n";
        let plain = PredictorBuilder::Video { apply_postprocessing: false, non_overlap_masks: true };
        let m = Sam2Config::from_yaml_str_for(&text, plain).unwrap().model;
        assert_eq!(m.fill_hole_area, 0);
        assert!(!m.binarize_mask_from_pts_for_mem_enc && !m.sam_mask_decoder_extra_args.dynamic_multimask_via_stability);
        assert!(m.non_overlap_masks);
        let post = PredictorBuilder::Video { apply_postprocessing: true, non_overlap_masks: false };
        let m = Sam2Config::from_yaml_str_for(&text, post).unwrap().model;
        assert_eq!(m.fill_hole_area, 8);
        assert!(m.binarize_mask_from_pts_for_mem_enc && m.sam_mask_decoder_extra_args.dynamic_multimask_via_stability);
        assert!(!m.non_overlap_masks);
    }

    #[test]
    fn explicit_predictor_overrides_replace_the_builder_defaults() {
        let text = T512_YAML.to_string() + "\npredictor_overrides:\n  fill_hole_area: 0\n";
        let m = Sam2Config::from_yaml_str(&text).unwrap().model;
        assert_eq!(m.fill_hole_area, 0);
        // Not overridden: the yaml value (class default false).
        assert!(!m.binarize_mask_from_pts_for_mem_enc);
        assert!(
            !m.sam_mask_decoder_extra_args
                .dynamic_multimask_via_stability
        );
    }

    fn error_of(text: &str) -> String {
        Sam2Config::from_yaml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_targets_and_missing_values_are_reported() {
        let bad_trunk = T512_YAML.replace(
            "sam2.modeling.backbones.hieradet.Hiera",
            "sam2.modeling.backbones.vitdet.ViT",
        );
        assert!(error_of(&bad_trunk).contains("vitdet.ViT"));
        let missing = T512_YAML.replace("      d_model: 256\n      backbone", "      backbone");
        let err = error_of(&missing);
        assert!(err.contains("d_model"), "{err}");
        let unknown_key =
            T512_YAML.replace("  num_maskmem: 7", "  num_maskmem: 7\n  num_maskmen: 7");
        assert!(error_of(&unknown_key).contains("num_maskmen"));
        assert!(error_of("trainer:\n  x: 1\n").contains("model"));
        let mismatched = T512_YAML.replace("[768, 384, 192, 96]", "[768, 384, 192, 64]");
        assert!(error_of(&mismatched).contains("backbone_channel_list"));
        let bad_model = T512_YAML.replace("sam2.modeling.sam2_base.SAM2Base", "my.Model");
        assert!(error_of(&bad_model).contains("my.Model"));
        let err = Sam2Config::from_file("/nonexistent/sam2.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/sam2.yaml"), "{err}");
    }
}
