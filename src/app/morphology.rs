//! Whole-label clean-up edits: fill the holes of a label slice by slice along an axis, and
//! remove its islands (keep the largest 26-connected piece). Both return one undoable edit and
//! leave locked labels alone.

use super::document::Document;
use super::history::VoxelEdit;
use crate::segment::postprocess::keep_largest_component;
use crate::volume::{SliceAxis, extract_slice};

/// Fills every region of a slice that is enclosed by `label` (background not 4-connected to the
/// slice border), on every slice along `axis`.
pub fn fill_holes(doc: &Document, label: u8, axis: SliceAxis) -> VoxelEdit {
    let g = &doc.image.geometry;
    let dims = g.dims;
    let (w, h) = axis.slice_size(g);
    let locked = doc.label_table.lock_mask();
    let mut edit = VoxelEdit::new("Fill holes");
    let mut slice = Vec::new();
    let mut outside = vec![false; w * h];
    let mut stack = Vec::new();
    for index in 0..axis.slice_count(g) {
        extract_slice(&doc.labels, dims, axis, index, &mut slice);
        if !slice.contains(&label) {
            continue;
        }
        // Flood the non-label pixels reachable from the border.
        outside.fill(false);
        stack.clear();
        for u in 0..w {
            stack.push((u, 0));
            stack.push((u, h - 1));
        }
        for v in 0..h {
            stack.push((0, v));
            stack.push((w - 1, v));
        }
        while let Some((u, v)) = stack.pop() {
            let p = u + w * v;
            if outside[p] || slice[p] == label {
                continue;
            }
            outside[p] = true;
            if u > 0 {
                stack.push((u - 1, v));
            }
            if u + 1 < w {
                stack.push((u + 1, v));
            }
            if v > 0 {
                stack.push((u, v - 1));
            }
            if v + 1 < h {
                stack.push((u, v + 1));
            }
        }
        for v in 0..h {
            for u in 0..w {
                let p = u + w * v;
                if !outside[p] && slice[p] != label && !locked[slice[p] as usize] {
                    edit.push(g.linear_index(axis.voxel(index, u, v)), slice[p], label);
                }
            }
        }
    }
    edit
}

/// Keeps only the largest 26-connected piece of `label`; the other pieces become background.
pub fn remove_islands(doc: &Document, label: u8) -> VoxelEdit {
    let mut edit = VoxelEdit::new("Remove islands");
    if doc.label_table.is_locked(label) {
        return edit;
    }
    let mut mask: Vec<u8> = doc.labels.iter().map(|&l| (l == label) as u8).collect();
    if keep_largest_component(&mut mask, doc.image.geometry.dims).is_err() {
        return edit;
    }
    for (i, (&l, &keep)) in doc.labels.iter().zip(&mask).enumerate() {
        if l == label && keep == 0 {
            edit.push(i, label, 0);
        }
    }
    edit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
    use std::path::PathBuf;

    fn doc(dims: [usize; 3]) -> Document {
        let g = Geometry::new(dims, [1.0; 3], [0.0; 3]);
        let n = g.voxel_count();
        Document::new(Volume::new(g, 1, VoxelBuffer::I16(vec![0; n]), VolumeMeta::default()).unwrap(), PathBuf::from("x"), None)
    }

    #[test]
    fn fills_enclosed_holes_only() {
        let mut d = doc([5, 5, 1]);
        // A ring of label 1 around (2, 2), and an open notch at the border.
        let ring: Vec<usize> = (1..4).flat_map(|j| (1..4).map(move |i| i + 5 * j)).filter(|&p| p != 12).collect();
        let e = d.paint_edit(ring, 1, "ring");
        d.apply(e).unwrap();
        let e = fill_holes(&d, 1, SliceAxis::Axial);
        assert_eq!(e.indices, vec![12]);
        d.apply(e).unwrap();
        assert_eq!(d.voxel_count(1), 9);
    }

    #[test]
    fn keeps_the_largest_piece() {
        let mut d = doc([6, 1, 1]);
        let e = d.paint_edit([0, 2, 3, 4], 1, "pieces");
        d.apply(e).unwrap();
        let e = remove_islands(&d, 1);
        assert_eq!(e.indices, vec![0]);
        d.label_table.get_mut(1).unwrap().locked = true;
        assert!(remove_islands(&d, 1).is_empty());
    }
}
