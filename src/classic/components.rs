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
///
/// A scanline fill: each step marks a whole run along x and looks for accepted runs in the
/// neighbouring rows (the 4 face neighbours for 6-connectivity, all 8 rows one voxel wider for
/// 26), so the stack holds runs rather than voxels and no index is divided.
pub fn flood(
    dims: [usize; 3],
    connectivity: Connectivity,
    seeds: impl IntoIterator<Item = usize>,
    accept: impl Fn(usize) -> bool,
    visited: &mut [bool],
) -> Option<Component> {
    let [nx, ny, nz] = dims;
    let plane = nx * ny;
    let (rows, widen): (&[(isize, isize)], usize) = match connectivity {
        Connectivity::Six => (&[(-1, 0), (1, 0), (0, -1), (0, 1)], 0),
        Connectivity::TwentySix => (&[(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)], 1),
    };
    let mut stack: Vec<[usize; 3]> = Vec::new();
    let mut first = None;
    for p in seeds {
        if !visited[p] && accept(p) {
            first.get_or_insert(p);
            stack.push([p % nx, (p / nx) % ny, p / plane]);
        }
    }
    let mut component = Component { seed: first?, voxels: 0, index_sum: [0; 3] };
    while let Some([i, j, k]) = stack.pop() {
        let row = nx * (j + ny * k);
        if visited[row + i] {
            continue;
        }
        let (mut a, mut b) = (i, i);
        while a > 0 && !visited[row + a - 1] && accept(row + a - 1) {
            a -= 1;
        }
        while b + 1 < nx && !visited[row + b + 1] && accept(row + b + 1) {
            b += 1;
        }
        visited[row + a..=row + b].fill(true);
        let run = (b - a + 1) as u64;
        component.voxels += run;
        component.index_sum[0] += (a + b) as u64 * run / 2;
        component.index_sum[1] += j as u64 * run;
        component.index_sum[2] += k as u64 * run;
        for &(dj, dk) in rows {
            let (jj, kk) = (j as isize + dj, k as isize + dk);
            if jj < 0 || kk < 0 || jj >= ny as isize || kk >= nz as isize {
                continue;
            }
            let (jj, kk) = (jj as usize, kk as usize);
            let next = nx * (jj + ny * kk);
            let mut in_run = false;
            for x in a.saturating_sub(widen)..=(b + widen).min(nx - 1) {
                if !visited[next + x] && accept(next + x) {
                    if !in_run {
                        stack.push([x, jj, kk]);
                        in_run = true;
                    }
                } else {
                    in_run = false;
                }
            }
        }
    }
    Some(component)
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

    /// Component sizes by a plain breadth-first search over `Connectivity::offsets`.
    fn reference_sizes(dims: [usize; 3], mask: &[bool], connectivity: Connectivity) -> Vec<u64> {
        let mut seen = vec![false; mask.len()];
        let mut sizes = Vec::new();
        for start in 0..mask.len() {
            if !mask[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut queue = std::collections::VecDeque::from([start]);
            let mut size = 0;
            while let Some(p) = queue.pop_front() {
                size += 1;
                let q = [p % dims[0], (p / dims[0]) % dims[1], p / (dims[0] * dims[1])];
                for d in connectivity.offsets() {
                    let r: Vec<isize> = (0..3).map(|c| q[c] as isize + d[c]).collect();
                    if (0..3).any(|c| r[c] < 0 || r[c] >= dims[c] as isize) {
                        continue;
                    }
                    let n = r[0] as usize + dims[0] * (r[1] as usize + dims[1] * r[2] as usize);
                    if mask[n] && !seen[n] {
                        seen[n] = true;
                        queue.push_back(n);
                    }
                }
            }
            sizes.push(size);
        }
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        sizes
    }

    #[test]
    fn scanline_fill_matches_breadth_first_search() {
        let mut state = 0x0dd_b1a5_e5_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let dims = [11, 7, 6];
        for density in [25, 40, 55] {
            let mask: Vec<bool> = (0..dims.iter().product()).map(|_| next() % 100 < density).collect();
            for connectivity in [Connectivity::Six, Connectivity::TwentySix] {
                let found = components(dims, &mask, connectivity);
                let sizes: Vec<u64> = found.iter().map(|c| c.voxels).collect();
                assert_eq!(sizes, reference_sizes(dims, &mask, connectivity), "{connectivity:?} at {density}%");
                let total: [u64; 3] = (0..mask.len()).filter(|&p| mask[p]).fold([0; 3], |s, p| {
                    [s[0] + (p % 11) as u64, s[1] + ((p / 11) % 7) as u64, s[2] + (p / 77) as u64]
                });
                let summed = found.iter().fold([0; 3], |s, c| [0, 1, 2].map(|a| s[a] + c.index_sum[a]));
                assert_eq!(summed, total);
            }
        }
    }

    #[test]
    fn flood_ignores_rejected_seeds() {
        let mut visited = vec![false; 8];
        assert!(flood([2, 2, 2], Connectivity::Six, [0], |_| false, &mut visited).is_none());
        let c = flood([2, 2, 2], Connectivity::Six, [0, 7], |_| true, &mut visited).unwrap();
        assert_eq!(c.voxels, 8);
    }
}
