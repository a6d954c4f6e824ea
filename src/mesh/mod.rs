//! Surface meshes of label maps and images: marching cubes, Taubin smoothing, quadric
//! decimation, metrics (area, enclosed volume, watertightness) and STL/OBJ/PLY export.
//!
//! A `Mesh` is what a GPU wants: positions and normals as `[f32; 3]` in LPS world millimetres,
//! and a flat `u32` index list with three indices per triangle, counter-clockwise seen from
//! outside (normals point out of the object).
//!
//! Written here rather than taken from a crate: `mcubes`, `marching-cubes` and `isosurface`
//! emit unshared triangle soup or use the classic 15-case table whose ambiguous faces leave
//! holes, and none handles anisotropic spacing with a direction matrix or runs in parallel;
//! `fast-surface-nets` is a dual method (one vertex per cell, quads) that is not manifold at
//! ambiguous cells; `meshopt` (meshoptimizer bindings, C++) simplifies for appearance and does
//! not promise a manifold, closed result. Here the case table is derived from one rule that
//! is consistent across shared faces (see `case_table`), so every closed object yields a
//! closed, consistently oriented, manifold surface, and decimation keeps it so.

mod case_table;
mod decimation;
mod export;
mod marching_cubes;
mod metrics;
mod smoothing;

pub use decimation::decimate;
pub use export::{MeshFormat, write_mesh, write_obj, write_ply, write_stl};
pub use marching_cubes::{iso_surface, label_surface, label_surfaces, labels_present};
pub use metrics::MeshMetrics;
pub use smoothing::{TAUBIN_LAMBDA, TAUBIN_MU, taubin_smooth};

/// An indexed triangle mesh in LPS world millimetres, ready for a vertex and an index buffer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mesh {
    pub positions: Vec<[f32; 3]>,
    /// Unit outward normals, one per vertex.
    pub normals: Vec<[f32; 3]>,
    /// Three vertex indices per triangle, counter-clockwise seen from outside.
    pub indices: Vec<u32>,
}

/// Why a mesh cannot be made from a volume.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MeshError {
    #[error("the image has {0} timepoints; meshing needs a 3D image")]
    NotThreeD(usize),
    #[error("label {label} is not in the image (labels present: {present:?})")]
    LabelNotFound { label: i64, present: Vec<i64> },
    #[error("the image holds no labels (every voxel is 0)")]
    NoLabels,
    #[error("value {0} is not an integer label: the image is not a label map")]
    NotALabelMap(f64),
    #[error("no voxel is at or above the threshold {threshold} (the image ranges {min} .. {max})")]
    NothingAboveThreshold { threshold: f64, min: f64, max: f64 },
    #[error("the threshold {0} is not a finite number")]
    BadThreshold(f64),
    #[error("the surface would have more than {0} vertices")]
    TooLarge(u64),
    #[error("decimation needs a closed, consistently oriented surface")]
    NotClosed,
}

impl Mesh {
    pub fn vertex_count(&self) -> usize {
        self.positions.len()
    }

    pub fn triangle_count(&self) -> usize {
        self.indices.len() / 3
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The triangles as index triples.
    pub fn triangles(&self) -> impl ExactSizeIterator<Item = [u32; 3]> + '_ {
        self.indices.chunks_exact(3).map(|t| [t[0], t[1], t[2]])
    }

    /// The three corner positions of triangle `t`.
    pub fn triangle_positions(&self, t: [u32; 3]) -> [[f32; 3]; 3] {
        t.map(|i| self.positions[i as usize])
    }

    /// Sets every normal to the area-weighted mean of the normals of the triangles around it
    /// (for meshes whose vertices moved away from the volume they came from).
    pub fn recompute_normals(&mut self) {
        let mut sums = vec![[0.0f64; 3]; self.positions.len()];
        for t in self.triangles() {
            let n = face_normal(self.triangle_positions(t));
            for i in t {
                let s = &mut sums[i as usize];
                for c in 0..3 {
                    s[c] += n[c];
                }
            }
        }
        self.normals = sums.iter().map(|s| normalized(*s).map(|x| x as f32)).collect();
    }
}

/// Cross product of two edges of a triangle: its normal, with length twice its area.
pub(crate) fn face_normal(p: [[f32; 3]; 3]) -> [f64; 3] {
    let a = [(p[1][0] - p[0][0]) as f64, (p[1][1] - p[0][1]) as f64, (p[1][2] - p[0][2]) as f64];
    let b = [(p[2][0] - p[0][0]) as f64, (p[2][1] - p[0][1]) as f64, (p[2][2] - p[0][2]) as f64];
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// `v` scaled to unit length, or zero when it has no length (or is not finite).
pub(crate) fn normalized(v: [f64; 3]) -> [f64; 3] {
    let len = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if len > 0.0 && len.is_finite() { v.map(|x| x / len) } else { [0.0; 3] }
}
