//! Second pass: the samples of every slice, written straight into that slice's slot of the
//! volume buffer, then mapped to real-world values (RescaleSlope/Intercept).
//!
//! Native (uncompressed) pixel data is read from its byte offset in the file into the slot,
//! with no intermediate copy; byte order and unused high bits are fixed in place the way
//! pydicom does (bits above BitsStored cleared, or the sign extended for signed data).
//! Compressed data and deflated data sets go through dicom-pixeldata, one frame at a time;
//! RLE frames are checked first (`rle`), and a panic inside a codec becomes an error.

use super::header::{Image, Instance, PixelLocation, error_chain};
use super::rle;
use crate::io::{FormatError, IoError, LoadProgress, WithPath};
use crate::volume::{IntoVoxelBuffer, Rescale, VoxelBuffer, VoxelType};
use crate::with_voxels;
use dicom::dictionary_std::{tags, uids};
use dicom::pixeldata::PixelDecoder;
use rayon::prelude::*;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;

/// How one file stores a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleLayout {
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
}

impl SampleLayout {
    pub fn of(image: &Image) -> Self {
        SampleLayout { bits_allocated: image.bits_allocated, bits_stored: image.bits_stored, signed: image.signed }
    }

    /// The voxel type that holds the stored samples.
    pub fn voxel_type(self) -> Result<VoxelType, FormatError> {
        Ok(match (self.bits_allocated, self.signed) {
            (8, false) => VoxelType::U8,
            (8, true) => VoxelType::I8,
            (16, false) => VoxelType::U16,
            (16, true) => VoxelType::I16,
            (32, false) => VoxelType::U32,
            (32, true) => VoxelType::I32,
            (bits, _) => {
                return Err(FormatError::unsupported(format!(
                    "BitsAllocated {bits}: only 8, 16 and 32-bit grayscale samples are supported"
                )));
            }
        })
    }
}

/// The frames of one file that belong in the volume, each with its slot (bytes of the
/// volume buffer for that slice).
pub struct FileFrames<'a> {
    pub instance: &'a Instance,
    pub frames: Vec<(u64, &'a mut [u8])>,
}

/// Fills every slot of every file, files in parallel.
pub fn read_all(jobs: Vec<FileFrames<'_>>, progress: Option<LoadProgress>) -> Result<(), IoError> {
    let total = jobs.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    jobs.into_par_iter().try_for_each(|mut job| {
        read_file(job.instance, &mut job.frames).at(&job.instance.path)?;
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Some(p) = &progress {
            p.report(n, total);
        }
        Ok(())
    })
}

fn read_file(instance: &Instance, frames: &mut [(u64, &mut [u8])]) -> Result<(), FormatError> {
    let image = instance.image.as_ref().ok_or_else(|| FormatError::Invalid("not an image".into()))?;
    let layout = SampleLayout::of(image);
    match image.pixels {
        PixelLocation::Native { offset, big_endian, .. } => {
            let frame_bytes = image.frame_bytes()?;
            let mut file = File::open(&instance.path)?;
            for (frame, slot) in frames.iter_mut() {
                let at = offset + *frame * frame_bytes;
                file.seek(SeekFrom::Start(at))?;
                file.read_exact(slot).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => FormatError::truncated(format!(
                        "the file ends inside the pixel data of frame {frame} ({} bytes from offset {at})",
                        slot.len()
                    )),
                    _ => FormatError::Io(e),
                })?;
                normalize_samples(slot, layout, big_endian);
            }
            Ok(())
        }
        PixelLocation::Encoded => decode_frames(instance, layout, frames),
        PixelLocation::Absent => Err(FormatError::malformed("the file has no Pixel Data (7FE0,0010)")),
    }
}

/// Decodes compressed frames (or the pixel data of a deflated data set) with dicom-pixeldata.
fn decode_frames(instance: &Instance, layout: SampleLayout, frames: &mut [(u64, &mut [u8])]) -> Result<(), FormatError> {
    let ts = instance.transfer_syntax;
    let what = || format!("{} ({})", ts.name(), ts.uid());
    let object = dicom::object::open_file(&instance.path)
        .map_err(|e| FormatError::malformed(format!("cannot read the file ({}): {}", what(), error_chain(&e))))?;
    let image = instance.image.as_ref().ok_or_else(|| FormatError::Invalid("not an image".into()))?;
    let fragments = object.get(tags::PIXEL_DATA).and_then(|e| e.value().fragments());
    frames.par_iter_mut().try_for_each(|(frame, slot)| {
        let frame_index = u32::try_from(*frame).map_err(|_| FormatError::malformed(format!("frame {frame} out of range")))?;
        if ts.uid() == uids::RLE_LOSSLESS
            && let Some(fragment) = fragments.and_then(|f| f.get(frame_index as usize))
        {
            rle::check_frame(fragment, image.rows, image.columns, image.samples_per_pixel, image.bits_allocated)
                .map_err(|e| FormatError::malformed(format!("frame {frame} ({}): {e}", what())))?;
        }
        // The codecs index into the encoded bytes; a panic on data no check above foresaw
        // becomes an error for this file instead of ending the program.
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| object.decode_pixel_data_frame(frame_index)))
            .map_err(|panic| {
                FormatError::malformed(format!(
                    "the {} decoder failed on frame {frame} ({}): the compressed data is damaged",
                    what(),
                    panic_message(panic.as_ref())
                ))
            })?
            .map_err(|e| FormatError::unsupported(format!("cannot decode {} pixel data: {}", what(), error_chain(&e))))?;
        let data = decoded.data();
        if data.len() != slot.len() {
            return Err(FormatError::malformed(format!(
                "frame {frame} decodes to {} bytes, but Rows x Columns x BitsAllocated give {} ({})",
                data.len(),
                slot.len(),
                what()
            )));
        }
        slot.copy_from_slice(data);
        normalize_samples(slot, layout, false);
        Ok(())
    })
}

/// The text a panic was raised with, where it has one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Brings samples to native byte order and clears the bits above BitsStored (unsigned) or
/// extends the sign bit over them (signed), in place.
pub fn normalize_samples(bytes: &mut [u8], layout: SampleLayout, big_endian: bool) {
    let width = u32::from(layout.bits_allocated);
    let stored = u32::from(layout.bits_stored).min(width);
    let swap = big_endian != cfg!(target_endian = "big");
    if stored == width && (!swap || width == 8) {
        return;
    }
    let mask = if stored >= 32 { u32::MAX } else { (1u32 << stored) - 1 };
    let fix = |v: u32| -> u32 {
        if stored == width {
            return v;
        }
        let v = v & mask;
        if layout.signed && (v >> (stored - 1)) & 1 == 1 { v | !mask } else { v }
    };
    match width {
        8 => bytes.iter_mut().for_each(|b| *b = fix(u32::from(*b)) as u8),
        16 => bytes.chunks_exact_mut(2).for_each(|c| {
            let raw = [c[0], c[1]];
            let v = if big_endian { u16::from_be_bytes(raw) } else { u16::from_le_bytes(raw) };
            c.copy_from_slice(&(fix(u32::from(v)) as u16).to_ne_bytes());
        }),
        32 => bytes.chunks_exact_mut(4).for_each(|c| {
            let raw = [c[0], c[1], c[2], c[3]];
            let v = if big_endian { u32::from_be_bytes(raw) } else { u32::from_le_bytes(raw) };
            c.copy_from_slice(&fix(v).to_ne_bytes());
        }),
        _ => {}
    }
}

/// Maps stored values to real-world values. One rescale for the whole volume is applied in
/// place where the type allows (`Rescale::apply`); slices with different rescales each get
/// their own, in a common type: the one `Rescale` picks when every slice agrees, else f32.
pub fn apply_rescales(stored: VoxelBuffer, rescales: &[Rescale]) -> VoxelBuffer {
    let Some(first) = rescales.first() else { return stored };
    if rescales.iter().all(|r| r == first) {
        return first.apply(stored);
    }
    let slice_len = stored.len() / rescales.len();
    let stored_type = stored.voxel_type();
    let slice_of = |k: usize| -> VoxelBuffer { with_voxels!(&stored, v => v[k * slice_len..(k + 1) * slice_len].to_vec().into_buffer()) };
    let types: Vec<VoxelType> = (0..rescales.len())
        .map(|k| {
            let range = with_voxels!(&stored, v => crate::volume::min_max(&v[k * slice_len..(k + 1) * slice_len]));
            rescales[k].output_type(stored_type, range)
        })
        .collect();
    let target = if types.iter().all(|t| *t == types[0]) { types[0] } else { VoxelType::F32 };
    let mut out = VoxelBuffer::zeros(target, stored.len());
    let slice_bytes = slice_len * target.size();
    for (k, slot) in out.as_bytes_mut().chunks_exact_mut(slice_bytes.max(1)).enumerate().take(rescales.len()) {
        let real = rescales[k].apply(slice_of(k));
        let real = if real.voxel_type() == target { real } else { real.convert(target) };
        slot.copy_from_slice(real.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(bits_allocated: u16, bits_stored: u16, signed: bool) -> SampleLayout {
        SampleLayout { bits_allocated, bits_stored, signed }
    }

    fn words(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn read_i16(b: &[u8]) -> Vec<i16> {
        b.chunks_exact(2).map(|c| i16::from_ne_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn high_bits_are_cleared_or_sign_extended_like_pydicom() {
        // pydicom 3.0.2, BitsAllocated 16, BitsStored 12: unsigned [0xF123, 0x0FFF, 0x1800]
        // reads [291, 4095, 2048]; signed [0xF123, 0x0FFF, 0x0800, 0x1800, 0x07FF] reads
        // [291, -1, -2048, -2048, 2047].
        let mut b = words(&[0xF123, 0x0FFF, 0x1800]);
        normalize_samples(&mut b, layout(16, 12, false), false);
        assert_eq!(read_i16(&b), vec![291, 4095, 2048]);
        let mut b = words(&[0xF123, 0x0FFF, 0x0800, 0x1800, 0x07FF]);
        normalize_samples(&mut b, layout(16, 12, true), false);
        assert_eq!(read_i16(&b), vec![291, -1, -2048, -2048, 2047]);
    }

    #[test]
    fn big_endian_is_swapped_and_8_bit_masked() {
        let mut b = vec![0x01, 0x02, 0xFF, 0xFE];
        normalize_samples(&mut b, layout(16, 16, true), true);
        assert_eq!(read_i16(&b), vec![0x0102, -2]);
        let mut b = vec![0xF5, 0x0A];
        normalize_samples(&mut b, layout(8, 4, true), false);
        assert_eq!(b, vec![0x05, 0xFA]);
    }

    #[test]
    fn one_rescale_for_all_slices_keeps_ct_in_i16() {
        let stored = VoxelBuffer::U16(vec![0, 1024, 2048, 3000]);
        let r = Rescale { slope: 1.0, intercept: -1024.0 };
        assert_eq!(apply_rescales(stored, &[r, r]), VoxelBuffer::I16(vec![-1024, 0, 1024, 1976]));
    }

    #[test]
    fn per_slice_rescales_are_each_applied() {
        let stored = VoxelBuffer::U16(vec![1, 2, 3, 4]);
        let a = Rescale { slope: 1.0, intercept: -1024.0 };
        let b = Rescale { slope: 2.0, intercept: -1024.0 };
        assert_eq!(apply_rescales(stored.clone(), &[a, b]), VoxelBuffer::I16(vec![-1023, -1022, -1018, -1016]));
        let c = Rescale { slope: 0.5, intercept: 0.0 };
        assert_eq!(apply_rescales(stored, &[a, c]), VoxelBuffer::F32(vec![-1023.0, -1022.0, 1.5, 2.0]));
    }
}
