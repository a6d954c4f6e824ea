//! Fetching a checkpoint from the Hugging Face hub into the standard hub cache with hf-hub's
//! blocking client (ureq + rustls): `HF_ENDPOINT` (or an explicit endpoint) picks the hub or a
//! mirror, an interrupted transfer resumes from hf-hub's `blobs/<etag>.part` with a Range request,
//! progress is reported as (bytes done, total), and the result is verified: its SHA-256 must equal
//! the ETag the hub announces for LFS files, and it must pass the checkpoint format check. A file
//! failing either is deleted from the cache.
//!
//! Cancellation: hf-hub's `Progress::update` cannot return an error and nothing else reaches
//! into its transfer loop, so a cancel request leaves the transfer by unwinding out of `update`
//! with `resume_unwind` (which runs no panic hook, so nothing is printed); the unwind is caught
//! around the hf-hub call and becomes [`DownloadError::Cancelled`]. The `.part` file keeps every
//! byte written, so the next download resumes. This relies on unwinding panics (the default, not
//! `panic = "abort"`). While the network is silent, a cancel takes effect when bytes next arrive.
//!
//! Retries happen here, each one a fresh hf-hub call that reopens the `.part` and resumes from its
//! length. hf-hub's own retry loop resumes from the file handle's position instead, which is 0
//! for a `.part` left by an earlier run when the first attempt fails before writing: the retry
//! would append the whole file to the partial one.

use super::{check_checkpoint, endpoint_from_env, env_value, hub_cache_from_env, sha256_file, CheckpointError, HubFile};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo, Metadata};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo};
use serde::Serialize;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What to download and from where.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    pub hub_file: HubFile,
    /// Hub address; `None`: `HF_ENDPOINT`, else the public hub.
    pub endpoint: Option<String>,
    /// Hub cache folder; `None`: the standard one from the environment.
    pub cache_dir: Option<PathBuf>,
    /// How many times a transient failure (dropped connection, 5xx, 429) is retried, each retry
    /// resuming from the `.part` file.
    pub retries: usize,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self { hub_file: HubFile::default(), endpoint: None, cache_dir: None, retries: 3 }
    }
}

/// A verified checkpoint in the hub cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Downloaded {
    /// `…/models--owner--name/snapshots/<commit>/<file>`.
    pub path: PathBuf,
    /// SHA-256 of the content, equal to the hub's ETag.
    pub sha256: String,
    pub bytes: u64,
    /// The repository commit the file belongs to.
    pub commit: String,
    /// True when a verified copy was already in the cache and nothing was transferred.
    pub reused: bool,
}

/// Why a download did not produce a verified checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("no Hugging Face cache folder: there is no home folder and neither HF_HOME nor HF_HUB_CACHE is set")]
    NoCacheDir,
    #[error("cannot set up the HTTP client: {0}")]
    Client(ApiError),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("request to {url} failed: {reason}")]
    Request { url: String, reason: String },
    #[error("{url} answered HTTP {status}{}", status_hint(*status))]
    Status { url: String, status: u16 },
    #[error("{url} did not answer like a Hugging Face hub (header {header} missing or invalid); check the endpoint (--endpoint or HF_ENDPOINT)")]
    NotAHub { url: String, header: String },
    #[error("the transfer was interrupted ({reason}); the partial file {} is kept and downloading again resumes from it", part.display())]
    Interrupted { part: PathBuf, reason: String },
    #[error("another download of the same file holds the lock {}", lock.display())]
    Busy { lock: PathBuf },
    #[error("download cancelled; the partial file stays in the cache and the next download resumes from it")]
    Cancelled,
    #[error("the hub gave no SHA-256 for the file (ETag {etag:?}), so its integrity cannot be checked; download it by hand as weights/README.md describes")]
    UnverifiableEtag { etag: String },
    #[error("the downloaded file's SHA-256 is {actual} but the hub announced {expected}; the corrupt copy was deleted")]
    Mismatch { expected: String, actual: String },
    #[error("the downloaded file is not a checkpoint: {reason}; it was deleted")]
    NotACheckpoint { reason: CheckpointError },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (access refused: check the repository name, or set HF_TOKEN)",
        404 => " (no such file: check --repo, --model and --file)",
        416 => " (the partial file in the cache does not fit the file on the hub)",
        _ => "",
    }
}

impl DownloadError {
    /// Failures worth another attempt: the network, and server-side trouble.
    fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Interrupted { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Downloads `options.hub_file` into the hub cache and verifies it, reporting
/// `progress(bytes_done, bytes_total)` as bytes arrive; setting `cancel` stops the transfer with
/// [`DownloadError::Cancelled`], keeping the partial file for a later resume. A verified copy
/// already in the cache for the hub's current commit is returned without a transfer. Blocking:
/// the viewer runs it on a worker thread.
pub fn download(
    options: &DownloadOptions,
    mut progress: impl FnMut(u64, u64),
    cancel: &AtomicBool,
) -> Result<Downloaded, DownloadError> {
    let cache_dir = options.cache_dir.clone().or_else(hub_cache_from_env).ok_or(DownloadError::NoCacheDir)?;
    let endpoint = options.endpoint.clone().unwrap_or_else(endpoint_from_env);
    let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
        .with_endpoint(endpoint.trim_end_matches('/').to_owned())
        .with_progress(false)
        .with_user_agent("medsam-viewer", env!("CARGO_PKG_VERSION"));
    if let Some(token) = env_value("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(DownloadError::Client)?;
    let repo = Repo::model(options.hub_file.repo.clone());
    let api_repo = api.repo(repo.clone());
    let cache_repo = Cache::new(cache_dir).repo(repo);
    let file = options.hub_file.file.as_str();
    let url = api_repo.url(file);

    let meta = with_retries(options.retries, cancel, || metadata(&api, &url))?;
    let expected = sha256_etag(meta.etag()).ok_or_else(|| DownloadError::UnverifiableEtag { etag: meta.etag().to_owned() })?;
    let size = meta.size() as u64;
    let finished = |path: PathBuf, reused: bool| Downloaded {
        path,
        sha256: expected.clone(),
        bytes: size,
        commit: meta.commit_hash().to_owned(),
        reused,
    };

    let cached = cache_repo.pointer_path(meta.commit_hash()).join(file);
    if cached.is_file() {
        match verify(&cached, &expected) {
            Ok(()) => {
                progress(size, size);
                return Ok(finished(cached, true));
            }
            // The corrupt copy is gone now; fetch a good one.
            Err(DownloadError::Mismatch { .. }) => {}
            Err(other) => return Err(other),
        }
    }

    let part = cache_repo.blob_path(meta.etag()).with_extension("part");
    fit_part_to(&part, size)?;
    let pointer = with_retries(options.retries, cancel, || transfer(&api_repo, file, &part, &mut progress, cancel))?;
    verify(&pointer, &expected)?;
    Ok(finished(pointer, false))
}

/// The ETag as a lower-case SHA-256 hex digest, when it is one (the hub's ETag of an LFS file).
fn sha256_etag(etag: &str) -> Option<String> {
    (etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit())).then(|| etag.to_ascii_lowercase())
}

fn metadata(api: &Api, url: &str) -> Result<Metadata, DownloadError> {
    api.metadata(url).map_err(|error| classify(error, url, None))
}

/// Marker unwound out of hf-hub's transfer loop when a cancel is requested.
struct Cancelled;

/// hf-hub progress sink forwarding (done, total) to the caller and watching the cancel flag.
struct CancellableProgress<'a, F: FnMut(u64, u64)> {
    callback: &'a mut F,
    cancel: &'a AtomicBool,
    done: u64,
    total: u64,
}

impl<F: FnMut(u64, u64)> CancellableProgress<'_, F> {
    fn stop_if_cancelled(&self) {
        if self.cancel.load(Ordering::Relaxed) {
            panic::resume_unwind(Box::new(Cancelled));
        }
    }
}

impl<F: FnMut(u64, u64)> Progress for CancellableProgress<'_, F> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
        self.stop_if_cancelled();
    }

    /// hf-hub calls this once with the resume offset, then with each block read.
    fn update(&mut self, bytes: usize) {
        self.done += bytes as u64;
        (self.callback)(self.done, self.total);
        self.stop_if_cancelled();
    }

    fn finish(&mut self) {}
}

/// One hf-hub download call (it resumes from `part` if present); returns the snapshot path.
fn transfer<F: FnMut(u64, u64)>(
    api_repo: &ApiRepo,
    file: &str,
    part: &Path,
    progress: &mut F,
    cancel: &AtomicBool,
) -> Result<PathBuf, DownloadError> {
    if cancel.load(Ordering::Relaxed) {
        return Err(DownloadError::Cancelled);
    }
    let sink = CancellableProgress { callback: progress, cancel, done: 0, total: 0 };
    match panic::catch_unwind(AssertUnwindSafe(|| api_repo.download_with_progress(file, sink))) {
        Ok(Ok(pointer)) => Ok(pointer),
        Ok(Err(error)) => Err(classify(error, &api_repo.url(file), Some(part))),
        Err(payload) if payload.is::<Cancelled>() => Err(DownloadError::Cancelled),
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// Maps an hf-hub error to what went wrong; `part` is set during the transfer itself.
fn classify(error: ApiError, url: &str, part: Option<&Path>) -> DownloadError {
    let url = url.to_owned();
    let broken = |reason: String| match part {
        Some(part) => DownloadError::Interrupted { part: part.to_path_buf(), reason },
        None => DownloadError::Unreachable { url: url.clone(), reason },
    };
    match error {
        ApiError::MissingHeader(header) | ApiError::InvalidHeader(header) => {
            DownloadError::NotAHub { url, header: header.to_owned() }
        }
        ApiError::RequestError(request) => match *request {
            ureq::Error::StatusCode(status) => DownloadError::Status { url, status },
            error @ (ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)) => broken(error.to_string()),
            other => DownloadError::Request { url, reason: other.to_string() },
        },
        // The cache itself refusing writes is no network trouble: say so and do not retry.
        ApiError::IoError(error) if is_local_write_failure(&error) => {
            let path = part.map_or_else(PathBuf::new, Path::to_path_buf);
            DownloadError::Io { path, source: error }
        }
        ApiError::IoError(error) => broken(error.to_string()),
        ApiError::LockAcquisition(lock) => DownloadError::Busy { lock },
        other => DownloadError::Request { url, reason: other.to_string() },
    }
}

fn is_local_write_failure(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::PermissionDenied
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
    )
}

/// Runs `attempt`, retrying transient failures up to `retries` times with a growing pause.
fn with_retries<T>(
    retries: usize,
    cancel: &AtomicBool,
    mut attempt: impl FnMut() -> Result<T, DownloadError>,
) -> Result<T, DownloadError> {
    let mut failures = 0;
    loop {
        match attempt() {
            Err(error) if error.is_transient() && failures < retries => {
                let pause = Duration::from_millis(500u64 << failures.min(4));
                sleep_unless_cancelled(pause, cancel)?;
                failures += 1;
            }
            result => return result,
        }
    }
}

fn sleep_unless_cancelled(pause: Duration, cancel: &AtomicBool) -> Result<(), DownloadError> {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < pause {
        if cancel.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled);
        }
        std::thread::sleep(step);
        slept += step;
    }
    Ok(())
}

/// Makes a leftover `.part` resumable by hf-hub: one longer than the file is garbage (hf-hub
/// would refuse it) and is removed; a complete one (killed before hf-hub renamed it) loses its
/// last byte, because a Range starting at the file's size is answered 416 — refetching one byte
/// lets hf-hub finish its own way (rename to the blob, snapshot link, ref).
fn fit_part_to(part: &Path, size: u64) -> Result<(), DownloadError> {
    let io_error = |source| DownloadError::Io { path: part.to_path_buf(), source };
    let len = match std::fs::metadata(part) {
        Ok(meta) => meta.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(error)),
    };
    if len > size {
        std::fs::remove_file(part).map_err(io_error)?;
    } else if len == size && size > 0 {
        let file = std::fs::OpenOptions::new().write(true).open(part).map_err(io_error)?;
        file.set_len(size - 1).map_err(io_error)?;
    }
    Ok(())
}

/// Checks the SHA-256 and the checkpoint format of a cached file; a file failing either is
/// removed from the cache (its blob and its snapshot link).
fn verify(pointer: &Path, expected: &str) -> Result<(), DownloadError> {
    let actual = sha256_file(pointer).map_err(|source| DownloadError::Io { path: pointer.to_path_buf(), source })?;
    if actual != expected {
        remove_cached(pointer)?;
        return Err(DownloadError::Mismatch { expected: expected.to_owned(), actual });
    }
    if let Err(reason) = check_checkpoint(pointer) {
        remove_cached(pointer)?;
        return Err(DownloadError::NotACheckpoint { reason });
    }
    Ok(())
}

/// Removes a snapshot entry and the blob it links to (hf-hub renames instead of linking where
/// symlinks are not allowed; then the entry is the file itself).
fn remove_cached(pointer: &Path) -> Result<(), DownloadError> {
    let remove = |path: &Path| match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(DownloadError::Io { path: path.to_path_buf(), source: error })
        }
        _ => Ok(()),
    };
    if let Ok(blob) = std::fs::canonicalize(pointer) {
        remove(&blob)?;
    }
    remove(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sha256_etag_is_accepted() {
        let digest = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(sha256_etag(digest), Some(digest.to_ascii_lowercase()));
        assert_eq!(sha256_etag("6d34772f5ca361021038b404fb913ec8dc0b1a5a"), None);
        assert_eq!(sha256_etag(&"g".repeat(64)), None);
    }

    #[test]
    fn leftover_part_is_made_resumable() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("x.part");
        fit_part_to(&part, 10).unwrap();
        std::fs::write(&part, [1u8; 10]).unwrap();
        fit_part_to(&part, 10).unwrap();
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 9);
        fit_part_to(&part, 100).unwrap();
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 9);
        fit_part_to(&part, 5).unwrap();
        assert!(!part.exists());
    }

    #[test]
    fn full_disk_is_a_local_error_and_a_reset_is_an_interruption() {
        let part = Path::new("/cache/blobs/x.part");
        let full = classify(ApiError::IoError(io::ErrorKind::StorageFull.into()), "u", Some(part));
        assert!(matches!(&full, DownloadError::Io { path, .. } if path == part));
        assert!(!full.is_transient());
        let reset = classify(ApiError::IoError(io::ErrorKind::ConnectionReset.into()), "u", Some(part));
        assert!(matches!(&reset, DownloadError::Interrupted { part: p, .. } if p == part));
        assert!(reset.is_transient());
        let probe = classify(ApiError::IoError(io::ErrorKind::ConnectionReset.into()), "u", None);
        assert!(matches!(probe, DownloadError::Unreachable { .. }));
    }

    #[test]
    fn transient_failures_are_retried_and_others_are_not() {
        let cancel = AtomicBool::new(false);
        let mut calls = 0;
        let result = with_retries(2, &cancel, || {
            calls += 1;
            if calls < 3 { Err(DownloadError::Status { url: String::new(), status: 503 }) } else { Ok(calls) }
        });
        assert_eq!(result.unwrap(), 3);
        let mut calls = 0;
        let result: Result<(), _> = with_retries(2, &cancel, || {
            calls += 1;
            Err(DownloadError::Status { url: String::new(), status: 404 })
        });
        assert!(matches!(result, Err(DownloadError::Status { status: 404, .. })));
        assert_eq!(calls, 1);
        cancel.store(true, Ordering::Relaxed);
        let result: Result<(), _> = with_retries(2, &cancel, || {
            Err(DownloadError::Unreachable { url: String::new(), reason: String::new() })
        });
        assert!(matches!(result, Err(DownloadError::Cancelled)));
    }
}
