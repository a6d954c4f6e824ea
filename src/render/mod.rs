//! GPU rendering for the viewer (wgpu through egui_wgpu paint callbacks): the slice views'
//! textures and pipeline, and the colormap tables. Shaders live in shaders/.

pub mod colormap;
pub mod slice_renderer;

pub use colormap::Colormap;
pub use slice_renderer::{RenderError, SliceCallback, SliceRenderer, SliceUniforms};
