//! The viewer driven through its real widgets (egui_kittest + AccessKit) and rendered with wgpu
//! (Mesa's lavapipe in CI): open a volume, scroll, window/level, brush, undo/redo, save and
//! reload the mask. Snapshots are kept in tests/snapshots (`UPDATE_SNAPSHOTS=1` rewrites them).

mod common;

use common::{drag, open_viewer, pane_centre, wait_until};
use egui::{Event, Modifiers, MouseWheelUnit, PointerButton, Vec2};
use egui_kittest::kittest::Queryable;
use medsam_viewer::app::tools::Tool;
use std::path::{Path, PathBuf};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample/chest_ct_lesion.nii.gz")
}

#[test]
fn open_scroll_window_brush_undo_save_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = open_viewer(dir.path(), Some(sample()));
    let app = harness.state();
    let doc = app.doc.as_ref().expect("the sample opened");
    assert_eq!(doc.image.geometry.dims, [512, 512, 16]);
    let k0 = app.crosshair[2];
    harness.snapshot("viewer_opened");

    // Mouse wheel over the axial view steps the slice (k for this scan).
    let axial = pane_centre(&harness, "Axial view");
    harness.event(Event::PointerMoved(axial));
    harness.event(Event::MouseWheel { unit: MouseWheelUnit::Line, delta: Vec2::new(0.0, 1.0), modifiers: Modifiers::NONE, phase: egui::TouchPhase::Move, source: egui::MouseWheelSource::Wheel });
    harness.run_steps(2);
    assert_eq!(harness.state().crosshair[2], k0 + 1.0, "one notch = one slice");
    harness.event(Event::MouseWheel { unit: MouseWheelUnit::Line, delta: Vec2::new(0.0, -3.0), modifiers: Modifiers::NONE, phase: egui::TouchPhase::Move, source: egui::MouseWheelSource::Wheel });
    harness.run_steps(2);
    assert_eq!(harness.state().crosshair[2], k0 - 2.0);

    // Ctrl+wheel zooms instead.
    harness.event(Event::MouseWheel { unit: MouseWheelUnit::Line, delta: Vec2::new(0.0, 2.0), modifiers: Modifiers::CTRL, phase: egui::TouchPhase::Move, source: egui::MouseWheelSource::Wheel });
    harness.run_steps(2);
    assert!(harness.state().views[0].zoom > 1.1, "zoomed in");
    assert_eq!(harness.state().crosshair[2], k0 - 2.0, "zoom does not change the slice");

    // A window preset button, then right-drag window/level.
    harness.get_by_label("Lung").click();
    harness.run_steps(2);
    let w = harness.state().window;
    assert_eq!((w.lo, w.hi), (-1350.0, 150.0));
    drag(&mut harness, axial, axial + Vec2::new(120.0, 0.0), PointerButton::Secondary);
    assert!(harness.state().window.width() > 1500.0, "dragging right widens the window");
    harness.get_by_label("Image range").click();
    harness.run_steps(2);

    // Brush a stroke across the axial view.
    harness.get_by_label(Tool::Brush.name()).click();
    harness.run_steps(1);
    assert_eq!(harness.state().tool, Tool::Brush);
    drag(&mut harness, axial - Vec2::new(60.0, 0.0), axial + Vec2::new(60.0, 20.0), PointerButton::Primary);
    let painted = harness.state().doc.as_ref().unwrap().voxel_count(1);
    assert!(painted > 100, "the stroke painted label 1 ({painted} voxels)");
    assert!(harness.state().doc.as_ref().unwrap().is_dirty());
    harness.snapshot("viewer_brushed");

    // Undo and redo through the keyboard: the whole stroke is one step.
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.run_steps(2);
    assert_eq!(harness.state().doc.as_ref().unwrap().voxel_count(1), 0);
    harness.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, egui::Key::Z);
    harness.run_steps(2);
    assert_eq!(harness.state().doc.as_ref().unwrap().voxel_count(1), painted);

    // Save, then reload the mask onto a fresh viewer and compare voxels.
    let mask_path = dir.path().join("mask.nii.gz");
    harness.state_mut().save_to(&mask_path);
    assert!(!harness.state().doc.as_ref().unwrap().is_dirty());
    let saved = harness.state().doc.as_ref().unwrap().labels.clone();
    let mut fresh = open_viewer(&dir.path().join("second"), Some(sample()));
    fresh.state_mut().open_mask(&mask_path);
    fresh.run_steps(2);
    assert_eq!(fresh.state().doc.as_ref().unwrap().labels, saved);
}

#[test]
fn start_screen_offers_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = open_viewer(dir.path(), None);
    assert!(harness.state().doc.is_none());
    harness.get_by_label("Open the bundled sample (chest CT with a lung lesion)").click();
    harness.run_steps(2);
    wait_until(&mut harness, |app| app.doc.is_some());
    assert_eq!(harness.state().doc.as_ref().unwrap().image.geometry.dims, [512, 512, 16]);
}
