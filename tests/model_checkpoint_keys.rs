//! The strict loader against the key listing of the real MedSAM2 checkpoint
//! (`tests/fixtures/medsam2-t512-keys.tsv`: name, shape and dtype of every tensor of
//! MedSAM2_latest.pt). A store serving zeros for the listed keys stands in for the weights.

use candle_core::{DType, Device, Shape, Tensor};
use medsam_viewer::model::checkpoint::{Checkpoint, CheckpointError, TensorStore};
use medsam_viewer::model::config::Sam2Config;
use medsam_viewer::model::image_encoder::ImageEncoder;
use std::collections::BTreeMap;
use std::sync::Arc;

const KEYS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/medsam2-t512-keys.tsv"
);

/// The listed keys with their shapes, each served as zeros.
struct KeyListing {
    shapes: BTreeMap<String, Vec<usize>>,
}

impl KeyListing {
    fn read(prefix: &str) -> Self {
        let text = std::fs::read_to_string(KEYS).unwrap();
        let shapes = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), 3, "bad listing line {line:?}");
                let shape = fields[1]
                    .split(',')
                    .map(|d| d.parse::<usize>().unwrap())
                    .collect();
                (fields[0].to_string(), shape)
            })
            .filter(|(name, _)| name.starts_with(prefix))
            .collect();
        Self { shapes }
    }
}

impl TensorStore for KeyListing {
    fn origin(&self) -> String {
        KEYS.to_string()
    }

    fn names(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }

    fn stored_shape(&self, name: &str, _wanted: Option<&Shape>) -> Option<Shape> {
        self.shapes.get(name).map(|dims| Shape::from(dims.clone()))
    }

    fn load(
        &self,
        _name: &str,
        shape: &Shape,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::zeros(shape.clone(), dtype, device)
    }
}

#[test]
fn t512_image_encoder_requests_exactly_the_checkpoint_image_encoder_keys() {
    let listing = KeyListing::read("image_encoder.");
    assert_eq!(listing.shapes.len(), 162);
    let ckpt = Checkpoint::from_store(Arc::new(listing));
    let cfg = Sam2Config::default_t512();
    ImageEncoder::new(
        ckpt.var_builder(&Device::Cpu).pp("image_encoder"),
        &cfg.model.image_encoder,
    )
    .unwrap();
    ckpt.finish().unwrap();
}

#[test]
fn a_mismatched_architecture_is_reported_in_full() {
    let ckpt = Checkpoint::from_store(Arc::new(KeyListing::read("image_encoder.")));
    // The SAM2.1 small trunk has 11 blocks in stage 3 instead of 7.
    let mut cfg = Sam2Config::default_t512();
    cfg.model.image_encoder.trunk.stages = vec![1, 2, 11, 2];
    cfg.model.image_encoder.trunk.global_att_blocks = vec![7, 10, 13];
    ImageEncoder::new(
        ckpt.var_builder(&Device::Cpu).pp("image_encoder"),
        &cfg.model.image_encoder,
    )
    .unwrap();
    let err = ckpt.finish().unwrap_err();
    let CheckpointError::Mismatch { report, .. } = &err else {
        panic!("expected a mismatch, got {err}");
    };
    // Blocks 12..15 do not exist in the checkpoint; block 11 is a stage-3 block in the small
    // trunk (384 wide) but a stage-4 block in the tiny checkpoint (768 wide).
    assert!(
        report
            .missing
            .iter()
            .any(|k| k == "image_encoder.trunk.blocks.15.mlp.layers.1.bias")
    );
    assert!(
        report
            .misshaped
            .iter()
            .any(|m| m.name == "image_encoder.trunk.blocks.11.norm1.weight")
    );
    // Tiny's block 10 starts stage 4 and has a residual projection the small trunk lacks.
    assert_eq!(
        report.unexpected,
        vec![
            "image_encoder.trunk.blocks.10.proj.bias".to_string(),
            "image_encoder.trunk.blocks.10.proj.weight".to_string()
        ]
    );
    assert!(err.to_string().contains("blocks.13.attn.qkv.weight"));
}
