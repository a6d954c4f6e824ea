//! The desktop application (eframe on wgpu): a 2x2 layout of axial, coronal and sagittal slice
//! views and a 3D pane, the tool and label panels, menus, keyboard shortcuts, background jobs,
//! dialogs, autosave and recovery. `ViewerApp` owns the state; the submodules each own one
//! piece (document, history, labels, brush, views, jobs, settings, recovery, panels, dialogs).

pub mod brush;
pub mod classic_tools;
pub mod dialogs;
pub mod command;
pub mod document;
pub mod history;
pub mod jobs;
pub mod labels;
pub mod model_panel;
pub mod morphology;
pub mod panels;
pub mod recovery;
pub mod segmentation;
pub mod settings;
pub mod slice_view;
pub mod stats_panel;
pub mod tools;
pub mod view3d;
pub mod view_frame;

use crate::io::{SeriesSelector, dicom::SeriesSummary};
use crate::render::{Colormap, MeshRenderer, SliceRenderer};
use crate::volume::{Window, WindowPreset, CT_PRESETS};
use brush::Brush;
use dialogs::Dialog;
use command::Command;
use document::Document;
use history::{EditBuilder, VoxelEdit};
use jobs::BackgroundJob;
use settings::{AppPaths, Settings};
use slice_view::{PromptMark, SliceView, ViewEvent, ViewInputs};
use std::path::{Path, PathBuf};
use tools::Tool;
use view3d::View3d;
use view_frame::{Pane, Plane, ViewFrame};

/// The bundled sample offered on first start (a DeepLesion chest CT crop; see assets/sample).
const SAMPLE_NIFTI: &[u8] = include_bytes!("../../assets/sample/chest_ct_lesion.nii.gz");

/// Opens the viewer window; `path` is opened right away when given.
pub fn run(path: Option<PathBuf>, mask: Option<PathBuf>) -> anyhow::Result<()> {
    jobs::start_compute_pool();
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        viewport: egui::ViewportBuilder::default()
            .with_title("MedSAM Viewer")
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native("MedSAM Viewer", options, Box::new(move |cc| {
        let mut app = ViewerApp::new(cc, path, AppPaths::for_user());
        app.pending_mask = mask;
        Ok(Box::new(app))
    }))
        .map_err(|e| anyhow::anyhow!("cannot open the viewer window: {e}"))
}

/// What finished loading in the background.
pub enum LoadMessage {
    Loaded(Box<Document>),
    /// A DICOM folder with several series: the user must pick one.
    ChooseSeries(PathBuf, Vec<SeriesSummary>),
    Failed(String),
}

/// Something the user asked for that must wait for an answer about unsaved changes.
#[derive(Clone, Debug, PartialEq)]
pub enum PendingAction {
    Open(PathBuf, Option<SeriesSelector>),
    Quit,
}

/// What a running segmentation writes, and where: the labels each touched slice had before,
/// from which the run's single undo step is made when it ends.
struct RunEdit {
    axis: crate::volume::SliceAxis,
    label: u8,
    /// A box's run or preview: a new object, added to what the label already holds.
    adds: bool,
    /// A preview, which the next preview or Run of the same box replaces.
    preview: bool,
    before: std::collections::BTreeMap<usize, Vec<u8>>,
    /// The worker has ended; the undo step is being made, a few slices per frame.
    ended: bool,
    edit: VoxelEdit,
}

/// UI time per frame spent writing streamed slices; the rest waits for the next frame.
const STREAM_BUDGET: std::time::Duration = std::time::Duration::from_millis(6);

/// Streamed slices taken per frame at most: each is uploaded to the GPU at the start of the
/// next frame, outside the budget above.
const STREAM_SLICES_PER_FRAME: usize = 4;

pub struct ViewerApp {
    render_state: Option<egui_wgpu::RenderState>,
    pub doc: Option<Document>,
    pub views: [SliceView; 3],
    /// Crosshair as a continuous voxel index.
    pub crosshair: [f64; 3],
    pub window: Window,
    pub colormap: Colormap,
    pub label_opacity: f32,
    pub outline: bool,
    pub show_labels: bool,
    pub tool: Tool,
    pub brush: Brush,
    pub active_label: u8,
    pub maximized: Option<Pane>,
    pub view3d: View3d,
    pub model_panel: model_panel::ModelPanel,
    pub segmentation: segmentation::Segmentation,
    /// The edit a running segmentation has made so far (recorded as one undo step at the end).
    run_edit: Option<RunEdit>,
    /// The slice view the user last worked in (hovered, clicked, painted).
    pub focus_plane: Plane,
    /// A mask to open onto the next image that finishes loading (`--mask`).
    pub pending_mask: Option<PathBuf>,
    /// Changes with every opened image (segmentation sessions belong to one image).
    image_id: u64,
    pub prompts: Vec<PromptMark>,
    /// The box prompt changed and auto-preview is on: segment its slice once the model is free.
    preview_requested: bool,
    /// Which slices a run may reach (drawn as marks on the other planes' views).
    pub range: segmentation::RangeChoice,
    /// The document's revision right after the current box's preview was recorded: while it
    /// is unchanged, the next preview or Run of the box takes the preview's place in the
    /// history instead of stacking on it.
    preview_revision: Option<u64>,
    pub status: String,
    /// The title last sent to the window, so it is only sent when it changes.
    window_title: String,
    pub hover: Option<[usize; 3]>,
    pub settings: Settings,
    pub paths: AppPaths,
    load_job: Option<BackgroundJob<LoadMessage>>,
    stroke: Option<EditBuilder>,
    pub dialog: Option<Dialog>,
    pub stats: stats_panel::StatsPanel,
    /// The keyboard shortcuts overlay is shown.
    pub shortcuts_open: bool,
    pub classic: classic_tools::ClassicTools,
    gpu_error: Option<String>,
    uploaded_palette: Option<[u8; 1024]>,
    autosave: recovery::AutosaveClock,
    allow_close: bool,
}

impl ViewerApp {
    /// Builds the app; `paths` says where settings, recovery files and the cache live.
    pub fn new(cc: &eframe::CreationContext<'_>, path: Option<PathBuf>, paths: AppPaths) -> Self {
        let render_state = cc.wgpu_render_state.clone();
        if let Some(rs) = &render_state {
            let slices = SliceRenderer::new(&rs.device, &rs.queue, rs.target_format);
            let surfaces = MeshRenderer::new(&rs.device, rs.target_format);
            let mut renderer = rs.renderer.write();
            renderer.callback_resources.insert(slices);
            renderer.callback_resources.insert(surfaces);
        }
        let mut app = ViewerApp {
            gpu_error: render_state.is_none().then(|| "no wgpu device: the slice views need the wgpu renderer".to_string()),
            render_state,
            uploaded_palette: None,
            doc: None,
            views: [SliceView::new(Plane::Axial), SliceView::new(Plane::Coronal), SliceView::new(Plane::Sagittal)],
            crosshair: [0.0; 3],
            window: Window::new(0.0, 1.0),
            colormap: Colormap::Gray,
            label_opacity: 0.5,
            outline: false,
            show_labels: true,
            tool: Tool::Navigate,
            brush: Brush::default(),
            active_label: 1,
            maximized: None,
            view3d: View3d::default(),
            model_panel: model_panel::ModelPanel::default(),
            segmentation: segmentation::Segmentation::default(),
            run_edit: None,
            pending_mask: None,
            focus_plane: Plane::Axial,
            image_id: 0,
            prompts: Vec::new(),
            preview_requested: false,
            range: segmentation::RangeChoice::default(),
            preview_revision: None,
            status: String::new(),
            window_title: String::new(),
            hover: None,
            settings: Settings::load(&paths.settings),
            paths,
            load_job: None,
            stroke: None,
            dialog: None,
            stats: Default::default(),
            shortcuts_open: false,
            classic: Default::default(),
            autosave: recovery::AutosaveClock::default(),
            allow_close: false,
        };
        if let Some(path) = path {
            app.request_open(&cc.egui_ctx, path, None);
        } else if let Some(info) = recovery::list(&app.paths.recovery).into_iter().next() {
            app.dialog = Some(Dialog::RecoverAtStart(info));
        }
        app
    }

    /// True while an image is loading.
    pub fn is_loading(&self) -> bool {
        self.load_job.is_some()
    }

    /// Opens an image, asking first if there are unsaved changes.
    pub fn request_open(&mut self, ctx: &egui::Context, path: PathBuf, series: Option<SeriesSelector>) {
        if self.doc.as_ref().is_some_and(|d| d.is_dirty()) {
            self.dialog = Some(Dialog::UnsavedChanges(PendingAction::Open(path, series)));
        } else {
            self.start_loading(ctx, path, series);
        }
    }

    fn start_loading(&mut self, ctx: &egui::Context, path: PathBuf, series: Option<SeriesSelector>) {
        let title = format!("Opening {}", file_name(&path));
        self.status = title.clone();
        self.load_job = Some(BackgroundJob::spawn(title, Some(ctx.clone()), move |progress, tx| {
            let is_series_source = path.is_dir() || path.file_name().is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"));
            if series.is_none() && is_series_source {
                match crate::io::dicom::list_series(&path) {
                    Ok(list) if list.len() > 1 => {
                        tx.send(LoadMessage::ChooseSeries(path, list));
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tx.send(LoadMessage::Failed(e.to_string()));
                        return;
                    }
                }
            }
            let shared = std::sync::Arc::clone(progress);
            let report = crate::io::LoadProgress::new(move |done, total| shared.set(done as usize, total as usize));
            let result = Document::open(&path, series, Some(report));
            if !progress.is_cancelled() {
                tx.send(match result {
                    Ok(doc) => LoadMessage::Loaded(Box::new(doc)),
                    Err(e) => LoadMessage::Failed(e.to_string()),
                });
            }
        }));
    }

    /// Puts a freshly loaded document on screen.
    pub fn install_document(&mut self, doc: Document) {
        let g = doc.image.geometry.clone();
        self.crosshair = g.dims.map(|d| ((d as f64 - 1.0) / 2.0).round());
        self.window = default_window(&doc);
        self.views.iter_mut().for_each(|v| {
            v.zoom = 1.0;
            v.pan = egui::Vec2::ZERO;
        });
        self.prompts.clear();
        self.hover = None;
        self.image_id += 1;
        if let Some(job) = &self.segmentation.job {
            job.progress.cancel();
        }
        self.run_edit = None;
        let mut surfaces = self.render_state.as_ref().map(|rs| rs.renderer.write());
        self.view3d.reset(surfaces.as_mut().and_then(|r| r.callback_resources.get_mut::<MeshRenderer>()));
        drop(surfaces);
        self.active_label = doc.label_table.labels.first().map_or(1, |l| l.value);
        if let Some(rs) = &self.render_state {
            let mut renderer = rs.renderer.write();
            if let Some(slices) = renderer.callback_resources.get_mut::<SliceRenderer>() {
                match slices.set_volume(&rs.device, &rs.queue, &doc.image, &doc.labels) {
                    Ok(()) => {
                        self.uploaded_palette = None;
                        self.gpu_error = None;
                    }
                    Err(e) => self.gpu_error = Some(e.to_string()),
                }
            }
        }
        let warnings = doc.image.meta.warnings.join("; ");
        self.status = format!(
            "Opened {} — {} x {} x {}{}",
            file_name(&doc.image_path),
            g.dims[0],
            g.dims[1],
            g.dims[2],
            if warnings.is_empty() { String::new() } else { format!(" — warning: {warnings}") }
        );
        self.settings.add_recent(&doc.image_path);
        self.save_settings();
        if let Some(info) = recovery::find(&self.paths.recovery, &doc.image_path) {
            self.dialog = Some(Dialog::RecoverForImage(info));
        }
        self.doc = Some(doc);
        if let Some(mask) = self.pending_mask.take() {
            self.open_mask(&mask);
        }
    }

    fn save_settings(&mut self) {
        if let Err(e) = self.settings.save(&self.paths.settings) {
            self.status = format!("Could not save settings: {e}");
        }
    }

    /// Sends label-map changes and palette to the GPU.
    fn sync_gpu(&mut self) {
        let (Some(rs), Some(doc)) = (&self.render_state, self.doc.as_mut()) else { return };
        let regions = doc.take_gpu_regions();
        if regions.is_empty() {
            return;
        }
        let renderer = rs.renderer.read();
        if let Some(slices) = renderer.callback_resources.get::<SliceRenderer>() {
            for (region, bytes) in regions {
                slices.write_labels(&rs.queue, region.origin.map(|x| x as u32), region.size.map(|x| x as u32), &bytes);
            }
        }
    }

    /// Sends the label colours to the GPU when they changed.
    fn upload_palette(&mut self) {
        let (Some(rs), Some(doc)) = (&self.render_state, &self.doc) else { return };
        let palette = doc.label_table.palette();
        if self.uploaded_palette == Some(palette) {
            return;
        }
        let renderer = rs.renderer.read();
        if let Some(slices) = renderer.callback_resources.get::<SliceRenderer>() {
            slices.write_palette(&rs.queue, &palette);
            self.uploaded_palette = Some(palette);
        }
    }

    pub fn apply_preset(&mut self, preset: &WindowPreset) {
        self.window = preset.window();
    }

    /// Undo the last edit.
    /// The model the settings choose.
    fn model_choice(&self) -> crate::segment::engine::ModelChoice {
        crate::segment::engine::ModelChoice {
            checkpoint: self.settings.checkpoint.clone(),
            variant: self.settings.model_variant,
            config: self.settings.model_config.clone(),
            device: self.settings.device.as_deref().and_then(|d| d.parse().ok()).unwrap_or_default(),
        }
    }

    /// The box drawn last, in slice pixels, with the clicks made after it on its slice (which
    /// refine its answer there).
    fn box_from_marks(&self) -> Option<(crate::volume::SliceAxis, usize, [usize; 4], Vec<crate::segment::pipeline::Click>)> {
        let doc = self.doc.as_ref()?;
        let at = self.prompts.iter().rposition(|p| matches!(p, PromptMark::Box { .. }))?;
        let PromptMark::Box { plane, slice, a, b } = &self.prompts[at] else { return None };
        let axis = crate::volume::SliceAxis::from_normal(ViewFrame::new(*plane, &doc.image.geometry).normal);
        let (u, v) = axis.in_plane();
        // Within the slice: a box moved or drawn past an edge keeps its part inside.
        let dims = doc.dims();
        let clamp = |x: f64, axis: usize| (x.round().max(0.0) as usize).min(dims[axis] - 1);
        let bbox = [clamp(a[u].min(b[u]), u), clamp(a[v].min(b[v]), v), clamp(a[u].max(b[u]), u), clamp(a[v].max(b[v]), v)];
        let clicks = self.prompts[at + 1..]
            .iter()
            .filter_map(|p| match p {
                PromptMark::Point { plane: p_plane, slice: p_slice, at, positive } if p_plane == plane && p_slice == slice => {
                    Some(crate::segment::pipeline::Click { point: [at[u] as f32, at[v] as f32], positive: *positive })
                }
                _ => None,
            })
            .collect();
        Some((axis, *slice, bbox, clicks))
    }

    /// The prompt drawn last, as a segmentation prompt on its slice: a box (with the clicks
    /// refining it) if one is drawn, else the clicks on the slice of the last click.
    fn prompt_from_marks(&self) -> Option<(crate::volume::SliceAxis, usize, segmentation::Prompt)> {
        let doc = self.doc.as_ref()?;
        let g = &doc.image.geometry;
        let axis_of = |plane: Plane| crate::volume::SliceAxis::from_normal(ViewFrame::new(plane, g).normal);
        if let Some((axis, slice, bbox, clicks)) = self.box_from_marks() {
            return Some((axis, slice, segmentation::Prompt::Box { bbox, clicks }));
        }
        let Some(PromptMark::Point { plane: last_plane, slice: last_slice, .. }) = self.prompts.last() else { return None };
        let axis = axis_of(*last_plane);
        let (u, v) = axis.in_plane();
        let (mut points, mut labels) = (Vec::new(), Vec::new());
        for p in &self.prompts {
            if let PromptMark::Point { plane, slice, at, positive } = p
                && plane == last_plane
                && slice == last_slice
            {
                points.push([at[u] as f32, at[v] as f32]);
                labels.push(i64::from(*positive));
            }
        }
        let current = self.label_slice(axis, *last_slice);
        Some((axis, *last_slice, segmentation::Prompt::Clicks { points, labels, current }))
    }

    /// The active label on one slice (x fastest, 1 = inside).
    fn label_slice(&self, axis: crate::volume::SliceAxis, index: usize) -> Vec<u8> {
        let Some(doc) = &self.doc else { return Vec::new() };
        doc.slice_labels(axis, index).into_iter().map(|l| u8::from(l == self.active_label)).collect()
    }

    /// The axis and key slice the next run would start from: the box's, else the crosshair on
    /// the view last worked in.
    fn run_origin(&self) -> Option<(crate::volume::SliceAxis, usize)> {
        if let Some((axis, slice, _, _)) = self.box_from_marks() {
            return Some((axis, slice));
        }
        let doc = self.doc.as_ref()?;
        let axis = crate::volume::SliceAxis::from_normal(ViewFrame::new(self.focus_plane, &doc.image.geometry).normal);
        Some((axis, self.crosshair[axis.normal()].round().max(0.0) as usize))
    }

    /// The marks of the propagation range, unless it is the whole volume.
    fn range_marks(&self) -> Option<slice_view::RangeMarks> {
        let (axis, key) = self.run_origin()?;
        let count = self.doc.as_ref()?.dims()[axis.normal()];
        let [first, last] = self.range.range(key, count).ok().flatten()?;
        Some(slice_view::RangeMarks { axis: axis.normal(), first, last })
    }

    /// Segments the box's slice alone (with the clicks refining it), as Run would start.
    pub fn preview_box(&mut self, ctx: &egui::Context) {
        self.preview_requested = false;
        match self.box_from_marks() {
            Some((axis, slice, bbox, clicks)) => self.start_segmentation(ctx, axis, slice, segmentation::Prompt::Preview { bbox, clicks }),
            None => self.status = "Draw a box (B) on a slice first".into(),
        }
    }

    /// Runs MedSAM2 on the prompt drawn last (Enter).
    pub fn run_segmentation(&mut self, ctx: &egui::Context) {
        match self.prompt_from_marks() {
            Some((axis, slice, prompt)) => self.start_segmentation(ctx, axis, slice, prompt),
            None => self.status = "Draw a box (B) or click points (P / M) on a slice first".into(),
        }
    }

    /// Propagates the active label's mask on the current slice of the view last used (as
    /// corrected there) through the volume both ways.
    pub fn repropagate_from_slice(&mut self, ctx: &egui::Context) {
        let Some(doc) = &self.doc else { return };
        let plane = self.focus_plane;
        let axis = crate::volume::SliceAxis::from_normal(ViewFrame::new(plane, &doc.image.geometry).normal);
        let slice = self.crosshair[axis.normal()].round() as usize;
        let mask = self.label_slice(axis, slice);
        if mask.iter().all(|&v| v == 0) {
            self.status = format!("The active label is empty on {} slice {}: draw or correct it there first", plane.name().to_lowercase(), slice + 1);
            return;
        }
        self.start_segmentation(ctx, axis, slice, segmentation::Prompt::Mask(mask));
    }

    fn start_segmentation(&mut self, ctx: &egui::Context, axis: crate::volume::SliceAxis, slice: usize, prompt: segmentation::Prompt) {
        let Some(doc) = &self.doc else { return };
        if self.is_segmenting() {
            return;
        }
        let label = self.active_label;
        if doc.label_table.lock_mask()[label as usize] {
            self.status = format!("Label {label} is locked: unlock it or choose another label to segment into");
            return;
        }
        if let segmentation::Prompt::Box { bbox: b, .. } | segmentation::Prompt::Preview { bbox: b, .. } = &prompt
            && (b[2] <= b[0] || b[3] <= b[1])
        {
            self.status = "The box is empty: drag a box around the object".into();
            return;
        }
        if let Err(e) = self.model_panel.checkpoint(&self.settings) {
            // A box also serves the classic tools: its automatic preview asks for nothing.
            if matches!(prompt, segmentation::Prompt::Preview { .. }) {
                self.status = "No preview: the MedSAM2 checkpoint is not there (see the model panel)".into();
            } else {
                self.dialog = Some(Dialog::NoWeights(e.clone()));
            }
            return;
        }
        let description = prompt.description();
        let (adds, preview) = match &prompt {
            segmentation::Prompt::Box { .. } => (true, false),
            segmentation::Prompt::Preview { .. } => (true, true),
            _ => (false, false),
        };
        // A preview reaches no other slice: the range matters to propagation only.
        let range = match self.range.range(slice, doc.dims()[axis.normal()]) {
            Ok(range) => range,
            Err(_) if preview => None,
            Err(e) => {
                self.status = e;
                return;
            }
        };
        let Some(doc) = &mut self.doc else { return };
        // A stroke still open is finished first: the run's undo step comes after it.
        if let Some(stroke) = self.stroke.take() {
            Self::refused(&mut self.status, "Brush", doc.record(stroke.finish()));
        }
        // The box's preview gives way to its next preview or its run.
        if adds && self.preview_revision.take().is_some_and(|r| r == doc.revision()) {
            Self::refused(&mut self.status, "Preview", doc.undo().map(drop));
        }
        if let Err(e) = doc.begin_run() {
            self.status = format!("{description}: {e}");
            return;
        }
        self.run_edit = Some(RunEdit { axis, label, adds, preview, before: Default::default(), ended: false, edit: VoxelEdit::new(description) });
        self.segmentation.start(
            ctx,
            segmentation::Request {
                image: std::sync::Arc::clone(&doc.image),
                image_id: self.image_id,
                axis,
                slice,
                window: (doc.image.voxel_type() != crate::volume::VoxelType::U8).then_some(self.window),
                prompt,
                model: self.model_choice(),
                bounds: crate::segment::pipeline::PassBounds { range, stop_after_empty: self.settings.stop_after_empty() },
            },
        );
    }

    /// Writes streamed slices into the label map (within a time budget per frame, so the UI
    /// stays responsive); the finished run becomes one undo step.
    fn poll_segmentation(&mut self, ctx: &egui::Context) {
        let finished = self.segmentation.job.as_ref().is_none_or(|job| job.is_finished());
        let started = std::time::Instant::now();
        let mut more = false;
        let mut slices = 0;
        while let Some(message) = self.segmentation.job.as_ref().and_then(|job| job.next()) {
            match message {
                segmentation::Message::Status(s) => self.segmentation.status = s,
                segmentation::Message::Slice { index, mask } => {
                    if let (Some(doc), Some(run)) = (&mut self.doc, &mut self.run_edit) {
                        let before = run.before.entry(index).or_insert_with(|| doc.slice_labels(run.axis, index));
                        doc.write_slice(run.axis, index, &mask, run.label, run.adds.then_some(before.as_slice()));
                    }
                    slices += 1;
                }
                segmentation::Message::Done { slices, seconds, end, encoder_runs } => {
                    self.finish_run();
                    self.segmentation.encoder_runs = encoder_runs;
                    self.status = match end {
                        segmentation::RunEnd::Cancelled => format!("Segmentation cancelled after {slices} slices ({seconds:.1} s); the slices done are kept (Ctrl+Z undoes them)"),
                        segmentation::RunEnd::Previewed => format!("Previewed the box's slice in {seconds:.2} s: click to refine, Run (Enter) to propagate"),
                        segmentation::RunEnd::Propagated([forward, backward]) => format!(
                            "Segmented {slices} slices in {seconds:.1} s: forward {}, backward {}",
                            forward.describe(),
                            backward.describe()
                        ),
                    };
                }
                segmentation::Message::Failed(e) => {
                    self.finish_run();
                    self.status = format!("Segmentation failed: {e}");
                    self.dialog = Some(Dialog::Error(e));
                }
            }
            if started.elapsed() > STREAM_BUDGET || slices >= STREAM_SLICES_PER_FRAME {
                more = true;
                break;
            }
        }
        if !more && finished {
            self.finish_run();
            self.segmentation.job = None;
            self.segmentation.status.clear();
        }
        // The undo step: each touched slice compared with its snapshot, within the budget.
        if let (Some(doc), Some(run)) = (&mut self.doc, &mut self.run_edit)
            && run.ended
        {
            while started.elapsed() <= STREAM_BUDGET {
                let Some((index, before)) = run.before.pop_first() else { break };
                doc.slice_change(run.axis, index, &before, &mut run.edit);
            }
            if run.before.is_empty() {
                let run = self.run_edit.take().expect("checked above");
                let recorded = !run.edit.is_empty();
                doc.finish_run(run.edit);
                self.preview_revision = (run.preview && recorded).then(|| doc.revision());
            } else {
                more = true;
            }
        }
        if more {
            ctx.request_repaint();
        }
    }

    /// True from Run until the run's undo step is recorded: edits and undo wait meanwhile.
    pub fn is_segmenting(&self) -> bool {
        self.segmentation.is_running() || self.run_edit.is_some()
    }

    fn finish_run(&mut self) {
        if let Some(run) = &mut self.run_edit {
            run.ended = true;
        }
    }

    /// Puts a refused change to the label map into the status line (`what` names the change).
    pub(crate) fn refused(status: &mut String, what: &str, result: Result<(), document::EditRefused>) {
        if let Err(e) = result {
            *status = format!("{what}: {e}");
        }
    }

    pub fn undo(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        match doc.undo() {
            Ok(Some(what)) => self.status = format!("Undid: {what}"),
            Ok(None) => {}
            Err(e) => self.status = format!("Undo: {e}"),
        }
    }

    /// Redo the last undone edit.
    pub fn redo(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        match doc.redo() {
            Ok(Some(what)) => self.status = format!("Redid: {what}"),
            Ok(None) => {}
            Err(e) => self.status = format!("Redo: {e}"),
        }
    }

    /// Fills the holes of the active label on every axial slice (one undo step).
    pub fn fill_holes(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        let axis = crate::volume::SliceAxis::from_normal(ViewFrame::new(Plane::Axial, &doc.image.geometry).normal);
        let edit = morphology::fill_holes(doc, self.active_label, axis);
        self.status = format!("Filled {} voxels", edit.len());
        Self::refused(&mut self.status, "Fill holes", doc.apply(edit));
    }

    /// Keeps only the largest piece of the active label (one undo step).
    pub fn remove_islands(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        let edit = morphology::remove_islands(doc, self.active_label);
        self.status = format!("Removed {} island voxels", edit.len());
        Self::refused(&mut self.status, "Remove islands", doc.apply(edit));
    }

    /// Save to the current mask path, or ask for one.
    pub fn save(&mut self) {
        match self.doc.as_ref().and_then(|d| d.mask_path.clone()) {
            Some(path) => self.save_to(&path),
            None => self.save_as(),
        }
    }

    pub fn save_as(&mut self) {
        let Some(doc) = &self.doc else { return };
        let suggested = default_mask_name(&doc.image_path);
        let dialog = rfd::FileDialog::new().add_filter("NIfTI", &["nii.gz", "nii"]).set_file_name(suggested);
        if let Some(path) = dialog.save_file() {
            self.save_to(&path);
        }
    }

    /// Writes the mask (atomically) and forgets the recovery copy.
    pub fn save_to(&mut self, path: &Path) {
        let Some(doc) = &mut self.doc else { return };
        match doc.save_mask(path) {
            Ok(()) => {
                recovery::remove(&self.paths.recovery, &doc.image_path);
                self.status = format!("Saved {}", file_name(path));
            }
            Err(e) => self.status = format!("Save failed: {e}"),
        }
    }

    /// Opens a mask file onto the current image.
    pub fn open_mask(&mut self, path: &Path) {
        let Some(doc) = &mut self.doc else { return };
        match doc.open_mask(path) {
            Ok(None) => self.status = format!("Opened mask {}", file_name(path)),
            Ok(Some(warning)) => self.status = format!("Opened mask {} — warning: {warning}", file_name(path)),
            Err(e) => self.status = format!("Cannot open mask: {e}"),
        }
    }

    fn handle_view_events(&mut self, plane: Plane, events: Vec<ViewEvent>) {
        let Some(doc) = &mut self.doc else { return };
        let g = doc.image.geometry.clone();
        if !events.is_empty() {
            self.focus_plane = plane;
        }
        let mut range_moved = None;
        for event in events {
            match event {
                ViewEvent::Hover(v) => self.hover = Some(v),
                ViewEvent::Crosshair(v) => self.crosshair = v.map(|x| x.round()),
                ViewEvent::StepSlices(n) => {
                    let f = ViewFrame::new(plane, &g);
                    let last = f.slice_count(&g) as f64 - 1.0;
                    self.crosshair[f.normal] = (self.crosshair[f.normal].round() + n as f64).clamp(0.0, last);
                }
                ViewEvent::WindowLevel { dwidth, dlevel } => {
                    let (w, l) = (self.window.width().max(1e-3), self.window.level());
                    let new_w = (w * (1.0 + dwidth as f64)).max(1e-3);
                    let new_l = l + dlevel as f64 * w;
                    self.window = Window::from_width_level(new_w, new_l);
                }
                ViewEvent::Paint { at, normal, erase } => {
                    let voxels = brush::footprint(&g, at, normal, self.brush);
                    let edit = if erase {
                        // The eraser takes away the active label only.
                        let active = self.active_label;
                        doc.paint_edit(voxels.into_iter().filter(|&i| doc.labels[i] == active), 0, "Erase")
                    } else {
                        doc.paint_edit(voxels, self.active_label, "Brush")
                    };
                    // Shown at once; the whole stroke becomes one undo step at StrokeEnd.
                    let what = if erase { "Erase" } else { "Brush" };
                    match doc.apply_unrecorded(&edit) {
                        Ok(()) => self.stroke.get_or_insert_with(|| EditBuilder::new(what)).merge(edit),
                        Err(e) => self.status = format!("{what}: {e}"),
                    }
                }
                ViewEvent::StrokeEnd => {
                    if let Some(stroke) = self.stroke.take() {
                        Self::refused(&mut self.status, "Brush", doc.record(stroke.finish()));
                    }
                }
                ViewEvent::BoxDrawn { plane, slice, a, b } => {
                    // A new box starts a new object: the clicks of the old one go with it, and
                    // its preview stays.
                    self.prompts.clear();
                    self.preview_revision = None;
                    self.prompts.push(PromptMark::Box { plane, slice, a, b });
                    self.preview_requested = self.settings.auto_preview();
                }
                ViewEvent::BoxEdited { plane, slice, a, b } => {
                    // The same object, its box moved or resized: the clicks refining it stay,
                    // and its new preview takes the old one's place.
                    if let Some(first @ PromptMark::Box { .. }) = self.prompts.first_mut() {
                        *first = PromptMark::Box { plane, slice, a, b };
                        self.preview_requested = self.settings.auto_preview();
                    }
                }
                ViewEvent::Point { plane, slice, at, positive } => {
                    let refines_box = matches!(self.prompts.first(), Some(PromptMark::Box { plane: p, slice: s, .. }) if *p == plane && *s == slice);
                    self.prompts.push(PromptMark::Point { plane, slice, at, positive });
                    self.preview_requested |= refines_box && self.settings.auto_preview();
                }
                ViewEvent::Seed(at) => self.classic.seed = Some(at),
                ViewEvent::RangeMoved { end, slice } => range_moved = Some((end, slice)),
            }
        }
        if let Some((end, slice)) = range_moved
            && let Some(marks) = self.range_marks()
        {
            let [first, last] = match end {
                slice_view::RangeEnd::First => [slice.min(marks.last), marks.last],
                slice_view::RangeEnd::Last => [marks.first, slice.max(marks.first)],
            };
            self.range = segmentation::RangeChoice::Slices([first, last]);
        }
    }

    fn handle_shortcuts(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        for command in ctx.input_mut(Command::pressed) {
            self.execute(command, ctx);
        }
    }

    /// Carries out a command, whether it came from a key or a menu.
    pub fn execute(&mut self, command: Command, ctx: &egui::Context) {
        match command {
            Command::Open => self.open_dialog(ctx),
            Command::Save => self.save(),
            Command::SaveAs => self.save_as(),
            Command::Undo => self.undo(),
            Command::Redo => self.redo(),
            Command::Run => self.run_segmentation(ctx),
            Command::Repropagate => self.repropagate_from_slice(ctx),
            Command::Cancel => {
                if let Some(job) = &self.segmentation.job {
                    job.progress.cancel();
                }
            }
            Command::Tool(tool) => self.tool = tool,
            Command::BrushSmaller => self.brush.radius_mm = (self.brush.radius_mm / 1.25).max(0.5),
            Command::BrushLarger => self.brush.radius_mm = (self.brush.radius_mm * 1.25).min(100.0),
            Command::BrushBall => self.brush.sphere = !self.brush.sphere,
            Command::FillHoles => self.fill_holes(),
            Command::RemoveIslands => self.remove_islands(),
            Command::Outline => self.outline = !self.outline,
            Command::HideLabels => self.show_labels = !self.show_labels,
            Command::Preset(n) => self.window = CT_PRESETS[n].window(),
            Command::Statistics => self.stats.open = !self.stats.open,
            Command::Threshold => classic_tools::start_threshold(self),
            Command::LungMask => classic_tools::start_lung_mask(self),
            Command::Shortcuts => self.shortcuts_open = !self.shortcuts_open,
        }
    }

    pub fn open_dialog(&mut self, ctx: &egui::Context) {
        if let Some(path) = rfd::FileDialog::new()
            .add_filter("Images", &["nii", "gz", "mhd", "mha", "npz", "dcm"])
            .add_filter("All files", &["*"])
            .pick_file()
        {
            self.request_open(ctx, path, None);
        }
    }

    pub fn open_folder_dialog(&mut self, ctx: &egui::Context) {
        if let Some(path) = rfd::FileDialog::new().pick_folder() {
            self.request_open(ctx, path, None);
        }
    }

    /// Writes the bundled sample to the cache folder and opens it.
    pub fn open_sample(&mut self, ctx: &egui::Context) {
        let path = self.paths.cache.join("sample").join("chest_ct_lesion.nii.gz");
        let written = path.exists() || {
            std::fs::create_dir_all(path.parent().expect("has a parent")).is_ok() && std::fs::write(&path, SAMPLE_NIFTI).is_ok()
        };
        if written {
            self.request_open(ctx, path, None);
        } else {
            self.status = format!("Cannot write the sample to {}", path.display());
        }
    }

    fn poll_jobs(&mut self, ctx: &egui::Context) {
        let Some(job) = &self.load_job else { return };
        let messages = job.drain();
        let finished = job.is_finished();
        for m in messages {
            match m {
                LoadMessage::Loaded(doc) => self.install_document(*doc),
                LoadMessage::ChooseSeries(path, list) => self.dialog = Some(Dialog::ChooseSeries(path, list)),
                LoadMessage::Failed(e) => {
                    self.status = format!("Could not open: {e}");
                    self.dialog = Some(Dialog::Error(e));
                }
            }
        }
        if finished {
            self.load_job = None;
        } else {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    fn handle_close(&mut self, ctx: &egui::Context) {
        let wants_close = ctx.input(|i| i.viewport().close_requested());
        if wants_close && !self.allow_close && self.doc.as_ref().is_some_and(|d| d.is_dirty()) {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.dialog = Some(Dialog::UnsavedChanges(PendingAction::Quit));
        }
    }

    /// Carries out an action that waited for the unsaved-changes question.
    pub fn continue_with(&mut self, ctx: &egui::Context, action: PendingAction) {
        match action {
            PendingAction::Open(path, series) => self.start_loading(ctx, path, series),
            PendingAction::Quit => {
                self.allow_close = true;
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
        }
    }

    fn autosave(&mut self) {
        if let Some(doc) = &self.doc
            && doc.is_dirty()
            && self.autosave.due(recovery::AUTOSAVE_EVERY)
            && let Err(e) = recovery::write(&self.paths.recovery, doc)
        {
            self.status = format!("Autosave failed: {e}");
        }
    }

    fn status_line(&self) -> String {
        let Some(doc) = &self.doc else { return self.status.clone() };
        let g = &doc.image.geometry;
        let Some(v) = self.hover.filter(|v| (0..3).all(|a| v[a] < g.dims[a])) else { return self.status.clone() };
        let w = g.voxel_to_world(v.map(|x| x as f64));
        let value = doc.image.value_at(v, 0).unwrap_or(f64::NAN);
        let unit = if doc.image.is_ct() { " HU" } else { "" };
        let label = doc.labels[doc.index(v)];
        format!(
            "voxel ({}, {}, {})   LPS ({:.1}, {:.1}, {:.1}) mm   value {}{unit}   label {}   |   {}",
            v[0], v[1], v[2], w[0], w[1], w[2], format_value(value), label, self.status
        )
    }

    fn views_ui(&mut self, ui: &mut egui::Ui) {
        let Some(doc) = &self.doc else {
            panels::start_screen(self, ui);
            return;
        };
        let area = ui.available_rect_before_wrap();
        let g = doc.image.geometry.clone();
        let gpu = self.render_state.is_some() && self.gpu_error.is_none();
        let panes: Vec<(Pane, egui::Rect)> = match self.maximized {
            Some(p) => vec![(p, area)],
            None => {
                let half = egui::vec2((area.width() - 2.0) / 2.0, (area.height() - 2.0) / 2.0);
                let cell = |col: f32, row: f32| egui::Rect::from_min_size(area.min + egui::vec2(col * (half.x + 2.0), row * (half.y + 2.0)), half);
                Pane::ALL.iter().zip([cell(0.0, 0.0), cell(1.0, 0.0), cell(0.0, 1.0), cell(1.0, 1.0)]).map(|(&p, r)| (p, r)).collect()
            }
        };
        let inputs = ViewInputs {
            geometry: &g,
            crosshair: self.crosshair,
            window: self.window,
            colormap: self.colormap,
            label_opacity: self.label_opacity,
            outline: self.outline,
            show_labels: self.show_labels,
            tool: self.tool,
            brush: self.brush,
            prompts: &self.prompts,
            range_marks: self.range_marks(),
            gpu,
        };
        let mut all_events = Vec::new();
        let double_clicked = ui.input(|i| i.pointer.button_double_clicked(egui::PointerButton::Primary));
        for (pane, rect) in panes {
            match pane {
                Pane::Slice(plane) => {
                    let n = plane as usize;
                    let events = self.views[n].show(ui, rect, &inputs);
                    all_events.push((plane, events));
                    if ui.rect_contains_pointer(rect) && double_clicked && self.tool == Tool::Navigate {
                        self.maximized = if self.maximized.is_some() { None } else { Some(pane) };
                    }
                }
                Pane::ThreeD => {
                    // A double click in the 3D pane re-frames the camera; the View menu maximises it.
                    self.view3d.show(ui, rect, &g, &doc.label_table, self.crosshair, gpu);
                }
            }
        }
        if let Some(e) = &self.gpu_error {
            ui.painter().text(area.center(), egui::Align2::CENTER_CENTER, e, egui::FontId::proportional(16.0), egui::Color32::LIGHT_RED);
        }
        for (plane, events) in all_events {
            self.handle_view_events(plane, events);
        }
    }
}

/// The window a new image starts with: CT soft tissue for CT, else the full range.
fn default_window(doc: &Document) -> Window {
    if doc.image.is_ct() {
        return CT_PRESETS[0].window();
    }
    let (lo, hi) = doc.value_range().unwrap_or((0.0, 1.0));
    Window::new(lo, if hi > lo { hi } else { lo + 1.0 })
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 { format!("{v:.0}") } else { format!("{v:.3}") }
}

/// The last component of a path, for the status line (the full path is in the window title).
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The window title: the image's full path and whether the mask has unsaved changes.
fn window_title(doc: Option<&Document>) -> String {
    match doc {
        Some(doc) => format!("{}{} — MedSAM Viewer", if doc.is_dirty() { "• " } else { "" }, doc.image_path.display()),
        None => "MedSAM Viewer".into(),
    }
}

/// `scan.nii.gz` -> `scan_mask.nii.gz`.
pub fn default_mask_name(image: &Path) -> String {
    let name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let stem = name.strip_suffix(".nii.gz").or_else(|| name.rsplit_once('.').map(|(s, _)| s)).unwrap_or(&name);
    format!("{stem}_mask.nii.gz")
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.poll_jobs(&ctx);
        self.handle_close(&ctx);
        self.handle_shortcuts(&ctx);
        let title = window_title(self.doc.as_ref());
        if title != self.window_title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.window_title = title;
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect());
        if let Some(path) = dropped.into_iter().next() {
            self.request_open(&ctx, path, None);
        }
        panels::menu_bar(self, ui);
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                if let Some(job) = &self.load_job {
                    let (done, total) = job.progress.get();
                    if total > 0 {
                        ui.add(egui::ProgressBar::new(done as f32 / total as f32).desired_width(200.0).show_percentage());
                    } else {
                        ui.spinner();
                    }
                    ui.label(format!("{} ({:.1} s)", job.title, job.elapsed().as_secs_f32()));
                    if ui.button("Cancel").clicked() {
                        job.progress.cancel();
                        self.load_job = None;
                        self.status = "Opening cancelled".into();
                    }
                } else {
                    ui.label(self.status_line());
                }
            });
        });
        egui::Panel::left("tools").resizable(true).default_size(250.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| panels::side_panel(self, ui));
        });
        egui::CentralPanel::no_frame().show(ui, |ui| self.views_ui(ui));
        dialogs::show(self, &ctx);
        command::shortcuts_window(&ctx, &mut self.shortcuts_open);
        stats_panel::show(self, &ctx);
        classic_tools::update(self, &ctx);
        self.sync_gpu();
        self.view3d.poll(self.render_state.as_ref());
        self.poll_segmentation(&ctx);
        if self.preview_requested && !self.is_segmenting() && self.doc.is_some() {
            self.preview_box(&ctx);
        }
        if self.model_panel.poll() {
            self.status = "MedSAM2 checkpoint downloaded and verified".into();
        }
        // Surfaces are rebuilt once a propagation has ended, not for every streamed slice.
        if let Some(doc) = &self.doc
            && !self.is_segmenting()
        {
            self.view3d.schedule(&ctx, doc.revision(), &doc.image.geometry, &doc.labels);
        }
        self.upload_palette();
        self.autosave();
    }
}
