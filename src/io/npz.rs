//! MedSAM2's .npz volumes: a zip of numpy arrays `imgs` (Z, Y, X), optional `gts` (a label map
//! of the same shape), `spacing` and `origin` in SimpleITK's (x, y, z) order and `direction`
//! (3x3 or 9 numbers, row-major, SimpleITK's convention).
//!
//! The .npy parsing is written here (a ten-line header format); the zip container is the `zip`
//! crate. Each array's declared shape is checked against its entry's size before allocating.
//! [`write`] makes the archive `np.savez_compressed` makes (deflated .npy entries, C order),
//! through a temporary file renamed into place.

use super::atomic::AtomicFile;
use super::limits::{check_compressed, payload_bytes, to_usize};
use super::{FormatError, IoError, WithPath};
use crate::volume::{Geometry, SourceFormat, Volume, VolumeMeta, VoxelBuffer, VoxelType};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

/// A numpy array read from an .npy entry: element type, shape (C order) and data.
#[derive(Debug)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: VoxelBuffer,
}

/// Opens the image (`imgs`) of a MedSAM2 .npz.
pub fn read_image(path: &Path) -> Result<Volume, IoError> {
    read_array_as_volume(path, "imgs")
}

/// Opens the ground-truth label map (`gts`) of a MedSAM2 .npz.
pub fn read_labels(path: &Path) -> Result<Volume, IoError> {
    read_array_as_volume(path, "gts")
}

/// Whether the .npz holds a `gts` array.
pub fn has_labels(path: &Path) -> Result<bool, IoError> {
    let archive = open_archive(path)?;
    Ok(archive.index_for_name("gts.npy").is_some())
}

/// Reads array `name` of an .npz as stored, or `None` when the archive has no such array.
pub fn read_array(path: &Path, name: &str) -> Result<Option<NpyArray>, IoError> {
    let mut archive = open_archive(path)?;
    read_entry(&mut archive, name).at(path)
}

/// The values of one array to write.
#[derive(Clone, Copy, Debug)]
pub enum NpyData<'a> {
    U8(&'a [u8]),
    F64(&'a [f64]),
}

/// One array of an .npz to write: its name (without `.npy`), shape (C order) and values.
#[derive(Clone, Copy, Debug)]
pub struct NpyEntry<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: NpyData<'a>,
}

/// Writes `entries` as a compressed .npz (what `np.savez_compressed` writes), atomically.
pub fn write(path: &Path, entries: &[NpyEntry]) -> Result<(), IoError> {
    let io = |e: std::io::Error| IoError::new(path, FormatError::Io(e));
    let zip_error = |e: zip::result::ZipError| IoError::new(path, FormatError::Invalid(format!("cannot write the .npz archive: {e}")));
    let mut file = AtomicFile::create(path).map_err(io)?;
    let mut archive = zip::ZipWriter::new(file.writer());
    for entry in entries {
        let (descr, bytes): (&str, Vec<u8>) = match entry.data {
            NpyData::U8(v) => ("|u1", v.to_vec()),
            NpyData::F64(v) => ("<f8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        let count: usize = entry.shape.iter().product();
        let elem = if descr == "|u1" { 1 } else { 8 };
        if count * elem != bytes.len() {
            return Err(IoError::new(path, FormatError::Invalid(format!("array `{}` has {} bytes, shape {:?} needs {}", entry.name, bytes.len(), entry.shape, count * elem))));
        }
        let header = npy_header(descr, entry.shape);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file((header.len() + bytes.len()) as u64 >= u64::from(u32::MAX));
        archive.start_file(format!("{}.npy", entry.name), options).map_err(zip_error)?;
        archive.write_all(&header).map_err(io)?;
        archive.write_all(&bytes).map_err(io)?;
    }
    archive.finish().map_err(zip_error)?;
    file.commit().map_err(io)
}

/// An .npy version 1.0 header (magic, length, dict padded with spaces to 64 bytes, newline).
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

fn open_archive(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>, IoError> {
    let file = File::open(path).at(path)?;
    zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| FormatError::malformed(format!("not a readable .npz (zip) archive: {e}")))
        .at(path)
}

fn read_array_as_volume(path: &Path, name: &str) -> Result<Volume, IoError> {
    let mut archive = open_archive(path)?;
    let array = read_entry(&mut archive, name).at(path)?.ok_or_else(|| {
        IoError::new(path, FormatError::malformed(format!("no `{name}` array in the .npz")))
    })?;
    let dims = match array.shape.as_slice() {
        [z, y, x] => [*x, *y, *z],
        [y, x] => [*x, *y, 1],
        s => return Err(IoError::new(path, FormatError::unsupported(format!("`{name}` has shape {s:?}; a (Z, Y, X) volume is needed")))),
    };
    let spacing = small_vector(&mut archive, "spacing", 3).at(path)?.unwrap_or(vec![1.0; 3]);
    let origin = small_vector(&mut archive, "origin", 3).at(path)?.unwrap_or(vec![0.0; 3]);
    let direction = small_vector(&mut archive, "direction", 9).at(path)?;
    let geometry = Geometry {
        dims,
        spacing: [spacing[0], spacing[1], spacing[2]],
        origin: [origin[0], origin[1], origin[2]],
        direction: match direction {
            Some(d) => Geometry::direction_from_row_major(d.try_into().expect("length checked")),
            None => crate::volume::IDENTITY3,
        },
    };
    let ty = array.data.voxel_type();
    let meta = VolumeMeta { format: Some(SourceFormat::Npz), stored_type: Some(ty), ..Default::default() };
    Volume::new(geometry, 1, array.data, meta).map_err(|e| IoError::new(path, FormatError::Invalid(e.to_string())))
}

/// Reads a small numeric array (spacing, origin, direction) as `len` f64 values, if present.
fn small_vector(archive: &mut zip::ZipArchive<BufReader<File>>, name: &str, len: usize) -> Result<Option<Vec<f64>>, FormatError> {
    let Some(array) = read_entry(archive, name)? else { return Ok(None) };
    if array.data.len() != len {
        return Err(FormatError::malformed(format!("`{name}` has {} values, {len} expected", array.data.len())));
    }
    let values: Vec<f64> = (0..len).map(|i| array.data.get_f64(i)).collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(FormatError::malformed(format!("`{name}` holds a non-finite value")));
    }
    Ok(Some(values))
}

/// Reads entry `<name>.npy` from the archive, or `None` when there is no such entry.
pub fn read_entry(archive: &mut zip::ZipArchive<BufReader<File>>, name: &str) -> Result<Option<NpyArray>, FormatError> {
    let entry_name = format!("{name}.npy");
    let Some(index) = archive.index_for_name(&entry_name) else { return Ok(None) };
    let mut entry = archive
        .by_index(index)
        .map_err(|e| FormatError::malformed(format!("cannot read `{entry_name}` from the archive: {e}")))?;
    let (size, compressed) = (entry.size(), entry.compressed_size());
    read_npy(&mut entry, size, compressed).map(Some).map_err(|e| match e {
        FormatError::Malformed(m) => FormatError::malformed(format!("`{entry_name}`: {m}")),
        FormatError::Truncated(m) => FormatError::truncated(format!("`{entry_name}`: {m}")),
        FormatError::Unsupported(m) => FormatError::unsupported(format!("`{entry_name}`: {m}")),
        other => other,
    })
}

/// Parses an .npy stream whose entry declares `size` bytes (`compressed` on disk).
fn read_npy(r: &mut impl Read, size: u64, compressed: u64) -> Result<NpyArray, FormatError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| FormatError::truncated("shorter than an .npy header"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(FormatError::malformed("not an .npy array (bad magic)"));
    }
    let header_len = if magic[6] == 1 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b).map_err(|_| FormatError::truncated("header length missing"))?;
        u16::from_le_bytes(b) as usize
    } else {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|_| FormatError::truncated("header length missing"))?;
        u32::from_le_bytes(b) as usize
    };
    if header_len > 1 << 16 {
        return Err(FormatError::malformed(format!("header of {header_len} bytes")));
    }
    let mut text = vec![0u8; header_len];
    r.read_exact(&mut text).map_err(|_| FormatError::truncated("the header is cut short"))?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let descr = dict_value(&text, "descr").ok_or_else(|| FormatError::malformed("no 'descr' in the header"))?;
    let fortran = dict_value(&text, "fortran_order").is_some_and(|v| v.trim() == "True");
    let shape = parse_shape(&dict_value(&text, "shape").ok_or_else(|| FormatError::malformed("no 'shape' in the header"))?)?;
    let descr = descr.trim().trim_matches('\'').trim_matches('"').to_string();
    let (ty, big_endian, wide) = parse_descr(&descr)?;
    let elem = if wide { 8 } else { ty.size() as u64 };
    let needed = payload_bytes(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>(), elem)?;
    let header_total = 8 + if magic[6] == 1 { 2 } else { 4 } + header_len as u64;
    if needed + header_total > size {
        return Err(FormatError::truncated(format!("shape {shape:?} needs {needed} bytes, the entry holds {}", size.saturating_sub(header_total))));
    }
    check_compressed(needed, compressed.max(1))?;
    let count = to_usize(needed / elem)?;
    let mut data = if wide {
        let mut raw = vec![0u8; to_usize(needed)?];
        r.read_exact(&mut raw).map_err(|_| FormatError::truncated("the data is cut short"))?;
        narrow_64bit(&raw, &descr, big_endian, count)?
    } else {
        let mut data = VoxelBuffer::zeros(ty, count);
        r.read_exact(data.as_bytes_mut()).map_err(|_| FormatError::truncated("the data is cut short"))?;
        if big_endian != cfg!(target_endian = "big") {
            data.swap_bytes();
        }
        data
    };
    if fortran && shape.len() > 1 {
        data = fortran_to_c(&data, &shape);
    }
    Ok(NpyArray { shape, data })
}

/// The text value of `'key': value` in a numpy header dict.
fn dict_value(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = text[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].to_string())
}

fn parse_shape(s: &str) -> Result<Vec<usize>, FormatError> {
    s.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<usize>().map_err(|_| FormatError::malformed(format!("shape {s}"))))
        .collect()
}

/// Element type, byte order and whether it is a 64-bit integer (narrowed after reading).
fn parse_descr(descr: &str) -> Result<(VoxelType, bool, bool), FormatError> {
    let (order, code) = descr.split_at(1.min(descr.len()));
    let (big, code) = match order {
        "<" | "|" | "=" => (false, code),
        ">" => (true, code),
        _ => (false, descr),
    };
    let ty = match code {
        "u1" | "b1" => VoxelType::U8,
        "i1" => VoxelType::I8,
        "u2" => VoxelType::U16,
        "i2" => VoxelType::I16,
        "u4" => VoxelType::U32,
        "i4" => VoxelType::I32,
        "f4" => VoxelType::F32,
        "f8" => VoxelType::F64,
        "i8" | "u8" => return Ok((VoxelType::I32, big, true)),
        _ => return Err(FormatError::unsupported(format!("numpy dtype {descr}"))),
    };
    Ok((ty, big, false))
}

/// int64/uint64 arrays become i32 when every value fits, else f64.
fn narrow_64bit(raw: &[u8], descr: &str, big_endian: bool, count: usize) -> Result<VoxelBuffer, FormatError> {
    let unsigned = descr.ends_with("u8");
    let values: Vec<f64> = raw
        .chunks_exact(8)
        .take(count)
        .map(|c| {
            let b: [u8; 8] = c.try_into().unwrap();
            match (unsigned, big_endian) {
                (true, false) => u64::from_le_bytes(b) as f64,
                (true, true) => u64::from_be_bytes(b) as f64,
                (false, false) => i64::from_le_bytes(b) as f64,
                (false, true) => i64::from_be_bytes(b) as f64,
            }
        })
        .collect();
    let fits = values.iter().all(|&v| v >= i32::MIN as f64 && v <= i32::MAX as f64);
    Ok(if fits { VoxelBuffer::I32(values.iter().map(|&v| v as i32).collect()) } else { VoxelBuffer::F64(values) })
}

/// Reorders a column-major (Fortran) array into row-major (C) order for the same shape.
fn fortran_to_c(data: &VoxelBuffer, shape: &[usize]) -> VoxelBuffer {
    let n = data.len();
    let rank = shape.len();
    let mut out = VoxelBuffer::zeros(data.voxel_type(), n);
    let elem = data.voxel_type().size();
    let src = data.as_bytes();
    let dst = out.as_bytes_mut();
    let mut idx = vec![0usize; rank];
    for c_index in 0..n {
        // idx is the multi-index of c_index in C order; its Fortran offset:
        let mut f_index = 0;
        let mut stride = 1;
        for (d, &i) in idx.iter().enumerate() {
            f_index += i * stride;
            stride *= shape[d];
        }
        dst[c_index * elem..(c_index + 1) * elem].copy_from_slice(&src[f_index * elem..(f_index + 1) * elem]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}", if fortran { "True" } else { "False" });
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_c_and_fortran_order() {
        let c = npy("<i2", "(2, 3)", false, &[1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0]);
        let a = read_npy(&mut c.as_slice(), c.len() as u64, c.len() as u64).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, VoxelBuffer::I16(vec![1, 2, 3, 4, 5, 6]));
        // The same matrix stored column by column.
        let f = npy("<i2", "(2, 3)", true, &[1, 0, 4, 0, 2, 0, 5, 0, 3, 0, 6, 0]);
        let a = read_npy(&mut f.as_slice(), f.len() as u64, f.len() as u64).unwrap();
        assert_eq!(a.data, VoxelBuffer::I16(vec![1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn written_archives_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npz");
        let segs: Vec<u8> = (0..24).collect();
        let spacing = [0.8, 0.7, 2.5];
        let entries = [
            NpyEntry { name: "segs", shape: &[2, 3, 4], data: NpyData::U8(&segs) },
            NpyEntry { name: "spacing", shape: &[3], data: NpyData::F64(&spacing) },
        ];
        write(&path, &entries).unwrap();
        let a = read_array(&path, "segs").unwrap().unwrap();
        assert_eq!((a.shape, a.data), (vec![2, 3, 4], VoxelBuffer::U8(segs)));
        let s = read_array(&path, "spacing").unwrap().unwrap();
        assert_eq!((s.shape, s.data), (vec![3], VoxelBuffer::F64(spacing.to_vec())));
        assert!(read_array(&path, "gts").unwrap().is_none());
        let bad = [NpyEntry { name: "segs", shape: &[5], data: NpyData::U8(&[1, 2]) }];
        assert!(write(&dir.path().join("bad.npz"), &bad).is_err());
        assert!(!dir.path().join("bad.npz").exists());
    }

    #[test]
    fn int64_narrows_and_lies_are_caught() {
        let mut raw = Vec::new();
        for v in [-5i64, 7] {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let b = npy("<i8", "(2,)", false, &raw);
        let a = read_npy(&mut b.as_slice(), b.len() as u64, b.len() as u64).unwrap();
        assert_eq!(a.data, VoxelBuffer::I32(vec![-5, 7]));
        let lie = npy("|u1", "(100000, 100000, 1000)", false, &[0; 16]);
        let e = read_npy(&mut lie.as_slice(), lie.len() as u64, lie.len() as u64).unwrap_err();
        assert!(matches!(e, FormatError::Truncated(_)), "{e}");
    }
}
