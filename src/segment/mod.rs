//! The volume predictor's work around the network, done exactly as MedSAM2's 3D CT script and
//! SAM2's video predictor do it.
//!
//! * `preprocess`: window a volume to 8 bits, squash each slice along any axis to S x S with
//!   Pillow's bicubic resize (`resize`), normalise with ImageNet statistics into the model's
//!   [3, S, S] input, and scale prompt coordinates from slice pixels to model pixels.
//! * `postprocess`: bilinear resize of mask logits as `F.interpolate` does, SAM2's filling of
//!   small background holes, and the final 3D mask (forward OR backward pass, largest
//!   26-connected component).
//! * `predictor`: `VolumePredictor`, SAM2's legacy video predictor over the slices of a volume
//!   (prompts, memory bank, forward and backward propagation, cached image features).
//! * `pipeline`: MedSAM2's one-call box-to-3D-mask segmentation on a predictor.
//! * `batch`: manifests, sharding and summaries of `segment-batch`.
//! * `recist`, `recist_pipeline`: MedSAM2's RECIST-to-3D script (lines to box or point prompts,
//!   numpy's seeded choice of line pixels in `numpy_rng`, the mask-prompted two-way run).
//! * `engine`: the network made ready to run (configuration, strict checkpoint loading, device).
//! * `video_pipeline`: MedSAM2's video script on a predictor over a clip's frames (masks, boxes
//!   and clicks for several objects, tracked together or one by one).

pub mod batch;
pub mod engine;
pub mod numpy_rng;
pub mod pipeline;
pub mod postprocess;
pub mod predictor;
pub mod preprocess;
pub mod recist;
pub mod recist_pipeline;
pub mod resize;
pub mod video_pipeline;

/// Reads the PyTorch reference tensors of tests/fixtures/sam2-mini for parity tests.
#[cfg(test)]
pub(crate) mod reference {
    use safetensors::{Dtype, SafeTensors};

    /// One fixture file's bytes.
    pub struct Fixture(Vec<u8>);

    impl Fixture {
        pub fn open(name: &str) -> Self {
            let path = format!("{}/tests/fixtures/sam2-mini/{name}", env!("CARGO_MANIFEST_DIR"));
            Fixture(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        }

        /// A tensor's shape and raw little-endian bytes, checked against the expected type.
        fn raw(&self, name: &str, dtype: Dtype) -> (Vec<usize>, Vec<u8>) {
            let tensors = SafeTensors::deserialize(&self.0).expect("a safetensors file");
            let t = tensors.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.dtype(), dtype, "{name}");
            (t.shape().to_vec(), t.data().to_vec())
        }

        pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
            let (shape, bytes) = self.raw(name, Dtype::F32);
            (shape, bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        }

        pub fn i32(&self, name: &str) -> (Vec<usize>, Vec<i32>) {
            let (shape, bytes) = self.raw(name, Dtype::I32);
            (shape, bytes.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        }

        pub fn u8(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
            self.raw(name, Dtype::U8)
        }
    }
}
