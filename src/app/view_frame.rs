//! `ViewFrame`: how a slice view's screen axes map onto voxel index axes, so that each view
//! shows its anatomical plane in the radiological convention whatever the scan's direction
//! matrix: axial with the patient's left on screen right and anterior up, coronal with left on
//! the right and superior up, sagittal with anterior on the left and superior up.

use crate::volume::Geometry;
use serde::{Deserialize, Serialize};

/// The anatomical plane a view shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

/// One of the four panes of the 2x2 layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pane {
    Slice(Plane),
    ThreeD,
}

impl Pane {
    /// Every pane in layout order: axial, sagittal (top); coronal, 3D (bottom).
    pub const ALL: [Pane; 4] = [Pane::Slice(Plane::Axial), Pane::Slice(Plane::Sagittal), Pane::Slice(Plane::Coronal), Pane::ThreeD];

    pub fn name(self) -> &'static str {
        match self {
            Pane::Slice(plane) => plane.name(),
            Pane::ThreeD => "3D",
        }
    }
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

    pub fn name(self) -> &'static str {
        match self {
            Plane::Axial => "Axial",
            Plane::Coronal => "Coronal",
            Plane::Sagittal => "Sagittal",
        }
    }

    /// World (LPS) axis the plane is perpendicular to.
    fn normal_world_axis(self) -> usize {
        match self {
            Plane::Axial => 2,
            Plane::Coronal => 1,
            Plane::Sagittal => 0,
        }
    }

    /// World axis and sign that screen x (right) and screen y (down) point along.
    fn screen_world_axes(self) -> ((usize, f64), (usize, f64)) {
        match self {
            Plane::Axial => ((0, 1.0), (1, 1.0)),     // right = L, down = P
            Plane::Coronal => ((0, 1.0), (2, -1.0)),  // right = L, down = I
            Plane::Sagittal => ((1, 1.0), (2, -1.0)), // right = P, down = I
        }
    }
}

/// Index axes of a view: the one slices step through and the ones along screen x and y.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewFrame {
    pub plane: Plane,
    /// Index axis (0 = i, 1 = j, 2 = k) that the slice number steps along.
    pub normal: usize,
    /// Index axis along screen x, and whether it runs right-to-left.
    pub right: usize,
    pub flip_right: bool,
    /// Index axis along screen y, and whether it runs bottom-to-top.
    pub down: usize,
    pub flip_down: bool,
}

impl ViewFrame {
    pub fn new(plane: Plane, g: &Geometry) -> Self {
        let normal = g.index_axis_closest_to(plane.normal_world_axis());
        let others: Vec<usize> = (0..3).filter(|&a| a != normal).collect();
        let ((wr, sr), (wd, sd)) = plane.screen_world_axes();
        let (right, down) = if g.direction[wr][others[0]].abs() >= g.direction[wr][others[1]].abs() {
            (others[0], others[1])
        } else {
            (others[1], others[0])
        };
        ViewFrame {
            plane,
            normal,
            right,
            flip_right: g.direction[wr][right] * sr < 0.0,
            down,
            flip_down: g.direction[wd][down] * sd < 0.0,
        }
    }

    pub fn slice_count(&self, g: &Geometry) -> usize {
        g.dims[self.normal]
    }

    /// Width and height of the slice in mm (its true physical aspect).
    pub fn size_mm(&self, g: &Geometry) -> (f64, f64) {
        (g.dims[self.right] as f64 * g.spacing[self.right], g.dims[self.down] as f64 * g.spacing[self.down])
    }

    /// Continuous voxel index of the point at fractions (fx, fy) of the image rectangle
    /// (0 = left/top edge, 1 = right/bottom edge) on slice `slice`.
    pub fn voxel_at(&self, g: &Geometry, slice: usize, fx: f64, fy: f64) -> [f64; 3] {
        let mut v = [0.0; 3];
        v[self.normal] = slice as f64;
        let (nr, nd) = (g.dims[self.right] as f64, g.dims[self.down] as f64);
        v[self.right] = if self.flip_right { nr * (1.0 - fx) - 0.5 } else { nr * fx - 0.5 };
        v[self.down] = if self.flip_down { nd * (1.0 - fy) - 0.5 } else { nd * fy - 0.5 };
        v
    }

    /// Fractions (fx, fy) of the image rectangle where voxel centre `v` is drawn (inverse of
    /// `voxel_at` in the plane).
    pub fn fraction_of(&self, g: &Geometry, v: [f64; 3]) -> (f64, f64) {
        let (nr, nd) = (g.dims[self.right] as f64, g.dims[self.down] as f64);
        let fx = (v[self.right] + 0.5) / nr;
        let fy = (v[self.down] + 0.5) / nd;
        (if self.flip_right { 1.0 - fx } else { fx }, if self.flip_down { 1.0 - fy } else { fy })
    }

    /// The voxel map for the shader: rows r of a 3x3 matrix with voxel[r] = row · (x, y, 1),
    /// where (x, y) are framebuffer pixels and the image occupies `rect_px`
    /// = [left, top, width, height] in pixels.
    pub fn pixel_to_voxel_rows(&self, g: &Geometry, slice: usize, rect_px: [f64; 4]) -> [[f64; 3]; 3] {
        let [left, top, width, height] = rect_px;
        let mut rows = [[0.0; 3]; 3];
        rows[self.normal] = [0.0, 0.0, slice as f64];
        let (nr, nd) = (g.dims[self.right] as f64, g.dims[self.down] as f64);
        // voxel = n * f - 0.5 with f = (x - left) / width, or n * (1 - f) - 0.5 when flipped.
        let (ar, br) = (nr / width, -left * nr / width);
        rows[self.right] = if self.flip_right { [-ar, 0.0, nr - br - 0.5] } else { [ar, 0.0, br - 0.5] };
        let (ad, bd) = (nd / height, -top * nd / height);
        rows[self.down] = if self.flip_down { [0.0, -ad, nd - bd - 0.5] } else { [0.0, ad, bd - 0.5] };
        rows
    }

    /// Anatomical letters at the left, right, top and bottom edges of the view.
    pub fn edge_letters(&self) -> [char; 4] {
        match self.plane {
            Plane::Axial => ['R', 'L', 'A', 'P'],
            Plane::Coronal => ['R', 'L', 'S', 'I'],
            Plane::Sagittal => ['A', 'P', 'S', 'I'],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_geometry_uses_index_axes_directly() {
        let g = Geometry::new([10, 20, 30], [1.0, 1.0, 2.0], [0.0; 3]);
        let ax = ViewFrame::new(Plane::Axial, &g);
        assert_eq!((ax.normal, ax.right, ax.down, ax.flip_right, ax.flip_down), (2, 0, 1, false, false));
        let cor = ViewFrame::new(Plane::Coronal, &g);
        assert_eq!((cor.normal, cor.right, cor.down, cor.flip_down), (1, 0, 2, true), "superior up");
        let sag = ViewFrame::new(Plane::Sagittal, &g);
        assert_eq!((sag.normal, sag.right, sag.down), (0, 1, 2));
        assert_eq!(cor.size_mm(&g), (10.0, 60.0));
    }

    #[test]
    fn transposed_lesion_geometry_shows_anterior_up() {
        // DeepLesion crops: i -> posterior, j -> left, k -> inferior.
        let mut g = Geometry::new([512, 512, 16], [0.3, 0.3, 5.0], [0.0; 3]);
        g.direction = Geometry::direction_from_row_major([0., 1., 0., 1., 0., 0., 0., 0., -1.]);
        let ax = ViewFrame::new(Plane::Axial, &g);
        assert_eq!((ax.normal, ax.right, ax.down), (2, 1, 0), "j (left) across, i (posterior) down");
        assert!(!ax.flip_right && !ax.flip_down);
        let cor = ViewFrame::new(Plane::Coronal, &g);
        assert_eq!((cor.normal, cor.right, cor.down, cor.flip_down), (0, 1, 2, false), "k already runs inferior");
    }

    #[test]
    fn shader_rows_agree_with_voxel_at() {
        let mut g = Geometry::new([40, 30, 20], [1.0, 2.0, 3.0], [0.0; 3]);
        g.direction = Geometry::direction_from_row_major([-1., 0., 0., 0., 0., 1., 0., -1., 0.]);
        for plane in Plane::ALL {
            let f = ViewFrame::new(plane, &g);
            let rect = [100.0, 50.0, 400.0, 300.0];
            let rows = f.pixel_to_voxel_rows(&g, 7, rect);
            for (fx, fy) in [(0.0, 0.0), (0.25, 0.75), (1.0, 0.5)] {
                let (x, y) = (rect[0] + fx * rect[2], rect[1] + fy * rect[3]);
                let a = f.voxel_at(&g, 7, fx, fy);
                for r in 0..3 {
                    let b = rows[r][0] * x + rows[r][1] * y + rows[r][2];
                    assert!((a[r] - b).abs() < 1e-9, "{plane:?} row {r}: {} vs {b}", a[r]);
                }
                let back = f.fraction_of(&g, a);
                assert!((back.0 - fx).abs() < 1e-12 && (back.1 - fy).abs() < 1e-12);
            }
        }
    }
}
