//! The volume model: a typed voxel buffer with exact geometry, plus what the file said about it.
//!
//! Everything downstream (viewer, MedSAM2 preprocessing, measurements, writers) works on a
//! `Volume`: dims/spacing/origin/direction in LPS mm, voxels in their stored type after
//! rescale (HU for CT), x fastest, 4D files with all timepoints one after another.

mod geometry;
mod resample;
mod slice;
mod voxel;
mod window;

pub use geometry::{Geometry, GeometryError, IDENTITY3, anatomical_letter, det3, invert3};
pub use resample::{Interpolation, MAX_OUTPUT_VOXELS, ResampleError, grid_for_spacing, resample};
pub use slice::{SliceAxis, extract_slice, insert_slice};
pub use voxel::{IntoVoxelBuffer, Rescale, Voxel, VoxelBuffer, VoxelType, min_max};
pub use window::{CT_PRESETS, Window, WindowPreset};

use crate::with_voxels;
use serde::Serialize;

/// The spatial fields of a NIfTI header exactly as stored, so a file written from a NIfTI
/// source carries the same qform and sform (kept with the volume; `io::nifti` reads and writes
/// them).
#[derive(Clone, Debug, PartialEq)]
pub struct NiftiTransform {
    pub qform_code: i32,
    pub sform_code: i32,
    /// quatern_b, quatern_c, quatern_d.
    pub quatern: [f64; 3],
    /// qoffset_x, qoffset_y, qoffset_z.
    pub qoffset: [f64; 3],
    /// pixdim[0..4]: qfac and the three voxel sizes.
    pub pixdim: [f64; 4],
    /// srow_x, srow_y, srow_z.
    pub srow: [[f64; 4]; 3],
    pub xyzt_units: i32,
    /// pixdim[4], the time step of 4D files.
    pub time_step: f64,
}

/// The file formats a volume can come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Nifti,
    Dicom,
    Metaimage,
    Npz,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Nifti => "nifti",
            SourceFormat::Dicom => "dicom",
            SourceFormat::Metaimage => "metaimage",
            SourceFormat::Npz => "npz",
        }
    }
}

/// What the source file said beyond geometry and voxels.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct VolumeMeta {
    pub format: Option<SourceFormat>,
    /// DICOM Modality (CT, MR, ...) when known; CT means values are Hounsfield units.
    pub modality: Option<String>,
    /// Series or file description, for display.
    pub description: Option<String>,
    /// The stored element type before rescaling.
    pub stored_type: Option<VoxelType>,
    /// The NIfTI qform/sform as read, so that writing back keeps them exactly.
    pub nifti_transform: Option<NiftiTransform>,
    /// Problems the reader worked around and the user must hear of (uneven slice spacing,
    /// missing slices, ...).
    pub warnings: Vec<String>,
}

/// A 3D (or 4D) image: voxels in their stored type, with exact geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub geometry: Geometry,
    /// Number of 3D frames (1 for a plain 3D image).
    pub timepoints: usize,
    /// `geometry.voxel_count() * timepoints` values, x fastest, then y, z, t.
    pub data: VoxelBuffer,
    pub meta: VolumeMeta,
}

/// Why voxels and geometry do not make a volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("the image holds {actual} values but {dims:?} x {timepoints} needs {expected}")]
    SizeMismatch { dims: [usize; 3], timepoints: usize, expected: usize, actual: usize },
    #[error(transparent)]
    Geometry(#[from] GeometryError),
}

impl Volume {
    /// A volume from a buffer holding `timepoints` frames of `geometry`.
    pub fn new(geometry: Geometry, timepoints: usize, data: VoxelBuffer, meta: VolumeMeta) -> Result<Self, VolumeError> {
        geometry.validate()?;
        let expected = geometry.voxel_count() * timepoints;
        if data.len() != expected || timepoints == 0 {
            return Err(VolumeError::SizeMismatch {
                dims: geometry.dims,
                timepoints,
                expected,
                actual: data.len(),
            });
        }
        Ok(Volume { geometry, timepoints, data, meta })
    }

    /// A label map (u8, 0 = background) with the geometry of `reference`.
    pub fn label_map_like(reference: &Geometry) -> Self {
        Volume {
            geometry: reference.clone(),
            timepoints: 1,
            data: VoxelBuffer::U8(vec![0; reference.voxel_count()]),
            meta: VolumeMeta::default(),
        }
    }

    pub fn voxel_type(&self) -> VoxelType {
        self.data.voxel_type()
    }

    /// Value at voxel (i, j, k) of frame `t`, or `None` outside the image.
    pub fn value_at(&self, ijk: [usize; 3], t: usize) -> Option<f64> {
        if !self.geometry.contains(ijk) || t >= self.timepoints {
            return None;
        }
        let index = self.geometry.linear_index(ijk) + t * self.geometry.voxel_count();
        Some(self.data.get_f64(index))
    }

    /// Smallest and largest value over all frames.
    pub fn min_max(&self) -> Option<(f64, f64)> {
        self.data.min_max()
    }

    /// Whether values are Hounsfield units (a CT scan).
    pub fn is_ct(&self) -> bool {
        self.meta.modality.as_deref() == Some("CT")
    }

    /// The first frame's voxels of type `T`, or `None` if the buffer holds another type.
    pub fn frame<T: Voxel>(&self, t: usize) -> Option<&[T]> {
        let n = self.geometry.voxel_count();
        let all: &[T] = with_voxels!(&self.data, v => typed_slice(v.as_slice()))?;
        all.get(t * n..(t + 1) * n)
    }

    /// Copies slice `index` along `axis` of frame 0 as f32 values (for display and statistics).
    pub fn slice_f32(&self, axis: SliceAxis, index: usize, out: &mut Vec<f32>) {
        let n = self.geometry.voxel_count();
        let dims = self.geometry.dims;
        with_voxels!(&self.data, v => {
            let mut tmp = Vec::new();
            extract_slice(&v[..n], dims, axis, index, &mut tmp);
            out.clear();
            out.extend(tmp.iter().map(|x| x.to_f32()));
        })
    }
}

/// Reinterprets a typed slice as `&[T]` when the element types match.
fn typed_slice<S: Voxel, T: Voxel>(v: &[S]) -> Option<&[T]> {
    (S::TYPE == T::TYPE).then(|| bytemuck::cast_slice(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_size() {
        let g = Geometry::new([2, 2, 2], [1.0; 3], [0.0; 3]);
        assert!(Volume::new(g.clone(), 1, VoxelBuffer::U8(vec![0; 7]), VolumeMeta::default()).is_err());
        let v = Volume::new(g, 2, VoxelBuffer::I16((0..16).collect()), VolumeMeta::default()).unwrap();
        assert_eq!(v.value_at([1, 1, 1], 1), Some(15.0));
        assert_eq!(v.value_at([2, 0, 0], 0), None);
        assert_eq!(v.frame::<i16>(1).unwrap()[0], 8);
        assert!(v.frame::<u8>(0).is_none());
    }
}
