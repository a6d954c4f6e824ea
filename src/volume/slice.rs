//! `SliceAxis`: the three index planes of a volume and extraction of one slice along any of them.
//!
//! An axis is named by the index direction it steps through: axial = k (slices are (i, j)
//! images), coronal = j ((i, k) images), sagittal = i ((j, k) images). The first slice
//! coordinate varies fastest in the returned buffer. For scans whose direction matrix is not the
//! identity, `Geometry::index_axis_closest_to` tells which index axis a physical view needs.

use super::{Geometry, Voxel};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SliceAxis {
    /// Slices of constant k: (i, j) images.
    Axial,
    /// Slices of constant j: (i, k) images.
    Coronal,
    /// Slices of constant i: (j, k) images.
    Sagittal,
}

impl SliceAxis {
    pub const ALL: [SliceAxis; 3] = [SliceAxis::Axial, SliceAxis::Coronal, SliceAxis::Sagittal];

    /// The index axis this slicing steps through (0 = i, 1 = j, 2 = k).
    pub fn normal(self) -> usize {
        match self {
            SliceAxis::Axial => 2,
            SliceAxis::Coronal => 1,
            SliceAxis::Sagittal => 0,
        }
    }

    /// The slicing that steps through index axis `axis`.
    pub fn from_normal(axis: usize) -> Self {
        match axis {
            0 => SliceAxis::Sagittal,
            1 => SliceAxis::Coronal,
            _ => SliceAxis::Axial,
        }
    }

    /// The index axes of a slice's columns (u) and rows (v).
    pub fn in_plane(self) -> (usize, usize) {
        match self {
            SliceAxis::Axial => (0, 1),
            SliceAxis::Coronal => (0, 2),
            SliceAxis::Sagittal => (1, 2),
        }
    }

    /// Number of slices along this axis.
    pub fn slice_count(self, g: &Geometry) -> usize {
        g.dims[self.normal()]
    }

    /// Width and height of one slice in voxels.
    pub fn slice_size(self, g: &Geometry) -> (usize, usize) {
        let (u, v) = self.in_plane();
        (g.dims[u], g.dims[v])
    }

    /// Voxel (i, j, k) of slice `index` at in-plane position (u, v).
    pub fn voxel(self, index: usize, u: usize, v: usize) -> [usize; 3] {
        match self {
            SliceAxis::Axial => [u, v, index],
            SliceAxis::Coronal => [u, index, v],
            SliceAxis::Sagittal => [index, u, v],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SliceAxis::Axial => "axial",
            SliceAxis::Coronal => "coronal",
            SliceAxis::Sagittal => "sagittal",
        }
    }
}

/// Copies slice `index` along `axis` of a volume with `dims` out of `data` into `out`
/// (resized to width·height, u fastest). `data` holds one 3D frame.
pub fn extract_slice<T: Voxel>(data: &[T], dims: [usize; 3], axis: SliceAxis, index: usize, out: &mut Vec<T>) {
    let [nx, ny, nz] = dims;
    assert!(index < dims[axis.normal()], "slice {index} out of range for {axis:?}");
    out.clear();
    match axis {
        SliceAxis::Axial => {
            let plane = nx * ny;
            out.extend_from_slice(&data[index * plane..(index + 1) * plane]);
        }
        SliceAxis::Coronal => {
            out.reserve(nx * nz);
            for k in 0..nz {
                let start = nx * (index + ny * k);
                out.extend_from_slice(&data[start..start + nx]);
            }
        }
        SliceAxis::Sagittal => {
            out.reserve(ny * nz);
            for k in 0..nz {
                let base = nx * ny * k + index;
                out.extend((0..ny).map(|j| data[base + nx * j]));
            }
        }
    }
}

/// Writes a slice (u fastest) back into a 3D frame: the inverse of `extract_slice`.
pub fn insert_slice<T: Voxel>(data: &mut [T], dims: [usize; 3], axis: SliceAxis, index: usize, slice: &[T]) {
    let [nx, ny, nz] = dims;
    let (w, h) = axis.slice_size(&Geometry::new(dims, [1.0; 3], [0.0; 3]));
    assert_eq!(slice.len(), w * h, "slice size does not match the volume");
    match axis {
        SliceAxis::Axial => {
            let plane = nx * ny;
            data[index * plane..(index + 1) * plane].copy_from_slice(slice);
        }
        SliceAxis::Coronal => {
            for k in 0..nz {
                let start = nx * (index + ny * k);
                data[start..start + nx].copy_from_slice(&slice[k * nx..(k + 1) * nx]);
            }
        }
        SliceAxis::Sagittal => {
            for k in 0..nz {
                for j in 0..ny {
                    data[nx * (j + ny * k) + index] = slice[k * ny + j];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_pick_the_right_voxels_and_round_trip() {
        let dims = [4, 3, 2];
        let data: Vec<i32> = (0..24).collect(); // value = i + 4j + 12k
        let mut out = Vec::new();
        for axis in SliceAxis::ALL {
            let g = Geometry::new(dims, [1.0; 3], [0.0; 3]);
            let (w, h) = axis.slice_size(&g);
            for index in 0..axis.slice_count(&g) {
                extract_slice(&data, dims, axis, index, &mut out);
                assert_eq!(out.len(), w * h);
                for v in 0..h {
                    for u in 0..w {
                        let [i, j, k] = axis.voxel(index, u, v);
                        assert_eq!(out[u + w * v], (i + 4 * j + 12 * k) as i32);
                    }
                }
                let mut copy = vec![0; 24];
                insert_slice(&mut copy, dims, axis, index, &out);
                for (n, (&c, &d)) in copy.iter().zip(&data).enumerate() {
                    let ijk = [n % 4, (n / 4) % 3, n / 12];
                    if ijk[axis.normal()] == index {
                        assert_eq!(c, d);
                    }
                }
            }
        }
    }
}
