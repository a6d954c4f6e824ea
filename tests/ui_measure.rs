//! The statistics window and the classical tools driven through the real viewer (egui_kittest,
//! wgpu): measurements of a DeepLesion lesion crop shown as `measure()` computes them, export
//! equal to the `stats` command's CSV, the change since a prior mask, a refused prior on another
//! grid; the lung mask, box threshold and region growing on a synthetic chest as undo steps that
//! spare locked labels. The panel with its plots is kept as a snapshot in tests/snapshots.

mod common;

use common::{click, drag, open_viewer, pane_centre, wait_until};
use egui::{Modifiers, PointerButton, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use medsam_viewer::app::classic_tools::box_of_prompts;
use medsam_viewer::app::document::Document;
use medsam_viewer::app::stats_panel::StatsPanel;
use medsam_viewer::app::tools::Tool;
use medsam_viewer::app::ViewerApp;
use medsam_viewer::classic::lung_mask::{LungMaskOptions, lung_mask};
use medsam_viewer::classic::region_grow::region_grow;
use medsam_viewer::classic::threshold::threshold_in_box;
use medsam_viewer::classic::{Connectivity, Range};
use medsam_viewer::io::{self, OpenOptions, nifti};
use medsam_viewer::measure::{LabelMeasurements, MeasureOptions, measure};
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use std::path::{Path, PathBuf};
use std::process::Command;

const LESION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/data/ct-lesion/CT_Lesion_000001_02_01_008-023");

fn lesion_image() -> PathBuf {
    PathBuf::from(format!("{LESION}_img.nii.gz"))
}

fn lesion_mask() -> PathBuf {
    PathBuf::from(format!("{LESION}_gt.nii.gz"))
}

/// `measure()` of label 1 of `mask` over the lesion image, outside the app.
fn measured(mask: &Path) -> LabelMeasurements {
    let image = io::open(&lesion_image(), &OpenOptions::default()).unwrap();
    let mask = io::open(mask, &OpenOptions::default()).unwrap();
    measure(&image, &mask, None, &MeasureOptions::default()).unwrap().labels.remove(0)
}

/// The lesion's mask shrunk by one pixel in every axial slice (a smaller "prior" lesion), written
/// as a label map with the image's geometry.
fn write_prior(path: &Path) {
    let mut mask = io::open(&lesion_mask(), &OpenOptions::default()).unwrap();
    let [nx, ny, nz] = mask.geometry.dims;
    let VoxelBuffer::U8(values) = &mask.data else { panic!("the lesion mask is u8") };
    let inside = |i: usize, j: usize, k: usize| values[i + nx * (j + ny * k)] != 0;
    let mut shrunk = vec![0u8; values.len()];
    for k in 0..nz {
        for j in 1..ny - 1 {
            for i in 1..nx - 1 {
                if inside(i, j, k) && inside(i - 1, j, k) && inside(i + 1, j, k) && inside(i, j - 1, k) && inside(i, j + 1, k) {
                    shrunk[i + nx * (j + ny * k)] = 1;
                }
            }
        }
    }
    mask.data = VoxelBuffer::U8(shrunk);
    nifti::write(path, &mask, nifti::NiftiKind::LabelMap).unwrap();
}

fn percent(before: f64, after: f64) -> f64 {
    (after - before) / before * 100.0
}

#[test]
fn statistics_window_measures_exports_and_compares_with_a_prior() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = open_viewer(dir.path(), Some(lesion_image()));
    harness.state_mut().open_mask(&lesion_mask());
    harness.run_steps(2);
    let expected = measured(&lesion_mask());
    // The figures recorded with the fixture (nibabel / numpy).
    assert_eq!(expected.voxels, 11697);
    assert!((expected.volume_ml - 5.783037321379773).abs() < 1e-9);

    harness.get_by_label("Statistics").click_accesskit();
    harness.run_steps(2);
    assert!(harness.state().stats.open, "the button opens the window");
    wait_until(&mut harness, |app| app.stats.is_current(app.doc.as_ref().unwrap()));
    assert_eq!(harness.state().stats.stats.as_ref().unwrap().label(1), Some(&expected), "the app measures what measure() measures");
    harness.get_by_label(&format!("{:.3} mL", expected.volume_ml));
    harness.get_by_label(&expected.voxels.to_string());
    harness.get_by_label(&format!("{:.1} mm²", expected.surface_area_mm2));
    harness.get_by_label(&format!("{:.1} mm", expected.longest_diameter_mm));
    let i = expected.intensity.unwrap();
    harness.get_by_label(&format!("{:.1} ± {:.1}", i.mean, i.sd));

    // The export is the stats command's CSV, byte for byte.
    let csv = dir.path().join("stats.csv");
    harness.state().stats.export(&csv).unwrap();
    let cli = Command::new(env!("CARGO_BIN_EXE_medsam-viewer"))
        .args(["stats", "--image", lesion_image().to_str().unwrap(), "--mask", lesion_mask().to_str().unwrap(), "--csv"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), String::from_utf8(cli.stdout).unwrap());
    let json = dir.path().join("stats.json");
    harness.state().stats.export(&json).unwrap();
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["labels"][0]["voxels"], 11697);

    // A smaller prior lesion: the change in volume and longest diameter, absolute and in %.
    let prior_path = dir.path().join("prior_mask.nii.gz");
    write_prior(&prior_path);
    let prior = measured(&prior_path);
    assert!(prior.voxels < expected.voxels && prior.voxels > 0);
    {
        let app = harness.state_mut();
        let doc = app.doc.as_ref().unwrap();
        app.stats.open_prior(doc, &prior_path);
    }
    wait_until(&mut harness, |app| !app.stats.is_busy());
    assert!(harness.state().stats.prior.is_some(), "{:?}", harness.state().stats.notice);
    harness.get_by_label("Prior: prior_mask.nii.gz");
    harness.get_by_label(&format!("{:.3} / {:.3} mL", prior.volume_ml, expected.volume_ml));
    let dv = expected.volume_ml - prior.volume_ml;
    harness.get_by_label(&format!("{dv:+.3} mL ({:+.1} %)", percent(prior.volume_ml, expected.volume_ml)));
    let dd = expected.longest_diameter_mm - prior.longest_diameter_mm;
    harness.get_by_label(&format!("{dd:+.1} mm ({:+.1} %)", percent(prior.longest_diameter_mm, expected.longest_diameter_mm)));

    // A mask on another grid is refused with a clear message, and the comparison stays.
    let other = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/data/nifti/dtype_uint8.nii"));
    {
        let app = harness.state_mut();
        let doc = app.doc.as_ref().unwrap();
        app.stats.open_prior(doc, &other);
    }
    wait_until(&mut harness, |app| !app.stats.is_busy());
    let notice = harness.state().stats.notice.clone().unwrap_or_default();
    assert!(notice.contains("Cannot use dtype_uint8.nii as the prior mask") && notice.contains("dims"), "{notice}");
    harness.get_by_label(&notice);
    assert!(harness.state().stats.prior.is_some());

    // Editing the mask measures it again: undoing the opened mask leaves label 1 empty.
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.run_steps(2);
    wait_until(&mut harness, |app| app.stats.is_current(app.doc.as_ref().unwrap()));
    harness.get_by_label("Label 1 has no voxels.");

    // The S key closes the window.
    harness.key_press(egui::Key::S);
    harness.run_steps(2);
    assert!(!harness.state().stats.open);
}

/// The panel on its own (the part of the window that is snapshotted).
struct PanelState {
    panel: StatsPanel,
    doc: Document,
}

#[test]
fn statistics_panel_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let prior_path = dir.path().join("prior_mask.nii.gz");
    write_prior(&prior_path);
    let mut doc = Document::open(&lesion_image(), None, None).unwrap();
    doc.open_mask(&lesion_mask()).unwrap();
    let mut panel = StatsPanel::default();
    panel.open = true;
    panel.update(&doc);
    panel.open_prior(&doc, &prior_path);
    let mut harness = Harness::builder()
        .with_size(Vec2::new(460.0, 860.0))
        .wgpu()
        .build_ui_state(|ui, state: &mut PanelState| state.panel.ui(ui, &state.doc, 1), PanelState { panel, doc });
    wait_until(&mut harness, |s| s.panel.is_current(&s.doc) && s.panel.prior.is_some() && !s.panel.is_busy());
    harness.snapshot("stats_panel");
}

/// A synthetic chest CT: 64 x 64 x 24 voxels of 5 x 5 x 10 mm around the world origin, air
/// −1000 HU, a body ellipse of 40 HU, and two lung ellipsoids of −800 HU at x = ±60 mm that end
/// inside the volume. Returns the image and the voxels of the lungs.
fn chest() -> (Volume, Vec<bool>) {
    let dims = [64, 64, 24];
    let spacing = [5.0, 5.0, 10.0];
    let origin = [0, 1, 2].map(|a| -((dims[a] - 1) as f64) / 2.0 * spacing[a]);
    let g = Geometry::new(dims, spacing, origin);
    let mut values = vec![-1000i16; g.voxel_count()];
    let mut lungs = vec![false; g.voxel_count()];
    let sq = |x: f64| x * x;
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let [x, y, z] = g.voxel_to_world([i as f64, j as f64, k as f64]);
                let p = g.linear_index([i, j, k]);
                if sq(x / 140.0) + sq(y / 100.0) <= 1.0 {
                    values[p] = 40;
                }
                if [-60.0, 60.0].iter().any(|cx| sq((x - cx) / 40.0) + sq((y + 5.0) / 55.0) + sq(z / 90.0) <= 1.0) {
                    values[p] = -800;
                    lungs[p] = true;
                }
            }
        }
    }
    let meta = VolumeMeta { modality: Some("CT".into()), ..VolumeMeta::default() };
    (Volume::new(g, 1, VoxelBuffer::I16(values), meta).unwrap(), lungs)
}

/// The viewer with the chest phantom open.
fn chest_viewer(root: &Path) -> (Harness<'static, ViewerApp>, Volume, Vec<bool>) {
    let (image, lungs) = chest();
    let mut harness = open_viewer(root, None);
    harness.state_mut().install_document(Document::new(image.clone(), PathBuf::from("chest_phantom.nii.gz"), None));
    harness.run_steps(2);
    (harness, image, lungs)
}

fn voxels_of(app: &ViewerApp, label: u8) -> Vec<usize> {
    let labels = &app.doc.as_ref().unwrap().labels;
    (0..labels.len()).filter(|&p| labels[p] == label).collect()
}

fn wait_for_tool(harness: &mut Harness<'static, ViewerApp>) {
    harness.run_steps(1);
    wait_until(harness, |app| !app.classic.is_running());
}

#[test]
fn lung_mask_labels_both_lungs_spares_locked_voxels_and_undoes_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let (mut harness, image, lungs) = chest_viewer(dir.path());
    let truth: Vec<usize> = (0..lungs.len()).filter(|&p| lungs[p]).collect();
    assert_eq!(lung_mask(&image, &LungMaskOptions::default()).unwrap().components.len(), 2, "the phantom has two lungs");
    // Label 2, locked, on a few lung voxels.
    let locked: Vec<usize> = truth.iter().step_by(97).copied().collect();
    {
        let app = harness.state_mut();
        let doc = app.doc.as_mut().unwrap();
        assert_eq!(doc.label_table.add(), Some(2));
        let edit = doc.paint_edit(locked.iter().copied(), 2, "Brush");
        doc.apply(edit).unwrap();
        doc.label_table.get_mut(2).unwrap().locked = true;
        app.active_label = 1;
    }

    // The button sits low in the side panel: scroll the panel down with the wheel, then click it.
    let panel = egui::pos2(100.0, 400.0);
    harness.event(egui::Event::PointerMoved(panel));
    harness.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: Vec2::new(0.0, -2000.0),
        modifiers: Modifiers::NONE,
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
    });
    harness.run_steps(10);
    harness.get_by_label("Lung mask").click();
    wait_for_tool(&mut harness);
    let labelled = voxels_of(harness.state(), 1);
    let expected: Vec<usize> = truth.iter().copied().filter(|p| !locked.contains(p)).collect();
    assert_eq!(labelled.len(), expected.len(), "{}", harness.state().status);
    assert!(labelled == expected, "label 1 = both lungs except the locked voxels");
    assert_eq!(voxels_of(harness.state(), 2), locked, "locked voxels keep their label");
    assert_eq!(harness.state().doc.as_ref().unwrap().history.undo_description(), Some("Lung mask"));

    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.run_steps(2);
    assert!(voxels_of(harness.state(), 1).is_empty(), "one undo takes the whole mask away");
    assert_eq!(voxels_of(harness.state(), 2), locked);

    // U runs it again, dilated by 10 mm: larger than the lungs, and still one undo step.
    harness.state_mut().classic.lung_dilation_mm = 10.0;
    harness.key_press(egui::Key::U);
    wait_for_tool(&mut harness);
    let dilated = voxels_of(harness.state(), 1).len();
    assert!(dilated > truth.len() + truth.len() / 5, "{dilated} voxels dilated vs {} lung voxels", truth.len());
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.run_steps(2);
    assert!(voxels_of(harness.state(), 1).is_empty());
}

#[test]
fn box_threshold_and_region_growing_from_the_views() {
    let dir = tempfile::tempdir().unwrap();
    let (mut harness, image, _) = chest_viewer(dir.path());
    let axial = pane_centre(&harness, "Axial view");

    // A box drawn with the Box tool over the right half of the axial view, then T.
    harness.key_press(Tool::Box.key());
    harness.run_steps(1);
    assert_eq!(harness.state().tool, Tool::Box);
    drag(&mut harness, axial - Vec2::new(120.0, 80.0), axial + Vec2::new(-10.0, 80.0), PointerButton::Primary);
    harness.state_mut().classic.threshold = [-900.0, -700.0];
    harness.key_press(egui::Key::T);
    wait_for_tool(&mut harness);
    let bounds = box_of_prompts(&harness.state().prompts, &image.geometry, 0).expect("a box was drawn");
    let expected = threshold_in_box(&image, bounds, Range::new(-900.0, -700.0).unwrap()).unwrap();
    let labelled = voxels_of(harness.state(), 1);
    assert!(labelled.len() > 50, "the box holds lung voxels ({} labelled)", labelled.len());
    assert_eq!(labelled, (0..expected.len()).filter(|&p| expected[p]).collect::<Vec<_>>());
    assert_eq!(bounds.lo[2], bounds.hi[2], "one slice");

    // The Grow tool: a click on the body between the lungs grows the soft tissue, label 2.
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.run_steps(1);
    {
        let app = harness.state_mut();
        assert_eq!(app.doc.as_mut().unwrap().label_table.add(), Some(2));
        app.active_label = 2;
        app.classic.grow = [0.0, 100.0];
    }
    harness.key_press(Tool::RegionGrow.key());
    harness.run_steps(1);
    assert_eq!(harness.state().tool, Tool::RegionGrow);
    click(&mut harness, axial);
    wait_for_tool(&mut harness);
    let grown = voxels_of(harness.state(), 2);
    assert!(!grown.is_empty(), "the click grew a region: {}", harness.state().status);
    let g = &image.geometry;
    let [nx, ny, _] = g.dims;
    let seed = [grown[0] % nx, (grown[0] / nx) % ny, grown[0] / (nx * ny)];
    let region = region_grow(&image, seed, Range::new(0.0, 100.0).unwrap(), Connectivity::Six).unwrap();
    assert_eq!(grown, (0..region.len()).filter(|&p| region[p]).collect::<Vec<_>>(), "the region connected to the seed");
    let values = image.frame::<i16>(0).unwrap();
    assert!(grown.iter().all(|&p| values[p] == 40), "soft tissue only");
}
