//! `Geometry`: where every voxel of a volume sits in the patient, in LPS millimetres.
//!
//! world = origin + D · diag(spacing) · (i, j, k), with D the 3x3 direction matrix stored
//! row-major exactly as SimpleITK's `GetDirection()` reports it: column c of D is the LPS unit
//! vector of index axis c. NIfTI's RAS affines are converted at the edges (`affine_ras`).

use serde::Serialize;

/// Grid size, voxel spacing and placement of a 3D image in LPS world space (mm).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Geometry {
    /// Number of voxels along i, j, k (x fastest in memory).
    pub dims: [usize; 3],
    /// Distance between voxel centres along i, j, k in mm (always > 0).
    pub spacing: [f64; 3],
    /// LPS position of the centre of voxel (0, 0, 0) in mm.
    pub origin: [f64; 3],
    /// Direction cosines, row-major: `direction[r][c]` = LPS component r of index axis c.
    pub direction: [[f64; 3]; 3],
}

/// Why a set of numbers cannot describe a geometry.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GeometryError {
    #[error("voxel spacing {0:?} must be finite and greater than zero")]
    BadSpacing([f64; 3]),
    #[error("the direction matrix is singular or not finite")]
    SingularDirection,
    #[error("origin {0:?} is not finite")]
    BadOrigin([f64; 3]),
    #[error("the point {point:?} mm (LPS) is outside the image: it falls on voxel {index:?}, the grid is {dims:?}")]
    PointOutside { point: [f64; 3], index: [i64; 3], dims: [usize; 3] },
}

pub const IDENTITY3: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

impl Geometry {
    /// An axis-aligned geometry with unit direction.
    pub fn new(dims: [usize; 3], spacing: [f64; 3], origin: [f64; 3]) -> Self {
        Geometry { dims, spacing, origin, direction: IDENTITY3 }
    }

    /// Checks that spacing, origin and direction are usable (finite, positive, non-singular).
    pub fn validate(&self) -> Result<(), GeometryError> {
        if self.spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(GeometryError::BadSpacing(self.spacing));
        }
        if self.origin.iter().any(|o| !o.is_finite()) {
            return Err(GeometryError::BadOrigin(self.origin));
        }
        let det = det3(&self.direction);
        if !det.is_finite() || det.abs() < 1e-6 {
            return Err(GeometryError::SingularDirection);
        }
        Ok(())
    }

    /// Total number of voxels of one 3D frame.
    pub fn voxel_count(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    /// Volume of one voxel in mm³.
    pub fn voxel_volume_mm3(&self) -> f64 {
        self.spacing[0] * self.spacing[1] * self.spacing[2]
    }

    /// Linear index of voxel (i, j, k) in memory (i fastest).
    pub fn linear_index(&self, [i, j, k]: [usize; 3]) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// Whether (i, j, k) lies inside the grid.
    pub fn contains(&self, [i, j, k]: [usize; 3]) -> bool {
        i < self.dims[0] && j < self.dims[1] && k < self.dims[2]
    }

    /// The direction as 9 numbers, row-major (as SimpleITK's `GetDirection()`).
    pub fn direction_row_major(&self) -> [f64; 9] {
        let d = &self.direction;
        // `+ 0.0` prints -0.0 as 0.0.
        [d[0][0], d[0][1], d[0][2], d[1][0], d[1][1], d[1][2], d[2][0], d[2][1], d[2][2]].map(|x| x + 0.0)
    }

    /// Builds a direction matrix from 9 row-major numbers.
    pub fn direction_from_row_major(v: [f64; 9]) -> [[f64; 3]; 3] {
        [[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]]
    }

    /// LPS unit vector of index axis `axis` (column `axis` of the direction matrix).
    pub fn axis_direction(&self, axis: usize) -> [f64; 3] {
        [self.direction[0][axis], self.direction[1][axis], self.direction[2][axis]]
    }

    /// World position (LPS mm) of a continuous voxel index.
    pub fn voxel_to_world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let scaled = [ijk[0] * self.spacing[0], ijk[1] * self.spacing[1], ijk[2] * self.spacing[2]];
        let mut out = self.origin;
        for (r, o) in out.iter_mut().enumerate() {
            *o += (0..3).map(|c| self.direction[r][c] * scaled[c]).sum::<f64>();
        }
        out
    }

    /// Continuous voxel index of a world position (LPS mm).
    pub fn world_to_voxel(&self, p: [f64; 3]) -> [f64; 3] {
        let d = [p[0] - self.origin[0], p[1] - self.origin[1], p[2] - self.origin[2]];
        let inv = invert3(&self.direction).unwrap_or(IDENTITY3);
        let mut out = [0.0; 3];
        for (c, o) in out.iter_mut().enumerate() {
            *o = (0..3).map(|r| inv[c][r] * d[r]).sum::<f64>() / self.spacing[c];
        }
        out
    }

    /// The voxel whose centre is nearest to world point `p` (LPS mm), rounded as ITK's
    /// `TransformPhysicalPointToIndex` rounds (halves up, per axis); an error when that voxel
    /// lies outside the grid or `p` is not finite.
    pub fn world_to_index(&self, p: [f64; 3]) -> Result<[usize; 3], GeometryError> {
        let index = self.world_to_voxel(p).map(|x| (x + 0.5).floor());
        if index.iter().zip(self.dims).all(|(&x, n)| x >= 0.0 && x < n as f64) {
            Ok(index.map(|x| x as usize))
        } else {
            Err(GeometryError::PointOutside { point: p, index: index.map(|x| x as i64), dims: self.dims })
        }
    }

    /// The affine map from voxel indices of `other` to continuous voxel indices of `self`
    /// through world space: `index_self = matrix · index_other + offset`.
    pub fn index_map_from(&self, other: &Geometry) -> ([[f64; 3]; 3], [f64; 3]) {
        let offset = self.world_to_voxel(other.origin);
        let mut matrix = [[0.0; 3]; 3];
        for c in 0..3 {
            let mut unit = [0.0; 3];
            unit[c] = 1.0;
            let column = self.world_to_voxel(other.voxel_to_world(unit));
            for r in 0..3 {
                matrix[r][c] = column[r] - offset[r];
            }
        }
        (matrix, offset)
    }

    /// 4x4 voxel-to-world matrix in LPS mm.
    pub fn affine_lps(&self) -> [[f64; 4]; 4] {
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = self.direction[r][c] * self.spacing[c];
            }
            m[r][3] = self.origin[r];
        }
        m[3][3] = 1.0;
        m
    }

    /// 4x4 voxel-to-world matrix in RAS mm (NIfTI / nibabel convention).
    pub fn affine_ras(&self) -> [[f64; 4]; 4] {
        let mut m = self.affine_lps();
        for c in 0..4 {
            m[0][c] = -m[0][c];
            m[1][c] = -m[1][c];
        }
        m
    }

    /// Decomposes a voxel-to-world LPS affine into spacing (column norms), direction and origin.
    pub fn from_affine_lps(dims: [usize; 3], m: &[[f64; 4]; 4]) -> Result<Self, GeometryError> {
        let mut spacing = [0.0; 3];
        let mut direction = [[0.0; 3]; 3];
        for c in 0..3 {
            let norm = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
            spacing[c] = norm;
            for r in 0..3 {
                // `+ 0.0` turns -0.0 into 0.0 so printed directions read cleanly.
                direction[r][c] = if norm > 0.0 { m[r][c] / norm + 0.0 } else { 0.0 };
            }
        }
        let g = Geometry { dims, spacing, origin: [m[0][3], m[1][3], m[2][3]], direction };
        g.validate()?;
        Ok(g)
    }

    /// Like `from_affine_lps`, for a RAS affine.
    pub fn from_affine_ras(dims: [usize; 3], m: &[[f64; 4]; 4]) -> Result<Self, GeometryError> {
        let mut lps = *m;
        for c in 0..4 {
            lps[0][c] = -lps[0][c];
            lps[1][c] = -lps[1][c];
        }
        Self::from_affine_lps(dims, &lps)
    }

    /// Three letters naming the anatomical direction each index axis points to, in LPS terms
    /// ("LPS" for an identity direction), as ITK's orientation codes read the columns.
    pub fn orientation_letters(&self) -> String {
        (0..3).map(|c| anatomical_letter(self.axis_direction(c))).collect()
    }

    /// The index axis whose direction is closest to world axis `world_axis` (0 = L-R, 1 = A-P,
    /// 2 = S-I): the index axis that a sagittal, coronal or axial view looks along.
    pub fn index_axis_closest_to(&self, world_axis: usize) -> usize {
        let mut best = 0;
        for c in 1..3 {
            if self.direction[world_axis][c].abs() > self.direction[world_axis][best].abs() {
                best = c;
            }
        }
        best
    }
}

/// The letter of the patient direction a unit vector points to most (L/R, P/A, S/I).
pub fn anatomical_letter(v: [f64; 3]) -> char {
    let (axis, _) = v
        .iter()
        .enumerate()
        .fold((0, 0.0f64), |acc, (i, x)| if x.abs() > acc.1 { (i, x.abs()) } else { acc });
    let positive = v[axis] >= 0.0;
    match (axis, positive) {
        (0, true) => 'L',
        (0, false) => 'R',
        (1, true) => 'P',
        (1, false) => 'A',
        (2, true) => 'S',
        _ => 'I',
    }
}

/// Determinant of a 3x3 matrix.
pub fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Inverse of a 3x3 matrix, `None` when singular.
pub fn invert3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = det3(m);
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let inv_det = 1.0 / det;
    let mut out = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            out[r][c] = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) * inv_det;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesion_geometry() -> Geometry {
        // The DeepLesion crops: i toward posterior, j toward left, k toward inferior.
        Geometry {
            dims: [512, 512, 16],
            spacing: [0.314453, 0.314453, 5.0],
            origin: [0.0, 0.0, 0.0],
            direction: Geometry::direction_from_row_major([0., 1., 0., 1., 0., 0., 0., 0., -1.]),
        }
    }

    #[test]
    fn voxel_world_round_trip() {
        let g = lesion_geometry();
        let p = g.voxel_to_world([511.0, 511.0, 15.0]);
        assert!((p[0] - 511.0 * 0.314453).abs() < 1e-9);
        assert!((p[2] + 75.0).abs() < 1e-9);
        let back = g.world_to_voxel(p);
        for (a, b) in back.iter().zip([511.0, 511.0, 15.0]) {
            assert!((a - b).abs() < 1e-9);
        }
    }

    #[test]
    fn affine_round_trip_and_ras_flip() {
        let g = lesion_geometry();
        let ras = g.affine_ras();
        assert!((ras[0][1] + 0.314453).abs() < 1e-12, "x row negated in RAS");
        let back = Geometry::from_affine_ras(g.dims, &ras).unwrap();
        assert_eq!(back.dims, g.dims);
        for c in 0..3 {
            assert!((back.spacing[c] - g.spacing[c]).abs() < 1e-12);
            for r in 0..3 {
                assert!((back.direction[r][c] - g.direction[r][c]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn orientation_and_view_axes() {
        let g = lesion_geometry();
        assert_eq!(g.orientation_letters(), "PLI");
        assert_eq!(g.index_axis_closest_to(2), 2);
        assert_eq!(g.index_axis_closest_to(0), 1);
        let id = Geometry::new([2, 2, 2], [1.0; 3], [0.0; 3]);
        assert_eq!(id.orientation_letters(), "LPS");
    }

    #[test]
    fn validation_rejects_bad_numbers() {
        let mut g = lesion_geometry();
        g.spacing[1] = 0.0;
        assert!(matches!(g.validate(), Err(GeometryError::BadSpacing(_))));
        let mut g = lesion_geometry();
        g.direction[2] = [0.0; 3];
        assert_eq!(g.validate(), Err(GeometryError::SingularDirection));
    }

    #[test]
    fn world_points_round_to_the_nearest_voxel_half_up() {
        let g = lesion_geometry();
        // i runs along +y (posterior), j along +x (left), k along -z.
        let p = g.voxel_to_world([3.5, 7.49, 2.2]);
        assert_eq!(g.world_to_index(p), Ok([4, 7, 2]));
        let edge = g.voxel_to_world([-0.5, 0.0, 15.49]);
        assert_eq!(g.world_to_index(edge), Ok([0, 0, 15]));
        let outside = g.voxel_to_world([-0.51, 0.0, 0.0]);
        assert!(matches!(g.world_to_index(outside), Err(GeometryError::PointOutside { index: [-1, 0, 0], .. })));
        assert!(g.world_to_index([f64::NAN, 0.0, 0.0]).is_err());
    }

    #[test]
    fn index_maps_compose_two_grids() {
        let a = lesion_geometry();
        let b = Geometry { spacing: [1.0, 2.0, 2.5], origin: [3.0, -4.0, 10.0], ..Geometry::new([10, 10, 10], [1.0; 3], [0.0; 3]) };
        let (m, t) = a.index_map_from(&b);
        let idx = [2.0, 5.0, 7.0];
        let want = a.world_to_voxel(b.voxel_to_world(idx));
        for r in 0..3 {
            let got = t[r] + (0..3).map(|c| m[r][c] * idx[c]).sum::<f64>();
            assert!((got - want[r]).abs() < 1e-9);
        }
    }

    #[test]
    fn inverse_is_inverse() {
        let m = [[0.2, 1.0, 0.3], [1.0, 0.1, 0.0], [0.0, 0.4, -1.0]];
        let inv = invert3(&m).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                let v: f64 = (0..3).map(|k| m[r][k] * inv[k][c]).sum();
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}
