//! `EditHistory`: undo and redo of label-map edits. Every change — a brush stroke, a fill, a
//! propagation result, an opened draft — is one `VoxelEdit` holding the changed voxels' old and
//! new labels, so undo is exact and costs memory only where something changed.

/// A change to the label map: voxels (linear indices) with their labels before and after.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VoxelEdit {
    pub description: String,
    pub indices: Vec<u32>,
    pub before: Vec<u8>,
    pub after: Vec<u8>,
}

impl VoxelEdit {
    pub fn new(description: impl Into<String>) -> Self {
        VoxelEdit { description: description.into(), ..Default::default() }
    }

    /// Records that voxel `index` goes from `before` to `after` (no-ops are skipped).
    pub fn push(&mut self, index: usize, before: u8, after: u8) {
        if before != after {
            self.indices.push(index as u32);
            self.before.push(before);
            self.after.push(after);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Writes the new labels into `labels`.
    pub fn apply(&self, labels: &mut [u8]) {
        for (&i, &v) in self.indices.iter().zip(&self.after) {
            labels[i as usize] = v;
        }
    }

    /// Writes the old labels back into `labels`.
    pub fn revert(&self, labels: &mut [u8]) {
        for (&i, &v) in self.indices.iter().zip(&self.before) {
            labels[i as usize] = v;
        }
    }

    fn bytes(&self) -> usize {
        self.indices.len() * 6
    }
}

/// Builds one edit out of many that are shown as they come (the dabs of a brush stroke, the
/// slices of a propagation): a voxel changed more than once keeps its first `before` and its
/// last `after`. Each fold costs the size of the later edit only.
#[derive(Debug, Default)]
pub struct EditBuilder {
    edit: VoxelEdit,
    position: std::collections::HashMap<u32, usize>,
}

impl EditBuilder {
    pub fn new(description: impl Into<String>) -> Self {
        EditBuilder { edit: VoxelEdit::new(description), position: Default::default() }
    }

    pub fn description(&self) -> &str {
        &self.edit.description
    }

    /// Folds a later edit in.
    pub fn merge(&mut self, later: VoxelEdit) {
        let edit = &mut self.edit;
        for ((i, b), a) in later.indices.into_iter().zip(later.before).zip(later.after) {
            match self.position.get(&i) {
                Some(&n) => edit.after[n] = a,
                None => {
                    self.position.insert(i, edit.indices.len());
                    edit.indices.push(i);
                    edit.before.push(b);
                    edit.after.push(a);
                }
            }
        }
    }

    /// The whole edit; voxels back where they started are dropped.
    pub fn finish(self) -> VoxelEdit {
        let e = self.edit;
        let mut out = VoxelEdit::new(e.description);
        for ((i, b), a) in e.indices.into_iter().zip(e.before).zip(e.after) {
            out.push(i as usize, b, a);
        }
        out
    }
}

/// Undo and redo stacks with a memory budget (the oldest edits are forgotten first).
#[derive(Debug)]
pub struct EditHistory {
    undo: Vec<VoxelEdit>,
    redo: Vec<VoxelEdit>,
    budget_bytes: usize,
}

impl Default for EditHistory {
    fn default() -> Self {
        EditHistory { undo: Vec::new(), redo: Vec::new(), budget_bytes: 1 << 30 }
    }
}

impl EditHistory {
    /// Remembers an applied edit; clears the redo stack.
    pub fn record(&mut self, edit: VoxelEdit) {
        if edit.is_empty() {
            return;
        }
        self.redo.clear();
        self.undo.push(edit);
        let mut total: usize = self.undo.iter().map(VoxelEdit::bytes).sum();
        while total > self.budget_bytes && self.undo.len() > 1 {
            total -= self.undo.remove(0).bytes();
        }
    }

    /// The edit to revert, moved to the redo stack.
    pub fn undo(&mut self) -> Option<&VoxelEdit> {
        let edit = self.undo.pop()?;
        self.redo.push(edit);
        self.redo.last()
    }

    /// The edit to re-apply, moved back to the undo stack.
    pub fn redo(&mut self) -> Option<&VoxelEdit> {
        let edit = self.redo.pop()?;
        self.undo.push(edit);
        self.undo.last()
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn undo_description(&self) -> Option<&str> {
        self.undo.last().map(|e| e.description.as_str())
    }

    pub fn redo_description(&self) -> Option<&str> {
        self.redo.last().map(|e| e.description.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_redo_restore_exactly() {
        let mut labels = vec![0u8, 1, 2, 0];
        let mut h = EditHistory::default();
        let mut e = VoxelEdit::new("paint");
        e.push(0, 0, 3);
        e.push(1, 1, 1); // no-op, skipped
        e.push(3, 0, 3);
        e.apply(&mut labels);
        h.record(e);
        assert_eq!(labels, [3, 1, 2, 3]);
        h.undo().unwrap().revert(&mut labels);
        assert_eq!(labels, [0, 1, 2, 0]);
        assert!(h.can_redo());
        h.redo().unwrap().apply(&mut labels);
        assert_eq!(labels, [3, 1, 2, 3]);
        assert!(h.undo_description() == Some("paint"));
    }

    #[test]
    fn builder_keeps_first_before_and_drops_round_trips() {
        let mut a = EditBuilder::new("stroke");
        let mut first = VoxelEdit::new("dab");
        first.push(5, 0, 1);
        first.push(7, 0, 1);
        a.merge(first);
        let mut b = VoxelEdit::new("dab");
        b.push(5, 1, 2);
        b.push(6, 0, 2);
        b.push(7, 1, 0);
        a.merge(b);
        let e = a.finish();
        assert_eq!(e.description, "stroke");
        assert_eq!((e.indices, e.before, e.after), (vec![5, 6], vec![0, 0], vec![2, 2]));
    }
}
