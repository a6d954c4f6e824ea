//! `LabelTable`: the labels of a segmentation (value 1..=255 in the label map), with the name,
//! colour, visibility and lock the annotator gives them.

use crate::io::label_descriptions::LabelDescription;
use serde::{Deserialize, Serialize};

/// One label of the label map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Value stored in the label map (1..=255).
    pub value: u8,
    pub name: String,
    pub color: [u8; 3],
    pub visible: bool,
    /// A locked label is never overwritten by propagation, the brush or the eraser.
    pub locked: bool,
}

/// Distinct colours for new labels, in order (the first is the classic red of most viewers).
const DEFAULT_COLORS: [[u8; 3]; 12] = [
    [230, 60, 60],
    [60, 200, 90],
    [70, 120, 240],
    [240, 210, 50],
    [60, 210, 220],
    [210, 80, 210],
    [250, 150, 40],
    [150, 100, 230],
    [140, 220, 120],
    [240, 120, 160],
    [120, 170, 200],
    [200, 170, 120],
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelTable {
    pub labels: Vec<Label>,
}

impl Default for LabelTable {
    fn default() -> Self {
        let mut t = LabelTable { labels: Vec::new() };
        t.add();
        t
    }
}

impl LabelTable {
    /// Adds a label with the lowest unused value; `None` when all 255 are in use.
    pub fn add(&mut self) -> Option<u8> {
        let value = (1..=255u8).find(|v| self.get(*v).is_none())?;
        self.labels.push(Label {
            value,
            name: format!("Label {value}"),
            color: DEFAULT_COLORS[(value as usize - 1) % DEFAULT_COLORS.len()],
            visible: true,
            locked: false,
        });
        self.labels.sort_by_key(|l| l.value);
        Some(value)
    }

    /// Makes sure every value present in a label map has an entry (e.g. after opening a mask).
    pub fn ensure(&mut self, values: impl IntoIterator<Item = u8>) {
        for value in values {
            if value != 0 && self.get(value).is_none() {
                self.labels.push(Label {
                    value,
                    name: format!("Label {value}"),
                    color: DEFAULT_COLORS[(value as usize - 1) % DEFAULT_COLORS.len()],
                    visible: true,
                    locked: false,
                });
            }
        }
        self.labels.sort_by_key(|l| l.value);
    }

    pub fn get(&self, value: u8) -> Option<&Label> {
        self.labels.iter().find(|l| l.value == value)
    }

    pub fn get_mut(&mut self, value: u8) -> Option<&mut Label> {
        self.labels.iter_mut().find(|l| l.value == value)
    }

    pub fn remove(&mut self, value: u8) {
        self.labels.retain(|l| l.value != value);
    }

    /// Whether voxels of `value` are protected (0, background, never is).
    pub fn is_locked(&self, value: u8) -> bool {
        value != 0 && self.get(value).is_some_and(|l| l.locked)
    }

    /// A 256-entry lock table indexed by label value.
    pub fn lock_mask(&self) -> [bool; 256] {
        let mut m = [false; 256];
        for l in &self.labels {
            m[l.value as usize] = l.locked;
        }
        m
    }

    /// The table as an ITK-SNAP label description (opaque, mesh shown; the lock is this
    /// viewer's own and has no place in the format).
    pub fn descriptions(&self) -> Vec<LabelDescription> {
        self.labels
            .iter()
            .map(|l| LabelDescription { value: l.value as u16, color: l.color, opacity: 1.0, visible: l.visible, mesh_visible: true, name: l.name.clone() })
            .collect()
    }

    /// Takes the name, colour and visibility of every label the table has from `described`
    /// (values it does not describe keep theirs).
    pub fn apply_descriptions(&mut self, described: &[LabelDescription]) {
        for l in &mut self.labels {
            if let Some(d) = described.iter().find(|d| d.value == l.value as u16) {
                l.name = d.name.clone();
                l.color = d.color;
                l.visible = d.visible;
            }
        }
    }

    /// RGBA8 for each of the 256 values: the label's colour, alpha 0 when hidden or unknown.
    pub fn palette(&self) -> [u8; 1024] {
        let mut p = [0u8; 1024];
        for l in &self.labels {
            let at = l.value as usize * 4;
            p[at..at + 3].copy_from_slice(&l.color);
            p[at + 3] = if l.visible { 255 } else { 0 };
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_fills_gaps_and_palette_hides() {
        let mut t = LabelTable::default();
        assert_eq!(t.add(), Some(2));
        t.remove(1);
        assert_eq!(t.add(), Some(1));
        t.get_mut(2).unwrap().visible = false;
        t.get_mut(1).unwrap().locked = true;
        let p = t.palette();
        assert_eq!(p[4 + 3], 255);
        assert_eq!(p[8 + 3], 0);
        assert!(t.is_locked(1) && !t.is_locked(0) && !t.is_locked(2));
        t.ensure([0, 7]);
        assert!(t.get(7).is_some());
    }
}
