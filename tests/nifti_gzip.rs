//! Large .nii.gz files through the whole reader: decoded in parallel (compressed data above the
//! 8 MB threshold, dynamic-Huffman blocks as nibabel's zlib writes them) to the same voxels the
//! `nifti` crate reads, and corrupt or cut files still reported with flate2's errors.

use medsam_viewer::io::{self, OpenOptions, nifti};
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use std::io::Write;
use std::path::Path;

/// A 512 x 512 x 40 int16 volume of noisy CT-like values (about 2:1 under gzip level 6).
fn ct_volume() -> Volume {
    let (nx, ny, nz) = (512, 512, 40);
    let mut s = 7u64;
    let data: Vec<i16> = (0..nx * ny * nz)
        .map(|n| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let (i, j) = ((n % nx) as i32 - 256, ((n / nx) % ny) as i32 - 256);
            let body = if i * i + j * j < 200 * 200 { 40 } else { -1000 };
            (body + ((s >> 58) as i32) - 32) as i16
        })
        .collect();
    Volume::new(Geometry::new([nx, ny, nz], [0.7, 0.7, 2.5], [0.0; 3]), 1, VoxelBuffer::I16(data), VolumeMeta::default()).unwrap()
}

/// Writes `volume` as .nii.gz at gzip level 6 (zlib-rs writes dynamic blocks at this level).
fn write_level6(volume: &Volume, path: &Path) {
    let mut e = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::new(6));
    e.write_all(&nifti::header_for(volume, nifti::NiftiKind::Image)).unwrap();
    e.write_all(volume.data.as_bytes()).unwrap();
    e.finish().unwrap();
}

#[test]
fn large_nii_gz_reads_the_same_voxels_as_the_nifti_crate() {
    let volume = ct_volume();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ct.nii.gz");
    write_level6(&volume, &path);
    let compressed = std::fs::metadata(&path).unwrap().len();
    assert!(compressed > 8 << 20, "{compressed} bytes: above the parallel threshold");
    let ours = io::open(&path, &OpenOptions::default()).unwrap();
    assert_eq!(ours.geometry.dims, [512, 512, 40]);
    let VoxelBuffer::I16(read) = &ours.data else { panic!("int16 stays int16: {:?}", ours.voxel_type()) };
    let VoxelBuffer::I16(written) = &volume.data else { unreachable!() };
    assert!(read == written, "voxels differ from what was written");
    use nifti_crate::{IntoNdArray, NiftiObject, ReaderOptions};
    let theirs = ReaderOptions::new().read_file(&path).unwrap().into_volume().into_ndarray::<i16>().unwrap();
    let theirs: Vec<i16> = theirs.t().iter().copied().collect();
    assert!(theirs == *read, "the nifti crate reads other voxels");
}

#[test]
fn corrupt_and_cut_large_files_keep_their_errors() {
    let volume = ct_volume();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.nii.gz");
    write_level6(&volume, &good);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.nii.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = io::open(&cut, &OpenOptions::default()).unwrap_err().to_string();
    assert!(e.contains("cut.nii.gz") && e.contains("truncated"), "{e}");
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n / 2] ^= 0x55;
    let bad = dir.path().join("bad.nii.gz");
    std::fs::write(&bad, &flipped).unwrap();
    let e = io::open(&bad, &OpenOptions::default()).unwrap_err().to_string();
    assert!(e.contains("bad.nii.gz") && e.contains("corrupt compressed data"), "{e}");
    let mut bad_crc = bytes;
    bad_crc[n - 8] ^= 1;
    std::fs::write(&bad, &bad_crc).unwrap();
    let e = io::open(&bad, &OpenOptions::default()).unwrap_err().to_string();
    assert!(e.contains("bad.nii.gz") && e.contains("corrupt compressed data"), "{e}");
}
