//! Damaged copies of every kind of file the program reads: NIfTI (plain and gzip), DICOM (each
//! transfer syntax among the fixtures), MetaImage, .npz, PyTorch and safetensors checkpoints,
//! the model yaml and the segment-batch CSV manifests.
//!
//! Each fixture gets the same seeded, deterministic mutations: truncations, bit flips, 32-bit
//! words set to huge values (at random places and on the format's own length fields), and
//! for text, numbers made huge and bytes that are not UTF-8. Every mutated file is parsed
//! under `catch_unwind`: an error or a success are both fine, a panic fails the test, naming
//! the file and the mutation. Memory is metered by this binary's allocator: a mutated file
//! may not make a reader allocate more than 64 MiB plus what its bytes could inflate to
//! (1032 x, deflate's limit), and single allocations over 1 GiB are refused and reported.
//! The CLI is also run on the hostile DICOM fixtures under an address-space limit, expecting
//! exit status 2 with the problem named.

use medsam_viewer::io::{self, OpenOptions};
use medsam_viewer::model::checkpoint::Checkpoint;
use medsam_viewer::model::config::Sam2Config;
use medsam_viewer::segment::batch::Manifest;
use medsam_viewer::volume::SliceAxis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Single allocations larger than this are refused (and recorded) rather than made.
const REFUSE_ABOVE: usize = 1 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and their peak.
struct Metered;

impl Metered {
    fn grew(by: usize) {
        let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
    fn refuse(size: usize) -> *mut u8 {
        REFUSED.fetch_max(size, Ordering::Relaxed);
        std::ptr::null_mut()
    }
}

// SAFETY: every call is passed on to `System` unchanged, or answered with null (allocation
// failure), which callers of a global allocator must handle.
unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE {
            return Self::refuse(layout.size());
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_ABOVE {
            return Self::refuse(layout.size());
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > REFUSE_ABOVE {
            return Self::refuse(new_size);
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Metered = Metered;

/// One test meters at a time (the counters are global), and panics are silent while a
/// mutated file is parsed (they are counted, not printed).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static PARSING: AtomicBool = AtomicBool::new(false);

fn quiet_panics_while_parsing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PARSING.load(Ordering::SeqCst) {
                default(info);
            }
        }));
    });
}

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// What a damaged file's parse came to, per reader.
#[derive(Default)]
struct Tally {
    mutations: usize,
    errors: usize,
    accepted: usize,
    problems: Vec<String>,
}

impl Tally {
    fn finish(self, reader: &str) {
        println!(
            "{reader}: {} mutations, {} refused with an error, {} read, {} problems",
            self.mutations,
            self.errors,
            self.accepted,
            self.problems.len()
        );
        assert!(
            self.problems.is_empty(),
            "{reader}: {} problem(s):\n{}",
            self.problems.len(),
            self.problems.join("\n")
        );
    }
}

/// Parses `bytes` as a file named `name` (extensions matter to the readers) and records how
/// it went.
fn exercise(
    tally: &mut Tally,
    dir: &Path,
    name: &str,
    mutation: &str,
    bytes: &[u8],
    parse: &dyn Fn(&Path) -> Result<(), String>,
) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    // Written straight to stderr (not captured): if an allocation failure aborts the
    // process, the last line names the culprit.
    let _ = writeln!(std::io::stderr(), "damaged_files: {name}: {mutation}");
    let budget = (64usize << 20)
        .saturating_add(bytes.len().saturating_mul(1032))
        .min(REFUSE_ABOVE);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    REFUSED.store(0, Ordering::Relaxed);
    PARSING.store(true, Ordering::SeqCst);
    let outcome = catch_unwind(AssertUnwindSafe(|| parse(&path)));
    PARSING.store(false, Ordering::SeqCst);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let refused = REFUSED.load(Ordering::Relaxed);
    tally.mutations += 1;
    match outcome {
        Ok(Ok(())) => tally.accepted += 1,
        Ok(Err(_)) => tally.errors += 1,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned());
            tally.problems.push(format!(
                "{name}: {mutation}: panic: {}",
                text.unwrap_or_default()
            ));
        }
    }
    if refused > 0 {
        tally.problems.push(format!(
            "{name}: {mutation}: tried to allocate {refused} bytes at once ({} byte file)",
            bytes.len()
        ));
    } else if peak > budget {
        tally.problems.push(format!(
            "{name}: {mutation}: peak allocation {peak} bytes, over the {budget}-byte budget"
        ));
    }
}

/// How a format's own length fields are found, for the "length set huge" mutations.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Nifti,
    Dicom,
    Zip,
    Gzip,
    Safetensors,
    /// Text (or a text header, up to the given byte) where numbers are the lengths.
    Text(usize),
}

const HUGE: u32 = 0xFFFF_FFF0;

fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
    if at + 4 <= bytes.len() {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// Up to `n` of `candidates`, evenly spread.
fn spread(candidates: Vec<usize>, n: usize) -> Vec<usize> {
    if candidates.len() <= n {
        return candidates;
    }
    (0..n)
        .map(|i| candidates[i * candidates.len() / n])
        .collect()
}

fn find_all(bytes: &[u8], pattern: &[u8]) -> Vec<usize> {
    bytes
        .windows(pattern.len())
        .enumerate()
        .filter(|(_, w)| *w == pattern)
        .map(|(i, _)| i)
        .collect()
}

/// DICOM value representations whose explicit-VR length field is 32 bits (after 2 reserved bytes).
const LONG_VRS: [&[u8; 2]; 11] = [
    b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UT", b"UC", b"UR",
];
const SHORT_VRS: [&[u8; 2]; 20] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL",
];

/// The format's own length fields, each set huge: (name, mutated bytes).
fn length_field_mutations(bytes: &[u8], kind: Kind) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // `value` written at byte `at` (little endian), where it fits.
    let mut with = |name: String, at: usize, value: &[u8]| {
        if at + value.len() <= bytes.len() {
            let mut b = bytes.to_vec();
            b[at..at + value.len()].copy_from_slice(value);
            out.push((name, b));
        }
    };
    let huge = HUGE.to_le_bytes();
    match kind {
        Kind::Text(_) => {}
        Kind::Nifti => {
            for (field, at) in [
                ("sizeof_hdr", 0),
                ("dim[0..2]", 40),
                ("dim[2..4]", 44),
                ("dim[4..6]", 48),
                ("datatype", 70),
                ("vox_offset", 108),
            ] {
                with(
                    format!("NIfTI {field} at byte {at} set to {HUGE:#x}"),
                    at,
                    &huge,
                );
                with(
                    format!("NIfTI {field} at byte {at} set to 0x7fff7fff"),
                    at,
                    &0x7FFF_7FFFu32.to_le_bytes(),
                );
            }
        }
        Kind::Dicom => {
            let mut fields = Vec::new();
            for i in 0..bytes.len().saturating_sub(12) {
                let vr = &bytes[i + 4..i + 6];
                if LONG_VRS.iter().any(|v| v.as_slice() == vr) && bytes[i + 6..i + 8] == [0, 0] {
                    fields.push((i + 8, true));
                } else if SHORT_VRS.iter().any(|v| v.as_slice() == vr) && bytes[i] % 2 == 0 {
                    fields.push((i + 6, false));
                }
            }
            for at in find_all(bytes, &[0xFE, 0xFF, 0x00, 0xE0]) {
                fields.push((at + 4, true));
            }
            fields.sort_unstable();
            let chosen: Vec<usize> = spread((0..fields.len()).collect(), 24);
            for k in chosen {
                let (at, long) = fields[k];
                if long {
                    with(
                        format!("DICOM 32-bit length at byte {at} set to {HUGE:#x}"),
                        at,
                        &huge,
                    );
                } else {
                    with(
                        format!("DICOM 16-bit length at byte {at} set to 0xfff0"),
                        at,
                        &0xFFF0u16.to_le_bytes(),
                    );
                }
            }
        }
        Kind::Zip => {
            for (sig, fields) in [
                (
                    b"PK\x03\x04",
                    &[
                        ("local compressed size", 18),
                        ("local size", 22),
                        ("local name length", 26),
                    ][..],
                ),
                (
                    b"PK\x01\x02",
                    &[
                        ("central compressed size", 20),
                        ("central size", 24),
                        ("central local offset", 42),
                    ][..],
                ),
                (
                    b"PK\x05\x06",
                    &[("directory size", 12), ("directory offset", 16)][..],
                ),
                (
                    b"PK\x06\x06",
                    &[("zip64 directory size", 40), ("zip64 directory offset", 48)][..],
                ),
            ] {
                for at in spread(find_all(bytes, sig), 4) {
                    for (field, offset) in fields {
                        with(
                            format!("zip {field} of the record at byte {at} set to {HUGE:#x}"),
                            at + offset,
                            &huge,
                        );
                    }
                }
            }
        }
        Kind::Gzip => {
            let n = bytes.len();
            with(format!("gzip ISIZE set to {HUGE:#x}"), n - 4, &huge);
            with(format!("gzip CRC32 set to {HUGE:#x}"), n - 8, &huge);
            with("gzip FLG with FEXTRA and a huge XLEN".into(), 3, &[0x04]);
        }
        Kind::Safetensors => {
            with(
                format!("safetensors header length set to {HUGE:#x}"),
                0,
                &huge,
            );
            with(
                "safetensors header length set to u64::MAX".into(),
                0,
                &u64::MAX.to_le_bytes(),
            );
        }
    }
    out
}

/// Numbers in a text (or text header up to `end`) replaced by a huge one, up to 48 of them.
fn number_mutations(bytes: &[u8], end: usize) -> Vec<(String, Vec<u8>)> {
    let end = end.min(bytes.len());
    let mut starts = Vec::new();
    let mut i = 0;
    while i < end {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit()) {
            starts.push(i);
        }
        i += 1;
    }
    spread(starts, 48)
        .into_iter()
        .map(|at| {
            let len = bytes[at..end]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let mut b = bytes[..at].to_vec();
            b.extend_from_slice(b"4294967280");
            b.extend_from_slice(&bytes[at + len..]);
            (format!("number at byte {at} made 4294967280"), b)
        })
        .collect()
}

/// Every mutation of `bytes`, deterministic for a given `seed`.
fn mutations(bytes: &[u8], kind: Kind, seed: u64) -> Vec<(String, Vec<u8>)> {
    let n = bytes.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut cuts = vec![
        0,
        1,
        7,
        64,
        n / 8,
        n / 4,
        n / 2,
        3 * n / 4,
        n.saturating_sub(8),
        n.saturating_sub(1),
    ];
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts.into_iter().filter(|&c| c < n) {
        out.push((
            format!("truncated to {cut} of {n} bytes"),
            bytes[..cut].to_vec(),
        ));
    }
    let head = n.min(1024);
    let tail_start = n.saturating_sub(512);
    // Where a random mutation lands: half in the head (headers), a quarter in the tail
    // (zip directories, gzip trailers), a quarter anywhere.
    let mut place = |k: usize| match k % 4 {
        0 | 1 => rng.random_range(0..head),
        2 => rng.random_range(tail_start..n),
        _ => rng.random_range(0..n),
    };
    let spots: Vec<usize> = (0..48).map(&mut place).collect();
    let words: Vec<usize> = (0..32).map(|k| place(k + 1) & !1).collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
    for at in spots {
        let bit = rng.random_range(0..8u32);
        let mut b = bytes.to_vec();
        b[at] ^= 1 << bit;
        out.push((format!("bit {bit} of byte {at} flipped"), b));
    }
    for at in words {
        let mut b = bytes.to_vec();
        set_u32(&mut b, at, HUGE);
        out.push((format!("32-bit word at byte {at} set to {HUGE:#x}"), b));
    }
    out.extend(length_field_mutations(bytes, kind));
    if let Kind::Text(end) = kind {
        out.extend(number_mutations(bytes, end));
        for k in 0..4 {
            let at = rng.random_range(0..end.min(n));
            let mut b = bytes.to_vec();
            b.insert(at, 0xFF);
            b.insert(at, 0xC3 + k as u8);
            out.push((format!("bytes that are not UTF-8 inserted at byte {at}"), b));
        }
    }
    out
}

/// Runs every mutation of each fixture through `parse`.
fn mutate_all(
    reader: &str,
    fixtures: &[(PathBuf, Kind)],
    parse: &dyn Fn(&Path) -> Result<(), String>,
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    quiet_panics_while_parsing();
    let dir = tempfile::tempdir().unwrap();
    let mut tally = Tally::default();
    for (n, (path, kind)) in fixtures.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for (mutation, damaged) in mutations(&bytes, *kind, 0xDA3A6E ^ n as u64) {
            exercise(&mut tally, dir.path(), &name, &mutation, &damaged, parse);
        }
    }
    tally.finish(reader);
}

fn open_image(path: &Path) -> Result<(), String> {
    io::open(path, &OpenOptions::default())
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn nifti_files() {
    let fixtures: Vec<(PathBuf, Kind)> = [
        "dtype_uint8.nii",
        "dtype_int16.nii",
        "dtype_float64.nii",
        "dtype_int32.nii",
        "qform_only.nii",
        "scaled_int16_slope2_inter-1024.nii",
        "bad/huge_dims.nii",
        "bad/bad_sizeof_hdr.nii",
    ]
    .iter()
    .map(|f| (fixture(&format!("data/nifti/{f}")), Kind::Nifti))
    .collect();
    mutate_all("NIfTI", &fixtures, &open_image);
}

#[test]
fn gzip_nifti_files() {
    let fixtures: Vec<(PathBuf, Kind)> = [
        "dtype_float32.nii.gz",
        "dtype_int16.nii.gz",
        "4d_xyzt3.nii.gz",
        "oblique.nii.gz",
    ]
    .iter()
    .map(|f| (fixture(&format!("data/nifti/{f}")), Kind::Gzip))
    .collect();
    mutate_all("NIfTI .nii.gz (gzip)", &fixtures, &open_image);
}

/// Every DICOM fixture that is a single readable file, one per transfer syntax and layout.
fn dicom_fixtures() -> Vec<(PathBuf, Kind)> {
    let mut files: Vec<PathBuf> = [
        "JPEG2000.dcm",
        "bare-data-set.dcm",
        "junk-integer-string.dcm",
        "JPGExtended.dcm",
        "enhanced-ct.dcm",
        "image_dfl.dcm",
        "jpeg-baseline.dcm",
        "jpeg-lossless-p14.dcm",
        "jpeg-lossless-sv1.dcm",
        "monochrome1.dcm",
        "signed-12bit.dcm",
    ]
    .iter()
    .map(|f| fixture(&format!("dicom-extra/{f}")))
    .collect();
    for f in [
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ] {
        files.push(fixture(&format!("data/dicom/pydicom-samples/{f}")));
    }
    files.into_iter().map(|f| (f, Kind::Dicom)).collect()
}

#[test]
fn dicom_files() {
    mutate_all("DICOM", &dicom_fixtures(), &open_image);
}

#[test]
fn metaimage_files() {
    // A .mha with its header inline; the text header is where DimSize and friends live.
    let fixtures: Vec<(PathBuf, Kind)> = ["mr_sagittal.mha", "ct_phantom_zlib.mha"]
        .iter()
        .map(|f| {
            let path = fixture(&format!("data/mhd/{f}"));
            let bytes = std::fs::read(&path).unwrap();
            let header_end = find_all(&bytes, b"ElementDataFile")
                .first()
                .map_or(bytes.len(), |at| at + 40);
            (path, Kind::Text(header_end))
        })
        .collect();
    mutate_all("MetaImage", &fixtures, &open_image);
}

#[test]
fn npz_files() {
    mutate_all(
        "npz",
        &[(fixture("npz/CT_Lesion_000002_03_01_035-047.npz"), Kind::Zip)],
        &open_image,
    );
}

fn open_checkpoint(path: &Path) -> Result<(), String> {
    Checkpoint::open(path).map(drop).map_err(|e| e.to_string())
}

#[test]
fn pytorch_checkpoint() {
    mutate_all(
        ".pt checkpoint",
        &[(fixture("sam2-mini/model.pt"), Kind::Zip)],
        &open_checkpoint,
    );
}

#[test]
fn safetensors_checkpoint() {
    let path = fixture("sam2-mini/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    mutate_all(
        ".safetensors checkpoint",
        &[
            (path.clone(), Kind::Safetensors),
            (path, Kind::Text(header_end)),
        ],
        &open_checkpoint,
    );
}

#[test]
fn model_config_yaml() {
    let path = fixture("sam2-mini/config.yaml");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    mutate_all("model yaml", &[(path, Kind::Text(len))], &|p: &Path| {
        Sam2Config::from_file(p)
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

#[test]
fn segment_batch_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("manifest.csv");
    std::fs::write(&ours, "image,slice,box,window,label,range,axis\na.nii.gz,4,\"33,33,73,68\",\"-1008,-769\",2,\"1,7\",axial\nb.nii.gz,2,\"75,10,105,40\",,1,,\n").unwrap();
    let deeplesion = dir.path().join("DeepLesion_Dataset_Info.csv");
    std::fs::write(
        &deeplesion,
        "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Bounding_boxes,Slice_range,DICOM_windows\n\
         000015_01_01_085.png,15,1,1,85,\"33.7, 33.2, 68.9, 73.4\",\"81, 88\",\"-1024, -769\"\n",
    )
    .unwrap();
    let fixtures: Vec<(PathBuf, Kind)> = [ours, deeplesion]
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len() as usize;
            (p, Kind::Text(len))
        })
        .collect();
    mutate_all("segment-batch CSV", &fixtures, &|p: &Path| {
        Manifest::read(p, None, SliceAxis::Axial)
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

/// `medsam-viewer info FILE` under a 2 GiB address-space limit.
fn info_limited(path: &Path) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_medsam-viewer"));
    command.arg("info").arg(path).env("RAYON_NUM_THREADS", "2");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().unwrap()
}

#[test]
fn hostile_dicom_files_exit_2_in_bounded_memory() {
    // Not metered, but kept apart from the metered tests so that its messages are not silenced.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sound = info_limited(&fixture("dicom-extra/image_dfl.dcm"));
    assert_eq!(
        sound.status.code(),
        Some(0),
        "the limit leaves room for a sound file: {}",
        String::from_utf8_lossy(&sound.stderr)
    );
    for (file, names) in [
        ("rle-segment-count.dcm", "declares 65535 segments"),
        ("rle-short-segment.dcm", "RLE segment 1 expands to"),
        ("deflate-huge-length.dcm", "declares 3489660928 bytes"),
    ] {
        let out = info_limited(&fixture(&format!("dicom-extra/{file}")));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.contains(names) && !stderr.contains("panicked"),
            "{file}: {stderr}"
        );
    }
}
