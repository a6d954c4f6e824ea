//! MedSAM Viewer: promptable 3D segmentation of CT/MRI volumes with a native MedSAM2 port.
//!
//! Folders follow DESIGN.md: `volume` (the image model), `io` (readers and writers), and the
//! command-line front end in `cli`.

pub mod volume;
pub mod io;
pub mod cli;
pub mod measure;
pub mod classic;
