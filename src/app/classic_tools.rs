//! The classical (weight-free) tools in the viewer: threshold inside the box drawn with the Box
//! tool, region growing from a seed clicked with the Grow tool, and the lung mask of a CT. Each
//! runs `crate::classic` on a background job and writes its voxels into the active label as one
//! undo step, sparing locked labels (through `Document::paint_edit`, like the brush).

use super::ViewerApp;
use super::command::Command;
use super::document::Document;
use super::jobs::BackgroundJob;
use super::slice_view::PromptMark;
use super::tools::Tool;
use super::view_frame::ViewFrame;
use crate::classic::lung_mask::{LungMaskOptions, lung_mask};
use crate::classic::region_grow::region_grow;
use crate::classic::threshold::{IndexBox, threshold_in_box};
use crate::classic::{ClassicError, Connectivity, Range};
use crate::volume::{Geometry, Volume};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// One run of a classical tool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClassicRequest {
    Threshold { bounds: IndexBox, range: Range },
    RegionGrow { seed: [usize; 3], range: Range, connectivity: Connectivity },
    LungMask(LungMaskOptions),
}

impl ClassicRequest {
    /// The name of the undo step.
    pub fn description(&self) -> &'static str {
        match self {
            ClassicRequest::Threshold { .. } => "Threshold in box",
            ClassicRequest::RegionGrow { .. } => "Region growing",
            ClassicRequest::LungMask(_) => "Lung mask",
        }
    }

    /// The voxels (linear indices) the tool selects in `image`.
    pub fn run(&self, image: &Volume) -> Result<Vec<u32>, ClassicError> {
        let mask = match *self {
            ClassicRequest::Threshold { bounds, range } => threshold_in_box(image, bounds, range)?,
            ClassicRequest::RegionGrow { seed, range, connectivity } => region_grow(image, seed, range, connectivity)?,
            ClassicRequest::LungMask(options) => lung_mask(image, &options)?.mask,
        };
        Ok(mask.iter().enumerate().filter(|(_, inside)| **inside).map(|(n, _)| n as u32).collect())
    }
}

/// What a tool's job sends back.
enum ClassicOutcome {
    Selected(Vec<u32>),
    Failed(String),
}

/// A tool running in the background, and where its result goes.
struct RunningTool {
    job: BackgroundJob<ClassicOutcome>,
    request: ClassicRequest,
    label: u8,
    /// The image it runs on: the result is dropped if another image was opened meanwhile.
    image: Weak<Volume>,
}

/// Settings of the classical tools and the run in progress.
pub struct ClassicTools {
    /// Value range of the box threshold (HU for CT).
    pub threshold: [f64; 2],
    /// Slices on each side of the box's slice that the threshold also covers (0 = its slice).
    pub slices_around: usize,
    /// Value range of region growing.
    pub grow: [f64; 2],
    /// Grow through edges and corners too (26 neighbours), not only faces (6).
    pub grow_26: bool,
    /// Dilation of the lung mask in mm (0 = none).
    pub lung_dilation_mm: f64,
    /// A seed clicked with the Grow tool, waiting to be grown.
    pub seed: Option<[usize; 3]>,
    running: Option<RunningTool>,
}

impl Default for ClassicTools {
    fn default() -> Self {
        ClassicTools { threshold: [-200.0, 400.0], slices_around: 0, grow: [-200.0, 400.0], grow_26: false, lung_dilation_mm: 0.0, seed: None, running: None }
    }
}

impl ClassicTools {
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts `request` on `doc`'s image; its voxels will become `label`. A run still going is
    /// abandoned.
    pub fn start(&mut self, doc: &Document, request: ClassicRequest, label: u8) {
        if let Some(old) = self.running.take() {
            old.job.progress.cancel();
        }
        let image = Arc::clone(&doc.image);
        let job = BackgroundJob::spawn(request.description(), None, move |progress, tx| {
            progress.set(0, 1);
            let outcome = match request.run(&image) {
                Ok(voxels) => ClassicOutcome::Selected(voxels),
                Err(e) => ClassicOutcome::Failed(e.to_string()),
            };
            progress.set(1, 1);
            if !progress.is_cancelled() {
                tx.send(outcome);
            }
        });
        self.running = Some(RunningTool { job, request, label, image: Arc::downgrade(&doc.image) });
    }

    /// The box threshold over the last box drawn with the Box tool; `None` without a box.
    pub fn threshold_request(&self, prompts: &[PromptMark], g: &Geometry) -> Result<Option<ClassicRequest>, ClassicError> {
        let range = Range::new(self.threshold[0], self.threshold[1])?;
        Ok(box_of_prompts(prompts, g, self.slices_around).map(|bounds| ClassicRequest::Threshold { bounds, range }))
    }

    pub fn region_grow_request(&self, seed: [usize; 3]) -> Result<ClassicRequest, ClassicError> {
        let range = Range::new(self.grow[0], self.grow[1])?;
        let connectivity = if self.grow_26 { Connectivity::TwentySix } else { Connectivity::Six };
        Ok(ClassicRequest::RegionGrow { seed, range, connectivity })
    }

    pub fn lung_request(&self) -> ClassicRequest {
        ClassicRequest::LungMask(LungMaskOptions { dilation_mm: self.lung_dilation_mm, ..LungMaskOptions::default() })
    }
}

/// The voxel box of the last box prompt: the drawn rectangle on its slice, and `slices_around`
/// slices on either side along the view's normal, cut to the image.
pub fn box_of_prompts(prompts: &[PromptMark], g: &Geometry, slices_around: usize) -> Option<IndexBox> {
    let (plane, slice, a, b) = prompts.iter().rev().find_map(|p| match p {
        PromptMark::Box { plane, slice, a, b } => Some((*plane, *slice, *a, *b)),
        PromptMark::Point { .. } => None,
    })?;
    let normal = ViewFrame::new(plane, g).normal;
    let last = g.dims.map(|d| d as f64 - 1.0);
    let mut lo = [0; 3];
    let mut hi = [0; 3];
    for axis in 0..3 {
        if axis == normal {
            lo[axis] = slice.saturating_sub(slices_around);
            hi[axis] = (slice + slices_around).min(g.dims[axis] - 1);
        } else {
            lo[axis] = a[axis].min(b[axis]).round().clamp(0.0, last[axis]) as usize;
            hi[axis] = a[axis].max(b[axis]).round().clamp(0.0, last[axis]) as usize;
        }
    }
    Some(IndexBox { lo, hi })
}

/// Each frame: takes a finished run and applies it as one undo step and starts region growing
/// from a clicked seed.
pub fn update(app: &mut ViewerApp, ctx: &egui::Context) {
    if let Some(seed) = app.classic.seed.take()
        && let Some(doc) = &app.doc
    {
        match app.classic.region_grow_request(seed) {
            Ok(request) => app.classic.start(doc, request, app.active_label),
            Err(e) => app.status = format!("Region growing: {e}"),
        }
    }
    let Some(running) = &app.classic.running else { return };
    let outcome = running.job.drain().pop();
    let finished = running.job.is_finished();
    if outcome.is_none() && !finished {
        ctx.request_repaint_after(Duration::from_millis(50));
        return;
    }
    let running = app.classic.running.take().expect("checked above");
    let what = running.request.description();
    match (outcome, &mut app.doc) {
        (Some(ClassicOutcome::Selected(voxels)), Some(doc)) if std::ptr::eq(running.image.as_ptr(), Arc::as_ptr(&doc.image)) => {
            let edit = doc.paint_edit(voxels.iter().map(|&i| i as usize), running.label, what);
            app.status = format!("{what}: {} voxels found, {} changed to label {}", voxels.len(), edit.len(), running.label);
            ViewerApp::refused(&mut app.status, what, doc.apply(edit));
        }
        (Some(ClassicOutcome::Failed(e)), _) => app.status = format!("{what} failed: {e}"),
        _ => {}
    }
}

/// Thresholds the drawn box (`Command::Threshold`).
pub fn start_threshold(app: &mut ViewerApp) {
    let Some(doc) = &app.doc else { return };
    match app.classic.threshold_request(&app.prompts, &doc.image.geometry) {
        Ok(Some(request)) => app.classic.start(doc, request, app.active_label),
        Ok(None) => app.status = "Threshold in box: draw a box with the Box tool first".into(),
        Err(e) => app.status = format!("Threshold in box: {e}"),
    }
}

/// Segments the lungs (`Command::LungMask`).
pub fn start_lung_mask(app: &mut ViewerApp) {
    let Some(doc) = &app.doc else { return };
    let request = app.classic.lung_request();
    app.classic.start(doc, request, app.active_label);
}

/// A labelled number field.
fn number(ui: &mut egui::Ui, name: &str, value: &mut f64, speed: f64, tip: &str) {
    let label = ui.label(name);
    ui.add(egui::DragValue::new(value).speed(speed)).labelled_by(label.id).on_hover_text(tip);
}

/// The side panel's section: settings and buttons of the three tools, and the run in progress.
pub fn section(app: &mut ViewerApp, ui: &mut egui::Ui) {
    ui.heading("Classical tools");
    let has_doc = app.doc.is_some();
    let tools = &mut app.classic;
    ui.horizontal(|ui| {
        number(ui, "box min", &mut tools.threshold[0], 5.0, "Lowest value kept by the box threshold (HU for CT)");
        number(ui, "max", &mut tools.threshold[1], 5.0, "Highest value kept by the box threshold");
    });
    ui.horizontal(|ui| {
        let label = ui.label("± slices");
        ui.add(egui::DragValue::new(&mut tools.slices_around).range(0..=500))
            .labelled_by(label.id)
            .on_hover_text("Slices on each side of the box's slice that the threshold also covers (0 = the box's slice only)");
    });
    let has_box = app.prompts.iter().any(|p| matches!(p, PromptMark::Box { .. }));
    if ui
        .add_enabled(has_doc && has_box, egui::Button::new("Threshold in box"))
        .on_hover_text(format!("Label the voxels inside the box drawn with the Box tool whose value lies in the range  [{}]", Command::Threshold.shortcut_text(ui.ctx())))
        .on_disabled_hover_text(format!("Draw a box with the Box tool [{}] first", Command::Tool(Tool::Box).shortcut_text(ui.ctx())))
        .clicked()
    {
        start_threshold(app);
    }
    let tools = &mut app.classic;
    ui.horizontal(|ui| {
        number(ui, "grow min", &mut tools.grow[0], 5.0, "Lowest value of the grown region (HU for CT)");
        number(ui, "max", &mut tools.grow[1], 5.0, "Highest value of the grown region");
    });
    ui.checkbox(&mut tools.grow_26, "26-connected").on_hover_text("Grow through edges and corners too, not only through faces");
    ui.label(format!("Grow tool [{}]: click a seed in a view.", Command::Tool(Tool::RegionGrow).shortcut_text(ui.ctx())));
    ui.horizontal(|ui| {
        ui.add(egui::Slider::new(&mut tools.lung_dilation_mm, 0.0..=20.0).text("dilate mm")).on_hover_text("Grow the lung mask by this radius in mm");
    });
    if ui
        .add_enabled(has_doc, egui::Button::new("Lung mask"))
        .on_hover_text(format!("Label the lungs of a CT: air below −320 HU inside the body, largest components, holes filled  [{}]", Command::LungMask.shortcut_text(ui.ctx())))
        .clicked()
    {
        start_lung_mask(app);
    }
    if let Some(running) = &app.classic.running {
        let mut cancel = false;
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("{} ({:.1} s)", running.job.title, running.job.elapsed().as_secs_f32()));
            cancel = ui.button("Cancel").clicked();
        });
        if cancel {
            running.job.progress.cancel();
            app.classic.running = None;
            app.status = "Cancelled".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::view_frame::Plane;

    #[test]
    fn box_of_the_last_box_prompt_is_cut_to_the_image() {
        let g = Geometry::new([10, 8, 6], [1.0; 3], [0.0; 3]);
        assert_eq!(box_of_prompts(&[], &g, 0), None);
        let old = PromptMark::Box { plane: Plane::Axial, slice: 1, a: [0.0, 0.0, 1.0], b: [1.0, 1.0, 1.0] };
        let last = PromptMark::Box { plane: Plane::Axial, slice: 4, a: [7.6, 6.2, 4.0], b: [-3.0, 2.4, 4.0] };
        let point = PromptMark::Point { plane: Plane::Axial, slice: 4, at: [1.0; 3], positive: true };
        let b = box_of_prompts(&[old, last, point], &g, 3).unwrap();
        // Axial slices step along k: the box's slice ± 3, cut at the last slice (5).
        assert_eq!(b, IndexBox { lo: [0, 2, 1], hi: [8, 6, 5] });
    }
}
