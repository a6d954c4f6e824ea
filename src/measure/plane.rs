//! Physical 2D coordinates (mm) of the pixels of a slice, for in-plane lengths and areas.
//!
//! A slice along `SliceAxis` steps through two index axes u and v; one step along each is the
//! physical vector `direction · spacing` of that index axis. Those two vectors are written in an
//! orthonormal basis of the slice plane (the first along u), so that lengths and angles in the
//! plane are exact even for a sheared (non-orthogonal) direction matrix.

use crate::volume::{Geometry, SliceAxis};

/// The physical displacement (mm, in-plane orthonormal coordinates) of one pixel step along
/// the slice's u (column) and v (row) axes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlaneBasis {
    pub u: [f64; 2],
    pub v: [f64; 2],
}

/// The columns of direction · diag(spacing): the physical vector (LPS mm) of one step along
/// each index axis.
pub fn index_steps(g: &Geometry) -> [[f64; 3]; 3] {
    let mut steps = [[0.0; 3]; 3];
    for (c, step) in steps.iter_mut().enumerate() {
        let d = g.axis_direction(c);
        *step = [d[0] * g.spacing[c], d[1] * g.spacing[c], d[2] * g.spacing[c]];
    }
    steps
}

pub fn dot3(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn norm3(a: [f64; 3]) -> f64 {
    dot3(a, a).sqrt()
}

impl PlaneBasis {
    /// The basis of the slices of `g` along `axis`.
    pub fn new(g: &Geometry, axis: SliceAxis) -> Self {
        let steps = index_steps(g);
        let (iu, iv) = axis.in_plane();
        let (a, b) = (steps[iu], steps[iv]);
        let la = norm3(a);
        let along = dot3(a, b) / la;
        let across = (dot3(b, b) - along * along).max(0.0).sqrt();
        PlaneBasis { u: [la, 0.0], v: [along, across] }
    }

    /// Physical position of continuous pixel coordinates (u, v), relative to pixel (0, 0).
    pub fn to_plane(&self, u: f64, v: f64) -> [f64; 2] {
        [u * self.u[0] + v * self.v[0], u * self.u[1] + v * self.v[1]]
    }

    /// Continuous pixel coordinates of a physical in-plane position: the inverse of `to_plane`.
    pub fn to_pixel(&self, p: [f64; 2]) -> [f64; 2] {
        let det = self.pixel_area();
        [(p[0] * self.v[1] - p[1] * self.v[0]) / det, (self.u[0] * p[1] - self.u[1] * p[0]) / det]
    }

    /// Area of one pixel in mm².
    pub fn pixel_area(&self) -> f64 {
        self.u[0] * self.v[1] - self.u[1] * self.v[0]
    }

    /// The shorter of the two pixel edge lengths (mm).
    pub fn min_step(&self) -> f64 {
        let lu = (self.u[0] * self.u[0] + self.u[1] * self.u[1]).sqrt();
        let lv = (self.v[0] * self.v[0] + self.v[1] * self.v[1]).sqrt();
        lu.min(lv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_grid_keeps_lengths_and_round_trips() {
        let mut g = Geometry::new([4, 4, 4], [0.5, 0.8, 3.0], [0.0; 3]);
        let (c, s) = (0.6f64, 0.8f64);
        g.direction = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let axial = PlaneBasis::new(&g, SliceAxis::Axial);
        assert!((axial.u[0] - 0.5).abs() < 1e-12 && axial.u[1].abs() < 1e-12);
        assert!(axial.v[0].abs() < 1e-12 && (axial.v[1] - 0.8).abs() < 1e-12);
        assert!((axial.pixel_area() - 0.4).abs() < 1e-12);
        let coronal = PlaneBasis::new(&g, SliceAxis::Coronal);
        assert!((coronal.pixel_area() - 1.5).abs() < 1e-12);
        let p = coronal.to_plane(2.5, -1.25);
        let back = coronal.to_pixel(p);
        assert!((back[0] - 2.5).abs() < 1e-12 && (back[1] + 1.25).abs() < 1e-12);
    }

    #[test]
    fn sheared_grid_uses_the_true_angle() {
        let mut g = Geometry::new([2, 2, 2], [1.0, 1.0, 1.0], [0.0; 3]);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        g.direction = [[1.0, h, 0.0], [0.0, h, 0.0], [0.0, 0.0, 1.0]];
        let b = PlaneBasis::new(&g, SliceAxis::Axial);
        assert!((b.v[0] - h).abs() < 1e-12 && (b.v[1] - h).abs() < 1e-12);
        assert!((b.pixel_area() - h).abs() < 1e-12);
    }
}
