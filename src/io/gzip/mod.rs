//! Gzip (RFC 1952) member decoding straight into a caller's buffer, in parallel for large inputs.
//!
//! The deflate body is cut into chunks of compressed bytes. Chunk 0 decodes from the start; every
//! later chunk searches from its nominal start for a plausible dynamic block (`block_finder`)
//! and decodes from there with 16-bit symbols, references into the unknown 32 KiB before it
//! coming out as window markers, until its last 32 KiB hold no marker; then it continues in bytes.
//! Each chunk stops at the first block boundary at or after the next chunk's nominal start, so
//! a chunk is right exactly when it started where its predecessor stopped. The calling thread
//! takes the chunks in order and works out each one's place in the output and the window before
//! it (resolving only the chunk's last 32 KiB); any thread then resolves the chunk's markers
//! straight into its place and computes its CRC. A chunk that started elsewhere (a
//! false-positive block start), failed, or found nothing is decoded again sequentially from
//! where its predecessor stopped. Memory stays bounded: only a few chunks are in flight and
//! their buffers are recycled. CRC32 and ISIZE are checked at the end (chunk CRCs combined).

pub mod block_finder;
pub mod inflate;

use crate::io::LoadProgress;
use block_finder::find_dynamic_block;
use inflate::{InflateError, Inflater, MARKER_BASE, SYMBOL_ROOM, Step, WINDOW_SIZE};
use memmap2::{Mmap, UncheckedAdvice};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// Why the fast path could not decode a gzip member (the caller falls back to flate2, whose
/// errors are the ones users see).
#[derive(Debug, thiserror::Error)]
pub enum GzipError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a gzip stream")]
    NotGzip,
    #[error("unsupported gzip header: {0}")]
    Header(&'static str),
    #[error(transparent)]
    Inflate(#[from] InflateError),
    #[error("CRC32 mismatch")]
    Crc,
    #[error("ISIZE mismatch")]
    Length,
    #[error("the member holds {got} bytes, {needed} needed")]
    Short { got: u64, needed: u64 },
    #[error("more data follows the first gzip member")]
    MoreMembers,
}

/// How a decode went: chunks taken as decoded speculatively, and chunks decoded again
/// sequentially (wrong start, failure, or nothing found).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub chunks: usize,
    pub accepted: usize,
    pub redone: usize,
}

/// How a member is split across threads.
#[derive(Clone, Debug)]
pub struct ParallelPlan {
    /// Worker threads decoding chunks; 1 decodes sequentially.
    pub threads: usize,
    /// Deflate bodies shorter than this are decoded sequentially.
    pub min_parallel_input: usize,
    /// Compressed bytes per chunk; `None` picks a size from the member's compression ratio.
    pub chunk_input: Option<usize>,
}

impl Default for ParallelPlan {
    fn default() -> Self {
        ParallelPlan { threads: rayon::current_num_threads(), min_parallel_input: 8 << 20, chunk_input: None }
    }
}

/// Decoded bytes aimed at per chunk when the chunk size is picked automatically.
const CHUNK_OUTPUT: usize = 2 << 20;
/// Symbols resolved at a time (a cache-sized piece, then its CRC) when a chunk is placed.
const RESOLVE_BLOCK: usize = 64 << 10;
/// Output buffer of the sequential decoder beyond its window.
const SEQUENTIAL_BUFFER: usize = 1 << 20;
/// Consumed input is released from the mapping in steps of this many bytes.
const RELEASE_STEP: usize = 8 << 20;

/// Decodes the first gzip member of the file at `path` like `decode_member`, through a read-only
/// mapping whose pages behind the decoder are released as it goes (so the input does not add
/// to the resident memory). `progress` is told how many file bytes lie behind the decoder.
pub fn decode_file(
    path: &Path,
    skip: u64,
    out: &mut [u8],
    plan: &ParallelPlan,
    progress: Option<&LoadProgress>,
) -> Result<DecodeStats, GzipError> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the mapping is only read; a file changed under it by another process can change
    // or fault the bytes read, the hazard every mapped reader accepts.
    let map = unsafe { Mmap::map(&file)? };
    let total = map.len() as u64;
    let mut released = 0usize;
    let mut consumed = |done: usize| {
        if let Some(p) = progress {
            p.report(done as u64, total);
        }
        let upto = done / RELEASE_STEP * RELEASE_STEP;
        if upto > released {
            // SAFETY: dropping pages of a read-only shared file mapping loses nothing: a later
            // read faults them back in from the file.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, released, upto - released) };
            released = upto;
        }
    };
    decode_member(&map, skip, out, plan, &mut consumed)
}

/// Decodes the first gzip member of `data`: the first `skip` decompressed bytes are dropped, the
/// next `out.len()` are written to `out`, and the rest of the member is decoded (not stored) so
/// that its CRC32 and ISIZE can be checked. `consumed` is called on the calling thread with the
/// number of input bytes behind the decoder. Data after the member is an error (`MoreMembers`).
pub fn decode_member(
    data: &[u8],
    skip: u64,
    out: &mut [u8],
    plan: &ParallelPlan,
    consumed: &mut dyn FnMut(usize),
) -> Result<DecodeStats, GzipError> {
    let body = parse_header(data)?;
    let needed = skip + out.len() as u64;
    let mut assembly = Assembly::new(out, skip, consumed);
    let body_end = data.len().saturating_sub(8).max(body);
    let (end_bit, stats) = match ChunkLayout::new(body, body_end, data, plan) {
        Some(layout) => decode_parallel(data, &layout, plan.threads, &mut assembly)?,
        None => {
            let mut buffer = Vec::new();
            let (end, _) = assembly.decode_sequential(data, body as u64 * 8, u64::MAX, &mut buffer)?;
            (end, DecodeStats::default())
        }
    };
    (assembly.consumed)(data.len());
    let trailer_at = end_bit.div_ceil(8) as usize;
    let Some(trailer) = data.get(trailer_at..trailer_at + 8) else { return Err(InflateError::Truncated.into()) };
    let crc = u32::from_le_bytes(trailer[..4].try_into().unwrap());
    let isize = u32::from_le_bytes(trailer[4..].try_into().unwrap());
    if assembly.crc.finalize() != crc {
        return Err(GzipError::Crc);
    }
    if assembly.produced as u32 != isize {
        return Err(GzipError::Length);
    }
    if assembly.produced < needed {
        return Err(GzipError::Short { got: assembly.produced, needed });
    }
    if trailer_at + 8 != data.len() {
        return Err(GzipError::MoreMembers);
    }
    Ok(stats)
}

/// Checks the gzip member header and returns the offset of the deflate body.
fn parse_header(data: &[u8]) -> Result<usize, GzipError> {
    let truncated = || GzipError::Inflate(InflateError::Truncated);
    if data.len() < 2 || data[..2] != [0x1f, 0x8b] {
        return Err(GzipError::NotGzip);
    }
    let fixed = data.get(..10).ok_or_else(truncated)?;
    if fixed[2] != 8 {
        return Err(GzipError::Header("compression method is not deflate"));
    }
    let flags = fixed[3];
    if flags & 0xe0 != 0 {
        return Err(GzipError::Header("reserved flag bits set"));
    }
    let mut at = 10usize;
    if flags & 4 != 0 {
        let len = data.get(at..at + 2).ok_or_else(truncated)?;
        at += 2 + u16::from_le_bytes([len[0], len[1]]) as usize;
    }
    for flag in [8u8, 16] {
        if flags & flag != 0 {
            let text = data.get(at..).ok_or_else(truncated)?;
            at += text.iter().position(|&b| b == 0).ok_or_else(truncated)? + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    if at > data.len() {
        return Err(truncated());
    }
    Ok(at)
}

/// The byte every 16-bit symbol stands for, given the window before the symbols.
struct WindowTable {
    bytes: Box<[u8; 1 << 16]>,
    /// Window positions before the start of the stream (an error to refer to).
    missing: usize,
}

impl WindowTable {
    /// `window` holds the last `window.len()` bytes before the symbols: fewer than 32 KiB only
    /// near the start of the stream.
    fn new(window: &[u8]) -> Self {
        let mut bytes = Box::new([0u8; 1 << 16]);
        for (v, b) in bytes[..256].iter_mut().enumerate() {
            *b = v as u8;
        }
        let missing = WINDOW_SIZE - window.len();
        let base = MARKER_BASE as usize + missing;
        bytes[base..base + window.len()].copy_from_slice(window);
        WindowTable { bytes, missing }
    }

    /// Replaces window markers by the bytes they name.
    fn resolve(&self, symbols: &[u16], out: &mut [u8]) -> Result<(), InflateError> {
        let before_stream = MARKER_BASE..MARKER_BASE + self.missing as u16;
        if self.missing > 0 && symbols.iter().any(|s| before_stream.contains(s)) {
            return Err(InflateError::Invalid("invalid distance too far back"));
        }
        // Runs of plain bytes are narrowed 16 at a time; only groups holding a marker are looked
        // up symbol by symbol.
        let mut groups = out.chunks_exact_mut(16).zip(symbols.chunks_exact(16));
        for (o, s) in &mut groups {
            if s.iter().fold(0, |any, &v| any | v) < MARKER_BASE {
                for (o, &v) in o.iter_mut().zip(s) {
                    *o = v as u8;
                }
            } else {
                for (o, &v) in o.iter_mut().zip(s) {
                    *o = self.bytes[v as usize];
                }
            }
        }
        let done = out.len().min(symbols.len()) / 16 * 16;
        for (o, &v) in out[done..].iter_mut().zip(&symbols[done..]) {
            *o = self.bytes[v as usize];
        }
        Ok(())
    }
}

/// Keeps the last 32 KiB of what `window` held followed by `bytes`.
fn push_window(window: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() >= WINDOW_SIZE {
        window.clear();
        window.extend_from_slice(&bytes[bytes.len() - WINDOW_SIZE..]);
    } else {
        let excess = (window.len() + bytes.len()).saturating_sub(WINDOW_SIZE);
        window.drain(..excess);
        window.extend_from_slice(bytes);
    }
}

/// The CRC32 of the stream, assembled in order from pieces of which some (chunks resolved on
/// worker threads) arrive later.
struct CrcPieces {
    pieces: Vec<CrcPiece>,
}

enum CrcPiece {
    Ready(crc32fast::Hasher),
    Chunk(usize),
}

impl CrcPieces {
    fn update(&mut self, bytes: &[u8]) {
        if !matches!(self.pieces.last(), Some(CrcPiece::Ready(_))) {
            self.pieces.push(CrcPiece::Ready(crc32fast::Hasher::new()));
        }
        if let Some(CrcPiece::Ready(h)) = self.pieces.last_mut() {
            h.update(bytes);
        }
    }

    /// Fills in the pieces of chunks from `chunk_crcs` (indexed by chunk).
    fn fill(&mut self, chunk_crcs: &mut [Option<crc32fast::Hasher>]) {
        for piece in &mut self.pieces {
            if let CrcPiece::Chunk(k) = *piece {
                *piece = CrcPiece::Ready(chunk_crcs[k].take().unwrap_or_default());
            }
        }
    }

    fn finalize(&self) -> u32 {
        let mut total = crc32fast::Hasher::new();
        for piece in &self.pieces {
            if let CrcPiece::Ready(h) = piece {
                total.combine(h);
            }
        }
        total.finalize()
    }
}

/// The decoded stream as it is put together in order: what falls in the caller's range goes to
/// the front of the part of the buffer not yet written; also its CRC pieces, its length and
/// its last 32 KiB.
struct Assembly<'o, 'c> {
    rest: &'o mut [u8],
    skip: u64,
    end: u64,
    produced: u64,
    crc: CrcPieces,
    window: Vec<u8>,
    consumed: &'c mut dyn FnMut(usize),
}

impl<'o, 'c> Assembly<'o, 'c> {
    fn new(out: &'o mut [u8], skip: u64, consumed: &'c mut dyn FnMut(usize)) -> Self {
        let end = skip + out.len() as u64;
        Assembly { rest: out, skip, end, produced: 0, crc: CrcPieces { pieces: Vec::new() }, window: Vec::with_capacity(WINDOW_SIZE), consumed }
    }

    /// Takes the next `len` bytes of the stream: returns the part of the caller's buffer they
    /// land in, and where in those `len` bytes that part begins.
    fn claim(&mut self, len: usize) -> (&'o mut [u8], usize) {
        let start = self.produced;
        let stop = start + len as u64;
        let lo = start.max(self.skip);
        let take = stop.min(self.end).saturating_sub(lo) as usize;
        let (head, tail) = std::mem::take(&mut self.rest).split_at_mut(take);
        self.rest = tail;
        self.produced = stop;
        (head, lo.saturating_sub(start).min(len as u64) as usize)
    }

    /// Appends decoded bytes.
    fn emit(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        let (dst, from) = self.claim(bytes.len());
        dst.copy_from_slice(&bytes[from..from + dst.len()]);
        push_window(&mut self.window, bytes);
    }

    /// Decodes from block start `start` (with the current window as history) until the first
    /// block boundary at or after `stop`, or the end of the final block. Returns the bit
    /// position reached and whether the final block was decoded.
    fn decode_sequential(&mut self, data: &[u8], start: u64, stop: u64, buffer: &mut Vec<u8>) -> Result<(u64, bool), GzipError> {
        buffer.clear();
        buffer.reserve(WINDOW_SIZE + SEQUENTIAL_BUFFER);
        buffer.extend_from_slice(&self.window);
        let mut from = buffer.len();
        let mut inf = Inflater::new(data, start);
        while !(inf.at_boundary() && (inf.is_done() || inf.position() >= stop)) {
            if inf.step(buffer, 0)? == Step::Full {
                self.emit(&buffer[from..]);
                buffer.drain(..buffer.len() - WINDOW_SIZE);
                from = WINDOW_SIZE;
                (self.consumed)((inf.position() / 8) as usize);
            }
        }
        self.emit(&buffer[from..]);
        Ok((inf.position(), inf.is_done()))
    }

    /// Takes a speculatively decoded chunk: advances the window past it (resolving only its
    /// last 32 KiB) and returns the work of writing it out, for any thread.
    fn accept(&mut self, k: usize, chunk: ChunkOutput) -> Result<Placement<'o>, GzipError> {
        let table = WindowTable::new(&self.window);
        let (marked, tail_bytes) = (chunk.marked(), chunk.bytes());
        let marked_tail = WINDOW_SIZE.saturating_sub(tail_bytes.len()).min(marked.len());
        let mut resolved = vec![0u8; marked_tail];
        table.resolve(&marked[marked.len() - marked_tail..], &mut resolved)?;
        push_window(&mut self.window, &resolved);
        push_window(&mut self.window, tail_bytes);
        let (dst, dst_from) = self.claim(marked.len() + tail_bytes.len());
        self.crc.pieces.push(CrcPiece::Chunk(k));
        Ok(Placement { k, chunk, table, dst, dst_from })
    }
}

/// Writing an accepted chunk into its part of the caller's buffer and computing its CRC.
struct Placement<'o> {
    k: usize,
    chunk: ChunkOutput,
    /// Resolves the chunk's markers from the window before it.
    table: WindowTable,
    dst: &'o mut [u8],
    /// Position in the chunk's output of `dst[0]`.
    dst_from: usize,
}

impl Placement<'_> {
    fn run(&mut self) -> Result<crc32fast::Hasher, InflateError> {
        let mut crc = crc32fast::Hasher::new();
        let mut scratch = Vec::new();
        let marked = self.chunk.marked();
        let dst_end = self.dst_from + self.dst.len();
        let mut at = 0;
        while at < marked.len() {
            // Cache-sized pieces that lie either inside `dst` or outside it.
            let mut end = (at + RESOLVE_BLOCK).min(marked.len());
            for edge in [self.dst_from, dst_end] {
                if at < edge && edge < end {
                    end = edge;
                }
            }
            let bytes: &mut [u8] = if at >= self.dst_from && end <= dst_end {
                &mut self.dst[at - self.dst_from..end - self.dst_from]
            } else {
                scratch.resize(end - at, 0);
                &mut scratch
            };
            self.table.resolve(&marked[at..end], bytes)?;
            crc.update(bytes);
            at = end;
        }
        let bytes = self.chunk.bytes();
        crc.update(bytes);
        copy_clipped(self.dst, self.dst_from, at, bytes);
        Ok(crc)
    }
}

/// Copies `bytes`, found at position `at` of a chunk's output, into `dst`, which holds the
/// chunk's output from position `dst_from` on.
fn copy_clipped(dst: &mut [u8], dst_from: usize, at: usize, bytes: &[u8]) {
    let lo = at.max(dst_from);
    let hi = (at + bytes.len()).min(dst_from + dst.len());
    if lo < hi {
        dst[lo - dst_from..hi - dst_from].copy_from_slice(&bytes[lo - at..hi - at]);
    }
}

/// Where the chunks of a deflate body start and how large they may grow.
struct ChunkLayout {
    start_bit: u64,
    end_bit: u64,
    chunk_bits: u64,
    chunks: usize,
    /// Initial output capacity of a chunk.
    expected_output: usize,
    /// A speculative chunk producing more than this is abandoned (decoded again sequentially).
    max_output: usize,
}

impl ChunkLayout {
    /// The layout for a parallel decode, or `None` when the body should be decoded sequentially.
    fn new(body: usize, body_end: usize, data: &[u8], plan: &ParallelPlan) -> Option<Self> {
        let input = body_end - body;
        if plan.threads < 2 || input < plan.min_parallel_input.max(1) {
            return None;
        }
        // ISIZE of a single-member file gives the compression ratio (a hint only).
        let isize = data.len().checked_sub(4).map_or(0, |at| u32::from_le_bytes(data[at..].try_into().unwrap()) as usize);
        let ratio = (isize as f64 / input as f64).max(1.0);
        let chunk_input = plan.chunk_input.unwrap_or(((CHUNK_OUTPUT as f64 / ratio) as usize).clamp(64 << 10, 2 << 20)).max(1);
        let chunks = input.div_ceil(chunk_input);
        if chunks < 2 {
            return None;
        }
        // A quarter more than the average, so that most chunks fit without growing.
        let expected_output = ((chunk_input as f64 * ratio * 1.25) as usize).clamp(64 << 10, 8 << 20) + SYMBOL_ROOM;
        Some(ChunkLayout {
            start_bit: body as u64 * 8,
            end_bit: body_end as u64 * 8,
            chunk_bits: chunk_input as u64 * 8,
            chunks,
            expected_output,
            max_output: (4 * expected_output).max(4 << 20),
        })
    }

    fn nominal_start(&self, k: usize) -> u64 {
        self.start_bit + k as u64 * self.chunk_bits
    }

    /// Chunk `k` ends at the first block boundary at or after this bit.
    fn stop(&self, k: usize) -> u64 {
        if k + 1 < self.chunks { self.nominal_start(k + 1) } else { u64::MAX }
    }
}

/// A chunk decoded speculatively from `start` to `end` (bit positions of block boundaries).
struct ChunkOutput {
    start: u64,
    end: u64,
    last: bool,
    /// Output decoded while references could still reach the unknown window, after
    /// `marked_from` elements of window markers.
    marked: Vec<u16>,
    marked_from: usize,
    /// The rest of the output, after `bytes_from` elements of history.
    bytes: Vec<u8>,
    bytes_from: usize,
}

impl ChunkOutput {
    fn marked(&self) -> &[u16] {
        &self.marked[self.marked_from..]
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[self.bytes_from..]
    }
}

/// The state the workers and the in-order consumer share.
struct Board<'o> {
    /// Decoded chunks waiting for the consumer (`Some(None)`: the chunk failed).
    results: Vec<Option<Option<ChunkOutput>>>,
    /// Next chunk to decode.
    next: usize,
    /// Chunks claimed whose buffers are not yet given back.
    outstanding: usize,
    placements: std::collections::VecDeque<Placement<'o>>,
    /// Placements queued or running.
    placing: usize,
    crcs: Vec<Option<crc32fast::Hasher>>,
    failed: Option<InflateError>,
    /// No new chunks are to be decoded (the final block was reached, or an error).
    closed: bool,
    stop: bool,
    /// Buffers of placed or rejected chunks, for the next chunks.
    spare_marked: Vec<Vec<u16>>,
    spare_bytes: Vec<Vec<u8>>,
}

impl Board<'_> {
    fn recycle(&mut self, mut chunk: ChunkOutput) {
        chunk.marked.clear();
        chunk.bytes.clear();
        self.spare_marked.push(chunk.marked);
        self.spare_bytes.push(chunk.bytes);
    }
}

struct Workshop<'d, 'o> {
    data: &'d [u8],
    layout: &'d ChunkLayout,
    board: Mutex<Board<'o>>,
    changed: Condvar,
    in_flight: usize,
    abort: AtomicBool,
}

/// What a thread of the workshop does next.
enum Job<'o> {
    Place(Placement<'o>),
    Decode(usize),
}

impl<'o> Workshop<'_, 'o> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Board<'o>> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A job if one is available: placements first (they free memory), then the next chunk
    /// while few enough are in flight.
    fn next_job(&self, board: &mut Board<'o>, decode: bool) -> Option<Job<'o>> {
        if let Some(p) = board.placements.pop_front() {
            return Some(Job::Place(p));
        }
        if decode && !board.closed && board.next < self.layout.chunks && board.outstanding < self.in_flight {
            board.next += 1;
            board.outstanding += 1;
            return Some(Job::Decode(board.next - 1));
        }
        None
    }

    fn run(&self, job: Job<'o>) {
        match job {
            Job::Place(mut p) => {
                let result = p.run();
                let mut board = self.lock();
                match result {
                    Ok(crc) => board.crcs[p.k] = Some(crc),
                    Err(e) => board.failed = Some(e),
                }
                board.recycle(p.chunk);
                board.placing -= 1;
                board.outstanding -= 1;
            }
            Job::Decode(k) => {
                // A panic here must not leave the consumer waiting: the chunk is then redone
                // sequentially on the calling thread.
                let chunk = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode_chunk(k))).unwrap_or(None);
                self.lock().results[k] = Some(chunk);
            }
        }
        self.changed.notify_all();
    }

    /// Runs jobs (decodes too when `decode`) until `ready` finds what the caller waits for.
    fn serve<R>(&self, decode: bool, mut ready: impl FnMut(&mut Board<'o>) -> Option<R>) -> R {
        let mut board = self.lock();
        loop {
            if let Some(found) = ready(&mut board) {
                return found;
            }
            match self.next_job(&mut board, decode) {
                Some(job) => {
                    drop(board);
                    self.run(job);
                    board = self.lock();
                }
                None => board = self.changed.wait(board).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    fn worker(&self) {
        self.serve(true, |board| board.stop.then_some(()));
    }

    /// Waits for chunk `k`, running placements meanwhile.
    fn take(&self, k: usize) -> Option<ChunkOutput> {
        self.serve(false, |board| board.results[k].take())
    }

    /// Hands an accepted chunk to the threads.
    fn place(&self, placement: Placement<'o>) {
        let mut board = self.lock();
        board.placing += 1;
        board.placements.push_back(placement);
        drop(board);
        self.changed.notify_all();
    }

    /// Gives back the claim of a chunk that was not accepted.
    fn give_back(&self, chunk: Option<ChunkOutput>) {
        let mut board = self.lock();
        board.outstanding -= 1;
        if let Some(c) = chunk {
            board.recycle(c);
        }
        drop(board);
        self.changed.notify_all();
    }

    /// Stops new chunks, helps with the remaining placements, stops the workers; returns the
    /// chunk CRCs or the first placement error.
    fn finish(&self) -> Result<Vec<Option<crc32fast::Hasher>>, InflateError> {
        self.abort.store(true, Ordering::Relaxed);
        let mut board = self.lock();
        board.closed = true;
        while board.placing > 0 {
            match self.next_job(&mut board, false) {
                Some(job) => {
                    drop(board);
                    self.run(job);
                    board = self.lock();
                }
                None => board = self.changed.wait(board).unwrap_or_else(|e| e.into_inner()),
            }
        }
        board.stop = true;
        self.changed.notify_all();
        match board.failed {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut board.crcs)),
        }
    }

    /// Decodes chunk `k` speculatively; `None` when no block start was found, the decode failed
    /// or grew past the limit.
    fn decode_chunk(&self, k: usize) -> Option<ChunkOutput> {
        let stop = self.layout.stop(k);
        let (mut marked, mut bytes) = {
            let mut board = self.lock();
            (board.spare_marked.pop().unwrap_or_default(), board.spare_bytes.pop().unwrap_or_default())
        };
        if k == 0 {
            let start = self.layout.start_bit;
            let mut inf = Inflater::new(self.data, start);
            bytes.reserve(self.layout.expected_output);
            self.run_symbols(&mut inf, &mut bytes, stop, self.layout.max_output)?;
            return Some(ChunkOutput { start, end: inf.position(), last: inf.is_done(), marked, marked_from: 0, bytes, bytes_from: 0 });
        }
        let start = find_dynamic_block(self.data, self.layout.nominal_start(k), stop.min(self.layout.end_bit))?;
        marked.reserve(WINDOW_SIZE + self.layout.expected_output);
        marked.extend((0..WINDOW_SIZE as u16).map(|j| MARKER_BASE + j));
        let mut inf = Inflater::new(self.data, start);
        let switched = loop {
            if inf.at_boundary() && (inf.is_done() || inf.position() >= stop) {
                break false;
            }
            match inf.step(&mut marked, 0).ok()? {
                Step::Full => {
                    if marked.len() > self.layout.max_output || self.abort.load(Ordering::Relaxed) {
                        return None;
                    }
                    marked.reserve(marked.capacity());
                }
                Step::BlockEnd => {
                    let n = marked.len();
                    if n >= 2 * WINDOW_SIZE && marked[n - WINDOW_SIZE..].iter().all(|&s| s < MARKER_BASE) {
                        break true;
                    }
                }
            }
        };
        let mut bytes_from = 0;
        if switched {
            bytes.reserve(self.layout.expected_output);
            bytes.extend(marked[marked.len() - WINDOW_SIZE..].iter().map(|&s| s as u8));
            bytes_from = WINDOW_SIZE;
            let limit = self.layout.max_output.saturating_sub(marked.len());
            self.run_symbols(&mut inf, &mut bytes, stop, limit)?;
        }
        Some(ChunkOutput { start, end: inf.position(), last: inf.is_done(), marked, marked_from: WINDOW_SIZE, bytes, bytes_from })
    }

    /// Continues `inf` until the first boundary at or after `stop` or the final block.
    fn run_symbols<T: inflate::Symbol>(&self, inf: &mut Inflater, out: &mut Vec<T>, stop: u64, limit: usize) -> Option<()> {
        while !(inf.at_boundary() && (inf.is_done() || inf.position() >= stop)) {
            if inf.step(out, 0).ok()? == Step::Full {
                if out.len() > limit || self.abort.load(Ordering::Relaxed) {
                    return None;
                }
                out.reserve(out.capacity());
            }
        }
        Some(())
    }
}

/// Decodes the body in chunks on `threads` workers, assembling them in order on this thread;
/// returns the bit position where the final block ends.
fn decode_parallel<'o>(data: &[u8], layout: &ChunkLayout, threads: usize, assembly: &mut Assembly<'o, '_>) -> Result<(u64, DecodeStats), GzipError> {
    let workshop = Workshop {
        data,
        layout,
        board: Mutex::new(Board {
            results: (0..layout.chunks).map(|_| None).collect(),
            next: 0,
            outstanding: 0,
            placements: Default::default(),
            placing: 0,
            crcs: vec![None; layout.chunks],
            failed: None,
            closed: false,
            stop: false,
            spare_marked: Vec::new(),
            spare_bytes: Vec::new(),
        }),
        changed: Condvar::new(),
        in_flight: threads + 1,
        abort: AtomicBool::new(false),
    };
    let (result, crcs) = std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| workshop.worker());
        }
        let result = assemble(&workshop, assembly);
        (result, workshop.finish())
    });
    let done = result?;
    assembly.crc.fill(&mut crcs?);
    Ok(done)
}

/// Takes the chunks in order; a chunk that did not start where its predecessor stopped is
/// replaced by a sequential decode.
fn assemble<'o>(workshop: &Workshop<'_, 'o>, assembly: &mut Assembly<'o, '_>) -> Result<(u64, DecodeStats), GzipError> {
    let (data, layout) = (workshop.data, workshop.layout);
    let mut stats = DecodeStats { chunks: layout.chunks, ..Default::default() };
    let mut position = layout.start_bit;
    let mut last = false;
    let mut sequential = Vec::new();
    for k in 0..layout.chunks {
        let chunk = workshop.take(k);
        let mut accepted = false;
        let mut rejected = None;
        if let Some(c) = chunk {
            if c.start > position {
                // A gap before the found block (a stored or fixed block the finder skips, or a
                // false positive): decode up to it and see whether we land there.
                (position, last) = assembly.decode_sequential(data, position, c.start, &mut sequential)?;
            }
            if c.start == position && !last {
                (position, last) = (c.end, c.last);
                workshop.place(assembly.accept(k, c)?);
                accepted = true;
            } else {
                rejected = Some(c);
            }
        }
        if accepted {
            stats.accepted += 1;
        } else {
            workshop.give_back(rejected);
            if !last {
                (position, last) = assembly.decode_sequential(data, position, layout.stop(k), &mut sequential)?;
                stats.redone += 1;
            }
        }
        (assembly.consumed)((position / 8) as usize);
        if last {
            return Ok((position, stats));
        }
    }
    Err(InflateError::Truncated.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn flate2_decode(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    fn plan(threads: usize, chunk: usize) -> ParallelPlan {
        ParallelPlan { threads, min_parallel_input: 0, chunk_input: Some(chunk) }
    }

    /// Decodes all of `gz` after `skip` bytes with `plan`.
    fn decode(gz: &[u8], skip: u64, len: usize, plan: &ParallelPlan) -> Result<Vec<u8>, GzipError> {
        decode_with_stats(gz, skip, len, plan).map(|(out, _)| out)
    }

    fn decode_with_stats(gz: &[u8], skip: u64, len: usize, plan: &ParallelPlan) -> Result<(Vec<u8>, DecodeStats), GzipError> {
        let mut out = vec![0u8; len];
        let stats = decode_member(gz, skip, &mut out, plan, &mut |_| {})?;
        Ok((out, stats))
    }

    /// CT-like 16-bit noise: slowly varying values plus a few noisy low bits (about 2:1).
    fn ct_like(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut v = 0i32;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            v = (v + ((s >> 61) as i32 - 4)).clamp(-1000, 1000);
            let sample = (v + ((s >> 40) & 15) as i32) as i16;
            out.extend_from_slice(&sample.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn equals_flate2_at_every_level_and_chunking() {
        let data = ct_like(600_000, 1);
        for level in [0, 1, 6, 9] {
            let gz = gzip(&data, level);
            let expected = flate2_decode(&gz);
            if level == 1 {
                assert_eq!((gz[10] >> 1) & 3, 1, "zlib-rs level 1 starts with a fixed-Huffman block");
            }
            for (threads, chunk) in [(1, 1 << 20), (2, gz.len() / 2), (3, gz.len() / 3), (4, gz.len() / 4), (3, 5000)] {
                let (got, stats) = decode_with_stats(&gz, 0, data.len(), &plan(threads, chunk)).unwrap();
                assert!(got == expected, "level {level}, {threads} threads, chunks of {chunk}");
                if threads == 1 {
                    assert_eq!(stats.chunks, 0);
                } else if level <= 1 {
                    // Stored blocks (level 0) and zlib-rs's level 1, which writes fixed-Huffman
                    // blocks only, offer no dynamic block to start from: all but chunk 0 redone.
                    assert!(stats.accepted == 1 && stats.redone > 0, "level {level}: {stats:?}");
                } else if chunk == 5000 {
                    // Blocks span several 5 kB chunks: the chunks without a block start are
                    // decoded as part of their predecessor's redo.
                    assert!(stats.accepted >= 3 && stats.accepted + stats.redone <= stats.chunks, "{stats:?}");
                } else {
                    // The last chunk may hold only the final block's start, which is not searched.
                    assert!(stats.accepted + 1 >= stats.chunks, "{stats:?}");
                }
            }
        }
    }

    #[test]
    fn skip_and_trailing_bytes_are_decoded_not_stored() {
        let data = ct_like(400_000, 2);
        let gz = gzip(&data, 6);
        for p in [plan(1, 1 << 20), plan(2, 7000)] {
            let got = decode(&gz, 352, 300_000, &p).unwrap();
            assert_eq!(got, &data[352..300_352]);
        }
    }

    #[test]
    fn compressible_and_tiny_inputs() {
        let mut data = vec![0u8; 500_000];
        data.extend((0..500_000u32).map(|i| (i / 1000) as u8));
        let gz = gzip(&data, 6);
        assert_eq!(decode(&gz, 0, data.len(), &plan(2, 300)).unwrap(), data);
        for tiny in [&b""[..], b"a", b"hello hello hello"] {
            let gz = gzip(tiny, 6);
            assert_eq!(decode(&gz, 0, tiny.len(), &plan(4, 1)).unwrap(), tiny);
        }
    }

    #[test]
    fn fixed_huffman_blocks_between_dynamic_ones() {
        // Many small flushed pieces: zlib emits fixed-Huffman blocks for the short ones.
        let data = ct_like(300_000, 3);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        for (n, piece) in data.chunks(20_000).enumerate() {
            if n % 2 == 0 {
                e.write_all(piece).unwrap();
            } else {
                e.write_all(&piece[..20]).unwrap();
                e.flush().unwrap();
                e.write_all(&piece[20..]).unwrap();
            }
            e.flush().unwrap();
        }
        let gz = e.finish().unwrap();
        for p in [plan(1, 1 << 20), plan(2, 3000), plan(3, 11_000)] {
            assert_eq!(decode(&gz, 0, data.len(), &p).unwrap(), data);
        }
    }

    /// A gzip member whose first block is stored and holds, byte-aligned, the start of a real
    /// non-final dynamic block: a block start the finder cannot tell from a real one.
    fn with_false_block_start() -> (Vec<u8>, Vec<u8>, usize) {
        let tail = ct_like(200_000, 4);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        raw.write_all(&tail).unwrap();
        let deflated_tail = raw.finish().unwrap();
        let mut payload = vec![0x55u8; 3000];
        payload.extend_from_slice(&deflated_tail[..2000]);
        payload[3000] &= !1; // BFINAL = 0
        payload.extend_from_slice(&[0xaa; 3000]);
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        gz.push(0); // stored, not final
        gz.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        gz.extend_from_slice(&(!(payload.len() as u16)).to_le_bytes());
        gz.extend_from_slice(&payload);
        let fake_at = 10 + 5 + 3000;
        gz.extend_from_slice(&deflated_tail);
        let mut data = payload;
        data.extend_from_slice(&tail);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&data);
        gz.extend_from_slice(&crc.finalize().to_le_bytes());
        gz.extend_from_slice(&(data.len() as u32).to_le_bytes());
        (gz, data, fake_at)
    }

    #[test]
    fn false_positive_block_start_is_redone() {
        let (gz, data, fake_at) = with_false_block_start();
        assert_eq!(flate2_decode(&gz), data);
        let body = 10;
        let chunk = fake_at - body - 100;
        // Chunk 1 starts 100 bytes before the fake header and the finder takes it.
        assert_eq!(find_dynamic_block(&gz, ((body + chunk) * 8) as u64, u64::MAX), Some(fake_at as u64 * 8));
        for threads in [2, 3] {
            let (got, stats) = decode_with_stats(&gz, 0, data.len(), &plan(threads, chunk)).unwrap();
            assert_eq!(got, data);
            assert!(stats.redone >= 1 && stats.accepted >= 2, "{stats:?}");
        }
    }

    #[test]
    fn files_decode_through_a_mapping_with_progress() {
        let data = ct_like(500_000, 6);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, gzip(&data, 6)).unwrap();
        let reports = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let progress = LoadProgress::new(move |done, total| sink.lock().unwrap().push((done, total)));
        let mut out = vec![0u8; data.len() - 100];
        let stats = decode_file(&path, 100, &mut out, &plan(2, 20_000), Some(&progress)).unwrap();
        assert_eq!(out, &data[100..]);
        assert!(stats.accepted >= 2, "{stats:?}");
        let reports = reports.lock().unwrap();
        let total = std::fs::metadata(&path).unwrap().len();
        assert_eq!(reports.last(), Some(&(total, total)));
        assert!(reports.len() > 2 && reports.windows(2).all(|w| w[0].0 <= w[1].0), "{reports:?}");
    }

    #[test]
    fn corrupt_and_truncated_members_are_errors() {
        let data = ct_like(300_000, 5);
        let gz = gzip(&data, 6);
        for p in [plan(1, 1 << 20), plan(3, 9000)] {
            for cut in [5, 12, gz.len() / 3, gz.len() - 9, gz.len() - 4, gz.len() - 1] {
                assert!(decode(&gz[..cut], 0, data.len(), &p).is_err(), "cut at {cut}");
            }
            let mut bad_crc = gz.clone();
            let n = bad_crc.len();
            bad_crc[n - 8] ^= 1;
            assert!(matches!(decode(&bad_crc, 0, data.len(), &p), Err(GzipError::Crc)));
            let mut bad_len = gz.clone();
            bad_len[n - 1] ^= 1;
            assert!(matches!(decode(&bad_len, 0, data.len(), &p), Err(GzipError::Length)));
            assert!(matches!(decode(&gz, 0, data.len() + 1, &p), Err(GzipError::Short { .. })));
            let mut two = gz.clone();
            two.extend_from_slice(&gzip(b"more", 6));
            assert!(matches!(decode(&two, 0, data.len(), &p), Err(GzipError::MoreMembers)));
            for at in (10..gz.len() - 8).step_by(gz.len() / 37) {
                let mut bad = gz.clone();
                bad[at] ^= 0x24;
                assert!(decode(&bad, 0, data.len(), &p).is_err(), "flip at {at}");
            }
            assert!(matches!(decode(b"PK\x03\x04", 0, 0, &p), Err(GzipError::NotGzip)));
        }
    }

    #[test]
    fn randomly_damaged_streams_never_panic() {
        // Thousands of streams with a few random bytes replaced and a random length: each one
        // decodes to an error (or, rarely, to the right bytes), never a panic or a bad write.
        let data = ct_like(60_000, 3);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for level in [1, 6, 9] {
            let gz = gzip(&data, level);
            for p in [plan(1, 1 << 20), plan(3, 4000)] {
                for _ in 0..700 {
                    let mut bad = gz.clone();
                    for _ in 0..1 + next() % 4 {
                        let at = (next() as usize) % bad.len();
                        bad[at] = next() as u8;
                    }
                    if next() % 4 == 0 {
                        bad.truncate((next() as usize) % bad.len());
                    }
                    if let Ok(out) = decode(&bad, 0, data.len(), &p) {
                        assert_eq!(out, data);
                    }
                }
            }
        }
    }
}
