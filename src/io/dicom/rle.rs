//! Checks of an RLE Lossless frame (DICOM PS3.5 Annex G) before dicom-pixeldata decodes it.
//!
//! The RLE adapter of dicom-transfer-syntax-registry trusts the frame's 64-byte header: a
//! segment count larger than the header, or a segment that expands to fewer bytes than
//! Rows x Columns, makes it index out of bounds and panic. These checks walk the header and
//! count what each segment expands to (without writing anything), so a damaged frame is
//! refused with a message naming what is wrong. Decoding itself stays with the crate.

use crate::io::FormatError;

/// Size of the RLE header: the segment count and 15 segment offsets, 32-bit little endian.
const HEADER_BYTES: usize = 64;
/// The most segments an RLE header can describe.
const MAX_SEGMENTS: u32 = 15;

/// Checks that `fragment` (one RLE frame) holds the segments a frame of `rows` x `columns`
/// with `samples` samples of `bits_allocated` bits needs, each expanding to a full plane.
pub fn check_frame(
    fragment: &[u8],
    rows: u32,
    columns: u32,
    samples: u16,
    bits_allocated: u16,
) -> Result<(), FormatError> {
    if fragment.len() < HEADER_BYTES {
        return Err(FormatError::truncated(format!(
            "the RLE frame has {} bytes, fewer than its {HEADER_BYTES}-byte segment table",
            fragment.len()
        )));
    }
    let word = |i: usize| {
        u32::from_le_bytes([
            fragment[4 * i],
            fragment[4 * i + 1],
            fragment[4 * i + 2],
            fragment[4 * i + 3],
        ])
    };
    let count = word(0);
    let needed = u32::from(samples) * u32::from(bits_allocated.div_ceil(8));
    if count == 0 || count > MAX_SEGMENTS {
        return Err(FormatError::malformed(format!(
            "the RLE segment table declares {count} segments (1 to {MAX_SEGMENTS} can exist)"
        )));
    }
    if count < needed {
        return Err(FormatError::malformed(format!(
            "the RLE segment table declares {count} segments, but {samples} sample(s) of {bits_allocated} bits need {needed}"
        )));
    }
    let mut offsets: Vec<usize> = (1..=count as usize).map(|i| word(i) as usize).collect();
    if offsets[0] != HEADER_BYTES {
        return Err(FormatError::malformed(format!(
            "the first RLE segment starts at byte {}, not right after the {HEADER_BYTES}-byte segment table",
            offsets[0]
        )));
    }
    offsets.push(fragment.len());
    for (n, pair) in offsets.windows(2).enumerate() {
        if pair[1] < pair[0] || pair[1] > fragment.len() {
            return Err(FormatError::malformed(format!(
                "RLE segment {} ends at byte {} but starts at byte {} of a {}-byte frame: the segment offsets are damaged",
                n + 1,
                pair[1],
                pair[0],
                fragment.len()
            )));
        }
    }
    let plane = u64::from(rows) * u64::from(columns);
    for (n, pair) in offsets.windows(2).take(needed as usize).enumerate() {
        let expands_to = expanded_len(&fragment[pair[0]..pair[1]]);
        if expands_to < plane {
            return Err(FormatError::malformed(format!(
                "RLE segment {} expands to {expands_to} bytes, but Rows x Columns ({rows} x {columns}) need {plane}: \
                 the segment offsets or the segment data are damaged",
                n + 1
            )));
        }
    }
    Ok(())
}

/// How many bytes a PackBits segment expands to: a header byte n in 0..=127 copies the next
/// n + 1 bytes, -127..=-1 repeats the next byte 1 - n times, -128 does nothing.
fn expanded_len(segment: &[u8]) -> u64 {
    let mut at = 0usize;
    let mut out = 0u64;
    while at < segment.len() {
        let n = segment[at] as i8;
        at += 1;
        if n >= 0 {
            let literal = (n as usize + 1).min(segment.len() - at);
            out += literal as u64;
            at += literal;
        } else if n != -128 {
            if at == segment.len() {
                break;
            }
            out += (1 - i64::from(n)) as u64;
            at += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of 2 x 2 8-bit samples: one segment, a run of 4 zeros.
    fn frame(count: u32, first: u32, segment: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_BYTES];
        f[..4].copy_from_slice(&count.to_le_bytes());
        f[4..8].copy_from_slice(&first.to_le_bytes());
        f.extend_from_slice(segment);
        f
    }

    #[test]
    fn a_sound_frame_passes() {
        assert!(check_frame(&frame(1, 64, &[0xFD, 0]), 2, 2, 1, 8).is_ok());
        assert!(check_frame(&frame(1, 64, &[3, 1, 2, 3, 4]), 2, 2, 1, 8).is_ok());
    }

    #[test]
    fn damaged_tables_are_refused() {
        let err = |f: Vec<u8>, bits| check_frame(&f, 2, 2, 1, bits).unwrap_err().to_string();
        assert!(err(frame(1, 64, &[0xFD, 0])[..40].to_vec(), 8).contains("fewer than its 64-byte"));
        assert!(err(frame(0xFFFF, 64, &[0xFD, 0]), 8).contains("65535 segments"));
        assert!(err(frame(1, 64, &[0xFD, 0]), 16).contains("need 2"));
        assert!(err(frame(1, 60, &[0xFD, 0]), 8).contains("starts at byte 60"));
        assert!(err(frame(1, 64, &[0xFE, 0]), 8).contains("expands to 3 bytes"));
        let mut f = frame(2, 64, &[0xFD, 0, 0xFD, 0]);
        f[8..12].copy_from_slice(&200u32.to_le_bytes());
        assert!(err(f, 16).contains("segment offsets are damaged"));
    }

    #[test]
    fn packbits_lengths() {
        assert_eq!(expanded_len(&[0x80, 2, 7, 8, 9]), 3);
        assert_eq!(expanded_len(&[0x81, 5]), 128);
        assert_eq!(expanded_len(&[5, 1]), 1);
        assert_eq!(expanded_len(&[0xFF]), 0);
    }
}
