//! The brush and eraser footprint: the voxels within a radius in millimetres of a centre voxel,
//! either a disk in the plane of the view or a ball in 3D, measured with the true spacing.

use crate::volume::Geometry;

/// Brush settings as the annotator sets them.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Brush {
    pub radius_mm: f64,
    /// A ball through neighbouring slices instead of a disk on the current slice.
    pub sphere: bool,
}

impl Default for Brush {
    fn default() -> Self {
        Brush { radius_mm: 3.0, sphere: false }
    }
}

/// Linear indices of the voxels covered by `brush` centred on `centre`; `normal` is the index
/// axis the view steps through (the disk lies in the other two axes).
pub fn footprint(g: &Geometry, centre: [usize; 3], normal: usize, brush: Brush) -> Vec<usize> {
    let r = brush.radius_mm.max(0.0);
    let reach = |a: usize| {
        if a == normal && !brush.sphere { 0 } else { (r / g.spacing[a]).floor() as isize }
    };
    let [ri, rj, rk] = [reach(0), reach(1), reach(2)];
    let mut out = Vec::new();
    for dk in -rk..=rk {
        for dj in -rj..=rj {
            for di in -ri..=ri {
                let v = [centre[0] as isize + di, centre[1] as isize + dj, centre[2] as isize + dk];
                if (0..3).any(|a| v[a] < 0 || v[a] >= g.dims[a] as isize) {
                    continue;
                }
                let d2 = (di as f64 * g.spacing[0]).powi(2) + (dj as f64 * g.spacing[1]).powi(2) + (dk as f64 * g.spacing[2]).powi(2);
                if d2 <= r * r + 1e-9 {
                    out.push(g.linear_index([v[0] as usize, v[1] as usize, v[2] as usize]));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_and_ball_respect_spacing() {
        let g = Geometry::new([20, 20, 20], [0.5, 1.0, 2.0], [0.0; 3]);
        // A 1 mm disk in the axial plane: 2 voxels each way in i, 1 in j.
        let disk = footprint(&g, [10, 10, 10], 2, Brush { radius_mm: 1.0, sphere: false });
        assert_eq!(disk.len(), 5 + 2 * 1, "row j=10: i 8..=12; rows j=9,11: i=10");
        let ball = footprint(&g, [10, 10, 10], 2, Brush { radius_mm: 2.0, sphere: true });
        assert!(ball.contains(&g.linear_index([10, 10, 11])));
        assert!(!ball.contains(&g.linear_index([10, 10, 12])));
        // Clipped at the border, never out of range.
        let edge = footprint(&g, [0, 0, 0], 2, Brush { radius_mm: 5.0, sphere: true });
        assert!(edge.iter().all(|&i| i < 8000));
    }
}
