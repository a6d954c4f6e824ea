//! The wgpu side of the 3D view: label surfaces (one vertex/index buffer pair per label) drawn
//! with a headlight and a depth buffer into an off-screen texture, the current slice planes as
//! translucent quads, and a blit of the result into egui's pass (egui's own pass has no depth).

use std::collections::BTreeMap;

const MESH_SHADER: &str = include_str!("../../shaders/mesh.wgsl");
const BLIT_SHADER: &str = include_str!("../../shaders/blit.wgsl");
const COLOR_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;
const DEPTH_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Depth32Float;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct CameraUniforms {
    view_proj: [[f32; 4]; 4],
    light_dir: [f32; 4],
}

/// One surface as the GPU keeps it.
struct GpuSurface {
    vertices: wgpu::Buffer,
    indices: wgpu::Buffer,
    index_count: u32,
    color: wgpu::Buffer,
    color_group: wgpu::BindGroup,
}

struct Offscreen {
    size: [u32; 2],
    color_view: wgpu::TextureView,
    depth_view: wgpu::TextureView,
    blit_group: wgpu::BindGroup,
}

/// A surface to draw: interleaved position/normal vertices in LPS mm and triangle indices.
pub struct SurfaceData<'a> {
    pub positions: &'a [[f32; 3]],
    pub normals: &'a [[f32; 3]],
    pub indices: &'a [u32],
}

/// GPU resources of the 3D view, kept in egui_wgpu's callback resources.
pub struct MeshRenderer {
    camera: wgpu::Buffer,
    camera_group: wgpu::BindGroup,
    color_layout: wgpu::BindGroupLayout,
    blit_layout: wgpu::BindGroupLayout,
    mesh_pipeline: wgpu::RenderPipeline,
    plane_pipeline: wgpu::RenderPipeline,
    blit_pipeline: wgpu::RenderPipeline,
    surfaces: BTreeMap<u8, GpuSurface>,
    planes: Vec<(wgpu::Buffer, wgpu::Buffer, wgpu::BindGroup)>,
    offscreen: Option<Offscreen>,
}

impl MeshRenderer {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let uniform_entry = |visibility| wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility,
            ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        };
        let camera_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("3d camera"),
            entries: &[uniform_entry(wgpu::ShaderStages::VERTEX_FRAGMENT)],
        });
        let color_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("3d surface colour"),
            entries: &[uniform_entry(wgpu::ShaderStages::FRAGMENT)],
        });
        let blit_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("3d blit"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Float { filterable: false },
                    view_dimension: wgpu::TextureViewDimension::D2,
                    multisampled: false,
                },
                count: None,
            }],
        });
        let camera = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("3d camera"),
            size: std::mem::size_of::<CameraUniforms>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let camera_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("3d camera"),
            layout: &camera_layout,
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: camera.as_entire_binding() }],
        });
        let mesh_module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("mesh.wgsl"),
            source: wgpu::ShaderSource::Wgsl(MESH_SHADER.into()),
        });
        let blit_module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("blit.wgsl"),
            source: wgpu::ShaderSource::Wgsl(BLIT_SHADER.into()),
        });
        let scene_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("3d scene"),
            bind_group_layouts: &[Some(&camera_layout), Some(&color_layout)],
            immediate_size: 0,
        });
        // Surfaces and slice planes share the scene's layout, blending and depth test; they
        // differ in entry points, vertex layout, topology and whether they write depth.
        let scene_pipeline = |label: &str,
                              (vs, fs): (&str, &str),
                              buffer: wgpu::VertexBufferLayout,
                              topology: wgpu::PrimitiveTopology,
                              depth_write: bool| {
            device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some(label),
                layout: Some(&scene_layout),
                vertex: wgpu::VertexState {
                    module: &mesh_module,
                    entry_point: Some(vs),
                    compilation_options: Default::default(),
                    buffers: &[Some(buffer)],
                },
                fragment: Some(wgpu::FragmentState {
                    module: &mesh_module,
                    entry_point: Some(fs),
                    compilation_options: Default::default(),
                    targets: &[Some(wgpu::ColorTargetState {
                        format: COLOR_FORMAT,
                        blend: Some(wgpu::BlendState::ALPHA_BLENDING),
                        write_mask: wgpu::ColorWrites::ALL,
                    })],
                }),
                primitive: wgpu::PrimitiveState { topology, ..Default::default() },
                depth_stencil: Some(wgpu::DepthStencilState {
                    format: DEPTH_FORMAT,
                    depth_write_enabled: Some(depth_write),
                    depth_compare: Some(wgpu::CompareFunction::Less),
                    stencil: Default::default(),
                    bias: Default::default(),
                }),
                multisample: wgpu::MultisampleState::default(),
                multiview_mask: None,
                cache: None,
            })
        };
        let mesh_pipeline = scene_pipeline(
            "3d surfaces",
            ("vs_mesh", "fs_mesh"),
            wgpu::VertexBufferLayout {
                array_stride: 24,
                step_mode: wgpu::VertexStepMode::Vertex,
                attributes: &wgpu::vertex_attr_array![0 => Float32x3, 1 => Float32x3],
            },
            wgpu::PrimitiveTopology::TriangleList,
            true,
        );
        let plane_pipeline = scene_pipeline(
            "3d slice planes",
            ("vs_plane", "fs_plane"),
            wgpu::VertexBufferLayout {
                array_stride: 12,
                step_mode: wgpu::VertexStepMode::Vertex,
                attributes: &wgpu::vertex_attr_array![0 => Float32x3],
            },
            wgpu::PrimitiveTopology::TriangleStrip,
            false,
        );
        let blit_pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("3d blit"),
            bind_group_layouts: &[Some(&blit_layout)],
            immediate_size: 0,
        });
        let blit_pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("3d blit"),
            layout: Some(&blit_pipeline_layout),
            vertex: wgpu::VertexState { module: &blit_module, entry_point: Some("vs_blit"), compilation_options: Default::default(), buffers: &[] },
            fragment: Some(wgpu::FragmentState {
                module: &blit_module,
                entry_point: Some("fs_blit"),
                compilation_options: Default::default(),
                targets: &[Some(target_format.into())],
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        MeshRenderer {
            camera,
            camera_group,
            color_layout,
            blit_layout,
            mesh_pipeline,
            plane_pipeline,
            blit_pipeline,
            surfaces: BTreeMap::new(),
            planes: Vec::new(),
            offscreen: None,
        }
    }

    fn color_buffer(&self, device: &wgpu::Device) -> (wgpu::Buffer, wgpu::BindGroup) {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("3d colour"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("3d colour"),
            layout: &self.color_layout,
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: buffer.as_entire_binding() }],
        });
        (buffer, group)
    }

    /// Replaces the surface of `label` (an empty surface removes it).
    pub fn set_surface(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, label: u8, data: &SurfaceData) {
        if data.indices.is_empty() || data.positions.len() != data.normals.len() {
            self.surfaces.remove(&label);
            return;
        }
        let mut interleaved: Vec<f32> = Vec::with_capacity(data.positions.len() * 6);
        for (p, n) in data.positions.iter().zip(data.normals) {
            interleaved.extend_from_slice(p);
            interleaved.extend_from_slice(n);
        }
        let make = |label: &str, bytes: &[u8], usage| {
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.len() as u64,
                usage: usage | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            queue.write_buffer(&buffer, 0, bytes);
            buffer
        };
        let vertices = make("3d vertices", bytemuck::cast_slice(&interleaved), wgpu::BufferUsages::VERTEX);
        let indices = make("3d indices", bytemuck::cast_slice(data.indices), wgpu::BufferUsages::INDEX);
        let (color, color_group) = self.color_buffer(device);
        self.surfaces.insert(label, GpuSurface { vertices, indices, index_count: data.indices.len() as u32, color, color_group });
    }

    /// Drops every surface (a new image was opened).
    pub fn clear(&mut self) {
        self.surfaces.clear();
    }

    /// Labels that currently have a surface on the GPU.
    pub fn surface_labels(&self) -> Vec<u8> {
        self.surfaces.keys().copied().collect()
    }

    fn ensure_offscreen(&mut self, device: &wgpu::Device, size: [u32; 2]) {
        if self.offscreen.as_ref().is_some_and(|o| o.size == size) {
            return;
        }
        let texture = |label: &str, format, usage| {
            device.create_texture(&wgpu::TextureDescriptor {
                label: Some(label),
                size: wgpu::Extent3d { width: size[0], height: size[1], depth_or_array_layers: 1 },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage,
                view_formats: &[],
            })
        };
        let color = texture("3d colour", COLOR_FORMAT, wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::TEXTURE_BINDING);
        let depth = texture("3d depth", DEPTH_FORMAT, wgpu::TextureUsages::RENDER_ATTACHMENT);
        let color_view = color.create_view(&Default::default());
        let blit_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("3d blit"),
            layout: &self.blit_layout,
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&color_view) }],
        });
        self.offscreen = Some(Offscreen { size, color_view, depth_view: depth.create_view(&Default::default()), blit_group });
    }
}

/// Per-frame description of the 3D scene.
pub struct SceneCallback {
    pub view_proj: glam::Mat4,
    /// Unit vector towards the light (the camera).
    pub light_dir: glam::Vec3,
    /// Colour (RGBA, 0..1) of each label to draw; labels not listed are hidden.
    pub colors: Vec<(u8, [f32; 4])>,
    /// Slice planes as four LPS corners each in triangle-strip order (c00, c10, c01, c11), with
    /// their colour.
    pub planes: Vec<([[f32; 3]; 4], [f32; 4])>,
    /// Size of the pane in physical pixels.
    pub size_px: [u32; 2],
    pub background: [f32; 4],
}

impl egui_wgpu::CallbackTrait for SceneCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(r) = resources.get_mut::<MeshRenderer>() else { return Vec::new() };
        let size = [self.size_px[0].max(1), self.size_px[1].max(1)];
        r.ensure_offscreen(device, size);
        let camera = CameraUniforms { view_proj: self.view_proj.to_cols_array_2d(), light_dir: self.light_dir.extend(0.0).to_array() };
        queue.write_buffer(&r.camera, 0, bytemuck::bytes_of(&camera));
        for (label, color) in &self.colors {
            if let Some(s) = r.surfaces.get(label) {
                queue.write_buffer(&s.color, 0, bytemuck::cast_slice(color));
            }
        }
        // Slice-plane buffers, rebuilt each frame (four vertices and a colour each).
        while r.planes.len() < self.planes.len() {
            let vertices = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("3d plane"),
                size: 48,
                usage: wgpu::BufferUsages::VERTEX | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let (color, group) = r.color_buffer(device);
            r.planes.push((vertices, color, group));
        }
        for ((corners, color), (vb, cb, _)) in self.planes.iter().zip(&r.planes) {
            queue.write_buffer(vb, 0, bytemuck::cast_slice(corners));
            queue.write_buffer(cb, 0, bytemuck::cast_slice(color));
        }
        let off = r.offscreen.as_ref().expect("made above");
        let [br, bg, bb, ba] = self.background.map(f64::from);
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("3d scene"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &off.color_view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations { load: wgpu::LoadOp::Clear(wgpu::Color { r: br, g: bg, b: bb, a: ba }), store: wgpu::StoreOp::Store },
            })],
            depth_stencil_attachment: Some(wgpu::RenderPassDepthStencilAttachment {
                view: &off.depth_view,
                depth_ops: Some(wgpu::Operations { load: wgpu::LoadOp::Clear(1.0), store: wgpu::StoreOp::Discard }),
                stencil_ops: None,
            }),
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(&r.mesh_pipeline);
        pass.set_bind_group(0, &r.camera_group, &[]);
        for (label, _) in &self.colors {
            if let Some(s) = r.surfaces.get(label) {
                pass.set_bind_group(1, &s.color_group, &[]);
                pass.set_vertex_buffer(0, s.vertices.slice(..));
                pass.set_index_buffer(s.indices.slice(..), wgpu::IndexFormat::Uint32);
                pass.draw_indexed(0..s.index_count, 0, 0..1);
            }
        }
        pass.set_pipeline(&r.plane_pipeline);
        for (vb, _, group) in r.planes.iter().take(self.planes.len()) {
            pass.set_bind_group(1, group, &[]);
            pass.set_vertex_buffer(0, vb.slice(..));
            pass.draw(0..4, 0..1);
        }
        Vec::new()
    }

    fn paint(&self, _info: egui::PaintCallbackInfo, pass: &mut wgpu::RenderPass<'static>, resources: &egui_wgpu::CallbackResources) {
        let Some(r) = resources.get::<MeshRenderer>() else { return };
        let Some(off) = &r.offscreen else { return };
        pass.set_pipeline(&r.blit_pipeline);
        pass.set_bind_group(0, &off.blit_group, &[]);
        pass.draw(0..6, 0..1);
    }
}
