//! MedSAM Viewer: promptable 3D segmentation of CT/MRI volumes with a native MedSAM2 port.
//!
//! Folders follow DESIGN.md: `volume` (the image model), `io` (readers and writers), `model`
//! (the SAM2 network in Candle), `segment` (MedSAM2's pipeline around the network), `weights`
//! (finding and downloading checkpoints), `mesh` (surfaces and their export), `measure` and
//! `classic` (measurements and weight-free tools), `render` and `app` (the desktop viewer), and
//! the command-line front end in `cli`.

pub mod volume;
pub mod io;
pub mod cli;
pub mod model;
pub mod segment;
pub mod render;
pub mod app;
pub mod weights;
pub mod mesh;
pub mod measure;
pub mod classic;
pub mod video;
