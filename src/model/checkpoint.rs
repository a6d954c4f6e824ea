//! Model weights: strict loading of the checkpoints MedSAM2 publishes, and seeded random weights
//! for benchmarks.
//!
//! Sources:
//! * PyTorch `.pt` files as written by `torch.save({"model": state_dict})` (the zip format;
//!   a plain state dict without the `model` entry is accepted too), read eagerly so that a
//!   truncated file fails when it is opened;
//! * `.safetensors` files, memory-mapped;
//! * `RandomWeights`: every tensor the model asks for, drawn from a seeded generator;
//! * any other `TensorStore` (e.g. a key listing serving placeholders).
//!
//! A `Checkpoint` hands out a `VarBuilder` whose backend records every name the model requests.
//! A name the source lacks or holds with another shape is recorded and answered with zeros, so
//! construction runs to the end; `Checkpoint::finish` then reports every missing, unexpected
//! (stored but never requested) and mis-shaped tensor in one error, like PyTorch's strict
//! `load_state_dict`.

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why weights could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot open checkpoint {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint {path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("checkpoint {origin} does not match the model: {report}")]
    Mismatch {
        origin: String,
        report: MismatchReport,
    },
}

/// Everything that differs between a checkpoint and the model built from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MismatchReport {
    /// Requested by the model, absent from the checkpoint.
    pub missing: Vec<String>,
    /// Present in the checkpoint, never requested.
    pub unexpected: Vec<String>,
    /// Present with a different shape than the model needs.
    pub misshaped: Vec<ShapeMismatch>,
}

/// A tensor stored with another shape than the model expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub name: String,
    pub stored: Vec<usize>,
    pub expected: Vec<usize>,
}

impl MismatchReport {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }
}

impl fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing: {}",
                self.missing.len(),
                self.missing.join(", ")
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected: {}",
                self.unexpected.len(),
                self.unexpected.join(", ")
            ));
        }
        if !self.misshaped.is_empty() {
            let list: Vec<String> = self
                .misshaped
                .iter()
                .map(|m| format!("{} (stored {:?}, model {:?})", m.name, m.stored, m.expected))
                .collect();
            parts.push(format!(
                "{} with wrong shape: {}",
                list.len(),
                list.join(", ")
            ));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Where tensors come from. Implementations must be cheap to query by name.
pub trait TensorStore: Send + Sync {
    /// Names the source in error messages (a file path, "random weights (seed 7)").
    fn origin(&self) -> String;
    /// Every stored name; empty for sources that generate tensors on request.
    fn names(&self) -> Vec<String>;
    /// Shape held under `name`, or `None` when absent. Sources that generate tensors answer
    /// `wanted` (and `None` when no shape is wanted).
    fn stored_shape(&self, name: &str, wanted: Option<&Shape>) -> Option<Shape>;
    /// The tensor under `name` (which `stored_shape` reported) as `dtype` on `device`.
    fn load(
        &self,
        name: &str,
        shape: &Shape,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor>;
}

/// A `.safetensors` file, memory-mapped.
struct SafetensorsFile {
    path: PathBuf,
    file: MmapedSafetensors,
}

impl TensorStore for SafetensorsFile {
    fn origin(&self) -> String {
        self.path.display().to_string()
    }

    fn names(&self) -> Vec<String> {
        self.file
            .tensors()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    fn stored_shape(&self, name: &str, _wanted: Option<&Shape>) -> Option<Shape> {
        self.file
            .get(name)
            .ok()
            .map(|view| Shape::from(view.shape().to_vec()))
    }

    fn load(
        &self,
        name: &str,
        _shape: &Shape,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.file.load(name, device)?.to_dtype(dtype)
    }
}

/// Tensors already in memory (a PyTorch checkpoint read eagerly).
struct TensorMap {
    origin: String,
    tensors: HashMap<String, Tensor>,
}

impl TensorStore for TensorMap {
    fn origin(&self) -> String {
        self.origin.clone()
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn stored_shape(&self, name: &str, _wanted: Option<&Shape>) -> Option<Shape> {
        self.tensors.get(name).map(|t| t.shape().clone())
    }

    fn load(
        &self,
        name: &str,
        _shape: &Shape,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(device),
            None => Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }),
        }
    }
}

/// Seeded random weights: any requested tensor exists, with values that keep activations in a
/// sane range (weights `N(0, 1/fan_in)`, normalisation gains near 1, small biases). A tensor's
/// values depend only on the seed and its name, not on request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomWeights {
    pub seed: u64,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    fn values(&self, name: &str, shape: &Shape) -> Vec<f32> {
        // FNV-1a over the name, mixed with the seed: stable across runs and platforms.
        let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ self.seed;
        for byte in name.bytes() {
            hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(hash);
        let normal = rand_distr::StandardNormal;
        let dims = shape.dims();
        let count = shape.elem_count();
        let (mean, std) = if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
        } else if name.ends_with("weight") {
            (1.0, 0.1)
        } else {
            (0.0, 0.02)
        };
        (0..count)
            .map(|_| {
                let z: f32 = rng.sample(normal);
                mean + std * z
            })
            .collect()
    }
}

impl TensorStore for RandomWeights {
    fn origin(&self) -> String {
        format!("random weights (seed {})", self.seed)
    }

    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    fn stored_shape(&self, _name: &str, wanted: Option<&Shape>) -> Option<Shape> {
        wanted.cloned()
    }

    fn load(
        &self,
        name: &str,
        shape: &Shape,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.values(name, shape), shape.clone(), device)?.to_dtype(dtype)
    }
}

/// What the model asked for while it was being built.
#[derive(Debug, Default)]
struct RequestLog {
    requested: BTreeSet<String>,
    missing: BTreeSet<String>,
    misshaped: BTreeMap<String, ShapeMismatch>,
}

/// The `VarBuilder` backend: serves tensors from the store and logs every request.
struct TrackingBackend {
    store: Arc<dyn TensorStore>,
    log: Arc<Mutex<RequestLog>>,
}

impl TrackingBackend {
    fn record(&self, update: impl FnOnce(&mut RequestLog)) -> candle_core::Result<()> {
        let mut log = self
            .log
            .lock()
            .map_err(|_| candle_core::Error::Msg("checkpoint request log poisoned".into()))?;
        update(&mut log);
        Ok(())
    }
}

impl SimpleBackend for TrackingBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.record(|log| {
            log.requested.insert(name.to_string());
        })?;
        match self.store.stored_shape(name, Some(&shape)) {
            Some(stored) if stored == shape => self.store.load(name, &shape, dtype, device),
            Some(stored) => {
                self.record(|log| {
                    log.misshaped.insert(
                        name.to_string(),
                        ShapeMismatch {
                            name: name.to_string(),
                            stored: stored.dims().to_vec(),
                            expected: shape.dims().to_vec(),
                        },
                    );
                })?;
                Tensor::zeros(shape, dtype, device)
            }
            None => {
                self.record(|log| {
                    log.missing.insert(name.to_string());
                })?;
                Tensor::zeros(shape, dtype, device)
            }
        }
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.record(|log| {
            log.requested.insert(name.to_string());
        })?;
        match self.store.stored_shape(name, None) {
            Some(stored) => self.store.load(name, &stored, dtype, device),
            None => {
                self.record(|log| {
                    log.missing.insert(name.to_string());
                })?;
                Err(candle_core::Error::CannotFindTensor {
                    path: name.to_string(),
                })
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.store.stored_shape(name, None).is_some()
    }
}

/// A weight source with strict bookkeeping of what the model used.
pub struct Checkpoint {
    store: Arc<dyn TensorStore>,
    log: Arc<Mutex<RequestLog>>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.store.origin())
            .finish()
    }
}

/// Leading bytes of a zip archive (PyTorch's default `torch.save` format).
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";

impl Checkpoint {
    /// Opens a PyTorch zip checkpoint or a safetensors file, recognised by content.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let open_error = |source| CheckpointError::Open {
            path: path.to_path_buf(),
            source,
        };
        let format_error = |reason: String| CheckpointError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let mut head = [0u8; 8];
        let mut file = std::fs::File::open(path).map_err(open_error)?;
        let read = read_up_to(&mut file, &mut head).map_err(open_error)?;
        if read < head.len() {
            return Err(format_error(format!("file is too short ({read} bytes)")));
        }
        let store: Arc<dyn TensorStore> = if head[..4] == ZIP_MAGIC {
            Arc::new(read_pytorch_zip(path).map_err(format_error)?)
        } else if head[0] == 0x80 && head[1] <= 5 {
            return Err(format_error(
                "legacy (non-zip) PyTorch serialization is not supported; re-save it with \
                 torch.save in the default zip format"
                    .into(),
            ));
        } else {
            // SAFETY: the mapping stays valid while the file is unchanged; checkpoints are
            // read-only inputs and a concurrent writer would be a user error, as for any reader.
            let file = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
                format_error(format!(
                    "neither a PyTorch zip checkpoint nor a valid safetensors file ({e})"
                ))
            })?;
            Arc::new(SafetensorsFile {
                path: path.to_path_buf(),
                file,
            })
        };
        Ok(Self::from_store(store))
    }

    /// Seeded random weights for every tensor the model requests.
    pub fn random(weights: RandomWeights) -> Self {
        Self::from_store(Arc::new(weights))
    }

    /// Any tensor source.
    pub fn from_store(store: Arc<dyn TensorStore>) -> Self {
        Self {
            store,
            log: Arc::new(Mutex::new(RequestLog::default())),
        }
    }

    /// Names the weight source.
    pub fn origin(&self) -> String {
        self.store.origin()
    }

    /// A `VarBuilder` over this checkpoint producing f32 tensors on `device`. Requests through
    /// it (and its `pp` children) are recorded for `finish`.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        let backend = TrackingBackend {
            store: self.store.clone(),
            log: self.log.clone(),
        };
        VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone())
    }

    /// Checks that every stored tensor was requested and every request was served with the
    /// right shape.
    pub fn finish(&self) -> Result<(), CheckpointError> {
        self.finish_scoped(None)
    }

    /// Like `finish`, but only stored names under `prefix` (e.g. `"image_encoder"`) count as
    /// unexpected: for building one part of a model from a whole-model checkpoint.
    pub fn finish_under(&self, prefix: &str) -> Result<(), CheckpointError> {
        self.finish_scoped(Some(prefix))
    }

    fn finish_scoped(&self, prefix: Option<&str>) -> Result<(), CheckpointError> {
        let report = self.report(prefix);
        if report.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Mismatch {
                origin: self.store.origin(),
                report,
            })
        }
    }

    fn report(&self, prefix: Option<&str>) -> MismatchReport {
        let log = match self.log.lock() {
            Ok(log) => log,
            Err(poisoned) => poisoned.into_inner(),
        };
        let in_scope = |name: &str| match prefix {
            None => true,
            Some(p) => name == p || name.starts_with(&format!("{p}.")),
        };
        let mut unexpected: Vec<String> = self
            .store
            .names()
            .into_iter()
            .filter(|n| in_scope(n) && !log.requested.contains(n))
            .collect();
        unexpected.sort();
        MismatchReport {
            missing: log.missing.iter().cloned().collect(),
            unexpected,
            misshaped: log.misshaped.values().cloned().collect(),
        }
    }
}

/// Reads as many bytes as fit in `buf` (fewer only at end of file).
fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reads every tensor of a PyTorch zip checkpoint: the `model` entry of a saved dict, else the
/// saved object itself as a state dict.
fn read_pytorch_zip(path: &Path) -> Result<TensorMap, String> {
    let entries = check_pytorch_zip(path)?;
    let tensors = match read_pickled_tensors(path, Some("model"), &entries) {
        Ok(tensors) if !tensors.is_empty() => tensors,
        first => {
            let plain = read_pickled_tensors(path, None, &entries);
            match (first, plain) {
                (_, Ok(tensors)) if !tensors.is_empty() => tensors,
                (Err(e), _) => return Err(e),
                (Ok(_), Err(e)) => return Err(e),
                (Ok(_), Ok(_)) => return Err("the file holds no tensors".into()),
            }
        }
    };
    Ok(TensorMap {
        origin: path.display().to_string(),
        tensors: tensors.into_iter().collect(),
    })
}

/// The largest ratio a deflate stream can expand by (RFC 1951).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Checks what candle's reader would trust in a PyTorch zip before it reads anything: every
/// entry's size against what the file can hold, and every length in each `data.pkl` against
/// the bytes that follow it. Returns the entries' uncompressed sizes by name.
fn check_pytorch_zip(path: &Path) -> Result<HashMap<String, u64>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    let mut sizes = HashMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = entry
            .name()
            .map_err(|e| format!("zip entry {i}: {e}"))?
            .into_owned();
        let can_hold = match entry.compression() {
            zip::CompressionMethod::Stored => file_len,
            _ => file_len.saturating_mul(MAX_DEFLATE_RATIO),
        };
        let size = entry.size();
        if size > can_hold {
            return Err(format!(
                "zip entry {name} claims {size} bytes, more than a {file_len}-byte file can hold"
            ));
        }
        if name.ends_with("data.pkl") {
            let mut pickle = Vec::new();
            entry
                .by_ref()
                .take(size)
                .read_to_end(&mut pickle)
                .map_err(|e| format!("{name}: {e}"))?;
            check_pickle(&pickle).map_err(|e| format!("{name}: {e}"))?;
        }
        sizes.insert(name, size);
    }
    Ok(sizes)
}

/// Walks the opcodes of a pickle the way candle's unpickler reads them, checking that every
/// argument (in particular the declared length of a string) lies within the pickle. Opcodes
/// candle does not know end the walk: candle refuses them itself.
fn check_pickle(data: &[u8]) -> Result<(), String> {
    let mut at = 0usize;
    while at < data.len() {
        let (op, start) = (data[at], at);
        at += 1;
        let left = data.len() - at;
        let u32_at = |i: usize| {
            data.get(i..i + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let argument = match op {
            b'.' => return Ok(()),
            0x80 | b'K' | b'h' | b'q' => 1,
            b'M' => 2,
            b'J' | b'j' | b'r' => 4,
            b'G' => 8,
            b'X' => 4usize.saturating_add(u32_at(at).unwrap_or(usize::MAX)),
            0x8a => match data.get(at) {
                Some(&n) if n <= 8 => 1 + usize::from(n),
                Some(&n) => {
                    return Err(format!(
                        "LONG1 at byte {start} has {n} bytes, more than 64 bits"
                    ));
                }
                None => usize::MAX,
            },
            b'c' => {
                let lines: Vec<usize> = data[at..]
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i)
                    .take(2)
                    .collect();
                lines.get(1).map_or(usize::MAX, |second| second + 1)
            }
            b')'
            | b'R'
            | b'('
            | b't'
            | b'Q'
            | b'N'
            | 0x85..=0x89
            | b's'
            | b'u'
            | b'}'
            | b'd'
            | b'b'
            | 0x81
            | b']'
            | b'a'
            | b'e' => 0,
            _ => return Ok(()),
        };
        if argument > left {
            return Err(format!(
                "the pickle opcode {op:#04x} at byte {start} needs {} more bytes, but only {left} follow",
                if argument == usize::MAX {
                    "its".to_string()
                } else {
                    argument.to_string()
                }
            ));
        }
        at += argument;
    }
    Ok(())
}

/// The tensors candle finds in a checked PyTorch zip under `key`, each checked against the
/// size of the entry its data comes from before candle allocates it.
fn read_pickled_tensors(
    path: &Path,
    key: Option<&str>,
    entries: &HashMap<String, u64>,
) -> Result<Vec<(String, Tensor)>, String> {
    // candle indexes and shifts by values from the file; a panic there is a damaged file.
    let guarded = |what: &str, run: &mut dyn FnMut() -> candle_core::Result<()>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .map_err(|_| format!("{what}: the reader failed on damaged data"))?
            .map_err(|e| e.to_string())
    };
    let mut pth = None;
    guarded("reading the pickle", &mut || {
        pth = Some(candle_core::pickle::PthTensors::new(path, key)?);
        Ok(())
    })?;
    let Some(pth) = pth else {
        return Ok(Vec::new());
    };
    let mut tensors = Vec::with_capacity(pth.tensor_infos().len());
    for (name, info) in pth.tensor_infos() {
        let needed = info
            .layout
            .dims()
            .iter()
            .try_fold(info.dtype.size_in_bytes() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
            .and_then(|bytes| {
                bytes.checked_add(
                    (info.layout.start_offset() as u64)
                        .checked_mul(info.dtype.size_in_bytes() as u64)?,
                )
            });
        let held = entries.get(&info.path).copied().unwrap_or(0);
        if needed.is_none_or(|n| n > held) {
            return Err(format!(
                "tensor {name}: shape {:?} of {:?} at offset {} needs more than the {held} bytes of {}",
                info.layout.dims(),
                info.dtype,
                info.layout.start_offset(),
                info.path
            ));
        }
        let mut tensor = None;
        guarded(name, &mut || {
            tensor = pth.get(name)?;
            Ok(())
        })?;
        if let Some(tensor) = tensor {
            tensors.push((name.clone(), tensor));
        }
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");

    fn assert_same(a: &Tensor, b: &Tensor) {
        assert_eq!(a.dims(), b.dims());
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn pt_and_safetensors_hold_the_same_tensors() {
        let pt = Checkpoint::open(format!("{MINI}/model.pt")).unwrap();
        let st = Checkpoint::open(format!("{MINI}/model.safetensors")).unwrap();
        let mut names = pt.store.names();
        names.sort();
        let mut st_names = st.store.names();
        st_names.sort();
        assert_eq!(names.len(), 335);
        assert_eq!(names, st_names);
        let dev = Device::Cpu;
        let (vb_pt, vb_st) = (pt.var_builder(&dev), st.var_builder(&dev));
        for name in [
            "no_mem_embed",
            "image_encoder.trunk.pos_embed",
            "sam_mask_decoder.iou_token.weight",
        ] {
            let shape = pt.store.stored_shape(name, None).unwrap();
            let a = vb_pt.get(shape.clone(), name).unwrap();
            let b = vb_st.get(shape, name).unwrap();
            assert_same(&a, &b);
        }
    }

    #[test]
    fn finish_lists_missing_unexpected_and_misshaped_keys() {
        let ckpt = Checkpoint::open(format!("{MINI}/model.safetensors")).unwrap();
        let vb = ckpt.var_builder(&Device::Cpu);
        let ok = vb.get((1, 1, 32), "no_mem_embed").unwrap();
        assert_eq!(ok.dims(), &[1, 1, 32]);
        let wrong = vb.get((1, 1, 64), "no_mem_pos_enc").unwrap();
        assert_eq!(wrong.dims(), &[1, 1, 64]);
        let absent = vb.pp("image_encoder").get(3, "does_not_exist").unwrap();
        assert_eq!(absent.to_vec1::<f32>().unwrap(), vec![0.0; 3]);
        let err = ckpt.finish().unwrap_err();
        let CheckpointError::Mismatch { report, .. } = &err else {
            panic!("unexpected error {err}");
        };
        assert_eq!(
            report.missing,
            vec!["image_encoder.does_not_exist".to_string()]
        );
        assert_eq!(report.misshaped.len(), 1);
        assert_eq!(report.misshaped[0].stored, vec![1, 1, 32]);
        assert_eq!(report.unexpected.len(), 335 - 2);
        let text = err.to_string();
        assert!(
            text.contains("model.safetensors")
                && text.contains("sam_mask_decoder.iou_token.weight")
        );
        // Scoped to the image encoder, the other parts of the model are not unexpected.
        let scoped = ckpt.finish_under("image_encoder").unwrap_err();
        let CheckpointError::Mismatch { report, .. } = scoped else {
            panic!("expected a mismatch");
        };
        assert!(
            report
                .unexpected
                .iter()
                .all(|n| n.starts_with("image_encoder."))
        );
    }

    #[test]
    fn truncated_and_garbage_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(format!("{MINI}/model.pt")).unwrap();
        let truncated = dir.path().join("truncated.pt");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = Checkpoint::open(&truncated).unwrap_err().to_string();
        assert!(err.contains("truncated.pt"), "{err}");
        let st = std::fs::read(format!("{MINI}/model.safetensors")).unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &st[..st.len() - 100]).unwrap();
        let err = Checkpoint::open(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.safetensors"), "{err}");
        let garbage = dir.path().join("garbage.bin");
        std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
        let err = Checkpoint::open(&garbage).unwrap_err().to_string();
        assert!(
            err.contains("garbage.bin") && err.contains("safetensors"),
            "{err}"
        );
        let tiny = dir.path().join("tiny.pt");
        std::fs::write(&tiny, b"PK").unwrap();
        assert!(
            Checkpoint::open(&tiny)
                .unwrap_err()
                .to_string()
                .contains("tiny.pt")
        );
        let missing = dir.path().join("absent.pt");
        assert!(
            Checkpoint::open(&missing)
                .unwrap_err()
                .to_string()
                .contains("absent.pt")
        );
    }

    #[test]
    fn random_weights_are_seeded_and_serve_any_request() {
        let dev = Device::Cpu;
        let draw = |seed: u64| {
            let ckpt = Checkpoint::random(RandomWeights::new(seed));
            let vb = ckpt.var_builder(&dev);
            let w = vb.get((64, 32), "layer.weight").unwrap();
            let g = vb.get(32, "norm.weight").unwrap();
            ckpt.finish().unwrap();
            (w, g)
        };
        let (w1, g1) = draw(7);
        let (w2, _) = draw(7);
        let (w3, _) = draw(8);
        assert_same(&w1, &w2);
        assert!(
            (&w1 - &w3)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        let std = w1
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!((std - (1.0f32 / 32.0).sqrt()).abs() < 0.03, "std {std}");
        let gain = g1.mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((gain - 1.0).abs() < 0.1, "gain {gain}");
    }
}
