//! A video file (MP4, AVI, MOV, ...) as a clip, decoded by the `ffmpeg` executable, as
//! MedSAM2's app does: `ffprobe` reports the first video stream's size and frame rate, then
//! `ffmpeg -f rawvideo -pix_fmt rgb24` streams its frames, which are read one by one and
//! counted against the clip's byte limit (the process is stopped once a clip is too large).
//! Rotation metadata is not applied (`-noautorotate`), like SAM2's decord reader: frames are
//! as stored. Frames are named 00000, 00001, ... as `ffmpeg -start_number 0 '%05d.jpg'`
//! (SAM2's suggested extraction) names them, so prompt masks for frame 0 are `00000.png`.
//!
//! Hand-written around the executable: no Rust crate decodes these formats without linking
//! FFmpeg's C libraries, and the reference decodes with FFmpeg too.

use super::{Clip, ClipOptions, VideoError, check_size};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// Size and frame rate of a file's first video stream, as ffprobe reports them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamInfo {
    pub width: usize,
    pub height: usize,
    pub frame_rate: Option<f64>,
}

fn missing_or_failed(path: &Path, program: &'static str, error: std::io::Error) -> VideoError {
    if error.kind() == std::io::ErrorKind::NotFound {
        VideoError::FfmpegMissing {
            path: path.to_path_buf(),
            program,
        }
    } else {
        VideoError::Ffmpeg {
            path: path.to_path_buf(),
            program,
            message: error.to_string(),
        }
    }
}

/// Asks `ffprobe` for the first video stream's size and frame rate.
pub fn probe(path: &Path) -> Result<StreamInfo, VideoError> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,avg_frame_rate,r_frame_rate",
        ])
        .args(["-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| missing_or_failed(path, "ffprobe", e))?;
    let failed = |message: String| VideoError::Ffmpeg {
        path: path.to_path_buf(),
        program: "ffprobe",
        message,
    };
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| failed(e.to_string()))?;
    let stream = json["streams"]
        .get(0)
        .ok_or_else(|| failed("the file has no video stream".into()))?;
    let dimension = |key: &str| stream[key].as_u64().filter(|&v| v > 0).map(|v| v as usize);
    let (Some(width), Some(height)) = (dimension("width"), dimension("height")) else {
        return Err(failed(format!("no frame size in {stream}")));
    };
    let frame_rate = ["avg_frame_rate", "r_frame_rate"]
        .iter()
        .find_map(|k| stream[k].as_str().and_then(parse_rate));
    Ok(StreamInfo {
        width,
        height,
        frame_rate,
    })
}

/// "30000/1001" or "25" as frames per second; "0/0" (unknown) as `None`.
fn parse_rate(text: &str) -> Option<f64> {
    let rate = match text.split_once('/') {
        Some((n, d)) => n.trim().parse::<f64>().ok()? / d.trim().parse::<f64>().ok()?,
        None => text.trim().parse().ok()?,
    };
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

/// Decodes every frame of the first video stream of `path` to RGB.
pub fn read(path: &Path, options: &ClipOptions) -> Result<Clip, VideoError> {
    let info = probe(path)?;
    let frame_bytes = check_size(path, 1, info.width, info.height, options)? as usize;
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-noautorotate", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| missing_or_failed(path, "ffmpeg", e))?;
    // Drained on its own thread so that a chatty ffmpeg cannot block on a full pipe.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut pixels = Vec::new();
    let mut frames = 0u64;
    let result = loop {
        if let Err(e) = check_size(path, frames + 1, info.width, info.height, options) {
            break Err(e);
        }
        let start = pixels.len();
        pixels.resize(start + frame_bytes, 0);
        match read_full(&mut stdout, &mut pixels[start..]) {
            Ok(n) if n == frame_bytes => frames += 1,
            Ok(n) => {
                pixels.truncate(start);
                break if n == 0 {
                    Ok(())
                } else {
                    Err(VideoError::Ffmpeg {
                        path: path.to_path_buf(),
                        program: "ffmpeg",
                        message: format!(
                            "the last frame is cut short ({n} of {frame_bytes} bytes)"
                        ),
                    })
                };
            }
            Err(e) => break Err(VideoError::io(path, e)),
        }
    };
    if result.is_err() {
        let _ = child.kill();
    }
    drop(stdout);
    let status = child.wait().map_err(|e| VideoError::io(path, e))?;
    let messages = errors.join().unwrap_or_default();
    result?;
    if !status.success() {
        return Err(VideoError::Ffmpeg {
            path: path.to_path_buf(),
            program: "ffmpeg",
            message: messages.trim().to_string(),
        });
    }
    if frames == 0 {
        return Err(VideoError::Ffmpeg {
            path: path.to_path_buf(),
            program: "ffmpeg",
            message: "no frames decoded".into(),
        });
    }
    let names = (0..frames).map(|i| format!("{i:05}")).collect();
    Ok(
        Clip::new(info.width, info.height, pixels, names, info.frame_rate)
            .expect("whole frames were read"),
    )
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rates_parse_like_ffprobe_writes_them() {
        assert_eq!(parse_rate("25/1"), Some(25.0));
        assert!((parse_rate("30000/1001").unwrap() - 29.97).abs() < 1e-3);
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(parse_rate("12.5"), Some(12.5));
        assert_eq!(parse_rate("x"), None);
    }

    #[test]
    fn a_missing_program_is_named_with_how_to_install_it() {
        let err = missing_or_failed(
            Path::new("echo.mp4"),
            "ffmpeg",
            std::io::ErrorKind::NotFound.into(),
        )
        .to_string();
        assert!(
            err.contains("`ffmpeg`")
                && err.contains("apt-get install ffmpeg")
                && err.contains("ffmpeg.org"),
            "{err}"
        );
    }
}
