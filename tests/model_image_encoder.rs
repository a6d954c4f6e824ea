//! Parity of the image encoder (Hiera trunk + FPN neck) with the PyTorch reference tensors of
//! the `sam2-mini` fixtures, on the key slice of the fixture volume.

use candle_core::{Device, Tensor};
use medsam_viewer::model::checkpoint::Checkpoint;
use medsam_viewer::model::config::Sam2Config;
use medsam_viewer::model::hiera::Hiera;
use medsam_viewer::model::image_encoder::{FpnNeck, ImageEncoder};
use std::collections::HashMap;

const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");
const TOLERANCE: f32 = 1e-4;

fn load(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(format!("{MINI}/{file}"), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn key_slice() -> Tensor {
    load("00_input.safetensors")["model_input"]
        .get(4)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

#[test]
fn image_encoder_matches_reference_after_scalp() {
    let cfg = Sam2Config::from_file(format!("{MINI}/config.yaml")).unwrap();
    let want = load("01_image_encoder.safetensors");
    let dev = Device::Cpu;
    for file in ["model.safetensors", "model.pt"] {
        let ckpt = Checkpoint::open(format!("{MINI}/{file}")).unwrap();
        let encoder = ImageEncoder::new(
            ckpt.var_builder(&dev).pp("image_encoder"),
            &cfg.model.image_encoder,
        )
        .unwrap();
        ckpt.finish_under("image_encoder").unwrap();
        let out = encoder.forward(&key_slice()).unwrap();
        assert_eq!(out.backbone_fpn.len(), 3);
        assert_eq!(out.vision_pos_enc.len(), 3);
        for level in 0..3 {
            let err = max_abs_diff(&out.backbone_fpn[level], &want[&format!("neck.fpn{level}")]);
            println!("{file} neck.fpn{level}: {err:.2e}");
            assert!(err < TOLERANCE, "{file} fpn{level}: {err}");
            let err = max_abs_diff(
                &out.vision_pos_enc[level],
                &want[&format!("neck.pos{level}")],
            );
            println!("{file} neck.pos{level}: {err:.2e}");
            assert!(err < TOLERANCE, "{file} pos{level}: {err}");
        }
        let err = max_abs_diff(
            out.vision_features().unwrap(),
            &want["forward_image.backbone_fpn2"],
        );
        assert!(err < TOLERANCE, "vision_features: {err}");
    }
}

#[test]
fn neck_matches_reference_on_every_level() {
    let cfg = Sam2Config::from_file(format!("{MINI}/config.yaml")).unwrap();
    let want = load("01_image_encoder.safetensors");
    let dev = Device::Cpu;
    let ckpt = Checkpoint::open(format!("{MINI}/model.safetensors")).unwrap();
    let vb = ckpt.var_builder(&dev).pp("image_encoder");
    let trunk = Hiera::new(vb.pp("trunk"), &cfg.model.image_encoder.trunk).unwrap();
    let neck = FpnNeck::new(vb.pp("neck"), &cfg.model.image_encoder.neck).unwrap();
    ckpt.finish_under("image_encoder").unwrap();
    let stages = trunk.forward(&key_slice()).unwrap();
    for (i, stage) in stages.iter().enumerate() {
        let err = max_abs_diff(
            &stage.permute((0, 3, 1, 2)).unwrap(),
            &want[&format!("trunk.stage{i}")],
        );
        println!("trunk.stage{i}: {err:.2e}");
        assert!(err < TOLERANCE, "stage{i}: {err}");
    }
    let (features, positions) = neck.forward(&stages).unwrap();
    assert_eq!(features.len(), 4);
    for level in 0..4 {
        let err = max_abs_diff(&features[level], &want[&format!("neck.fpn{level}")]);
        assert!(err < TOLERANCE, "fpn{level}: {err}");
        let err = max_abs_diff(&positions[level], &want[&format!("neck.pos{level}")]);
        assert!(err < TOLERANCE, "pos{level}: {err}");
    }
    assert!(neck.forward(&stages[..3]).is_err());
}
