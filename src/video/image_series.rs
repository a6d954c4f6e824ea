//! A 2D+t image file as a clip: a NIfTI or MetaImage whose third axis (or, for a 4D NIfTI of
//! one slice, whose time axis) is time — how the CAMUS echocardiography set ships its
//! sequences. Frame k is the image's slice k: pixel (x, y) is voxel (x, y, k), rows top to
//! bottom as stored, no reorientation. 8-bit images keep their grey values; other types are
//! scaled from the clip's own min..max to 0..255 (rounded), the way an 8-bit video of them
//! would be made. Grey becomes RGB by replication, as Pillow's `convert("RGB")` does. The
//! frame rate comes from a 4D NIfTI's time step (pixdim[4] in its `xyzt_units`); a 3D file
//! carries none.

use super::{Clip, ClipOptions, VideoError, check_size};
use crate::io::{self, OpenOptions};
use crate::volume::{Volume, VoxelBuffer};
use std::path::Path;

/// Whether `path` names an image file this module reads as a clip (by extension).
pub fn is_image_series(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    [".nii", ".nii.gz", ".mha", ".mhd"].iter().any(|ext| name.ends_with(ext))
}

/// Reads a 2D+t image as a clip.
pub fn read(path: &Path, options: &ClipOptions) -> Result<Clip, VideoError> {
    let volume = io::open(path, &OpenOptions::default())?;
    let [w, h, d] = volume.geometry.dims;
    let frames = match (d, volume.timepoints) {
        (_, 1) => d,
        (1, t) => t,
        (_, t) => return Err(VideoError::NotAClip { path: path.to_path_buf(), dims: volume.geometry.dims, timepoints: t }),
    };
    check_size(path, frames as u64, w, h, options)?;
    let grey = grey_levels(&volume);
    let mut pixels = Vec::with_capacity(grey.len() * 3);
    for g in grey {
        pixels.extend_from_slice(&[g, g, g]);
    }
    let names = (0..frames).map(|k| format!("{k:05}")).collect();
    let rate = (volume.timepoints > 1).then(|| frame_rate(&volume)).flatten();
    Ok(Clip::new(w, h, pixels, names, rate).expect("sizes follow the volume's"))
}

/// Every voxel as an 8-bit grey level: u8 as stored, other types min..max -> 0..255.
fn grey_levels(volume: &Volume) -> Vec<u8> {
    if let VoxelBuffer::U8(data) = &volume.data {
        return data.clone();
    }
    let n = volume.data.len();
    let (lo, hi) = volume.min_max().unwrap_or((0.0, 0.0));
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    (0..n).map(|i| ((volume.data.get_f64(i) - lo) * scale).round().clamp(0.0, 255.0) as u8).collect()
}

/// Frames per second from a 4D NIfTI's time step and unit (seconds, ms or µs).
fn frame_rate(volume: &Volume) -> Option<f64> {
    let t = volume.meta.nifti_transform.as_ref()?;
    let seconds_per_unit = match t.xyzt_units & 0x38 {
        8 => 1.0,
        16 => 1e-3,
        24 => 1e-6,
        _ => return None,
    };
    let step = t.time_step * seconds_per_unit;
    (step > 0.0 && step.is_finite()).then(|| 1.0 / step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::nifti;
    use crate::volume::{Geometry, VolumeMeta};

    #[test]
    fn slices_become_frames_in_order_and_16_bit_is_scaled() {
        let dir = tempfile::tempdir().unwrap();
        // 3 x 2 pixels, 4 frames; value = 100 * k + 10 * y + x.
        let data: Vec<i16> = (0..24).map(|n| (100 * (n / 6) + 10 * ((n % 6) / 3) + n % 3) as i16).collect();
        let volume = Volume::new(Geometry::new([3, 2, 4], [1.0; 3], [0.0; 3]), 1, VoxelBuffer::I16(data), VolumeMeta::default()).unwrap();
        let path = dir.path().join("seq.nii.gz");
        nifti::write(&path, &volume, nifti::NiftiKind::Image).unwrap();
        let clip = read(&path, &ClipOptions::default()).unwrap();
        assert_eq!((clip.width(), clip.height(), clip.len()), (3, 2, 4));
        assert_eq!(clip.names()[3], "00003");
        assert_eq!(clip.frame_rate(), None);
        // 0..=312 -> 0..=255: frame 3's pixel (x 2, y 1) is the maximum, frame 0's first the minimum.
        let last = clip.frame(3).unwrap();
        assert_eq!(&last[15..18], &[255, 255, 255]);
        assert_eq!(&clip.frame(0).unwrap()[..3], &[0, 0, 0]);
        // Frame 1, pixel (x 1, y 0) = 101 -> round(101 * 255 / 312) = 83.
        assert_eq!(clip.frame(1).unwrap()[3], 83);
    }

    #[test]
    fn a_4d_nifti_of_one_slice_is_a_clip_with_its_frame_rate() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 2 * 5).map(|n| n as u8).collect();
        let volume = Volume::new(Geometry::new([2, 2, 1], [1.0; 3], [0.0; 3]), 5, VoxelBuffer::U8(data), VolumeMeta::default()).unwrap();
        let path = dir.path().join("cine.nii");
        nifti::write(&path, &volume, nifti::NiftiKind::Image).unwrap();
        // Our writer stores a 1 s time step in seconds.
        let clip = read(&path, &ClipOptions::default()).unwrap();
        assert_eq!(clip.len(), 5);
        assert_eq!(clip.frame(4).unwrap()[..3], [16, 16, 16]);
        assert_eq!(clip.frame_rate(), Some(1.0));
        // A 3D + time image is refused, and so is a clip over the size limit.
        let volume = Volume::new(Geometry::new([2, 2, 2], [1.0; 3], [0.0; 3]), 2, VoxelBuffer::U8(vec![0; 16]), VolumeMeta::default()).unwrap();
        let path = dir.path().join("ct4d.nii");
        nifti::write(&path, &volume, nifti::NiftiKind::Image).unwrap();
        let e = read(&path, &ClipOptions::default()).unwrap_err().to_string();
        assert!(e.contains("3D + time"), "{e}");
        let e = read(&dir.path().join("cine.nii"), &ClipOptions { max_bytes: 10 }).unwrap_err().to_string();
        assert!(e.contains("limit of 10"), "{e}");
    }
}
