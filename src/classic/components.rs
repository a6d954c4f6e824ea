//! Flood fill and connected components on a 3D grid, with 6- or 26-connectivity.
//!
//! Components are found one at a time by flood fill from their first voxel, recording each
//! one's seed, size and index sums (centroid) rather than a label per voxel, so the extra
//! memory is one flag per voxel; a component is rebuilt by flooding again from its seed.

use super::Connectivity;

/// One connected component: a voxel of it, its size and the sums of its voxels' indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Component {
    /// Linear index of its first voxel in memory order.
    pub seed: usize,
    pub voxels: u64,
    pub index_sum: [u64; 3],
}

impl Component {
    /// Mean voxel index (i, j, k).
    pub fn mean_index(&self) -> [f64; 3] {
        self.index_sum.map(|s| s as f64 / self.voxels as f64)
    }
}

/// Marks in `visited` every voxel connected to `seeds` through voxels where `accept` holds
/// (seeds included only if accepted), skipping voxels already visited. Returns what it marked
/// as one component (seed = the first accepted seed; `None` when nothing was marked).
pub fn flood(
    dims: [usize; 3],
    connectivity: Connectivity,
    seeds: impl IntoIterator<Item = usize>,
    accept: impl Fn(usize) -> bool,
    visited: &mut [bool],
) -> Option<Component> {
    let [nx, ny, nz] = dims;
    let plane = nx * ny;
    let offsets = connectivity.offsets();
    let mut stack = Vec::new();
    let mut component: Option<Component> = None;
    let mut mark = |p: usize, visited: &mut [bool], stack: &mut Vec<usize>| {
        visited[p] = true;
        stack.push(p);
        let c = component.get_or_insert(Component { seed: p, voxels: 0, index_sum: [0; 3] });
        c.voxels += 1;
        c.index_sum[0] += (p % nx) as u64;
        c.index_sum[1] += ((p / nx) % ny) as u64;
        c.index_sum[2] += (p / plane) as u64;
    };
    for seed in seeds {
        if !visited[seed] && accept(seed) {
            mark(seed, visited, &mut stack);
        }
    }
    while let Some(p) = stack.pop() {
        let (i, j, k) = ((p % nx) as isize, ((p / nx) % ny) as isize, (p / plane) as isize);
        for d in offsets {
            let (a, b, c) = (i + d[0], j + d[1], k + d[2]);
            if a < 0 || b < 0 || c < 0 || a >= nx as isize || b >= ny as isize || c >= nz as isize {
                continue;
            }
            let q = a as usize + nx * (b as usize + ny * c as usize);
            if !visited[q] && accept(q) {
                mark(q, visited, &mut stack);
            }
        }
    }
    component
}

/// The connected components of `mask`, largest first (ties: lowest seed first).
pub fn components(dims: [usize; 3], mask: &[bool], connectivity: Connectivity) -> Vec<Component> {
    let mut visited = vec![false; mask.len()];
    let mut found = Vec::new();
    for p in 0..mask.len() {
        if mask[p] && !visited[p] {
            found.extend(flood(dims, connectivity, [p], |q| mask[q], &mut visited));
        }
    }
    found.sort_by(|a, b| b.voxels.cmp(&a.voxels).then(a.seed.cmp(&b.seed)));
    found
}

/// The voxels of the components of `mask` that hold the given seeds.
pub fn keep_components(dims: [usize; 3], mask: &[bool], connectivity: Connectivity, seeds: &[usize]) -> Vec<bool> {
    let mut kept = vec![false; mask.len()];
    flood(dims, connectivity, seeds.iter().copied(), |q| mask[q], &mut kept);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_voxels_join_only_with_26_connectivity() {
        let dims = [5, 3, 3];
        let mut mask = vec![false; 45];
        mask[0] = true; // (0,0,0)
        mask[21] = true; // (1,1,1)
        mask[42] = true; // (2,2,2)
        mask[4] = true; // (4,0,0): not touching the others
        assert_eq!(components(dims, &mask, Connectivity::Six).len(), 4);
        let c = components(dims, &mask, Connectivity::TwentySix);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].voxels, 3);
        assert_eq!(c[0].seed, 0);
        assert_eq!(c[0].mean_index(), [1.0, 1.0, 1.0]);
        let kept = keep_components(dims, &mask, Connectivity::TwentySix, &[4]);
        assert_eq!(kept.iter().filter(|x| **x).count(), 1);
    }

    #[test]
    fn flood_ignores_rejected_seeds() {
        let mut visited = vec![false; 8];
        assert!(flood([2, 2, 2], Connectivity::Six, [0], |_| false, &mut visited).is_none());
        let c = flood([2, 2, 2], Connectivity::Six, [0, 7], |_| true, &mut visited).unwrap();
        assert_eq!(c.voxels, 8);
    }
}
