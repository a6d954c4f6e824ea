//! NIfTI-1 and NIfTI-2: .nii, .nii.gz and .hdr/.img pairs, read and write.
//!
//! Written here rather than through the `nifti` crate because the reader must check every
//! header size against the bytes the file can back before allocating, read NIfTI-2, decode
//! gzip data straight into the typed voxel buffer (in parallel, `io::gzip`), and keep
//! qform/sform exactly on write (the crate allocates what the header says, reads NIfTI-1 only,
//! and forces scl on write).
//! The `nifti` crate stays as an independent second reader in the tests.
//!
//! Geometry follows nibabel's `get_best_affine`: the sform when sform_code > 0, else the qform
//! (quaternion, pixdim, qfac) when qform_code > 0, else nibabel's base affine from pixdim.

use super::atomic::AtomicFile;
use super::limits::{check_compressed, check_plain, payload_bytes, to_usize};
use super::{CountingReader, FormatError, IoError, LoadProgress, WithPath, gzip};
use crate::volume::{Geometry, Rescale, SourceFormat, Volume, VolumeMeta, VoxelBuffer, VoxelType, det3};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

const NIFTI1_HEADER: usize = 348;
const NIFTI2_HEADER: usize = 540;

pub use crate::volume::NiftiTransform;

/// A parsed NIfTI header (either version), with the numbers widened to 64 bits.
#[derive(Clone, Debug, PartialEq)]
pub struct NiftiHeader {
    pub version: u8,
    pub big_endian: bool,
    /// dim[0..8] as stored.
    pub dim: [i64; 8],
    pub datatype: i16,
    pub bitpix: i16,
    pub vox_offset: f64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub intent_code: i32,
    pub descrip: String,
    /// True for a single-file image (magic "n+1"/"n+2"), false for a .hdr/.img pair.
    pub single_file: bool,
    pub transform: NiftiTransform,
}

/// Reads a NIfTI file into a volume (all timepoints of a 4D file).
pub fn read(path: &Path) -> Result<Volume, IoError> {
    read_with_progress(path, None)
}

/// Like `read`, telling `progress` how many bytes of the (possibly compressed) data file have
/// been read.
pub fn read_with_progress(path: &Path, progress: Option<LoadProgress>) -> Result<Volume, IoError> {
    let (header, stream, data_path) = open_stream(path, progress.clone())?;
    let shape = header.shape().at(path)?;
    let ty = header.voxel_type().at(path)?;
    let needed = payload_bytes(&[shape.0[0] as u64, shape.0[1] as u64, shape.0[2] as u64, shape.1 as u64], ty.size() as u64)
        .at(path)?;
    // Bound the allocation by what the data file can back.
    let data_len = std::fs::metadata(&data_path).at(&data_path)?.len();
    let offset = if header.single_file { header.vox_offset as u64 } else { 0 };
    if stream.compressed {
        check_compressed(needed, data_len).at(&data_path)?;
    } else {
        check_plain(needed, offset, data_len).at(&data_path)?;
    }
    let len = to_usize(needed / ty.size() as u64).at(path)?;
    let mut data = VoxelBuffer::zeros(ty, len);
    if stream.compressed {
        // Decoded in parallel from a mapping; anything unusual (several gzip members, corrupt
        // or short data) is read again through flate2, whose errors are the ones reported.
        drop(stream);
        if gzip::decode_file(&data_path, offset, data.as_bytes_mut(), &gzip::ParallelPlan::default(), progress.as_ref()).is_err() {
            let (_, stream, _) = open_stream(path, progress)?;
            read_stream_data(stream, offset, data.as_bytes_mut(), needed).at(&data_path)?;
        }
    } else {
        read_stream_data(stream, offset, data.as_bytes_mut(), needed).at(&data_path)?;
    }
    if header.big_endian != cfg!(target_endian = "big") {
        data.swap_bytes();
    }
    let stored_type = data.voxel_type();
    let data = Rescale::from_header(header.scl_slope, header.scl_inter).apply(data);
    let geometry = header.geometry(shape.0).at(path)?;
    let meta = VolumeMeta {
        format: Some(SourceFormat::Nifti),
        modality: None,
        description: (!header.descrip.is_empty()).then(|| header.descrip.clone()),
        stored_type: Some(stored_type),
        nifti_transform: Some(header.transform.clone()),
        warnings: Vec::new(),
    };
    Volume::new(geometry, shape.1, data, meta).map_err(|e| IoError::new(path, FormatError::Invalid(e.to_string())))
}

/// Reads `out` from `stream` starting at decompressed offset `offset`, then (for gzip data)
/// the rest of the stream so that its CRC and length are checked.
fn read_stream_data(mut stream: DataStream, offset: u64, out: &mut [u8], needed: u64) -> Result<(), FormatError> {
    stream.skip_to(offset)?;
    stream.read_exact_or_truncated(out, needed)?;
    stream.finish()
}

/// Reads only the header of a NIfTI file.
pub fn read_header(path: &Path) -> Result<NiftiHeader, IoError> {
    open_stream(path, None).map(|(h, _, _)| h)
}

/// A byte stream over the voxel data, plain or gzip-compressed, that tracks its position.
struct DataStream {
    reader: Box<dyn Read>,
    position: u64,
    compressed: bool,
}

impl DataStream {
    fn open(path: &Path, progress: Option<LoadProgress>) -> Result<Self, FormatError> {
        let mut file = File::open(path)?;
        let total = file.metadata()?.len();
        let mut magic = [0u8; 2];
        let n = read_up_to(&mut file, &mut magic)?;
        drop(file);
        let file = BufReader::with_capacity(1 << 20, CountingReader::new(File::open(path)?, total, progress));
        let compressed = n == 2 && magic == [0x1f, 0x8b];
        let reader: Box<dyn Read> = if compressed { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) };
        Ok(DataStream { reader, position: 0, compressed })
    }

    fn read_exact_or_truncated(&mut self, buf: &mut [u8], needed: u64) -> Result<(), FormatError> {
        let got = read_up_to(&mut self.reader, buf).map_err(|e| truncation_error(e, self.position, needed))?;
        self.position += got as u64;
        if got < buf.len() {
            return Err(FormatError::truncated(format!(
                "the data ends after {got} of the {needed} bytes the header promises"
            )));
        }
        Ok(())
    }

    fn skip_to(&mut self, offset: u64) -> Result<(), FormatError> {
        if offset < self.position {
            return Err(FormatError::malformed(format!("vox_offset {offset} lies inside the header")));
        }
        let want = offset - self.position;
        let skipped = std::io::copy(&mut (&mut self.reader).take(want), &mut std::io::sink())
            .map_err(|e| truncation_error(e, self.position, want))?;
        self.position += skipped;
        if skipped < want {
            return Err(FormatError::truncated(format!("the file ends before the voxel data at offset {offset}")));
        }
        Ok(())
    }

    /// For gzip data, reads what is left so that the CRC and length of the stream are checked.
    fn finish(mut self) -> Result<(), FormatError> {
        if self.compressed {
            std::io::copy(&mut self.reader, &mut std::io::sink()).map_err(|e| truncation_error(e, self.position, 0))?;
        }
        Ok(())
    }
}

fn truncation_error(e: std::io::Error, position: u64, needed: u64) -> FormatError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FormatError::truncated(format!(
            "the compressed stream ends early (after {position} bytes{})",
            if needed > 0 { format!(", {needed} needed") } else { String::new() }
        )),
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
            FormatError::malformed(format!("corrupt compressed data after {position} bytes: {e}"))
        }
        _ => FormatError::Io(e),
    }
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Opens the header, parses it, and returns a stream positioned after it over the data file
/// (the same file for .nii, the .img for a .hdr/.img pair).
fn open_stream(path: &Path, progress: Option<LoadProgress>) -> Result<(NiftiHeader, DataStream, PathBuf), IoError> {
    let header_path = header_path_for(path);
    let mut stream = DataStream::open(&header_path, progress.clone()).at(&header_path)?;
    let mut bytes = vec![0u8; NIFTI2_HEADER];
    let got = read_up_to(&mut stream.reader, &mut bytes[..4]).map_err(|e| truncation_error(e, 0, 4)).at(&header_path)?;
    if got < 4 {
        return Err(IoError::new(&header_path, FormatError::truncated("the file is shorter than a NIfTI header")));
    }
    let size_le = i32::from_le_bytes(bytes[..4].try_into().unwrap());
    let size_be = i32::from_be_bytes(bytes[..4].try_into().unwrap());
    let header_len = match (size_le, size_be) {
        (348, _) | (_, 348) => NIFTI1_HEADER,
        (540, _) | (_, 540) => NIFTI2_HEADER,
        _ => {
            return Err(IoError::new(
                &header_path,
                FormatError::malformed(format!(
                    "sizeof_hdr is {size_le}: not a NIfTI-1 (348) or NIfTI-2 (540) header"
                )),
            ));
        }
    };
    let got = read_up_to(&mut stream.reader, &mut bytes[4..header_len])
        .map_err(|e| truncation_error(e, 4, header_len as u64))
        .at(&header_path)?;
    if got < header_len - 4 {
        return Err(IoError::new(&header_path, FormatError::truncated("the file ends inside the NIfTI header")));
    }
    stream.position = header_len as u64;
    let header = NiftiHeader::parse(&bytes[..header_len]).at(&header_path)?;
    if header.single_file {
        return Ok((header, stream, header_path));
    }
    let image_path = image_path_for(&header_path)
        .ok_or_else(|| IoError::new(&header_path, FormatError::malformed("a .hdr/.img header (magic ni1) needs a .hdr file name")))?;
    let data = DataStream::open(&image_path, progress).at(&image_path)?;
    Ok((header, data, image_path))
}

/// For an .img file, its .hdr; otherwise the path itself.
fn header_path_for(path: &Path) -> PathBuf {
    let name = path.to_string_lossy();
    for (img, hdr) in [(".img.gz", ".hdr.gz"), (".img", ".hdr")] {
        if let Some(stem) = name.strip_suffix(img) {
            let gz = PathBuf::from(format!("{stem}{hdr}"));
            if gz.exists() {
                return gz;
            }
            return PathBuf::from(format!("{stem}.hdr"));
        }
    }
    path.to_path_buf()
}

fn image_path_for(header: &Path) -> Option<PathBuf> {
    let name = header.to_string_lossy();
    let stem = name.strip_suffix(".hdr.gz").or_else(|| name.strip_suffix(".hdr"))?;
    let plain = PathBuf::from(format!("{stem}.img"));
    let gz = PathBuf::from(format!("{stem}.img.gz"));
    Some(if !plain.exists() && gz.exists() { gz } else { plain })
}

/// Little helper to read fixed-offset fields in either byte order.
struct Fields<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Fields<'_> {
    fn arr<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a: [u8; N] = self.bytes[at..at + N].try_into().unwrap();
        if self.big_endian {
            a.reverse();
        }
        a
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.arr(at))
    }
    fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.arr(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.arr(at))
    }
    fn f32(&self, at: usize) -> f64 {
        f32::from_le_bytes(self.arr(at)) as f64
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.arr(at))
    }
    fn text(&self, at: usize, len: usize) -> String {
        let raw = &self.bytes[at..at + len];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(len);
        String::from_utf8_lossy(&raw[..end]).trim().to_string()
    }
}

impl NiftiHeader {
    /// Parses a 348-byte NIfTI-1 or 540-byte NIfTI-2 header.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let le = i32::from_le_bytes(bytes[..4].try_into().unwrap());
        let big_endian = !(le == 348 || le == 540);
        let f = Fields { bytes, big_endian };
        if bytes.len() == NIFTI1_HEADER {
            let magic = &bytes[344..348];
            let single_file = match magic {
                b"n+1\0" => true,
                b"ni1\0" => false,
                _ => return Err(FormatError::malformed(format!("bad NIfTI-1 magic {magic:?} (expected \"n+1\" or \"ni1\")"))),
            };
            let mut dim = [0i64; 8];
            for (n, d) in dim.iter_mut().enumerate() {
                *d = f.i16(40 + 2 * n) as i64;
            }
            let pixdim: Vec<f64> = (0..8).map(|n| f.f32(76 + 4 * n)).collect();
            let row = |at: usize| [f.f32(at), f.f32(at + 4), f.f32(at + 8), f.f32(at + 12)];
            Ok(NiftiHeader {
                version: 1,
                big_endian,
                dim,
                datatype: f.i16(70),
                bitpix: f.i16(72),
                vox_offset: f.f32(108),
                scl_slope: f.f32(112),
                scl_inter: f.f32(116),
                intent_code: f.i16(68) as i32,
                descrip: f.text(148, 80),
                single_file,
                transform: NiftiTransform {
                    qform_code: f.i16(252) as i32,
                    sform_code: f.i16(254) as i32,
                    quatern: [f.f32(256), f.f32(260), f.f32(264)],
                    qoffset: [f.f32(268), f.f32(272), f.f32(276)],
                    pixdim: [pixdim[0], pixdim[1], pixdim[2], pixdim[3]],
                    srow: [row(280), row(296), row(312)],
                    xyzt_units: bytes[123] as i32,
                    time_step: pixdim[4],
                },
            })
        } else {
            let magic = &bytes[4..12];
            let single_file = match magic {
                b"n+2\0\r\n\x1a\n" => true,
                b"ni2\0\r\n\x1a\n" => false,
                _ => return Err(FormatError::malformed(format!("bad NIfTI-2 magic {magic:?}"))),
            };
            let mut dim = [0i64; 8];
            for (n, d) in dim.iter_mut().enumerate() {
                *d = f.i64(16 + 8 * n);
            }
            let pixdim: Vec<f64> = (0..8).map(|n| f.f64(104 + 8 * n)).collect();
            let row = |at: usize| [f.f64(at), f.f64(at + 8), f.f64(at + 16), f.f64(at + 24)];
            Ok(NiftiHeader {
                version: 2,
                big_endian,
                dim,
                datatype: f.i16(12),
                bitpix: f.i16(14),
                vox_offset: f.i64(168) as f64,
                scl_slope: f.f64(176),
                scl_inter: f.f64(184),
                intent_code: f.i32(504),
                descrip: f.text(240, 80),
                single_file,
                transform: NiftiTransform {
                    qform_code: f.i32(344),
                    sform_code: f.i32(348),
                    quatern: [f.f64(352), f.f64(360), f.f64(368)],
                    qoffset: [f.f64(376), f.f64(384), f.f64(392)],
                    pixdim: [pixdim[0], pixdim[1], pixdim[2], pixdim[3]],
                    srow: [row(400), row(432), row(464)],
                    xyzt_units: f.i32(500),
                    time_step: pixdim[4],
                },
            })
        }
    }

    /// The voxel type from `datatype`, checked against `bitpix`.
    pub fn voxel_type(&self) -> Result<VoxelType, FormatError> {
        let ty = match self.datatype {
            2 => VoxelType::U8,
            4 => VoxelType::I16,
            8 => VoxelType::I32,
            16 => VoxelType::F32,
            64 => VoxelType::F64,
            256 => VoxelType::I8,
            512 => VoxelType::U16,
            768 => VoxelType::U32,
            code => {
                let name = match code {
                    1 => "binary",
                    32 => "complex64",
                    128 => "RGB24",
                    1024 => "int64",
                    1280 => "uint64",
                    1536 => "float128",
                    1792 => "complex128",
                    2048 => "complex256",
                    2304 => "RGBA32",
                    _ => "unknown",
                };
                return Err(FormatError::unsupported(format!("NIfTI datatype {code} ({name})")));
            }
        };
        if self.bitpix as usize != ty.size() * 8 {
            return Err(FormatError::malformed(format!(
                "bitpix {} does not match datatype {} ({} bits)",
                self.bitpix,
                self.datatype,
                ty.size() * 8
            )));
        }
        Ok(ty)
    }

    /// Spatial dims (x, y, z) and the number of timepoints; dimensions above 4 must be 1.
    pub fn shape(&self) -> Result<([usize; 3], usize), FormatError> {
        let ndim = self.dim[0];
        if !(1..=7).contains(&ndim) {
            return Err(FormatError::malformed(format!("dim[0] = {ndim} (must be 1..7)")));
        }
        let mut d = [1i64; 7];
        for n in 0..ndim as usize {
            d[n] = self.dim[n + 1];
            if d[n] < 1 {
                return Err(FormatError::malformed(format!("dim[{}] = {} (must be at least 1)", n + 1, d[n])));
            }
        }
        if d[4..].iter().any(|&x| x != 1) {
            return Err(FormatError::unsupported(format!("a {ndim}D image with dims {:?} (only 3D and 4D)", &self.dim[1..=ndim as usize])));
        }
        let u = |x: i64| usize::try_from(x).map_err(|_| FormatError::TooLarge(format!("dimension {x}")));
        if !self.vox_offset.is_finite() || self.vox_offset < 0.0 || self.vox_offset.fract() != 0.0 {
            return Err(FormatError::malformed(format!("vox_offset {} is not a byte offset", self.vox_offset)));
        }
        if self.single_file && self.vox_offset < (if self.version == 1 { NIFTI1_HEADER } else { NIFTI2_HEADER }) as f64 {
            return Err(FormatError::malformed(format!("vox_offset {} lies inside the header", self.vox_offset)));
        }
        Ok(([u(d[0])?, u(d[1])?, u(d[2])?], u(d[3])?))
    }

    /// The geometry in LPS following nibabel's choice of sform, qform or base affine.
    pub fn geometry(&self, dims: [usize; 3]) -> Result<Geometry, FormatError> {
        let t = &self.transform;
        let ras = if t.sform_code > 0 {
            let mut m = [[0.0; 4]; 4];
            for r in 0..3 {
                m[r] = t.srow[r];
            }
            m[3][3] = 1.0;
            m
        } else if t.qform_code > 0 {
            qform_affine(t)
        } else {
            base_affine(dims, t)
        };
        Geometry::from_affine_ras(dims, &ras).map_err(|e| FormatError::malformed(format!("the image transform is unusable: {e}")))
    }
}

/// The qform affine (RAS) from quaternion, offsets, pixdim and qfac, as nifti1_io computes it.
pub fn qform_affine(t: &NiftiTransform) -> [[f64; 4]; 4] {
    let [mut b, mut c, mut d] = t.quatern;
    let sum = b * b + c * c + d * d;
    let a = if sum > 1.0 {
        // Not a unit quaternion: nifti1_io normalises (b, c, d) and takes a = 0.
        let n = sum.sqrt();
        b /= n;
        c /= n;
        d /= n;
        0.0
    } else {
        (1.0 - sum).sqrt()
    };
    let qfac = if t.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let zooms = [t.pixdim[1].abs(), t.pixdim[2].abs(), t.pixdim[3].abs() * qfac];
    let r = [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ];
    let mut m = [[0.0; 4]; 4];
    for row in 0..3 {
        for col in 0..3 {
            m[row][col] = r[row][col] * zooms[col];
        }
        m[row][3] = t.qoffset[row];
    }
    m[3][3] = 1.0;
    m
}

/// nibabel's affine for files with neither qform nor sform: x flipped, centred on the grid.
fn base_affine(dims: [usize; 3], t: &NiftiTransform) -> [[f64; 4]; 4] {
    let z = [t.pixdim[1], t.pixdim[2], t.pixdim[3]].map(|v| if v.abs() > 0.0 { v.abs() } else { 1.0 });
    let centre = dims.map(|n| (n as f64 - 1.0) / 2.0);
    [
        [-z[0], 0.0, 0.0, centre[0] * z[0]],
        [0.0, z[1], 0.0, -centre[1] * z[1]],
        [0.0, 0.0, z[2], -centre[2] * z[2]],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// The quaternion parameters (b, c, d), offsets and qfac that represent a RAS affine
/// (rotation part orthogonalised), as nifti1_io's mat44_to_quatern does.
pub fn quaternion_from_affine(m: &[[f64; 4]; 4]) -> ([f64; 3], [f64; 3], f64, [f64; 3]) {
    let mut cols = [[0.0; 3]; 3];
    let mut zooms = [0.0; 3];
    for c in 0..3 {
        let v = [m[0][c], m[1][c], m[2][c]];
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        zooms[c] = if n > 0.0 { n } else { 1.0 };
        cols[c] = if n > 0.0 { v.map(|x| x / n) } else { [(c == 0) as u8 as f64, (c == 1) as u8 as f64, (c == 2) as u8 as f64] };
    }
    let mut r = [[0.0; 3]; 3];
    for row in 0..3 {
        for c in 0..3 {
            r[row][c] = cols[c][row];
        }
    }
    let r = orthonormalise(r);
    let mut r = r;
    let qfac = if det3(&r) < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    // Rotation matrix to quaternion (Shepperd's method, as in nifti1_io).
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (a, b, c, d);
    if trace > 0.5 {
        let aa = 0.5 * trace.sqrt();
        a = aa;
        b = 0.25 * (r[2][1] - r[1][2]) / aa;
        c = 0.25 * (r[0][2] - r[2][0]) / aa;
        d = 0.25 * (r[1][0] - r[0][1]) / aa;
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            let bb = 0.5 * xd.sqrt();
            b = bb;
            c = 0.25 * (r[0][1] + r[1][0]) / bb;
            d = 0.25 * (r[0][2] + r[2][0]) / bb;
            a = 0.25 * (r[2][1] - r[1][2]) / bb;
        } else if yd > 1.0 {
            let cc = 0.5 * yd.sqrt();
            c = cc;
            b = 0.25 * (r[0][1] + r[1][0]) / cc;
            d = 0.25 * (r[1][2] + r[2][1]) / cc;
            a = 0.25 * (r[0][2] - r[2][0]) / cc;
        } else {
            let dd = 0.5 * zd.sqrt();
            d = dd;
            b = 0.25 * (r[0][2] + r[2][0]) / dd;
            c = 0.25 * (r[1][2] + r[2][1]) / dd;
            a = 0.25 * (r[1][0] - r[0][1]) / dd;
        }
    }
    let (b, c, d) = if a < 0.0 { (-b, -c, -d) } else { (b, c, d) };
    ([b, c, d], [m[0][3], m[1][3], m[2][3]], qfac, zooms)
}

/// The nearest orthonormal matrix (polar decomposition by Newton iteration).
fn orthonormalise(mut r: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    for _ in 0..20 {
        let Some(inv) = crate::volume::invert3(&r) else { return r };
        let mut next = [[0.0; 3]; 3];
        let mut change = 0.0f64;
        for row in 0..3 {
            for c in 0..3 {
                // 0.5 * (R + R^-T)
                next[row][c] = 0.5 * (r[row][c] + inv[c][row]);
                change = change.max((next[row][c] - r[row][c]).abs());
            }
        }
        r = next;
        if change < 1e-15 {
            break;
        }
    }
    r
}

/// How a volume is stored when written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NiftiKind {
    /// An intensity image.
    Image,
    /// A label map (intent "label", integer values).
    LabelMap,
}

/// Writes a volume as NIfTI-1 (.nii, or gzip-compressed when the name ends in .gz), replacing
/// `path` atomically. When the volume came from NIfTI and its geometry is unchanged, its
/// qform and sform are written back exactly; otherwise both are derived from the geometry.
pub fn write(path: &Path, volume: &Volume, kind: NiftiKind) -> Result<(), IoError> {
    // NIfTI-1 stores each dimension as an i16.
    let sizes = [volume.geometry.dims[0], volume.geometry.dims[1], volume.geometry.dims[2], volume.timepoints];
    if sizes.iter().any(|&n| n > i16::MAX as usize) {
        let what = format!("{sizes:?} (x, y, z, t) exceeds NIfTI-1's 32767 per dimension");
        return Err(IoError::new(path, FormatError::TooLarge(what)));
    }
    let header = header_for(volume, kind);
    let gz = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    let mut file = AtomicFile::create(path).at(path)?;
    let result = (|| -> std::io::Result<()> {
        if gz {
            let mut enc = flate2::write::GzEncoder::new(file.writer(), flate2::Compression::new(1));
            enc.write_all(&header)?;
            enc.write_all(volume.data.as_bytes())?;
            enc.finish()?;
        } else {
            let w = file.writer();
            w.write_all(&header)?;
            w.write_all(volume.data.as_bytes())?;
        }
        Ok(())
    })();
    result.at(path)?;
    file.commit().at(path)
}

/// The 352 bytes (header + empty extension flag) that start a NIfTI-1 file for `volume`.
pub fn header_for(volume: &Volume, kind: NiftiKind) -> Vec<u8> {
    let g = &volume.geometry;
    let ty = volume.voxel_type();
    let transform = match &volume.meta.nifti_transform {
        Some(t) if transform_matches(t, g) => t.clone(),
        _ => derived_transform(g, volume.timepoints),
    };
    let datatype: i16 = match ty {
        VoxelType::U8 => 2,
        VoxelType::I16 => 4,
        VoxelType::I32 => 8,
        VoxelType::F32 => 16,
        VoxelType::F64 => 64,
        VoxelType::I8 => 256,
        VoxelType::U16 => 512,
        VoxelType::U32 => 768,
    };
    let mut h = vec![0u8; NIFTI1_HEADER + 4];
    let put = |h: &mut Vec<u8>, at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut h, 0, &348i32.to_le_bytes());
    let ndim: i16 = if volume.timepoints > 1 { 4 } else { 3 };
    let dims = [ndim, g.dims[0] as i16, g.dims[1] as i16, g.dims[2] as i16, volume.timepoints as i16, 1, 1, 1];
    for (n, d) in dims.iter().enumerate() {
        put(&mut h, 40 + 2 * n, &d.to_le_bytes());
    }
    let intent: i16 = if kind == NiftiKind::LabelMap { 1002 } else { 0 };
    put(&mut h, 68, &intent.to_le_bytes());
    put(&mut h, 70, &datatype.to_le_bytes());
    put(&mut h, 72, &((ty.size() * 8) as i16).to_le_bytes());
    let pixdim = [
        transform.pixdim[0] as f32,
        transform.pixdim[1] as f32,
        transform.pixdim[2] as f32,
        transform.pixdim[3] as f32,
        if volume.timepoints > 1 { transform.time_step as f32 } else { 1.0 },
        1.0,
        1.0,
        1.0,
    ];
    for (n, p) in pixdim.iter().enumerate() {
        put(&mut h, 76 + 4 * n, &p.to_le_bytes());
    }
    put(&mut h, 108, &352f32.to_le_bytes());
    put(&mut h, 112, &1f32.to_le_bytes());
    put(&mut h, 116, &0f32.to_le_bytes());
    h[123] = transform.xyzt_units as u8;
    let descrip = match kind {
        NiftiKind::LabelMap => "MedSAM Viewer label map",
        NiftiKind::Image => "MedSAM Viewer",
    };
    put(&mut h, 148, descrip.as_bytes());
    put(&mut h, 252, &(transform.qform_code as i16).to_le_bytes());
    put(&mut h, 254, &(transform.sform_code as i16).to_le_bytes());
    for n in 0..3 {
        put(&mut h, 256 + 4 * n, &(transform.quatern[n] as f32).to_le_bytes());
        put(&mut h, 268 + 4 * n, &(transform.qoffset[n] as f32).to_le_bytes());
    }
    for (r, row) in transform.srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(&mut h, 280 + 16 * r + 4 * c, &(*v as f32).to_le_bytes());
        }
    }
    if kind == NiftiKind::LabelMap {
        put(&mut h, 328, b"labels");
    }
    put(&mut h, 344, b"n+1\0");
    h
}

/// Whether a stored NIfTI transform still describes `g` (same dims and affine to 1e-4 mm).
fn transform_matches(t: &NiftiTransform, g: &Geometry) -> bool {
    let header = NiftiHeader {
        version: 1,
        big_endian: false,
        dim: [3, 1, 1, 1, 1, 1, 1, 1],
        datatype: 2,
        bitpix: 8,
        vox_offset: 352.0,
        scl_slope: 1.0,
        scl_inter: 0.0,
        intent_code: 0,
        descrip: String::new(),
        single_file: true,
        transform: t.clone(),
    };
    let Ok(stored) = header.geometry(g.dims) else { return false };
    let (a, b) = (stored.affine_lps(), g.affine_lps());
    (0..3).all(|r| (0..4).all(|c| (a[r][c] - b[r][c]).abs() < 1e-4))
}

/// qform and sform (both code 1, scanner) derived from a geometry.
fn derived_transform(g: &Geometry, timepoints: usize) -> NiftiTransform {
    let ras = g.affine_ras();
    let (quatern, qoffset, qfac, _) = quaternion_from_affine(&ras);
    NiftiTransform {
        qform_code: 1,
        sform_code: 1,
        quatern,
        qoffset,
        pixdim: [qfac, g.spacing[0], g.spacing[1], g.spacing[2]],
        srow: [ras[0], ras[1], ras[2]],
        xyzt_units: if timepoints > 1 { 2 | 8 } else { 2 },
        time_step: 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry_close(a: &Geometry, b: &Geometry, tol: f64) {
        let (ma, mb) = (a.affine_lps(), b.affine_lps());
        for r in 0..3 {
            for c in 0..4 {
                assert!((ma[r][c] - mb[r][c]).abs() < tol, "{ma:?} vs {mb:?}");
            }
        }
    }

    #[test]
    fn dimensions_beyond_an_i16_are_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let g = Geometry::new([40_000, 1, 1], [1.0; 3], [0.0; 3]);
        let volume = Volume::new(g, 1, VoxelBuffer::U8(vec![0; 40_000]), VolumeMeta::default()).unwrap();
        let path = dir.path().join("wide.nii");
        let e = write(&path, &volume, NiftiKind::Image).unwrap_err().to_string();
        assert!(e.contains("32767") && e.contains("wide.nii"), "{e}");
        assert!(!path.exists(), "nothing is left behind");
    }

    #[test]
    fn derived_qform_reproduces_oblique_geometry() {
        for det_sign in [1.0, -1.0] {
            let (s20, c20) = (20f64.to_radians().sin(), 20f64.to_radians().cos());
            let dir = [[c20, -s20, 0.0], [s20, c20, 0.0], [0.0, 0.0, det_sign]];
            let g = Geometry { dims: [4, 5, 6], spacing: [1.2, 0.9, 2.5], origin: [3.0, -7.0, 11.0], direction: dir };
            let t = derived_transform(&g, 1);
            let mut q = t.clone();
            q.sform_code = 0;
            let h = NiftiHeader::parse(&write_header_only(&q)).unwrap();
            geometry_close(&h.geometry(g.dims).unwrap(), &g, 1e-5);
            assert_eq!(t.pixdim[0], det_sign);
        }
    }

    fn write_header_only(t: &NiftiTransform) -> Vec<u8> {
        let g = Geometry::new([4, 5, 6], [1.0; 3], [0.0; 3]);
        let mut v = Volume::new(g, 1, VoxelBuffer::U8(vec![0; 120]), VolumeMeta::default()).unwrap();
        v.meta.nifti_transform = Some(t.clone());
        // Force the stored transform through by making the geometry agree with it.
        let h = NiftiHeader { version: 1, big_endian: false, dim: [3, 4, 5, 6, 1, 1, 1, 1], datatype: 2, bitpix: 8,
            vox_offset: 352.0, scl_slope: 1.0, scl_inter: 0.0, intent_code: 0, descrip: String::new(), single_file: true,
            transform: t.clone() };
        v.geometry = h.geometry([4, 5, 6]).unwrap();
        header_for(&v, NiftiKind::Image)[..NIFTI1_HEADER].to_vec()
    }

    #[test]
    fn bad_headers_are_errors() {
        let mut bytes = vec![0u8; NIFTI1_HEADER];
        bytes[..4].copy_from_slice(&348i32.to_le_bytes());
        bytes[344..348].copy_from_slice(b"xyz\0");
        assert!(NiftiHeader::parse(&bytes).is_err());
        bytes[344..348].copy_from_slice(b"n+1\0");
        let h = NiftiHeader::parse(&bytes).unwrap();
        assert!(h.shape().is_err(), "dim[0] = 0 is rejected");
        assert!(h.voxel_type().is_err(), "datatype 0 is rejected");
    }
}
