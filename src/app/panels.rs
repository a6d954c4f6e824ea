//! The viewer's panels: the menu bar, the side panel (tools, brush, display, labels) and the
//! start screen shown before an image is open.

use super::ViewerApp;
use super::command::Command;
use super::tools::Tool;
use super::view_frame::Pane;
use crate::render::Colormap;
use crate::volume::CT_PRESETS;

pub fn menu_bar(app: &mut ViewerApp, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    egui::Panel::top("menu").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                command_button(app, ui, Command::Open, true);
                if ui.button("Open DICOM folder…").clicked() {
                    app.open_folder_dialog(&ctx);
                }
                if ui.button("Open bundled sample").clicked() {
                    app.open_sample(&ctx);
                }
                ui.menu_button("Recent", |ui| {
                    if app.settings.recent.is_empty() {
                        ui.label("(none)");
                    }
                    for path in app.settings.recent.clone() {
                        if ui.button(path.display().to_string()).clicked() {
                            app.request_open(&ctx, path, None);
                        }
                    }
                });
                ui.separator();
                let has_doc = app.doc.is_some();
                if ui.add_enabled(has_doc, egui::Button::new("Open mask onto image…")).clicked()
                    && let Some(path) = rfd::FileDialog::new().add_filter("Masks", &["nii", "gz", "mha", "mhd"]).pick_file()
                {
                    app.open_mask(&path);
                }
                command_button(app, ui, Command::Save, has_doc);
                command_button(app, ui, Command::SaveAs, has_doc);
                ui.separator();
                if ui.button("Quit").clicked() {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("Edit", |ui| {
                let (can_undo, can_redo) = app.doc.as_ref().map_or((false, false), |d| (d.history.can_undo(), d.history.can_redo()));
                command_button(app, ui, Command::Undo, can_undo);
                command_button(app, ui, Command::Redo, can_redo);
                ui.separator();
                let has_doc = app.doc.is_some();
                for command in [Command::FillHoles, Command::RemoveIslands, Command::Run, Command::Repropagate] {
                    command_button(app, ui, command, has_doc);
                }
            });
            ui.menu_button("View", |ui| {
                for pane in Pane::ALL {
                    let on = app.maximized == Some(pane);
                    if ui.selectable_label(on, format!("Maximise {}", pane.name())).clicked() {
                        app.maximized = if on { None } else { Some(pane) };
                    }
                }
                ui.separator();
                ui.add(egui::Slider::new(&mut app.view3d.opacity, 0.1..=1.0).text("3D opacity"));
                ui.checkbox(&mut app.view3d.show_planes, "Slice planes in 3D");
                if ui.button("Show all views").clicked() {
                    app.maximized = None;
                }
                ui.separator();
                for command in [Command::Outline, Command::HideLabels, Command::Statistics] {
                    command_button(app, ui, command, true);
                }
            });
            ui.menu_button("Help", |ui| {
                command_button(app, ui, Command::Shortcuts, true);
            });
        });
    });
}

/// A menu entry for a command: its name, its shortcut at the right, its description on hover.
fn command_button(app: &mut ViewerApp, ui: &mut egui::Ui, command: Command, enabled: bool) {
    let mut name = command.name();
    if command == Command::Undo
        && let Some(what) = app.doc.as_ref().and_then(|d| d.history.undo_description())
    {
        name = format!("Undo {what}");
    }
    let button = egui::Button::new(name).shortcut_text(command.shortcut_text(ui.ctx()));
    if ui.add_enabled(enabled, button).on_hover_text(command.description()).clicked() {
        let ctx = ui.ctx().clone();
        app.execute(command, &ctx);
        ui.close();
    }
}

pub fn side_panel(app: &mut ViewerApp, ui: &mut egui::Ui) {
    ui.heading("Tools");
    ui.horizontal_wrapped(|ui| {
        for tool in Tool::ALL {
            let tip = format!("{}  [{}]", tool.description(), Command::Tool(tool).shortcut_text(ui.ctx()));
            ui.selectable_value(&mut app.tool, tool, tool.name()).on_hover_text(tip);
        }
    });
    if matches!(app.tool, Tool::Brush | Tool::Eraser) {
        ui.add(egui::Slider::new(&mut app.brush.radius_mm, 0.5..=50.0).logarithmic(true).text("radius mm"))
            .on_hover_text(format!(
                "Brush radius in millimetres  [{} / {}]",
                Command::BrushSmaller.shortcut_text(ui.ctx()),
                Command::BrushLarger.shortcut_text(ui.ctx())
            ));
        let tip = format!("Paint through neighbouring slices  [{}]", Command::BrushBall.shortcut_text(ui.ctx()));
        ui.checkbox(&mut app.brush.sphere, "3D ball").on_hover_text(tip);
    }
    ui.separator();

    segment_panel(app, ui);
    ui.separator();

    ui.heading("Display");
    ui.horizontal_wrapped(|ui| {
        for (n, preset) in CT_PRESETS.iter().enumerate() {
            let tip = format!("W {} / L {}  [{}]", preset.width, preset.level, Command::Preset(n).shortcut_text(ui.ctx()));
            if ui.button(preset.name).on_hover_text(tip).clicked() {
                app.apply_preset(preset);
            }
        }
        if let Some(doc) = &app.doc
            && ui.button("Image range").on_hover_text("The image's own min..max (MR)").clicked()
            && let Some((lo, hi)) = doc.value_range()
        {
            app.window = crate::volume::Window::new(lo, hi.max(lo + 1.0));
        }
    });
    let (mut width, mut level) = (app.window.width(), app.window.level());
    let range = app.doc.as_ref().and_then(|d| d.value_range()).unwrap_or((-1024.0, 3071.0));
    let span = (range.1 - range.0).max(1.0);
    let w = ui.add(egui::Slider::new(&mut width, 1.0..=span * 2.0).text("width"));
    let l = ui.add(egui::Slider::new(&mut level, range.0..=range.1).text("level"));
    if w.changed() || l.changed() {
        app.window = crate::volume::Window::from_width_level(width, level);
    }
    egui::ComboBox::from_label("colormap").selected_text(app.colormap.name()).show_ui(ui, |ui| {
        for c in Colormap::ALL {
            ui.selectable_value(&mut app.colormap, c, c.name());
        }
    });
    ui.add(egui::Slider::new(&mut app.label_opacity, 0.0..=1.0).text("label opacity"));
    let tip = format!("{}  [{}]", Command::Outline.description(), Command::Outline.shortcut_text(ui.ctx()));
    ui.checkbox(&mut app.outline, "outline only").on_hover_text(tip);
    let tip = format!("{}  [{}]", Command::HideLabels.description(), Command::HideLabels.shortcut_text(ui.ctx()));
    ui.checkbox(&mut app.show_labels, "show labels").on_hover_text(tip);
    ui.separator();

    labels_panel(app, ui);
    super::stats_panel::toggle_button(app, ui);
    ui.separator();
    super::classic_tools::section(app, ui);
    ui.separator();
    egui::CollapsingHeader::new("Model").default_open(false).show(ui, |ui| {
        if app.model_panel.ui(ui, &mut app.settings) {
            app.save_settings();
        }
    });
}

/// Run / cancel MedSAM2, with the progress of the running job.
fn segment_panel(app: &mut ViewerApp, ui: &mut egui::Ui) {
    ui.heading("Segment");
    let ctx = ui.ctx().clone();
    if let Some(job) = &app.segmentation.job {
        let (done, total) = job.progress.get();
        let bar = if total > 0 {
            egui::ProgressBar::new(done as f32 / total as f32).text(format!("{done} / {total} slices"))
        } else {
            egui::ProgressBar::new(0.0).text(app.segmentation.status.clone()).animate(true)
        };
        ui.add(bar);
        ui.horizontal(|ui| {
            ui.label(format!("{:.1} s", job.elapsed().as_secs_f32()));
            if ui.button("Cancel").on_hover_text(format!("Stop after the current slice; the slices done are kept  [{}]", Command::Cancel.shortcut_text(ui.ctx()))).clicked() {
                job.progress.cancel();
            }
        });
        return;
    }
    ui.horizontal_wrapped(|ui| {
        let can_run = app.doc.is_some() && !app.prompts.is_empty();
        if ui
            .add_enabled(can_run, egui::Button::new("Run"))
            .on_hover_text(format!("Segment the object in the box (or refine with the clicks) through the volume with MedSAM2  [{}]", Command::Run.shortcut_text(ui.ctx())))
            .clicked()
        {
            app.run_segmentation(&ctx);
        }
        if ui
            .add_enabled(app.doc.is_some(), egui::Button::new("Re-propagate from slice"))
            .on_hover_text(format!("Use the active label on the current slice of the view last worked in (as corrected) as the prompt and propagate it both ways  [{}]", Command::Repropagate.shortcut_text(ui.ctx())))
            .clicked()
        {
            app.repropagate_from_slice(&ctx);
        }
        if ui.add_enabled(!app.prompts.is_empty(), egui::Button::new("Clear prompts")).clicked() {
            app.prompts.clear();
        }
    });
    let mut preview = app.settings.auto_preview();
    if ui
        .checkbox(&mut preview, "Preview the box's slice")
        .on_hover_text("Segment the box's slice as soon as the box is drawn (and again after each click on that slice); Run then propagates from that answer")
        .changed()
    {
        app.settings.auto_preview = Some(preview);
        app.save_settings();
    }
    range_controls(app, ui);
    ui.horizontal(|ui| {
        ui.label("Stop after");
        let mut empty = app.settings.stop_after_empty();
        let field = ui
            .add(egui::DragValue::new(&mut empty).range(0..=50).suffix(" empty slices"))
            .on_hover_text("Each direction ends after this many consecutive slices without the object (0: walk to the end of the volume, as MedSAM2's script does)");
        if field.changed() {
            app.settings.stop_after_empty = Some(empty);
            app.save_settings();
        }
    });
}

/// The propagation range: whole volume, ± N around the key slice, or from / to (also moved by
/// dragging its marks on the other planes' views).
fn range_controls(app: &mut ViewerApp, ui: &mut egui::Ui) {
    use super::segmentation::RangeChoice;
    let origin = app.run_origin();
    let key = origin.map_or(0, |(_, key)| key);
    let count = origin.zip(app.doc.as_ref()).map_or(1, |((axis, _), doc)| doc.dims()[axis.normal()]);
    ui.horizontal(|ui| {
        ui.label("Range");
        let around = RangeChoice::AroundKey(32);
        let from_to = RangeChoice::Slices(around.range(key, count).ok().flatten().unwrap_or([0, count.saturating_sub(1)]));
        let name = match app.range {
            RangeChoice::WholeVolume => "Whole volume",
            RangeChoice::AroundKey(_) => "± N around the key slice",
            RangeChoice::Slices(_) => "From / to",
        };
        egui::ComboBox::from_id_salt("propagation range").selected_text(name).show_ui(ui, |ui| {
            ui.selectable_value(&mut app.range, RangeChoice::WholeVolume, "Whole volume");
            if ui.selectable_label(matches!(app.range, RangeChoice::AroundKey(_)), "± N around the key slice").clicked() {
                app.range = around;
            }
            if ui.selectable_label(matches!(app.range, RangeChoice::Slices(_)), "From / to").clicked() {
                app.range = from_to;
            }
        })
        .response
        .on_hover_text("The slices a run may reach from the key slice; the range's ends are drawn on the other views, where they can be dragged");
    });
    match &mut app.range {
        RangeChoice::WholeVolume => {}
        RangeChoice::AroundKey(n) => {
            ui.add(egui::DragValue::new(n).range(0..=count).prefix("± ").suffix(" slices"));
        }
        RangeChoice::Slices([first, last]) => {
            // Shown 1-based, like the slice numbers on the views.
            ui.horizontal(|ui| {
                let (mut from, mut to) = (*first + 1, *last + 1);
                ui.label("from");
                ui.add(egui::DragValue::new(&mut from).range(1..=count));
                ui.label("to");
                ui.add(egui::DragValue::new(&mut to).range(1..=count));
                *first = from.min(to) - 1;
                *last = from.max(to) - 1;
            });
        }
    }
}

fn labels_panel(app: &mut ViewerApp, ui: &mut egui::Ui) {
    ui.heading("Labels");
    let Some(doc) = &mut app.doc else {
        ui.label("Open an image to start labelling.");
        return;
    };
    let mut remove = None;
    for label in doc.label_table.labels.clone() {
        let value = label.value;
        let ml = doc.volume_ml(value);
        ui.horizontal(|ui| {
            let active = app.active_label == value;
            if ui.radio(active, "").on_hover_text("Make this the label the brush and segmentation write").clicked() {
                app.active_label = value;
            }
            let entry = doc.label_table.get_mut(value).expect("listed label exists");
            let mut rgb = entry.color;
            if ui.color_edit_button_srgb(&mut rgb).changed() {
                entry.color = rgb;
            }
            let name_label = ui.label(format!("{value}:"));
            ui.add(egui::TextEdit::singleline(&mut entry.name).desired_width(90.0)).labelled_by(name_label.id);
            ui.checkbox(&mut entry.visible, "").on_hover_text("Visible");
            ui.toggle_value(&mut entry.locked, "lock").on_hover_text("Locked labels are never overwritten by propagation or the brush");
            ui.label(format!("{ml:.2} mL"));
            if ui.small_button("x").on_hover_text("Remove this label from the list").clicked() {
                remove = Some(value);
            }
        });
    }
    if let Some(value) = remove {
        if doc.voxel_count(value) > 0 {
            app.status = format!("Label {value} still has voxels: erase them first");
        } else {
            doc.label_table.remove(value);
        }
    }
    if ui.button("+ Add label").clicked()
        && let Some(v) = doc.label_table.add()
    {
        app.active_label = v;
    }
    ui.horizontal(|ui| {
        if ui.button("Fill holes").on_hover_text("Fill enclosed holes of the active label on every axial slice  [F]").clicked() {
            app.fill_holes();
        }
        if ui.button("Remove islands").on_hover_text("Keep only the largest connected piece of the active label  [I]").clicked() {
            app.remove_islands();
        }
    });
}

/// Shown before an image is open: the bundled sample, open buttons and recent files.
pub fn start_screen(app: &mut ViewerApp, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    ui.vertical_centered(|ui| {
        ui.add_space(ui.available_height() * 0.2);
        ui.heading("MedSAM Viewer");
        ui.label("Open a CT or MRI volume: NIfTI, DICOM (file or folder), MetaImage or MedSAM2 .npz.");
        ui.label("Drop a file anywhere in this window, or:");
        ui.add_space(8.0);
        if ui.button("Open the bundled sample (chest CT with a lung lesion)").clicked() {
            app.open_sample(&ctx);
        }
        if ui.button("Open image…").clicked() {
            app.open_dialog(&ctx);
        }
        if ui.button("Open DICOM folder…").clicked() {
            app.open_folder_dialog(&ctx);
        }
        if !app.settings.recent.is_empty() {
            ui.add_space(12.0);
            ui.label("Recent:");
            for path in app.settings.recent.clone() {
                if ui.link(path.display().to_string()).clicked() {
                    app.request_open(&ctx, path, None);
                }
            }
        }
    });
}
