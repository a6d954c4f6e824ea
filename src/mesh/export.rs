//! Mesh files: binary STL, Wavefront OBJ with normals, and binary little-endian PLY with
//! normals. Coordinates are LPS world millimetres; each file says so where its format has room
//! (the STL header, an OBJ comment, a PLY comment). Files are written through `AtomicFile`.

use super::{Mesh, face_normal, normalized};
use crate::io::atomic::AtomicFile;
use crate::io::{FormatError, IoError, WithPath};
use std::io::Write;
use std::path::Path;

/// The words every file carries about its coordinates.
const UNITS_NOTE: &str = "units mm, LPS world coordinates (x = patient left, y = posterior, z = superior)";

/// The mesh file formats, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshFormat {
    Stl,
    Obj,
    Ply,
}

impl MeshFormat {
    /// The format named by a path's extension (.stl, .obj, .ply; any case).
    pub fn from_path(path: &Path) -> Option<MeshFormat> {
        let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
        match ext.as_str() {
            "stl" => Some(MeshFormat::Stl),
            "obj" => Some(MeshFormat::Obj),
            "ply" => Some(MeshFormat::Ply),
            _ => None,
        }
    }
}

/// Writes `mesh` to `path` in the format its extension names, replacing the file atomically.
pub fn write_mesh(path: &Path, mesh: &Mesh) -> Result<(), IoError> {
    let format = MeshFormat::from_path(path)
        .ok_or_else(|| IoError::new(path, FormatError::unsupported("mesh files must end in .stl, .obj or .ply")))?;
    let mut file = AtomicFile::create(path).at(path)?;
    match format {
        MeshFormat::Stl => write_stl(&mut file, mesh),
        MeshFormat::Obj => write_obj(&mut file, mesh),
        MeshFormat::Ply => write_ply(&mut file, mesh),
    }
    .at(path)?;
    file.commit().at(path)
}

/// Binary STL: an 80-byte header, the triangle count, then per triangle its unit normal, three
/// corners and a zero attribute word, all little-endian.
pub fn write_stl(out: &mut impl Write, mesh: &Mesh) -> std::io::Result<()> {
    let mut header = [b' '; 80];
    let text = format!("MedSAM Viewer mesh; {UNITS_NOTE}");
    let n = text.len().min(80);
    header[..n].copy_from_slice(&text.as_bytes()[..n]);
    out.write_all(&header)?;
    out.write_all(&(mesh.triangle_count() as u32).to_le_bytes())?;
    let mut record = [0u8; 50];
    for t in mesh.triangles() {
        let p = mesh.triangle_positions(t);
        let n = normalized(face_normal(p)).map(|c| c as f32);
        for (k, v) in std::iter::once(n).chain(p).enumerate() {
            for c in 0..3 {
                record[12 * k + 4 * c..12 * k + 4 * c + 4].copy_from_slice(&v[c].to_le_bytes());
            }
        }
        out.write_all(&record)?;
    }
    Ok(())
}

/// Wavefront OBJ: `v` and `vn` lines, faces `f a//a b//b c//c` (1-based).
pub fn write_obj(out: &mut impl Write, mesh: &Mesh) -> std::io::Result<()> {
    writeln!(out, "# MedSAM Viewer mesh")?;
    writeln!(out, "# {UNITS_NOTE}")?;
    writeln!(out, "# {} vertices, {} triangles", mesh.vertex_count(), mesh.triangle_count())?;
    for p in &mesh.positions {
        writeln!(out, "v {} {} {}", p[0], p[1], p[2])?;
    }
    for n in &mesh.normals {
        writeln!(out, "vn {} {} {}", n[0], n[1], n[2])?;
    }
    for t in mesh.triangles() {
        let [a, b, c] = t.map(|i| i + 1);
        writeln!(out, "f {a}//{a} {b}//{b} {c}//{c}")?;
    }
    Ok(())
}

/// PLY, binary little endian: vertices with x y z nx ny nz (float), faces as a uchar count and
/// uint indices.
pub fn write_ply(out: &mut impl Write, mesh: &Mesh) -> std::io::Result<()> {
    write!(
        out,
        "ply\nformat binary_little_endian 1.0\ncomment MedSAM Viewer mesh\ncomment {UNITS_NOTE}\n\
         element vertex {}\nproperty float x\nproperty float y\nproperty float z\n\
         property float nx\nproperty float ny\nproperty float nz\n\
         element face {}\nproperty list uchar uint vertex_indices\nend_header\n",
        mesh.vertex_count(),
        mesh.triangle_count()
    )?;
    let mut record = [0u8; 24];
    for (p, n) in mesh.positions.iter().zip(&mesh.normals) {
        for (k, v) in p.iter().chain(n).enumerate() {
            record[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
        }
        out.write_all(&record)?;
    }
    let mut face = [3u8; 13];
    for t in mesh.triangles() {
        for (k, i) in t.iter().enumerate() {
            face[1 + 4 * k..5 + 4 * k].copy_from_slice(&i.to_le_bytes());
        }
        out.write_all(&face)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triangle() -> Mesh {
        Mesh {
            positions: vec![[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 2.0, -1.0]],
            normals: vec![[0.0, 0.0, 1.0]; 3],
            indices: vec![0, 1, 2],
        }
    }

    #[test]
    fn stl_layout() {
        let mut buf = Vec::new();
        write_stl(&mut buf, &triangle()).unwrap();
        assert_eq!(buf.len(), 84 + 50);
        assert!(!buf.starts_with(b"solid"), "a binary STL must not look like ASCII STL");
        assert_eq!(u32::from_le_bytes(buf[80..84].try_into().unwrap()), 1);
        let f = |o: usize| f32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
        assert_eq!([f(84 + 12 + 12), f(84 + 12 + 16)], [1.5, 0.0]);
    }

    #[test]
    fn obj_and_ply_headers() {
        let mut obj = Vec::new();
        write_obj(&mut obj, &triangle()).unwrap();
        let text = String::from_utf8(obj).unwrap();
        assert!(text.contains("v 1.5 0 0\n") && text.contains("f 1//1 2//2 3//3\n"));
        let mut ply = Vec::new();
        write_ply(&mut ply, &triangle()).unwrap();
        let end = ply.windows(11).position(|w| w == b"end_header\n").unwrap() + 11;
        assert_eq!(ply.len() - end, 3 * 24 + 13);
    }

    #[test]
    fn unknown_extensions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_mesh(&dir.path().join("m.vtk"), &triangle()).is_err());
        assert_eq!(MeshFormat::from_path(Path::new("A.PLY")), Some(MeshFormat::Ply));
    }
}
