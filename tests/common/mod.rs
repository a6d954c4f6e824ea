//! Set-up shared by the UI tests: the viewer in an egui_kittest harness rendered with wgpu,
//! stepping until background work is done, and mouse gestures.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use egui::{Event, Modifiers, PointerButton, Pos2, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use medsam_viewer::app::ViewerApp;
use medsam_viewer::app::settings::AppPaths;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The viewer at 1280 x 800 with settings and recovery files under `root`, opening `image`.
pub fn open_viewer(root: &Path, image: Option<PathBuf>) -> Harness<'static, ViewerApp> {
    let paths = AppPaths::under(root);
    let mut harness = Harness::builder()
        .with_size(Vec2::new(1280.0, 800.0))
        .wgpu()
        .build_eframe(move |cc| ViewerApp::new(cc, image, paths));
    wait_until(&mut harness, |app| !app.is_loading());
    harness
}

/// Steps the UI until `done` holds (background work finishes on its own threads).
pub fn wait_until<S>(harness: &mut Harness<'static, S>, done: impl Fn(&S) -> bool) {
    let start = Instant::now();
    while !done(harness.state()) {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for the viewer");
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    harness.run_steps(3);
}

/// Steps until the 3D pane shows the surfaces of the current label map (they are rebuilt in
/// the background after a pause), so that snapshots do not depend on timing.
pub fn wait_for_surfaces(harness: &mut Harness<'static, ViewerApp>) {
    let revision = harness.state().doc.as_ref().map(|d| d.revision());
    wait_until(harness, |app| app.view3d.built_revision().is_some() && app.view3d.built_revision() == revision);
}

pub fn pane_centre(harness: &Harness<'static, ViewerApp>, label: &str) -> Pos2 {
    harness.get_by_label(label).rect().center()
}

pub fn press(harness: &Harness<'static, ViewerApp>, pos: Pos2, button: PointerButton, pressed: bool) {
    harness.event(Event::PointerButton { pos, button, pressed, modifiers: Modifiers::NONE });
}

pub fn drag(harness: &mut Harness<'static, ViewerApp>, from: Pos2, to: Pos2, button: PointerButton) {
    harness.event(Event::PointerMoved(from));
    press(harness, from, button, true);
    harness.step();
    for n in 1..=8 {
        let t = n as f32 / 8.0;
        harness.event(Event::PointerMoved(from + (to - from) * t));
        harness.step();
    }
    press(harness, to, button, false);
    harness.step();
}

/// A click without movement.
pub fn click(harness: &mut Harness<'static, ViewerApp>, at: Pos2) {
    harness.event(Event::PointerMoved(at));
    harness.step();
    press(harness, at, PointerButton::Primary, true);
    harness.step();
    press(harness, at, PointerButton::Primary, false);
    harness.run_steps(2);
}
