//! The SAM2 / MedSAM2 network in Candle, one file per module of the reference implementation
//! (facebookresearch/sam2, package `sam2/modeling`; MedSAM2 uses the same math with a 512 px
//! Hiera-tiny configuration).
//!
//! * `config`: the model configuration read from the official SAM2 / MedSAM2 yaml files.
//! * `checkpoint`: strict loading of `.pt` / `.safetensors` weights, and seeded random weights.
//! * `sam2_utils`: shared layers (token-wise linear, layer norms, MLP) and the 1-D sine encoding.
//! * `position_encoding`: sine and random-Fourier position encodings and the 2-D axial RoPE.
//! * `hiera`: the Hiera trunk; `image_encoder`: trunk + FPN neck.
//! * `prompt_encoder`, `transformer` (attention, RoPE attention, two-way transformer),
//!   `mask_decoder`: the SAM heads.
//! * `memory_encoder`, `memory_attention`: writing and reading the memory bank;
//!   `memory_key_cache`: memories prepared for memory attention, kept across steps.
//! * `sam2`: `SAM2Base`, the per-frame steps a video predictor drives.
//! * `cpu_kernels` (private): hand-written CPU kernels behind the shared layers.
//!
//! Every module is device-generic (the `Device` comes in through the `VarBuilder`) and computes
//! in f32, like the reference run without autocast.

pub mod checkpoint;
pub mod config;
mod cpu_kernels;
pub mod hiera;
pub mod image_encoder;
pub mod mask_decoder;
pub mod memory_attention;
pub mod memory_encoder;
pub mod memory_key_cache;
pub mod position_encoding;
pub mod prompt_encoder;
pub mod sam2;
pub mod sam2_utils;
pub mod transformer;

/// What the modules' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use candle_core::Tensor;

    /// Largest |a - b| over two tensors of the same shape.
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }
}
