//! Modal dialogs: unsaved changes before quitting or opening another image, picking a series
//! of a DICOM folder, offering a recovery file after a crash, and errors.

use super::recovery::{self, RecoveryInfo};
use super::{PendingAction, ViewerApp};
use crate::io::SeriesSelector;
use crate::io::dicom::SeriesSummary;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub enum Dialog {
    UnsavedChanges(PendingAction),
    ChooseSeries(PathBuf, Vec<SeriesSummary>),
    /// A recovery file exists for the image just opened.
    RecoverForImage(RecoveryInfo),
    /// A recovery file exists and no image was given on start.
    RecoverAtStart(RecoveryInfo),
    /// Segmentation needs a checkpoint that is not there: offer the download.
    NoWeights(String),
    Error(String),
}

pub fn show(app: &mut ViewerApp, ctx: &egui::Context) {
    // Taken out while shown: an answer may open another dialog in its place.
    let Some(dialog) = app.dialog.take() else { return };
    let shown = dialog.clone();
    let mut close = false;
    egui::Modal::new(egui::Id::unique("medsam-dialog")).show(ctx, |ui| match dialog {
        Dialog::UnsavedChanges(action) => {
            ui.heading("Unsaved changes");
            ui.label("The segmentation has changes that are not saved.");
            ui.horizontal(|ui| {
                if ui.button("Save").clicked() {
                    app.save();
                    if !app.doc.as_ref().is_some_and(|d| d.is_dirty()) {
                        close = true;
                        app.continue_with(ctx, action.clone());
                    }
                }
                if ui.button("Discard").clicked() {
                    if let Some(doc) = &app.doc {
                        recovery::remove(&app.paths.recovery, &doc.image_path);
                    }
                    close = true;
                    app.doc = None;
                    app.continue_with(ctx, action.clone());
                }
                if ui.button("Cancel").clicked() {
                    close = true;
                }
            });
        }
        Dialog::ChooseSeries(path, list) => {
            ui.heading("Choose a series");
            ui.label(format!("{} holds {} series:", path.display(), list.len()));
            for (n, s) in list.iter().enumerate() {
                let text = format!("{}  {}  ({} slices)", s.modality, if s.description.is_empty() { "(no description)" } else { &s.description }, s.slices);
                if ui.button(text).on_hover_text(&s.uid).clicked() {
                    close = true;
                    app.continue_with(ctx, PendingAction::Open(path.clone(), Some(SeriesSelector::Index(n))));
                }
            }
            if ui.button("Cancel").clicked() {
                close = true;
            }
        }
        Dialog::RecoverForImage(info) => {
            ui.heading("Recover unsaved work?");
            ui.label("A previous session ended with unsaved changes to the segmentation of this image.");
            ui.horizontal(|ui| {
                if ui.button("Recover").clicked() {
                    app.open_mask(&info.mask_file);
                    close = true;
                }
                if ui.button("Discard it").clicked() {
                    recovery::remove(&app.paths.recovery, &info.image_path);
                    close = true;
                }
                if ui.button("Later").clicked() {
                    close = true;
                }
            });
        }
        Dialog::RecoverAtStart(info) => {
            ui.heading("Recover unsaved work?");
            ui.label(format!("A previous session ended with unsaved changes to a segmentation of\n{}", info.image_path.display()));
            ui.horizontal(|ui| {
                if ui.button("Open that image").clicked() {
                    close = true;
                    app.request_open(ctx, info.image_path.clone(), None);
                }
                if ui.button("Discard it").clicked() {
                    recovery::remove(&app.paths.recovery, &info.image_path);
                    close = true;
                }
                if ui.button("Later").clicked() {
                    close = true;
                }
            });
        }
        Dialog::NoWeights(message) => {
            ui.heading("MedSAM2 weights are needed");
            ui.label("Segmentation runs the MedSAM2 model, and its checkpoint is not on this machine yet.");
            ui.label(egui::RichText::new(message).small());
            ui.horizontal(|ui| {
                if super::model_panel::download_offer(ui, app.settings.model_variant) {
                    app.model_panel.start_download(ctx, app.settings.model_variant);
                    app.status = "Downloading MedSAM2 weights… (Model panel shows the progress)".into();
                    close = true;
                }
                if ui.button("Choose a checkpoint file…").clicked() {
                    if let Some(path) = rfd::FileDialog::new().add_filter("checkpoint", &["pt", "safetensors"]).pick_file() {
                        app.settings.checkpoint = Some(path);
                        app.model_panel.refresh();
                        app.save_settings();
                    }
                    close = true;
                }
                if ui.button("Cancel").clicked() {
                    close = true;
                }
            });
        }
        Dialog::Error(message) => {
            ui.heading("Something went wrong");
            ui.label(message);
            if ui.button("OK").clicked() {
                close = true;
            }
        }
    });
    if !close && app.dialog.is_none() {
        app.dialog = Some(shown);
    }
}
