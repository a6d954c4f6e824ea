//! A folder of frame images (`.jpg`, `.jpeg`, `.png`, any letter case) as a clip.
//!
//! Order is SAM2's (`load_video_frames_from_jpg_images`): by the integer value of the file
//! name's stem, so `2.jpg` comes before `10.jpg`. A stem that is not a plain decimal number is
//! an error naming the file (SAM2 fails there too, with Python's `int()`), as are two files of
//! the same frame number (`7.jpg` and `007.png`), which SAM2 would order arbitrarily. The frame
//! names are the stems. Other files in the folder are ignored.
//!
//! Every frame becomes RGB as Pillow's `convert("RGB")` makes it: grey replicated, alpha
//! dropped, palette looked up. JPEG is decoded by the `image` crate (zune-jpeg), PNG by the
//! `png` crate behind it. Frames of another size than the first, 16-bit and float images are
//! errors naming the file.

use super::{Clip, ClipOptions, VideoError, check_size};
use image::{DynamicImage, ImageReader};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Frame files of `dir` in SAM2's order, with their names (stems).
pub fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>, VideoError> {
    let entries = std::fs::read_dir(dir).map_err(|e| VideoError::io(dir, e))?;
    let mut frames: Vec<(u64, String, PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| VideoError::io(dir, e))?.path();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if !matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) || path.is_dir() {
            continue;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let index = frame_number(&stem).ok_or_else(|| VideoError::NotANumber(path.clone()))?;
        frames.push((index, stem, path));
    }
    if frames.is_empty() {
        return Err(VideoError::NoFrames(dir.to_path_buf()));
    }
    frames.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
    if let Some(pair) = frames.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(VideoError::DuplicateFrame {
            first: pair[0].2.clone(),
            second: pair[1].2.clone(),
            index: pair[0].0,
        });
    }
    Ok(frames
        .into_iter()
        .map(|(_, name, path)| (name, path))
        .collect())
}

/// The frame number of a file stem: ASCII digits only.
fn frame_number(stem: &str) -> Option<u64> {
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Reads every frame of `dir` (see the module documentation).
pub fn read(dir: &Path, options: &ClipOptions) -> Result<Clip, VideoError> {
    let frames = list(dir)?;
    let first = &frames[0].1;
    let (width, height) = reader(first)?
        .into_dimensions()
        .map_err(|e| VideoError::Decode {
            path: first.clone(),
            message: e.to_string(),
        })?;
    let (width, height) = (width as usize, height as usize);
    let bytes = check_size(dir, frames.len() as u64, width, height, options)?;
    let frame_bytes = width * height * 3;
    let mut pixels = vec![0u8; bytes as usize];
    if frame_bytes > 0 {
        pixels
            .par_chunks_mut(frame_bytes)
            .zip(&frames)
            .try_for_each(|(out, (_, path))| decode_rgb_into(path, (width, height), out))?;
    }
    let names = frames.into_iter().map(|(name, _)| name).collect();
    Ok(Clip::new(width, height, pixels, names, None).expect("the buffer holds every frame"))
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, VideoError> {
    ImageReader::open(path)
        .map_err(|e| VideoError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| VideoError::io(path, e))
}

/// Decodes one image file as Pillow's `convert("RGB")` would give it, into `out`, which must
/// be `size` = (width, height) RGB.
pub fn decode_rgb_into(
    path: &Path,
    size: (usize, usize),
    out: &mut [u8],
) -> Result<(), VideoError> {
    let mut reader = reader(path)?;
    // The decoder may use a little more than the image itself; anything far beyond is hostile.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some((out.len() as u64).saturating_mul(4).max(1 << 20));
    reader.limits(limits);
    let image = reader.decode().map_err(|e| VideoError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let (w, h) = (image.width() as usize, image.height() as usize);
    if (w, h) != size {
        return Err(VideoError::FrameSize {
            path: path.to_path_buf(),
            width: size.0,
            height: size.1,
            found_w: w,
            found_h: h,
        });
    }
    match &image {
        DynamicImage::ImageLuma8(grey) => {
            for (o, &g) in out.chunks_exact_mut(3).zip(grey.as_raw()) {
                o.fill(g);
            }
        }
        DynamicImage::ImageLumaA8(grey) => {
            for (o, ga) in out.chunks_exact_mut(3).zip(grey.as_raw().chunks_exact(2)) {
                o.fill(ga[0]);
            }
        }
        DynamicImage::ImageRgb8(rgb) => out.copy_from_slice(rgb.as_raw()),
        DynamicImage::ImageRgba8(rgba) => {
            for (o, p) in out.chunks_exact_mut(3).zip(rgba.as_raw().chunks_exact(4)) {
                o.copy_from_slice(&p[..3]);
            }
        }
        other => {
            return Err(VideoError::UnsupportedPixels {
                path: path.to_path_buf(),
                what: format!("{:?}", other.color()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"").unwrap();
    }

    #[test]
    fn frames_are_ordered_by_the_number_in_their_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["10.jpg", "2.JPEG", "0001.png", "notes.txt", "mask.json"] {
            touch(dir.path(), name);
        }
        let names: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["0001", "2", "10"]);
    }

    #[test]
    fn names_that_are_not_numbers_or_repeat_a_number_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "1.jpg");
        touch(dir.path(), "frame_2.jpg");
        let err = list(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("frame_2.jpg") && err.contains("frame numbers"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("frame_2.jpg")).unwrap();
        touch(dir.path(), "001.png");
        let err = list(dir.path()).unwrap_err().to_string();
        assert!(err.contains("both frame 1"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(list(empty.path()), Err(VideoError::NoFrames(_))));
    }

    #[test]
    fn grey_rgba_and_mismatched_frames() {
        let dir = tempfile::tempdir().unwrap();
        image::GrayImage::from_raw(2, 1, vec![7, 200])
            .unwrap()
            .save(dir.path().join("0.png"))
            .unwrap();
        image::RgbaImage::from_raw(2, 1, vec![1, 2, 3, 0, 4, 5, 6, 255])
            .unwrap()
            .save(dir.path().join("1.png"))
            .unwrap();
        let clip = read(dir.path(), &ClipOptions::default()).unwrap();
        assert_eq!((clip.width(), clip.height(), clip.len()), (2, 1, 2));
        assert_eq!(clip.frame(0).unwrap(), [7, 7, 7, 200, 200, 200]);
        assert_eq!(clip.frame(1).unwrap(), [1, 2, 3, 4, 5, 6]);
        let err = read(dir.path(), &ClipOptions { max_bytes: 11 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("12 bytes"), "{err}");
        image::GrayImage::from_raw(3, 1, vec![0; 3])
            .unwrap()
            .save(dir.path().join("2.png"))
            .unwrap();
        let err = read(dir.path(), &ClipOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("2.png is 3 x 1"), "{err}");
        std::fs::write(dir.path().join("2.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
        let err = read(dir.path(), &ClipOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("2.png"), "{err}");
    }
}
