//! What MedSAM2's 3D CT script does to a volume before the network sees it, bit for bit:
//!
//! 1. Window to 8 bits: clip to [lo, hi], stretch the clipped volume's own min..max onto
//!    0..255 and truncate (`np.uint8`). Without a window, 8-bit input is used as stored and
//!    anything else is stretched over its own range.
//! 2. Squash each slice (along any axis) to S x S with Pillow's bicubic resize (`resize`).
//! 3. On demand, one slice's model input: float64 `grey / 255`, minus the float32 ImageNet
//!    mean, divided by the float32 std (both widened to float64), cast to float32, per channel:
//!    a [3, S, S] tensor.
//!
//! The frames of a video clip (`ModelSlices::from_clip`) go through what SAM2's frame loader
//! (`load_video_frames`) does instead: each RGB frame squashed to S x S by the same Pillow
//! bicubic resize, channel by channel (Pillow resamples the bands of an RGB image alike), then
//! `rgb / 255` in float64 stored as float32, minus the float32 mean and divided by the float32
//! std in float32 arithmetic ([`Normalisation`]).
//!
//! Only the resized 8-bit slices are kept (S·S bytes per slice, 79 MB for 300 slices at 512;
//! three times that for colour frames); a slice's float input (3 MB at 512) is produced when
//! the model encodes it.

use super::resize::BicubicResampler;
use crate::video::Clip;
use crate::volume::{SliceAxis, Volume, Voxel, VoxelType, Window, extract_slice, min_max};
use crate::with_voxels;
use rayon::prelude::*;

/// ImageNet channel means the SAM2 image encoder was trained with (R, G, B).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (R, G, B).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Why a volume cannot be prepared.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    #[error("timepoint {timepoint} does not exist: the volume has {timepoints}")]
    NoSuchTimepoint { timepoint: usize, timepoints: usize },
}

/// How stored voxel values become the 8-bit grey levels the model sees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GreyLevels {
    /// 8-bit data without a window: values are used as stored.
    AsStored,
    /// Clip to the window and stretch it onto 0..=255, truncating. The window is already
    /// narrowed to the data's range (`Window::clipped_to`), as MedSAM2 stretches the clipped
    /// volume's own extremes.
    Stretch(Window),
}

impl GreyLevels {
    /// The mapping MedSAM2 applies to `data` under `window` (`None`: the data's own range, or
    /// the stored values for 8-bit data). NaNs are ignored for the range and map to 0.
    pub fn for_data<T: Voxel>(data: &[T], window: Option<Window>) -> Self {
        let window = match window {
            None if T::TYPE == VoxelType::U8 => return GreyLevels::AsStored,
            None => None,
            // numpy clips float32 data at the float32 roundings of the bounds.
            Some(w) if T::TYPE == VoxelType::F32 => Some(Window::new(w.lo as f32 as f64, w.hi as f32 as f64)),
            Some(w) => Some(w),
        };
        let Some((min, max)) = min_max(data) else {
            return GreyLevels::Stretch(window.unwrap_or(Window::new(0.0, 0.0)));
        };
        GreyLevels::Stretch(match window {
            Some(w) => w.clipped_to(min, max),
            None => Window::new(min, max),
        })
    }

    /// The grey level of one value. numpy computes in float64 for integer and float64 data
    /// and in float32 for float32 data; both are reproduced.
    #[inline]
    pub fn grey<T: Voxel>(&self, v: T) -> u8 {
        match self {
            GreyLevels::AsStored => v.to_f64() as u8,
            GreyLevels::Stretch(w) if T::TYPE == VoxelType::F32 => {
                let (lo, hi) = (w.lo as f32, w.hi as f32);
                if hi <= lo {
                    return w.to_u8(v.to_f64());
                }
                ((v.to_f32().clamp(lo, hi) - lo) / (hi - lo) * 255.0) as u8
            }
            GreyLevels::Stretch(w) => w.to_u8(v.to_f64()),
        }
    }
}

/// What to prepare: which frame, along which axis, under which window, at which model size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SliceRequest {
    pub axis: SliceAxis,
    /// Intensity window (e.g. a CT preset); `None` = see `GreyLevels::for_data`.
    pub window: Option<Window>,
    /// Frame of a 4D volume (0 for 3D).
    pub timepoint: usize,
    /// Model input size S (512 for MedSAM2 t512).
    pub image_size: usize,
}

/// How 8-bit levels become the model's float input: the arithmetic of the reference that
/// prepares that kind of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalisation {
    /// MedSAM2's volume scripts: `(float64(g) / 255 - mean) / std` in float64, then float32.
    Float64,
    /// SAM2's video frame loader: `float32(float64(g) / 255)`, then `- mean` and `/ std` in
    /// float32.
    Float32Steps,
}

impl Normalisation {
    /// The model input value of each level 0..=255 for channel `c`.
    fn table(self, c: usize) -> [f32; 256] {
        let (mean, std) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
        std::array::from_fn(|g| match self {
            Normalisation::Float64 => ((g as f64 / 255.0 - mean as f64) / std as f64) as f32,
            Normalisation::Float32Steps => ((g as f64 / 255.0) as f32 - mean) / std,
        })
    }
}

/// The slices of one volume along one axis, or the frames of a clip, as the model sees them
/// before normalisation: 8-bit levels squashed to S x S, slice after slice, each one plane of
/// grey (replicated to the three channels) or three planes R, G, B, rows of S.
#[derive(Clone, Debug)]
pub struct ModelSlices {
    axis: SliceAxis,
    image_size: usize,
    slice_size: (usize, usize),
    /// Planes per slice: 1 (grey) or 3 (RGB).
    channels: usize,
    normalisation: Normalisation,
    levels: Vec<u8>,
}

impl ModelSlices {
    /// Windows and resizes every slice of `volume` along `request.axis`, in parallel.
    pub fn prepare(volume: &Volume, request: &SliceRequest) -> Result<Self, PreprocessError> {
        if request.timepoint >= volume.timepoints {
            return Err(PreprocessError::NoSuchTimepoint {
                timepoint: request.timepoint,
                timepoints: volume.timepoints,
            });
        }
        let n = volume.geometry.voxel_count();
        let range = request.timepoint * n..(request.timepoint + 1) * n;
        Ok(with_voxels!(&volume.data, v => {
            Self::from_frame(&v[range], volume.geometry.dims, request)
        }))
    }

    fn from_frame<T: Voxel>(frame: &[T], dims: [usize; 3], request: &SliceRequest) -> Self {
        let axis = request.axis;
        let (u, v) = axis.in_plane();
        let slice_size = (dims[u], dims[v]);
        let count = dims[axis.normal()];
        let s = request.image_size;
        let levels = GreyLevels::for_data(frame, request.window);
        let resampler = BicubicResampler::new(slice_size, (s, s));
        let mut grey = vec![0u8; count * s * s];
        if s > 0 {
            grey.par_chunks_mut(s * s).enumerate().for_each_init(
                || (Vec::new(), Vec::new(), Vec::new()),
                |(values, levels_8bit, scratch), (index, out)| {
                    extract_slice(frame, dims, axis, index, values);
                    levels_8bit.clear();
                    levels_8bit.extend(values.iter().map(|&x| levels.grey(x)));
                    resampler.apply(levels_8bit, out, scratch);
                },
            );
        }
        ModelSlices { axis, image_size: s, slice_size, channels: 1, normalisation: Normalisation::Float64, levels: grey }
    }

    /// The frames of `clip` as SAM2's video frame loader prepares them (see the module
    /// documentation), in parallel. Frames count as slices along the axial axis.
    pub fn from_clip(clip: &Clip, image_size: usize) -> Self {
        let s = image_size;
        let (w, h) = (clip.width(), clip.height());
        let resampler = BicubicResampler::new((w, h), (s, s));
        let mut levels = vec![0u8; clip.len() * 3 * s * s];
        if s > 0 {
            levels.par_chunks_mut(3 * s * s).enumerate().for_each_init(
                || (Vec::new(), Vec::new()),
                |(plane, scratch), (index, out)| {
                    let rgb = clip.frame(index).unwrap_or_default();
                    for (c, out_plane) in out.chunks_mut(s * s).enumerate() {
                        plane.clear();
                        plane.extend(rgb.iter().skip(c).step_by(3));
                        resampler.apply(plane, out_plane, scratch);
                    }
                },
            );
        }
        ModelSlices {
            axis: SliceAxis::Axial,
            image_size: s,
            slice_size: (w, h),
            channels: 3,
            normalisation: Normalisation::Float32Steps,
            levels,
        }
    }

    pub fn axis(&self) -> SliceAxis {
        self.axis
    }

    /// Model input size S.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Width and height of a slice before resizing (SAM2's video width and height).
    pub fn slice_size(&self) -> (usize, usize) {
        self.slice_size
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        match self.image_size {
            0 => 0,
            s => self.levels.len() / (self.channels * s * s),
        }
    }

    /// Planes per slice: 1 for grey slices, 3 for RGB frames.
    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slice `index` as resized 8-bit levels: `channels` planes of S x S, row-major.
    pub fn levels(&self, index: usize) -> Option<&[u8]> {
        let size = self.channels * self.image_size * self.image_size;
        self.levels.get(index * size..(index + 1) * size).filter(|_| size > 0)
    }

    /// The normalised model input of slice `index`: [3, S, S] float32, channel-major.
    pub fn model_input(&self, index: usize) -> Option<Vec<f32>> {
        let levels = self.levels(index)?;
        let plane = self.image_size * self.image_size;
        let mut out = vec![0f32; 3 * plane];
        for (c, channel) in out.chunks_mut(plane).enumerate() {
            let table = self.normalisation.table(c);
            let source = &levels[(c % self.channels) * plane..][..plane];
            for (o, &g) in channel.iter_mut().zip(source) {
                *o = table[g as usize];
            }
        }
        Some(out)
    }
}

/// Writes the [3, N] model input of N grey levels into `out` (3·N values; shorter `out`
/// receives what fits). Each channel c is float32(((float64 g) / 255 − mean_c) / std_c) with
/// mean and std the float32 ImageNet constants widened to float64, as the reference does.
pub fn normalise(grey: &[u8], out: &mut [f32]) {
    let tables: [[f32; 256]; 3] = std::array::from_fn(|c| Normalisation::Float64.table(c));
    for (table, channel) in tables.iter().zip(out.chunks_mut(grey.len().max(1))) {
        for (o, &g) in channel.iter_mut().zip(grey) {
            *o = table[g as usize];
        }
    }
}

/// A point (x, y) in slice pixels scaled to model input pixels as SAM2's
/// `add_new_points_or_box` does in float32: x / W · S, y / H · S.
pub fn point_to_model(point: [f32; 2], slice_size: (usize, usize), image_size: usize) -> [f32; 2] {
    let s = image_size as f32;
    [point[0] / slice_size.0 as f32 * s, point[1] / slice_size.1 as f32 * s]
}

/// A box (x0, y0, x1, y1) in slice pixels as its two corners in model input pixels.
pub fn box_to_model(bbox: [f32; 4], slice_size: (usize, usize), image_size: usize) -> [[f32; 2]; 2] {
    [
        point_to_model([bbox[0], bbox[1]], slice_size, image_size),
        point_to_model([bbox[2], bbox[3]], slice_size, image_size),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::reference::Fixture;
    use crate::volume::{Geometry, IntoVoxelBuffer, VolumeMeta, VoxelBuffer};

    fn volume(dims: [usize; 3], data: VoxelBuffer) -> Volume {
        let timepoints = data.len() / dims.iter().product::<usize>();
        Volume::new(Geometry::new(dims, [1.0; 3], [0.0; 3]), timepoints, data, VolumeMeta::default()).unwrap()
    }

    fn request(axis: SliceAxis, window: Option<Window>, image_size: usize) -> SliceRequest {
        SliceRequest { axis, window, timepoint: 0, image_size }
    }

    #[test]
    fn fixture_volume_resizes_bit_exactly_and_normalises_to_the_reference() {
        let f = Fixture::open("00_input.safetensors");
        let (shape, volume_u8) = f.u8("volume_u8");
        let (d, h, w) = (shape[0], shape[1], shape[2]);
        let (_, resized) = f.u8("resized_u8");
        let (_, model_input) = f.f32("model_input");
        let s = (resized.len() / d).isqrt();
        let vol = volume([w, h, d], volume_u8.into_buffer());
        let slices = ModelSlices::prepare(&vol, &request(SliceAxis::Axial, None, s)).unwrap();
        assert_eq!((slices.len(), slices.slice_size()), (d, (w, h)));
        for z in 0..d {
            assert_eq!(slices.levels(z).unwrap(), &resized[z * s * s..(z + 1) * s * s], "slice {z}");
            let input = slices.model_input(z).unwrap();
            let expected = &model_input[z * 3 * s * s..(z + 1) * 3 * s * s];
            let worst = input.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-7, "slice {z}: max |diff| {worst}");
        }
    }

    #[test]
    fn fixture_prompts_scale_to_model_coordinates() {
        let f = Fixture::open("00_input.safetensors");
        let (shape, _) = f.u8("volume_u8");
        let size = (shape[2], shape[1]);
        let s = f.u8("resized_u8").0[1];
        let (_, b) = f.f32("box_xyxy");
        let (_, box_model) = f.f32("box_points_model");
        let corners = box_to_model([b[0], b[1], b[2], b[3]], size, s);
        assert_eq!(corners.as_flattened(), box_model.as_slice());
        let (_, clicks) = f.f32("click_points_xy");
        let (_, clicks_model) = f.f32("click_points_model");
        let got: Vec<f32> = clicks.chunks(2).flat_map(|p| point_to_model([p[0], p[1]], size, s)).collect();
        assert_eq!(got, clicks_model);
    }

    #[test]
    fn ct_window_clips_then_stretches_the_clipped_range() {
        // HU -1000..=200 under a soft-tissue window [-160, 240]: the clipped volume spans
        // -160..200, and that range is what becomes 0..255.
        let hu: Vec<i16> = vec![-1000, -160, 20, 200, 100, -50];
        let vol = volume([6, 1, 1], hu.clone().into_buffer());
        let slices = ModelSlices::prepare(&vol, &request(SliceAxis::Axial, Some(Window::new(-160.0, 240.0)), 6)).unwrap();
        let levels = GreyLevels::for_data(&hu, Some(Window::new(-160.0, 240.0)));
        assert_eq!(levels, GreyLevels::Stretch(Window::new(-160.0, 200.0)));
        let expected: Vec<u8> = hu.iter().map(|&v| ((v.max(-160) as f64 + 160.0) / 360.0 * 255.0) as u8).collect();
        assert_eq!(expected, [0, 0, 127, 255, 184, 77]);
        let got: Vec<u8> = hu.iter().map(|&v| levels.grey(v)).collect();
        assert_eq!(got, expected);
        // 6x1 -> 6x6 only resizes vertically: every row of the output is the windowed row.
        assert_eq!(&slices.levels(0).unwrap()[..6], expected.as_slice());
    }

    #[test]
    fn float32_data_is_windowed_in_float32_like_numpy() {
        // numpy: np.uint8((clip(x) - min) / (max - min) * 255.0) on a float32 array stays in
        // float32; for this value (25.098032) float64 arithmetic would give 117 instead of 118.
        let data = [-160.0f32, 240.0, f32::from_bits(1103677637)];
        let levels = GreyLevels::for_data(&data, Some(Window::new(-160.0, 240.0)));
        let x = data[2];
        let in_f32 = ((x + 160.0) / 400.0 * 255.0) as u8;
        let in_f64 = ((x as f64 + 160.0) / 400.0 * 255.0) as u8;
        assert_ne!(in_f32, in_f64, "pick a value where the precisions disagree");
        assert_eq!((levels.grey(x), in_f32), (118, 118));
    }

    #[test]
    fn u8_without_window_is_used_as_stored_and_other_types_stretch_their_range() {
        assert_eq!(GreyLevels::for_data(&[3u8, 9], None), GreyLevels::AsStored);
        assert_eq!(GreyLevels::AsStored.grey(200u8), 200);
        let levels = GreyLevels::for_data(&[100u16, 300, 200], None);
        assert_eq!([100u16, 300, 200].map(|v| levels.grey(v)), [0, 255, 127]);
    }

    #[test]
    fn every_axis_resizes_its_own_slices() {
        // dims (x, y, z) = (4, 3, 2); value = i + 4j + 12k. Same-size S would be a copy, so
        // compare each axis against extract_slice + the resampler directly.
        let data: Vec<u8> = (0..24).map(|v| v * 10).collect();
        let vol = volume([4, 3, 2], data.clone().into_buffer());
        for axis in SliceAxis::ALL {
            let slices = ModelSlices::prepare(&vol, &request(axis, None, 5)).unwrap();
            let (u, v) = axis.in_plane();
            let resampler = BicubicResampler::new(([4, 3, 2][u], [4, 3, 2][v]), (5, 5));
            assert_eq!(slices.len(), [4, 3, 2][axis.normal()]);
            for index in 0..slices.len() {
                let mut slice = Vec::new();
                extract_slice(&data, [4, 3, 2], axis, index, &mut slice);
                let mut expected = vec![0; 25];
                resampler.apply(&slice, &mut expected, &mut Vec::new());
                assert_eq!(slices.levels(index).unwrap(), expected.as_slice(), "{axis:?} {index}");
            }
        }
    }

    #[test]
    fn bad_requests_and_empty_inputs_do_not_panic() {
        let vol = volume([2, 2, 1], VoxelBuffer::F32(vec![0.0; 4]));
        let mut r = request(SliceAxis::Axial, None, 4);
        r.timepoint = 1;
        assert_eq!(
            ModelSlices::prepare(&vol, &r).unwrap_err(),
            PreprocessError::NoSuchTimepoint { timepoint: 1, timepoints: 1 }
        );
        let none = ModelSlices::prepare(&vol, &request(SliceAxis::Axial, None, 0)).unwrap();
        assert!(none.is_empty() && none.levels(0).is_none() && none.model_input(0).is_none());
        let flat = ModelSlices::prepare(&vol, &request(SliceAxis::Axial, None, 4)).unwrap();
        assert!(flat.levels(1).is_none());
        assert_eq!(flat.model_input(0).unwrap().len(), 48);
        assert_eq!(GreyLevels::for_data::<f32>(&[f32::NAN], None).grey(f32::NAN), 0);
    }

    #[test]
    fn normalisation_follows_the_float64_formula_per_channel() {
        let grey = [0u8, 255, 128];
        let mut out = [0f32; 9];
        normalise(&grey, &mut out);
        for c in 0..3 {
            for (i, &g) in grey.iter().enumerate() {
                let want = ((g as f64 / 255.0 - IMAGENET_MEAN[c] as f64) / IMAGENET_STD[c] as f64) as f32;
                assert_eq!(out[c * 3 + i], want);
            }
        }
        assert!(out[0] < -2.0 && out[1] > 2.0);
    }

    #[test]
    fn clip_frames_resize_per_channel_and_normalise_in_float32_steps() {
        // Two 5 x 3 frames whose channels differ; each channel resizes on its own.
        let (w, h, s) = (5usize, 3usize, 4usize);
        let pixels: Vec<u8> = (0..2 * w * h * 3).map(|i| ((i * 37) % 256) as u8).collect();
        let clip = Clip::new(w, h, pixels.clone(), vec!["0".into(), "1".into()], None).unwrap();
        let slices = ModelSlices::from_clip(&clip, s);
        assert_eq!((slices.len(), slices.channels(), slices.slice_size()), (2, 3, (w, h)));
        let resampler = BicubicResampler::new((w, h), (s, s));
        for f in 0..2 {
            let rgb = &pixels[f * w * h * 3..(f + 1) * w * h * 3];
            let input = slices.model_input(f).unwrap();
            for c in 0..3 {
                let plane: Vec<u8> = rgb.iter().skip(c).step_by(3).copied().collect();
                let mut resized = vec![0u8; s * s];
                resampler.apply(&plane, &mut resized, &mut Vec::new());
                assert_eq!(&slices.levels(f).unwrap()[c * s * s..(c + 1) * s * s], resized.as_slice());
                for (i, &g) in resized.iter().enumerate() {
                    let want = ((g as f64 / 255.0) as f32 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                    assert_eq!(input[c * s * s + i], want);
                }
            }
        }
        // The two normalisations are not the same function: the frame loader's must be kept.
        let differ = (0..3).any(|c| Normalisation::Float32Steps.table(c) != Normalisation::Float64.table(c));
        assert!(differ);
    }

    /// Times the preprocessing of a 512 x 512 x 300 CT-like i16 volume (windowing plus Pillow
    /// resize) to 512 (a copy, as in Pillow) and of 300 coronal 512 x 300 slices to 512, plus
    /// the normalisation of one slice. Run with `cargo test --lib -- --ignored --nocapture timing`.
    #[test]
    #[ignore]
    fn timing_preprocess_512() {
        let dims = [512usize, 512, 300];
        let data: Vec<i16> = (0..dims.iter().product::<usize>())
            .map(|i| ((i as u64 * 2654435761 % (1 << 32)) >> 21) as i16 - 1024)
            .collect();
        let vol = volume(dims, data.into_buffer());
        let window = Some(Window::new(-160.0, 240.0));
        for (axis, label) in [(SliceAxis::Axial, "axial 512x512 -> 512"), (SliceAxis::Coronal, "coronal 512x300 -> 512")] {
            let t = std::time::Instant::now();
            let slices = ModelSlices::prepare(&vol, &request(axis, window, 512)).unwrap();
            eprintln!("timing: window+resize {} slices {label}: {:.1} ms", slices.len(), t.elapsed().as_secs_f64() * 1e3);
        }
        let grey: Vec<u8> = (0..300 * 300).map(|i| (i % 251) as u8).collect();
        let t = std::time::Instant::now();
        let mut out = vec![0u8; 512 * 512 * 300];
        let resampler = BicubicResampler::new((300, 300), (512, 512));
        out.par_chunks_mut(512 * 512).for_each_init(Vec::new, |scratch, o| resampler.apply(&grey, o, scratch));
        eprintln!("timing: resize only, 300 slices 300x300 -> 512: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        let slices = ModelSlices::prepare(&vol, &request(SliceAxis::Axial, window, 512)).unwrap();
        let t = std::time::Instant::now();
        let input = slices.model_input(150).unwrap();
        eprintln!("timing: model input of one slice: {:.2} ms ({} values)", t.elapsed().as_secs_f64() * 1e3, input.len());
    }
}
