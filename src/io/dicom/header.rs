//! First pass over one DICOM file: the attributes that group it into a series, place its
//! frames in space and describe its pixels, and where its pixel data lies.
//!
//! Before dicom-object reads anything, a walk over the file with dicom-parser's lazy reader
//! (values skipped, never read) checks every declared value length against the bytes left in
//! the file, so a corrupt length cannot make the parser allocate gigabytes, and it records the
//! byte offset of native Pixel Data so that the second pass reads samples straight into the
//! volume. The attributes themselves come from dicom-object, read up to (not including)
//! Pixel Data. Deflated data sets are walked the same way as they inflate (`check_deflated`).

use crate::io::FormatError;
use crate::io::limits::MAX_DEFLATE_RATIO;
use crate::volume::Rescale;
use dicom::core::{Tag, VR};
use dicom::dictionary_std::{tags, uids};
use dicom::encoding::transfer_syntax::{Codec, Endianness, TransferSyntax, TransferSyntaxIndex};
use dicom::object::file::ReadPreamble;
use dicom::object::mem::InMemElement;
use dicom::object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom::parser::StatefulDecode;
use dicom::parser::dataset::LazyDataToken;
use dicom::parser::dataset::lazy_read::LazyDataSetReader;
use dicom::transfer_syntax::TransferSyntaxRegistry;
use flate2::read::DeflateDecoder;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where the pixel data of a file lies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PixelLocation {
    /// Uncompressed samples: `length` bytes at byte `offset` of the file.
    Native { offset: u64, length: u64, big_endian: bool },
    /// Encapsulated (compressed) pixel data, or a deflated data set: decoded from the whole
    /// file through dicom-object and dicom-pixeldata.
    Encoded,
    /// The file has no Pixel Data element.
    Absent,
}

/// A file's header as dicom-object read it, plus what the walk found.
pub struct Header {
    pub file_len: u64,
    pub transfer_syntax: &'static TransferSyntax,
    pub pixels: PixelLocation,
    pub object: DefaultDicomObject,
}

/// Why a file's header could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// No "DICM" marker: not a DICOM Part 10 file (folders may hold other files).
    NotDicom,
    Format(FormatError),
}

impl From<FormatError> for HeaderError {
    fn from(e: FormatError) -> Self {
        HeaderError::Format(e)
    }
}

impl From<std::io::Error> for HeaderError {
    fn from(e: std::io::Error) -> Self {
        HeaderError::Format(FormatError::Io(e))
    }
}

impl From<HeaderError> for FormatError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::NotDicom => FormatError::unsupported(
                "not a DICOM file (no \"DICM\" marker at byte 128 or 0, and no data set of group 0008 at byte 0)",
            ),
            HeaderError::Format(e) => e,
        }
    }
}

/// Joins an error and its sources into one line (dicom-rs errors keep the cause in `source`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Reads the header of a DICOM file up to its pixel data, after checking every length in it.
pub fn read_header(path: &Path) -> Result<Header, HeaderError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut source = BufReader::with_capacity(16 << 10, &file);
    let magic_at = match find_magic(&mut source) {
        Err(HeaderError::NotDicom) => return read_bare_data_set(&mut source, file_len),
        found => found?,
    };
    let (transfer_syntax, meta_end) = read_meta_group(&mut source, magic_at, file_len)?;
    let pixels = match transfer_syntax.codec() {
        Codec::Dataset(_) => {
            check_deflated(&mut source, meta_end, file_len)?;
            PixelLocation::Encoded
        }
        Codec::None | Codec::EncapsulatedPixelData(..) => locate_pixels(&mut source, transfer_syntax, meta_end, file_len)?,
    };
    source.seek(SeekFrom::Start(magic_at))?;
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(&mut source)
        .map_err(|e| FormatError::malformed(error_chain(&e)))?;
    Ok(Header { file_len, transfer_syntax, pixels, object })
}

/// Walks a data set on disk from byte `start`, checking every length, to where its pixel data lies.
fn locate_pixels(
    source: &mut BufReader<&File>,
    transfer_syntax: &TransferSyntax,
    start: u64,
    file_len: u64,
) -> Result<PixelLocation, FormatError> {
    source.seek(SeekFrom::Start(start))?;
    let big_endian = transfer_syntax.endianness() == Endianness::Big;
    Ok(match walk_top_level(source, transfer_syntax, file_len, file_len, |tag| tag >= tags::PIXEL_DATA)? {
        WalkEnd::Stopped { tag, offset, length } if tag == tags::PIXEL_DATA => PixelLocation::Native { offset, length, big_endian },
        WalkEnd::EncapsulatedPixelData => PixelLocation::Encoded,
        WalkEnd::Stopped { .. } | WalkEnd::End => PixelLocation::Absent,
    })
}

/// A data set stored without preamble and file meta group, as ACR-NEMA-era tools and some
/// exports write it. Recognised as GDCM (SimpleITK) and pydicom's `force` do: the first element
/// is of group 0008, little endian; its VR is explicit when the two bytes after the tag spell
/// one, else implicit. The walk checks every length before dicom-object reads the data set.
fn read_bare_data_set(source: &mut BufReader<&File>, file_len: u64) -> Result<Header, HeaderError> {
    let mut head = [0u8; 8];
    source.seek(SeekFrom::Start(0))?;
    if source.read_exact(&mut head).is_err() || head[..2] != [0x08, 0x00] {
        return Err(HeaderError::NotDicom);
    }
    let uid = if head[4].is_ascii_uppercase() && head[5].is_ascii_uppercase() {
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    } else {
        uids::IMPLICIT_VR_LITTLE_ENDIAN
    };
    let transfer_syntax = TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| FormatError::unsupported(format!("the transfer syntax registry lacks {uid}")))?;
    let pixels = locate_pixels(source, transfer_syntax, 0, file_len)?;
    source.seek(SeekFrom::Start(0))?;
    let not_read = |e: &dyn std::error::Error| {
        FormatError::malformed(format!("a data set without preamble or file meta group: {}", error_chain(e)))
    };
    let data = InMemDicomObject::read_dataset_with_ts(source, transfer_syntax).map_err(|e| not_read(&e))?;
    let object = data.with_meta(FileMetaTableBuilder::new().transfer_syntax(uid)).map_err(|e| not_read(&e))?;
    Ok(Header { file_len, transfer_syntax, pixels, object })
}

/// Checks a deflated data set (the only kind of `Codec::Dataset`) the way `walk_top_level`
/// checks one on disk: one pass inflates it to count its bytes, refusing more than the
/// compressed bytes can expand to; a second walks the inflated elements, checking every
/// declared length against that count. Nothing is kept in memory.
fn check_deflated(source: &mut BufReader<&File>, data_start: u64, file_len: u64) -> Result<(), FormatError> {
    let compressed = file_len - data_start;
    let limit = compressed.saturating_mul(MAX_DEFLATE_RATIO);
    fn inflate<R: Read + Seek>(source: &mut R, start: u64, compressed: u64, limit: u64) -> std::io::Result<InflatedStream<impl Read>> {
        source.seek(SeekFrom::Start(start))?;
        Ok(InflatedStream { inner: DeflateDecoder::new(source.take(compressed)).take(limit + 1), produced: 0 })
    }
    let inflated_len = std::io::copy(&mut inflate(source, data_start, compressed, limit)?, &mut std::io::sink())
        .map_err(|e| FormatError::malformed(format!("the deflated data set cannot be inflated: {e}")))?;
    if inflated_len > limit {
        return Err(FormatError::malformed(format!(
            "the deflated data set inflates to more than {limit} bytes, more than {compressed} compressed bytes can hold"
        )));
    }
    let explicit_le = explicit_vr_little_endian()?;
    walk_top_level(&mut inflate(source, data_start, compressed, limit)?, explicit_le, inflated_len, inflated_len, |_| false)
        .map_err(|e| FormatError::malformed(format!("inside the deflated data set ({inflated_len} bytes inflated): {e}")))?;
    Ok(())
}

/// An inflating reader that tells its position (the bytes it has produced) to the lazy
/// parser, which asks for it once; it cannot seek.
struct InflatedStream<R> {
    inner: R,
    produced: u64,
}

impl<R: Read> Read for InflatedStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        Ok(n)
    }
}

impl<R> Seek for InflatedStream<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Current(0) => Ok(self.produced),
            _ => Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "an inflated stream cannot seek")),
        }
    }
}

/// Offset of the "DICM" marker: 128 after a preamble, or 0 for a file without one.
fn find_magic(source: &mut BufReader<&File>) -> Result<u64, HeaderError> {
    let mut head = Vec::with_capacity(132);
    source.take(132).read_to_end(&mut head)?;
    if head.get(128..132) == Some(b"DICM".as_slice()) {
        Ok(128)
    } else if head.get(..4) == Some(b"DICM".as_slice()) {
        Ok(0)
    } else {
        Err(HeaderError::NotDicom)
    }
}

/// Checks the file meta group (always explicit VR little endian) and returns the transfer
/// syntax of the data set and the offset where the data set starts.
fn read_meta_group(
    source: &mut BufReader<&File>,
    magic_at: u64,
    file_len: u64,
) -> Result<(&'static TransferSyntax, u64), FormatError> {
    // The first element must be (0002,0000) UL, length 4: the byte length of the group.
    let mut group_length = [0u8; 12];
    source.seek(SeekFrom::Start(magic_at + 4))?;
    source.read_exact(&mut group_length).map_err(|_| FormatError::truncated("the file ends inside the file meta group"))?;
    if group_length[..8] != [0x02, 0x00, 0x00, 0x00, b'U', b'L', 0x04, 0x00] {
        return Err(FormatError::malformed("the file meta group does not start with its group length (0002,0000)"));
    }
    let length = u32::from_le_bytes([group_length[8], group_length[9], group_length[10], group_length[11]]) as u64;
    let meta_start = magic_at + 16;
    let meta_end = meta_start + length;
    if meta_end > file_len {
        return Err(FormatError::truncated(format!(
            "the file meta group claims {length} bytes but the file has only {} after its start",
            file_len - meta_start
        )));
    }
    let explicit_le = explicit_vr_little_endian()?;
    // Every element of the group first (dicom-object allocates each by its length), then
    // back to the Transfer Syntax UID.
    walk_top_level(source, explicit_le, file_len, meta_end, |_| false)?;
    source.seek(SeekFrom::Start(meta_start))?;
    match walk_top_level(source, explicit_le, file_len, meta_end, |tag| tag == tags::TRANSFER_SYNTAX_UID)? {
        WalkEnd::Stopped { offset, length, .. } if length <= 1024 => {
            let mut uid = vec![0u8; length as usize];
            source.seek(SeekFrom::Start(offset))?;
            source.read_exact(&mut uid)?;
            let uid = String::from_utf8_lossy(&uid).trim_end_matches(['\0', ' ']).to_string();
            TransferSyntaxRegistry
                .get(&uid)
                .map(|ts| (ts, meta_end))
                .ok_or_else(|| FormatError::unsupported(format!("unknown transfer syntax UID {uid}")))
        }
        _ => Err(FormatError::malformed("the file meta group has no Transfer Syntax UID (0002,0010)")),
    }
}

/// The transfer syntax of the file meta group and of inflated deflated data sets.
fn explicit_vr_little_endian() -> Result<&'static TransferSyntax, FormatError> {
    TransferSyntaxRegistry
        .get(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .ok_or_else(|| FormatError::unsupported("the transfer syntax registry lacks Explicit VR Little Endian"))
}

/// What a walk over the top level of a data set stopped at.
enum WalkEnd {
    /// A top-level element the caller asked to stop at: its value's byte offset and length.
    Stopped { tag: Tag, offset: u64, length: u64 },
    /// Encapsulated pixel data at the top level.
    EncapsulatedPixelData,
    /// The end of the data set (or of the range walked).
    End,
}

/// Walks a data set from the reader's position without reading values, checking that every
/// value fits in the file, until `stop` accepts a top-level tag before any encapsulated pixel
/// data, or the top-level values reach byte `end`.
fn walk_top_level<R: Read + Seek>(
    source: &mut R,
    syntax: &TransferSyntax,
    file_len: u64,
    end: u64,
    mut stop: impl FnMut(Tag) -> bool,
) -> Result<WalkEnd, FormatError> {
    let malformed = |e: &dyn std::error::Error| FormatError::malformed(error_chain(e));
    let mut reader = LazyDataSetReader::new_with_ts(source, syntax).map_err(|e| malformed(&e))?;
    let mut depth = 0usize;
    // Inside top-level encapsulated pixel data: its fragments are checked too, since
    // dicom-object allocates each fragment by its declared length. After it, the walk goes on
    // to the end (dicom-object reads what follows when it decodes the frames).
    let mut in_pixel_sequence = false;
    let mut encapsulated = false;
    let finish = |encapsulated: bool| if encapsulated { WalkEnd::EncapsulatedPixelData } else { WalkEnd::End };
    while let Some(token) = reader.advance() {
        match token.map_err(|e| malformed(&e))? {
            LazyDataToken::SequenceStart { .. } => depth += 1,
            LazyDataToken::PixelSequenceStart => {
                in_pixel_sequence |= depth == 0;
                depth += 1;
            }
            LazyDataToken::SequenceEnd => {
                depth = depth.saturating_sub(1);
                if depth == 0 && in_pixel_sequence {
                    in_pixel_sequence = false;
                    encapsulated = true;
                }
            }
            LazyDataToken::LazyValue { header, decoder } => {
                let offset = decoder.position();
                let length = u64::from(header.len.0);
                check_fits(header.tag, offset, length, file_len)?;
                check_whole_values(header.tag, header.vr, length)?;
                if depth == 0 && !encapsulated && stop(header.tag) {
                    return Ok(WalkEnd::Stopped { tag: header.tag, offset, length });
                }
                decoder.skip_bytes(header.len.0).map_err(|e| malformed(&e))?;
                if depth == 0 && offset + length >= end {
                    return Ok(finish(encapsulated));
                }
            }
            LazyDataToken::LazyItemValue { len, decoder } => {
                check_fits(Tag(0xFFFE, 0xE000), decoder.position(), u64::from(len), file_len)?;
                decoder.skip_bytes(len).map_err(|e| malformed(&e))?;
            }
            _ => {}
        }
    }
    Ok(finish(encapsulated))
}

/// Checks that a binary value holds whole numbers: dicom-object reads length / size numbers and
/// goes on from there, so a value of 2 bytes in an SL would make it read the next elements from
/// the wrong place (and trust lengths this walk never saw).
fn check_whole_values(tag: Tag, vr: VR, length: u64) -> Result<(), FormatError> {
    let size = match vr {
        VR::SS | VR::US | VR::OW => 2,
        VR::SL | VR::UL | VR::FL | VR::AT | VR::OL | VR::OF => 4,
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => 8,
        _ => 1,
    };
    if length % size != 0 {
        return Err(FormatError::malformed(format!(
            "element {tag} ({vr:?}) has {length} bytes, not a whole number of {size}-byte values"
        )));
    }
    Ok(())
}

fn check_fits(tag: Tag, offset: u64, length: u64, file_len: u64) -> Result<(), FormatError> {
    if offset.saturating_add(length) > file_len {
        return Err(FormatError::truncated(format!(
            "element {tag} declares {length} bytes at offset {offset}, but the file has only {file_len} bytes"
        )));
    }
    Ok(())
}

/// The placement and value mapping of one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct FramePlacement {
    /// ImagePositionPatient: LPS position of the centre of the first pixel (mm).
    pub position: Option<[f64; 3]>,
    /// ImageOrientationPatient: row direction (along a row, increasing column) then column
    /// direction.
    pub orientation: Option<[f64; 6]>,
    /// PixelSpacing: row spacing (between rows), then column spacing (mm).
    pub pixel_spacing: Option<[f64; 2]>,
    pub rescale: Rescale,
}

/// What a file says about its pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    /// PixelRepresentation 1: two's complement samples.
    pub signed: bool,
    pub photometric: String,
    pub number_of_frames: u64,
    /// One placement per frame when the file gives per-frame positions (enhanced
    /// multi-frame), else a single placement that applies to every frame.
    pub placements: Vec<FramePlacement>,
    /// Items in PerFrameFunctionalGroupsSequence (0 when absent).
    pub per_frame_items: usize,
    pub spacing_between_slices: Option<f64>,
    pub slice_thickness: Option<f64>,
    pub pixels: PixelLocation,
}

impl Image {
    /// Bytes of one frame as stored (before any decompression).
    pub fn frame_bytes(&self) -> Result<u64, FormatError> {
        crate::io::limits::payload_bytes(
            &[u64::from(self.rows), u64::from(self.columns), u64::from(self.samples_per_pixel)],
            u64::from(self.bits_allocated.div_ceil(8)),
        )
    }

    /// The placement of frame `frame`.
    pub fn placement(&self, frame: usize) -> &FramePlacement {
        self.placements.get(frame).unwrap_or(&self.placements[0])
    }
}

/// One DICOM file as the series scan sees it.
#[derive(Clone)]
pub struct Instance {
    pub path: PathBuf,
    pub file_len: u64,
    pub transfer_syntax: &'static TransferSyntax,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub series_number: Option<i64>,
    pub modality: String,
    pub description: String,
    pub instance_number: Option<i64>,
    /// `None` for files without image pixel attributes (reports, structure sets, ...).
    pub image: Option<Image>,
    /// Values read leniently (e.g. an integer string with junk), to show as warnings.
    pub notes: Vec<String>,
}

impl Instance {
    /// Reads the header of `path` and keeps what the series reader needs.
    pub fn read(path: &Path) -> Result<Instance, HeaderError> {
        let header = read_header(path)?;
        Ok(Instance::from_header(path, header)?)
    }

    /// Keeps what the series reader needs from a header.
    pub fn from_header(path: &Path, header: Header) -> Result<Instance, FormatError> {
        let obj: &InMemDicomObject = &header.object;
        let sop_class_uid = text(obj, tags::SOP_CLASS_UID).unwrap_or_else(|| header.object.meta().media_storage_sop_class_uid().to_string());
        let mut notes = Vec::new();
        let image = match (int(obj, tags::ROWS)?, int(obj, tags::COLUMNS)?) {
            (Some(rows), Some(columns)) => Some(read_image(obj, rows, columns, header.pixels, &mut notes)?),
            _ => None,
        };
        Ok(Instance {
            path: path.to_path_buf(),
            file_len: header.file_len,
            transfer_syntax: header.transfer_syntax,
            sop_class_uid,
            sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
            series_uid: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
            series_number: lenient_int(obj, tags::SERIES_NUMBER, &mut notes).ok().flatten(),
            modality: text(obj, tags::MODALITY).unwrap_or_default(),
            description: text(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
            instance_number: lenient_int(obj, tags::INSTANCE_NUMBER, &mut notes).ok().flatten(),
            image,
            notes,
        })
    }

    /// Number of frames (slices) the file holds; 0 for a non-image.
    pub fn frame_count(&self) -> u64 {
        self.image.as_ref().map_or(0, |i| i.number_of_frames)
    }
}

fn read_image(
    obj: &InMemDicomObject,
    rows: i64,
    columns: i64,
    pixels: PixelLocation,
    notes: &mut Vec<String>,
) -> Result<Image, FormatError> {
    let bits_allocated = int(obj, tags::BITS_ALLOCATED)?.ok_or_else(|| FormatError::malformed("BitsAllocated (0028,0100) is missing"))?;
    let bits_stored = int(obj, tags::BITS_STORED)?.unwrap_or(bits_allocated);
    let frames = lenient_int(obj, tags::NUMBER_OF_FRAMES, notes)?.unwrap_or(1);
    let in_range = |v: i64, lo: i64, hi: i64, name: &str| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(FormatError::malformed(format!("{name} is {v}, outside {lo}..={hi}")))
        }
    };
    let rows = in_range(rows, 1, 65535, "Rows")? as u32;
    let columns = in_range(columns, 1, 65535, "Columns")? as u32;
    let bits_allocated = in_range(bits_allocated, 1, 64, "BitsAllocated")? as u16;
    let bits_stored = in_range(bits_stored, 1, i64::from(bits_allocated), "BitsStored")? as u16;
    let number_of_frames = in_range(frames, 1, i64::from(u32::MAX), "NumberOfFrames")? as u64;
    let samples_per_pixel = in_range(int(obj, tags::SAMPLES_PER_PIXEL)?.unwrap_or(1), 1, 4, "SamplesPerPixel")? as u16;

    // CR and DX images often give only ImagerPixelSpacing (at the detector); SimpleITK (GDCM)
    // takes it as the pixel spacing when PixelSpacing is absent, and so do we.
    let projection_radiograph = matches!(text(obj, tags::MODALITY).as_deref(), Some("CR" | "DX"));
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame: &[InMemDicomObject] = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .unwrap_or(&[]);
    // Attribute `tag` of functional group `group` for one frame: per-frame, then shared.
    let group_value = |frame: Option<&InMemDicomObject>, group: Tag, tag: Tag| -> Result<Option<Vec<f64>>, FormatError> {
        for item in [frame, shared].into_iter().flatten() {
            if let Some(v) = first_item(item, group).map(|g| numbers(g, tag)).transpose()?.flatten() {
                return Ok(Some(v));
            }
        }
        Ok(None)
    };
    let placement = |frame: Option<&InMemDicomObject>| -> Result<FramePlacement, FormatError> {
        let or_top = |v: Option<Vec<f64>>, tag: Tag| -> Result<Option<Vec<f64>>, FormatError> {
            match v {
                Some(v) => Ok(Some(v)),
                None => numbers(obj, tag),
            }
        };
        let position = or_top(group_value(frame, tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)?, tags::IMAGE_POSITION_PATIENT)?;
        let orientation =
            or_top(group_value(frame, tags::PLANE_ORIENTATION_SEQUENCE, tags::IMAGE_ORIENTATION_PATIENT)?, tags::IMAGE_ORIENTATION_PATIENT)?;
        let mut spacing = or_top(group_value(frame, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)?, tags::PIXEL_SPACING)?;
        if spacing.is_none() && projection_radiograph {
            spacing = numbers(obj, tags::IMAGER_PIXEL_SPACING)?;
        }
        let slope = or_top(group_value(frame, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, tags::RESCALE_SLOPE)?, tags::RESCALE_SLOPE)?;
        let intercept =
            or_top(group_value(frame, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, tags::RESCALE_INTERCEPT)?, tags::RESCALE_INTERCEPT)?;
        Ok(FramePlacement {
            position: fixed(position, "ImagePositionPatient")?,
            orientation: fixed(orientation, "ImageOrientationPatient")?,
            pixel_spacing: fixed(spacing, "PixelSpacing")?,
            rescale: Rescale::from_header(
                slope.and_then(|v| v.first().copied()).unwrap_or(1.0),
                intercept.and_then(|v| v.first().copied()).unwrap_or(0.0),
            ),
        })
    };
    // Per-frame positions only count when there is one item per frame; a mismatch is
    // reported when the series is opened.
    let placements = if number_of_frames > 1 && per_frame.len() as u64 == number_of_frames {
        per_frame.iter().map(|item| placement(Some(item))).collect::<Result<Vec<_>, _>>()?
    } else {
        vec![placement(per_frame.first())?]
    };
    let measure = |tag: Tag| -> Result<Option<f64>, FormatError> {
        let v = match group_value(per_frame.first(), tags::PIXEL_MEASURES_SEQUENCE, tag)? {
            Some(v) => Some(v),
            None => numbers(obj, tag)?,
        };
        Ok(v.and_then(|v| v.first().copied()))
    };
    Ok(Image {
        rows,
        columns,
        samples_per_pixel,
        bits_allocated,
        bits_stored,
        signed: int(obj, tags::PIXEL_REPRESENTATION)?.unwrap_or(0) == 1,
        photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".to_string()),
        number_of_frames,
        placements,
        per_frame_items: per_frame.len(),
        spacing_between_slices: measure(tags::SPACING_BETWEEN_SLICES)?,
        slice_thickness: measure(tags::SLICE_THICKNESS)?,
        pixels,
    })
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag).and_then(|e| e.items()).and_then(|items| items.first())
}

/// A text attribute, trimmed; `None` when absent or empty.
fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!value.is_empty()).then(|| value.to_string())
}

/// The element `tag` when it holds a value (absent and empty attributes read alike).
fn non_empty(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemElement> {
    let element = obj.get(tag)?;
    let empty = element.to_str().is_ok_and(|s| s.trim_matches(['\0', ' ']).is_empty());
    (!empty).then_some(element)
}

/// An integer attribute (US, IS, ...); `None` when absent or empty, an error when unreadable.
fn int(obj: &InMemDicomObject, tag: Tag) -> Result<Option<i64>, FormatError> {
    let Some(element) = non_empty(obj, tag) else { return Ok(None) };
    element
        .to_int::<i64>()
        .map(Some)
        .map_err(|e| FormatError::malformed(format!("attribute {tag} is not an integer: {}", error_chain(&e))))
}

/// Like `int`, but an integer string (IS) with junk after its digits ("1A") reads as its
/// leading integer, as GDCM (SimpleITK) reads it, with a note saying so.
fn lenient_int(obj: &InMemDicomObject, tag: Tag, notes: &mut Vec<String>) -> Result<Option<i64>, FormatError> {
    let strict = int(obj, tag);
    let Err(error) = strict else { return strict };
    let Some(element) = obj.get(tag).filter(|e| e.vr() == VR::IS) else { return Err(error) };
    let text = element.to_str().map_err(|_| FormatError::malformed(format!("attribute {tag} is not text")))?;
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let sign = usize::from(text.starts_with(['+', '-']));
    let digits = text[sign..].bytes().take_while(u8::is_ascii_digit).count();
    match text[..sign + digits].parse::<i64>() {
        Ok(value) if digits > 0 => {
            notes.push(format!("{tag} is \"{text}\", not an integer string: read as {value}, its leading digits"));
            Ok(Some(value))
        }
        _ => Err(error),
    }
}

/// The numbers of a DS/FD attribute; `None` when absent or empty.
fn numbers(obj: &InMemDicomObject, tag: Tag) -> Result<Option<Vec<f64>>, FormatError> {
    let Some(element) = non_empty(obj, tag) else { return Ok(None) };
    let values = element
        .to_multi_float64()
        .map_err(|e| FormatError::malformed(format!("attribute {tag} is not numeric: {}", error_chain(&e))))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(FormatError::malformed(format!("attribute {tag} holds a value that is not finite: {values:?}")));
    }
    Ok(Some(values))
}

/// Exactly `N` numbers, or an error naming the attribute.
fn fixed<const N: usize>(values: Option<Vec<f64>>, name: &str) -> Result<Option<[f64; N]>, FormatError> {
    values
        .map(|v| {
            <[f64; N]>::try_from(v.as_slice())
                .map_err(|_| FormatError::malformed(format!("{name} has {} values instead of {N}: {v:?}", v.len())))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/data/dicom/")).join(name)
    }

    #[test]
    fn native_pixel_data_is_located_exactly() {
        let path = sample("pydicom-samples/CT_small.dcm");
        let inst = Instance::read(&path).unwrap();
        let image = inst.image.unwrap();
        // pydicom's `ds["PixelData"].file_tell`; the file goes on after the pixel data with
        // Data Set Trailing Padding, so "the last bytes of the file" would be wrong.
        assert_eq!(image.pixels, PixelLocation::Native { offset: 6300, length: 32768, big_endian: false });
        assert_eq!((image.rows, image.columns, image.bits_allocated, image.signed), (128, 128, 16, true));
        assert_eq!(image.placements[0].rescale, Rescale { slope: 1.0, intercept: -1024.0 });
        assert_eq!(inst.modality, "CT");
    }

    #[test]
    fn big_endian_and_encapsulated_files_are_recognised() {
        let be = Instance::read(&sample("pydicom-samples/MR_small_bigendian.dcm")).unwrap();
        assert!(matches!(be.image.unwrap().pixels, PixelLocation::Native { big_endian: true, length: 8192, .. }));
        let rle = Instance::read(&sample("pydicom-samples/MR_small_RLE.dcm")).unwrap();
        assert_eq!(rle.image.unwrap().pixels, PixelLocation::Encoded);
    }

    #[test]
    fn other_files_are_not_dicom() {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        assert!(matches!(read_header(&path), Err(HeaderError::NotDicom)));
    }
}
