//! The measurement report as text for other programs: CSV with one row per label, and JSON
//! (`{"axis": .., "labels": [{"label": 1, "voxels": N, "volume_ml": .., ..}]}`). The `stats`
//! command and the viewer's statistics panel both write through these two functions, so a file
//! exported from the viewer matches the command's output column for column.

use super::MeasureReport;

/// The CSV header (without the agreement columns).
const CSV_COLUMNS: &str = "label,voxels,volume_ml,surface_area_mm2,voxel_face_area_mm2,\
bbox_i0,bbox_j0,bbox_k0,bbox_i1,bbox_j1,bbox_k1,\
bbox_lps_min_x,bbox_lps_min_y,bbox_lps_min_z,bbox_lps_max_x,bbox_lps_max_y,bbox_lps_max_z,\
centroid_x,centroid_y,centroid_z,mean,sd,min,max,median,\
longest_diameter_mm,perpendicular_diameter_mm,diameter_slice";

/// Columns added when the labels were compared with a reference mask.
const CSV_REFERENCE_COLUMNS: &str = ",dice,iou,hd95_mm,assd_mm";

/// An optional number as a CSV cell: empty when absent.
fn cell(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// One header line and one row per label; `with_reference` adds Dice, IoU, HD95 and ASSD.
pub fn to_csv(report: &MeasureReport, with_reference: bool) -> String {
    let mut out = String::from(CSV_COLUMNS);
    if with_reference {
        out += CSV_REFERENCE_COLUMNS;
    }
    out += "\n";
    for m in &report.labels {
        let mut row: Vec<String> = vec![m.label.to_string(), m.voxels.to_string(), m.volume_ml.to_string(), m.surface_area_mm2.to_string(), m.voxel_face_area_mm2.to_string()];
        row.extend(m.bbox_index.iter().flatten().map(|x| x.to_string()));
        row.extend(m.bbox_lps_mm.iter().flatten().map(|x| x.to_string()));
        row.extend(m.centroid_lps_mm.iter().map(|x| x.to_string()));
        let i = m.intensity;
        row.extend([i.map(|s| s.mean), i.map(|s| s.sd), i.map(|s| s.min), i.map(|s| s.max), i.map(|s| s.median)].map(cell));
        row.extend([m.longest_diameter_mm.to_string(), m.perpendicular_diameter_mm.to_string(), m.diameter_slice.to_string()]);
        if with_reference {
            let r = m.reference;
            row.extend([r.map(|r| r.dice), r.map(|r| r.iou), r.and_then(|r| r.hd95_mm), r.and_then(|r| r.assd_mm)].map(cell));
        }
        out += &row.join(",");
        out += "\n";
    }
    out
}

/// The whole report as a JSON value (every label with its per-slice profile).
pub fn to_json(report: &MeasureReport) -> serde_json::Value {
    // Every field is a number, string, array or struct of those: serialising cannot fail, and
    // non-finite numbers become null.
    serde_json::to_value(report).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{MeasureOptions, measure};
    use crate::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};

    fn report() -> MeasureReport {
        let g = Geometry::new([4, 4, 2], [1.0, 1.0, 2.0], [0.0; 3]);
        let image = Volume::new(g.clone(), 1, VoxelBuffer::I16((0..32).collect()), VolumeMeta::default()).unwrap();
        let mut labels = vec![0u8; 32];
        labels[5] = 1;
        labels[6] = 1;
        labels[21] = 2;
        let mask = Volume::new(g, 1, VoxelBuffer::U8(labels), VolumeMeta::default()).unwrap();
        measure(&image, &mask, None, &MeasureOptions::default()).unwrap()
    }

    #[test]
    fn csv_has_a_row_per_label_with_every_column() {
        let text = to_csv(&report(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let columns = lines[0].split(',').count();
        assert_eq!(columns, 28);
        assert!(lines[1..].iter().all(|l| l.split(',').count() == columns));
        assert!(lines[1].starts_with("1,2,0.004,"), "{}", lines[1]);
        assert!(lines[2].starts_with("2,1,0.002,"), "{}", lines[2]);
        let with = to_csv(&report(), true);
        assert!(with.lines().next().unwrap().ends_with(",dice,iou,hd95_mm,assd_mm"));
        assert_eq!(with.lines().nth(1).unwrap().split(',').count(), 32);
    }

    #[test]
    fn json_lists_the_labels() {
        let v = to_json(&report());
        assert_eq!(v["labels"][0]["label"], 1);
        assert_eq!(v["labels"][0]["voxels"], 2);
        assert_eq!(v["labels"][1]["label"], 2);
        assert!(v["labels"][0]["slices"].is_array());
    }
}
