//! Decimation to a triangle budget by quadric-error edge collapse (Garland & Heckbert), keeping
//! a closed manifold surface closed and manifold.
//!
//! Each vertex carries the sum of the area-weighted plane quadrics of its triangles; collapsing
//! edge (u, v) moves u to the point minimising the summed quadric (or the best of u, v and the
//! midpoint when that system is singular) and removes v and the two triangles on the edge.
//! Cheapest collapses go first. A collapse is refused when it would change the topology: the
//! vertices adjacent to both u and v must be exactly the two opposite the edge (the link
//! condition), and the merged vertex must keep at least three neighbours (no tetrahedron is
//! flattened). It is also refused when a surviving triangle would turn over or swing its
//! normal by more than about 78°.
//! Collapses refused in one pass are tried again in the next, after their surroundings changed.

use super::metrics::is_watertight;
use super::{Mesh, MeshError};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Collapses edges until the mesh has at most `max_triangles` triangles, or no collapse keeps
/// the surface manifold (then the result has more; the caller compares). Needs a closed,
/// consistently oriented mesh.
pub fn decimate(mesh: &Mesh, max_triangles: usize) -> Result<Mesh, MeshError> {
    if mesh.triangle_count() <= max_triangles {
        return Ok(mesh.clone());
    }
    if !is_watertight(&mesh.indices) {
        return Err(MeshError::NotClosed);
    }
    let mut state = Collapser::new(mesh);
    loop {
        let before = state.live_triangles;
        state.run_pass(max_triangles);
        if state.live_triangles <= max_triangles || state.live_triangles == before {
            break;
        }
    }
    Ok(state.into_mesh())
}

/// A symmetric 4x4 error quadric: a2 ab ac ad b2 bc bd c2 cd d2.
#[derive(Clone, Copy, Default)]
struct Quadric([f64; 10]);

impl Quadric {
    fn of_plane(n: [f64; 3], d: f64, weight: f64) -> Self {
        let [a, b, c] = n;
        Quadric([a * a, a * b, a * c, a * d, b * b, b * c, b * d, c * c, c * d, d * d].map(|x| x * weight))
    }

    fn add(&self, o: &Quadric) -> Quadric {
        Quadric(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }

    fn error(&self, p: [f64; 3]) -> f64 {
        let q = &self.0;
        let [x, y, z] = p;
        q[0] * x * x + 2.0 * q[1] * x * y + 2.0 * q[2] * x * z + 2.0 * q[3] * x + q[4] * y * y + 2.0 * q[5] * y * z
            + 2.0 * q[6] * y
            + q[7] * z * z
            + 2.0 * q[8] * z
            + q[9]
    }

    /// The point of least error, when the 3x3 system is well conditioned.
    fn minimiser(&self) -> Option<[f64; 3]> {
        let q = &self.0;
        let a = [[q[0], q[1], q[2]], [q[1], q[4], q[5]], [q[2], q[5], q[7]]];
        let trace = q[0] + q[4] + q[7];
        let det = crate::volume::det3(&a);
        if !(det.abs() > 1e-9 * trace * trace * trace) {
            return None;
        }
        let inv = crate::volume::invert3(&a)?;
        let b = [q[3], q[6], q[8]];
        Some(std::array::from_fn(|r| -(0..3).map(|c| inv[r][c] * b[c]).sum::<f64>()))
    }
}

/// A proposed collapse of v into u, valid while both vertices keep the versions seen (kept
/// small: the heap moves these around; the target point is worked out again when popped).
struct Candidate {
    cost: f64,
    u: u32,
    v: u32,
    versions: [u32; 2],
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Reversed, so that the max-heap yields the cheapest collapse first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.cost.total_cmp(&self.cost).then_with(|| (other.u, other.v).cmp(&(self.u, self.v)))
    }
}

struct Collapser {
    positions: Vec<[f64; 3]>,
    triangles: Vec<[u32; 3]>,
    triangle_alive: Vec<bool>,
    /// Triangles around each vertex (dead ones are dropped lazily).
    around: Vec<Vec<u32>>,
    quadrics: Vec<Quadric>,
    versions: Vec<u32>,
    vertex_alive: Vec<bool>,
    live_triangles: usize,
    heap: BinaryHeap<Candidate>,
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Least cosine between a surviving triangle's normal before and after a collapse.
const MIN_NORMAL_COSINE: f64 = 0.2;

impl Collapser {
    fn new(mesh: &Mesh) -> Self {
        let positions: Vec<[f64; 3]> = mesh.positions.iter().map(|p| p.map(|c| c as f64)).collect();
        let triangles: Vec<[u32; 3]> = mesh.triangles().collect();
        let mut around = vec![Vec::new(); positions.len()];
        let mut quadrics = vec![Quadric::default(); positions.len()];
        for (t, tri) in triangles.iter().enumerate() {
            let p = tri.map(|i| positions[i as usize]);
            let n = cross(sub(p[1], p[0]), sub(p[2], p[0]));
            let len = dot(n, n).sqrt();
            if len > 0.0 {
                let unit = n.map(|c| c / len);
                let q = Quadric::of_plane(unit, -dot(unit, p[0]), len / 2.0);
                for &i in tri {
                    quadrics[i as usize] = quadrics[i as usize].add(&q);
                }
            }
            for &i in tri {
                around[i as usize].push(t as u32);
            }
        }
        let n = positions.len();
        Collapser {
            positions,
            live_triangles: triangles.len(),
            triangle_alive: vec![true; triangles.len()],
            triangles,
            around,
            quadrics,
            versions: vec![0; n],
            vertex_alive: vec![true; n],
            heap: BinaryHeap::new(),
        }
    }

    /// The cheapest point to collapse edge (u, v) to, and its error.
    fn best_target(&self, u: u32, v: u32) -> (f64, [f64; 3]) {
        let q = self.quadrics[u as usize].add(&self.quadrics[v as usize]);
        let (pu, pv) = (self.positions[u as usize], self.positions[v as usize]);
        let midpoint = [0, 1, 2].map(|c| (pu[c] + pv[c]) / 2.0);
        let mut best = (q.error(midpoint), midpoint);
        // The minimiser of a nearly flat neighbourhood can lie far off; only nearby ones count.
        let reach2 = dot(sub(pu, pv), sub(pu, pv));
        let nearby = q.minimiser().filter(|m| dot(sub(*m, midpoint), sub(*m, midpoint)) <= reach2);
        for p in [Some(pu), Some(pv), nearby].into_iter().flatten() {
            let e = q.error(p);
            if e < best.0 {
                best = (e, p);
            }
        }
        (best.0.max(0.0), best.1)
    }

    fn candidate(&self, u: u32, v: u32) -> Candidate {
        let (cost, _) = self.best_target(u, v);
        Candidate { cost, u, v, versions: [self.versions[u as usize], self.versions[v as usize]] }
    }

    /// Queues every edge of the live mesh once.
    fn run_pass(&mut self, max_triangles: usize) {
        let mut queue = Vec::with_capacity(self.live_triangles * 3 / 2);
        for (t, tri) in self.triangles.iter().enumerate() {
            if !self.triangle_alive[t] {
                continue;
            }
            for i in 0..3 {
                let (a, b) = (tri[i], tri[(i + 1) % 3]);
                if a < b {
                    queue.push(self.candidate(a, b));
                }
            }
        }
        self.heap = BinaryHeap::from(queue);
        while self.live_triangles > max_triangles {
            let Some(c) = self.heap.pop() else { break };
            let (u, v) = (c.u as usize, c.v as usize);
            if !self.vertex_alive[u] || !self.vertex_alive[v] || c.versions != [self.versions[u], self.versions[v]] {
                continue;
            }
            let (_, target) = self.best_target(c.u, c.v);
            if self.can_collapse(c.u, c.v, target) {
                self.collapse(c.u, c.v, target);
            }
        }
    }

    fn live_around(&self, v: u32) -> impl Iterator<Item = u32> + '_ {
        self.around[v as usize].iter().copied().filter(|&t| self.triangle_alive[t as usize])
    }

    fn neighbours(&self, v: u32) -> Vec<u32> {
        let mut out: Vec<u32> = self.live_around(v).flat_map(|t| self.triangles[t as usize]).filter(|&w| w != v).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn can_collapse(&self, u: u32, v: u32, target: [f64; 3]) -> bool {
        let (nu, nv) = (self.neighbours(u), self.neighbours(v));
        let shared: Vec<u32> = nu.iter().copied().filter(|w| nv.binary_search(w).is_ok()).collect();
        let edge_triangles: Vec<u32> = self.live_around(u).filter(|&t| self.triangles[t as usize].contains(&v)).collect();
        if edge_triangles.len() != 2 || shared.len() != 2 {
            return false;
        }
        // The vertices opposite the edge must be exactly the shared neighbours.
        for &t in &edge_triangles {
            let opposite = self.triangles[t as usize].into_iter().find(|&w| w != u && w != v);
            if opposite.is_none_or(|w| !shared.contains(&w)) {
                return false;
            }
        }
        if nu.len() + nv.len() - 2 - 2 < 3 {
            return false;
        }
        // No surviving triangle may turn over or swing its normal by more than about 78°.
        for x in [u, v] {
            for t in self.live_around(x) {
                let tri = self.triangles[t as usize];
                if tri.contains(&u) && tri.contains(&v) {
                    continue;
                }
                let old = tri.map(|i| self.positions[i as usize]);
                let new = tri.map(|i| if i == u || i == v { target } else { self.positions[i as usize] });
                let n_old = cross(sub(old[1], old[0]), sub(old[2], old[0]));
                let n_new = cross(sub(new[1], new[0]), sub(new[2], new[0]));
                let (l_old, l_new) = (dot(n_old, n_old).sqrt(), dot(n_new, n_new).sqrt());
                if l_old > 0.0 && dot(n_old, n_new) <= MIN_NORMAL_COSINE * l_old * l_new {
                    return false;
                }
            }
        }
        true
    }

    fn collapse(&mut self, u: u32, v: u32, target: [f64; 3]) {
        let mut merged: Vec<u32> = Vec::new();
        for x in [u, v] {
            for t in std::mem::take(&mut self.around[x as usize]) {
                if !self.triangle_alive[t as usize] {
                    continue;
                }
                let tri = &mut self.triangles[t as usize];
                if tri.contains(&u) && tri.contains(&v) {
                    self.triangle_alive[t as usize] = false;
                    self.live_triangles -= 1;
                    continue;
                }
                for i in tri.iter_mut() {
                    if *i == v {
                        *i = u;
                    }
                }
                merged.push(t);
            }
        }
        self.around[u as usize] = merged;
        self.vertex_alive[v as usize] = false;
        self.positions[u as usize] = target;
        self.quadrics[u as usize] = self.quadrics[u as usize].add(&self.quadrics[v as usize]);
        self.versions[u as usize] += 1;
        self.versions[v as usize] += 1;
        for w in self.neighbours(u) {
            let c = self.candidate(u.min(w), u.max(w));
            self.heap.push(c);
        }
    }

    fn into_mesh(self) -> Mesh {
        let mut remap = vec![u32::MAX; self.positions.len()];
        let mut mesh = Mesh::default();
        for (t, tri) in self.triangles.iter().enumerate() {
            if !self.triangle_alive[t] {
                continue;
            }
            for &i in tri {
                if remap[i as usize] == u32::MAX {
                    remap[i as usize] = mesh.positions.len() as u32;
                    mesh.positions.push(self.positions[i as usize].map(|c| c as f32));
                }
                mesh.indices.push(remap[i as usize]);
            }
        }
        mesh.recompute_normals();
        mesh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::MeshMetrics;

    /// A closed grid-like sphere: an octahedron subdivided `levels` times, projected outward.
    fn sphere(levels: usize) -> Mesh {
        let mut positions: Vec<[f32; 3]> =
            vec![[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]];
        let mut tris: Vec<[u32; 3]> = vec![[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]];
        for _ in 0..levels {
            let mut mid = std::collections::HashMap::new();
            let mut next = Vec::new();
            for t in &tris {
                let m: Vec<u32> = (0..3)
                    .map(|i| {
                        let (a, b) = (t[i].min(t[(i + 1) % 3]), t[i].max(t[(i + 1) % 3]));
                        *mid.entry((a, b)).or_insert_with(|| {
                            let (p, q) = (positions[a as usize], positions[b as usize]);
                            let m = [0, 1, 2].map(|c| (p[c] + q[c]) / 2.0);
                            let l = m.iter().map(|x| x * x).sum::<f32>().sqrt();
                            positions.push(m.map(|x| x / l));
                            positions.len() as u32 - 1
                        })
                    })
                    .collect();
                next.extend([[t[0], m[0], m[2]], [m[0], t[1], m[1]], [m[2], m[1], t[2]], [m[0], m[1], m[2]]]);
            }
            tris = next;
        }
        let mut mesh = Mesh { positions, normals: Vec::new(), indices: tris.into_iter().flatten().collect() };
        mesh.recompute_normals();
        mesh
    }

    #[test]
    fn decimated_sphere_stays_closed_within_budget() {
        let mesh = sphere(5);
        let before = MeshMetrics::of(&mesh);
        assert!(before.watertight);
        for budget in [4000, 500, 60] {
            let out = decimate(&mesh, budget).unwrap();
            let after = MeshMetrics::of(&out);
            assert!(after.watertight, "budget {budget}");
            assert!(after.triangles <= budget, "{} > {budget}", after.triangles);
            assert!(after.triangles > budget - 3, "stops at the budget");
            let tolerance = if budget >= 500 { 0.02 } else { 0.2 };
            assert!((after.enclosed_volume_ml / before.enclosed_volume_ml - 1.0).abs() < tolerance, "budget {budget}");
        }
    }

    #[test]
    fn a_tetrahedron_cannot_shrink_further() {
        let out = decimate(&sphere(2), 2).unwrap();
        let m = MeshMetrics::of(&out);
        assert!(m.watertight);
        assert_eq!(m.triangles, 4);
    }

    #[test]
    fn open_meshes_are_refused() {
        let mut m = sphere(1);
        m.indices.truncate(m.indices.len() - 3);
        assert_eq!(decimate(&m, 4), Err(MeshError::NotClosed));
    }
}

