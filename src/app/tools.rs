//! `Tool`: what the left mouse button does in a slice view, with the keyboard shortcut and the
//! tooltip that names it.

use egui::Key;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Tool {
    /// Click sets the crosshair, drag pans.
    #[default]
    Navigate,
    /// Drag a box prompt for MedSAM2.
    Box,
    /// Click a point that belongs to the object.
    PositivePoint,
    /// Click a point that does not belong to the object.
    NegativePoint,
    /// Paint the active label.
    Brush,
    /// Erase to background.
    Eraser,
    /// Click a seed: the connected voxels within the region-growing range get the active label.
    RegionGrow,
}

impl Tool {
    pub const ALL: [Tool; 7] = [Tool::Navigate, Tool::Box, Tool::PositivePoint, Tool::NegativePoint, Tool::Brush, Tool::Eraser, Tool::RegionGrow];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Navigate => "Navigate",
            Tool::Box => "Box",
            Tool::PositivePoint => "Point +",
            Tool::NegativePoint => "Point −",
            Tool::Brush => "Brush",
            Tool::Eraser => "Eraser",
            Tool::RegionGrow => "Grow",
        }
    }

    pub fn key(self) -> Key {
        match self {
            Tool::Navigate => Key::N,
            Tool::Box => Key::B,
            Tool::PositivePoint => Key::P,
            Tool::NegativePoint => Key::M,
            Tool::Brush => Key::D,
            Tool::Eraser => Key::E,
            Tool::RegionGrow => Key::G,
        }
    }

    /// What the tool does, in one sentence.
    pub fn description(self) -> &'static str {
        match self {
            Tool::Navigate => "Click to move the crosshair, drag to pan; wheel: slice, Ctrl+wheel: zoom, right-drag: window/level",
            Tool::Box => "Drag a box around the object: its slice is previewed; drag a corner to resize it or its inside to move it",
            Tool::PositivePoint => "Click inside the object to correct the segmentation from this slice",
            Tool::NegativePoint => "Click outside the object to correct the segmentation from this slice",
            Tool::Brush => "Paint the active label",
            Tool::Eraser => "Erase the active label's voxels to background",
            Tool::RegionGrow => "Click a seed: the connected voxels within the grow range become the active label",
        }
    }
}
