//! The wgpu side of the slice views: the image and label map as 3D textures, the label palette
//! and colormap tables, and a paint callback that draws one slice with shaders/slice.wgsl.
//!
//! Textures are written straight through the queue when data changes (a new volume, an edited
//! region of the label map, a recoloured label), so a slice change costs no upload at all: the
//! fragment shader reads whichever plane the view's matrix points at.

use super::colormap::{Colormap, colormap_table};
use crate::volume::{Volume, VoxelBuffer};
use std::collections::HashMap;

const SHADER_SOURCE: &str = include_str!("../../shaders/slice.wgsl");

/// How the image voxels are stored on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageTexel {
    /// i16 (and u8/i8 widened): R16Sint.
    Signed16,
    /// u16: R16Uint.
    Unsigned16,
    /// Everything else as f32: R32Float.
    Float32,
}

impl ImageTexel {
    fn for_volume(volume: &Volume) -> Self {
        match &volume.data {
            VoxelBuffer::I16(_) | VoxelBuffer::U8(_) | VoxelBuffer::I8(_) => ImageTexel::Signed16,
            VoxelBuffer::U16(_) => ImageTexel::Unsigned16,
            _ => ImageTexel::Float32,
        }
    }

    fn format(self) -> wgpu::TextureFormat {
        match self {
            ImageTexel::Signed16 => wgpu::TextureFormat::R16Sint,
            ImageTexel::Unsigned16 => wgpu::TextureFormat::R16Uint,
            ImageTexel::Float32 => wgpu::TextureFormat::R32Float,
        }
    }

    fn sample_type(self) -> wgpu::TextureSampleType {
        match self {
            ImageTexel::Signed16 => wgpu::TextureSampleType::Sint,
            ImageTexel::Unsigned16 => wgpu::TextureSampleType::Uint,
            ImageTexel::Float32 => wgpu::TextureSampleType::Float { filterable: false },
        }
    }

    fn wgsl(self) -> &'static str {
        match self {
            ImageTexel::Signed16 => "i32",
            ImageTexel::Unsigned16 => "u32",
            ImageTexel::Float32 => "f32",
        }
    }

    fn bytes_per_texel(self) -> usize {
        match self {
            ImageTexel::Signed16 | ImageTexel::Unsigned16 => 2,
            ImageTexel::Float32 => 4,
        }
    }
}

/// The uniform block of shaders/slice.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SliceUniforms {
    pub m0: [f32; 4],
    pub m1: [f32; 4],
    pub m2: [f32; 4],
    pub dims: [f32; 4],
    /// lo, hi, label opacity, outline (1.0) or fill (0.0).
    pub window: [f32; 4],
    pub step_x: [i32; 4],
    pub step_y: [i32; 4],
    /// colormap row, show labels (1/0).
    pub flags: [u32; 4],
}

/// Why the GPU cannot show a volume.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the volume is {dims:?} voxels but this GPU's 3D textures stop at {max} per side")]
    TooLarge { dims: [usize; 3], max: u32 },
}

struct GpuVolume {
    texel: ImageTexel,
    dims: [u32; 3],
    labels: wgpu::Texture,
    bind_group: wgpu::BindGroup,
}

/// GPU resources of the slice views, kept in egui_wgpu's callback resources.
pub struct SliceRenderer {
    target_format: wgpu::TextureFormat,
    uniform_layout: wgpu::BindGroupLayout,
    texture_layouts: HashMap<ImageTexel, wgpu::BindGroupLayout>,
    pipelines: HashMap<ImageTexel, wgpu::RenderPipeline>,
    views: HashMap<u64, (wgpu::Buffer, wgpu::BindGroup)>,
    palette: wgpu::Texture,
    colormaps: wgpu::Texture,
    volume: Option<GpuVolume>,
}

impl SliceRenderer {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, target_format: wgpu::TextureFormat) -> Self {
        let uniform_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("slice uniforms"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let table = |label: &str, width: u32, height: u32, data: &[u8]| {
            let texture = device.create_texture(&wgpu::TextureDescriptor {
                label: Some(label),
                size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba8Unorm,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            write_2d(queue, &texture, width, height, data);
            texture
        };
        let colormaps = table("colormaps", 256, Colormap::ALL.len() as u32, &colormap_table());
        let palette = table("label palette", 256, 1, &[0u8; 1024]);
        let mut renderer = SliceRenderer {
            target_format,
            uniform_layout,
            texture_layouts: HashMap::new(),
            pipelines: HashMap::new(),
            views: HashMap::new(),
            palette,
            colormaps,
            volume: None,
        };
        for texel in [ImageTexel::Signed16, ImageTexel::Unsigned16, ImageTexel::Float32] {
            renderer.build_pipeline(device, texel);
        }
        renderer
    }

    fn build_pipeline(&mut self, device: &wgpu::Device, texel: ImageTexel) {
        let tex = |binding, sample_type, dim| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture { sample_type, view_dimension: dim, multisampled: false },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("slice textures"),
            entries: &[
                tex(0, texel.sample_type(), wgpu::TextureViewDimension::D3),
                tex(1, wgpu::TextureSampleType::Uint, wgpu::TextureViewDimension::D3),
                tex(2, wgpu::TextureSampleType::Float { filterable: false }, wgpu::TextureViewDimension::D2),
                tex(3, wgpu::TextureSampleType::Float { filterable: false }, wgpu::TextureViewDimension::D2),
            ],
        });
        let source = SHADER_SOURCE.replace("IMAGE_TEXEL", texel.wgsl());
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("slice.wgsl"),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("slice"),
            bind_group_layouts: &[Some(&self.uniform_layout), Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("slice"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(self.target_format.into())],
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        self.texture_layouts.insert(texel, layout);
        self.pipelines.insert(texel, pipeline);
    }

    /// Uploads a new image and its label map (u8, same dims), replacing the previous volume.
    pub fn set_volume(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, image: &Volume, labels: &[u8]) -> Result<(), RenderError> {
        let dims = image.geometry.dims;
        let max = device.limits().max_texture_dimension_3d;
        if dims.iter().any(|&d| d as u64 > max as u64) {
            return Err(RenderError::TooLarge { dims, max });
        }
        let texel = ImageTexel::for_volume(image);
        let size = wgpu::Extent3d { width: dims[0] as u32, height: dims[1] as u32, depth_or_array_layers: dims[2] as u32 };
        let make = |label: &str, format| {
            device.create_texture(&wgpu::TextureDescriptor {
                label: Some(label),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D3,
                format,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        };
        let image_texture = make("image", texel.format());
        let label_texture = make("labels", wgpu::TextureFormat::R8Uint);
        upload_image(queue, &image_texture, image, texel);
        write_3d(queue, &label_texture, [0, 0, 0], [size.width, size.height, size.depth_or_array_layers], labels, 1);
        let view = |t: &wgpu::Texture| t.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("slice textures"),
            layout: &self.texture_layouts[&texel],
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&view(&image_texture)) },
                wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(&view(&label_texture)) },
                wgpu::BindGroupEntry { binding: 2, resource: wgpu::BindingResource::TextureView(&view(&self.palette)) },
                wgpu::BindGroupEntry { binding: 3, resource: wgpu::BindingResource::TextureView(&view(&self.colormaps)) },
            ],
        });
        self.volume = Some(GpuVolume { texel, dims: [size.width, size.height, size.depth_or_array_layers], labels: label_texture, bind_group });
        Ok(())
    }

    /// Writes a box of the label map: `bytes` holds `size` voxels (x fastest) at `origin`.
    pub fn write_labels(&self, queue: &wgpu::Queue, origin: [u32; 3], size: [u32; 3], bytes: &[u8]) {
        if let Some(v) = &self.volume {
            let fits = (0..3).all(|a| origin[a] + size[a] <= v.dims[a]);
            if fits && size.iter().all(|&s| s > 0) {
                write_3d(queue, &v.labels, origin, size, bytes, 1);
            }
        }
    }

    /// Sets the 256 label colours (RGBA8; alpha 0 hides a label).
    pub fn write_palette(&self, queue: &wgpu::Queue, rgba: &[u8; 1024]) {
        write_2d(queue, &self.palette, 256, 1, rgba);
    }

    pub fn has_volume(&self) -> bool {
        self.volume.is_some()
    }
}

/// Uploads the image one z-slab at a time, converting to the texel type where needed.
fn upload_image(queue: &wgpu::Queue, texture: &wgpu::Texture, image: &Volume, texel: ImageTexel) {
    let [nx, ny, nz] = image.geometry.dims;
    let plane = nx * ny;
    let slab = ((8 << 20) / (plane * texel.bytes_per_texel())).clamp(1, nz);
    let mut converted: Vec<u8> = Vec::new();
    for z0 in (0..nz).step_by(slab) {
        let depth = slab.min(nz - z0);
        let range = z0 * plane..(z0 + depth) * plane;
        let bytes: &[u8] = match &image.data {
            VoxelBuffer::I16(v) => bytemuck::cast_slice(&v[range]),
            VoxelBuffer::U16(v) => bytemuck::cast_slice(&v[range]),
            VoxelBuffer::F32(v) => bytemuck::cast_slice(&v[range]),
            VoxelBuffer::U8(v) => {
                converted.clear();
                converted.extend(v[range].iter().flat_map(|&x| (x as i16).to_ne_bytes()));
                &converted
            }
            VoxelBuffer::I8(v) => {
                converted.clear();
                converted.extend(v[range].iter().flat_map(|&x| (x as i16).to_ne_bytes()));
                &converted
            }
            other => {
                converted.clear();
                converted.extend(range.flat_map(|n| (other.get_f64(n) as f32).to_ne_bytes()));
                &converted
            }
        };
        write_3d(queue, texture, [0, 0, z0 as u32], [nx as u32, ny as u32, depth as u32], bytes, texel.bytes_per_texel());
    }
}

fn write_3d(queue: &wgpu::Queue, texture: &wgpu::Texture, origin: [u32; 3], size: [u32; 3], bytes: &[u8], texel_bytes: usize) {
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d { x: origin[0], y: origin[1], z: origin[2] },
            aspect: wgpu::TextureAspect::All,
        },
        bytes,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(size[0] * texel_bytes as u32),
            rows_per_image: Some(size[1]),
        },
        wgpu::Extent3d { width: size[0], height: size[1], depth_or_array_layers: size[2] },
    );
}

fn write_2d(queue: &wgpu::Queue, texture: &wgpu::Texture, width: u32, height: u32, rgba: &[u8]) {
    write_3d(queue, texture, [0, 0, 0], [width, height, 1], rgba, 4);
}

/// Draws one slice view; `view_id` keys the view's own uniform buffer.
pub struct SliceCallback {
    pub view_id: u64,
    pub uniforms: SliceUniforms,
}

impl egui_wgpu::CallbackTrait for SliceCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(renderer) = resources.get_mut::<SliceRenderer>() else { return Vec::new() };
        let layout = &renderer.uniform_layout;
        let (buffer, _) = renderer.views.entry(self.view_id).or_insert_with(|| {
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("slice view uniforms"),
                size: std::mem::size_of::<SliceUniforms>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("slice view uniforms"),
                layout,
                entries: &[wgpu::BindGroupEntry { binding: 0, resource: buffer.as_entire_binding() }],
            });
            (buffer, group)
        });
        queue.write_buffer(buffer, 0, bytemuck::bytes_of(&self.uniforms));
        Vec::new()
    }

    fn paint(&self, _info: egui::PaintCallbackInfo, pass: &mut wgpu::RenderPass<'static>, resources: &egui_wgpu::CallbackResources) {
        let Some(renderer) = resources.get::<SliceRenderer>() else { return };
        let (Some(volume), Some((_, uniforms))) = (&renderer.volume, renderer.views.get(&self.view_id)) else { return };
        pass.set_pipeline(&renderer.pipelines[&volume.texel]);
        pass.set_bind_group(0, uniforms, &[]);
        pass.set_bind_group(1, &volume.bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}
