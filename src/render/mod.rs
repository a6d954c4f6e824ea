//! GPU rendering for the viewer (wgpu through egui_wgpu paint callbacks): the slice views'
//! textures and pipeline, the 3D view's surfaces, and the colormap tables. Shaders live in
//! shaders/.

pub mod colormap;
pub mod mesh_renderer;
pub mod slice_renderer;

pub use colormap::Colormap;
pub use mesh_renderer::MeshRenderer;
pub use slice_renderer::{RenderError, SliceCallback, SliceRenderer, SliceUniforms};
