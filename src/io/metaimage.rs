//! MetaImage (ITK): .mhd headers with a separate .raw file, and .mha with the data inline,
//! plain or zlib-compressed (`CompressedData = True`).
//!
//! The header is a list of `Key = Value` lines ending with `ElementDataFile`. `Offset` is the
//! LPS origin; `TransformMatrix` lists the direction column by column (the first three numbers
//! are the direction of index axis i), i.e. the transpose of SimpleITK's row-major direction.
//! Written by hand: no maintained Rust crate reads MetaImage.

use super::limits::{check_compressed, check_plain, payload_bytes, to_usize};
use super::{CountingReader, FormatError, IoError, LoadProgress, WithPath};
use crate::volume::{Geometry, SourceFormat, Volume, VolumeMeta, VoxelBuffer, VoxelType};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Longest header we accept before deciding the file is not MetaImage.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The parsed `Key = Value` lines of a MetaImage header, in file order.
#[derive(Clone, Debug, Default)]
pub struct MetaHeader {
    pub fields: HashMap<String, String>,
    /// Byte offset of the first data byte for `ElementDataFile = LOCAL`.
    pub data_offset: u64,
}

impl MetaHeader {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(&key.to_ascii_lowercase()).map(|s| s.as_str())
    }

    fn numbers(&self, key: &str) -> Result<Option<Vec<f64>>, FormatError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        v.split_whitespace()
            .map(|x| x.parse::<f64>().map_err(|_| FormatError::malformed(format!("{key} = {v}: not a list of numbers"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

/// Reads the header lines of a MetaImage file, stopping after `ElementDataFile`.
pub fn read_header(path: &Path) -> Result<MetaHeader, IoError> {
    let file = File::open(path).at(path)?;
    let mut reader = BufReader::new(file.take(MAX_HEADER_BYTES));
    let mut header = MetaHeader::default();
    let mut line = Vec::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).at(path)?;
        if n == 0 {
            return Err(IoError::new(path, FormatError::malformed("no ElementDataFile line: not a MetaImage header")));
        }
        offset += n as u64;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let Some((key, value)) = text.split_once('=') else {
            return Err(IoError::new(path, FormatError::malformed(format!("header line {text:?} is not `Key = Value`"))));
        };
        let key = key.trim().to_ascii_lowercase();
        header.fields.insert(key.clone(), value.trim().to_string());
        if key == "elementdatafile" {
            header.data_offset = offset;
            return Ok(header);
        }
    }
}

/// Reads a .mhd or .mha file into a volume.
pub fn read(path: &Path) -> Result<Volume, IoError> {
    read_with_progress(path, None)
}

/// Like `read`, telling `progress` how many bytes of the data have been read.
pub fn read_with_progress(path: &Path, progress: Option<LoadProgress>) -> Result<Volume, IoError> {
    let header = read_header(path)?;
    let ndims = header.numbers("NDims").at(path)?.and_then(|v| v.first().copied()).unwrap_or(0.0) as usize;
    if !(2..=4).contains(&ndims) {
        return Err(IoError::new(path, FormatError::unsupported(format!("NDims = {ndims} (2, 3 or 4 are read)"))));
    }
    if let Some(ch) = header.get("ElementNumberOfChannels")
        && ch.trim() != "1"
    {
        return Err(IoError::new(path, FormatError::unsupported(format!("ElementNumberOfChannels = {ch} (only scalar images)"))));
    }
    let dim_size = header
        .numbers("DimSize")
        .at(path)?
        .ok_or_else(|| IoError::new(path, FormatError::malformed("no DimSize")))?;
    if dim_size.len() != ndims || dim_size.iter().any(|&d| d < 1.0 || d.fract() != 0.0) {
        return Err(IoError::new(path, FormatError::malformed(format!("DimSize {dim_size:?} does not give {ndims} positive integers"))));
    }
    let ty = element_type(header.get("ElementType").unwrap_or("")).at(path)?;
    let mut dims = [1usize; 3];
    for (d, v) in dims.iter_mut().zip(&dim_size) {
        *d = *v as usize;
    }
    let timepoints = if ndims == 4 { dim_size[3] as usize } else { 1 };
    let geometry = geometry(&header, ndims, dims).at(path)?;
    let needed = payload_bytes(&dim_size.iter().map(|&d| d as u64).collect::<Vec<_>>(), ty.size() as u64).at(path)?;
    let source = locate_data(path, &header, needed)?;
    let mut data = VoxelBuffer::zeros(ty, to_usize(needed / ty.size() as u64).at(path)?);
    read_data(&source, data.as_bytes_mut(), progress)?;
    let big_endian = header.flag("BinaryDataByteOrderMSB") || header.flag("ElementByteOrderMSB");
    if big_endian != cfg!(target_endian = "big") {
        data.swap_bytes();
    }
    let meta = VolumeMeta {
        format: Some(SourceFormat::Metaimage),
        modality: header.get("Modality").map(|m| m.trim_start_matches("MET_MOD_").to_string()),
        description: None,
        stored_type: Some(ty),
        nifti_transform: None,
        warnings: Vec::new(),
    };
    Volume::new(geometry, timepoints, data, meta).map_err(|e| IoError::new(path, FormatError::Invalid(e.to_string())))
}

fn element_type(name: &str) -> Result<VoxelType, FormatError> {
    Ok(match name {
        "MET_UCHAR" => VoxelType::U8,
        "MET_CHAR" => VoxelType::I8,
        "MET_USHORT" => VoxelType::U16,
        "MET_SHORT" => VoxelType::I16,
        "MET_UINT" | "MET_ULONG" => VoxelType::U32,
        "MET_INT" | "MET_LONG" => VoxelType::I32,
        "MET_FLOAT" => VoxelType::F32,
        "MET_DOUBLE" => VoxelType::F64,
        "" => return Err(FormatError::malformed("no ElementType")),
        other => return Err(FormatError::unsupported(format!("ElementType {other}"))),
    })
}

fn geometry(header: &MetaHeader, ndims: usize, dims: [usize; 3]) -> Result<Geometry, FormatError> {
    let pick3 = |v: Option<Vec<f64>>, default: f64| -> [f64; 3] {
        let v = v.unwrap_or_default();
        [0, 1, 2].map(|n| v.get(n).copied().unwrap_or(default))
    };
    let spacing = header.numbers("ElementSpacing")?.or(header.numbers("ElementSize")?);
    let origin = header.numbers("Offset")?.or(header.numbers("Position")?).or(header.numbers("Origin")?);
    let matrix = header.numbers("TransformMatrix")?.or(header.numbers("Rotation")?).or(header.numbers("Orientation")?);
    let mut direction = crate::volume::IDENTITY3;
    if let Some(m) = matrix {
        if m.len() != ndims * ndims {
            return Err(FormatError::malformed(format!("TransformMatrix has {} numbers, NDims {ndims} needs {}", m.len(), ndims * ndims)));
        }
        // Column by column: number n*ndims + r is component r of index axis n.
        let n3 = ndims.min(3);
        for axis in 0..n3 {
            for r in 0..n3 {
                direction[r][axis] = m[axis * ndims + r];
            }
        }
    }
    let g = Geometry { dims, spacing: pick3(spacing, 1.0), origin: pick3(origin, 0.0), direction };
    g.validate().map_err(|e| FormatError::malformed(format!("image geometry: {e}")))?;
    Ok(g)
}

/// Where the voxel bytes are: which file, from which offset, and whether zlib-compressed.
struct DataSource {
    path: std::path::PathBuf,
    offset: u64,
    compressed: bool,
}

/// Finds the data file and checks that it can back `needed` bytes, before anything is allocated.
fn locate_data(path: &Path, header: &MetaHeader, needed: u64) -> Result<DataSource, IoError> {
    let data_file = header.get("ElementDataFile").unwrap_or("");
    let (data_path, offset) = if data_file.eq_ignore_ascii_case("LOCAL") {
        (path.to_path_buf(), header.data_offset)
    } else if data_file.eq_ignore_ascii_case("LIST") || data_file.contains('%') {
        return Err(IoError::new(path, FormatError::unsupported(format!("ElementDataFile = {data_file} (slice lists)"))));
    } else {
        (path.parent().unwrap_or(Path::new(".")).join(data_file), 0)
    };
    let file_len = std::fs::metadata(&data_path).at(&data_path)?.len();
    let compressed = header.flag("CompressedData");
    if compressed {
        check_compressed(needed, file_len.saturating_sub(offset)).at(&data_path)?;
    } else {
        check_plain(needed, offset, file_len).at(&data_path)?;
    }
    Ok(DataSource { path: data_path, offset, compressed })
}

/// Fills `out` from a checked data source, inflating zlib data if needed.
fn read_data(source: &DataSource, out: &mut [u8], progress: Option<LoadProgress>) -> Result<(), IoError> {
    let p = &source.path;
    let mut file = File::open(p).at(p)?;
    let total = file.metadata().at(p)?.len().saturating_sub(source.offset);
    file.seek(SeekFrom::Start(source.offset)).at(p)?;
    let counted = BufReader::with_capacity(1 << 20, CountingReader::new(file, total, progress));
    if source.compressed {
        let mut decoder = flate2::read::ZlibDecoder::new(counted);
        decoder.read_exact(out).map_err(|e| inflate_error(e, out.len() as u64)).at(p)?;
    } else {
        let mut counted = counted;
        counted.read_exact(out).at(p)?;
    }
    Ok(())
}

fn inflate_error(e: std::io::Error, needed: u64) -> FormatError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            FormatError::truncated(format!("the compressed data ends before the {needed} bytes DimSize promises"))
        }
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => FormatError::malformed(format!("corrupt zlib data: {e}")),
        _ => FormatError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_mha(dir: &Path, name: &str, header: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.write_all(data).unwrap();
        p
    }

    #[test]
    fn transform_matrix_is_read_column_by_column() {
        let dir = tempfile::tempdir().unwrap();
        let h = "ObjectType = Image\nNDims = 3\nDimSize = 2 1 1\nElementSpacing = 1 2 3\nOffset = 5 6 7\n\
                 TransformMatrix = 0 1 0 0 0 -1 -1 0 0\nElementType = MET_USHORT\nElementDataFile = LOCAL\n";
        let p = write_mha(dir.path(), "a.mha", h, &[1, 0, 2, 0]);
        let v = read(&p).unwrap();
        assert_eq!(v.geometry.direction_row_major(), [0., 0., -1., 1., 0., 0., 0., -1., 0.]);
        assert_eq!(v.geometry.origin, [5.0, 6.0, 7.0]);
        assert_eq!(v.data, VoxelBuffer::U16(vec![1, 2]));
    }

    #[test]
    fn short_data_and_huge_dims_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let h = "NDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementDataFile = LOCAL\n";
        let p = write_mha(dir.path(), "short.mha", h, &[0; 10]);
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let h = "NDims = 3\nDimSize = 30000 30000 30000\nElementType = MET_SHORT\nCompressedData = True\nElementDataFile = LOCAL\n";
        let p = write_mha(dir.path(), "huge.mha", h, &[0; 100]);
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let p = write_mha(dir.path(), "junk.mha", "hello\n", &[]);
        assert!(read(&p).is_err());
    }
}
