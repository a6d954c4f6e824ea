//! What a mesh measures: vertex and triangle counts, surface area, enclosed volume (divergence
//! theorem) and whether it is watertight.

use super::{Mesh, face_normal};
use rayon::prelude::*;
use serde::Serialize;

/// Size and closure of a mesh in world units (positions in mm).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MeshMetrics {
    pub vertices: usize,
    pub triangles: usize,
    pub surface_area_mm2: f64,
    /// Volume enclosed by the surface in millilitres, positive when normals face outward.
    pub enclosed_volume_ml: f64,
    /// Every edge is shared by exactly two triangles that run along it in opposite directions
    /// (closed, manifold along edges, consistently oriented) and no triangle repeats a vertex.
    pub watertight: bool,
}

impl MeshMetrics {
    pub fn of(mesh: &Mesh) -> Self {
        // Positions relative to a point on the mesh keep the volume sum precise far from 0.
        let reference = mesh.positions.first().copied().unwrap_or([0.0; 3]);
        let (area2, volume6) = mesh
            .indices
            .par_chunks_exact(3)
            .map(|t| {
                let p = [t[0], t[1], t[2]].map(|i| mesh.positions[i as usize]);
                let n = face_normal(p);
                let area2 = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
                let a = [0, 1, 2].map(|c| (p[0][c] - reference[c]) as f64);
                (area2, a[0] * n[0] + a[1] * n[1] + a[2] * n[2])
            })
            .reduce(|| (0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1));
        MeshMetrics {
            vertices: mesh.vertex_count(),
            triangles: mesh.triangle_count(),
            surface_area_mm2: area2 / 2.0,
            enclosed_volume_ml: volume6 / 6.0 / 1000.0,
            watertight: is_watertight(&mesh.indices),
        }
    }
}

/// Whether every undirected edge occurs exactly twice, once in each direction.
pub(crate) fn is_watertight(indices: &[u32]) -> bool {
    if indices.is_empty() {
        return false;
    }
    // Key: the edge's smaller vertex, larger vertex, and one bit for its direction.
    let mut keys: Vec<u64> = Vec::with_capacity(indices.len());
    for t in indices.chunks_exact(3) {
        if t[0] == t[1] || t[1] == t[2] || t[2] == t[0] {
            return false;
        }
        for i in 0..3 {
            let (a, b) = (t[i] as u64, t[(i + 1) % 3] as u64);
            keys.push((a.min(b) << 33) | (a.max(b) << 1) | (a > b) as u64);
        }
    }
    keys.par_sort_unstable();
    keys.chunks(2).all(|pair| pair.len() == 2 && pair[0] >> 1 == pair[1] >> 1 && pair[0] & 1 == 0 && pair[1] & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tetrahedron() -> Mesh {
        Mesh {
            positions: vec![[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]],
            normals: vec![[0.0; 3]; 4],
            indices: vec![0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3],
        }
    }

    #[test]
    fn tetrahedron_measures() {
        let m = MeshMetrics::of(&tetrahedron());
        assert!(m.watertight);
        assert!((m.enclosed_volume_ml - 1000.0 / 6.0 / 1000.0).abs() < 1e-12);
        let area = 3.0 * 50.0 + (3.0f64).sqrt() / 4.0 * 200.0;
        assert!((m.surface_area_mm2 - area).abs() < 1e-9);
        assert_eq!((m.vertices, m.triangles), (4, 4));
    }

    #[test]
    fn open_flipped_or_repeated_edges_are_not_watertight() {
        let mut t = tetrahedron();
        t.indices.truncate(9);
        assert!(!is_watertight(&t.indices));
        let mut t = tetrahedron();
        t.indices.swap(10, 11);
        assert!(!is_watertight(&t.indices));
        let mut t = tetrahedron();
        t.indices.extend_from_slice(&[0, 2, 1, 0, 1, 2]);
        assert!(!is_watertight(&t.indices));
        assert!(!is_watertight(&[]));
        // Inward-facing: still closed, volume negative.
        let mut t = tetrahedron();
        t.indices.chunks_exact_mut(3).for_each(|x| x.swap(1, 2));
        let m = MeshMetrics::of(&t);
        assert!(m.watertight && m.enclosed_volume_ml < 0.0);
    }
}
