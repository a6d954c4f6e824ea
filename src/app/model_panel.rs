//! The model settings panel: which published MedSAM2 variant (or which checkpoint file) and
//! model configuration the viewer uses, on which device, whether the checkpoint is there, and the
//! download of the variant's file from the Hugging Face hub (progress bar, cancel, resume, the
//! weights' licence beside the button) when it is not.

use super::jobs::BackgroundJob;
use super::settings::Settings;
use crate::segment::engine::DeviceChoice;
use crate::weights::{self, DownloadOptions, Downloaded, Located, ModelVariant};
use std::path::PathBuf;

/// What the worker of a download reports.
pub enum DownloadMessage {
    Done(Downloaded),
    Failed(String),
}

/// What a search for the checkpoint looked for: the explicit path, and the variant searched for
/// without one.
type SearchKey = (Option<PathBuf>, ModelVariant);

/// State of the model panel.
#[derive(Default)]
pub struct ModelPanel {
    /// Result of the last search for the checkpoint and what it looked for, refreshed when the
    /// settings change.
    found: Option<(SearchKey, Result<Located, String>)>,
    download: Option<BackgroundJob<DownloadMessage>>,
    /// The outcome of the last download, for the panel.
    pub last_download: Option<Result<PathBuf, String>>,
}

impl ModelPanel {
    /// The checkpoint the settings point to (or the search for their variant finds).
    pub fn checkpoint(&mut self, settings: &Settings) -> &Result<Located, String> {
        let key = (settings.checkpoint.clone(), settings.model_variant);
        let stale = self.found.as_ref().is_none_or(|(searched, _)| searched != &key);
        if stale {
            let found = weights::locate(settings.checkpoint.as_deref(), settings.model_variant).map_err(|e| e.to_string());
            self.found = Some((key, found));
        }
        &self.found.as_ref().expect("set above").1
    }

    /// Forgets the last search (a file may have appeared).
    pub fn refresh(&mut self) {
        self.found = None;
    }

    pub fn is_downloading(&self) -> bool {
        self.download.is_some()
    }

    /// Starts downloading `variant`'s checkpoint into the hub cache on a worker thread.
    pub fn start_download(&mut self, ctx: &egui::Context, variant: ModelVariant) {
        if self.download.is_some() {
            return;
        }
        let options = DownloadOptions { hub_file: variant.hub_file(), ..DownloadOptions::default() };
        let title = format!("Downloading {} from {}", options.hub_file.file, options.hub_file.repo);
        self.download = Some(BackgroundJob::spawn(title, Some(ctx.clone()), move |progress, tx| {
            let shared = std::sync::Arc::clone(progress);
            let result = weights::download(&options, |done, total| shared.set(done as usize, total as usize), progress.cancel_flag());
            tx.send(match result {
                Ok(done) => DownloadMessage::Done(done),
                Err(e) => DownloadMessage::Failed(e.to_string()),
            });
        }));
    }

    /// Takes a finished download's outcome; true when a checkpoint just arrived.
    pub fn poll(&mut self) -> bool {
        let Some(job) = &self.download else { return false };
        let mut arrived = false;
        for message in job.drain() {
            match message {
                DownloadMessage::Done(d) => {
                    self.last_download = Some(Ok(d.path));
                    arrived = true;
                }
                DownloadMessage::Failed(e) => self.last_download = Some(Err(e)),
            }
        }
        if job.is_finished() {
            self.download = None;
            self.found = None;
        }
        arrived
    }

    /// The panel: model variant, checkpoint, configuration, device, status and the download button.
    pub fn ui(&mut self, ui: &mut egui::Ui, settings: &mut Settings) -> bool {
        let mut changed = false;
        ui.add_enabled_ui(settings.checkpoint.is_none(), |ui| {
            let before = settings.model_variant;
            egui::ComboBox::from_label("model").selected_text(before.name()).show_ui(ui, |ui| {
                for variant in ModelVariant::ALL {
                    ui.selectable_value(&mut settings.model_variant, variant, variant.name()).on_hover_text(variant.description());
                }
            });
            ui.label(egui::RichText::new(settings.model_variant.description()).small());
            changed |= settings.model_variant != before;
        });
        ui.horizontal(|ui| {
            ui.label("Checkpoint");
            let shown = settings.checkpoint.as_ref().map_or_else(|| "default search".to_string(), |p| p.display().to_string());
            ui.label(egui::RichText::new(shown).monospace()).on_hover_text(format!(
                "Default: weights/{} next to the program or the current folder, then the Hugging Face cache",
                settings.model_variant.file_name()
            ));
        });
        ui.horizontal(|ui| {
            if ui.button("Choose checkpoint…").on_hover_text("A MedSAM2/SAM2.1 .pt or .safetensors file").clicked()
                && let Some(path) = rfd::FileDialog::new().add_filter("checkpoint", &["pt", "safetensors"]).pick_file()
            {
                settings.checkpoint = Some(path);
                changed = true;
            }
            if settings.checkpoint.is_some() && ui.button("Use default").clicked() {
                settings.checkpoint = None;
                changed = true;
            }
        });
        ui.horizontal(|ui| {
            ui.label("Config");
            let shown = settings.model_config.as_ref().map_or_else(|| "sam2.1_hiera_t512 (built in)".to_string(), |p| p.display().to_string());
            ui.label(egui::RichText::new(shown).monospace());
            if ui.small_button("…").on_hover_text("An official SAM2/MedSAM2 model yaml").clicked()
                && let Some(path) = rfd::FileDialog::new().add_filter("yaml", &["yaml", "yml"]).pick_file()
            {
                settings.model_config = Some(path);
                changed = true;
            }
            if settings.model_config.is_some() && ui.small_button("x").on_hover_text("Back to the built-in MedSAM2 configuration").clicked() {
                settings.model_config = None;
                changed = true;
            }
        });
        let mut device = settings.device.clone().unwrap_or_else(|| "cpu".into());
        egui::ComboBox::from_label("device").selected_text(device.clone()).show_ui(ui, |ui| {
            for d in DeviceChoice::available() {
                ui.selectable_value(&mut device, d.name().to_string(), d.name());
            }
        });
        if settings.device.as_deref().unwrap_or("cpu") != device {
            settings.device = Some(device);
            changed = true;
        }
        if changed {
            self.found = None;
        }
        match self.checkpoint(settings) {
            Ok(found) => {
                ui.colored_label(egui::Color32::LIGHT_GREEN, "Checkpoint found").on_hover_text(found.path.display().to_string());
            }
            Err(e) => {
                ui.colored_label(egui::Color32::from_rgb(240, 180, 90), "No usable checkpoint").on_hover_text(e.clone());
            }
        }
        if let Some(job) = &self.download {
            let (done, total) = job.progress.get();
            ui.add(egui::ProgressBar::new(if total > 0 { done as f32 / total as f32 } else { 0.0 }).text(format!(
                "{:.0} / {:.0} MB",
                done as f64 / 1e6,
                total as f64 / 1e6
            )));
            if ui.button("Cancel download").on_hover_text("The partial file is kept; downloading again resumes").clicked() {
                job.progress.cancel();
            }
        } else if self.checkpoint(settings).is_err() && download_offer(ui, settings.model_variant) {
            self.start_download(ui.ctx(), settings.model_variant);
        }
        match &self.last_download {
            Some(Ok(path)) => {
                ui.label(format!("Downloaded {}", super::file_name(path)));
            }
            Some(Err(e)) => {
                ui.colored_label(egui::Color32::LIGHT_RED, e);
            }
            None => {}
        }
        changed
    }
}

/// The download button for `variant`'s checkpoint with the weights' licence beside it; true when
/// clicked. The model panel and the "weights are needed" dialog both offer the download with it.
pub fn download_offer(ui: &mut egui::Ui, variant: ModelVariant) -> bool {
    ui.horizontal(|ui| {
        let hub_file = variant.hub_file();
        let clicked = ui
            .button(format!("Download {}", hub_file.file))
            .on_hover_text(format!(
                "From huggingface.co/{} into the Hugging Face cache (HF_ENDPOINT is honoured); see weights/README.md for the manual route",
                hub_file.repo
            ))
            .clicked();
        ui.label(egui::RichText::new(format!("Licence: {}", variant.licence())).small());
        clicked
    })
    .inner
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui_kittest::kittest::Queryable;
    use egui_kittest::Harness;

    /// The panel, its settings, and whether the panel reported a change.
    type PanelState = (ModelPanel, Settings, bool);

    #[test]
    fn variant_combo_sets_the_variant_and_the_download_offer_follows_it() {
        let mut harness = Harness::new_ui_state(
            |ui, (panel, settings, changed): &mut PanelState| *changed |= panel.ui(ui, settings),
            (ModelPanel::default(), Settings::default(), false),
        );
        harness.run_steps(2);
        harness.get_by_label(ModelVariant::Latest.description());
        harness.get_by_value("MedSAM2_latest").click();
        harness.run_steps(2);
        harness.get_by_label("MedSAM2_CTLesion").click();
        harness.run_steps(2);

        let (panel, settings, changed) = harness.state_mut();
        assert_eq!(settings.model_variant, ModelVariant::CtLesion);
        assert!(*changed, "the change is reported, so the viewer saves the settings");
        // The download is offered only where the chosen variant's file is not found.
        let missing = panel.checkpoint(settings).is_err();
        harness.run_steps(1);
        harness.get_by_label("CT lesions (DeepLesion)");
        let offer = harness.query_by_label("Download MedSAM2_CTLesion.pt");
        assert_eq!(offer.is_some(), missing);
        assert!(harness.query_by_label("Download MedSAM2_latest.pt").is_none());
        if missing {
            harness.get_by_label("Licence: CC-BY-SA-4.0 (research and education use)");
        }
    }
}
