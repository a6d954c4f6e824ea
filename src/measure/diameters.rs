//! RECIST-style diameters of a label on one slice: the longest in-plane diameter and the
//! longest chord perpendicular to it, in mm.
//!
//! The outline is taken as the midpoints of the pixel edges between the label and the rest
//! (the vertices a marching-squares contour would have, which is also what pyradiomics'
//! Maximum2DDiameter uses): a digitised disk of radius R then measures 2R on average, where
//! pixel centres would fall short by about a pixel and pixel corners overshoot by as much. The
//! longest diameter is the diameter of those points' convex hull, found with rotating calipers.
//! The perpendicular diameter is the longest run of label pixels along any line perpendicular
//! to the long axis, sampled every quarter of the smaller pixel size (so within that much of
//! the exact chord), which keeps it inside the lesion for concave shapes.

use super::plane::PlaneBasis;

/// The two RECIST diameters of one slice and where they lie.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recist {
    pub longest_mm: f64,
    pub perpendicular_mm: f64,
    /// End points of the long axis, in continuous pixel coordinates (u, v) of the slice.
    pub long_axis: [[f64; 2]; 2],
    /// End points of the perpendicular chord, in continuous pixel coordinates.
    pub short_axis: [[f64; 2]; 2],
}

/// The RECIST diameters of `label` in a slice of `width` x `height` pixels (u fastest), or
/// `None` when the label is absent from it.
pub fn recist(slice: &[u8], width: usize, height: usize, label: u8, basis: &PlaneBasis) -> Option<Recist> {
    let inside = |u: isize, v: isize| u >= 0 && v >= 0 && (u as usize) < width && (v as usize) < height && slice[u as usize + width * v as usize] == label;
    let mut outline = Vec::new();
    for v in 0..height as isize {
        for u in 0..width as isize {
            if !inside(u, v) {
                continue;
            }
            for (du, dv) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                if !inside(u + du, v + dv) {
                    outline.push(basis.to_plane(u as f64 + du as f64 / 2.0, v as f64 + dv as f64 / 2.0));
                }
            }
        }
    }
    if outline.is_empty() {
        return None;
    }
    let hull = convex_hull(outline);
    let (a, b, longest) = farthest_pair(&hull);
    let (p, q) = (hull[a], hull[b]);
    let along = if longest > 0.0 { [(q[0] - p[0]) / longest, (q[1] - p[1]) / longest] } else { [1.0, 0.0] };
    let across = [-along[1], along[0]];
    let (chord, from, to) = longest_perpendicular_run(&hull, along, across, basis, &inside);
    Some(Recist {
        longest_mm: longest,
        perpendicular_mm: chord,
        long_axis: [basis.to_pixel(p), basis.to_pixel(q)],
        short_axis: [basis.to_pixel(from), basis.to_pixel(to)],
    })
}

/// Longest run of label pixels on lines along `across`, stepping along `along` over the hull.
/// Returns its length and end points (mm, plane coordinates).
fn longest_perpendicular_run(
    hull: &[[f64; 2]],
    along: [f64; 2],
    across: [f64; 2],
    basis: &PlaneBasis,
    inside: &impl Fn(isize, isize) -> bool,
) -> (f64, [f64; 2], [f64; 2]) {
    let project = |p: &[f64; 2], d: [f64; 2]| p[0] * d[0] + p[1] * d[1];
    let range = |d: [f64; 2]| {
        hull.iter().map(|p| project(p, d)).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
    };
    let (t0, t1) = range(along);
    let (s0, s1) = range(across);
    let step = basis.min_step() / 4.0;
    let lines = ((t1 - t0) / step).ceil() as usize + 1;
    // One sample beyond each end so runs that reach the hull are closed.
    let samples = ((s1 - s0) / step).ceil() as usize + 3;
    let point = |t: f64, s: f64| [t * along[0] + s * across[0], t * along[1] + s * across[1]];
    let mut best = (0.0, point(t0, s0), point(t0, s0));
    for line in 0..lines {
        let t = (t0 + line as f64 * step).min(t1);
        let mut start: Option<f64> = None;
        for n in 0..samples {
            let s = s0 - step + n as f64 * step;
            let uv = basis.to_pixel(point(t, s));
            if inside(uv[0].round() as isize, uv[1].round() as isize) {
                start.get_or_insert(s);
                continue;
            }
            if let Some(first) = start.take() {
                // The run covers samples first..s-step; each sample stands for `step` of length.
                let length = s - first;
                if length > best.0 {
                    best = (length, point(t, first - step / 2.0), point(t, s - step / 2.0));
                }
            }
        }
    }
    best
}

fn cross(o: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

fn distance(a: [f64; 2], b: [f64; 2]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// Convex hull, counter-clockwise, without collinear points (Andrew's monotone chain).
pub fn convex_hull(mut points: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    points.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let mut hull: Vec<[f64; 2]> = Vec::with_capacity(points.len() + 1);
    for pass in 0..2 {
        let start = hull.len();
        let ordered: Box<dyn Iterator<Item = &[f64; 2]>> = if pass == 0 { Box::new(points.iter()) } else { Box::new(points.iter().rev()) };
        for &p in ordered {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
                hull.pop();
            }
            hull.push(p);
        }
        // The last point of each chain is the first of the next.
        hull.pop();
    }
    hull
}

/// Indices of the two farthest points of a convex polygon (counter-clockwise) and their
/// distance, by rotating calipers: for every edge, the vertex farthest from its line is an
/// antipodal partner of both its ends, and that vertex only moves forward as the edge does.
pub fn farthest_pair(hull: &[[f64; 2]]) -> (usize, usize, f64) {
    let n = hull.len();
    match n {
        0 | 1 => return (0, 0, 0.0),
        2 => return (0, 1, distance(hull[0], hull[1])),
        _ => {}
    }
    let mut best = (0, 1, distance(hull[0], hull[1]));
    let mut j = 1;
    for i in 0..n {
        let next = (i + 1) % n;
        let mut guard = 0;
        while guard < n && cross(hull[i], hull[next], hull[(j + 1) % n]) > cross(hull[i], hull[next], hull[j]) {
            j = (j + 1) % n;
            guard += 1;
        }
        for a in [i, next] {
            let d = distance(hull[a], hull[j]);
            if d > best.2 {
                best = (a, j, d);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, SliceAxis};

    #[test]
    fn calipers_agree_with_brute_force() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f64 / 100.0
        };
        for size in [3, 5, 20, 200] {
            let points: Vec<[f64; 2]> = (0..size).map(|_| [next(), next() * 0.3]).collect();
            let brute = points.iter().flat_map(|a| points.iter().map(move |b| distance(*a, *b))).fold(0.0, f64::max);
            let hull = convex_hull(points);
            let (_, _, d) = farthest_pair(&hull);
            assert!((d - brute).abs() < 1e-9, "{d} vs {brute}");
        }
    }

    #[test]
    fn hull_drops_interior_and_collinear_points() {
        let hull = convex_hull(vec![[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [1.0, 1.0], [0.0, 2.0]]);
        assert_eq!(hull.len(), 4);
    }

    #[test]
    fn rectangle_measures_edge_to_edge() {
        // 10 x 4 pixels of 0.5 x 1.5 mm: long axis along the diagonal between edge midpoints.
        let (w, h) = (14, 8);
        let mut slice = vec![0u8; w * h];
        for v in 2..6 {
            for u in 2..12 {
                slice[u + w * v] = 3;
            }
        }
        let g = Geometry::new([w, h, 1], [0.5, 1.5, 2.0], [0.0; 3]);
        let r = recist(&slice, w, h, 3, &PlaneBasis::new(&g, SliceAxis::Axial)).unwrap();
        // Farthest edge midpoints: (1.5, 2) to (11.5, 5) or (2, 1.5) to (11, 5.5).
        let a = ((10.0f64 * 0.5).powi(2) + (3.0f64 * 1.5).powi(2)).sqrt();
        let b = ((9.0f64 * 0.5).powi(2) + (4.0f64 * 1.5).powi(2)).sqrt();
        assert!((r.longest_mm - a.max(b)).abs() < 1e-9, "{}", r.longest_mm);
        assert!(recist(&slice, w, h, 1, &PlaneBasis::new(&g, SliceAxis::Axial)).is_none());
    }

    #[test]
    fn one_pixel_is_one_pixel_wide() {
        let slice = [0u8, 0, 0, 0, 1, 0, 0, 0, 0];
        let g = Geometry::new([3, 3, 1], [2.0, 2.0, 1.0], [0.0; 3]);
        let r = recist(&slice, 3, 3, 1, &PlaneBasis::new(&g, SliceAxis::Axial)).unwrap();
        assert!((r.longest_mm - 2.0).abs() < 1e-9);
        assert!((r.perpendicular_mm - 2.0).abs() <= 0.5 + 1e-9, "{}", r.perpendicular_mm);
    }
}
