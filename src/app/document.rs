//! `Document`: the open image and the segmentation being made on it — the label map, its label
//! table, the undo history, and whether there are unsaved changes. Every change to the label
//! map goes through one write path that keeps the per-label voxel counts (counted from the
//! voxels' current values), the history and the region the GPU still has to see in step, and
//! that refuses edits, undo and redo while a segmentation run streams into the label map
//! (`begin_run` .. `finish_run`): the run's undo step is made from the slices as they were, so
//! nothing else may change them meanwhile.

use super::history::{EditHistory, VoxelEdit};
use super::labels::LabelTable;
use crate::io::{self, IoError, LoadProgress, OpenOptions, SeriesSelector, label_descriptions, nifti};
use crate::volume::{SliceAxis, Volume, VolumeMeta, VoxelBuffer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A box of voxels: origin and size along i, j, k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoxelBox {
    pub origin: [usize; 3],
    pub size: [usize; 3],
}

impl VoxelBox {
    fn of_point(p: [usize; 3]) -> Self {
        VoxelBox { origin: p, size: [1, 1, 1] }
    }

    fn union(self, other: VoxelBox) -> VoxelBox {
        let mut origin = [0; 3];
        let mut size = [0; 3];
        for a in 0..3 {
            let lo = self.origin[a].min(other.origin[a]);
            let hi = (self.origin[a] + self.size[a]).max(other.origin[a] + other.size[a]);
            origin[a] = lo;
            size[a] = hi - lo;
        }
        VoxelBox { origin, size }
    }
}

/// Regions this small are always joined (one upload is cheaper than bookkeeping).
const SMALL_UPLOAD: usize = 4096;

/// Why the label map refused a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditRefused {
    #[error("a segmentation is writing the label map: this waits until it finishes (or cancel it with Esc)")]
    RunOpen,
}

/// Why a mask cannot be put on the open image.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error(transparent)]
    Refused(#[from] EditRefused),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: the mask is {mask:?} voxels but the image is {image:?}")]
    DimsDiffer { path: String, mask: [usize; 3], image: [usize; 3] },
    #[error("{path}: the mask lies {offset_mm:.3} mm away from the image (different geometry)")]
    GeometryDiffers { path: String, offset_mm: f64 },
    #[error("{path}: the mask holds values outside 0..255 (not a label map)")]
    NotLabels { path: String },
}

pub struct Document {
    pub image: Arc<Volume>,
    pub image_path: PathBuf,
    pub series: Option<SeriesSelector>,
    pub labels: Vec<u8>,
    pub label_table: LabelTable,
    pub history: EditHistory,
    /// Where the mask was last saved or opened from.
    pub mask_path: Option<PathBuf>,
    counts: [u64; 256],
    /// The image's min..max, found once: the image never changes, and scanning it costs
    /// milliseconds per frame on a 512x512x300 CT.
    value_range: Option<(f64, f64)>,
    revision: u64,
    saved_revision: u64,
    /// Changed regions not yet on the GPU (kept apart when joining them would upload much more).
    gpu_dirty: Vec<VoxelBox>,
    /// A segmentation run is streaming slices in (`begin_run` .. `finish_run`).
    run_open: bool,
}

impl Document {
    pub fn new(image: Volume, image_path: PathBuf, series: Option<SeriesSelector>) -> Self {
        let n = image.geometry.voxel_count();
        let mut counts = [0u64; 256];
        counts[0] = n as u64;
        Document {
            value_range: image.min_max(),
            image: Arc::new(image),
            image_path,
            series,
            labels: vec![0; n],
            label_table: LabelTable::default(),
            history: EditHistory::default(),
            mask_path: None,
            counts,
            revision: 0,
            saved_revision: 0,
            gpu_dirty: Vec::new(),
            run_open: false,
        }
    }

    /// Opens an image from disk, telling `progress` how far the reading has got.
    pub fn open(path: &Path, series: Option<SeriesSelector>, progress: Option<LoadProgress>) -> Result<Self, IoError> {
        let image = io::open(path, &OpenOptions { series: series.clone(), progress })?;
        Ok(Document::new(image, path.to_path_buf(), series))
    }

    pub fn dims(&self) -> [usize; 3] {
        self.image.geometry.dims
    }

    /// Counts changes to the label map (edits, undo, redo, opened masks).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// True when the label map has changes that are not saved.
    pub fn is_dirty(&self) -> bool {
        self.revision != self.saved_revision
    }

    /// The image's smallest and largest value (`None` for an image without numbers).
    pub fn value_range(&self) -> Option<(f64, f64)> {
        self.value_range
    }

    pub fn voxel_count(&self, label: u8) -> u64 {
        self.counts[label as usize]
    }

    /// Volume of a label in mL.
    pub fn volume_ml(&self, label: u8) -> f64 {
        self.counts[label as usize] as f64 * self.image.geometry.voxel_volume_mm3() / 1000.0
    }

    /// Values other than 0 present in the label map.
    pub fn present_labels(&self) -> Vec<u8> {
        (1..=255u8).filter(|&v| self.counts[v as usize] > 0).collect()
    }

    /// True while a segmentation run streams into the label map.
    pub fn run_open(&self) -> bool {
        self.run_open
    }

    /// Opens a segmentation run: from now until `finish_run` only `write_slice` changes the
    /// label map, and every other edit, undo and redo is refused.
    pub fn begin_run(&mut self) -> Result<(), EditRefused> {
        self.editable()?;
        self.run_open = true;
        Ok(())
    }

    /// Closes the run, recording its edit (made with `slice_change`) as one undo step.
    pub fn finish_run(&mut self, edit: VoxelEdit) {
        self.run_open = false;
        self.history.record(edit);
    }

    fn editable(&self) -> Result<(), EditRefused> {
        if self.run_open { Err(EditRefused::RunOpen) } else { Ok(()) }
    }

    /// Applies an edit, records it for undo and marks its region for the GPU.
    pub fn apply(&mut self, edit: VoxelEdit) -> Result<(), EditRefused> {
        self.editable()?;
        if !edit.is_empty() {
            self.write(&edit, true);
            self.history.record(edit);
        }
        Ok(())
    }

    /// Shows an edit without recording it (a dab of a stroke still being drawn).
    pub fn apply_unrecorded(&mut self, edit: &VoxelEdit) -> Result<(), EditRefused> {
        self.editable()?;
        self.write(edit, true);
        Ok(())
    }

    /// Records an edit that was already applied with `apply_unrecorded` (a finished stroke).
    pub fn record(&mut self, edit: VoxelEdit) -> Result<(), EditRefused> {
        self.editable()?;
        self.history.record(edit);
        Ok(())
    }

    /// Reverts the last edit; returns its description.
    pub fn undo(&mut self) -> Result<Option<String>, EditRefused> {
        self.editable()?;
        let Some(edit) = self.history.undo().cloned() else { return Ok(None) };
        self.write(&edit, false);
        Ok(Some(edit.description))
    }

    /// Re-applies the last undone edit; returns its description.
    pub fn redo(&mut self) -> Result<Option<String>, EditRefused> {
        self.editable()?;
        let Some(edit) = self.history.redo().cloned() else { return Ok(None) };
        self.write(&edit, true);
        Ok(Some(edit.description))
    }

    /// Writes an edit's new labels (or, backwards, its old ones). Counts follow the voxels'
    /// current values, so they stay exact even where a voxel no longer holds what the edit
    /// recorded.
    fn write(&mut self, edit: &VoxelEdit, forward: bool) {
        let to = if forward { &edit.after } else { &edit.before };
        let [nx, ny, _] = self.dims();
        let mut region: Option<VoxelBox> = None;
        for (&i, &b) in edit.indices.iter().zip(to) {
            let i = i as usize;
            let a = self.labels[i];
            self.labels[i] = b;
            self.counts[a as usize] -= 1;
            self.counts[b as usize] += 1;
            let p = VoxelBox::of_point([i % nx, (i / nx) % ny, i / (nx * ny)]);
            region = Some(region.map_or(p, |r| r.union(p)));
        }
        if let Some(r) = region {
            self.mark_gpu_dirty(r);
        }
        self.revision += 1;
    }

    /// Adds a changed region, joined with one already there when the join is not much larger
    /// than the two (slices streamed far apart stay separate uploads).
    fn mark_gpu_dirty(&mut self, region: VoxelBox) {
        let volume = |b: &VoxelBox| b.size.iter().product::<usize>();
        for d in &mut self.gpu_dirty {
            let joined = d.union(region);
            if volume(&joined) <= 2 * (volume(d) + volume(&region)) + SMALL_UPLOAD {
                *d = joined;
                return;
            }
        }
        self.gpu_dirty.push(region);
    }

    /// The changed regions since the last call, with their label bytes (x fastest), for upload.
    pub fn take_gpu_regions(&mut self) -> Vec<(VoxelBox, Vec<u8>)> {
        let [nx, ny, _] = self.dims();
        std::mem::take(&mut self.gpu_dirty)
            .into_iter()
            .map(|r| {
                let mut bytes = Vec::with_capacity(r.size.iter().product());
                for k in r.origin[2]..r.origin[2] + r.size[2] {
                    for j in r.origin[1]..r.origin[1] + r.size[1] {
                        let start = r.origin[0] + nx * (j + ny * k);
                        bytes.extend_from_slice(&self.labels[start..start + r.size[0]]);
                    }
                }
                (r, bytes)
            })
            .collect()
    }

    /// Where slice `index` starts in the label map and the steps of its u and v axes.
    fn slice_layout(&self, axis: SliceAxis, index: usize) -> (usize, usize, usize) {
        let g = &self.image.geometry;
        let origin = g.linear_index(axis.voxel(index, 0, 0));
        let step = |p: [usize; 3]| g.linear_index(p) - origin;
        let (w, h) = axis.slice_size(g);
        let su = if w > 1 { step(axis.voxel(index, 1, 0)) } else { 0 };
        let sv = if h > 1 { step(axis.voxel(index, 0, 1)) } else { 0 };
        (origin, su, sv)
    }

    /// The label map on one slice (u fastest).
    pub fn slice_labels(&self, axis: SliceAxis, index: usize) -> Vec<u8> {
        let mut out = Vec::new();
        crate::volume::extract_slice(&self.labels, self.dims(), axis, index, &mut out);
        out
    }

    /// The run's write (see `begin_run`; ignored when no run is open). Makes `mask` (a slice
    /// along `axis`, u fastest, nonzero = inside) the extent of `label` on
    /// slice `index`: voxels inside become `label`; voxels of `label` outside go back to what
    /// `kept` (the slice's labels before the run) holds there, so that a new object adds to the
    /// label instead of replacing it, or, without `kept`, become background; locked labels are
    /// left alone. Written straight into the label map without an edit (a propagation streams
    /// whole slices; the caller records one edit for the run from the slices' earlier labels,
    /// see `slice_change`).
    pub fn write_slice(&mut self, axis: SliceAxis, index: usize, mask: &[u8], label: u8, kept: Option<&[u8]>) {
        let (w, h) = axis.slice_size(&self.image.geometry);
        if !self.run_open || mask.len() != w * h || kept.is_some_and(|k| k.len() != w * h) {
            return;
        }
        let (origin, su, sv) = self.slice_layout(axis, index);
        let locked = self.label_table.lock_mask();
        for v in 0..h {
            for u in 0..w {
                let i = origin + v * sv + u * su;
                let old = self.labels[i];
                let new = if mask[u + w * v] != 0 {
                    label
                } else if old == label {
                    kept.map_or(0, |k| k[u + w * v])
                } else {
                    old
                };
                if new != old && !locked[old as usize] {
                    self.labels[i] = new;
                    self.counts[old as usize] -= 1;
                    self.counts[new as usize] += 1;
                }
            }
        }
        let p = axis.voxel(index, 0, 0);
        let q = axis.voxel(index, w.saturating_sub(1), h.saturating_sub(1));
        let region = VoxelBox { origin: p, size: [q[0] - p[0] + 1, q[1] - p[1] + 1, q[2] - p[2] + 1] };
        self.mark_gpu_dirty(region);
        self.revision += 1;
    }

    /// The change on one slice since it held `before` (from `slice_labels`), as an edit to
    /// record: the edit is already applied.
    pub fn slice_change(&self, axis: SliceAxis, index: usize, before: &[u8], edit: &mut VoxelEdit) {
        let (w, h) = axis.slice_size(&self.image.geometry);
        let (origin, su, sv) = self.slice_layout(axis, index);
        for v in 0..h {
            let row = origin + v * sv;
            for (u, &b) in before[w * v..w * (v + 1)].iter().enumerate() {
                let i = row + u * su;
                if b != self.labels[i] {
                    edit.push(i, b, self.labels[i]);
                }
            }
        }
    }

    /// An edit that sets the voxels `indices` to `label` (0 = erase), sparing locked labels.
    pub fn paint_edit(&self, indices: impl IntoIterator<Item = usize>, label: u8, description: &str) -> VoxelEdit {
        let locked = self.label_table.lock_mask();
        let mut edit = VoxelEdit::new(description);
        for i in indices {
            let old = self.labels[i];
            if !locked[old as usize] {
                edit.push(i, old, label);
            }
        }
        edit
    }

    /// Puts a mask file (a draft from another tool) onto the image as one undoable edit, with
    /// the label names and colours of the ITK-SNAP label description beside it when there is
    /// one. Returns a warning when that description could not be read (the mask is open).
    pub fn open_mask(&mut self, path: &Path) -> Result<Option<String>, DocumentError> {
        self.editable()?;
        let mask = io::open(path, &OpenOptions::default())?;
        let p = path.display().to_string();
        let g = &self.image.geometry;
        if mask.geometry.dims != g.dims {
            return Err(DocumentError::DimsDiffer { path: p, mask: mask.geometry.dims, image: g.dims });
        }
        let corners = [[0.0; 3], g.dims.map(|d| d as f64 - 1.0)];
        let offset = corners
            .iter()
            .map(|&c| {
                let (a, b) = (g.voxel_to_world(c), mask.geometry.voxel_to_world(c));
                ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
            })
            .fold(0.0f64, f64::max);
        if offset > 1e-3 {
            return Err(DocumentError::GeometryDiffers { path: p, offset_mm: offset });
        }
        let (lo, hi) = mask.min_max().unwrap_or((0.0, 0.0));
        if lo < 0.0 || hi > 255.0 {
            return Err(DocumentError::NotLabels { path: p });
        }
        let values: Vec<u8> = (0..g.voxel_count()).map(|i| mask.data.get_f64(i).round() as u8).collect();
        let mut edit = VoxelEdit::new(format!("Open mask {}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        for (i, &v) in values.iter().enumerate() {
            edit.push(i, self.labels[i], v);
        }
        let mut present = [false; 256];
        for &v in &values {
            present[v as usize] = true;
        }
        self.label_table.ensure((1..=255u8).filter(|&v| present[v as usize]));
        self.apply(edit)?;
        self.mask_path = Some(path.to_path_buf());
        let descriptions = label_descriptions::path_beside(path);
        if !descriptions.exists() {
            return Ok(None);
        }
        match label_descriptions::read(&descriptions) {
            Ok(described) => {
                self.label_table.apply_descriptions(&described);
                Ok(None)
            }
            Err(e) => Ok(Some(format!("label names and colours not read: {e}"))),
        }
    }

    /// The label map as a volume with the image's geometry (and NIfTI transforms).
    pub fn label_volume(&self) -> Volume {
        Volume {
            geometry: self.image.geometry.clone(),
            timepoints: 1,
            data: VoxelBuffer::U8(self.labels.clone()),
            meta: VolumeMeta { nifti_transform: self.image.meta.nifti_transform.clone(), ..Default::default() },
        }
    }

    /// Writes the label map as NIfTI and its label table as the ITK-SNAP label description
    /// beside it (each atomically), and marks the document saved.
    pub fn save_mask(&mut self, path: &Path) -> Result<(), IoError> {
        self.write_recovery(path)?;
        self.mask_path = Some(path.to_path_buf());
        self.saved_revision = self.revision;
        Ok(())
    }

    /// Writes the label map and its label description without changing the saved state (a
    /// recovery copy).
    pub fn write_recovery(&self, path: &Path) -> Result<(), IoError> {
        nifti::write(path, &self.label_volume(), nifti::NiftiKind::LabelMap)?;
        label_descriptions::write(&label_descriptions::path_beside(path), &self.label_table.descriptions())
    }

    /// Index of voxel (i, j, k).
    pub fn index(&self, v: [usize; 3]) -> usize {
        self.image.geometry.linear_index(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn doc() -> Document {
        let g = Geometry::new([4, 3, 2], [1.0, 1.0, 2.0], [0.0; 3]);
        let image = Volume::new(g, 1, VoxelBuffer::I16(vec![0; 24]), VolumeMeta::default()).unwrap();
        Document::new(image, PathBuf::from("x.nii"), None)
    }

    #[test]
    fn edits_update_counts_dirty_and_gpu_region() {
        let mut d = doc();
        let e = d.paint_edit([1, 5, 13], 1, "brush");
        d.apply(e).unwrap();
        assert_eq!(d.voxel_count(1), 3);
        assert!(d.is_dirty());
        assert!((d.volume_ml(1) - 3.0 * 2.0 / 1000.0).abs() < 1e-12);
        let regions = d.take_gpu_regions();
        assert_eq!(regions.len(), 1, "neighbouring voxels share one upload");
        let (r, bytes) = regions[0].clone();
        assert_eq!(r, VoxelBox { origin: [1, 0, 0], size: [1, 2, 2] });
        assert_eq!(bytes, vec![1, 1, 1, 0]);
        d.undo().unwrap();
        assert_eq!(d.voxel_count(1), 0);
        assert_eq!(d.take_gpu_regions().len(), 1);
        assert!(d.take_gpu_regions().is_empty());
        // Two far-apart slices are uploaded apart, not as the box spanning both.
        let big = Geometry::new([64, 64, 64], [1.0; 3], [0.0; 3]);
        let image = Volume::new(big, 1, VoxelBuffer::U8(vec![0; 64 * 64 * 64]), VolumeMeta::default()).unwrap();
        let mut d = Document::new(image, PathBuf::from("y.nii"), None);
        d.begin_run().unwrap();
        d.write_slice(SliceAxis::Axial, 2, &vec![1; 64 * 64], 1, None);
        d.write_slice(SliceAxis::Axial, 3, &vec![1; 64 * 64], 1, None);
        d.write_slice(SliceAxis::Axial, 60, &vec![1; 64 * 64], 1, None);
        let regions = d.take_gpu_regions();
        let sizes: Vec<[usize; 3]> = regions.iter().map(|(r, _)| r.size).collect();
        assert_eq!(sizes, [[64, 64, 2], [64, 64, 1]]);
    }

    #[test]
    fn streamed_slices_follow_the_mask_spare_locks_and_undo_exactly() {
        for axis in [SliceAxis::Axial, SliceAxis::Coronal, SliceAxis::Sagittal] {
            let mut streamed = doc();
            streamed.label_table.add();
            let seed = streamed.paint_edit([0, 5, 6, 17, 23], 2, "brush");
            streamed.apply(seed).unwrap();
            streamed.label_table.get_mut(2).unwrap().locked = true;
            let g = streamed.image.geometry.clone();
            let (w, h) = axis.slice_size(&g);
            let mask: Vec<u8> = (0..w * h).map(|n| (n % 3 != 0) as u8).collect();
            let start = streamed.labels.clone();
            // Expected: inside -> 1, outside -> 0, label 2 (locked) untouched, other slices as they were.
            let mut expected = start.clone();
            for v in 0..h {
                for u in 0..w {
                    let i = g.linear_index(axis.voxel(1, u, v));
                    if start[i] != 2 {
                        expected[i] = mask[u + w * v];
                    }
                }
            }
            let changed = start.iter().zip(&expected).filter(|(a, b)| a != b).count();
            assert!(changed > 0);
            let before = streamed.slice_labels(axis, 1);
            streamed.begin_run().unwrap();
            streamed.write_slice(axis, 1, &mask, 1, None);
            assert_eq!(streamed.labels, expected, "{axis:?}");
            assert_eq!(streamed.voxel_count(1) as usize, expected.iter().filter(|&&l| l == 1).count());
            let mut run = VoxelEdit::new("run");
            streamed.slice_change(axis, 1, &before, &mut run);
            assert_eq!(run.len(), changed, "{axis:?}: the run's edit holds exactly the changed voxels");
            streamed.finish_run(run);
            streamed.undo().unwrap();
            assert_eq!(streamed.labels, start, "{axis:?}: undo restores the slice");
        }
    }

    #[test]
    fn locked_labels_survive_painting_and_slices() {
        let mut d = doc();
        d.label_table.add();
        let e = d.paint_edit([0, 1], 2, "brush");
        d.apply(e).unwrap();
        d.label_table.get_mut(2).unwrap().locked = true;
        let e = d.paint_edit([0, 1, 2], 1, "brush");
        d.apply(e).unwrap();
        assert_eq!(&d.labels[..3], &[2, 2, 1]);
        // Slice 0 of the axial axis: everything inside except the locked voxels.
        d.begin_run().unwrap();
        d.write_slice(SliceAxis::Axial, 0, &[1; 12], 1, None);
        assert_eq!(&d.labels[..4], &[2, 2, 1, 1]);
        // An empty mask clears label 1 from the slice but not label 2.
        d.write_slice(SliceAxis::Axial, 0, &[0; 12], 1, None);
        assert_eq!(&d.labels[..4], &[2, 2, 0, 0]);
    }

    #[test]
    fn a_new_object_adds_to_the_label_on_its_slices() {
        let mut d = doc();
        // Label 1 already holds voxels 0 and 1 of slice 0 (another lesion).
        let e = d.paint_edit([0, 1], 1, "brush");
        d.apply(e).unwrap();
        let kept = d.slice_labels(SliceAxis::Axial, 0);
        d.begin_run().unwrap();
        // The new object's first answer covers voxels 4 and 5, its final one voxel 5 only.
        let mut first = vec![0u8; kept.len()];
        first[4] = 1;
        first[5] = 1;
        d.write_slice(SliceAxis::Axial, 0, &first, 1, Some(&kept));
        assert_eq!(&d.labels[..6], &[1, 1, 0, 0, 1, 1]);
        first[4] = 0;
        d.write_slice(SliceAxis::Axial, 0, &first, 1, Some(&kept));
        assert_eq!(&d.labels[..6], &[1, 1, 0, 0, 0, 1], "the other lesion stays, the object's dropped voxel goes");
        assert_eq!(d.voxel_count(1), 3);
    }

    /// Every label's count as a recount of the label map gives it.
    fn recount(d: &Document) -> Vec<u64> {
        let mut counts = vec![0u64; 256];
        for &l in &d.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A run as the viewer makes one: each slice's labels kept when it first streams, the
    /// slices written, then one undo step from the kept slices.
    fn stream_run(d: &mut Document, slices: &[(usize, Vec<u8>)], label: u8) {
        let mut before = std::collections::BTreeMap::new();
        for (index, mask) in slices {
            before.entry(*index).or_insert_with(|| d.slice_labels(SliceAxis::Axial, *index));
            d.write_slice(SliceAxis::Axial, *index, mask, label, None);
        }
        let mut edit = VoxelEdit::new("run");
        for (index, kept) in &before {
            d.slice_change(SliceAxis::Axial, *index, kept, &mut edit);
        }
        d.finish_run(edit);
    }

    #[test]
    fn edits_undo_redo_and_masks_wait_while_a_run_streams() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = doc();
        let e = d.paint_edit([0, 1, 2], 1, "brush");
        d.apply(e).unwrap();
        let mask_path = dir.path().join("draft.nii.gz");
        d.save_mask(&mask_path).unwrap();

        d.begin_run().unwrap();
        d.write_slice(SliceAxis::Axial, 0, &[1; 12], 1, None);
        let during = d.labels.clone();
        // What the viewer's fill, islands, classic tools, brush, undo, redo and Open mask
        // do, refused: the run's slice stays as the run wrote it.
        let fill = d.paint_edit([3, 4, 5], 0, "Fill holes");
        assert_eq!(d.apply(fill.clone()), Err(EditRefused::RunOpen));
        assert_eq!(d.apply_unrecorded(&fill), Err(EditRefused::RunOpen));
        assert_eq!(d.record(fill), Err(EditRefused::RunOpen));
        assert_eq!(d.undo(), Err(EditRefused::RunOpen));
        assert_eq!(d.redo(), Err(EditRefused::RunOpen));
        assert!(matches!(d.open_mask(&mask_path), Err(DocumentError::Refused(EditRefused::RunOpen))));
        assert_eq!(d.begin_run(), Err(EditRefused::RunOpen), "one run at a time");
        assert_eq!(d.labels, during);
        let mut edit = VoxelEdit::new("run");
        d.slice_change(SliceAxis::Axial, 0, &[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], &mut edit);
        d.finish_run(edit);

        // Afterwards everything works again, and undoing the run and the brush leaves the
        // counts a recount gives.
        assert_eq!(d.undo().unwrap().as_deref(), Some("run"));
        assert_eq!(d.undo().unwrap().as_deref(), Some("brush"));
        assert_eq!(d.labels, vec![0; 24]);
        assert_eq!(d.counts.to_vec(), recount(&d));
        d.open_mask(&mask_path).unwrap();
        assert_eq!(d.voxel_count(1), 3);
    }

    #[test]
    fn any_sequence_of_edits_runs_undos_and_redos_keeps_counts_exact() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut d = doc();
            d.label_table.add();
            let mut stroke: Option<super::super::history::EditBuilder> = None;
            for step in 0..40 {
                let label = rng.random_range(0..3u8);
                match rng.random_range(0..7) {
                    0 => {
                        let voxels: Vec<usize> = (0..rng.random_range(1..6)).map(|_| rng.random_range(0..24)).collect();
                        let edit = d.paint_edit(voxels, label, "paint");
                        d.apply(edit).unwrap();
                    }
                    1 => {
                        // A dab of a stroke, shown at once; the stroke is recorded later.
                        let edit = d.paint_edit([rng.random_range(0..24)], label, "dab");
                        d.apply_unrecorded(&edit).unwrap();
                        stroke.get_or_insert_with(|| super::super::history::EditBuilder::new("stroke")).merge(edit);
                    }
                    2 => {
                        if let Some(s) = stroke.take() {
                            d.record(s.finish()).unwrap();
                        }
                    }
                    3 if stroke.is_none() => {
                        d.begin_run().unwrap();
                        // Edits tried while the run streams are refused and change nothing.
                        let before = d.labels.clone();
                        let attempt = d.paint_edit([rng.random_range(0..24)], label, "during run");
                        assert!(d.apply(attempt).is_err() && d.undo().is_err() && d.redo().is_err());
                        assert_eq!(d.labels, before);
                        let slices: Vec<(usize, Vec<u8>)> =
                            (0..rng.random_range(1..4)).map(|_| (rng.random_range(0..2), (0..12).map(|_| rng.random_range(0..2u8)).collect())).collect();
                        stream_run(&mut d, &slices, label.max(1));
                    }
                    4 | 5 if stroke.is_none() => {
                        d.undo().unwrap();
                    }
                    6 if stroke.is_none() => {
                        d.redo().unwrap();
                    }
                    _ => {}
                }
                assert_eq!(d.counts.to_vec(), recount(&d), "seed {seed}, step {step}");
            }
        }
    }

    #[test]
    fn save_and_reopen_mask() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = doc();
        let e = d.paint_edit([3, 7, 20], 1, "brush");
        d.apply(e).unwrap();
        let path = dir.path().join("mask.nii.gz");
        d.save_mask(&path).unwrap();
        assert!(!d.is_dirty());
        let mut other = doc();
        assert_eq!(other.open_mask(&path).unwrap(), None);
        assert_eq!(other.labels, d.labels);
        assert!(other.history.can_undo());
    }

    #[test]
    fn label_names_and_colours_survive_save_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = doc();
        let two = d.label_table.add().unwrap();
        let e = d.paint_edit([3, 7], 1, "brush");
        d.apply(e).unwrap();
        let e = d.paint_edit([20], two, "brush");
        d.apply(e).unwrap();
        let lesion = d.label_table.get_mut(1).unwrap();
        lesion.name = "liver lesion".into();
        lesion.color = [12, 34, 56];
        d.label_table.get_mut(two).unwrap().visible = false;
        let path = dir.path().join("mask.nii.gz");
        d.save_mask(&path).unwrap();
        assert!(dir.path().join("mask.label.txt").exists());
        let mut other = doc();
        assert_eq!(other.open_mask(&path).unwrap(), None);
        let (a, b) = (other.label_table.get(1).unwrap(), other.label_table.get(two).unwrap());
        assert_eq!((a.name.as_str(), a.color, a.visible), ("liver lesion", [12, 34, 56], true));
        assert!(!b.visible);
        // A damaged description does not keep the mask from opening: a warning says why.
        std::fs::write(dir.path().join("mask.label.txt"), "1 300 0 0 1 1 1 \"x\"").unwrap();
        let mut third = doc();
        let warning = third.open_mask(&path).unwrap().expect("a warning");
        assert!(warning.contains("mask.label.txt") && warning.contains("line 1"), "{warning}");
        assert_eq!(third.labels, d.labels);
    }
}
