//! Finds where a DEFLATE block begins inside a stream without decoding what precedes it: the
//! first bit offset that starts a non-final dynamic-Huffman block whose code description the
//! decoder itself accepts (valid HLIT/HDIST/HCLEN, complete code-length code, valid
//! literal/length and distance codes, end-of-block code present).

use super::inflate::{BitReader, Tables, read_dynamic_tables};

/// The first bit offset in `from..to` of `data` where a plausible non-final dynamic block
/// begins. Offsets that pass are not necessarily real block starts (false positives are
/// possible); offsets that fail are certainly not the start of such a block.
pub fn find_dynamic_block(data: &[u8], from: u64, to: u64) -> Option<u64> {
    let end = to.min(data.len() as u64 * 8);
    let mut tables = Tables::new();
    let mut bit = from;
    while bit < end {
        // 32 positions at a time: those where BFINAL = 0 and BTYPE = 2 (bits 0, 0, 1).
        let byte = bit / 8;
        let w = load_le(data, byte, 8) as u64;
        // Minus those with HLIT or HDIST above 29 (their top four bits all set).
        let too_many = |at: u32| (w >> at) & (w >> (at + 1)) & (w >> (at + 2)) & (w >> (at + 3));
        let mut candidates = !w & !(w >> 1) & (w >> 2) & !too_many(4) & !too_many(9) & 0xffff_ffff & (u64::MAX << (bit % 8));
        while candidates != 0 {
            let at = byte * 8 + candidates.trailing_zeros() as u64;
            if at >= end {
                return None;
            }
            if header_plausible(load_le(data, at / 8, 16) >> (at % 8)) {
                let mut bits = BitReader::new(data, at + 3);
                if read_dynamic_tables(&mut bits, &mut tables).is_ok() {
                    return Some(at);
                }
            }
            candidates &= candidates - 1;
        }
        bit = (byte + 4) * 8;
    }
    None
}

/// `n <= 16` bytes of `data` from `byte` on as a little-endian number (zeros past the end).
fn load_le(data: &[u8], byte: u64, n: usize) -> u128 {
    if let Some(bytes) = data.get(byte as usize..byte as usize + 16) {
        return u128::from_le_bytes(bytes.try_into().unwrap()) & (u128::MAX >> (128 - 8 * n));
    }
    let mut word = [0u8; 16];
    let at = usize::try_from(byte).unwrap_or(usize::MAX).min(data.len());
    let available = (data.len() - at).min(n);
    word[..available].copy_from_slice(&data[at..at + available]);
    u128::from_le_bytes(word)
}

/// Kraft sums (in units of 2^-7) of four 3-bit code lengths packed LSB-first.
const KRAFT_OF_FOUR: [u8; 4096] = {
    let mut table = [0u8; 4096];
    let mut packed = 0;
    while packed < 4096 {
        let mut sum = 0u32;
        let mut k = 0;
        while k < 4 {
            let l = (packed >> (3 * k)) & 7;
            if l > 0 {
                sum += 128 >> l;
            }
            k += 1;
        }
        // Four lengths of 1 sum to 256: anything above 128 is over-subscribed, clamp to 255.
        table[packed] = if sum > 255 { 255 } else { sum as u8 };
        packed += 1;
    }
    table
};

/// Cheap checks on the first 74 bits: BFINAL = 0, BTYPE = 2, at most 286 literal/length and
/// 30 distance codes, and a complete code-length code.
fn header_plausible(w: u128) -> bool {
    if w & 7 != 0b100 {
        return false;
    }
    if (w >> 3) & 31 > 29 || (w >> 8) & 31 > 29 {
        return false;
    }
    let lengths = ((w >> 13) & 15) as u32 + 4;
    let code_lengths = w >> 17;
    let mut kraft = 0u32;
    let mut i = 0;
    while i < lengths {
        let group = (code_lengths >> (3 * i)) as usize & ((1 << (3 * (lengths - i).min(4))) - 1);
        kraft += KRAFT_OF_FOUR[group] as u32;
        if kraft > 128 {
            return false;
        }
        i += 4;
    }
    kraft == 128
}

#[cfg(test)]
mod tests {
    use super::super::inflate::{Inflater, SYMBOL_ROOM, Step};
    use super::*;
    use std::io::Write;

    /// Bit offsets of every block start of a raw deflate stream (the first one included).
    fn block_starts(stream: &[u8]) -> Vec<u64> {
        let mut inf = Inflater::new(stream, 0);
        let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut starts = vec![0];
        while !inf.is_done() {
            if inf.step(&mut out, 0).unwrap() == Step::Full {
                out.drain(..out.len() - 32768);
                out.reserve(SYMBOL_ROOM);
            } else if !inf.is_done() {
                starts.push(inf.position());
            }
        }
        starts
    }

    #[test]
    fn finds_the_next_real_block() {
        let mut s = 1u64;
        let data: Vec<u8> = (0..2_000_000)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 58) as u8
            })
            .collect();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&data).unwrap();
        let stream = e.finish().unwrap();
        let starts = block_starts(&stream);
        assert!(starts.len() > 10, "{} blocks", starts.len());
        // From just after each real start, the finder lands on the following one (these blocks
        // are all dynamic; the last is final and not searched for).
        for pair in starts.windows(2).take(starts.len() - 2) {
            assert_eq!(find_dynamic_block(&stream, pair[0] + 1, u64::MAX), Some(pair[1]));
        }
        assert_eq!(find_dynamic_block(&stream, starts[1], starts[1] + 1), Some(starts[1]));
        assert_eq!(find_dynamic_block(&stream, starts[1] + 1, starts[1] + 100), None);
    }
}
