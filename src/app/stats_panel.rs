//! The statistics window: measurements of the active label (voxels, volume, surface, box and
//! centroid in LPS, intensity statistics, RECIST diameters), a histogram of the image's values
//! next to the mask's, the area of every slice, export of the whole report (the same CSV and
//! JSON as the `stats` command), and the comparison with a prior study's mask of the same
//! patient (change of volume and longest diameter per label).
//!
//! Measuring runs on a background job, never on the UI thread; while the window is open it is
//! started again once the label map has stayed unchanged for `DEBOUNCE` (a brush stroke does not
//! start one measurement per dab).

use super::ViewerApp;
use super::command::Command;
use super::document::Document;
use super::jobs::BackgroundJob;
use crate::io::{self, OpenOptions};
use crate::measure::histogram::{self, Histograms};
use crate::measure::{self, LabelMeasurements, MeasureOptions, MeasureReport, export};
use crate::volume::Volume;
use egui_plot::{Bar, BarChart, Legend, Line, Plot, VLine};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long the label map must stay unchanged before it is measured again.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Bins of the intensity histogram (about; integer images get whole-number bins).
const HISTOGRAM_BINS: usize = 128;

/// Colours of the two series of every plot: the image (or the prior study) and the mask (now).
const FIRST_SERIES: egui::Color32 = egui::Color32::from_rgb(150, 150, 160);
const SECOND_SERIES: egui::Color32 = egui::Color32::from_rgb(240, 140, 40);

/// Everything measured about the label map at one revision.
#[derive(Clone, Debug)]
pub struct Statistics {
    /// `Document::revision` of the label map that was measured.
    pub revision: u64,
    pub report: MeasureReport,
    pub histograms: Histograms,
}

impl Statistics {
    pub fn label(&self, label: u8) -> Option<&LabelMeasurements> {
        self.report.labels.iter().find(|m| m.label == label)
    }
}

/// A prior study's mask, measured over the current image.
#[derive(Clone, Debug)]
pub struct PriorStudy {
    /// The mask's file name (never the whole path: it is shown, and screenshots must not depend
    /// on where files live).
    pub name: String,
    pub report: MeasureReport,
}

/// How one label changed from the prior study to now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LabelChange {
    pub label: u8,
    pub prior_ml: f64,
    pub current_ml: f64,
    pub prior_longest_mm: f64,
    pub current_longest_mm: f64,
}

impl LabelChange {
    pub fn volume_change_ml(&self) -> f64 {
        self.current_ml - self.prior_ml
    }

    /// Relative change of volume in %; `None` when the label was absent before.
    pub fn volume_change_percent(&self) -> Option<f64> {
        percent(self.prior_ml, self.current_ml)
    }

    pub fn diameter_change_mm(&self) -> f64 {
        self.current_longest_mm - self.prior_longest_mm
    }

    /// Relative change of the longest diameter in %; `None` when the label was absent before.
    pub fn diameter_change_percent(&self) -> Option<f64> {
        percent(self.prior_longest_mm, self.current_longest_mm)
    }
}

fn percent(before: f64, after: f64) -> Option<f64> {
    (before > 0.0).then(|| (after - before) / before * 100.0)
}

/// The change of every label present in either report (absent = 0), by label value.
pub fn changes(prior: &MeasureReport, current: &MeasureReport) -> Vec<LabelChange> {
    let mut values: Vec<u8> = prior.labels.iter().chain(&current.labels).map(|m| m.label).collect();
    values.sort_unstable();
    values.dedup();
    let find = |r: &MeasureReport, v: u8| r.labels.iter().find(|m| m.label == v).map_or((0.0, 0.0), |m| (m.volume_ml, m.longest_diameter_mm));
    values
        .into_iter()
        .map(|label| {
            let (prior_ml, prior_longest_mm) = find(prior, label);
            let (current_ml, current_longest_mm) = find(current, label);
            LabelChange { label, prior_ml, current_ml, prior_longest_mm, current_longest_mm }
        })
        .collect()
}

/// What a measuring job sends back.
enum StatsMessage {
    Measured(Box<Statistics>),
    PriorMeasured(Box<PriorStudy>),
    Failed(String),
}

/// State of the statistics window.
#[derive(Default)]
pub struct StatsPanel {
    pub open: bool,
    /// The image the statistics and the prior study belong to.
    image: Weak<Volume>,
    pub stats: Option<Statistics>,
    pub prior: Option<PriorStudy>,
    /// The last error or export result, shown in the window.
    pub notice: Option<String>,
    job: Option<BackgroundJob<StatsMessage>>,
    prior_job: Option<BackgroundJob<StatsMessage>>,
    /// The latest revision seen and when it was first seen (for the debounce).
    seen: Option<(u64, Instant)>,
}

impl StatsPanel {
    /// True while a measurement (of the mask or of a prior mask) runs.
    pub fn is_busy(&self) -> bool {
        self.job.is_some() || self.prior_job.is_some()
    }

    /// True when the statistics shown are those of the document's label map as it is now.
    pub fn is_current(&self, doc: &Document) -> bool {
        self.belongs_to(doc) && self.stats.as_ref().is_some_and(|s| s.revision == doc.revision())
    }

    fn belongs_to(&self, doc: &Document) -> bool {
        std::ptr::eq(self.image.as_ptr(), Arc::as_ptr(&doc.image))
    }

    /// Forgets what belongs to another image, takes finished results and starts a measurement
    /// when the window is open and the label map changed (after the debounce).
    pub fn update(&mut self, doc: &Document) {
        if !self.belongs_to(doc) {
            *self = StatsPanel { open: self.open, image: Arc::downgrade(&doc.image), ..StatsPanel::default() };
        }
        for job in [&mut self.job, &mut self.prior_job] {
            let Some(running) = job else { continue };
            let messages = running.drain();
            let finished = running.is_finished();
            for message in messages {
                match message {
                    StatsMessage::Measured(stats) => self.stats = Some(*stats),
                    StatsMessage::PriorMeasured(prior) => {
                        self.notice = None;
                        self.prior = Some(*prior);
                    }
                    StatsMessage::Failed(e) => self.notice = Some(e),
                }
            }
            if finished {
                *job = None;
            }
        }
        if !self.open || self.job.is_some() {
            return;
        }
        let revision = doc.revision();
        if self.stats.as_ref().is_some_and(|s| s.revision == revision) {
            return;
        }
        let due = match self.seen {
            Some((seen, since)) if seen == revision => self.stats.is_none() || since.elapsed() >= DEBOUNCE,
            _ => {
                self.seen = Some((revision, Instant::now()));
                // The first measurement starts at once; later ones wait until editing pauses.
                self.stats.is_none()
            }
        };
        if due {
            self.start(doc);
        }
    }

    /// Measures the document's label map on a background job.
    fn start(&mut self, doc: &Document) {
        let image = Arc::clone(&doc.image);
        let labels = doc.label_volume();
        let revision = doc.revision();
        self.seen = Some((revision, Instant::now()));
        self.job = Some(BackgroundJob::spawn("Measuring", None, move |progress, tx| {
            progress.set(0, 2);
            let measured = measure::measure(&image, &labels, None, &MeasureOptions::default()).and_then(|report| {
                progress.set(1, 2);
                let values = measure::label_values(&labels, "mask")?;
                let histograms = histogram::histograms(&image, &values, histogram::value_range(&image), HISTOGRAM_BINS);
                Ok(Statistics { revision, report, histograms })
            });
            progress.set(2, 2);
            tx.send(match measured {
                Ok(stats) => StatsMessage::Measured(Box::new(stats)),
                Err(e) => StatsMessage::Failed(format!("Cannot measure the mask: {e}")),
            });
        }));
    }

    /// Reads a prior study's mask (it must lie on the open image's grid) and measures it over
    /// the open image on a background job; the comparison shows once it is done.
    pub fn open_prior(&mut self, doc: &Document, path: &Path) {
        if !self.belongs_to(doc) {
            self.update(doc);
        }
        let image = Arc::clone(&doc.image);
        let path = path.to_path_buf();
        let name = super::file_name(&path);
        self.notice = None;
        self.prior_job = Some(BackgroundJob::spawn("Measuring the prior mask", None, move |_, tx| {
            let measured = io::open(&path, &OpenOptions::default()).map_err(|e| e.to_string()).and_then(|mask| {
                measure::check_same_grid(&image.geometry, &mask, "prior mask").map_err(|e| e.to_string())?;
                measure::measure(&image, &mask, None, &MeasureOptions::default()).map_err(|e| e.to_string())
            });
            tx.send(match measured {
                Ok(report) => StatsMessage::PriorMeasured(Box::new(PriorStudy { name, report })),
                Err(e) => StatsMessage::Failed(format!("Cannot use {name} as the prior mask: {e}")),
            });
        }));
    }

    /// Writes the report of every label: CSV for a `.csv` path, else JSON.
    pub fn export(&self, path: &Path) -> Result<(), String> {
        match &self.stats {
            Some(stats) => write_report(&stats.report, path),
            None => Err("nothing measured yet".into()),
        }
    }

    /// The window's contents for `label` of `doc` (also keeps the measurements up to date).
    pub fn ui(&mut self, ui: &mut egui::Ui, doc: &Document, label: u8) {
        self.update(doc);
        let title = match doc.label_table.get(label).map(|l| l.name.trim()) {
            Some(name) if !name.is_empty() && name != format!("Label {label}") => format!("{name} (label {label})"),
            _ => format!("Label {label}"),
        };
        ui.heading(title);
        let mut notice = None;
        match &self.stats {
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Measuring…");
                });
            }
            Some(stats) => {
                if self.job.is_some() || stats.revision != doc.revision() {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Updating…");
                    });
                }
                let unit = stats.report.intensity_unit.unwrap_or("");
                match stats.label(label) {
                    Some(m) => {
                        measurement_grid(ui, m, unit, stats.report.diameter_axis.name());
                        notice = export_buttons(ui, &stats.report);
                        histogram_plot(ui, &stats.histograms, label, unit);
                        area_plot(ui, m, &stats.report);
                    }
                    None => {
                        ui.label(format!("Label {label} has no voxels."));
                        notice = export_buttons(ui, &stats.report);
                    }
                }
            }
        }
        if notice.is_some() {
            self.notice = notice;
        }
        ui.separator();
        self.prior_section(ui, doc);
        if let Some(notice) = &self.notice {
            ui.colored_label(ui.visuals().warn_fg_color, notice);
        }
        if self.is_busy() || !self.is_current(doc) {
            // Results arrive, and the debounce runs out, without any input to wake the UI.
            ui.ctx().request_repaint_after(Duration::from_millis(50));
        }
    }

    fn prior_section(&mut self, ui: &mut egui::Ui, doc: &Document) {
        ui.horizontal(|ui| {
            ui.strong("Prior study");
            if ui
                .button("Open prior mask…")
                .on_hover_text("A mask of an earlier study of the same patient, on this image's grid: shows how each label changed")
                .clicked()
                && let Some(path) = rfd::FileDialog::new().add_filter("Masks", &["nii", "gz", "mha", "mhd"]).pick_file()
            {
                self.open_prior(doc, &path);
            }
            if self.prior_job.is_some() {
                ui.spinner();
            }
        });
        let (Some(prior), Some(stats)) = (&self.prior, &self.stats) else { return };
        ui.label(format!("Prior: {}", prior.name));
        let changes = changes(&prior.report, &stats.report);
        let signed_percent = |p: Option<f64>| p.map_or_else(|| "new".to_string(), |p| format!("{p:+.1} %"));
        egui::Grid::new("prior_changes").striped(true).num_columns(3).show(ui, |ui| {
            for c in &changes {
                ui.strong(format!("Label {}", c.label));
                ui.strong("Before / now");
                ui.strong("Change");
                ui.end_row();
                ui.label("Volume");
                ui.label(format!("{:.3} / {:.3} mL", c.prior_ml, c.current_ml));
                ui.label(format!("{:+.3} mL ({})", c.volume_change_ml(), signed_percent(c.volume_change_percent())));
                ui.end_row();
                ui.label("Longest diameter");
                ui.label(format!("{:.1} / {:.1} mm", c.prior_longest_mm, c.current_longest_mm));
                ui.label(format!("{:+.1} mm ({})", c.diameter_change_mm(), signed_percent(c.diameter_change_percent())));
                ui.end_row();
            }
        });
        change_plot(ui, &changes);
    }
}

/// Writes `report`: CSV for a `.csv` path, else JSON.
fn write_report(report: &MeasureReport, path: &Path) -> Result<(), String> {
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let text = if is_csv { export::to_csv(report, false) } else { format!("{:#}\n", export::to_json(report)) };
    std::fs::write(path, text).map_err(|e| format!("Cannot write {}: {e}", super::file_name(path)))
}

/// Copy and export buttons; returns what happened, to show.
fn export_buttons(ui: &mut egui::Ui, report: &MeasureReport) -> Option<String> {
    let mut notice = None;
    ui.horizontal(|ui| {
        if ui.button("Copy as CSV").on_hover_text("Copy the measurements of every label (the stats command's CSV)").clicked() {
            ui.ctx().copy_text(export::to_csv(report, false));
            notice = Some("Copied the measurements as CSV".to_string());
        }
        for (text, extension) in [("Export CSV…", "csv"), ("Export JSON…", "json")] {
            if ui.button(text).on_hover_text("Save the measurements of every label, as the stats command writes them").clicked()
                && let Some(path) = rfd::FileDialog::new().add_filter(extension, &[extension]).set_file_name(format!("stats.{extension}")).save_file()
            {
                notice = Some(match write_report(report, &path) {
                    Ok(()) => format!("Exported {}", super::file_name(&path)),
                    Err(e) => e,
                });
            }
        }
    });
    notice
}

/// Numbers of one label in two columns.
fn measurement_grid(ui: &mut egui::Ui, m: &LabelMeasurements, unit: &str, diameter_axis: &str) {
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    let mm3 = |p: [f64; 3]| format!("({:.1}, {:.1}, {:.1}) mm", p[0], p[1], p[2]);
    let mut rows: Vec<(&str, String)> = vec![
        ("Voxels", m.voxels.to_string()),
        ("Volume", format!("{:.3} mL", m.volume_ml)),
        ("Surface", format!("{:.1} mm²", m.surface_area_mm2)),
        ("Centroid (LPS)", mm3(m.centroid_lps_mm)),
        ("Box from (LPS)", mm3(m.bbox_lps_mm[0])),
        ("Box to (LPS)", mm3(m.bbox_lps_mm[1])),
    ];
    if let Some(i) = m.intensity {
        rows.push(("Mean ± SD", format!("{:.1} ± {:.1}{unit}", i.mean, i.sd)));
        rows.push(("Min / median / max", format!("{} / {} / {}{unit}", i.min, i.median, i.max)));
    }
    rows.push(("Longest diameter", format!("{:.1} mm", m.longest_diameter_mm)));
    rows.push(("Perpendicular", format!("{:.1} mm", m.perpendicular_diameter_mm)));
    rows.push(("Diameter slice", format!("{} {}", diameter_axis, m.diameter_slice)));
    egui::Grid::new("label_measurements").num_columns(2).striped(true).show(ui, |ui| {
        for (name, value) in rows {
            ui.label(name);
            ui.label(value);
            ui.end_row();
        }
    });
}

/// Share of the image's voxels and of the label's voxels per bin (%), so both fit one axis. The
/// y axis ends a little above the label's peak and the image's third-highest bin, so a spike of
/// background (air, padding) does not flatten everything else.
fn histogram_plot(ui: &mut egui::Ui, h: &Histograms, label: u8, unit: &str) {
    let series = |counts: &[u64]| -> Vec<[f64; 2]> {
        let total = counts.iter().sum::<u64>().max(1) as f64;
        counts.iter().enumerate().map(|(n, &c)| [h.bin_centre(n), c as f64 / total * 100.0]).collect()
    };
    let image = series(&h.image);
    let mask = h.labels.get(label as usize).filter(|c| !c.is_empty()).map(|c| series(c));
    let mut image_heights: Vec<f64> = image.iter().map(|p| p[1]).collect();
    image_heights.sort_by(|a, b| b.total_cmp(a));
    let mask_peak = mask.iter().flatten().map(|p| p[1]).fold(0.0, f64::max);
    let top = mask_peak.max(image_heights.get(2).copied().unwrap_or(0.0)).max(1e-3) * 1.15;
    ui.label(format!("Histogram{}", if unit.is_empty() { String::new() } else { format!(" ({unit})") }));
    Plot::new("stats_histogram")
        .height(150.0)
        .legend(Legend::default())
        .y_axis_label("% of voxels")
        .allow_scroll(false)
        .allow_zoom(false)
        .allow_drag(false)
        .show(ui, |plot| {
            plot.set_plot_bounds_y(0.0..=top);
            plot.line(Line::new("image", image).color(FIRST_SERIES).fill(0.0));
            if let Some(mask) = mask {
                plot.line(Line::new(format!("label {label}"), mask).color(SECOND_SERIES).fill(0.0));
            }
        });
}

/// Area of the label on every slice of the profile axis; the RECIST slice is marked when the
/// diameters were measured along the same axis.
fn area_plot(ui: &mut egui::Ui, m: &LabelMeasurements, report: &MeasureReport) {
    ui.label(format!("Area per {} slice (mm²)", report.axis.name()));
    let points: Vec<[f64; 2]> = m.slices.iter().map(|s| [s.index as f64, s.area_mm2]).collect();
    Plot::new("stats_area").height(120.0).allow_scroll(false).include_y(0.0).show(ui, |plot| {
        plot.line(Line::new("area", points).color(SECOND_SERIES));
        if report.axis == report.diameter_axis {
            plot.vline(VLine::new("diameter slice", m.diameter_slice as f64).color(FIRST_SERIES));
        }
    });
}

/// Volume of each label before and now, side by side.
fn change_plot(ui: &mut egui::Ui, changes: &[LabelChange]) {
    let bars = |offset: f64, value: fn(&LabelChange) -> f64| -> Vec<Bar> {
        changes.iter().map(|c| Bar::new(c.label as f64 + offset, value(c)).width(0.35)).collect()
    };
    let first = changes.first().map_or(0.0, |c| c.label as f64);
    let last = changes.last().map_or(1.0, |c| c.label as f64);
    Plot::new("stats_prior")
        .height(110.0)
        .legend(Legend::default())
        .y_axis_label("mL")
        .x_axis_formatter(|mark, _| if mark.value.fract() == 0.0 { format!("label {}", mark.value) } else { String::new() })
        .allow_scroll(false)
        .allow_zoom(false)
        .allow_drag(false)
        .include_y(0.0)
        .show(ui, |plot| {
            plot.set_plot_bounds_x(first - 0.8..=last + 0.8);
            plot.bar_chart(BarChart::new("before", bars(-0.2, |c| c.prior_ml)).color(FIRST_SERIES));
            plot.bar_chart(BarChart::new("now", bars(0.2, |c| c.current_ml)).color(SECOND_SERIES));
        });
}

/// Draws the statistics window when it is open (`Command::Statistics` opens and closes it).
pub fn show(app: &mut ViewerApp, ctx: &egui::Context) {
    let Some(doc) = &app.doc else { return };
    if !app.stats.open {
        app.stats.update(doc);
        return;
    }
    let mut open = true;
    let screen = ctx.content_rect();
    // Tall enough for the numbers, the plots and a prior study: the window keeps its size once
    // shown (it does not grow when the first results arrive), and scrolls when it is smaller.
    egui::Window::new("Statistics")
        .open(&mut open)
        .pivot(egui::Align2::RIGHT_TOP)
        .default_pos(screen.right_top() + egui::vec2(-12.0, 36.0))
        .default_size([440.0, (screen.height() - 90.0).clamp(200.0, 860.0)])
        .show(ctx, |ui| {
            egui::ScrollArea::vertical().auto_shrink([false; 2]).show(ui, |ui| app.stats.ui(ui, doc, app.active_label));
        });
    app.stats.open &= open;
}

/// The side panel's button that opens and closes the window.
pub fn toggle_button(app: &mut ViewerApp, ui: &mut egui::Ui) {
    let enabled = app.doc.is_some();
    if ui.add_enabled(enabled, egui::Button::selectable(app.stats.open, "Statistics")).on_hover_text(format!("Measurements, histogram and prior-study comparison of the active label  [{}]", Command::Statistics.shortcut_text(ui.ctx()))).clicked() {
        app.stats.open = !app.stats.open;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, VolumeMeta, VoxelBuffer};

    /// The report of a 4x4x1 label map (1 mm voxels) over a flat image.
    fn report(labels: Vec<u8>) -> MeasureReport {
        let g = Geometry::new([4, 4, 1], [1.0; 3], [0.0; 3]);
        let image = Volume::new(g.clone(), 1, VoxelBuffer::I16(vec![0; 16]), VolumeMeta::default()).unwrap();
        let mask = Volume::new(g, 1, VoxelBuffer::U8(labels), VolumeMeta::default()).unwrap();
        measure::measure(&image, &mask, None, &MeasureOptions::default()).unwrap()
    }

    #[test]
    fn changes_cover_labels_of_either_study() {
        let mut before = vec![0u8; 16];
        before[..2].fill(1); // label 1: 2 voxels in a row
        before[15] = 3; // label 3 disappears
        let mut now = vec![0u8; 16];
        now[..4].fill(1); // label 1 doubles along the row
        now[8] = 2; // label 2 is new
        let c = changes(&report(before), &report(now));
        assert_eq!(c.iter().map(|c| c.label).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!((c[0].volume_change_ml() - 0.002).abs() < 1e-12);
        assert!((c[0].volume_change_percent().unwrap() - 100.0).abs() < 1e-9);
        assert!(c[0].diameter_change_mm() > 0.0);
        assert_eq!(c[1].prior_ml, 0.0);
        assert_eq!(c[1].volume_change_percent(), None, "a new label has no relative change");
        assert_eq!(c[2].current_ml, 0.0);
        assert!((c[2].volume_change_percent().unwrap() + 100.0).abs() < 1e-9);
    }
}
