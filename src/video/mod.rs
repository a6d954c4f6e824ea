//! Video clips: a sequence of RGB frames of one size, their names and frame rate, read from a
//! folder of JPEG/PNG frames (`frames_dir`) or from a video file through the `ffmpeg`
//! executable (`ffmpeg`) or from a 2D+t NIfTI/MetaImage (`image_series`); and the DAVIS-style
//! palette PNG annotations that prompt and hold
//! video segmentations (`annotation`).
//!
//! A clip is decoded whole into memory (3 bytes per pixel per frame), so every reader checks
//! the decoded size against a byte limit (`ClipOptions::max_bytes`) before and while it
//! decodes, and refuses a clip over it with an error that says how large it would be.

pub mod annotation;
pub mod ffmpeg;
pub mod frames_dir;
pub mod image_series;

use std::path::{Path, PathBuf};

/// Default limit on a decoded clip: 4 GiB (a 1,000-frame 512 x 512 clip takes 0.79 GB; five
/// minutes of 640 x 480 at 25 frames per second 6.9 GB).
pub const DEFAULT_MAX_CLIP_BYTES: u64 = 4 << 30;

/// Why a clip could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no .jpg, .jpeg or .png frames in this folder")]
    NoFrames(PathBuf),
    #[error(
        "{0}: frame file names must be frame numbers (00000.jpg, 00001.jpg, ...), as SAM2 orders frames by the integer in the name"
    )]
    NotANumber(PathBuf),
    #[error("{first} and {second} are both frame {index}")]
    DuplicateFrame {
        first: PathBuf,
        second: PathBuf,
        index: u64,
    },
    #[error("{path}: cannot decode the image: {message}")]
    Decode { path: PathBuf, message: String },
    #[error(
        "{path}: {what} frames are not supported (8-bit grey, grey+alpha, RGB, RGBA or palette frames are)"
    )]
    UnsupportedPixels { path: PathBuf, what: String },
    #[error(
        "{path} is {found_w} x {found_h} pixels but the clip's first frame is {width} x {height}"
    )]
    FrameSize {
        path: PathBuf,
        width: usize,
        height: usize,
        found_w: usize,
        found_h: usize,
    },
    #[error(
        "{path}: the decoded clip would take {needed} bytes, more than the limit of {limit} bytes (cut the clip, e.g. `ffmpeg -ss START -t SECONDS`, or scale it down)"
    )]
    TooLarge {
        path: PathBuf,
        needed: u64,
        limit: u64,
    },
    #[error(
        "{path}: reading a video file needs the `{program}` executable, which is not on PATH: install FFmpeg (`apt-get install ffmpeg`, `brew install ffmpeg`, or https://ffmpeg.org/download.html), or give a folder of JPEG/PNG frames instead"
    )]
    FfmpegMissing {
        path: PathBuf,
        program: &'static str,
    },
    #[error("{path}: {program} failed: {message}")]
    Ffmpeg {
        path: PathBuf,
        program: &'static str,
        message: String,
    },
    #[error("{0}: not a folder of frames, a .mp4, .avi, .mov, .mkv, .webm or .m4v file, nor a 2D+t .nii, .nii.gz, .mha or .mhd")]
    UnknownKind(PathBuf),
    #[error(transparent)]
    Image(#[from] crate::io::IoError),
    #[error("{path}: a 3D + time image ({dims:?} voxels, {timepoints} timepoints) is not a clip: give a 2D + time image")]
    NotAClip { path: PathBuf, dims: [usize; 3], timepoints: usize },
}

impl VideoError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        VideoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How to read a clip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipOptions {
    /// The largest decoded clip (frames x height x width x 3 bytes) a reader accepts.
    pub max_bytes: u64,
}

impl Default for ClipOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_CLIP_BYTES,
        }
    }
}

/// Frames of a video, all `width` x `height` RGB (3 bytes per pixel, rows top to bottom).
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    width: usize,
    height: usize,
    /// Every frame one after another.
    pixels: Vec<u8>,
    /// One per frame: the file stem of a frame file, or the frame number as 00000, 00001, ...
    names: Vec<String>,
    frame_rate: Option<f64>,
}

impl Clip {
    /// A clip of `names.len()` frames from their concatenated RGB pixels; `None` when the
    /// sizes do not add up.
    pub fn new(
        width: usize,
        height: usize,
        pixels: Vec<u8>,
        names: Vec<String>,
        frame_rate: Option<f64>,
    ) -> Option<Self> {
        let frame = width.checked_mul(height)?.checked_mul(3)?;
        (frame.checked_mul(names.len())? == pixels.len()).then_some(Self {
            width,
            height,
            pixels,
            names,
            frame_rate,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Frame `index` as RGB bytes, rows of `width` pixels.
    pub fn frame(&self, index: usize) -> Option<&[u8]> {
        let size = self.width * self.height * 3;
        self.pixels.get(index * size..(index + 1) * size)
    }

    /// Frame names, in frame order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Frames per second, when the source says.
    pub fn frame_rate(&self) -> Option<f64> {
        self.frame_rate
    }
}

/// Whether `path` names a video file this program hands to ffmpeg (by extension).
pub fn is_video_file(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(
        ext.as_deref(),
        Some("mp4" | "avi" | "mov" | "mkv" | "webm" | "m4v")
    )
}

/// Reads a clip: a folder of frames, a video file through ffmpeg, or a 2D+t image.
pub fn open(path: &Path, options: &ClipOptions) -> Result<Clip, VideoError> {
    if path.is_dir() {
        frames_dir::read(path, options)
    } else if is_video_file(path) {
        ffmpeg::read(path, options)
    } else if image_series::is_image_series(path) && path.exists() {
        image_series::read(path, options)
    } else if !path.exists() {
        Err(VideoError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ))
    } else {
        Err(VideoError::UnknownKind(path.to_path_buf()))
    }
}

/// Bytes of `frames` decoded frames of `width` x `height`, checked against the limit.
fn check_size(
    path: &Path,
    frames: u64,
    width: usize,
    height: usize,
    options: &ClipOptions,
) -> Result<u64, VideoError> {
    let needed = (width as u64)
        .saturating_mul(height as u64)
        .saturating_mul(3)
        .saturating_mul(frames);
    if needed > options.max_bytes {
        return Err(VideoError::TooLarge {
            path: path.to_path_buf(),
            needed,
            limit: options.max_bytes,
        });
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clip_checks_its_sizes() {
        assert!(Clip::new(2, 1, vec![0; 12], vec!["0".into(), "1".into()], None).is_some());
        assert!(Clip::new(2, 1, vec![0; 11], vec!["0".into(), "1".into()], None).is_none());
        assert!(Clip::new(usize::MAX, 2, vec![], vec!["0".into()], None).is_none());
        let clip = Clip::new(
            1,
            1,
            vec![1, 2, 3, 4, 5, 6],
            vec!["a".into(), "b".into()],
            Some(25.0),
        )
        .unwrap();
        assert_eq!(clip.frame(1), Some(&[4u8, 5, 6][..]));
        assert_eq!(clip.frame(2), None);
    }

    #[test]
    fn video_files_are_told_by_extension() {
        assert!(is_video_file(Path::new("echo.MP4")) && is_video_file(Path::new("a/b.avi")));
        assert!(!is_video_file(Path::new("frames")) && !is_video_file(Path::new("x.png")));
    }

    #[test]
    fn the_size_limit_is_checked_before_decoding() {
        let options = ClipOptions { max_bytes: 1000 };
        assert_eq!(check_size(Path::new("c"), 10, 5, 6, &options).unwrap(), 900);
        let err = check_size(Path::new("c"), 10, 6, 6, &options)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1080 bytes") && err.contains("limit of 1000"),
            "{err}"
        );
        assert!(check_size(Path::new("c"), u64::MAX, usize::MAX, 9, &options).is_err());
    }
}
