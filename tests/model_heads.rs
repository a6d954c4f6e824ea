//! Parity of the SAM2 heads (prompt encoder, mask decoder, memory encoder, memory attention and
//! the SAM2Base pieces around them) with the PyTorch reference tensors in
//! tests/fixtures/sam2-mini (seeded random weights, config `mini`; README there names every
//! tensor and the call that produced it).

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use medsam_viewer::model::checkpoint::Checkpoint;
use medsam_viewer::model::config::Sam2Config;
use medsam_viewer::model::mask_decoder::{stability_scores, MaskDecoder};
use medsam_viewer::model::memory_attention::MemoryAttention;
use medsam_viewer::model::memory_encoder::MemoryEncoder;
use medsam_viewer::model::memory_key_cache::MemoryKeyCache;
use medsam_viewer::model::prompt_encoder::{PointPrompt, PromptEncoder};
use medsam_viewer::model::sam2::{to_storage_precision, ObjectPointer, Sam2Base, SpatialMemory};
use std::collections::HashMap;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");

/// Tolerance on features and embeddings.
const FEATURE_TOL: f32 = 1e-4;
/// Tolerance on mask logits, IoU predictions and object scores.
const LOGIT_TOL: f32 = 1e-3;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(format!("{FIXTURES}/{name}.safetensors"), &Device::Cpu)
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn config() -> Sam2Config {
    Sam2Config::from_file(format!("{FIXTURES}/config.yaml")).unwrap()
}

fn weights() -> VarBuilder<'static> {
    // SAFETY: the fixture file is not modified while the tests run.
    unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[format!("{FIXTURES}/model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    }
}

fn get<'a>(tensors: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    tensors.get(name).unwrap_or_else(|| panic!("missing reference tensor {name}"))
}

fn max_abs_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shape mismatch");
    (got.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap())
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

/// Asserts `got` is within `tol` of `want` and prints the error (visible with --nocapture).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let err = max_abs_diff(got, want);
    println!("{what}: max abs error {err:.3e}");
    assert!(err <= tol, "{what}: max abs error {err} > {tol}");
}

fn prompt_encoder(cfg: &Sam2Config) -> PromptEncoder {
    let m = &cfg.model;
    let e = m.image_embedding_size();
    PromptEncoder::new(weights().pp("sam_prompt_encoder"), m.hidden_dim(), (e, e), (m.image_size, m.image_size))
        .unwrap()
}

fn mask_decoder(cfg: &Sam2Config) -> MaskDecoder {
    MaskDecoder::new(weights().pp("sam_mask_decoder"), &cfg.model).unwrap()
}

fn i32_values(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn prompt_encoder_box_corners_and_padding_match_reference() {
    let cfg = config();
    let pe = prompt_encoder(&cfg);
    let r = fixture("02_prompt_encoder");
    let points = PointPrompt {
        coords: get(&r, "point_coords").clone(),
        labels: get(&r, "point_labels").clone(),
    };
    let (sparse, dense) = pe.forward(&points, None).unwrap();
    assert_close("02 sparse_embeddings", &sparse, get(&r, "sparse_embeddings"), FEATURE_TOL);
    assert_close("02 dense_embeddings", &dense, get(&r, "dense_embeddings"), FEATURE_TOL);
    assert_close("02 dense_pe", pe.get_dense_pe(), get(&r, "dense_pe"), FEATURE_TOL);
    // The padding row is exactly not_a_point_embed, whatever the coordinates.
    let not_a_point = weights()
        .pp("sam_prompt_encoder.not_a_point_embed")
        .get((1, 32), "weight")
        .unwrap();
    assert_eq!(max_abs_diff(&sparse.i((.., 2, ..)).unwrap(), &not_a_point), 0.0);
}

#[test]
fn prompt_encoder_clicks_with_mask_prompt_match_reference() {
    let cfg = config();
    let pe = prompt_encoder(&cfg);
    let input = fixture("00_input");
    let r = fixture("07_refine");
    // Built from plain values, as the predictor will: clicks in model pixels, labels 1 / 0.
    let xy: Vec<f32> = values(get(&input, "click_points_model"));
    let labels = i32_values(get(&input, "click_labels"));
    let points = PointPrompt::from_points(&[[xy[0], xy[1]], [xy[2], xy[3]]], &labels, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&points.coords, get(&r, "click.point_coords")), 0.0);
    let (sparse, dense) = pe.forward(&points, Some(get(&r, "click.prev_mask_logits"))).unwrap();
    assert_close("07 click.sparse_embeddings", &sparse, get(&r, "click.sparse_embeddings"), FEATURE_TOL);
    assert_close("07 click.dense_embeddings", &dense, get(&r, "click.dense_embeddings"), FEATURE_TOL);
    // A mask prompt of the wrong size is an error, not a panic.
    let wrong = Tensor::zeros((1, 1, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(pe.forward(&points, Some(&wrong)).is_err());
    assert!(PointPrompt::from_points(&[[1.0, 2.0]], &[1, 0], &Device::Cpu).is_err());
}

#[test]
fn high_res_projections_match_forward_image() {
    let cfg = config();
    let decoder = mask_decoder(&cfg);
    let enc = fixture("01_image_encoder");
    let (s0, s1) = decoder
        .project_high_res_features(get(&enc, "neck.fpn0"), get(&enc, "neck.fpn1"))
        .unwrap();
    assert_close("01 backbone_fpn0 (conv_s0)", &s0, get(&enc, "forward_image.backbone_fpn0"), FEATURE_TOL);
    assert_close("01 backbone_fpn1 (conv_s1)", &s1, get(&enc, "forward_image.backbone_fpn1"), FEATURE_TOL);
}

#[test]
fn mask_decoder_on_key_slice_matches_reference() {
    let cfg = config();
    let pe = prompt_encoder(&cfg);
    let decoder = mask_decoder(&cfg);
    let prompts = fixture("02_prompt_encoder");
    let r = fixture("03_mask_decoder");
    let points = PointPrompt {
        coords: get(&prompts, "point_coords").clone(),
        labels: get(&prompts, "point_labels").clone(),
    };
    let (sparse, dense) = pe.forward(&points, None).unwrap();
    let image = get(&r, "pix_feat_with_mem");
    let high_res = (get(&r, "high_res_feat_s0"), get(&r, "high_res_feat_s1"));
    let pred = decoder
        .predict_masks(image, pe.get_dense_pe(), &sparse, &dense, Some(high_res))
        .unwrap();
    assert_close("03 all_mask_logits", &pred.masks, get(&r, "all_mask_logits"), LOGIT_TOL);
    assert_close("03 all_iou_predictions", &pred.iou_pred, get(&r, "all_iou_predictions"), LOGIT_TOL);
    assert_close("03 all_mask_tokens_out", &pred.mask_tokens_out, get(&r, "all_mask_tokens_out"), FEATURE_TOL);
    assert_close("03 object_score_logits", &pred.object_score_logits, get(&r, "object_score_logits"), LOGIT_TOL);

    let stability = stability_scores(&pred.masks.narrow(1, 0, 1).unwrap(), 0.05).unwrap();
    assert_close("03 stability_score_token0", &stability, get(&r, "stability_score_token0"), 1e-6);

    let single = decoder
        .forward(image, pe.get_dense_pe(), &sparse, &dense, false, Some(high_res))
        .unwrap();
    let stable = i32_values(get(&r, "single_mask_token_is_stable"))[0] == 1;
    assert_eq!(single.single_mask_token[0] == 0, stable);
    assert_close("03 decoder_out_masks", &single.masks, get(&r, "decoder_out_masks"), LOGIT_TOL);
    assert_close("03 decoder_out_iou", &single.iou_pred, get(&r, "decoder_out_iou"), LOGIT_TOL);
    assert_close("03 decoder_out_sam_tokens", &single.sam_tokens_out, get(&r, "decoder_out_sam_tokens"), FEATURE_TOL);

    let multi = decoder
        .forward(image, pe.get_dense_pe(), &sparse, &dense, true, Some(high_res))
        .unwrap();
    assert!(multi.single_mask_token.is_empty());
    assert_close("03 decoder_multimask_masks", &multi.masks, get(&r, "decoder_multimask_masks"), LOGIT_TOL);
    assert_close("03 decoder_multimask_ious", &multi.iou_pred, get(&r, "decoder_multimask_ious"), LOGIT_TOL);
    assert_close(
        "03 decoder_multimask_sam_tokens",
        &multi.sam_tokens_out,
        get(&r, "decoder_multimask_sam_tokens"),
        FEATURE_TOL,
    );

    // Missing high-resolution features are reported.
    assert!(decoder
        .predict_masks(image, pe.get_dense_pe(), &sparse, &dense, None)
        .is_err());
}

fn memory_encoder(cfg: &Sam2Config) -> MemoryEncoder {
    MemoryEncoder::new(weights().pp("memory_encoder"), &cfg.model.memory_encoder).unwrap()
}

fn memory_attention(cfg: &Sam2Config) -> MemoryAttention {
    MemoryAttention::new(weights().pp("memory_attention"), &cfg.model.memory_attention).unwrap()
}

/// `[N, B, C]` sequence-first (reference layout) → `[B, N, C]`.
fn batch_first(x: &Tensor) -> Tensor {
    x.transpose(0, 1).unwrap().contiguous().unwrap()
}

#[test]
fn memory_encoder_stages_match_reference() {
    let cfg = config();
    let enc = memory_encoder(&cfg);
    let r = fixture("04_memory_encoder");
    let pix_feat = get(&r, "pix_feat");
    let mask = get(&r, "mask_for_mem");
    let down = enc.downsample_mask(mask).unwrap();
    assert_close("04 mask_downsampler_out", &down, get(&r, "mask_downsampler_out"), FEATURE_TOL);
    let proj = enc.project_pixel_features(pix_feat).unwrap();
    assert_close("04 pix_feat_proj_out", &proj, get(&r, "pix_feat_proj_out"), FEATURE_TOL);
    let fused = enc.fuse(&(proj + down).unwrap()).unwrap();
    assert_close("04 fuser_out", &fused, get(&r, "fuser_out"), FEATURE_TOL);
    let out = enc.project_output(&fused).unwrap();
    assert_close("04 out_proj_out", &out, get(&r, "out_proj_out"), FEATURE_TOL);
    let memory = enc.forward(pix_feat, mask, true).unwrap();
    assert_eq!(max_abs_diff(&memory.features, &out), 0.0);
    assert_close("04 maskmem_pos_enc", &memory.pos_enc, get(&r, "maskmem_pos_enc"), FEATURE_TOL);
}

#[test]
fn memory_attention_layers_match_reference() {
    let cfg = config();
    let attn = memory_attention(&cfg);
    let r = fixture("05_memory_attention");
    let num_ptr = i32_values(get(&r, "num_obj_ptr_tokens"))[0] as usize;
    assert_eq!(num_ptr, 2);
    let (output, layers) = attn
        .forward_with_layer_outputs(
            &batch_first(get(&r, "curr")),
            &batch_first(get(&r, "curr_pos")),
            &batch_first(get(&r, "memory")),
            &batch_first(get(&r, "memory_pos")),
            num_ptr,
        )
        .unwrap();
    assert_close("05 layer0_out", &layers[0], get(&r, "layer0_out"), FEATURE_TOL);
    assert_close("05 layer1_out", &layers[1], get(&r, "layer1_out"), FEATURE_TOL);
    assert_close("05 output", &output, &batch_first(get(&r, "output")), FEATURE_TOL);
    let pix = output.transpose(1, 2).unwrap().reshape((1, 32, 8, 8)).unwrap();
    assert_close("05 pix_feat_with_mem", &pix, get(&r, "pix_feat_with_mem"), FEATURE_TOL);
    // Without excluding the pointer tokens the keys are not whole frames: reported, not rotated.
    let rotated_all = attn.forward(
        &batch_first(get(&r, "curr")),
        &batch_first(get(&r, "curr_pos")),
        &batch_first(get(&r, "memory")),
        &batch_first(get(&r, "memory_pos")),
        0,
    );
    assert!(rotated_all.is_err(), "66 keys are not a whole number of 64-token frames");
}

fn sam2(cfg: &Sam2Config) -> Sam2Base {
    Sam2Base::new(weights(), cfg).unwrap()
}

/// Image features of slice `index` of the fixture volume: `(vision_features, vision_pos,
/// high_res_s0, high_res_s1)`.
fn slice_features(model: &Sam2Base, index: usize) -> (Tensor, Tensor, Tensor, Tensor) {
    let input = fixture("00_input");
    let image = get(&input, "model_input").narrow(0, index, 1).unwrap();
    let out = model.forward_image(&image).unwrap();
    (
        out.backbone_fpn[2].clone(),
        out.vision_pos_enc[2].clone(),
        out.backbone_fpn[0].clone(),
        out.backbone_fpn[1].clone(),
    )
}

/// Asserts two bf16-stored tensors differ by at most one bf16 step of the value (the f32
/// inputs of the rounding agree to ~1e-6, which can straddle a rounding boundary).
fn assert_bf16_close(what: &str, got: &Tensor, want: &Tensor) {
    let got: Vec<f32> = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len());
    let mut differing = 0;
    for (g, w) in got.iter().zip(&want) {
        if g != w {
            differing += 1;
            let step = w.abs().max(f32::MIN_POSITIVE) / 128.0;
            assert!((g - w).abs() <= step, "{what}: {g} vs {w}");
        }
    }
    println!("{what}: {differing} of {} values one bf16 step apart, rest identical", want.len());
}

#[test]
fn sam_heads_on_key_slice_match_reference() {
    let cfg = config();
    let model = sam2(&cfg);
    let enc = fixture("01_image_encoder");
    let prompts = fixture("02_prompt_encoder");
    let r = fixture("03_mask_decoder");
    // Initial conditioning frame: no memory, no_mem_embed added directly.
    let pix = model
        .condition_on_memory(get(&enc, "neck.fpn2"), get(&enc, "neck.pos2"), None)
        .unwrap();
    assert_close("03 pix_feat_with_mem", &pix, get(&r, "pix_feat_with_mem"), FEATURE_TOL);

    let points = PointPrompt {
        coords: get(&prompts, "point_coords").clone(),
        labels: get(&prompts, "point_labels").clone(),
    };
    let multimask = model.use_multimask(true, points.num_points().unwrap());
    assert!(!multimask, "a box is two points: single-mask output");
    let high_res = (get(&r, "high_res_feat_s0"), get(&r, "high_res_feat_s1"));
    let out = model
        .forward_sam_heads(&pix, Some(&points), None, Some(high_res), multimask)
        .unwrap();
    assert_close("03 sam_heads.low_res_multimasks", &out.low_res_multimasks, get(&r, "sam_heads.low_res_multimasks"), LOGIT_TOL);
    assert_close("03 sam_heads.high_res_multimasks", &out.high_res_multimasks, get(&r, "sam_heads.high_res_multimasks"), LOGIT_TOL);
    assert_close("03 sam_heads.ious", &out.ious, get(&r, "sam_heads.ious"), LOGIT_TOL);
    assert_close("03 sam_heads.low_res_masks", &out.low_res_masks, get(&r, "sam_heads.low_res_masks"), LOGIT_TOL);
    assert_close("03 sam_heads.high_res_masks", &out.high_res_masks, get(&r, "sam_heads.high_res_masks"), LOGIT_TOL);
    assert_close("03 sam_heads.obj_ptr", &out.obj_ptr, get(&r, "sam_heads.obj_ptr"), FEATURE_TOL);
    assert_close("03 sam_heads.object_score_logits", &out.object_score_logits, get(&r, "sam_heads.object_score_logits"), LOGIT_TOL);
    let stable = i32_values(get(&r, "single_mask_token_is_stable"))[0] == 1;
    assert_eq!(out.selected_mask_token[0] == 0, stable);
}

#[test]
fn new_memory_of_key_slice_matches_reference() {
    let cfg = config();
    let model = sam2(&cfg);
    let r = fixture("04_memory_encoder");
    let mask_high_res = get(&r, "mask_high_res");
    let mask = model.mask_for_memory(mask_high_res, true).unwrap();
    assert_eq!(max_abs_diff(&mask, get(&r, "mask_for_mem")), 0.0, "binarized mask *20 -10");
    let score = get(&r, "object_score_logits");
    let memory = model
        .encode_new_memory(get(&r, "pix_feat"), mask_high_res, score, true)
        .unwrap();
    assert_close("04 maskmem_features_f32", &memory.features, get(&r, "maskmem_features_f32"), FEATURE_TOL);
    assert_close("04 maskmem_pos_enc (SAM2Base)", &memory.pos_enc, get(&r, "maskmem_pos_enc"), FEATURE_TOL);
    // Storage rounding is exactly round-to-nearest-even bf16 ...
    let stored_of_reference = to_storage_precision(get(&r, "maskmem_features_f32")).unwrap();
    assert_eq!(stored_of_reference.dtype(), DType::BF16);
    assert_eq!(max_abs_diff(&stored_of_reference, get(&r, "maskmem_features_stored")), 0.0);
    // ... and our features round to the same stored values.
    let stored = to_storage_precision(&memory.features).unwrap();
    assert_bf16_close("04 maskmem_features_stored", &stored, get(&r, "maskmem_features_stored"));

    // Object present here; with a negative score no_obj_embed_spatial lands on every position.
    assert!(score.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] > 0.0);
    let absent = model
        .encode_new_memory(get(&r, "pix_feat"), mask_high_res, &score.neg().unwrap(), true)
        .unwrap();
    let embed = weights().get((1, 16), "no_obj_embed_spatial").unwrap();
    let added = (absent.features - &memory.features).unwrap();
    let expected = embed.reshape((1, 16, 1, 1)).unwrap().broadcast_as((1, 16, 8, 8)).unwrap();
    assert!(max_abs_diff(&added, &expected.contiguous().unwrap()) < 1e-6);
    // Tracked frames use sigmoid(logits) instead of the binarized mask.
    let soft = model.mask_for_memory(mask_high_res, false).unwrap();
    let want = candle_nn::ops::sigmoid(mask_high_res).unwrap().affine(20.0, -10.0).unwrap();
    assert!(max_abs_diff(&soft, &want) < 1e-5);
}

#[test]
fn first_tracked_slice_matches_reference() {
    let cfg = config();
    let model = sam2(&cfg);
    let heads = fixture("03_mask_decoder");
    let mem = fixture("04_memory_encoder");
    let r = fixture("05_memory_attention");
    let frame = i32_values(get(&r, "frame_index"))[0] as usize;
    assert_eq!(frame, 5);
    // Memory plan of slice 5 (meta.json): key slice 4 at t_pos 0, its pointer at offset +1.
    let stored = to_storage_precision(get(&mem, "maskmem_features_f32")).unwrap();
    let spatial = [SpatialMemory {
        features: &stored,
        pos_enc: get(&mem, "maskmem_pos_enc"),
        t_pos: 0,
    }];
    let pointers = [ObjectPointer {
        obj_ptr: get(&heads, "sam_heads.obj_ptr"),
        tpos: 1,
    }];
    let memory = model.assemble_memory(&spatial, &pointers, 8).unwrap();
    assert_eq!(memory.num_obj_ptr_tokens, 2);
    assert_close("05 memory", &memory.memory, &batch_first(get(&r, "memory")), FEATURE_TOL);
    assert_close("05 memory_pos", &memory.memory_pos, &batch_first(get(&r, "memory_pos")), FEATURE_TOL);

    let (feat, pos, s0, s1) = slice_features(&model, frame);
    let curr = feat.flatten_from(2).unwrap().transpose(1, 2).unwrap();
    assert_close("05 curr (image encoder, slice 5)", &curr, &batch_first(get(&r, "curr")), FEATURE_TOL);
    let pix = model.condition_on_memory(&feat, &pos, Some(&memory)).unwrap();
    assert_close("05 pix_feat_with_mem (chained)", &pix, get(&r, "pix_feat_with_mem"), FEATURE_TOL);
    let cache = MemoryKeyCache::new();
    let cached = model.condition_on_cached_memory(&feat, &pos, &spatial, &pointers, 8, &cache).unwrap();
    assert_close("05 pix_feat_with_mem (prepared memory keys)", &cached, get(&r, "pix_feat_with_mem"), FEATURE_TOL);

    let multimask = model.use_multimask(false, 0);
    assert!(multimask, "tracked frames without points use multimask output");
    let out = model
        .forward_sam_heads(&pix, None, None, Some((&s0, &s1)), multimask)
        .unwrap();
    let pred = &out.decoder.as_ref().unwrap().prediction;
    assert_close("05 all_mask_logits", &pred.masks, get(&r, "all_mask_logits"), LOGIT_TOL);
    assert_close("05 all_iou_predictions", &pred.iou_pred, get(&r, "all_iou_predictions"), LOGIT_TOL);
    assert_close("05 sam_heads.low_res_multimasks", &out.low_res_multimasks, get(&r, "sam_heads.low_res_multimasks"), LOGIT_TOL);
    assert_close("05 sam_heads.ious", &out.ious, get(&r, "sam_heads.ious"), LOGIT_TOL);
    assert_close("05 sam_heads.low_res_masks", &out.low_res_masks, get(&r, "sam_heads.low_res_masks"), LOGIT_TOL);
    assert_close("05 sam_heads.obj_ptr", &out.obj_ptr, get(&r, "sam_heads.obj_ptr"), FEATURE_TOL);
    assert_close("05 sam_heads.object_score_logits", &out.object_score_logits, get(&r, "sam_heads.object_score_logits"), LOGIT_TOL);
    let ious: Vec<f32> = get(&r, "sam_heads.ious").flatten_all().unwrap().to_vec1().unwrap();
    let best = (0..3).fold(0, |b, i| if ious[i] > ious[b] { i } else { b });
    assert_eq!(out.selected_mask_token, vec![best + 1]);
}

#[test]
fn correction_clicks_on_tracked_slice_match_reference() {
    let cfg = config();
    let model = sam2(&cfg);
    let input = fixture("00_input");
    let heads = fixture("03_mask_decoder");
    let mem = fixture("04_memory_encoder");
    let prop = fixture("06_propagation");
    let r = fixture("07_refine");
    let frame = i32_values(get(&r, "click_slice"))[0] as usize;
    assert_eq!(frame, 6);
    // Memory plan of the click (meta.json h_click): slices 4 (t_pos 0) and 5 (t_pos 6);
    // pointers of 4 (offset 2) and 5 (offset 1). Slice 5's memory comes from pass 1.
    let order = i32_values(get(&prop, "fwd.frame_order"));
    let row5 = order.iter().position(|&f| f == 5).unwrap();
    let key_stored = to_storage_precision(get(&mem, "maskmem_features_f32")).unwrap();
    let mem5 = get(&prop, "fwd.maskmem_features").narrow(0, row5, 1).unwrap();
    let ptr5 = get(&prop, "fwd.obj_ptr").narrow(0, row5, 1).unwrap();
    let pos_enc = get(&mem, "maskmem_pos_enc");
    let spatial = [
        SpatialMemory { features: &key_stored, pos_enc, t_pos: 0 },
        SpatialMemory { features: &mem5, pos_enc, t_pos: 6 },
    ];
    let pointers = [
        ObjectPointer { obj_ptr: get(&heads, "sam_heads.obj_ptr"), tpos: 2 },
        ObjectPointer { obj_ptr: &ptr5, tpos: 1 },
    ];
    let memory = model.assemble_memory(&spatial, &pointers, 8).unwrap();
    assert_eq!(memory.num_obj_ptr_tokens, i32_values(get(&r, "click.num_obj_ptr_tokens"))[0] as usize);
    assert_close("07 click.memory", &memory.memory, &batch_first(get(&r, "click.memory")), FEATURE_TOL);
    assert_close("07 click.memory_pos", &memory.memory_pos, &batch_first(get(&r, "click.memory_pos")), FEATURE_TOL);

    let (feat, pos, s0, s1) = slice_features(&model, frame);
    let pix = model.condition_on_memory(&feat, &pos, Some(&memory)).unwrap();
    assert_close("07 click.pix_feat_with_mem", &pix, get(&r, "click.pix_feat_with_mem"), FEATURE_TOL);
    // Memories prepared by an earlier step, where slice 5's memory sat in another slot, serve
    // this step as well: the slot enters only through the temporal-key table.
    let cache = MemoryKeyCache::new();
    let earlier = [spatial[0], SpatialMemory { t_pos: 1, ..spatial[1] }];
    model.condition_on_cached_memory(&feat, &pos, &earlier, &pointers, 8, &cache).unwrap();
    let cached = model.condition_on_cached_memory(&feat, &pos, &spatial, &pointers, 8, &cache).unwrap();
    assert_close("07 click.pix_feat_with_mem (prepared memory keys)", &cached, get(&r, "click.pix_feat_with_mem"), FEATURE_TOL);

    let points = PointPrompt {
        coords: get(&r, "click.point_coords").clone(),
        labels: get(&input, "click_labels").unsqueeze(0).unwrap(),
    };
    let multimask = model.use_multimask(false, points.num_points().unwrap());
    assert!(!multimask);
    let out = model
        .forward_sam_heads(&pix, Some(&points), Some(get(&r, "click.prev_mask_logits")), Some((&s0, &s1)), multimask)
        .unwrap();
    let pred = &out.decoder.as_ref().unwrap().prediction;
    assert_close("07 click.all_mask_logits", &pred.masks, get(&r, "click.all_mask_logits"), LOGIT_TOL);
    assert_close("07 click.all_iou_predictions", &pred.iou_pred, get(&r, "click.all_iou_predictions"), LOGIT_TOL);
    assert_close("07 click.object_score_logits", &out.object_score_logits, get(&r, "click.object_score_logits"), LOGIT_TOL);
    let stability = stability_scores(&pred.masks.narrow(1, 0, 1).unwrap(), 0.05).unwrap();
    assert_close("07 click.stability_score_token0", &stability, get(&r, "click.stability_score_token0"), 1e-6);
    assert_close("07 click.low_res_masks", &out.low_res_masks, get(&r, "click.low_res_masks"), LOGIT_TOL);
    assert_close("07 click.obj_ptr", &out.obj_ptr, get(&r, "click.obj_ptr"), FEATURE_TOL);
    println!("07 click: stability fallback picked token {:?}", out.selected_mask_token);

    // Memory of the corrected slice: binarized upsampling of the hole-filled stored logits.
    let s = cfg.model.image_size;
    let high_res = get(&r, "click.pred_masks").upsample_bilinear2d(s, s, false).unwrap();
    let new_memory = model
        .encode_new_memory(&feat, &high_res, &out.object_score_logits, true)
        .unwrap();
    let stored = to_storage_precision(&new_memory.features).unwrap();
    assert_bf16_close("07 click.maskmem_features_stored", &stored, get(&r, "click.maskmem_features_stored"));
}

#[test]
fn no_object_slice_in_reverse_pass_matches_reference() {
    let cfg = config();
    let model = sam2(&cfg);
    let heads = fixture("03_mask_decoder");
    let mem = fixture("04_memory_encoder");
    let prop = fixture("06_propagation");
    let order = i32_values(get(&prop, "rev.frame_order"));
    let row = |frame: i64| order.iter().position(|&f| f == frame).unwrap();
    let (row3, row2) = (row(3), row(2));
    let take = |name: &str, r: usize| get(&prop, name).narrow(0, r, 1).unwrap();
    // Memory plan of slice 2 in reverse (meta.json g_rev): slice 4 at t_pos 0, slice 3 at
    // t_pos 6; pointers of 4 (offset (2-4)·(-1) = 2) and 3 (offset 1).
    let key_stored = to_storage_precision(get(&mem, "maskmem_features_f32")).unwrap();
    let mem3 = take("rev.maskmem_features", row3);
    let ptr3 = take("rev.obj_ptr", row3);
    let pos_enc = get(&mem, "maskmem_pos_enc");
    let memory = model
        .assemble_memory(
            &[
                SpatialMemory { features: &key_stored, pos_enc, t_pos: 0 },
                SpatialMemory { features: &mem3, pos_enc, t_pos: 6 },
            ],
            &[
                ObjectPointer { obj_ptr: get(&heads, "sam_heads.obj_ptr"), tpos: 2 },
                ObjectPointer { obj_ptr: &ptr3, tpos: 1 },
            ],
            8,
        )
        .unwrap();
    let (feat, pos, s0, s1) = slice_features(&model, 2);
    let pix = model.condition_on_memory(&feat, &pos, Some(&memory)).unwrap();
    assert_close("06 rev slice 2 pix_feat_with_mem", &pix, &take("rev.pix_feat_with_mem", row2), FEATURE_TOL);

    let out = model
        .forward_sam_heads(&pix, None, None, Some((&s0, &s1)), model.use_multimask(false, 0))
        .unwrap();
    let score = out.object_score_logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    assert!(score < 0.0, "slice 2 is the washed-out no-object slice, score {score}");
    assert_close("06 rev slice 2 object_score_logits", &out.object_score_logits, &take("rev.object_score_logits", row2), LOGIT_TOL);
    assert_close("06 rev slice 2 multimask_ious", &out.ious, &take("rev.multimask_ious", row2), LOGIT_TOL);
    let gated = take("rev.low_res_logits_before_fill", row2);
    assert_eq!(max_abs_diff(&out.low_res_masks, &gated), 0.0, "every logit is NO_OBJ_SCORE");
    let no_obj_ptr = weights().get((1, 32), "no_obj_ptr").unwrap();
    assert_eq!(max_abs_diff(&out.obj_ptr, &no_obj_ptr), 0.0, "fixed no-object pointer");
    assert_close("06 rev slice 2 obj_ptr", &out.obj_ptr, &take("rev.obj_ptr", row2), FEATURE_TOL);
    let token = i32_values(&take("rev.selected_mask_token", row2))[0] as usize;
    assert_eq!(out.selected_mask_token, vec![token]);

    // Tracked slice: sigmoid of the (gated) high-res logits, plus the no-object embedding.
    let new_memory = model
        .encode_new_memory(&feat, &out.high_res_masks, &out.object_score_logits, false)
        .unwrap();
    let stored = to_storage_precision(&new_memory.features).unwrap();
    assert_bf16_close("06 rev slice 2 maskmem_features", &stored, &take("rev.maskmem_features", row2));
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_values(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    let err = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
    println!("{what}: max abs error {err:.3e}");
    assert!(err <= tol, "{what}: {got:?} vs {want:?}");
}

// Reference values below: sam2 1.1.0 / torch 2.15 on the fixture weights, key slice features
// (01 neck.fpn2, forward_image.backbone_fpn0/1), mask = 04 mask_high_res > 0 (2031 pixels).
#[test]
fn mask_prompt_taken_as_output_matches_reference() {
    let cfg = config();
    let model = sam2(&cfg);
    let enc = fixture("01_image_encoder");
    let mem = fixture("04_memory_encoder");
    let pix = get(&enc, "neck.fpn2");
    let high_res = (get(&enc, "forward_image.backbone_fpn0"), get(&enc, "forward_image.backbone_fpn1"));
    let mask = get(&mem, "mask_high_res").gt(0.0).unwrap();
    let out = model.use_mask_as_output(pix, Some(high_res), &mask).unwrap();
    assert_eq!(out.low_res_masks.dims(), &[1, 1, 32, 32]);
    let sum = out.low_res_masks.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!((sum - -7_711.202).abs() < 1e-2, "low-res sum {sum}");
    let row = values(&out.low_res_masks.get(0).unwrap().get(0).unwrap().get(10).unwrap().narrow(0, 5, 7).unwrap());
    assert_values("mask-as-output low_res row", &row, &[-9.980_469, -9.7265625, -9.980_469, -10.0, -10.0, -10.0, -10.0], 1e-5);
    assert_eq!(values(&out.high_res_masks), values(&mask.to_dtype(DType::F32).unwrap().affine(20.0, -10.0).unwrap()));
    assert_eq!(values(&out.ious), vec![1.0]);
    assert_eq!(values(&out.object_score_logits), vec![10.0]);
    let want_ptr = [
        -0.17766178, 0.087604426, 0.35209665, -0.022017851, 0.031673796, -0.15563706, 0.012673441,
        0.02367964, -0.091485545, 0.44238943, 0.1516417, -0.075_299_22, 0.019951541, -0.3166886,
        0.16882095, -0.074_488_85, 0.085_341_57, -0.052909583, 0.032310724, -0.035655316, 0.11237423,
        0.059_097_82, 0.12920949, 0.078438744, -0.21270351, 0.15609896, 0.009_543_687, -0.299_415_1,
        0.063070275, -0.19860041, -0.14560242, 0.38640845,
    ];
    assert_values("mask-as-output obj_ptr", &values(&out.obj_ptr), &want_ptr, FEATURE_TOL);

    // An empty mask means no object: score -10 and the fixed no-object pointer.
    let empty = mask.zeros_like().unwrap();
    let out = model.use_mask_as_output(pix, Some(high_res), &empty).unwrap();
    assert_eq!(values(&out.object_score_logits), vec![-10.0]);
    let no_obj_ptr = weights().get((1, 32), "no_obj_ptr").unwrap();
    assert_eq!(max_abs_diff(&out.obj_ptr, &no_obj_ptr), 0.0);
}

#[test]
fn full_size_mask_prompt_is_downsized_with_antialiasing() {
    let cfg = config();
    let model = sam2(&cfg);
    let enc = fixture("01_image_encoder");
    let mem = fixture("04_memory_encoder");
    let r = fixture("03_mask_decoder");
    let high_res = (get(&enc, "forward_image.backbone_fpn0"), get(&enc, "forward_image.backbone_fpn1"));
    // S x S logits as the mask prompt: resized to 4E x 4E before the prompt encoder.
    let out = model
        .forward_sam_heads(get(&r, "pix_feat_with_mem"), None, Some(get(&mem, "mask_high_res")), Some(high_res), false)
        .unwrap();
    let sum = out.low_res_masks.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!((sum - -921.39636).abs() < 1e-2, "low-res sum {sum}");
    assert_values(
        "S x S mask prompt obj_ptr",
        &values(&out.obj_ptr.narrow(1, 0, 6).unwrap()),
        &[-0.19906163, 0.097843364, 0.347_201_6, 0.0017021447, 0.024071977, -0.16856489],
        FEATURE_TOL,
    );
    assert_values("S x S mask prompt object score", &values(&out.object_score_logits), &[3.8917258], LOGIT_TOL);
}

#[test]
fn whole_model_consumes_every_checkpoint_tensor() {
    let cfg = config();
    let ckpt = Checkpoint::open(format!("{FIXTURES}/model.pt")).unwrap();
    Sam2Base::new(ckpt.var_builder(&Device::Cpu), &cfg).unwrap();
    ckpt.finish().unwrap();
    // A configuration asking for another object-score head is reported by tensor name.
    let mut linear_head = cfg.clone();
    linear_head.model.pred_obj_scores_mlp = false;
    let partial = Checkpoint::open(format!("{FIXTURES}/model.safetensors")).unwrap();
    Sam2Base::new(partial.var_builder(&Device::Cpu), &linear_head).unwrap();
    let err = partial.finish().unwrap_err().to_string();
    assert!(err.contains("sam_mask_decoder.pred_obj_score_head.weight"), "{err}");
}

#[test]
fn object_pointer_offsets_need_two_frames() {
    let cfg = config();
    let model = sam2(&cfg);
    // Offsets are normalised by min(frames, 16) - 1 before the sine encoding.
    let enc = model.obj_ptr_pos_enc(&[0, 7, -3], 8).unwrap();
    assert_eq!(enc.dims(), &[3, 16]);
    let two = model.obj_ptr_pos_enc(&[1], 2).unwrap();
    let seven = model.obj_ptr_pos_enc(&[7], 8).unwrap();
    assert!(max_abs_diff(&two, &seven) < 1e-6, "1/1 and 7/7 are the same normalised offset");
    assert!(model.obj_ptr_pos_enc(&[0], 1).is_err());
}
