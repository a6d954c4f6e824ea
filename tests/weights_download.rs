//! Downloading and locating the MedSAM2 checkpoints against a loopback imitation of the Hugging
//! Face hub: a std `TcpListener` on 127.0.0.1 answering the requests hf-hub's blocking client
//! sends (`GET /{repo}/resolve/main/{file}` with `Range: bytes=0-0` for the metadata, a 302 to a
//! CDN address the way the hub answers for LFS files, then `Range: bytes={start}-` for the
//! transfer) with the headers it reads (X-Repo-Commit, X-Linked-Etag, X-Linked-Size,
//! Content-Range, Location). It serves the seeded checkpoint tests/fixtures/sam2-mini/model.pt
//! with its real SHA-256 as the ETag, under the name of one published checkpoint. Nothing here
//! reaches the internet.

use medsam_viewer::io::nifti;
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use medsam_viewer::weights::{
    self, CheckpointError, DownloadError, DownloadOptions, Downloaded, HubFile, LocateError, Located, ModelVariant,
    SearchPlaces, Source,
};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MODEL_PT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini/model.pt");
const MODEL_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini/config.yaml");
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// Git blob id of the LFS pointer: the hub's plain ETag, which hf-hub must not take for the file's.
const POINTER_ETAG: &str = "6d34772f5ca361021038b404fb913ec8dc0b1a5a";
const LATEST: &str = "MedSAM2_latest.pt";
const HTML: &[u8] = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n";

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn model_bytes() -> Vec<u8> {
    std::fs::read(MODEL_PT).unwrap()
}

/// How the imitation hub behaves.
#[derive(Clone)]
struct HubSetup {
    /// The file of `wanglab/MedSAM2` served; every other path is answered 404.
    file: &'static str,
    /// Bytes served for the file.
    content: Vec<u8>,
    /// ETag announced (the SHA-256 of the genuine file).
    etag: String,
    /// False: a plain web server answering every request with an HTML page and no hub headers.
    hub_headers: bool,
    /// The first transfer request sends this many body bytes, then the connection is closed.
    cut_first_transfer_after: Option<usize>,
    /// Pause after each 16 KiB of body, so a client can be stopped mid-transfer.
    pace: Option<Duration>,
}

impl HubSetup {
    fn serving(content: Vec<u8>) -> Self {
        let etag = sha256_hex(&content);
        Self { file: LATEST, content, etag, hub_headers: true, cut_first_transfer_after: None, pace: None }
    }
}

/// One request as the imitation hub saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
}

struct FakeHub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeHub {
    fn start(setup: HubSetup) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cut_done = Arc::new(AtomicBool::new(false));
        let setup = Arc::new(setup);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (setup, log, cut_done) = (setup.clone(), log.clone(), cut_done.clone());
                std::thread::spawn(move || serve(stream, addr, &setup, &log, &cut_done));
            }
        });
        Self { addr, seen }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Start offsets of the transfer requests to the CDN address (`Range: bytes=N-`; the
    /// metadata probes, `bytes=0-0`, excluded).
    fn transfer_starts(&self) -> Vec<u64> {
        self.seen()
            .iter()
            .filter(|s| s.path.starts_with("/cdn/"))
            .filter_map(|s| s.range.as_deref()?.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
            .collect()
    }
}

fn serve(stream: TcpStream, addr: SocketAddr, setup: &HubSetup, log: &Mutex<Vec<Seen>>, cut_done: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    log.lock().unwrap().push(Seen { path: path.clone(), range: range.clone() });
    let mut out = stream;
    let hub = format!(
        "X-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"{}\"\r\nX-Linked-Size: {}\r\nETag: \"{POINTER_ETAG}\"\r\n",
        setup.etag,
        setup.content.len(),
    );
    if !setup.hub_headers {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", HTML.len());
        let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(HTML));
        return;
    }
    let blob_path = format!("/cdn/{}", setup.etag);
    if path == format!("/wanglab/MedSAM2/resolve/main/{}", setup.file) {
        // The hub's answer for an LFS file: hub headers and a redirect to the CDN.
        let head = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{addr}{blob_path}\r\n{hub}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = out.write_all(head.as_bytes());
        return;
    }
    if path != blob_path {
        let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let total = setup.content.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) {
        Some((a, b)) => (a.parse::<usize>().unwrap(), if b.is_empty() { total.saturating_sub(1) } else { b.parse().unwrap() }),
        None => (0, total - 1),
    };
    if start >= total {
        let head = format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = out.write_all(head.as_bytes());
        return;
    }
    let body = &setup.content[start..=end];
    let head = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{total}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let is_probe = end == start && range.is_some();
    let limit = match setup.cut_first_transfer_after {
        Some(n) if !is_probe && !cut_done.swap(true, Ordering::SeqCst) => n.min(body.len()),
        _ => body.len(),
    };
    for chunk in body[..limit].chunks(16 << 10) {
        if out.write_all(chunk).is_err() {
            return;
        }
        if let Some(pause) = setup.pace {
            std::thread::sleep(pause);
        }
    }
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}

fn options(hub: &FakeHub, cache: &Path, retries: usize) -> DownloadOptions {
    DownloadOptions {
        hub_file: HubFile::default(),
        endpoint: Some(hub.endpoint()),
        cache_dir: Some(cache.to_path_buf()),
        retries,
    }
}

fn repo_folder(cache: &Path) -> PathBuf {
    cache.join("models--wanglab--MedSAM2")
}

fn snapshot_file(cache: &Path) -> PathBuf {
    snapshot_of(cache, LATEST)
}

fn snapshot_of(cache: &Path, file: &str) -> PathBuf {
    repo_folder(cache).join("snapshots").join(COMMIT).join(file)
}

fn part_file(cache: &Path, etag: &str) -> PathBuf {
    repo_folder(cache).join("blobs").join(format!("{etag}.part"))
}

fn blob_file(cache: &Path, etag: &str) -> PathBuf {
    repo_folder(cache).join("blobs").join(etag)
}

/// Runs a download, returning its result and every (done, total) reported.
fn run_download(options: &DownloadOptions, cancel_at: Option<u64>) -> (Result<Downloaded, DownloadError>, Vec<(u64, u64)>) {
    let cancel = AtomicBool::new(false);
    let mut reports = Vec::new();
    let result = weights::download(
        options,
        |done, total| {
            reports.push((done, total));
            if cancel_at.is_some_and(|at| done >= at) {
                cancel.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    );
    (result, reports)
}

fn places(weights_files: Vec<PathBuf>, cache: Option<&Path>) -> SearchPlaces {
    SearchPlaces {
        weights_files,
        hub_cache: cache.map(Path::to_path_buf),
        hub_file: HubFile::default(),
        endpoint: "https://huggingface.co".into(),
    }
}

#[test]
fn download_lands_in_the_standard_cache_layout_byte_identical() {
    let content = model_bytes();
    let hub = FakeHub::start(HubSetup::serving(content.clone()));
    let cache = tempfile::tempdir().unwrap();
    let (result, reports) = run_download(&options(&hub, cache.path(), 0), None);
    let done = result.unwrap();
    let sha = sha256_hex(&content);

    assert_eq!(done.path, snapshot_file(cache.path()));
    assert_eq!(done.sha256, sha);
    assert_eq!(done.bytes, content.len() as u64);
    assert_eq!(done.commit, COMMIT);
    assert!(!done.reused);
    assert_eq!(std::fs::read(&done.path).unwrap(), content);
    // Snapshot entry → ../../blobs/<sha256>, refs/main → commit: what Python's huggingface_hub writes.
    assert_eq!(std::fs::read_link(&done.path).unwrap(), Path::new("../../blobs").join(&sha));
    assert_eq!(std::fs::read_to_string(repo_folder(cache.path()).join("refs/main")).unwrap(), COMMIT);
    assert!(!part_file(cache.path(), &sha).exists());

    let total = content.len() as u64;
    assert!(reports.len() > 10, "{} progress reports", reports.len());
    assert!(reports.iter().all(|&(_, t)| t == total));
    assert!(reports.windows(2).all(|w| w[0].0 <= w[1].0), "progress went backwards");
    assert_eq!(reports.last(), Some(&(total, total)));
    assert_eq!(hub.transfer_starts(), vec![0]);

    // A second download finds the verified copy and transfers nothing.
    let (again, reports) = run_download(&options(&hub, cache.path(), 0), None);
    let again = again.unwrap();
    assert!(again.reused);
    assert_eq!(again.path, done.path);
    assert_eq!(reports, vec![(total, total)]);
    assert_eq!(hub.transfer_starts(), vec![0]);
}

#[test]
fn interrupted_download_resumes_from_the_part_file_with_a_range_request() {
    let content = model_bytes();
    let sha = sha256_hex(&content);
    let hub = FakeHub::start(HubSetup { cut_first_transfer_after: Some(1 << 20), ..HubSetup::serving(content.clone()) });
    let cache = tempfile::tempdir().unwrap();

    let (first, _) = run_download(&options(&hub, cache.path(), 0), None);
    let part = part_file(cache.path(), &sha);
    match first {
        Err(DownloadError::Interrupted { part: reported, .. }) => assert_eq!(reported, part),
        other => panic!("expected an interrupted transfer, got {other:?}"),
    }
    let kept = std::fs::read(&part).unwrap();
    assert!(!kept.is_empty() && kept.len() <= 1 << 20, "{} bytes kept", kept.len());
    assert_eq!(kept[..], content[..kept.len()]);
    assert!(!snapshot_file(cache.path()).exists());

    let (second, reports) = run_download(&options(&hub, cache.path(), 0), None);
    let done = second.unwrap();
    assert_eq!(std::fs::read(&done.path).unwrap(), content);
    assert_eq!(hub.transfer_starts(), vec![0, kept.len() as u64]);
    // Progress starts at the resume point, not at zero.
    assert_eq!(reports.first(), Some(&(kept.len() as u64, content.len() as u64)));
    assert!(!part.exists());
}

#[test]
fn retries_resume_within_one_call() {
    let content = model_bytes();
    let hub = FakeHub::start(HubSetup { cut_first_transfer_after: Some(300_000), ..HubSetup::serving(content.clone()) });
    let cache = tempfile::tempdir().unwrap();
    let (result, _) = run_download(&options(&hub, cache.path(), 2), None);
    let done = result.unwrap();
    assert_eq!(std::fs::read(&done.path).unwrap(), content);
    let starts = hub.transfer_starts();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[0], 0);
    assert!(starts[1] > 0 && starts[1] <= 300_000, "{starts:?}");
}

#[test]
fn cancel_returns_cancelled_keeps_the_part_and_a_later_download_resumes() {
    let content = model_bytes();
    let sha = sha256_hex(&content);
    let hub = FakeHub::start(HubSetup::serving(content.clone()));
    let cache = tempfile::tempdir().unwrap();

    let (result, reports) = run_download(&options(&hub, cache.path(), 3), Some(1 << 20));
    assert!(matches!(result, Err(DownloadError::Cancelled)), "{result:?}");
    let stopped_at = reports.last().unwrap().0;
    assert!(stopped_at >= 1 << 20 && stopped_at < content.len() as u64);
    let part = part_file(cache.path(), &sha);
    let kept = std::fs::metadata(&part).unwrap().len();
    // The block whose report triggered the cancel is not written; the resume fetches it again.
    assert!(kept < stopped_at && stopped_at - kept <= 64 << 10, "{kept} kept, stopped at {stopped_at}");
    assert!(!snapshot_file(cache.path()).exists());
    assert!(!blob_file(cache.path(), &sha).exists());

    let (resumed, _) = run_download(&options(&hub, cache.path(), 0), None);
    assert_eq!(std::fs::read(resumed.unwrap().path).unwrap(), content);
    assert_eq!(hub.transfer_starts(), vec![0, kept]);
}

#[test]
fn cancel_before_start_transfers_nothing() {
    let hub = FakeHub::start(HubSetup::serving(model_bytes()));
    let cache = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(true);
    let result = weights::download(&options(&hub, cache.path(), 0), |_, _| {}, &cancel);
    assert!(matches!(result, Err(DownloadError::Cancelled)), "{result:?}");
    assert!(hub.transfer_starts().is_empty());
}

#[test]
fn corrupted_body_is_detected_and_nothing_valid_is_left() {
    let genuine = model_bytes();
    let mut corrupted = genuine.clone();
    corrupted[genuine.len() / 2] ^= 0x55;
    let sha = sha256_hex(&genuine);
    let hub = FakeHub::start(HubSetup { content: corrupted, ..HubSetup::serving(genuine.clone()) });
    let cache = tempfile::tempdir().unwrap();

    let (result, _) = run_download(&options(&hub, cache.path(), 0), None);
    match result {
        Err(DownloadError::Mismatch { expected, actual }) => {
            assert_eq!(expected, sha);
            assert_ne!(actual, sha);
        }
        other => panic!("expected a SHA-256 mismatch, got {other:?}"),
    }
    assert!(std::fs::symlink_metadata(snapshot_file(cache.path())).is_err(), "snapshot entry left");
    assert!(!blob_file(cache.path(), &sha).exists());
    assert!(!part_file(cache.path(), &sha).exists());
    let located = weights::locate_in(None, &places(vec![], Some(cache.path())));
    assert!(matches!(located, Err(LocateError::NotFound(_))), "{located:?}");

    // The same cache then takes a good copy from a correct server.
    let good = FakeHub::start(HubSetup::serving(genuine.clone()));
    let (result, _) = run_download(&options(&good, cache.path(), 0), None);
    assert_eq!(std::fs::read(result.unwrap().path).unwrap(), genuine);
}

#[test]
fn corrupt_copy_already_in_the_cache_is_replaced() {
    let genuine = model_bytes();
    let hub = FakeHub::start(HubSetup::serving(genuine.clone()));
    let cache = tempfile::tempdir().unwrap();
    let first = run_download(&options(&hub, cache.path(), 0), None).0.unwrap();
    let blob = std::fs::canonicalize(&first.path).unwrap();
    let mut damaged = genuine.clone();
    damaged[100] ^= 1;
    std::fs::write(&blob, damaged).unwrap();

    let second = run_download(&options(&hub, cache.path(), 0), None).0.unwrap();
    assert!(!second.reused);
    assert_eq!(std::fs::read(&second.path).unwrap(), genuine);
    assert_eq!(hub.transfer_starts(), vec![0, 0]);
}

#[test]
fn complete_part_left_by_a_killed_process_finishes() {
    let content = model_bytes();
    let sha = sha256_hex(&content);
    let hub = FakeHub::start(HubSetup::serving(content.clone()));
    let cache = tempfile::tempdir().unwrap();
    let part = part_file(cache.path(), &sha);
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &content).unwrap();

    let done = run_download(&options(&hub, cache.path(), 0), None).0.unwrap();
    assert_eq!(std::fs::read(&done.path).unwrap(), content);
    assert_eq!(hub.transfer_starts(), vec![content.len() as u64 - 1]);
}

#[test]
fn html_page_from_a_plain_web_server_is_rejected() {
    let hub = FakeHub::start(HubSetup { hub_headers: false, ..HubSetup::serving(model_bytes()) });
    let cache = tempfile::tempdir().unwrap();
    let (result, _) = run_download(&options(&hub, cache.path(), 3), None);
    match &result {
        Err(error @ DownloadError::NotAHub { .. }) => assert!(error.to_string().contains("HF_ENDPOINT"), "{error}"),
        other => panic!("expected NotAHub, got {other:?}"),
    }
    assert_eq!(hub.seen().len(), 1, "not a transient failure: no retry");
    assert!(!repo_folder(cache.path()).exists());
}

#[test]
fn html_page_announced_like_a_file_is_rejected_and_removed() {
    // A proxy that keeps the hub headers but serves a login page whose SHA-256 it announces.
    let hub = FakeHub::start(HubSetup::serving(HTML.to_vec()));
    let cache = tempfile::tempdir().unwrap();
    let sha = sha256_hex(HTML);
    let (result, _) = run_download(&options(&hub, cache.path(), 0), None);
    assert!(
        matches!(result, Err(DownloadError::NotACheckpoint { reason: CheckpointError::Html })),
        "{result:?}"
    );
    assert!(std::fs::symlink_metadata(snapshot_file(cache.path())).is_err());
    assert!(!blob_file(cache.path(), &sha).exists());
}

#[test]
fn missing_file_is_a_404_with_a_hint() {
    let hub = FakeHub::start(HubSetup::serving(model_bytes()));
    let cache = tempfile::tempdir().unwrap();
    let mut options = options(&hub, cache.path(), 3);
    options.hub_file.repo = "nobody/nothing".into();
    let (result, _) = run_download(&options, None);
    match &result {
        Err(error @ DownloadError::Status { status: 404, .. }) => assert!(error.to_string().contains("--repo"), "{error}"),
        other => panic!("expected HTTP 404, got {other:?}"),
    }
    assert_eq!(hub.seen().len(), 1, "not a transient failure: no retry");
}

#[test]
fn locate_finds_the_download_in_the_cache_and_a_weights_file_first() {
    let content = model_bytes();
    let hub = FakeHub::start(HubSetup::serving(content.clone()));
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let placed = work.path().join("weights").join("MedSAM2_latest.pt");
    let search = places(vec![placed.clone()], Some(cache.path()));
    assert!(matches!(weights::locate_in(None, &search), Err(LocateError::NotFound(_))));

    let done = run_download(&options(&hub, cache.path(), 0), None).0.unwrap();
    assert_eq!(weights::locate_in(None, &search).unwrap(), Located { path: done.path, source: Source::HubCache });

    std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
    std::fs::copy(MODEL_PT, &placed).unwrap();
    assert_eq!(weights::locate_in(None, &search).unwrap(), Located { path: placed.clone(), source: Source::WeightsFolder });

    let explicit = work.path().join("elsewhere.pt");
    std::fs::copy(MODEL_PT, &explicit).unwrap();
    assert_eq!(weights::locate_in(Some(&explicit), &search).unwrap(), Located { path: explicit, source: Source::Explicit });
}

#[test]
fn not_found_error_names_the_path_the_url_and_the_command() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("hub");
    let put_at = work.path().join("weights").join("MedSAM2_latest.pt");
    let beside_exe = work.path().join("bin").join("weights").join("MedSAM2_latest.pt");
    let error = weights::locate_in(None, &places(vec![put_at.clone(), beside_exe.clone()], Some(&cache))).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&format!("put it at {}", put_at.display())), "{message}");
    assert!(message.contains(&beside_exe.display().to_string()), "{message}");
    assert!(message.contains(&cache.display().to_string()), "{message}");
    assert!(message.contains("https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt"), "{message}");
    assert!(message.contains("`medsam-viewer weights download`"), "{message}");
}

// ---- the command line ----

fn cli(args: &[&str], hf_home: &Path, cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medsam-viewer"));
    command.args(args).current_dir(cwd).env("HF_HOME", hf_home).env("NO_PROXY", "127.0.0.1");
    for var in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN"] {
        command.env_remove(var);
    }
    command
}

#[cfg(unix)]
/// Runs the CLI, which must exit with status 2; what it wrote on stderr.
fn cli_fails(args: &[&str], hf_home: &Path, cwd: &Path) -> String {
    let output = cli(args, hf_home, cwd).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn cli_download_prints_json_and_ctrl_c_leaves_a_resumable_part() {
    let content = model_bytes();
    let sha = sha256_hex(&content);
    let hub = FakeHub::start(HubSetup { pace: Some(Duration::from_millis(5)), ..HubSetup::serving(content.clone()) });
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    let endpoint = hub.endpoint();
    let args = ["weights", "download", "--endpoint", endpoint.as_str()];

    let mut child = cli(&args, home.path(), home.path()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let part = part_file(&cache, &sha);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 256 << 10 {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Ctrl-C: SIGINT through the shell's own `kill`.
    let sigint = Command::new("sh").args(["-c", &format!("kill -INT {}", child.id())]).status().unwrap();
    assert!(sigint.success());
    let status = child.wait().unwrap();
    assert!(!status.success());
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept >= 256 << 10 && kept < content.len() as u64, "{kept} bytes kept");

    let output = cli(&args, home.path(), home.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let path = PathBuf::from(printed["path"].as_str().unwrap());
    assert_eq!(path, snapshot_file(&cache));
    assert_eq!(printed["sha256"], sha.as_str());
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let starts = hub.transfer_starts();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[1], kept);

    // `weights locate` from a folder without weights/ finds it through HF_HOME.
    let located = cli(&["weights", "locate"], home.path(), home.path()).output().unwrap();
    assert!(located.status.success(), "{}", String::from_utf8_lossy(&located.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&located.stdout).unwrap();
    // The executable's weights/ folders come before the cache: where this repository holds the
    // real checkpoint, that copy is found.
    let repo_weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/MedSAM2_latest.pt");
    let (source, expected) = if repo_weights.is_file() { ("weights-folder", repo_weights) } else { ("hub-cache", path) };
    assert_eq!(printed["source"], source);
    assert_eq!(PathBuf::from(printed["path"].as_str().unwrap()), expected);
}

#[test]
fn cli_locate_prints_the_weights_folder_and_exits_2_on_a_missing_file() {
    let work = tempfile::tempdir().unwrap();
    let placed = work.path().join("weights").join("MedSAM2_latest.pt");
    std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
    std::fs::copy(MODEL_PT, &placed).unwrap();
    let output = cli(&["weights", "locate"], work.path(), work.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["source"], "weights-folder");
    assert_eq!(PathBuf::from(printed["path"].as_str().unwrap()), placed);

    let missing = work.path().join("missing.pt");
    let output = cli(&["weights", "locate", "--checkpoint", missing.to_str().unwrap()], work.path(), work.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&missing.display().to_string()));
}

// ---- the published variants (`--model`) ----

#[test]
fn cli_download_with_model_fetches_that_variants_file() {
    let content = model_bytes();
    let hub = FakeHub::start(HubSetup { file: "MedSAM2_US_Heart.pt", ..HubSetup::serving(content.clone()) });
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    let endpoint = hub.endpoint();

    let output = cli(&["weights", "download", "--model", "MedSAM2_US_Heart", "--endpoint", &endpoint], home.path(), home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("MedSAM2_US_Heart.pt: licence CC-BY-SA-4.0 (research and education use)"), "{stderr}");
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let path = PathBuf::from(printed["path"].as_str().unwrap());
    assert_eq!(path, snapshot_of(&cache, "MedSAM2_US_Heart.pt"));
    assert_eq!(printed["sha256"], sha256_hex(&content).as_str());
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let asked: Vec<String> = hub.seen().into_iter().map(|s| s.path).filter(|p| p.contains("/resolve/")).collect();
    assert!(!asked.is_empty() && asked.iter().all(|p| p == "/wanglab/MedSAM2/resolve/main/MedSAM2_US_Heart.pt"), "{asked:?}");

    // The search for that variant finds it in the cache; the default's search does not.
    let search = |variant: ModelVariant| SearchPlaces {
        weights_files: vec![],
        hub_cache: Some(cache.clone()),
        hub_file: variant.hub_file(),
        endpoint: endpoint.clone(),
    };
    assert_eq!(weights::locate_in(None, &search(ModelVariant::UsHeart)).unwrap(), Located { path, source: Source::HubCache });
    assert!(matches!(weights::locate_in(None, &search(ModelVariant::Latest)), Err(LocateError::NotFound(_))));
}

#[test]
fn cli_download_of_the_default_asks_for_latest_not_the_served_variant() {
    let hub = FakeHub::start(HubSetup { file: "MedSAM2_US_Heart.pt", ..HubSetup::serving(model_bytes()) });
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let stderr = cli_fails(&["weights", "download", "--endpoint", &endpoint, "--retries", "0"], home.path(), home.path());
    assert!(stderr.contains("HTTP 404") && stderr.contains("MedSAM2_latest.pt"), "{stderr}");
}

#[test]
fn cli_locate_with_model_finds_that_variants_weights_file() {
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().join("weights");
    std::fs::create_dir_all(&folder).unwrap();
    for file in ["MedSAM2_CTLesion.pt", "MedSAM2_latest.pt"] {
        std::fs::copy(MODEL_PT, folder.join(file)).unwrap();
    }
    let output = cli(&["weights", "locate", "--model", "ctlesion"], work.path(), work.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["source"], "weights-folder");
    assert_eq!(PathBuf::from(printed["path"].as_str().unwrap()), folder.join("MedSAM2_CTLesion.pt"));

    // A variant that is nowhere: the message names its file and the command that fetches it.
    let stderr = cli_fails(&["weights", "locate", "--model", "MRI_LiverLesion.pt"], work.path(), work.path());
    assert!(stderr.contains("MedSAM2_MRI_LiverLesion.pt not found"), "{stderr}");
    assert!(stderr.contains("`medsam-viewer weights download --model MedSAM2_MRI_LiverLesion`"), "{stderr}");
    assert!(stderr.contains("put it at") && stderr.contains("weights/MedSAM2_MRI_LiverLesion.pt"), "{stderr}");
}

#[test]
fn cli_refuses_an_unknown_model_and_model_with_file() {
    let work = tempfile::tempdir().unwrap();
    let stderr = cli_fails(&["weights", "locate", "--model", "heart"], work.path(), work.path());
    assert!(stderr.contains("unknown MedSAM2 model \"heart\"") && stderr.contains("MedSAM2_US_Heart, MedSAM2_2411"), "{stderr}");

    let stderr = cli_fails(&["weights", "download", "--model", "ctlesion", "--file", "x.pt"], work.path(), work.path());
    assert!(stderr.contains("--model") && stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn cli_segment_and_segment_batch_with_model_load_that_variants_weights_file() {
    let work = tempfile::tempdir().unwrap();
    let placed = work.path().join("weights").join("MedSAM2_US_Heart.pt");
    std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
    std::fs::copy(MODEL_PT, &placed).unwrap();
    // A small bright square on a dark background, three slices.
    let dims = [32, 32, 3];
    let data: Vec<u8> = (0..32 * 32 * 3).map(|n| if (10..22).contains(&(n % 32)) && (10..22).contains(&(n / 32 % 32)) { 200 } else { 20 }).collect();
    let volume = Volume::new(Geometry::new(dims, [1.0, 1.0, 2.0], [0.0; 3]), 1, VoxelBuffer::U8(data), VolumeMeta::default()).unwrap();
    let input = work.path().join("square.nii.gz");
    nifti::write(&input, &volume, nifti::NiftiKind::Image).unwrap();
    let segment = |model: &str, output: &str| {
        let mut args = vec!["segment", "--input", input.to_str().unwrap(), "--box", "8,8,23,23", "--slice", "1"];
        args.extend(["--model-config", MODEL_CONFIG, "--output", output]);
        if !model.is_empty() {
            args.extend(["--model", model]);
        }
        cli(&args, work.path(), work.path()).output().unwrap()
    };

    let output = segment("us_heart", "mask.nii.gz");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(PathBuf::from(printed["checkpoint"].as_str().unwrap()), placed);

    // Without --model the default, MedSAM2_latest.pt, is searched for instead.
    let output = segment("", "default.nii.gz");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MedSAM2_latest.pt"), "{stderr}");

    let manifest = work.path().join("manifest.csv");
    std::fs::write(&manifest, "image,slice,box,window,label,axis\nsquare.nii.gz,1,\"8,8,23,23\",,1,\n").unwrap();
    let batch = cli(
        &["segment-batch", "--manifest", manifest.to_str().unwrap(), "--output-dir", "batch", "--model", "MedSAM2_US_Heart.pt"],
        work.path(),
        work.path(),
    )
    .args(["--model-config", MODEL_CONFIG])
    .output()
    .unwrap();
    assert!(batch.status.success(), "{}", String::from_utf8_lossy(&batch.stderr));
    assert!(work.path().join("batch/square_mask.nii.gz").is_file());
}
