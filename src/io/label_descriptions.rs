//! ITK-SNAP label description files: the names, colours, opacity and visibility of a label
//! map's values, one line per label (`IDX R G B A VIS MSH "NAME"`, `#` comments). ITK-SNAP
//! reads and writes them (Segmentation > Import/Export Label Descriptions), so a mask saved here
//! keeps its label names and colours there and when it is opened here again.
//! Written by hand: the format is a few lines of text that no crate handles.

use super::atomic::AtomicFile;
use super::{FormatError, IoError, WithPath};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One label of a description file.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelDescription {
    /// The value in the label map.
    pub value: u16,
    pub color: [u8; 3],
    /// 0 (transparent) ..= 1 (opaque).
    pub opacity: f32,
    pub visible: bool,
    /// Shown as a surface in ITK-SNAP's 3D view.
    pub mesh_visible: bool,
    pub name: String,
}

/// Description files larger than this are not label tables (ITK-SNAP's has at most 65 536 lines
/// of well under 256 bytes each).
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Where the description file of a mask lives: beside it, the mask's name without its image
/// extension followed by `.label.txt` (`liver.nii.gz` -> `liver.label.txt`).
pub fn path_beside(mask: &Path) -> PathBuf {
    let name = mask.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let stem = [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".dcm"]
        .iter()
        .find(|ext| lower.ends_with(*ext))
        .map_or(name.as_str(), |ext| &name[..name.len() - ext.len()]);
    mask.with_file_name(format!("{stem}.label.txt"))
}

/// Reads a description file; the line of value 0 (ITK-SNAP's "Clear Label") is included.
pub fn read(path: &Path) -> Result<Vec<LabelDescription>, IoError> {
    let size = std::fs::metadata(path).at(path)?.len();
    if size > MAX_FILE_BYTES {
        return Err(IoError::new(path, FormatError::TooLarge(format!("{size} bytes is not a label description file"))));
    }
    let text = std::fs::read_to_string(path).at(path)?;
    parse(&text).at(path)
}

/// Parses the text of a description file.
pub fn parse(text: &str) -> Result<Vec<LabelDescription>, FormatError> {
    let mut labels: Vec<LabelDescription> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let label = parse_line(line).map_err(|what| FormatError::malformed(format!("line {}: {what}: {line:?}", n + 1)))?;
        if labels.iter().any(|l| l.value == label.value) {
            return Err(FormatError::malformed(format!("line {}: label {} is described twice", n + 1, label.value)));
        }
        labels.push(label);
    }
    Ok(labels)
}

fn parse_line(line: &str) -> Result<LabelDescription, &'static str> {
    let (fields, name) = match line.find('"') {
        Some(open) => {
            let close = line.rfind('"').filter(|&c| c > open).ok_or("the name's closing quote is missing")?;
            (&line[..open], line[open + 1..close].to_string())
        }
        None => return Err("no quoted name"),
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let [value, r, g, b, a, vis, msh] = fields[..] else { return Err("expected IDX R G B A VIS MSH before the name") };
    let value: u16 = value.parse().map_err(|_| "the label value is not an integer in 0..=65535")?;
    let channel = |s: &str| s.parse::<u8>().map_err(|_| "a colour component is not an integer in 0..=255");
    let opacity: f32 = a.parse().map_err(|_| "the opacity is not a number")?;
    if !(0.0..=1.0).contains(&opacity) {
        return Err("the opacity is not within 0..1");
    }
    let flag = |s: &str| match s {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err("a visibility flag is not 0 or 1"),
    };
    Ok(LabelDescription { value, color: [channel(r)?, channel(g)?, channel(b)?], opacity, visible: flag(vis)?, mesh_visible: flag(msh)?, name })
}

/// Writes a description file (atomically), with ITK-SNAP's header and its "Clear Label" line
/// for value 0 when `labels` has none.
pub fn write(path: &Path, labels: &[LabelDescription]) -> Result<(), IoError> {
    let mut file = AtomicFile::create(path).at(path)?;
    let out = file.writer();
    let header = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# File format:",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields:",
        "#    IDX:   Zero-based index",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label transparency (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    MSH:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description",
        "################################################",
    ];
    let mut text = header.join("\n");
    text.push('\n');
    let clear = LabelDescription { value: 0, color: [0; 3], opacity: 0.0, visible: false, mesh_visible: false, name: "Clear Label".into() };
    let first = (!labels.iter().any(|l| l.value == 0)).then_some(&clear);
    for l in first.into_iter().chain(labels) {
        // A quote inside a name would end it early for every reader of the format.
        let name = l.name.replace('"', "'");
        text.push_str(&format!(
            "{:>5} {:>5} {:>4} {:>4} {:>8} {:>2} {:>2}    \"{name}\"\n",
            l.value,
            l.color[0],
            l.color[1],
            l.color[2],
            format_opacity(l.opacity),
            l.visible as u8,
            l.mesh_visible as u8
        ));
    }
    out.write_all(text.as_bytes()).at(path)?;
    file.commit().at(path)
}

/// The opacity as ITK-SNAP writes it: `1` and `0` plain, other values with two decimals.
fn format_opacity(a: f32) -> String {
    let a = a.clamp(0.0, 1.0);
    if a == 0.0 || a == 1.0 { format!("{a:.0}") } else { format!("{a:.2}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_itk_snaps_layout_is_read() {
        // The layout ITK-SNAP writes (its default table's first lines).
        let text = "################################################\n\
            # ITK-SnAP Label Description File\n\
            # IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL\n\
            ################################################\n\
            \x20   0     0    0    0        0  0  0    \"Clear Label\"\n\
            \x20   1   255    0    0        1  1  1    \"Label 1\"\n\
            \x20  12   102  205  170     0.50  0  1    \"left kidney \"cortex\"\"\n";
        let labels = parse(text).unwrap();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels[1], LabelDescription { value: 1, color: [255, 0, 0], opacity: 1.0, visible: true, mesh_visible: true, name: "Label 1".into() });
        assert_eq!(labels[2].value, 12);
        assert_eq!(labels[2].opacity, 0.5);
        assert!(!labels[2].visible && labels[2].mesh_visible);
        assert_eq!(labels[2].name, "left kidney \"cortex\"", "the name runs to the last quote");
    }

    #[test]
    fn written_files_read_back_with_itk_snaps_header_and_clear_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.label.txt");
        let labels = vec![
            LabelDescription { value: 1, color: [230, 60, 60], opacity: 1.0, visible: true, mesh_visible: true, name: "liver lesion".into() },
            LabelDescription { value: 7, color: [0, 128, 255], opacity: 1.0, visible: false, mesh_visible: true, name: "spleen".into() },
        ];
        write(&path, &labels).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("################################################\n# ITK-SnAP Label Description File\n"), "{text}");
        assert!(text.contains("    0     0    0    0        0  0  0    \"Clear Label\"\n"), "{text}");
        assert!(text.contains("    7     0  128  255        1  0  1    \"spleen\"\n"), "{text}");
        let back = read(&path).unwrap();
        assert_eq!(back[0].value, 0);
        assert_eq!(&back[1..], &labels[..]);
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, what) in [
            ("1 255 0 0 1 1 1 \"a\"\n1 0 0 0 1 1 1 \"b\"", "line 2: label 1 is described twice"),
            ("1 256 0 0 1 1 1 \"a\"", "line 1: a colour component"),
            ("1 255 0 0 1 1 \"a\"", "line 1: expected IDX R G B A VIS MSH"),
            ("1 255 0 0 1 1 1 \"a", "line 1: the name's closing quote"),
            ("70000 255 0 0 1 1 1 \"a\"", "line 1: the label value"),
            ("1 255 0 0 2 1 1 \"a\"", "line 1: the opacity is not within"),
            ("1 255 0 0 1 2 1 \"a\"", "line 1: a visibility flag"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_file_sits_beside_the_mask() {
        assert_eq!(path_beside(Path::new("/d/liver_mask.nii.gz")), Path::new("/d/liver_mask.label.txt"));
        assert_eq!(path_beside(Path::new("/d/a.b.NII")), Path::new("/d/a.b.label.txt"));
        assert_eq!(path_beside(Path::new("seg.mha")), Path::new("seg.label.txt"));
    }
}
