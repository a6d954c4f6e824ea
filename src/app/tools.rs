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

    pub fn tooltip(self) -> String {
        let what = match self {
            Tool::Navigate => "Click to move the crosshair, drag to pan. Wheel: slice, Ctrl+wheel: zoom, right-drag: window/level",
            Tool::Box => "Drag a box around the object on a slice (its slice is previewed; drag a corner to resize it or its inside to move it), then Run (Enter) to segment it through the volume",
            Tool::PositivePoint => "Click inside the object to correct the segmentation from this slice",
            Tool::NegativePoint => "Click outside the object to correct the segmentation from this slice",
            Tool::Brush => "Paint the active label ([ and ] change the radius, 3 toggles 2D/3D)",
            Tool::Eraser => "Erase the active label's voxels to background",
            Tool::RegionGrow => "Click a seed: the voxels connected to it within the region-growing HU range (Classical tools) become the active label, as one undo step",
        };
        format!("{what}  [{}]", self.key().name())
    }
}
