//! Size arithmetic that cannot overflow and cannot be talked into huge allocations.
//!
//! Every reader computes "how many bytes does the header promise" through `payload_bytes`, and
//! checks it against what the file can back before it allocates anything.

use super::FormatError;

/// The largest ratio a deflate stream can expand by (RFC 1951: 258 bytes from ~2 bits is
/// ~1032:1); a compressed file of n bytes cannot back more than this many times n.
pub const MAX_DEFLATE_RATIO: u64 = 1032;

/// Number of bytes of `count` voxels of `element_size` bytes over the dimensions `dims`,
/// or an error when the product overflows.
pub fn payload_bytes(dims: &[u64], element_size: u64) -> Result<u64, FormatError> {
    dims.iter()
        .try_fold(element_size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| FormatError::TooLarge(format!("dimensions {dims:?} overflow a 64-bit size")))
}

/// Checks that `needed` bytes starting at `offset` fit in a plain file of `file_len` bytes.
pub fn check_plain(needed: u64, offset: u64, file_len: u64) -> Result<(), FormatError> {
    match offset.checked_add(needed) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(FormatError::truncated(format!(
            "the header promises {needed} bytes of voxel data at offset {offset}, but the file has only {file_len} bytes"
        ))),
    }
}

/// Checks that `needed` decompressed bytes can come out of a compressed stream of
/// `compressed_len` bytes at all.
pub fn check_compressed(needed: u64, compressed_len: u64) -> Result<(), FormatError> {
    if needed > compressed_len.saturating_mul(MAX_DEFLATE_RATIO) {
        return Err(FormatError::truncated(format!(
            "the header promises {needed} bytes of voxel data, more than a {compressed_len}-byte compressed file can hold"
        )));
    }
    Ok(())
}

/// Converts a checked byte count to `usize` for allocation.
pub fn to_usize(bytes: u64) -> Result<usize, FormatError> {
    usize::try_from(bytes).map_err(|_| FormatError::TooLarge(format!("{bytes} bytes do not fit in memory")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_an_error() {
        assert!(payload_bytes(&[u64::MAX, 2], 2).is_err());
        assert_eq!(payload_bytes(&[2, 3, 4], 2).unwrap(), 48);
    }

    #[test]
    fn plain_and_compressed_bounds() {
        assert!(check_plain(100, 352, 452).is_ok());
        assert!(check_plain(100, 352, 451).is_err());
        assert!(check_plain(u64::MAX, 352, 451).is_err());
        assert!(check_compressed(1032 * 10, 10).is_ok());
        assert!(check_compressed(1032 * 10 + 1, 10).is_err());
    }
}
