//! DAVIS-style annotation PNGs, the prompt and result format of SAM2's and MedSAM2's video
//! scripts: one PNG per frame whose pixel values are object ids (0 = background), usually an
//! indexed PNG whose palette gives each id its colour; or, per object, a PNG where non-zero is
//! inside.
//!
//! Read as Pillow's `np.array(Image.open(path))` gives them: palette indices for an indexed
//! PNG (1, 2, 4 or 8 bits), grey levels for an 8-bit grey PNG, 0/1 for a 1-bit grey PNG; the
//! palette is kept (Pillow's `getpalette()`). Other kinds (RGB, 16-bit) are errors, as the
//! scripts would misread them. Written as 8-bit grey or 8-bit indexed PNGs, atomically.
//! The `png` crate is used directly because the `image` crate expands palettes to colours.

use crate::io::atomic::AtomicFile;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// Why an annotation could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable PNG: {message}")]
    Decode { path: PathBuf, message: String },
    #[error(
        "{path}: a mask PNG must be indexed (palette) or 8-bit grey, with object ids as pixel values; this one is {what}"
    )]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: writing the PNG: {message}")]
    Encode { path: PathBuf, message: String },
}

/// One frame's annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    pub width: usize,
    pub height: usize,
    /// Object id (or, per-object files, non-zero = inside) of every pixel, rows top to bottom.
    pub labels: Vec<u8>,
    /// RGB triplets of an indexed PNG's palette.
    pub palette: Option<Vec<u8>>,
}

impl Annotation {
    /// Object ids present (non-zero), ascending.
    pub fn object_ids(&self) -> Vec<u8> {
        let mut seen = [false; 256];
        for &l in &self.labels {
            seen[l as usize] = true;
        }
        (1..=255u8).filter(|&id| seen[id as usize]).collect()
    }
}

/// The largest annotation accepted: 64 M pixels (decoding buffers included).
const MAX_DECODE_BYTES: usize = 256 << 20;

/// Reads an annotation PNG (see the module documentation).
pub fn read(path: &Path) -> Result<Annotation, AnnotationError> {
    let file = std::fs::File::open(path).map_err(|source| AnnotationError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decode_error = |e: png::DecodingError| AnnotationError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut decoder = png::Decoder::new_with_limits(
        BufReader::new(file),
        png::Limits {
            bytes: MAX_DECODE_BYTES,
        },
    );
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(decode_error)?;
    let info = reader.info();
    let (width, height) = (info.width as usize, info.height as usize);
    let (color, depth) = (info.color_type, info.bit_depth as u8);
    let palette = info.palette.as_ref().map(|p| p.to_vec());
    let unsupported = |what: String| AnnotationError::Unsupported {
        path: path.to_path_buf(),
        what,
    };
    let keep_palette = match (color, depth) {
        (png::ColorType::Indexed, 1 | 2 | 4 | 8) => true,
        (png::ColorType::Grayscale, 1 | 8) => false,
        _ => return Err(unsupported(format!("{color:?} with {depth}-bit samples"))),
    };
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| unsupported("too large".into()))?;
    let mut buffer = vec![0u8; size];
    let frame = reader.next_frame(&mut buffer).map_err(decode_error)?;
    let mut labels = Vec::with_capacity(width * height);
    let per_byte = 8 / depth as usize;
    let mask = ((1u16 << depth) - 1) as u8;
    for row in buffer.chunks(frame.line_size).take(height) {
        labels.extend((0..width).map(|x| {
            let byte = row[x / per_byte];
            let shift = 8 - depth as usize * (x % per_byte + 1);
            (byte >> shift) & mask
        }));
    }
    Ok(Annotation {
        width,
        height,
        labels,
        palette: palette.filter(|_| keep_palette),
    })
}

/// Writes `labels` (`width` x `height`) as an 8-bit PNG: indexed with `palette` (RGB
/// triplets) when given, else grey. The file appears only once complete.
pub fn write(
    path: &Path,
    width: usize,
    height: usize,
    labels: &[u8],
    palette: Option<&[u8]>,
) -> Result<(), AnnotationError> {
    let encode_error = |e: png::EncodingError| AnnotationError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let io_error = |source| AnnotationError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = AtomicFile::create(path).map_err(io_error)?;
    {
        let mut encoder = png::Encoder::new(file.writer(), width as u32, height as u32);
        encoder.set_depth(png::BitDepth::Eight);
        match palette {
            Some(p) => {
                encoder.set_color(png::ColorType::Indexed);
                encoder.set_palette(p.to_vec());
            }
            None => encoder.set_color(png::ColorType::Grayscale),
        }
        let mut writer = encoder.write_header().map_err(encode_error)?;
        writer.write_image_data(labels).map_err(encode_error)?;
        writer.finish().map_err(encode_error)?;
    }
    file.commit().map_err(io_error)
}

/// The DAVIS 2017 palette (the PASCAL VOC colour map): entry i spreads the bits of i over the
/// colour channels, most significant bit first: bit 3k goes to red, 3k+1 to green, 3k+2 to blue,
/// each at bit 7-k.
pub fn davis_palette() -> Vec<u8> {
    let mut palette = Vec::with_capacity(768);
    for i in 0..256usize {
        let mut rgb = [0u8; 3];
        for k in 0..8 {
            for (c, value) in rgb.iter_mut().enumerate() {
                *value |= (((i >> (3 * k + c)) & 1) as u8) << (7 - k);
            }
        }
        palette.extend(rgb);
    }
    palette
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn davis_palette_colours() {
        let p = davis_palette();
        let entry = |i: usize| [p[3 * i], p[3 * i + 1], p[3 * i + 2]];
        assert_eq!(p.len(), 768);
        assert_eq!(
            [entry(0), entry(1), entry(2), entry(3), entry(4)],
            [
                [0, 0, 0],
                [128, 0, 0],
                [0, 128, 0],
                [128, 128, 0],
                [0, 0, 128]
            ]
        );
        assert_eq!(
            [entry(8), entry(9), entry(255)],
            [[64, 0, 0], [192, 0, 0], [224, 224, 192]]
        );
    }

    #[test]
    fn indexed_and_grey_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000.png");
        let labels = vec![0, 1, 2, 2, 0, 7];
        write(&path, 3, 2, &labels, Some(&davis_palette()[..24])).unwrap();
        let back = read(&path).unwrap();
        assert_eq!((back.width, back.height, &back.labels), (3, 2, &labels));
        assert_eq!(back.palette.as_deref(), Some(&davis_palette()[..24]));
        assert_eq!(back.object_ids(), [1, 2, 7]);
        write(&path, 3, 2, &labels, None).unwrap();
        let grey = read(&path).unwrap();
        assert_eq!((grey.labels, grey.palette), (labels, None));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn sub_byte_indices_unpack_and_colour_masks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        {
            let file = std::fs::File::create(&path).unwrap();
            let mut encoder = png::Encoder::new(file, 5, 1);
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_depth(png::BitDepth::Two);
            encoder.set_palette(vec![0u8; 12]);
            let mut writer = encoder.write_header().unwrap();
            // 5 pixels of 2 bits: 1, 2, 3, 0 | 1 (padding)
            writer
                .write_image_data(&[0b0110_1100, 0b0100_0000])
                .unwrap();
        }
        assert_eq!(read(&path).unwrap().labels, [1, 2, 3, 0, 1]);
        image::RgbImage::new(2, 2).save(&path).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("indexed (palette) or 8-bit grey") && err.contains("Rgb"),
            "{err}"
        );
        std::fs::write(&path, b"not a png").unwrap();
        assert!(matches!(read(&path), Err(AnnotationError::Decode { .. })));
    }
}
