//! The 3D pane: an orbit camera (glam) around the volume, label surfaces built by marching
//! cubes in the background (debounced after edits, never on the UI thread) and drawn with the
//! mesh renderer, plus the three current slice planes.

use super::jobs::BackgroundJob;
use super::labels::LabelTable;
use crate::mesh::{self, Mesh};
use crate::render::mesh_renderer::{MeshRenderer, SceneCallback, SurfaceData};
use crate::volume::{Geometry, Volume, VolumeMeta, VoxelBuffer};
use glam::{Mat4, Vec3};
use std::time::{Duration, Instant};

/// Wait this long after the last edit before rebuilding surfaces.
const DEBOUNCE: Duration = Duration::from_millis(400);
/// Taubin smoothing passes applied to the displayed surfaces (volume-preserving; the
/// staircase of thick slices otherwise dominates the picture). Exports use the CLI's choice.
const DISPLAY_SMOOTHING: usize = 10;

/// Orbit camera: looks at `target` from `distance` at `yaw`/`pitch` (radians), superior up.
#[derive(Clone, Debug, PartialEq)]
pub struct OrbitCamera {
    pub target: Vec3,
    pub distance: f32,
    pub yaw: f32,
    pub pitch: f32,
}

impl OrbitCamera {
    /// Facing the patient from the front, a little from the right and above (the patient's
    /// right on screen left, superior up), whole volume in view.
    pub fn framing(g: &Geometry) -> Self {
        let corners = [[0.0; 3], g.dims.map(|d| d as f64 - 1.0)];
        let (a, b) = (g.voxel_to_world(corners[0]), g.voxel_to_world(corners[1]));
        let target = Vec3::new(((a[0] + b[0]) / 2.0) as f32, ((a[1] + b[1]) / 2.0) as f32, ((a[2] + b[2]) / 2.0) as f32);
        let extent: f64 = (0..3).map(|i| (g.dims[i] as f64 * g.spacing[i]).powi(2)).sum::<f64>().sqrt();
        OrbitCamera { target, distance: (extent * 1.4) as f32, yaw: -0.5, pitch: 0.35 }
    }

    /// Camera position: yaw 0, pitch 0 puts it anterior (-y in LPS) of the target.
    pub fn eye(&self) -> Vec3 {
        let dir = Vec3::new(self.yaw.sin() * self.pitch.cos(), -self.yaw.cos() * self.pitch.cos(), self.pitch.sin());
        self.target + dir * self.distance
    }

    pub fn view_proj(&self, aspect: f32) -> Mat4 {
        let view = glam::camera::rh::view::look_at_mat4(self.eye(), self.target, Vec3::Z);
        let near = (self.distance * 0.01).max(0.1);
        let proj = glam::camera::rh::proj::directx::perspective(35f32.to_radians(), aspect.max(1e-3), near, self.distance * 10.0);
        proj * view
    }

    pub fn orbit(&mut self, dx: f32, dy: f32) {
        self.yaw -= dx * 0.01;
        self.pitch = (self.pitch + dy * 0.01).clamp(-1.55, 1.55);
    }

    /// Moves the target in the view plane by a drag of (dx, dy) points in a pane `height` tall.
    pub fn pan(&mut self, dx: f32, dy: f32, height: f32) {
        let forward = (self.target - self.eye()).normalize();
        let right = forward.cross(Vec3::Z).normalize_or_zero();
        let up = right.cross(forward);
        let scale = self.distance * (35f32.to_radians() / 2.0).tan() * 2.0 / height.max(1.0);
        self.target += (-right * dx + up * dy) * scale;
    }

    pub fn zoom(&mut self, factor: f32) {
        self.distance = (self.distance / factor).max(1.0);
    }
}

/// Surfaces built in the background for one label-map revision.
pub struct BuiltSurfaces {
    pub revision: u64,
    pub surfaces: Vec<(u8, Mesh)>,
    pub error: Option<String>,
}

/// State of the 3D pane.
pub struct View3d {
    pub camera: Option<OrbitCamera>,
    pub opacity: f32,
    pub show_planes: bool,
    built_revision: Option<u64>,
    changed_at: Option<(u64, Instant)>,
    job: Option<BackgroundJob<BuiltSurfaces>>,
    pub status: String,
}

impl Default for View3d {
    fn default() -> Self {
        View3d { camera: None, opacity: 1.0, show_planes: true, built_revision: None, changed_at: None, job: None, status: String::new() }
    }
}

impl View3d {
    /// Forgets surfaces and camera (a new image).
    pub fn reset(&mut self, renderer: Option<&mut MeshRenderer>) {
        *self = View3d::default();
        if let Some(r) = renderer {
            r.clear();
        }
    }

    /// The label-map revision the shown surfaces were built from.
    pub fn built_revision(&self) -> Option<u64> {
        self.built_revision
    }

    /// True while surfaces are being rebuilt.
    pub fn is_building(&self) -> bool {
        self.job.is_some()
    }

    /// Starts a rebuild once the label map has been still for a moment.
    pub fn schedule(&mut self, ctx: &egui::Context, revision: u64, geometry: &Geometry, labels: &[u8]) {
        if self.built_revision == Some(revision) || self.job.is_some() {
            return;
        }
        match self.changed_at {
            Some((r, at)) if r == revision => {
                if at.elapsed() < DEBOUNCE {
                    ctx.request_repaint_after(DEBOUNCE - at.elapsed());
                    return;
                }
            }
            _ => {
                self.changed_at = Some((revision, Instant::now()));
                ctx.request_repaint_after(DEBOUNCE);
                return;
            }
        }
        let volume = Volume {
            geometry: geometry.clone(),
            timepoints: 1,
            data: VoxelBuffer::U8(labels.to_vec()),
            meta: VolumeMeta::default(),
        };
        self.status = "Building surfaces…".into();
        self.job = Some(BackgroundJob::spawn("Building 3D surfaces", Some(ctx.clone()), move |_, tx| {
            let built = match mesh::label_surfaces(&volume) {
                Ok(list) => {
                    let surfaces = list
                        .into_iter()
                        .map(|(label, mut m)| {
                            mesh::taubin_smooth(&mut m, DISPLAY_SMOOTHING, mesh::TAUBIN_LAMBDA, mesh::TAUBIN_MU);
                            (label as u8, m)
                        })
                        .collect();
                    BuiltSurfaces { revision, surfaces, error: None }
                }
                Err(mesh::MeshError::NoLabels) => BuiltSurfaces { revision, surfaces: Vec::new(), error: None },
                Err(e) => BuiltSurfaces { revision, surfaces: Vec::new(), error: Some(e.to_string()) },
            };
            tx.send(built);
        }));
    }

    /// Takes finished surfaces into the renderer.
    pub fn poll(&mut self, render_state: Option<&egui_wgpu::RenderState>) {
        let Some(job) = &self.job else { return };
        for built in job.drain() {
            if let Some(rs) = render_state {
                let mut renderer = rs.renderer.write();
                if let Some(r) = renderer.callback_resources.get_mut::<MeshRenderer>() {
                    r.clear();
                    for (label, m) in &built.surfaces {
                        r.set_surface(&rs.device, &rs.queue, *label, &SurfaceData { positions: &m.positions, normals: &m.normals, indices: &m.indices });
                    }
                }
            }
            let triangles: usize = built.surfaces.iter().map(|(_, m)| m.triangle_count()).sum();
            self.status = match built.error {
                Some(e) => format!("3D: {e}"),
                None => format!("{} surface(s), {} triangles", built.surfaces.len(), triangles),
            };
            self.built_revision = Some(built.revision);
        }
        if job.is_finished() {
            self.job = None;
        }
    }

    /// Draws the pane and handles orbit (left drag), pan (right/middle drag) and zoom (wheel).
    pub fn show(&mut self, ui: &mut egui::Ui, pane: egui::Rect, g: &Geometry, table: &LabelTable, crosshair: [f64; 3], gpu: bool) {
        let response = ui.allocate_rect(pane, egui::Sense::click_and_drag());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "3D view"));
        let camera = self.camera.get_or_insert_with(|| OrbitCamera::framing(g));
        if response.dragged_by(egui::PointerButton::Primary) {
            let d = response.drag_delta();
            camera.orbit(d.x, d.y);
        }
        if response.dragged_by(egui::PointerButton::Secondary) || response.dragged_by(egui::PointerButton::Middle) {
            let d = response.drag_delta();
            camera.pan(d.x, d.y, pane.height());
        }
        if response.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y + (i.zoom_delta() - 1.0) * 200.0);
            if scroll != 0.0 {
                camera.zoom(1.0015f32.powf(scroll));
            }
        }
        if response.double_clicked() {
            *camera = OrbitCamera::framing(g);
        }
        let painter = ui.painter_at(pane);
        if gpu {
            let ppp = ui.ctx().pixels_per_point();
            let size_px = [(pane.width() * ppp).round() as u32, (pane.height() * ppp).round() as u32];
            let colors = table
                .labels
                .iter()
                .filter(|l| l.visible)
                .map(|l| (l.value, [l.color[0] as f32 / 255.0, l.color[1] as f32 / 255.0, l.color[2] as f32 / 255.0, self.opacity]))
                .collect();
            let planes = if self.show_planes { slice_planes(g, crosshair) } else { Vec::new() };
            let callback = SceneCallback {
                view_proj: camera.view_proj(pane.width() / pane.height().max(1.0)),
                light_dir: (camera.eye() - camera.target).normalize_or_zero(),
                colors,
                planes,
                size_px,
                background: [0.05, 0.05, 0.07, 1.0],
            };
            painter.add(egui_wgpu::Callback::new_paint_callback(pane, callback));
        }
        painter.text(pane.left_top() + egui::vec2(6.0, 4.0), egui::Align2::LEFT_TOP, "3D", egui::FontId::proportional(13.0), egui::Color32::from_gray(220));
        painter.text(pane.left_bottom() + egui::vec2(6.0, -4.0), egui::Align2::LEFT_BOTTOM, &self.status, egui::FontId::proportional(12.0), egui::Color32::from_gray(180));
    }
}

/// The three planes through the crosshair as LPS quads (strip order), coloured by the anatomical
/// plane they are closest to: sagittal red, coronal green, axial blue.
fn slice_planes(g: &Geometry, crosshair: [f64; 3]) -> Vec<([[f32; 3]; 4], [f32; 4])> {
    let colors = [[0.9, 0.3, 0.3, 0.12], [0.3, 0.9, 0.3, 0.12], [0.3, 0.5, 1.0, 0.12]];
    (0..3)
        .map(|normal| {
            // The world axis this voxel axis runs along most is the plane's normal.
            let world = (0..3).max_by(|&a, &b| g.direction[a][normal].abs().total_cmp(&g.direction[b][normal].abs())).unwrap_or(normal);
            let (a, b) = match normal {
                0 => (1, 2),
                1 => (0, 2),
                _ => (0, 1),
            };
            let corner = |u: f64, v: f64| {
                let mut ijk = [0.0; 3];
                ijk[normal] = crosshair[normal];
                ijk[a] = u;
                ijk[b] = v;
                g.voxel_to_world(ijk).map(|x| x as f32)
            };
            let (ua, vb) = (g.dims[a] as f64 - 1.0, g.dims[b] as f64 - 1.0);
            ([corner(0.0, 0.0), corner(ua, 0.0), corner(0.0, vb), corner(ua, vb)], colors[world])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_looks_from_anterior_with_superior_up() {
        let g = Geometry::new([10, 10, 10], [1.0; 3], [0.0; 3]);
        let cam = OrbitCamera::framing(&g);
        assert!(cam.eye().y < cam.target.y, "anterior is -y in LPS");
        // The patient's left (+x) projects to the right half of the screen from the front.
        let vp = cam.view_proj(1.0);
        let left = vp.project_point3(cam.target + Vec3::X * 5.0);
        let sup = vp.project_point3(cam.target + Vec3::Z * 5.0);
        assert!(left.x > 0.0, "patient left appears on screen right in an anterior view");
        assert!(sup.y > 0.0, "superior is up");
    }
}
