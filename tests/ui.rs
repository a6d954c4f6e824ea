//! The viewer driven through its real widgets (egui_kittest + AccessKit) and rendered with wgpu
//! (Mesa's lavapipe in CI): open a volume, scroll, window/level, brush, undo/redo, save and
//! reload the mask. Snapshots are kept in tests/snapshots (`UPDATE_SNAPSHOTS=1` rewrites them).

mod common;

use common::{drag, open_viewer, pane_centre, press, wait_for_surfaces, wait_until};
use egui::{Event, Modifiers, MouseWheelUnit, PointerButton, Vec2};
use egui_kittest::kittest::Queryable;
use medsam_viewer::app::slice_view::PromptMark;
use medsam_viewer::app::tools::Tool;
use medsam_viewer::app::view_frame::Plane;
use medsam_viewer::io::nifti;
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    wait_for_surfaces(&mut harness);
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
    wait_for_surfaces(&mut harness);
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

#[test]
fn three_d_view_shows_the_lesion_surface_and_orbits() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = open_viewer(dir.path(), Some(sample()));
    let gt = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample/chest_ct_lesion_gt.nii.gz");
    harness.state_mut().open_mask(&gt);
    wait_for_surfaces(&mut harness);
    assert!(harness.state().view3d.status.starts_with("1 surface(s)"), "{}", harness.state().view3d.status);

    // Maximise the 3D pane from the View menu and look at the lesion.
    harness.get_by_label("View").click();
    harness.run_steps(2);
    harness.get_by_label("Maximise 3D").click();
    harness.run_steps(3);
    harness.snapshot("view3d_lesion");

    // Dragging orbits the camera; a double click frames the volume again.
    let centre = pane_centre(&harness, "3D view");
    let before = harness.state().view3d.camera.clone().unwrap();
    drag(&mut harness, centre, centre + Vec2::new(80.0, 30.0), PointerButton::Primary);
    let after = harness.state().view3d.camera.clone().unwrap();
    assert!((after.yaw - before.yaw).abs() > 0.3 && (after.pitch - before.pitch).abs() > 0.1, "{before:?} -> {after:?}");
}

const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");

/// The sam2-mini reference volume ([D, H, W] u8) as a NIfTI file: x = W, y = H, z = D.
fn mini_volume(dir: &Path) -> PathBuf {
    let input = candle_core::safetensors::load(format!("{MINI}/00_input.safetensors"), &candle_core::Device::Cpu).unwrap();
    let volume_u8 = input["volume_u8"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let g = Geometry::new([112, 96, 8], [1.0, 1.0, 2.0], [0.0; 3]);
    let volume = Volume::new(g, 1, VoxelBuffer::U8(volume_u8), VolumeMeta::default()).unwrap();
    let path = dir.join("mini.nii.gz");
    nifti::write(&path, &volume, nifti::NiftiKind::Image).unwrap();
    path
}

#[test]
fn box_segmentation_streams_into_the_overlay_as_one_undo_step() {
    let dir = tempfile::tempdir().unwrap();
    let image = mini_volume(dir.path());
    let mut harness = open_viewer(&dir.path().join("app"), Some(image));
    {
        let app = harness.state_mut();
        app.settings.checkpoint = Some(format!("{MINI}/model.pt").into());
        app.settings.model_config = Some(format!("{MINI}/config.yaml").into());
        // Run straight from the box, as MedSAM2's script does (the preview has its own test).
        app.settings.auto_preview = Some(false);
        app.model_panel.refresh();
    }
    // The key slice of the reference run, then a box dragged with the box tool.
    harness.state_mut().crosshair[2] = 4.0;
    harness.key_press(egui::Key::B);
    harness.run_steps(1);
    assert_eq!(harness.state().tool, Tool::Box);
    let axial = pane_centre(&harness, "Axial view");
    drag(&mut harness, axial - Vec2::new(40.0, 30.0), axial + Vec2::new(40.0, 30.0), PointerButton::Primary);
    let drawn = harness.state().prompts.clone();
    assert!(matches!(drawn.as_slice(), [PromptMark::Box { plane: Plane::Axial, slice: 4, .. }]), "{drawn:?}");
    // The reference box exactly (x0, y0, x1, y1) = (33, 33, 73, 68), so the result can be
    // compared with PyTorch's.
    harness.state_mut().prompts = vec![PromptMark::Box { plane: Plane::Axial, slice: 4, a: [33.0, 33.0, 4.0], b: [73.0, 68.0, 4.0] }];

    // Enter runs it on the worker; the UI keeps stepping while slices stream in.
    harness.key_press(egui::Key::Enter);
    let start = Instant::now();
    let mut longest_frame = Duration::ZERO;
    let mut saw_partial = false;
    harness.step();
    assert!(harness.state().is_segmenting(), "{}", harness.state().status);
    while harness.state().is_segmenting() {
        assert!(start.elapsed() < Duration::from_secs(120), "segmentation timed out");
        let t = Instant::now();
        harness.step();
        longest_frame = longest_frame.max(t.elapsed());
        let count = harness.state().doc.as_ref().unwrap().voxel_count(1);
        saw_partial |= count > 0 && harness.state().is_segmenting();
        std::thread::sleep(Duration::from_millis(2));
    }
    harness.run_steps(2);
    println!("longest UI frame while segmenting: {:.2} ms; streamed before the end: {saw_partial}", longest_frame.as_secs_f64() * 1e3);
    assert!(harness.state().status.starts_with("Segmented"), "{}", harness.state().status);

    // The label map equals MedSAM2's final mask from the PyTorch run (largest component of the
    // forward OR backward pass), apart from pixels whose reference logit is within 1e-3 of 0.
    let reference = candle_core::safetensors::load(format!("{MINI}/06_propagation.safetensors"), &candle_core::Device::Cpu).unwrap();
    let want = reference["seg_lcc"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let doc = harness.state().doc.as_ref().unwrap();
    let got: Vec<u8> = doc.labels.iter().map(|&l| u8::from(l == 1)).collect();
    let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    let voxels = want.iter().filter(|&&v| v == 1).count();
    assert!(voxels > 1000, "the reference mask is not trivial ({voxels} voxels)");
    assert!(differing <= 39, "{differing} voxels differ from the reference mask");
    // The status line holds the run's duration: keep the snapshot independent of the machine;
    // and the 3D pane shows the surface once it is built.
    harness.state_mut().status = "Segmented".into();
    wait_for_surfaces(&mut harness);
    harness.snapshot("viewer_segmented");

    // The whole run is one undo step.
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.run_steps(2);
    assert_eq!(harness.state().doc.as_ref().unwrap().voxel_count(1), 0);
    harness.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, egui::Key::Z);
    harness.run_steps(2);
    let after_box = harness.state().doc.as_ref().unwrap().labels.clone();
    assert_eq!(after_box.iter().filter(|&&l| l == 1).count(), got.iter().filter(|&&v| v == 1).count());

    // A negative click on the key slice refines it and re-propagates both ways (one more step).
    harness.key_press(egui::Key::M);
    harness.run_steps(1);
    let centre = pane_centre(&harness, "Axial view");
    harness.event(Event::PointerMoved(centre));
    press(&harness, centre, PointerButton::Primary, true);
    harness.step();
    press(&harness, centre, PointerButton::Primary, false);
    harness.run_steps(2);
    assert!(matches!(harness.state().prompts.last(), Some(PromptMark::Point { positive: false, .. })));
    harness.state_mut().prompts.retain(|p| matches!(p, PromptMark::Point { .. }));
    harness.key_press(egui::Key::Enter);
    harness.step();
    assert!(harness.state().is_segmenting(), "{}", harness.state().status);
    wait_until(&mut harness, |app| !app.is_segmenting());
    assert!(harness.state().status.starts_with("Segmented"), "{}", harness.state().status);
    let after_clicks = harness.state().doc.as_ref().unwrap().labels.clone();
    assert_ne!(after_clicks, after_box, "the clicks changed the mask");

    // Erase part of the current slice, then re-propagate from it (R): the corrected slice is the prompt.
    harness.key_press(egui::Key::E);
    harness.run_steps(1);
    drag(&mut harness, centre - Vec2::new(60.0, 0.0), centre + Vec2::new(60.0, 0.0), PointerButton::Primary);
    harness.key_press(egui::Key::R);
    harness.step();
    assert!(harness.state().is_segmenting(), "{}", harness.state().status);
    wait_until(&mut harness, |app| !app.is_segmenting());
    assert!(harness.state().status.starts_with("Segmented"), "{}", harness.state().status);
    // Undo goes back through re-propagation, erasing and clicks to the box's result.
    for _ in 0..3 {
        harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
        harness.run_steps(2);
    }
    assert_eq!(harness.state().doc.as_ref().unwrap().labels, after_box);
}

/// The viewer on the mini volume with the mini checkpoint.
fn mini_viewer(dir: &Path) -> egui_kittest::Harness<'static, medsam_viewer::app::ViewerApp> {
    let image = mini_volume(dir);
    let mut harness = open_viewer(&dir.join("app"), Some(image));
    let app = harness.state_mut();
    app.settings.checkpoint = Some(format!("{MINI}/model.pt").into());
    app.settings.model_config = Some(format!("{MINI}/config.yaml").into());
    app.model_panel.refresh();
    harness
}

/// The mini viewer with the reference run's box drawn on axial slice 4 (no preview).
fn mini_viewer_with_reference_box(dir: &Path) -> egui_kittest::Harness<'static, medsam_viewer::app::ViewerApp> {
    let mut harness = mini_viewer(dir);
    let app = harness.state_mut();
    app.settings.auto_preview = Some(false);
    app.crosshair = [56.0, 48.0, 4.0];
    app.prompts = vec![PromptMark::Box { plane: Plane::Axial, slice: 4, a: [33.0, 33.0, 4.0], b: [73.0, 68.0, 4.0] }];
    harness
}

/// Presses Enter and waits for the run to end; the status line then.
fn run_to_end(harness: &mut egui_kittest::Harness<'static, medsam_viewer::app::ViewerApp>) -> String {
    harness.key_press(egui::Key::Enter);
    harness.step();
    wait_until(harness, |app| !app.is_segmenting());
    harness.state().status.clone()
}

/// Slices (axial, of the mini volume) holding label 1.
fn labelled_slices(harness: &egui_kittest::Harness<'static, medsam_viewer::app::ViewerApp>) -> Vec<usize> {
    let labels = &harness.state().doc.as_ref().unwrap().labels;
    labels.chunks(112 * 96).enumerate().filter(|(_, s)| s.contains(&1)).map(|(k, _)| k).collect()
}

#[test]
fn a_drawn_box_is_previewed_refined_by_clicks_and_run_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = mini_viewer(dir.path());
    assert!(harness.state().settings.auto_preview(), "previews are on by default");
    harness.state_mut().crosshair[2] = 4.0;
    harness.key_press(egui::Key::B);
    harness.run_steps(1);
    let axial = pane_centre(&harness, "Axial view");
    // Releasing the box segments its slice alone, without Run.
    drag(&mut harness, axial - Vec2::new(40.0, 30.0), axial + Vec2::new(40.0, 30.0), PointerButton::Primary);
    harness.step();
    assert!(harness.state().is_segmenting(), "the preview started on release: {}", harness.state().status);
    wait_until(&mut harness, |app| !app.is_segmenting());
    assert!(harness.state().status.starts_with("Previewed"), "{}", harness.state().status);
    assert_eq!(labelled_slices(&harness), [4], "only the box's slice");
    assert_eq!(harness.state().segmentation.encoder_runs, 1, "the preview encoded its slice once");
    let previewed = harness.state().doc.as_ref().unwrap().labels.clone();

    // A negative click on that slice refines the preview: no new encoding, and the refined
    // answer takes the first one's place in the history.
    harness.key_press(egui::Key::M);
    harness.run_steps(1);
    harness.event(Event::PointerMoved(axial));
    press(&harness, axial, PointerButton::Primary, true);
    harness.step();
    press(&harness, axial, PointerButton::Primary, false);
    harness.step();
    assert!(harness.state().is_segmenting(), "the click re-ran the preview");
    wait_until(&mut harness, |app| !app.is_segmenting());
    assert!(harness.state().status.starts_with("Previewed"), "{}", harness.state().status);
    assert_eq!(harness.state().segmentation.encoder_runs, 1, "a click runs only the prompt encoder and the decoder");
    let refined = harness.state().doc.as_ref().unwrap().labels.clone();
    assert_ne!(refined, previewed, "the click changed the slice's answer");
    assert_eq!(labelled_slices(&harness), [4]);

    // Run propagates from exactly that answer: the key slice is not encoded again (8 slices,
    // 8 encoder runs), and the run replaces the preview as one undo step.
    harness.key_press(egui::Key::Enter);
    harness.step();
    assert!(harness.state().is_segmenting(), "{}", harness.state().status);
    wait_until(&mut harness, |app| !app.is_segmenting());
    assert!(harness.state().status.starts_with("Segmented"), "{}", harness.state().status);
    assert_eq!(harness.state().segmentation.encoder_runs, 8);
    assert!(labelled_slices(&harness).len() > 1, "{:?}", labelled_slices(&harness));
    let plane = 112 * 96;
    let key_slice = |labels: &[u8]| labels[4 * plane..5 * plane].to_vec();
    assert_eq!(key_slice(&harness.state().doc.as_ref().unwrap().labels), key_slice(&refined), "Run kept the refined key slice");
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.run_steps(2);
    assert_eq!(harness.state().doc.as_ref().unwrap().voxel_count(1), 0, "one undo step for preview, click and run");
}

#[test]
fn a_box_moved_or_resized_by_its_corners_is_previewed_again_without_encoding() {
    use medsam_viewer::app::slice_view::screen_of;
    use medsam_viewer::app::view_frame::ViewFrame;
    let dir = tempfile::tempdir().unwrap();
    let mut harness = mini_viewer(dir.path());
    harness.state_mut().crosshair[2] = 4.0;
    harness.key_press(egui::Key::B);
    harness.run_steps(1);
    let axial = pane_centre(&harness, "Axial view");
    drag(&mut harness, axial - Vec2::new(30.0, 20.0), axial + Vec2::new(10.0, 10.0), PointerButton::Primary);
    harness.step();
    wait_until(&mut harness, |app| !app.is_segmenting());
    let first = harness.state().doc.as_ref().unwrap().labels.clone();
    let the_box = |harness: &egui_kittest::Harness<'static, medsam_viewer::app::ViewerApp>| match harness.state().prompts.as_slice() {
        [PromptMark::Box { a, b, .. }] => (*a, *b),
        other => panic!("one box prompt expected: {other:?}"),
    };
    let on_screen = |harness: &egui_kittest::Harness<'static, medsam_viewer::app::ViewerApp>, v: [f64; 3]| {
        let app = harness.state();
        let g = &app.doc.as_ref().unwrap().image.geometry;
        screen_of(&ViewFrame::new(Plane::Axial, g), g, app.views[0].last_image_rect.unwrap(), v)
    };

    // A drag from the box's lower right corner resizes it; the other corner stays.
    let (a, b) = the_box(&harness);
    let corner = on_screen(&harness, b);
    drag(&mut harness, corner, corner + Vec2::new(30.0, 25.0), PointerButton::Primary);
    harness.step();
    assert!(harness.state().is_segmenting(), "the resized box is previewed: {}", harness.state().status);
    wait_until(&mut harness, |app| !app.is_segmenting());
    let (a2, b2) = the_box(&harness);
    assert_eq!(a2, a, "the opposite corner stayed");
    assert!(b2[0] > b[0] + 5.0 && b2[1] > b[1] + 5.0, "{b:?} -> {b2:?}");
    assert!(harness.state().status.starts_with("Previewed"), "{}", harness.state().status);
    assert_eq!(harness.state().segmentation.encoder_runs, 1, "the slice's features were kept");
    let resized = harness.state().doc.as_ref().unwrap().labels.clone();
    assert_ne!(resized, first, "the larger box changed the answer");
    assert_eq!(labelled_slices(&harness), [4]);

    // A drag from inside moves it whole.
    let inside = on_screen(&harness, [(a2[0] + b2[0]) / 2.0, (a2[1] + b2[1]) / 2.0, 4.0]);
    drag(&mut harness, inside, inside - Vec2::new(15.0, 0.0), PointerButton::Primary);
    harness.step();
    wait_until(&mut harness, |app| !app.is_segmenting());
    let (a3, b3) = the_box(&harness);
    let shift = a3[0] - a2[0];
    assert!(shift < -3.0 && (b3[0] - b2[0] - shift).abs() < 1e-9, "moved left, size kept: {a2:?} {b2:?} -> {a3:?} {b3:?}");
    assert!((a3[1] - a2[1]).abs() < 1.0, "{a2:?} -> {a3:?}");
    assert_eq!(harness.state().segmentation.encoder_runs, 1);

    // Each preview took the previous one's place: one undo clears the object.
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.run_steps(2);
    assert_eq!(harness.state().doc.as_ref().unwrap().voxel_count(1), 0);
}

#[test]
fn fill_islands_and_undo_wait_while_a_run_streams_and_counts_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = mini_viewer_with_reference_box(dir.path());
    harness.key_press(egui::Key::Enter);
    harness.step();
    assert!(harness.state().is_segmenting());
    // The next frame handles its keys before it takes any more streamed slices, and the run's
    // undo step needs at least two frames of them: the run is still open for these.
    harness.key_press(egui::Key::F);
    harness.key_press(egui::Key::I);
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.step();
    let status = harness.state().status.clone();
    assert!(status.contains("a segmentation is writing the label map: this waits until it finishes"), "{status}");
    wait_until(&mut harness, |app| !app.is_segmenting());
    let counts = |harness: &egui_kittest::Harness<'static, medsam_viewer::app::ViewerApp>| {
        let doc = harness.state().doc.as_ref().unwrap();
        (doc.labels.iter().filter(|&&l| l == 1).count() as u64, doc.voxel_count(1))
    };
    let (recounted, counted) = counts(&harness);
    assert!(recounted > 0);
    assert_eq!(recounted, counted);
    // Nothing was recorded beside the run: one undo empties the map, counted exactly.
    harness.key_press_modifiers(Modifiers::COMMAND, egui::Key::Z);
    harness.step();
    assert_eq!(counts(&harness), (0, 0), "{}", harness.state().status);
    // Afterwards the same keys work again.
    harness.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, egui::Key::Z);
    harness.step();
    harness.key_press(egui::Key::I);
    harness.step();
    assert!(harness.state().status.starts_with("Removed"), "{}", harness.state().status);
}

#[test]
fn question_mark_lists_every_shortcut_from_the_command_table() {
    use medsam_viewer::app::command::Command;
    let dir = tempfile::tempdir().unwrap();
    let mut harness = mini_viewer(dir.path());
    harness.key_press(egui::Key::Questionmark);
    harness.run_steps(2);
    assert!(harness.state().shortcuts_open);
    for command in Command::all() {
        assert!(harness.query_all_by_label(&command.description()).next().is_some(), "{command:?} is listed");
    }
    harness.snapshot("shortcuts_overlay");
    // The keys in the table do what the overlay says: H hides the labels, ? closes it.
    let shown = harness.state().show_labels;
    harness.key_press(egui::Key::H);
    harness.step();
    assert_ne!(harness.state().show_labels, shown);
    harness.key_press(egui::Key::Questionmark);
    harness.run_steps(2);
    assert!(!harness.state().shortcuts_open);
}

#[test]
fn propagation_ends_where_the_object_ends() {
    // Slice 2 of the mini volume is washed out: the model finds no object there. One empty
    // slice ends the backward direction on it.
    let dir = tempfile::tempdir().unwrap();
    let mut harness = mini_viewer_with_reference_box(dir.path());
    harness.state_mut().settings.stop_after_empty = Some(1);
    let status = run_to_end(&mut harness);
    assert!(status.contains("forward to slice 7 (end of volume), backward to slice 2 (object gone)"), "{status}");
    assert!(labelled_slices(&harness).iter().all(|&k| k >= 3), "{:?}", labelled_slices(&harness));
}

#[test]
fn the_range_marks_show_on_the_other_views_and_move_with_a_drag() {
    use medsam_viewer::app::segmentation::RangeChoice;
    use medsam_viewer::app::slice_view::screen_of;
    use medsam_viewer::app::view_frame::ViewFrame;
    let dir = tempfile::tempdir().unwrap();
    let mut harness = mini_viewer_with_reference_box(dir.path());
    harness.state_mut().range = RangeChoice::AroundKey(2);
    harness.run_steps(2);
    harness.snapshot("viewer_range_marks");
    // The coronal view cuts across the axial slices: its "from" mark is on slice 2.
    let mark_at = |harness: &egui_kittest::Harness<'static, medsam_viewer::app::ViewerApp>, k: f64| {
        let app = harness.state();
        let g = &app.doc.as_ref().unwrap().image.geometry;
        let view = &app.views[1];
        assert_eq!(view.plane, Plane::Coronal);
        screen_of(&ViewFrame::new(Plane::Coronal, g), g, view.last_image_rect.unwrap(), [56.0, 48.0, k])
    };
    let from = mark_at(&harness, 2.0);
    let to = mark_at(&harness, 0.0);
    assert!((from.y - to.y).abs() > 10.0, "the slices are apart on screen: {from:?} {to:?}");
    drag(&mut harness, from, to, PointerButton::Primary);
    assert_eq!(harness.state().range, RangeChoice::Slices([0, 6]), "the dragged end moved, the other stayed");
    // A run now stays within slices 0..=6.
    let status = run_to_end(&mut harness);
    assert!(status.contains("forward to slice 6 (end of range)"), "{status}");
    assert!(!labelled_slices(&harness).contains(&7), "{:?}", labelled_slices(&harness));
}
