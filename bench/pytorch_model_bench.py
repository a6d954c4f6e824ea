#!/usr/bin/env python3
"""PyTorch eager timings of the same work `medsam-viewer bench model` measures, on this machine.

Runs the official `sam2` package (pip install torch sam2 hydra-core iopath) with MedSAM2's
t512 network (assets/configs/sam2.1_hiera_t512.yaml), seeded random weights, f32, and the
legacy video predictor MedSAM2 drives. Prints one JSON object with:

- image_encoder_ms_per_slice: `forward_image` on one 512x512 slice (median);
- memory_attention_ms_full_bank: memory attention over 7 memories + 16 object pointers;
- tracked_slice_ms: median time of a forward-pass slice once the memory bank is full;
- pipeline_seconds: MedSAM2's 3D CT pipeline on a synthetic 512x512xN CT (window, scale,
  normalise; init_state; box on the middle slice; propagate forward; reset; box; propagate
  backward; OR of the two passes), preprocessing included;
- peak_rss_bytes.

With --volume FILE.nii.gz (the volume `medsam-viewer bench interactive --write-volume` writes),
only MedSAM2's reference pipeline runs, on that volume with the same box on its middle slice,
so that `bench interactive`'s box -> done time stands beside it: pipeline_seconds, slices.

With --video DIR (the JPEG frames and prompt_mask.png that `medsam-viewer bench video
--write-frames DIR` writes), MedSAM2's video script's tracking runs on them instead: the
predictor built as `build_sam2_video_predictor` builds it for that script (no post-processing,
non_overlap_masks), `init_state` on the folder, the mask on frame 0, forward propagation:
frames_per_second, tracking_seconds, peak memory, side by side with `bench video`.

Usage: python bench/pytorch_model_bench.py [--slices 100] [--repeat 3] [--threads 2]
       python bench/pytorch_model_bench.py --volume interactive.nii.gz [--threads 2]
       python bench/pytorch_model_bench.py --video FRAMES_DIR [--threads 2]
"""

import argparse
import json
import pathlib
import resource
import statistics
import time

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import sam2.sam2_video_predictor_legacy as legacy

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "assets" / "configs" / "sam2.1_hiera_t512.yaml"
# build_sam2_video_predictor's extra overrides, which MedSAM2's builder keeps.
VIDEO_OVERRIDES = {
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 8,
}
MASK_DECODER_OVERRIDES = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def build_predictor(seed, video=False):
    """MedSAM2's volume builder's predictor, or with `video` the video script's."""
    cfg = OmegaConf.load(CONFIG)
    cfg.model._target_ = "sam2.sam2_video_predictor_legacy.SAM2VideoPredictor"
    if video:
        cfg.model.non_overlap_masks = True
    else:
        for key, value in VIDEO_OVERRIDES.items():
            cfg.model[key] = value
        extra = cfg.model.get("sam_mask_decoder_extra_args") or {}
        cfg.model.sam_mask_decoder_extra_args = {**extra, **MASK_DECODER_OVERRIDES}
    torch.manual_seed(seed)
    return instantiate(cfg.model, _recursive_=True).eval()


def synthetic_ct(size, slices):
    """A smooth int16 CT-like volume [slices, size, size] with a bright blob in the middle."""
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, slices), np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij"
    )
    body = np.where(x * x + y * y < 0.8, 40.0, -1000.0)
    blob = np.where(x * x + y * y + z * z < 0.05, 150.0, 0.0)
    return (body + blob + 30.0 * np.sin(7 * x) * np.cos(5 * y)).astype(np.int16)


def preprocess(volume, size, window=(-160.0, 240.0)):
    """MedSAM2's CT preprocessing: window, 0..255, resize to the model size, 3 channels,
    /255, ImageNet normalisation: [T, 3, S, S] f32."""
    lo, hi = window
    v = torch.from_numpy(volume).float().clamp(lo, hi)
    v = (v - lo) / (hi - lo) * 255.0
    v = v.unsqueeze(1)
    if v.shape[-1] != size or v.shape[-2] != size:
        v = torch.nn.functional.interpolate(v, size=(size, size), mode="bilinear", align_corners=False)
    v = v.repeat(1, 3, 1, 1) / 255.0
    return (v - IMAGENET_MEAN) / IMAGENET_STD


def median_ms(repeat, work):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), times


def segment_box(predictor, images, key, box):
    """MedSAM2's bidirectional pipeline; returns (seconds, forward full-bank slice times)."""
    slices = images.shape[0]
    legacy.load_video_frames = lambda **_: (images, images.shape[-2], images.shape[-1])
    start = time.perf_counter()
    state = predictor.init_state(video_path="synthetic")
    mask = np.zeros((slices, images.shape[-2], images.shape[-1]), dtype=bool)
    tracked = []
    for reverse in (False, True):
        if reverse:
            predictor.reset_state(state)
        predictor.add_new_points_or_box(state, frame_idx=key, obj_id=1, box=box)
        last = time.perf_counter()
        for done, (frame, _, logits) in enumerate(
            predictor.propagate_in_video(state, start_frame_idx=key, reverse=reverse)
        ):
            now = time.perf_counter()
            if not reverse and done > predictor.num_maskmem:
                tracked.append((now - last) * 1000.0)
            last = now
            mask[frame] |= (logits[0, 0] > 0.0).numpy()
    return time.perf_counter() - start, tracked


def reference_pipeline(predictor, path, size):
    """MedSAM2's whole-volume pipeline on a NIfTI volume (x, y, z) with the benches' box."""
    import nibabel

    volume = np.asarray(nibabel.load(str(path)).dataobj).transpose(2, 1, 0).astype(np.int16)
    slices = volume.shape[0]
    key = slices // 2
    c = size // 2
    box = np.array([c - 60, c - 60, c + 60, c + 60], dtype=np.float32)
    with torch.inference_mode():
        start = time.perf_counter()
        images = preprocess(volume, size)
        preprocess_seconds = time.perf_counter() - start
        seconds, _ = segment_box(predictor, images, key, box)
    report = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "volume": {"path": str(path), "dims": [volume.shape[2], volume.shape[1], slices], "key_slice": key},
        "slices_tracked": {"forward": slices - key, "backward": key + 1},
        "preprocess_seconds": preprocess_seconds,
        "pipeline_seconds": preprocess_seconds + seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print(json.dumps(report))


def video_tracking(predictor, frames_dir):
    """MedSAM2's video script on a folder of JPEG frames with a mask prompt on frame 0."""
    from PIL import Image

    mask = np.array(Image.open(frames_dir / "prompt_mask.png")) > 0
    with torch.inference_mode():
        start = time.perf_counter()
        state = predictor.init_state(video_path=str(frames_dir), async_loading_frames=False)
        prepare_seconds = time.perf_counter() - start
        start = time.perf_counter()
        predictor.add_new_mask(inference_state=state, frame_idx=0, obj_id=1, mask=mask)
        arrivals, pixels = [], 0
        for _, _, logits in predictor.propagate_in_video(state):
            arrivals.append(time.perf_counter() - start)
            pixels += int((logits > 0.0).sum())
        seconds = time.perf_counter() - start
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    report = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "frames": len(arrivals),
        "prepare_seconds": prepare_seconds,
        "tracking_seconds": seconds,
        "frames_per_second": len(arrivals) / seconds,
        "first_frame_seconds": arrivals[0],
        "median_frame_seconds": statistics.median(gaps) if gaps else None,
        "mask_pixels": pixels,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print(json.dumps(report))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--volume", type=pathlib.Path, help="run only the reference pipeline on this NIfTI")
    parser.add_argument("--video", type=pathlib.Path, help="run only the video script's tracking on these frames")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.video is not None:
        video_tracking(build_predictor(args.seed, video=True), args.video)
        return
    predictor = build_predictor(args.seed)
    size = predictor.image_size
    if args.volume is not None:
        reference_pipeline(predictor, args.volume, size)
        return
    report = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "image_size": size,
    }
    with torch.inference_mode():
        image = torch.sin(torch.arange(3 * size * size, dtype=torch.float32) * 0.0137).view(1, 3, size, size)
        predictor.forward_image(image)
        report["image_encoder_ms_per_slice"], report["image_encoder_ms"] = median_ms(
            args.repeat, lambda: predictor.forward_image(image)
        )

        e = size // 16
        hidden, mem_dim = predictor.hidden_dim, predictor.mem_dim
        pointer_tokens = predictor.max_obj_ptrs_in_encoder * (hidden // mem_dim)
        memory_tokens = predictor.num_maskmem * e * e + pointer_tokens
        pattern = lambda n, c, phase: torch.sin(torch.arange(n * c, dtype=torch.float32) * 0.01 + phase).view(n, 1, c)
        curr, curr_pos = pattern(e * e, hidden, 0.0), pattern(e * e, hidden, 1.0)
        memory, memory_pos = pattern(memory_tokens, mem_dim, 2.0), pattern(memory_tokens, mem_dim, 3.0)
        attend = lambda: predictor.memory_attention(
            curr=[curr], curr_pos=[curr_pos], memory=memory, memory_pos=memory_pos,
            num_obj_ptr_tokens=pointer_tokens,
        )
        report["memory_attention_ms_full_bank"], _ = median_ms(args.repeat, attend)
        report["memory_tokens_full_bank"] = memory_tokens

        volume = synthetic_ct(size, args.slices)
        key = args.slices // 2
        c = size // 2
        box = np.array([c - 60, c - 60, c + 60, c + 60], dtype=np.float32)
        start = time.perf_counter()
        images = preprocess(volume, size)
        preprocess_seconds = time.perf_counter() - start
        seconds, tracked = segment_box(predictor, images, key, box)
    report["volume"] = {"dims": [size, size, args.slices], "key_slice": key}
    report["tracked_slice_ms"] = statistics.median(tracked)
    report["preprocess_seconds"] = preprocess_seconds
    report["pipeline_seconds"] = preprocess_seconds + seconds
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(report))


if __name__ == "__main__":
    main()
