//! Frame cost of the viewer on a 512x512x300 CT-sized volume: for each slice view, a mouse-wheel
//! slice change followed by one UI pass (`step`: input handling, layout, paint callbacks,
//! tessellation) and a rendered frame (`render`: the wgpu passes, slice shader included, and the
//! read-back of the finished frame). Runs the real app in egui_kittest on whatever wgpu adapter
//! the machine has (Mesa's lavapipe here, so "GPU" work is CPU time too). Prints JSON.
//!
//! Then the UI thread's longest frame while a segmentation streams 512 x 512 slices into the
//! label map (the sam2-mini checkpoint, so that the run is short; the UI-side work per slice
//! does not depend on the network's size).
//!
//! `cargo bench --bench viewer_frame`

use egui::{Event, Modifiers, MouseWheelUnit, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use medsam_viewer::app::ViewerApp;
use medsam_viewer::app::document::Document;
use medsam_viewer::app::settings::AppPaths;
use medsam_viewer::app::slice_view::PromptMark;
use medsam_viewer::app::view_frame::Plane;
use medsam_viewer::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use std::time::{Duration, Instant};

const FRAMES: usize = 60;

/// A synthetic CT: a body ellipse of soft tissue with a brighter sphere, i16 HU.
fn ct_volume(dims: [usize; 3]) -> Volume {
    let [nx, ny, nz] = dims;
    let mut data = vec![-1000i16; nx * ny * nz];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let (x, y) = ((i as f64 - nx as f64 / 2.0) / (nx as f64 * 0.4), (j as f64 - ny as f64 / 2.0) / (ny as f64 * 0.3));
                if x * x + y * y <= 1.0 {
                    let d = ((i as f64 - 300.0).powi(2) + (j as f64 - 250.0).powi(2) + ((k as f64 - 150.0) * 2.0).powi(2)).sqrt();
                    data[i + nx * (j + ny * k)] = if d < 40.0 { 120 } else { 40 + ((i * 7 + j * 13 + k) % 30) as i16 };
                }
            }
        }
    }
    let g = Geometry::new(dims, [0.7, 0.7, 1.0], [0.0; 3]);
    Volume::new(g, 1, VoxelBuffer::I16(data), VolumeMeta::default()).expect("valid volume")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    medsam_viewer::app::jobs::start_compute_pool();
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = AppPaths::under(dir.path());
    let mut harness: Harness<'static, ViewerApp> =
        Harness::builder().with_size(Vec2::new(1600.0, 1000.0)).wgpu().build_eframe(move |cc| ViewerApp::new(cc, None, paths));
    let dims = [512, 512, 300];
    let volume = ct_volume(dims);
    harness.state_mut().install_document(Document::new(volume, "synthetic.nii.gz".into(), None));
    harness.run_steps(3);
    let _ = harness.render();
    let mut report = Vec::new();
    for (label, plane) in [("Axial view", "axial"), ("Coronal view", "coronal"), ("Sagittal view", "sagittal")] {
        let centre = harness.get_by_label(label).rect().center();
        harness.event(Event::PointerMoved(centre));
        harness.step();
        let (mut step, mut frame) = (Vec::new(), Vec::new());
        for n in 0..FRAMES {
            let delta = if (n / 10) % 2 == 0 { 1.0 } else { -1.0 };
            harness.event(Event::MouseWheel {
                unit: MouseWheelUnit::Line,
                delta: Vec2::new(0.0, delta),
                modifiers: Modifiers::NONE,
                phase: egui::TouchPhase::Move,
                source: egui::MouseWheelSource::Wheel,
            });
            let t0 = Instant::now();
            harness.step();
            let t1 = Instant::now();
            let _ = harness.render().expect("rendered frame");
            let t2 = Instant::now();
            step.push(t1 - t0);
            frame.push(t2 - t0);
        }
        step.sort();
        frame.sort();
        report.push(format!(
            "{{\"view\": \"{plane}\", \"ui_pass_ms\": {{\"median\": {:.2}, \"p95\": {:.2}}}, \"event_to_rendered_frame_ms\": {{\"median\": {:.2}, \"p95\": {:.2}}}}}",
            percentile(&step, 0.5),
            percentile(&step, 0.95),
            percentile(&frame, 0.5),
            percentile(&frame, 0.95)
        ));
    }
    let streaming = longest_frame_while_segmenting(&mut harness);
    println!(
        "{{\"volume\": [512, 512, 300], \"window_px\": [1600, 1000], \"frames_per_view\": {FRAMES}, \"views\": [{}], \"segmentation\": {streaming}}}",
        report.join(", ")
    );
}

/// Runs a box segmentation over a 512 x 512 x 60 volume and times every UI frame until it ends.
fn longest_frame_while_segmenting(harness: &mut Harness<'static, ViewerApp>) -> String {
    let mini = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");
    let app = harness.state_mut();
    app.install_document(Document::new(ct_volume([512, 512, 60]), "synthetic.nii.gz".into(), None));
    app.settings.checkpoint = Some(format!("{mini}/model.pt").into());
    app.settings.model_config = Some(format!("{mini}/config.yaml").into());
    app.model_panel.refresh();
    app.crosshair[2] = 30.0;
    app.prompts = vec![PromptMark::Box { plane: Plane::Axial, slice: 30, a: [250.0, 200.0, 30.0], b: [350.0, 300.0, 30.0] }];
    harness.run_steps(2);
    harness.key_press(egui::Key::Enter);
    harness.step();
    let start = Instant::now();
    let mut frames = Vec::new();
    while harness.state().is_segmenting() {
        let t = Instant::now();
        harness.step();
        frames.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = start.elapsed().as_secs_f64();
    let voxels = harness.state().doc.as_ref().map_or(0, |d| d.voxel_count(1));
    // Frames over the 16 ms budget, as "index/total: ms", to tell start, streaming and end apart.
    let over_budget: Vec<String> = frames
        .iter()
        .enumerate()
        .filter(|(_, d)| d.as_secs_f64() > 0.016)
        .map(|(i, d)| format!("\"{i}/{}: {:.1}\"", frames.len(), d.as_secs_f64() * 1e3))
        .collect();
    frames.sort();
    format!(
        "{{\"volume\": [512, 512, 60], \"seconds\": {seconds:.2}, \"frames\": {}, \"frame_ms\": {{\"median\": {:.2}, \"p95\": {:.2}, \"max\": {:.2}}}, \"over_16_ms\": [{}], \"voxels\": {voxels}, \"status\": {:?}}}",
        frames.len(),
        percentile(&frames, 0.5),
        percentile(&frames, 0.95),
        percentile(&frames, 1.0),
        over_budget.join(", "),
        harness.state().status
    )
}
