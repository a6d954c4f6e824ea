//! DEFLATE (RFC 1951) block decoding: a 64-bit bit reader, canonical Huffman lookup tables
//! whose entries already carry the length/distance base and extra-bit count, and one resumable
//! symbol loop generic over the output element: bytes, or 16-bit symbols whose values from
//! `MARKER_BASE` up name positions in an unknown 32 KiB window before the output.
//!
//! Validation follows zlib's inflate (the reference the rest of the reader falls back to):
//! over-subscribed codes, incomplete codes other than a single one-bit code, a missing
//! end-of-block code, length/distance symbols 286..287 / 30..31 and distances reaching before
//! the available history are all errors.

use std::sync::OnceLock;

/// The DEFLATE window: the farthest a match may reach back.
pub const WINDOW_SIZE: usize = 32 * 1024;

/// Output elements the symbol loop needs free before each symbol: the longest match (258) plus
/// the overshoot of word-at-a-time copies.
pub const SYMBOL_ROOM: usize = 258 + 16;

/// First 16-bit symbol value that names a window position instead of a byte: value
/// `MARKER_BASE + j` stands for byte `j` of the 32 KiB before the output's first element.
pub const MARKER_BASE: u16 = 256;

/// Primary lookup bits of the literal/length and distance tables; longer codes go through one
/// subtable.
const LIT_BITS: u32 = 11;
const DIST_BITS: u32 = 8;
/// Largest table (primary plus subtables) any valid code needs with those primary sizes.
const LIT_TABLE_LEN: usize = 2342;
const DIST_TABLE_LEN: usize = 402;
const CODE_LENGTH_BITS: u32 = 7;

// A table entry: bits 0..4 codeword bits at this level, 4..8 extra bits (or subtable bits),
// 8..11 kind, 16..32 value (literal, base length, base distance, or subtable offset).
const KIND_LITERAL: u32 = 0;
const KIND_MATCH: u32 = 1 << 8;
const KIND_END: u32 = 2 << 8;
const KIND_SUBTABLE: u32 = 3 << 8;
const KIND_INVALID: u32 = 4 << 8;
const KIND_MASK: u32 = 7 << 8;

const LENGTH_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA: [u8; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193,
    12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
/// The order in which code-length code lengths are stored.
const CODE_LENGTH_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// Why a DEFLATE stream could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("the compressed data ends early")]
    Truncated,
    #[error("invalid deflate data: {0}")]
    Invalid(&'static str),
}

const fn entry(value: u32, extra: u32, kind: u32, bits: u32) -> u32 {
    (value << 16) | kind | (extra << 4) | bits
}

#[inline(always)]
fn low_bits(n: u32) -> u64 {
    (1u64 << n) - 1
}

/// Reads the bit stream LSB-first through a 64-bit buffer refilled a word at a time.
#[derive(Clone, Copy)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` to enter the buffer (may pass the end: zeros are read there).
    next: usize,
    buf: u64,
    /// Valid bits in `buf`; bits above it are either zero or the following input bits.
    count: u32,
}

impl<'a> BitReader<'a> {
    /// A reader positioned at absolute bit `bit` of `data`.
    pub fn new(data: &'a [u8], bit: u64) -> Self {
        let mut r = BitReader { data, next: usize::try_from(bit / 8).unwrap_or(usize::MAX / 2), buf: 0, count: 0 };
        r.refill();
        r.consume((bit % 8) as u32);
        r
    }

    /// Absolute bit position of the next unread bit.
    pub fn position(&self) -> u64 {
        self.next as u64 * 8 - self.count as u64
    }

    /// Whether bits past the end of the data (read as zeros) have been consumed.
    pub fn overran(&self) -> bool {
        self.position() > self.data.len() as u64 * 8
    }

    /// Makes at least 56 bits available.
    #[inline(always)]
    fn refill(&mut self) {
        if self.next + 8 <= self.data.len() {
            let word = u64::from_le_bytes(self.data[self.next..self.next + 8].try_into().unwrap());
            self.buf |= word << self.count;
            self.next += ((63 - self.count) >> 3) as usize;
            self.count |= 56;
        } else {
            self.refill_slow();
        }
    }

    #[cold]
    fn refill_slow(&mut self) {
        while self.count < 56 {
            let byte = self.data.get(self.next).copied().unwrap_or(0);
            self.buf |= (byte as u64) << self.count;
            self.next += 1;
            self.count += 8;
        }
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.buf >>= n;
        self.count -= n;
    }

    /// Takes `n <= 32` bits.
    #[inline(always)]
    fn take(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.refill();
        }
        let v = (self.buf & low_bits(n)) as u32;
        self.consume(n);
        v
    }

    /// Skips to the next byte boundary and re-anchors the reader there, returning its byte
    /// offset.
    fn align_to_byte(&mut self) -> usize {
        let byte = self.position().div_ceil(8) as usize;
        *self = BitReader { data: self.data, next: byte, buf: 0, count: 0 };
        byte
    }
}

/// Literal/length and distance lookup tables of the current block.
pub struct Tables {
    lit: [u32; LIT_TABLE_LEN],
    dist: [u32; DIST_TABLE_LEN],
}

impl Tables {
    pub fn new() -> Box<Self> {
        Box::new(Tables { lit: [KIND_INVALID; LIT_TABLE_LEN], dist: [KIND_INVALID; DIST_TABLE_LEN] })
    }

    fn fixed() -> &'static Tables {
        static FIXED: OnceLock<Box<Tables>> = OnceLock::new();
        FIXED.get_or_init(|| {
            let mut lengths = [0u8; 288 + 32];
            lengths[..144].fill(8);
            lengths[144..256].fill(9);
            lengths[256..280].fill(7);
            lengths[280..288].fill(8);
            lengths[288..].fill(5);
            let mut t = Tables::new();
            t.build(&lengths[..288], &lengths[288..]).expect("the fixed Huffman codes are valid");
            t
        })
    }

    fn build(&mut self, lit_lengths: &[u8], dist_lengths: &[u8]) -> Result<(), InflateError> {
        build_table(lit_lengths, &mut self.lit, LIT_BITS, CodeKind::LiteralLength)?;
        build_table(dist_lengths, &mut self.dist, DIST_BITS, CodeKind::Distance)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CodeKind {
    CodeLength,
    LiteralLength,
    Distance,
}

impl CodeKind {
    /// The table entry (without codeword bits) for `symbol`.
    fn symbol_entry(self, symbol: usize) -> u32 {
        match self {
            CodeKind::CodeLength => entry(symbol as u32, 0, KIND_LITERAL, 0),
            CodeKind::LiteralLength => match symbol {
                0..=255 => entry(symbol as u32, 0, KIND_LITERAL, 0),
                256 => entry(0, 0, KIND_END, 0),
                257..=285 => entry(LENGTH_BASE[symbol - 257] as u32, LENGTH_EXTRA[symbol - 257] as u32, KIND_MATCH, 0),
                _ => KIND_INVALID,
            },
            CodeKind::Distance => match symbol {
                0..=29 => entry(DIST_BASE[symbol] as u32, DIST_EXTRA[symbol] as u32, KIND_MATCH, 0),
                _ => KIND_INVALID,
            },
        }
    }
}

/// Fills `table` for the canonical code with the given code lengths: a primary table indexed by
/// the next `primary` bits, codes longer than that through subtables placed after it.
fn build_table(lengths: &[u8], table: &mut [u32], primary: u32, kind: CodeKind) -> Result<(), InflateError> {
    let mut count = [0u16; 16];
    for &l in lengths {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let max_len = (1..16).rev().find(|&l| count[l] > 0).unwrap_or(0) as u32;
    let mut left: i32 = 1;
    for &c in &count[1..] {
        left = (left << 1) - c as i32;
        if left < 0 {
            return Err(InflateError::Invalid("over-subscribed Huffman code"));
        }
    }
    if left > 0 && (kind == CodeKind::CodeLength || max_len > 1) {
        return Err(InflateError::Invalid("incomplete Huffman code"));
    }
    let primary_len = 1usize << primary;
    table[..primary_len].fill(KIND_INVALID);
    // Symbols sorted by code length, then by value: the canonical order.
    let mut offsets = [0u16; 16];
    for l in 1..15 {
        offsets[l + 1] = offsets[l] + count[l];
    }
    let mut sorted = [0u16; 288];
    for (symbol, &l) in lengths.iter().enumerate() {
        if l > 0 {
            sorted[offsets[l as usize] as usize] = symbol as u16;
            offsets[l as usize] += 1;
        }
    }
    let codes: usize = count.iter().map(|&c| c as usize).sum();
    let mut remaining = count;
    let mut code: u32 = 0;
    let mut code_len: u32 = 0;
    let mut sub_prefix = usize::MAX;
    let mut sub_offset = 0usize;
    let mut sub_bits = 0u32;
    let mut next_free = primary_len;
    for &symbol in &sorted[..codes] {
        let len = lengths[symbol as usize] as u32;
        if code_len == 0 {
            code_len = len;
        } else if len > code_len {
            code <<= len - code_len;
            code_len = len;
        }
        let reversed = (code.reverse_bits() >> (32 - len)) as usize;
        code += 1;
        let base = kind.symbol_entry(symbol as usize);
        if len <= primary {
            let e = base | len;
            let mut i = reversed;
            while i < primary_len {
                table[i] = e;
                i += 1 << len;
            }
        } else {
            let prefix = reversed & (primary_len - 1);
            if prefix != sub_prefix {
                // Size the subtable to hold every remaining code that shares this prefix.
                let mut bits = len - primary;
                let mut room: i32 = 1 << bits;
                while bits + primary < max_len {
                    room -= remaining[(bits + primary) as usize] as i32;
                    if room <= 0 {
                        break;
                    }
                    bits += 1;
                    room <<= 1;
                }
                sub_bits = bits;
                sub_offset = next_free;
                next_free += 1 << bits;
                if next_free > table.len() {
                    return Err(InflateError::Invalid("Huffman table overflow"));
                }
                table[sub_offset..next_free].fill(KIND_INVALID);
                table[prefix] = entry(sub_offset as u32, sub_bits, KIND_SUBTABLE, primary);
                sub_prefix = prefix;
            }
            let e = base | (len - primary);
            let mut i = reversed >> primary;
            while i < 1 << sub_bits {
                table[sub_offset + i] = e;
                i += 1 << (len - primary);
            }
        }
        remaining[len as usize] -= 1;
    }
    Ok(())
}

/// Reads a dynamic block's code description (after the 3 header bits) and builds its tables.
pub fn read_dynamic_tables(bits: &mut BitReader, tables: &mut Tables) -> Result<(), InflateError> {
    bits.refill();
    let lit_count = bits.take(5) as usize + 257;
    let dist_count = bits.take(5) as usize + 1;
    let code_length_count = bits.take(4) as usize + 4;
    if lit_count > 286 || dist_count > 30 {
        return Err(InflateError::Invalid("too many length or distance symbols"));
    }
    let mut code_length_lengths = [0u8; 19];
    for &at in &CODE_LENGTH_ORDER[..code_length_count] {
        code_length_lengths[at] = bits.take(3) as u8;
    }
    let mut code_length_table = [KIND_INVALID; 1 << CODE_LENGTH_BITS];
    build_table(&code_length_lengths, &mut code_length_table, CODE_LENGTH_BITS, CodeKind::CodeLength)?;
    let total = lit_count + dist_count;
    let mut lengths = [0u8; 286 + 30];
    let mut i = 0;
    while i < total {
        bits.refill();
        let e = code_length_table[(bits.buf & low_bits(CODE_LENGTH_BITS)) as usize];
        if e & KIND_MASK != KIND_LITERAL {
            return Err(InflateError::Invalid("invalid code lengths set"));
        }
        bits.consume(e & 15);
        let (value, repeat) = match e >> 16 {
            symbol @ 0..=15 => (symbol as u8, 1),
            16 => {
                if i == 0 {
                    return Err(InflateError::Invalid("invalid bit length repeat"));
                }
                (lengths[i - 1], 3 + bits.take(2) as usize)
            }
            17 => (0, 3 + bits.take(3) as usize),
            _ => (0, 11 + bits.take(7) as usize),
        };
        if i + repeat > total {
            return Err(InflateError::Invalid("invalid bit length repeat"));
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    if lengths[256] == 0 {
        return Err(InflateError::Invalid("invalid code -- missing end-of-block"));
    }
    tables.build(&lengths[..lit_count], &lengths[lit_count..total])
}

/// An output element: a byte, or a 16-bit symbol that may name a window position.
pub trait Symbol: Copy + Send + 'static {
    fn literal(byte: u8) -> Self;
    fn extend_from_bytes(out: &mut Vec<Self>, bytes: &[u8]);
}

impl Symbol for u8 {
    #[inline(always)]
    fn literal(byte: u8) -> Self {
        byte
    }
    fn extend_from_bytes(out: &mut Vec<Self>, bytes: &[u8]) {
        out.extend_from_slice(bytes);
    }
}

impl Symbol for u16 {
    #[inline(always)]
    fn literal(byte: u8) -> Self {
        byte as u16
    }
    fn extend_from_bytes(out: &mut Vec<Self>, bytes: &[u8]) {
        out.extend(bytes.iter().map(|&b| b as u16));
    }
}

/// Copies a `len`-element match from `distance` elements back to position `at`.
///
/// # Safety
/// `base` must be valid for writes of `at + len + 8 / size_of::<T>()` elements and
/// `1 <= distance <= at`; elements before `at` must be initialised.
#[inline(always)]
unsafe fn copy_match<T: Symbol>(base: *mut T, at: usize, distance: usize, len: usize) {
    let step = 8 / size_of::<T>();
    // SAFETY: the caller guarantees the ranges; word copies only read elements already written
    // when distance >= step, and may write up to step - 1 elements past the match.
    unsafe {
        let dst = base.add(at);
        let src = dst.sub(distance);
        if distance >= step {
            // Two words cover most matches; longer ones continue word by word.
            (dst as *mut u64).write_unaligned((src as *const u64).read_unaligned());
            (dst.add(step) as *mut u64).write_unaligned((src.add(step) as *const u64).read_unaligned());
            let mut i = 2 * step;
            while i < len {
                (dst.add(i) as *mut u64).write_unaligned((src.add(i) as *const u64).read_unaligned());
                i += step;
            }
        } else {
            // A short period: the first word element by element, then words copied from one
            // whole number of periods (at least a word) back.
            for i in 0..len.min(step) {
                dst.add(i).write(src.add(i).read());
            }
            let back = distance * step.div_ceil(distance);
            let mut i = step;
            while i < len {
                (dst.add(i) as *mut u64).write_unaligned((dst.add(i).sub(back) as *const u64).read_unaligned());
                i += step;
            }
        }
    }
}

/// What the decoder is in the middle of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BlockState {
    /// At a block boundary: the next bits are a block header.
    Header,
    Stored { remaining: usize },
    Huffman,
}

/// Why `Inflater::step` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A block ended (the decoder is at a block boundary).
    BlockEnd,
    /// The output has no room for another symbol: make room and call again.
    Full,
}

/// A resumable DEFLATE decoder reading from a slice at a given bit position.
pub struct Inflater<'a> {
    bits: BitReader<'a>,
    state: BlockState,
    tables: Box<Tables>,
    in_last_block: bool,
    done: bool,
}

impl<'a> Inflater<'a> {
    /// A decoder whose first block header starts at bit `start_bit` of `data`.
    pub fn new(data: &'a [u8], start_bit: u64) -> Self {
        Inflater { bits: BitReader::new(data, start_bit), state: BlockState::Header, tables: Tables::new(), in_last_block: false, done: false }
    }

    /// Absolute bit position of the next unread bit (a block start when `at_boundary`).
    pub fn position(&self) -> u64 {
        self.bits.position()
    }

    /// Whether the decoder sits between blocks.
    pub fn at_boundary(&self) -> bool {
        self.state == BlockState::Header
    }

    /// Whether the final block has been decoded.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Decodes into the spare capacity of `out` until the current block ends or no room for
    /// another symbol is left. Matches may reach back to element `floor` of `out`.
    pub fn step<T: Symbol>(&mut self, out: &mut Vec<T>, floor: usize) -> Result<Step, InflateError> {
        if self.done {
            return Ok(Step::BlockEnd);
        }
        let ended = match self.advance(out, floor) {
            Err(_) if self.bits.overran() => return Err(InflateError::Truncated),
            other => other?,
        };
        if self.bits.overran() {
            return Err(InflateError::Truncated);
        }
        if !ended {
            return Ok(Step::Full);
        }
        self.state = BlockState::Header;
        self.done = self.in_last_block;
        Ok(Step::BlockEnd)
    }

    /// Reads a block header when at a boundary, then decodes; true when the block ended.
    fn advance<T: Symbol>(&mut self, out: &mut Vec<T>, floor: usize) -> Result<bool, InflateError> {
        if self.state == BlockState::Header {
            self.read_block_header()?;
        }
        match self.state {
            BlockState::Stored { remaining } => self.copy_stored(out, remaining),
            _ => self.decode_symbols(out, floor),
        }
    }

    fn read_block_header(&mut self) -> Result<(), InflateError> {
        let header = self.bits.take(3);
        self.in_last_block = header & 1 == 1;
        match header >> 1 {
            0 => {
                let at = self.bits.align_to_byte();
                let data = self.bits.data;
                let Some(lens) = data.get(at..at + 4) else { return Err(InflateError::Truncated) };
                let len = u16::from_le_bytes([lens[0], lens[1]]);
                let nlen = u16::from_le_bytes([lens[2], lens[3]]);
                if len != !nlen {
                    return Err(InflateError::Invalid("invalid stored block lengths"));
                }
                self.bits = BitReader { data, next: at + 4, buf: 0, count: 0 };
                self.state = BlockState::Stored { remaining: len as usize };
            }
            1 => {
                *self.tables = Tables { lit: Tables::fixed().lit, dist: Tables::fixed().dist };
                self.state = BlockState::Huffman;
            }
            2 => {
                read_dynamic_tables(&mut self.bits, &mut self.tables)?;
                self.state = BlockState::Huffman;
            }
            _ => return Err(InflateError::Invalid("invalid block type")),
        }
        Ok(())
    }

    /// Copies what fits of a stored block; true when the block is complete.
    fn copy_stored<T: Symbol>(&mut self, out: &mut Vec<T>, remaining: usize) -> Result<bool, InflateError> {
        let n = remaining.min(out.capacity() - out.len());
        let start = self.bits.next;
        let Some(bytes) = self.bits.data.get(start..start + n) else { return Err(InflateError::Truncated) };
        T::extend_from_bytes(out, bytes);
        self.bits.next += n;
        self.state = BlockState::Stored { remaining: remaining - n };
        Ok(remaining == n)
    }

    /// The symbol loop of a Huffman block; true when the end-of-block code was read.
    fn decode_symbols<T: Symbol>(&mut self, out: &mut Vec<T>, floor: usize) -> Result<bool, InflateError> {
        let capacity = out.capacity();
        if capacity < SYMBOL_ROOM {
            return Ok(false);
        }
        let limit = capacity - SYMBOL_ROOM;
        let base = out.as_mut_ptr();
        let mut at = out.len();
        let lit = &self.tables.lit;
        let dist = &self.tables.dist;
        let mut r = self.bits;
        let result = loop {
            if at > limit {
                break Ok(false);
            }
            r.refill();
            let mut e = lit[(r.buf & low_bits(LIT_BITS)) as usize];
            if e & KIND_MASK == KIND_LITERAL {
                // Literals found in the primary table take at most 11 bits: up to three fit in
                // the 56 refilled bits. SAFETY (writes): at <= limit leaves SYMBOL_ROOM elements.
                r.consume(e & 15);
                unsafe { base.add(at).write(T::literal((e >> 16) as u8)) };
                at += 1;
                e = lit[(r.buf & low_bits(LIT_BITS)) as usize];
                if e & KIND_MASK == KIND_LITERAL {
                    r.consume(e & 15);
                    unsafe { base.add(at).write(T::literal((e >> 16) as u8)) };
                    at += 1;
                    e = lit[(r.buf & low_bits(LIT_BITS)) as usize];
                    if e & KIND_MASK == KIND_LITERAL {
                        r.consume(e & 15);
                        unsafe { base.add(at).write(T::literal((e >> 16) as u8)) };
                        at += 1;
                    }
                }
                continue;
            }
            if e & KIND_MASK == KIND_SUBTABLE {
                r.consume(LIT_BITS);
                e = lit[(e >> 16) as usize + (r.buf & low_bits((e >> 4) & 15)) as usize];
            }
            r.consume(e & 15);
            let kind = e & KIND_MASK;
            if kind == KIND_LITERAL {
                // SAFETY: at <= limit leaves SYMBOL_ROOM elements of capacity.
                unsafe { base.add(at).write(T::literal((e >> 16) as u8)) };
                at += 1;
                continue;
            }
            if kind != KIND_MATCH {
                break if kind == KIND_END { Ok(true) } else { Err(InflateError::Invalid("invalid literal/length code")) };
            }
            let extra = (e >> 4) & 15;
            let len = (e >> 16) as usize + (r.buf & low_bits(extra)) as usize;
            r.consume(extra);
            let mut d = dist[(r.buf & low_bits(DIST_BITS)) as usize];
            if d & KIND_MASK == KIND_SUBTABLE {
                r.consume(DIST_BITS);
                d = dist[(d >> 16) as usize + (r.buf & low_bits((d >> 4) & 15)) as usize];
            }
            r.consume(d & 15);
            if d & KIND_MASK != KIND_MATCH {
                break Err(InflateError::Invalid("invalid distance code"));
            }
            let extra = (d >> 4) & 15;
            let distance = (d >> 16) as usize + (r.buf & low_bits(extra)) as usize;
            r.consume(extra);
            if distance > at - floor {
                break Err(InflateError::Invalid("invalid distance too far back"));
            }
            // SAFETY: at <= limit leaves room for 258 elements plus a word; distance <= at -
            // floor <= at, and everything before `at` is initialised.
            unsafe { copy_match(base, at, distance, len) };
            at += len;
        };
        // SAFETY: every element below `at` has been written.
        unsafe { out.set_len(at) };
        self.bits = r;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes a whole raw deflate stream into bytes, growing the output as needed.
    fn inflate_all(stream: &[u8]) -> Result<Vec<u8>, InflateError> {
        let mut inf = Inflater::new(stream, 0);
        let mut out: Vec<u8> = Vec::with_capacity(SYMBOL_ROOM);
        while !inf.is_done() {
            if inf.step(&mut out, 0)? == Step::Full {
                out.reserve(out.capacity());
            }
        }
        Ok(out)
    }

    fn noisy(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut v = 0i32;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                v = (v + ((s >> 60) as i32 - 8)).clamp(-200, 200);
                (v as u8) ^ ((s >> 33) as u8 & 3)
            })
            .collect()
    }

    #[test]
    fn round_trips_every_level() {
        let data = noisy(300_000, 7);
        for level in [0, 1, 6, 9] {
            assert_eq!(inflate_all(&deflate(&data, level)).unwrap(), data, "level {level}");
        }
    }

    #[test]
    fn runs_and_short_distances() {
        let mut data = vec![0u8; 70_000];
        data.extend((0..70_000u32).map(|i| (i % 3) as u8));
        data.extend((0..70_000u32).map(|i| (i % 7 * 31) as u8));
        assert_eq!(inflate_all(&deflate(&data, 9)).unwrap(), data);
    }

    #[test]
    fn fixed_huffman_block() {
        let data = b"a short text, a short text, compressed with the fixed code".to_vec();
        let stream = deflate(&data, 6);
        assert_eq!((stream[0] >> 1) & 3, 1, "the encoder chose a fixed-Huffman block");
        assert_eq!(inflate_all(&stream).unwrap(), data);
    }

    #[test]
    fn empty_and_tiny() {
        for data in [&b""[..], b"x", b"xy"] {
            assert_eq!(inflate_all(&deflate(data, 6)).unwrap(), data);
        }
    }

    #[test]
    fn sixteen_bit_symbols_mark_window_references() {
        // A stream whose second half repeats bytes of the first: decoded from the second
        // block's start, references into the unknown first part come out as markers.
        let first = noisy(200_000, 3);
        let mut data = first.clone();
        for at in (0..200_000).step_by(20_000) {
            data.extend_from_slice(&first[at..at + 5000]);
            data.extend_from_slice(&noisy(5000, at as u64));
        }
        let stream = deflate(&data, 6);
        let mut inf = Inflater::new(&stream, 0);
        let mut bytes: Vec<u8> = Vec::with_capacity(SYMBOL_ROOM);
        let mut boundaries = Vec::new();
        while !inf.is_done() {
            if inf.step(&mut bytes, 0).unwrap() == Step::Full {
                bytes.reserve(bytes.capacity());
            } else if !inf.is_done() {
                boundaries.push((inf.position(), bytes.len()));
            }
        }
        assert_eq!(bytes, data);
        let &(start, out_start) = boundaries.iter().find(|(_, n)| *n >= 150_000).expect("a block boundary after 150 kB");
        let mut symbols: Vec<u16> = (0..WINDOW_SIZE as u16).map(|j| MARKER_BASE + j).collect();
        symbols.reserve(SYMBOL_ROOM);
        let mut inf = Inflater::new(&stream, start);
        while !inf.is_done() {
            if inf.step(&mut symbols, 0).unwrap() == Step::Full {
                symbols.reserve(symbols.capacity());
            }
        }
        let window = &data[out_start - WINDOW_SIZE..out_start];
        let resolved: Vec<u8> = symbols[WINDOW_SIZE..]
            .iter()
            .map(|&s| if s < MARKER_BASE { s as u8 } else { window[(s - MARKER_BASE) as usize] })
            .collect();
        assert!(symbols[WINDOW_SIZE..].iter().any(|&s| s >= MARKER_BASE), "some references reach the window");
        assert_eq!(resolved, &data[out_start..]);
    }

    #[test]
    fn corrupt_and_truncated_streams_are_errors() {
        let data = noisy(100_000, 11);
        let stream = deflate(&data, 6);
        for cut in [1, 10, stream.len() / 2, stream.len() - 1] {
            assert!(inflate_all(&stream[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(inflate_all(&[0b111]), Err(InflateError::Invalid("invalid block type")));
        let mut flipped = 0;
        for at in (0..stream.len()).step_by(97) {
            let mut bad = stream.clone();
            bad[at] ^= 0x5a;
            match inflate_all(&bad) {
                Err(_) => flipped += 1,
                Ok(out) => assert!(out.len() < 4 * data.len()),
            }
        }
        assert!(flipped > 0);
    }

    #[test]
    fn invalid_codes_are_rejected() {
        // Over-subscribed: three one-bit codes.
        let mut t = [0u32; LIT_TABLE_LEN];
        assert!(build_table(&[1, 1, 1], &mut t, LIT_BITS, CodeKind::LiteralLength).is_err());
        // Incomplete with a two-bit code.
        assert!(build_table(&[2, 2, 2], &mut t, LIT_BITS, CodeKind::LiteralLength).is_err());
        // One one-bit code is allowed (zlib's exception), but not for the code-length code.
        assert!(build_table(&[0, 1], &mut t, LIT_BITS, CodeKind::LiteralLength).is_ok());
        assert!(build_table(&[0, 1], &mut t, CODE_LENGTH_BITS, CodeKind::CodeLength).is_err());
        // A complete code with 15-bit codewords uses subtables within the bound.
        let mut lengths = vec![0u8; 286];
        for (i, l) in lengths.iter_mut().enumerate().take(15) {
            *l = (i + 1) as u8;
        }
        lengths[15] = 15;
        assert!(build_table(&lengths, &mut t, LIT_BITS, CodeKind::LiteralLength).is_ok());
    }
}
