//! The 256-case marching-cubes table, derived at start-up from one rule instead of typed in.
//!
//! Cube corners are numbered by their offset bits: corner `c` sits at
//! (`c & 1`, `(c >> 1) & 1`, `(c >> 2) & 1`). Edge `e` runs along axis `e / 4` from the
//! `e % 4`-th corner (in increasing order) whose bit for that axis is 0.
//!
//! How a case is built: on every cube face, walking its corners counter-clockwise as seen from
//! outside the cube, each edge where the walk enters the inside (value >= iso) is joined by a
//! segment to the next crossing edge. On a face with two inside corners on one diagonal (the
//! ambiguous face) this cuts each inside corner off on its own ("inside corners separated").
//! The choice depends only on the four corner signs of the face, which the two cubes sharing
//! the face see identically, so both cubes draw the same segments there (in opposite
//! directions): the surface has no cracks and is consistently oriented. Every crossing edge is
//! the start of one segment (on the face where the walk enters) and the end of one (where it
//! leaves), so the segments form closed loops; each loop becomes a polygon triangulated inside
//! the cube. The resulting surface separates inside corners that touch only at a cube edge or
//! corner (6-connected inside, 18/26-connected outside): two mask voxels that touch only along
//! an edge give two closed surfaces.
//!
//! Loop direction (entry edge to exit edge) makes counter-clockwise triangles face outward,
//! away from the inside. A loop is triangulated by the minimum-weight triangulation of its edge
//! midpoints among those that never join two vertices lying on one cube face unless a segment
//! of that face joins them: such a diagonal could be drawn by the neighbouring cube too, and
//! four triangles would then share one edge. With that rule every mesh edge belongs to exactly
//! two triangles.

use std::sync::LazyLock;

/// Corner pairs of the 12 cube edges, lower corner first.
pub(crate) const EDGE_CORNERS: [[u8; 2]; 12] = edge_corners();

/// Most triangles one cube can produce: one loop through all 12 edges gives 10.
pub(crate) const MAX_TRIANGLES: usize = 10;

const fn edge_corners() -> [[u8; 2]; 12] {
    let mut out = [[0u8; 2]; 12];
    let mut axis = 0;
    while axis < 3 {
        let mut k = 0;
        let mut corner = 0u8;
        while corner < 8 {
            if corner & (1 << axis) == 0 {
                out[axis * 4 + k] = [corner, corner | (1 << axis)];
                k += 1;
            }
            corner += 1;
        }
        axis += 1;
    }
    out
}

/// The triangles of one corner configuration, as triples of cube edge numbers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Case {
    pub triangle_count: u8,
    pub edges: [u8; 3 * MAX_TRIANGLES],
}

impl Case {
    pub fn triangles(&self) -> impl Iterator<Item = [u8; 3]> + '_ {
        self.edges[..3 * self.triangle_count as usize].chunks_exact(3).map(|t| [t[0], t[1], t[2]])
    }
}

/// All 256 cases, indexed by the configuration bits (bit `c` set = corner `c` inside).
pub(crate) static CASES: LazyLock<[Case; 256]> = LazyLock::new(build_cases);

fn corner_position(c: u8) -> [f64; 3] {
    [(c & 1) as f64, ((c >> 1) & 1) as f64, ((c >> 2) & 1) as f64]
}

fn edge_of(a: u8, b: u8) -> u8 {
    let (lo, hi) = (a.min(b), a.max(b));
    EDGE_CORNERS.iter().position(|&[p, q]| p == lo && q == hi).expect("corners of a cube edge") as u8
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// The six faces, each as its four corners counter-clockwise seen from outside the cube.
fn faces() -> [[u8; 4]; 6] {
    let mut out = [[0u8; 4]; 6];
    for axis in 0..3 {
        let (u, w) = ((axis + 1) % 3, (axis + 2) % 3);
        for side in 0..2u8 {
            let base = side << axis;
            let mut quad = [base, base | (1 << u), base | (1 << u) | (1 << w), base | (1 << w)];
            // Reverse when the walk turns clockwise about the outward normal.
            let p: Vec<[f64; 3]> = quad.iter().map(|&c| corner_position(c)).collect();
            let turn = cross(sub(p[1], p[0]), sub(p[2], p[1]));
            let outward = if side == 1 { 1.0 } else { -1.0 };
            if turn[axis] * outward < 0.0 {
                quad.reverse();
            }
            out[axis * 2 + side as usize] = quad;
        }
    }
    out
}

fn build_cases() -> [Case; 256] {
    let faces = faces();
    let face_edges: Vec<[u8; 4]> =
        faces.iter().map(|q| [0, 1, 2, 3].map(|i| edge_of(q[i], q[(i + 1) % 4]))).collect();
    let on_common_face = |a: u8, b: u8| face_edges.iter().any(|f| f.contains(&a) && f.contains(&b));
    let midpoint = |e: u8| {
        let [a, b] = EDGE_CORNERS[e as usize];
        let (p, q) = (corner_position(a), corner_position(b));
        [(p[0] + q[0]) / 2.0, (p[1] + q[1]) / 2.0, (p[2] + q[2]) / 2.0]
    };
    let mut cases = [Case { triangle_count: 0, edges: [0; 3 * MAX_TRIANGLES] }; 256];
    for (config, case) in cases.iter_mut().enumerate() {
        let inside = |c: u8| config >> c & 1 == 1;
        // next[e] = the edge the segment starting at crossing edge e leads to.
        let mut next = [u8::MAX; 12];
        for (quad, edges) in faces.iter().zip(&face_edges) {
            for i in 0..4 {
                let entering = !inside(quad[i]) && inside(quad[(i + 1) % 4]);
                if entering {
                    let following = (1..4)
                        .map(|d| (i + d) % 4)
                        .find(|&j| inside(quad[j]) != inside(quad[(j + 1) % 4]))
                        .expect("a face entered is also left");
                    next[edges[i] as usize] = edges[following];
                }
            }
        }
        let mut used = [false; 12];
        let mut triangles: Vec<[u8; 3]> = Vec::new();
        for start in 0..12u8 {
            if next[start as usize] == u8::MAX || used[start as usize] {
                continue;
            }
            let mut polygon = Vec::new();
            let mut e = start;
            while !used[e as usize] {
                used[e as usize] = true;
                polygon.push(e);
                e = next[e as usize];
            }
            triangles.extend(triangulate(&polygon, &on_common_face, &midpoint));
        }
        case.triangle_count = triangles.len() as u8;
        for (slot, t) in case.edges.chunks_exact_mut(3).zip(&triangles) {
            slot.copy_from_slice(t);
        }
    }
    cases
}

/// Minimum-weight triangulation of a loop of edge numbers (kept in loop order, so every
/// triangle has the loop's orientation), never using a diagonal between two vertices on one
/// cube face.
fn triangulate(polygon: &[u8], on_common_face: &dyn Fn(u8, u8) -> bool, midpoint: &dyn Fn(u8) -> [f64; 3]) -> Vec<[u8; 3]> {
    let n = polygon.len();
    let side = |i: usize, j: usize| j == i + 1 || (i == 0 && j == n - 1);
    let weight = |i: usize, j: usize| {
        if side(i, j) {
            0.0
        } else if on_common_face(polygon[i], polygon[j]) {
            f64::INFINITY
        } else {
            let d = sub(midpoint(polygon[i]), midpoint(polygon[j]));
            (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
        }
    };
    // cost[i][j]: best triangulation of the sub-polygon i..=j closed by the chord (i, j).
    let mut cost = vec![vec![0.0f64; n]; n];
    let mut split = vec![vec![0usize; n]; n];
    for len in 2..n {
        for i in 0..n - len {
            let j = i + len;
            let (best, k) = (i + 1..j)
                .map(|k| (cost[i][k] + cost[k][j] + weight(i, k) + weight(k, j), k))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .expect("at least one apex");
            cost[i][j] = best;
            split[i][j] = k;
        }
    }
    assert!(cost[0][n - 1].is_finite(), "loop {polygon:?} has no triangulation free of face diagonals");
    let mut out = Vec::with_capacity(n - 2);
    let mut stack = vec![(0, n - 1)];
    while let Some((i, j)) = stack.pop() {
        if j < i + 2 {
            continue;
        }
        let k = split[i][j];
        out.push([polygon[i], polygon[k], polygon[j]]);
        stack.push((i, k));
        stack.push((k, j));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crossing_edges(config: usize) -> Vec<u8> {
        (0..12u8)
            .filter(|&e| {
                let [a, b] = EDGE_CORNERS[e as usize];
                (config >> a & 1) != (config >> b & 1)
            })
            .collect()
    }

    #[test]
    fn every_crossing_edge_is_used_and_nothing_else() {
        for (config, case) in CASES.iter().enumerate() {
            let mut used: Vec<u8> = case.triangles().flatten().collect();
            used.sort();
            used.dedup();
            assert_eq!(used, crossing_edges(config), "case {config}");
        }
        assert_eq!(CASES[0].triangle_count, 0);
        assert_eq!(CASES[255].triangle_count, 0);
    }

    #[test]
    fn a_cut_corner_faces_away_from_the_inside() {
        // Corner 0 alone inside: one triangle whose normal points away from corner 0.
        let case = &CASES[1];
        assert_eq!(case.triangle_count, 1);
        let t = case.triangles().next().unwrap();
        let p: Vec<[f64; 3]> = t
            .iter()
            .map(|&e| {
                let [a, b] = EDGE_CORNERS[e as usize];
                let (p, q) = (corner_position(a), corner_position(b));
                [(p[0] + q[0]) / 2.0, (p[1] + q[1]) / 2.0, (p[2] + q[2]) / 2.0]
            })
            .collect();
        let n = cross(sub(p[1], p[0]), sub(p[2], p[0]));
        assert!(n[0] > 0.0 && n[1] > 0.0 && n[2] > 0.0, "normal {n:?}");
    }

    #[test]
    fn complementary_cases_give_the_same_crossings() {
        // A case and its complement cut the same edges (the loops may differ on ambiguous faces).
        for config in 0..256 {
            assert_eq!(crossing_edges(config), crossing_edges(255 - config));
        }
        // Two inside corners on a face diagonal are separated: two triangles.
        assert_eq!(CASES[0b0000_1001].triangle_count, 2);
        // Their complement (six inside corners) joins the outside corners into one band.
        assert_eq!(CASES[0b1111_0110].triangle_count, 4);
    }

    #[test]
    fn within_a_cube_every_edge_is_shared_by_two_triangles_or_lies_on_a_face() {
        let faces = faces();
        let face_edges: Vec<Vec<u8>> = faces.iter().map(|q| (0..4).map(|i| edge_of(q[i], q[(i + 1) % 4])).collect()).collect();
        for (config, case) in CASES.iter().enumerate() {
            let mut directed: Vec<(u8, u8)> = Vec::new();
            for t in case.triangles() {
                for i in 0..3 {
                    directed.push((t[i], t[(i + 1) % 3]));
                }
            }
            for &(a, b) in &directed {
                let reverse = directed.iter().filter(|&&d| d == (b, a)).count();
                let same = directed.iter().filter(|&&d| d == (a, b)).count();
                assert_eq!(same, 1, "case {config}: edge {a}-{b} repeated");
                let on_face = face_edges.iter().any(|f| f.contains(&a) && f.contains(&b));
                if reverse == 0 {
                    assert!(on_face, "case {config}: open edge {a}-{b} inside the cube");
                } else {
                    assert!(!on_face, "case {config}: interior diagonal {a}-{b} on a face");
                }
            }
        }
    }
}
