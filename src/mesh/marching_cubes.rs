//! Marching cubes over a label map (one label, or every label its own mesh) or over an image at
//! an iso-value, producing an indexed mesh in LPS world millimetres.
//!
//! Where the surface is: a label becomes the 0/1 indicator of its voxels, cut at 0.5; an image
//! is cut at the threshold, voxels at or above it being inside. Only the box around the inside
//! voxels (plus one voxel) is visited. Outside the image the grid is padded by one voxel whose
//! value mirrors an inside neighbour below the iso-value, so objects touching the border are
//! closed half a voxel beyond it, like the others.
//!
//! Shared vertices: each grid edge crossing the surface gets one vertex, found again by every
//! cube around that edge. The work runs in parallel over slabs of z layers; a slab leaves the
//! vertices on its top plane to the slab above (its triangles hold placeholders naming the
//! grid edge) and the merge resolves them to the vertex the slab above made for that edge.
//!
//! Normals: the central-difference gradient at both ends of the edge, interpolated at the
//! vertex, taken from index space to world space by the inverse transpose of
//! direction x diag(spacing), and negated (the inside has the larger values). Where the
//! gradient vanishes (thin or checkerboard structures of a mask) the area-weighted normal of
//! the surrounding triangles is used. A direction matrix with negative determinant mirrors
//! the grid, so triangle winding is reversed to keep it counter-clockwise from outside.

use super::case_table::{CASES, EDGE_CORNERS};
use super::{Mesh, MeshError, normalized};
use crate::volume::{Geometry, Voxel, Volume, invert3};
use crate::with_voxels;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::ops::Range;

/// Surface of the voxels whose value equals `label`.
pub fn label_surface(volume: &Volume, label: i64) -> Result<Mesh, MeshError> {
    check_3d(volume)?;
    let boxes = with_voxels!(&volume.data, v => label_boxes(v, volume.geometry.dims))?;
    let Some(bounds) = boxes.get(&label) else {
        return Err(MeshError::LabelNotFound { label, present: boxes.keys().copied().collect() });
    };
    with_voxels!(&volume.data, v => label_mesh(v, &volume.geometry, label, *bounds, default_slab_layers(bounds)))
}

/// One surface per non-zero label, in increasing label order.
pub fn label_surfaces(volume: &Volume) -> Result<Vec<(i64, Mesh)>, MeshError> {
    check_3d(volume)?;
    let boxes = with_voxels!(&volume.data, v => label_boxes(v, volume.geometry.dims))?;
    if boxes.is_empty() {
        return Err(MeshError::NoLabels);
    }
    boxes
        .iter()
        .map(|(&label, bounds)| {
            let mesh = with_voxels!(&volume.data, v => label_mesh(v, &volume.geometry, label, *bounds, default_slab_layers(bounds)))?;
            Ok((label, mesh))
        })
        .collect()
}

/// The non-zero labels of a label map, in increasing order.
pub fn labels_present(volume: &Volume) -> Result<Vec<i64>, MeshError> {
    check_3d(volume)?;
    let boxes = with_voxels!(&volume.data, v => label_boxes(v, volume.geometry.dims))?;
    Ok(boxes.into_keys().collect())
}

/// Surface where the image crosses `threshold`; voxels at or above it are inside.
pub fn iso_surface(volume: &Volume, threshold: f64) -> Result<Mesh, MeshError> {
    check_3d(volume)?;
    let iso = threshold as f32;
    if !threshold.is_finite() || !iso.is_finite() {
        return Err(MeshError::BadThreshold(threshold));
    }
    with_voxels!(&volume.data, v => {
        let scalar = move |x| image_scalar(x, iso);
        match inside_box(v, volume.geometry.dims, &scalar, iso) {
            Some(bounds) => extract(v, &volume.geometry, &scalar, iso, bounds, default_slab_layers(&bounds)),
            None => {
                let (min, max) = volume.min_max().unwrap_or((f64::NAN, f64::NAN));
                Err(MeshError::NothingAboveThreshold { threshold, min, max })
            }
        }
    })
}

fn check_3d(volume: &Volume) -> Result<(), MeshError> {
    if volume.timepoints != 1 { Err(MeshError::NotThreeD(volume.timepoints)) } else { Ok(()) }
}

/// Largest magnitude a scalar may have, so that differences of two stay finite.
const SCALAR_LIMIT: f32 = f32::MAX / 4.0;

/// An image value as a finite f32; NaN counts as just below the iso-value (outside).
fn image_scalar<T: Voxel>(v: T, iso: f32) -> f32 {
    let s = v.to_f32();
    if s.is_nan() { iso.next_down() } else { s.clamp(-SCALAR_LIMIT, SCALAR_LIMIT) }
}

fn label_mesh<T: Voxel>(data: &[T], geometry: &Geometry, label: i64, bounds: VoxelBox, slab_layers: usize) -> Result<Mesh, MeshError> {
    let target = T::from_f64(label as f64);
    let scalar = move |v: T| if v == target { 1.0f32 } else { 0.0 };
    extract(data, geometry, &scalar, 0.5, bounds, slab_layers)
}

/// An inclusive box of voxel indices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct VoxelBox {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl VoxelBox {
    fn union(self, other: VoxelBox) -> VoxelBox {
        VoxelBox {
            lo: [0, 1, 2].map(|a| self.lo[a].min(other.lo[a])),
            hi: [0, 1, 2].map(|a| self.hi[a].max(other.hi[a])),
        }
    }
}

/// Layers per slab: enough slabs to keep every thread busy, few enough that each slab's
/// three extra slices stay a small share of its work.
fn default_slab_layers(bounds: &VoxelBox) -> usize {
    let layers = bounds.hi[2] - bounds.lo[2] + 3;
    let slabs = 4 * rayon::current_num_threads();
    layers.div_ceil(slabs).max(4)
}

/// The box of every non-zero label, scanning runs of equal values row by row.
fn label_boxes<T: Voxel>(data: &[T], dims: [usize; 3]) -> Result<BTreeMap<i64, VoxelBox>, MeshError> {
    let [nx, ny, _] = dims;
    let zero = T::from_f64(0.0);
    let slice_len = nx * ny;
    data.par_chunks(slice_len.max(1))
        .enumerate()
        .map(|(z, slice)| {
            let mut boxes: BTreeMap<i64, VoxelBox> = BTreeMap::new();
            for (y, row) in slice.chunks_exact(nx).enumerate() {
                // Most rows of a mask are empty: a branch-free test over the row (which the
                // compiler vectorises) skips them.
                if !row.iter().fold(false, |any, &v| any | (v != zero)) {
                    continue;
                }
                let mut x = 0;
                while x < nx {
                    let v = row[x];
                    if v == zero {
                        x += 1;
                        continue;
                    }
                    let start = x;
                    while x < nx && row[x] == v {
                        x += 1;
                    }
                    let f = v.to_f64();
                    if !f.is_finite() || f.fract() != 0.0 {
                        return Err(MeshError::NotALabelMap(f));
                    }
                    let run = VoxelBox { lo: [start, y, z], hi: [x - 1, y, z] };
                    boxes.entry(f as i64).and_modify(|b| *b = b.union(run)).or_insert(run);
                }
            }
            Ok(boxes)
        })
        .try_reduce(BTreeMap::new, |mut a, b| {
            for (label, bounds) in b {
                a.entry(label).and_modify(|x| *x = x.union(bounds)).or_insert(bounds);
            }
            Ok(a)
        })
}

/// The box of the voxels whose scalar is at or above `iso`, or `None` when there are none.
fn inside_box<T: Voxel>(data: &[T], dims: [usize; 3], scalar: &(impl Fn(T) -> f32 + Sync), iso: f32) -> Option<VoxelBox> {
    let [nx, ny, _] = dims;
    // Branch-free (vectorised) test of a run of voxels.
    let any_inside = |run: &[T]| run.iter().fold(false, |any, &v| any | (scalar(v) >= iso));
    data.par_chunks((nx * ny).max(1))
        .enumerate()
        .filter_map(|(z, slice)| {
            let mut found: Option<VoxelBox> = None;
            for (y, row) in slice.chunks_exact(nx).enumerate() {
                if !any_inside(row) {
                    continue;
                }
                // Only the parts of the row outside the x range found so far can widen it.
                let (lo, hi) = found.map_or((nx, 0), |b| (b.lo[0], b.hi[0]));
                let first = if any_inside(&row[..lo.min(nx)]) { row.iter().position(|&v| scalar(v) >= iso) } else { None };
                let last = if hi + 1 < nx && any_inside(&row[hi + 1..]) { row.iter().rposition(|&v| scalar(v) >= iso) } else { None };
                let run = VoxelBox { lo: [first.unwrap_or(lo), y, z], hi: [last.unwrap_or(hi).max(first.unwrap_or(0)), y, z] };
                found = Some(found.map_or(run, |b| b.union(run)));
            }
            found
        })
        .reduce_with(VoxelBox::union)
}

/// The scalar field marched over: voxel values through `scalar`, padded outside the image.
struct Field<'a, T, F> {
    data: &'a [T],
    dims: [usize; 3],
    scalar: &'a F,
    iso: f32,
}

impl<T: Voxel, F: Fn(T) -> f32 + Sync> Field<'_, T, F> {
    /// The value at grid point (x, y, z); outside the image, the nearest voxel's value, or,
    /// when that one is inside, its mirror image below the iso-value.
    fn value(&self, x: isize, y: isize, z: isize) -> f32 {
        let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
        let (cx, cy, cz) = (clamp(x, self.dims[0]), clamp(y, self.dims[1]), clamp(z, self.dims[2]));
        let s = (self.scalar)(self.data[cx + self.dims[0] * (cy + self.dims[1] * cz)]);
        let outside_image = cx as isize != x || cy as isize != y || cz as isize != z;
        if outside_image && s >= self.iso { (2.0 * self.iso - s).min(self.iso.next_down()) } else { s }
    }
}

/// The grid of points marched over: `points` points from `origin` (image index coordinates,
/// possibly one outside the image).
#[derive(Clone, Copy)]
struct Grid {
    origin: [isize; 3],
    points: [usize; 3],
}

impl Grid {
    /// Row length of a slice buffer: the points plus one margin column each side for gradients.
    fn row(&self) -> usize {
        self.points[0] + 2
    }

    /// Index in a slice buffer of grid point (x, y).
    fn at(&self, x: usize, y: usize) -> usize {
        (x + 1) + (y + 1) * self.row()
    }

    fn plane_len(&self) -> usize {
        self.points[0] * self.points[1]
    }
}

/// A triangle index that names a grid edge on a slab's top plane, to be replaced at merge.
const PLACEHOLDER: u32 = 1 << 31;
const PLACEHOLDER_Y_AXIS: u32 = 1 << 30;
const NO_VERTEX: u32 = u32::MAX;

/// What one slab produced: vertices in image index space and their gradients, triangles
/// (local vertex numbers or placeholders) and, for the slab below, which vertex it made on
/// each x and y edge of its bottom plane.
struct SlabMesh {
    positions: Vec<[f32; 3]>,
    gradients: Vec<[f32; 3]>,
    indices: Vec<u32>,
    bottom_x: Vec<u32>,
    bottom_y: Vec<u32>,
}

/// Marches the cubes of `layers` (z layers of the grid).
struct SlabMarcher<'g> {
    grid: &'g Grid,
    iso: f32,
    /// Vertex of each x edge / y edge on the layer's bottom (z) and top (z + 1) planes, and of
    /// each z edge of the layer, indexed by the edge's lower grid point.
    x_bottom: Vec<u32>,
    x_top: Vec<u32>,
    y_bottom: Vec<u32>,
    y_top: Vec<u32>,
    z_edges: Vec<u32>,
    /// Scratch row of column codes (see `layer`).
    columns: Vec<u8>,
    out: SlabMesh,
}

/// Column code bit b (= dy + 2 dz) moved to cube corner bit 2b (corner dy, dz at dx = 0).
const SPREAD_BITS: [u8; 16] = {
    let mut table = [0u8; 16];
    let mut code = 0;
    while code < 16 {
        let mut b = 0;
        while b < 4 {
            if code >> b & 1 == 1 {
                table[code] |= 1 << (2 * b);
            }
            b += 1;
        }
        code += 1;
    }
    table
};

impl<'g> SlabMarcher<'g> {
    fn new(grid: &'g Grid, iso: f32) -> Self {
        let n = grid.plane_len();
        SlabMarcher {
            grid,
            iso,
            x_bottom: vec![NO_VERTEX; n],
            x_top: vec![NO_VERTEX; n],
            y_bottom: vec![NO_VERTEX; n],
            y_top: vec![NO_VERTEX; n],
            z_edges: vec![NO_VERTEX; n],
            columns: vec![0; grid.points[0]],
            out: SlabMesh { positions: Vec::new(), gradients: Vec::new(), indices: Vec::new(), bottom_x: Vec::new(), bottom_y: Vec::new() },
        }
    }

    /// Marches layer `z`; `slices` hold grid planes z - 1 ..= z + 2. `defer_top` leaves the
    /// vertices of the top plane to the next slab.
    fn layer(&mut self, z: usize, slices: &[Plane; 4], defer_top: bool) {
        let g = *self.grid;
        let (w, nx) = (g.row(), g.points[0]);
        let (b, t) = (&slices[1].inside, &slices[2].inside);
        let cases = &*CASES;
        let mut columns = std::mem::take(&mut self.columns);
        for y in 0..g.points[1] - 1 {
            // Column code of grid point x: its four inside flags at (y, z), (y + 1, z),
            // (y, z + 1), (y + 1, z + 1) as bits 0..3. Rows whose cells are all outside or all
            // inside are skipped whole.
            let start = g.at(0, y);
            let rows = [&b[start..start + nx], &b[start + w..start + w + nx], &t[start..start + nx], &t[start + w..start + w + nx]];
            let (mut any, mut all) = (0u8, 15u8);
            for (x, code) in columns.iter_mut().enumerate() {
                *code = rows[0][x] | rows[1][x] << 1 | rows[2][x] << 2 | rows[3][x] << 3;
                any |= *code;
                all &= *code;
            }
            if any == 0 || all == 15 {
                continue;
            }
            let mut x = 0;
            while x < nx - 1 {
                // Eight cells at a time while nine column codes in a row are all 0 or all 15.
                if x + 9 <= nx {
                    let word = |at: usize| u64::from_ne_bytes(columns[at..at + 8].try_into().expect("eight bytes"));
                    let here = word(x);
                    if here == word(x + 1) && (here == 0 || here == 0x0f0f_0f0f_0f0f_0f0f) {
                        x += 8;
                        continue;
                    }
                }
                let cell = x;
                x += 1;
                let (c0, c1) = (columns[cell], columns[cell + 1]);
                if c0 == c1 && (c0 == 0 || c0 == 15) {
                    continue;
                }
                let config = (SPREAD_BITS[c0 as usize] | SPREAD_BITS[c1 as usize] << 1) as usize;
                let mut ids = [NO_VERTEX; 12];
                for triangle in cases[config].triangles() {
                    for e in triangle {
                        if ids[e as usize] == NO_VERTEX {
                            ids[e as usize] = self.edge_vertex(cell, y, z, e as usize, slices, defer_top);
                        }
                        self.out.indices.push(ids[e as usize]);
                    }
                }
            }
        }
        self.columns = columns;
    }

    /// The vertex on cube edge `e` of cell (x, y, z): found if made before, else made now (or a
    /// placeholder on a deferred top plane).
    fn edge_vertex(&mut self, x: usize, y: usize, z: usize, e: usize, slices: &[Plane; 4], defer_top: bool) -> u32 {
        let g = *self.grid;
        let corner = EDGE_CORNERS[e][0];
        let (px, py, pz) = (x + (corner & 1) as usize, y + (corner >> 1 & 1) as usize, (corner >> 2 & 1) as usize);
        let axis = e / 4;
        let plane_index = px + py * g.points[0];
        let slot = match (axis, pz) {
            (0, 0) => &mut self.x_bottom[plane_index],
            (0, _) => &mut self.x_top[plane_index],
            (1, 0) => &mut self.y_bottom[plane_index],
            (1, _) => &mut self.y_top[plane_index],
            _ => &mut self.z_edges[plane_index],
        };
        if *slot != NO_VERTEX {
            return *slot;
        }
        if defer_top && pz == 1 && axis < 2 {
            let code = PLACEHOLDER | if axis == 1 { PLACEHOLDER_Y_AXIS } else { 0 } | plane_index as u32;
            *slot = code;
            return code;
        }
        let id = self.out.positions.len() as u32;
        *slot = id;
        // Start and end of the edge: slice numbers in `slices` and buffer indices.
        let start = (1 + pz, g.at(px, py));
        let end = match axis {
            0 => (start.0, start.1 + 1),
            1 => (start.0, start.1 + g.row()),
            _ => (start.0 + 1, start.1),
        };
        let (v0, v1) = (slices[start.0].values[start.1], slices[end.0].values[end.1]);
        let t = (self.iso - v0) / (v1 - v0);
        let g0 = gradient(slices, start, g.row());
        let g1 = gradient(slices, end, g.row());
        let mut p = [
            (g.origin[0] + px as isize) as f32,
            (g.origin[1] + py as isize) as f32,
            (g.origin[2] + (z + pz) as isize) as f32,
        ];
        p[axis] += t;
        self.out.positions.push(p);
        self.out.gradients.push([0, 1, 2].map(|c| g0[c] + t * (g1[c] - g0[c])));
        id
    }

    /// Called after each layer: the top plane becomes the next layer's bottom.
    fn advance(&mut self, first_layer: bool) {
        if first_layer {
            self.out.bottom_x = self.x_bottom.clone();
            self.out.bottom_y = self.y_bottom.clone();
        }
        std::mem::swap(&mut self.x_bottom, &mut self.x_top);
        std::mem::swap(&mut self.y_bottom, &mut self.y_top);
        self.x_top.fill(NO_VERTEX);
        self.y_top.fill(NO_VERTEX);
        self.z_edges.fill(NO_VERTEX);
    }
}

/// Central-difference gradient (index space) at buffer index `i` of plane `s`.
fn gradient(slices: &[Plane; 4], (s, i): (usize, usize), row: usize) -> [f32; 3] {
    let c = &slices[s].values;
    [(c[i + 1] - c[i - 1]) * 0.5, (c[i + row] - c[i - row]) * 0.5, (slices[s + 1].values[i] - slices[s - 1].values[i]) * 0.5]
}

/// One grid plane with its margin: scalar values and inside flags (1 = at or above iso).
struct Plane {
    values: Vec<f32>,
    inside: Vec<u8>,
}

/// Fills `plane` with grid plane `z` (relative to the grid origin) including the margin.
fn fill_plane<T: Voxel, F: Fn(T) -> f32 + Sync>(field: &Field<'_, T, F>, grid: &Grid, z: isize, plane: &mut Plane) {
    let w = grid.row();
    let [nx, ny, nz] = field.dims.map(|d| d as isize);
    let gz = grid.origin[2] + z;
    // Global x of buffer column 0, and the columns that fall inside the image.
    let x0 = grid.origin[0] - 1;
    let inside_columns = (-x0).clamp(0, w as isize) as usize..(nx - x0).clamp(0, w as isize) as usize;
    for (yy, row) in plane.values.chunks_exact_mut(w).enumerate() {
        let gy = grid.origin[1] + yy as isize - 1;
        let padded = |row: &mut [f32], columns: Range<usize>| {
            for xx in columns {
                row[xx] = field.value(x0 + xx as isize, gy, gz);
            }
        };
        if (0..nz).contains(&gz) && (0..ny).contains(&gy) && !inside_columns.is_empty() {
            let first = (x0 + inside_columns.start as isize + nx * (gy + ny * gz)) as usize;
            let source = &field.data[first..first + inside_columns.len()];
            for (out, &v) in row[inside_columns.clone()].iter_mut().zip(source) {
                *out = (field.scalar)(v);
            }
            padded(row, 0..inside_columns.start);
            padded(row, inside_columns.end..w);
        } else {
            padded(row, 0..w);
        }
    }
    let iso = field.iso;
    for (flag, &v) in plane.inside.iter_mut().zip(&plane.values) {
        *flag = (v >= iso) as u8;
    }
}

fn march_slab<T: Voxel, F: Fn(T) -> f32 + Sync>(field: &Field<'_, T, F>, grid: &Grid, layers: Range<usize>, last: bool) -> SlabMesh {
    let slice_len = grid.row() * (grid.points[1] + 2);
    let mut slices: [Plane; 4] = std::array::from_fn(|_| Plane { values: vec![0.0; slice_len], inside: vec![0; slice_len] });
    for (k, slice) in slices.iter_mut().enumerate() {
        fill_plane(field, grid, layers.start as isize - 1 + k as isize, slice);
    }
    let mut marcher = SlabMarcher::new(grid, field.iso);
    for z in layers.clone() {
        if z > layers.start {
            slices.rotate_left(1);
            fill_plane(field, grid, z as isize + 2, &mut slices[3]);
        }
        marcher.layer(z, &slices, !last && z + 1 == layers.end);
        marcher.advance(z == layers.start);
    }
    marcher.out
}

/// Marching cubes over the cubes around `bounds`, in slabs of `slab_layers` z layers.
fn extract<T: Voxel, F: Fn(T) -> f32 + Sync>(
    data: &[T],
    geometry: &Geometry,
    scalar: &F,
    iso: f32,
    bounds: VoxelBox,
    slab_layers: usize,
) -> Result<Mesh, MeshError> {
    let grid = Grid {
        origin: bounds.lo.map(|v| v as isize - 1),
        points: [0, 1, 2].map(|a| bounds.hi[a] - bounds.lo[a] + 3),
    };
    if grid.plane_len() as u64 >= PLACEHOLDER_Y_AXIS as u64 {
        return Err(MeshError::TooLarge(PLACEHOLDER_Y_AXIS as u64));
    }
    let field = Field { data, dims: geometry.dims, scalar, iso };
    let layer_count = grid.points[2] - 1;
    let slab_layers = slab_layers.max(1);
    let slab_count = layer_count.div_ceil(slab_layers);
    let slabs: Vec<SlabMesh> = (0..slab_count)
        .into_par_iter()
        .map(|s| {
            let layers = s * slab_layers..((s + 1) * slab_layers).min(layer_count);
            march_slab(&field, &grid, layers, s + 1 == slab_count)
        })
        .collect();
    merge_slabs(slabs, geometry)
}

/// Joins the slabs into one mesh in LPS world space: each slab's vertices are placed by the
/// voxel-to-world affine, its gradients become outward normals, and its top-plane placeholders
/// become the vertices the slab above made on those grid edges. Slabs are written in parallel
/// into their own stretches of the output.
fn merge_slabs(slabs: Vec<SlabMesh>, geometry: &Geometry) -> Result<Mesh, MeshError> {
    let mut vertex_offsets = Vec::with_capacity(slabs.len() + 1);
    let mut index_offsets = Vec::with_capacity(slabs.len() + 1);
    let (mut vertices, mut indices) = (0u64, 0usize);
    for s in &slabs {
        vertex_offsets.push(vertices as u32);
        index_offsets.push(indices);
        vertices += s.positions.len() as u64;
        indices += s.indices.len();
    }
    if vertices >= PLACEHOLDER as u64 {
        return Err(MeshError::TooLarge(PLACEHOLDER as u64));
    }
    let affine = geometry.affine_lps();
    let linear: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| affine[r][c]));
    // World gradient = inverse(A)^T · index gradient; the outward normal is its negation.
    let inverse = invert3(&linear).unwrap_or(crate::volume::IDENTITY3);
    let mirrored = crate::volume::det3(&linear) < 0.0;

    let mut mesh = Mesh { positions: vec![[0.0; 3]; vertices as usize], normals: vec![[0.0; 3]; vertices as usize], indices: vec![0; indices] };
    let mut parts = Vec::with_capacity(slabs.len());
    let (mut positions, mut normals, mut index_rest) = (&mut mesh.positions[..], &mut mesh.normals[..], &mut mesh.indices[..]);
    for s in &slabs {
        let (p, p_rest) = positions.split_at_mut(s.positions.len());
        let (n, n_rest) = normals.split_at_mut(s.positions.len());
        let (i, i_rest) = index_rest.split_at_mut(s.indices.len());
        parts.push((p, n, i));
        (positions, normals, index_rest) = (p_rest, n_rest, i_rest);
    }
    parts.into_par_iter().enumerate().for_each(|(k, (positions, normals, indices))| {
        let slab = &slabs[k];
        for (out, p) in positions.iter_mut().zip(&slab.positions) {
            *out = std::array::from_fn(|r| (affine[r][3] + (0..3).map(|c| affine[r][c] * p[c] as f64).sum::<f64>()) as f32);
        }
        for (out, g) in normals.iter_mut().zip(&slab.gradients) {
            let world: [f64; 3] = std::array::from_fn(|r| -(0..3).map(|c| inverse[c][r] * g[c] as f64).sum::<f64>());
            *out = normalized(world).map(|x| x as f32);
        }
        for (out, &code) in indices.iter_mut().zip(&slab.indices) {
            *out = if code & PLACEHOLDER == 0 {
                vertex_offsets[k] + code
            } else {
                let above = &slabs[k + 1];
                let plane_index = (code & (PLACEHOLDER_Y_AXIS - 1)) as usize;
                let local = if code & PLACEHOLDER_Y_AXIS != 0 { above.bottom_y[plane_index] } else { above.bottom_x[plane_index] };
                debug_assert_ne!(local, NO_VERTEX, "the slab above made every crossing of its bottom plane");
                vertex_offsets[k + 1] + local
            };
        }
        if mirrored {
            indices.chunks_exact_mut(3).for_each(|t| t.swap(1, 2));
        }
    });
    if mesh.normals.par_iter().any(|n| *n == [0.0; 3]) {
        let from_gradient = std::mem::take(&mut mesh.normals);
        mesh.recompute_normals();
        for (n, g) in mesh.normals.iter_mut().zip(from_gradient) {
            if g != [0.0; 3] {
                *n = g;
            }
        }
    }
    Ok(mesh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::MeshMetrics;
    use crate::volume::{VolumeMeta, VoxelBuffer};

    fn mask(dims: [usize; 3], inside: impl Fn(usize, usize, usize) -> bool) -> Volume {
        let mut data = vec![0u8; dims[0] * dims[1] * dims[2]];
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    data[x + dims[0] * (y + dims[1] * z)] = inside(x, y, z) as u8;
                }
            }
        }
        Volume::new(Geometry::new(dims, [1.0; 3], [0.0; 3]), 1, VoxelBuffer::U8(data), VolumeMeta::default()).unwrap()
    }

    fn mesh_with_slabs(volume: &Volume, slab_layers: usize) -> Mesh {
        let VoxelBuffer::U8(v) = &volume.data else { unreachable!() };
        let bounds = label_boxes(v, volume.geometry.dims).unwrap()[&1];
        label_mesh(v, &volume.geometry, 1, bounds, slab_layers).unwrap()
    }

    #[test]
    fn one_voxel_is_a_closed_octahedron_at_half_voxel_distance() {
        let v = mask([3, 3, 3], |x, y, z| (x, y, z) == (1, 1, 1));
        let m = label_surface(&v, 1).unwrap();
        assert_eq!((m.vertex_count(), m.triangle_count()), (6, 8));
        for p in &m.positions {
            let d: f32 = p.iter().map(|c| (c - 1.0).abs()).sum();
            assert!((d - 0.5).abs() < 1e-6, "{p:?}");
        }
        let metrics = MeshMetrics::of(&m);
        assert!(metrics.watertight);
        assert!((metrics.enclosed_volume_ml * 1000.0 - 1.0 / 6.0).abs() < 1e-6);
        // Normals point away from the voxel centre.
        for (p, n) in m.positions.iter().zip(&m.normals) {
            let out: f32 = (0..3).map(|c| (p[c] - 1.0) * n[c]).sum();
            assert!(out > 0.0);
        }
    }

    #[test]
    fn voxels_on_the_border_are_closed() {
        let v = mask([2, 2, 2], |_, _, _| true);
        let m = label_surface(&v, 1).unwrap();
        let metrics = MeshMetrics::of(&m);
        assert!(metrics.watertight);
        // Cells of a 2x2x2 block: the inner one full, 6 face cells half, 12 edge cells a
        // prism of 1/8, 8 corner cells a tetrahedron of 1/48.
        let expected = 1.0 + 6.0 * 0.5 + 12.0 * 0.125 + 8.0 / 48.0;
        assert!((metrics.enclosed_volume_ml * 1000.0 - expected).abs() < 1e-6, "{}", metrics.enclosed_volume_ml);
    }

    #[test]
    fn slab_splitting_does_not_change_the_mesh() {
        let v = mask([17, 13, 23], |x, y, z| {
            let d = [(x as f64 - 8.0) / 7.0, (y as f64 - 6.0) / 5.5, (z as f64 - 11.0) / 10.0];
            d.iter().map(|c| c * c).sum::<f64>() < 1.0 || (x + 2 * y + 3 * z) % 7 == 0
        });
        let whole = mesh_with_slabs(&v, 1000);
        for layers in [1, 2, 3, 5] {
            let split = mesh_with_slabs(&v, layers);
            assert_eq!(split.vertex_count(), whole.vertex_count(), "{layers} layers per slab");
            assert_eq!(split.triangle_count(), whole.triangle_count());
            let (a, b) = (MeshMetrics::of(&whole), MeshMetrics::of(&split));
            assert!(b.watertight, "{layers} layers per slab");
            assert!((a.surface_area_mm2 - b.surface_area_mm2).abs() < 1e-6 * a.surface_area_mm2);
        }
    }

    #[test]
    fn iso_surface_pads_the_border_and_handles_nan() {
        let dims = [6, 5, 4];
        let values: Vec<f32> = (0..120).map(|i| if i == 7 { f32::NAN } else { (i % 11) as f32 * 100.0 }).collect();
        let v = Volume::new(Geometry::new(dims, [1.0; 3], [0.0; 3]), 1, VoxelBuffer::F32(values), VolumeMeta::default()).unwrap();
        let m = iso_surface(&v, 400.0).unwrap();
        assert!(MeshMetrics::of(&m).watertight);
        assert!(m.positions.iter().flatten().all(|c| c.is_finite()));
        assert!(matches!(iso_surface(&v, 5000.0), Err(MeshError::NothingAboveThreshold { .. })));
        assert!(matches!(iso_surface(&v, f64::NAN), Err(MeshError::BadThreshold(_))));
    }

    #[test]
    fn inside_box_matches_a_plain_scan() {
        let dims = [13, 7, 5];
        let mut state = 12345u32;
        let values: Vec<f32> = (0..13 * 7 * 5)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 24) as f32
            })
            .collect();
        for iso in [0.5, 0.9, 0.97, 0.995, 2.0] {
            let scalar = |v: f32| v;
            let mut expected: Option<VoxelBox> = None;
            for (n, &v) in values.iter().enumerate() {
                if v >= iso {
                    let p = [n % 13, n / 13 % 7, n / 91];
                    let b = VoxelBox { lo: p, hi: p };
                    expected = Some(expected.map_or(b, |e| e.union(b)));
                }
            }
            assert_eq!(inside_box(&values, dims, &scalar, iso), expected, "iso {iso}");
        }
    }

    #[test]
    fn labels_are_found_with_their_boxes() {
        let mut v = mask([8, 8, 8], |x, y, z| x < 3 && y < 4 && z < 2);
        let VoxelBuffer::U8(d) = &mut v.data else { unreachable!() };
        d[7 + 8 * (7 + 8 * 7)] = 5;
        let boxes = label_boxes(d, [8, 8, 8]).unwrap();
        assert_eq!(boxes[&1], VoxelBox { lo: [0, 0, 0], hi: [2, 3, 1] });
        assert_eq!(boxes[&5], VoxelBox { lo: [7, 7, 7], hi: [7, 7, 7] });
        assert_eq!(labels_present(&v).unwrap(), vec![1, 5]);
        assert_eq!(label_surface(&v, 3), Err(MeshError::LabelNotFound { label: 3, present: vec![1, 5] }));
        let f = Volume::new(Geometry::new([2, 1, 1], [1.0; 3], [0.0; 3]), 1, VoxelBuffer::F32(vec![0.0, 0.5]), VolumeMeta::default()).unwrap();
        assert_eq!(labels_present(&f), Err(MeshError::NotALabelMap(0.5)));
    }
}
