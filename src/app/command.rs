//! `Command`: every action the viewer's keys and menus can take, each with its name, its
//! description and its keyboard shortcut, in one table. The shortcut handler, the menus'
//! shortcut texts, the tooltips and the shortcuts overlay (`?`) all read it, so a key is
//! named in one place only.

use super::tools::Tool;
use crate::volume::CT_PRESETS;
use egui::{Key, KeyboardShortcut, Modifiers};

/// An action of the viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Open,
    Save,
    SaveAs,
    Undo,
    Redo,
    Run,
    Repropagate,
    Cancel,
    Tool(Tool),
    BrushSmaller,
    BrushLarger,
    BrushBall,
    FillHoles,
    RemoveIslands,
    Outline,
    HideLabels,
    /// The CT window preset of this index in `CT_PRESETS`.
    Preset(usize),
    Statistics,
    Threshold,
    LungMask,
    Shortcuts,
}

const fn plain(key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(Modifiers::NONE, key)
}

const fn command(key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(Modifiers::COMMAND, key)
}

const fn command_shift(key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(Modifiers::COMMAND.plus(Modifiers::SHIFT), key)
}

const PRESET_KEYS: [Key; 5] = [Key::F1, Key::F2, Key::F3, Key::F4, Key::F5];

impl Command {
    /// Every command, in the order the shortcut handler tries them: shifted shortcuts before
    /// their unshifted twins (Ctrl+Z also matches Ctrl+Shift+Z otherwise).
    pub fn all() -> Vec<Command> {
        let mut all = vec![Command::Redo, Command::Undo, Command::SaveAs, Command::Save, Command::Open, Command::Run, Command::Repropagate, Command::Cancel];
        all.extend(Tool::ALL.map(Command::Tool));
        all.extend([
            Command::BrushSmaller,
            Command::BrushLarger,
            Command::BrushBall,
            Command::FillHoles,
            Command::RemoveIslands,
            Command::Outline,
            Command::HideLabels,
        ]);
        all.extend((0..CT_PRESETS.len().min(PRESET_KEYS.len())).map(Command::Preset));
        all.extend([Command::Statistics, Command::Threshold, Command::LungMask, Command::Shortcuts]);
        all
    }

    /// The keys that run it (the first is the one shown).
    pub fn shortcuts(self) -> Vec<KeyboardShortcut> {
        match self {
            Command::Open => vec![command(Key::O)],
            Command::Save => vec![command(Key::S)],
            Command::SaveAs => vec![command_shift(Key::S)],
            Command::Undo => vec![command(Key::Z)],
            Command::Redo => vec![command_shift(Key::Z), command(Key::Y)],
            Command::Run => vec![plain(Key::Enter)],
            Command::Repropagate => vec![plain(Key::R)],
            Command::Cancel => vec![plain(Key::Escape)],
            Command::Tool(tool) => vec![plain(tool.key())],
            Command::BrushSmaller => vec![plain(Key::OpenBracket)],
            Command::BrushLarger => vec![plain(Key::CloseBracket)],
            Command::BrushBall => vec![plain(Key::Num3)],
            Command::FillHoles => vec![plain(Key::F)],
            Command::RemoveIslands => vec![plain(Key::I)],
            Command::Outline => vec![plain(Key::L)],
            Command::HideLabels => vec![plain(Key::H)],
            Command::Preset(n) => vec![plain(PRESET_KEYS[n])],
            Command::Statistics => vec![plain(Key::S)],
            Command::Threshold => vec![plain(Key::T)],
            Command::LungMask => vec![plain(Key::U)],
            Command::Shortcuts => vec![plain(Key::Questionmark)],
        }
    }

    /// What it is called in menus and the overlay.
    pub fn name(self) -> String {
        match self {
            Command::Open => "Open image…".into(),
            Command::Save => "Save mask".into(),
            Command::SaveAs => "Save mask as…".into(),
            Command::Undo => "Undo".into(),
            Command::Redo => "Redo".into(),
            Command::Run => "Run MedSAM2".into(),
            Command::Repropagate => "Re-propagate from this slice".into(),
            Command::Cancel => "Cancel the segmentation".into(),
            Command::Tool(tool) => format!("{} tool", tool.name()),
            Command::BrushSmaller => "Smaller brush".into(),
            Command::BrushLarger => "Larger brush".into(),
            Command::BrushBall => "Brush: 2D disc / 3D ball".into(),
            Command::FillHoles => "Fill holes".into(),
            Command::RemoveIslands => "Remove islands".into(),
            Command::Outline => "Outline labels".into(),
            Command::HideLabels => "Show / hide labels".into(),
            Command::Preset(n) => format!("{} window", CT_PRESETS[n].name),
            Command::Statistics => "Statistics window".into(),
            Command::Threshold => "Threshold in the box".into(),
            Command::LungMask => "Lung mask".into(),
            Command::Shortcuts => "Keyboard shortcuts".into(),
        }
    }

    /// One sentence on what it does, for tooltips and the overlay.
    pub fn description(self) -> String {
        match self {
            Command::Open => "Open a NIfTI, DICOM, MetaImage or .npz image".into(),
            Command::Save => "Write the mask (and its label names) to its file".into(),
            Command::SaveAs => "Write the mask to a new file".into(),
            Command::Undo => "Take back the last change to the mask".into(),
            Command::Redo => "Put back the change undone last".into(),
            Command::Run => "Segment the drawn box (and its clicks) through the volume".into(),
            Command::Repropagate => "Carry the active label's mask on this slice, as corrected, through the volume".into(),
            Command::Cancel => "Stop the running segmentation; the slices done are kept".into(),
            Command::Tool(tool) => tool.description().into(),
            Command::BrushSmaller => "Brush radius / 1.25".into(),
            Command::BrushLarger => "Brush radius x 1.25".into(),
            Command::BrushBall => "Paint on this slice only or through its neighbours".into(),
            Command::FillHoles => "Fill the holes of the active label on every axial slice".into(),
            Command::RemoveIslands => "Keep only the largest piece of the active label".into(),
            Command::Outline => "Draw label boundaries instead of filled labels".into(),
            Command::HideLabels => "Show the image without the labels, or with them".into(),
            Command::Preset(n) => format!("Window {} / level {}", CT_PRESETS[n].width, CT_PRESETS[n].level),
            Command::Statistics => "Volume, HU statistics, diameters and the comparison with a prior study".into(),
            Command::Threshold => "Label the voxels of the drawn box within an intensity range".into(),
            Command::LungMask => "Label both lungs of a chest CT".into(),
            Command::Shortcuts => "Show this list".into(),
        }
    }

    /// The shortcut as text ("Ctrl+Shift+S", "F", "[", ...), as egui writes it on this
    /// platform.
    pub fn shortcut_text(self, ctx: &egui::Context) -> String {
        self.shortcuts().first().map(|s| shortcut_text(ctx, s)).unwrap_or_default()
    }

    /// The command whose shortcut was pressed this frame (the key event is consumed).
    pub fn pressed(input: &mut egui::InputState) -> Vec<Command> {
        Command::all().into_iter().filter(|c| c.shortcuts().iter().any(|s| input.consume_shortcut(s))).collect()
    }
}

/// A shortcut as text; the plain keys egui names by word (`OpenBracket`) by their symbol.
fn shortcut_text(ctx: &egui::Context, shortcut: &KeyboardShortcut) -> String {
    match (shortcut.modifiers.is_none(), shortcut.logical_key) {
        (true, Key::OpenBracket) => "[".into(),
        (true, Key::CloseBracket) => "]".into(),
        (true, Key::Questionmark) => "?".into(),
        _ => ctx.format_shortcut(shortcut),
    }
}

/// The shortcuts overlay: every command with its keys, while `open`.
pub fn shortcuts_window(ctx: &egui::Context, open: &mut bool) {
    egui::Window::new("Keyboard shortcuts").open(open).collapsible(false).resizable(false).show(ctx, |ui| {
        egui::Grid::new("shortcuts").striped(true).num_columns(3).show(ui, |ui| {
            for c in Command::all() {
                let keys: Vec<String> = c.shortcuts().iter().map(|s| shortcut_text(ctx, s)).collect();
                ui.monospace(keys.join("  or  "));
                ui.label(c.name());
                ui.weak(c.description());
                ui.end_row();
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_commands_share_a_key() {
        let mut seen: Vec<(KeyboardShortcut, Command)> = Vec::new();
        for c in Command::all() {
            for s in c.shortcuts() {
                if let Some((_, other)) = seen.iter().find(|(t, _)| *t == s) {
                    panic!("{c:?} and {other:?} share {s:?}");
                }
                seen.push((s, c));
            }
        }
    }

    #[test]
    fn shifted_shortcuts_come_before_their_plain_twins() {
        let all = Command::all();
        let at = |c| all.iter().position(|x| *x == c).unwrap();
        assert!(at(Command::Redo) < at(Command::Undo));
        assert!(at(Command::SaveAs) < at(Command::Save));
    }
}
