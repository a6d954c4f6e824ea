//! `SliceView`: one of the axial, coronal and sagittal panes — drawing the slice through the
//! crosshair with true physical aspect (a wgpu paint callback does the pixels), the overlays
//! (crosshair, orientation letters, prompts, the propagation range's marks, brush cursor) and
//! turning mouse input into `ViewEvent`s for the app according to the active tool.

use super::brush::Brush;
use super::tools::Tool;
use super::view_frame::{Plane, ViewFrame};
use crate::render::{Colormap, SliceCallback, SliceUniforms};
use crate::volume::{Geometry, Window};
use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};

/// A prompt drawn on a slice, to show on the view it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptMark {
    /// A box between two voxel corners (inclusive) on a slice of `plane`.
    Box { plane: Plane, slice: usize, a: [f64; 3], b: [f64; 3] },
    /// A click at a voxel; `positive` = include.
    Point { plane: Plane, slice: usize, at: [f64; 3], positive: bool },
}

/// The slices a run may reach along one index axis, drawn as two lines on the views that cut
/// across that axis (dragging a line moves that end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeMarks {
    /// The index axis (0 = i, 1 = j, 2 = k) the run propagates along.
    pub axis: usize,
    pub first: usize,
    pub last: usize,
}

/// One end of the propagation range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeEnd {
    First,
    Last,
}

/// Screen distance (points) within which a drag grabs a range mark.
const MARK_GRAB: f32 = 6.0;

/// Screen distance (points) within which a drag grabs a corner of the box prompt.
const CORNER_GRAB: f32 = 8.0;

/// What a drag with the box tool does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BoxDrag {
    /// Draws a new box from where the drag started.
    New,
    /// Resizes the box prompt: this corner stays, the dragged one follows the pointer.
    Corner { fixed: [f64; 3] },
    /// Moves the box prompt (its corners as the drag found them) with the pointer.
    Move { a: [f64; 3], b: [f64; 3] },
}

/// What the view needs to know to draw itself.
pub struct ViewInputs<'a> {
    pub geometry: &'a Geometry,
    pub crosshair: [f64; 3],
    pub window: Window,
    pub colormap: Colormap,
    pub label_opacity: f32,
    pub outline: bool,
    pub show_labels: bool,
    pub tool: Tool,
    pub brush: Brush,
    pub prompts: &'a [PromptMark],
    pub range_marks: Option<RangeMarks>,
    pub gpu: bool,
}

/// What happened in a view, for the app to act on.
#[derive(Clone, Debug, PartialEq)]
pub enum ViewEvent {
    /// Move the crosshair to a voxel (continuous index).
    Crosshair([f64; 3]),
    /// Step the crosshair along the view's normal by this many slices.
    StepSlices(i32),
    /// Window/level drag: change of width and level in fractions of the current width.
    WindowLevel { dwidth: f32, dlevel: f32 },
    /// A box was drawn on `slice` between two voxel corners.
    BoxDrawn { plane: Plane, slice: usize, a: [f64; 3], b: [f64; 3] },
    /// The box prompt on `slice` was moved or resized by a corner: its new corners.
    BoxEdited { plane: Plane, slice: usize, a: [f64; 3], b: [f64; 3] },
    /// A point prompt.
    Point { plane: Plane, slice: usize, at: [f64; 3], positive: bool },
    /// Paint (or erase) around a voxel as part of a stroke.
    Paint { at: [usize; 3], normal: usize, erase: bool },
    /// The stroke in progress ended.
    StrokeEnd,
    /// The pointer is over this voxel.
    Hover([usize; 3]),
    /// A seed for region growing was clicked at this voxel.
    Seed([usize; 3]),
    /// A range mark was dragged to this slice.
    RangeMoved { end: RangeEnd, slice: usize },
}

/// What a box-tool drag pressed at screen point `p` does to the box prompt between voxel corners
/// `a` and `b` on a slice of `frame`: the corner nearest `p` (within `CORNER_GRAB`) is resized,
/// a press inside moves the box, a press elsewhere draws a new one.
fn box_drag_at(p: Pos2, a: [f64; 3], b: [f64; 3], frame: &ViewFrame, to_screen: &impl Fn([f64; 3]) -> Pos2) -> BoxDrag {
    // The two other corners: a's coordinate across the screen with b's down it, and the reverse.
    let mut c = a;
    c[frame.down] = b[frame.down];
    let mut d = b;
    d[frame.down] = a[frame.down];
    let nearest = [(a, b), (b, a), (c, d), (d, c)]
        .into_iter()
        .map(|(corner, opposite)| (to_screen(corner).distance(p), opposite))
        .min_by(|x, y| x.0.total_cmp(&y.0));
    match nearest {
        Some((distance, fixed)) if distance <= CORNER_GRAB => BoxDrag::Corner { fixed },
        _ if Rect::from_two_pos(to_screen(a), to_screen(b)).contains(p) => BoxDrag::Move { a, b },
        _ => BoxDrag::New,
    }
}

/// Where voxel `v` falls on the screen when the view's image is drawn in `img`.
pub fn screen_of(frame: &ViewFrame, g: &Geometry, img: Rect, v: [f64; 3]) -> Pos2 {
    let (fx, fy) = frame.fraction_of(g, v);
    Pos2::new(img.left() + fx as f32 * img.width(), img.top() + fy as f32 * img.height())
}

/// Zoom, pan and interaction state of one pane.
#[derive(Clone, Debug)]
pub struct SliceView {
    pub plane: Plane,
    /// 1 = the slice fits the pane.
    pub zoom: f32,
    /// Offset of the image centre from the pane centre, in points.
    pub pan: Vec2,
    /// The box tool's drag in progress: what it does, and the voxel where it started.
    box_drag: Option<(BoxDrag, [f64; 3])>,
    /// The box the drag in progress makes (two voxel corners), drawn until it is released.
    box_shown: Option<([f64; 3], [f64; 3])>,
    /// The range mark being dragged.
    dragged_mark: Option<RangeEnd>,
    /// Screen rectangle of the image in the last frame (points), for tests and hit testing.
    pub last_image_rect: Option<Rect>,
}

impl SliceView {
    pub fn new(plane: Plane) -> Self {
        SliceView { plane, zoom: 1.0, pan: Vec2::ZERO, box_drag: None, box_shown: None, dragged_mark: None, last_image_rect: None }
    }

    pub fn id(&self) -> u64 {
        self.plane as u64 + 1
    }

    /// The slice this view shows for a crosshair position.
    pub fn slice_of(&self, frame: &ViewFrame, g: &Geometry, crosshair: [f64; 3]) -> usize {
        (crosshair[frame.normal].round().max(0.0) as usize).min(frame.slice_count(g) - 1)
    }

    /// Where the image is drawn inside `pane` for the current zoom and pan.
    pub fn image_rect(&self, frame: &ViewFrame, g: &Geometry, pane: Rect) -> Rect {
        let (w_mm, h_mm) = frame.size_mm(g);
        let scale = (pane.width() as f64 / w_mm).min(pane.height() as f64 / h_mm) as f32 * self.zoom;
        Rect::from_center_size(pane.center() + self.pan, Vec2::new(w_mm as f32 * scale, h_mm as f32 * scale))
    }

    /// Draws the pane in `pane` and returns what the user did in it.
    pub fn show(&mut self, ui: &mut egui::Ui, pane: Rect, input: &ViewInputs) -> Vec<ViewEvent> {
        let g = input.geometry;
        let frame = ViewFrame::new(self.plane, g);
        let slice = self.slice_of(&frame, g, input.crosshair);
        let response = ui.allocate_rect(pane, Sense::click_and_drag());
        let label = format!("{} view", self.plane.name());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, &label));
        let mut events = Vec::new();

        self.handle_wheel(ui, &response, pane, &mut events);
        let img = self.image_rect(&frame, g, pane);
        self.last_image_rect = Some(img);
        let voxel_of = |p: Pos2| {
            let fx = ((p.x - img.left()) / img.width()) as f64;
            let fy = ((p.y - img.top()) / img.height()) as f64;
            frame.voxel_at(g, slice, fx, fy)
        };
        let inside = |v: [f64; 3]| (0..3).all(|a| v[a] > -0.5 && v[a] < g.dims[a] as f64 - 0.5);
        let nearest = |v: [f64; 3]| v.map(|x| x.round().max(0.0) as usize);

        if let Some(p) = response.hover_pos() {
            let v = voxel_of(p);
            if inside(v) {
                events.push(ViewEvent::Hover(nearest(v)));
            }
        }
        // Any tool: middle drag pans, right drag sets window/level.
        if response.dragged_by(egui::PointerButton::Middle) {
            self.pan += response.drag_delta();
        }
        if response.dragged_by(egui::PointerButton::Secondary) {
            let d = response.drag_delta();
            events.push(ViewEvent::WindowLevel { dwidth: d.x / pane.width().max(1.0) * 2.0, dlevel: -d.y / pane.height().max(1.0) });
        }
        let pointer = response.interact_pointer_pos();
        let to_screen = |v: [f64; 3]| screen_of(&frame, g, img, v);
        // The range marks, where this view cuts across the run's axis: (end, slice, screen
        // coordinate along the axis) and whether the axis runs across the screen.
        let marks = input.range_marks.filter(|m| m.axis != frame.normal).map(|m| {
            let across = m.axis == frame.right;
            let at = |slice: usize| {
                let mut v = input.crosshair;
                v[m.axis] = slice as f64;
                let p = to_screen(v);
                if across { p.x } else { p.y }
            };
            ([(RangeEnd::First, m.first, at(m.first)), (RangeEnd::Last, m.last, at(m.last))], across, m.axis)
        });
        match input.tool {
            Tool::Navigate => {
                // Grabbed where the button went down (the drag starts a few points later).
                let pressed_at = ui.input(|i| i.pointer.press_origin()).or(pointer);
                if response.drag_started_by(egui::PointerButton::Primary)
                    && let (Some(p), Some((ends, across, _))) = (pressed_at, &marks)
                {
                    let coordinate = if *across { p.x } else { p.y };
                    self.dragged_mark = ends.iter().find(|(_, _, at)| (coordinate - at).abs() <= MARK_GRAB).map(|(end, _, _)| *end);
                }
                if response.dragged_by(egui::PointerButton::Primary) {
                    match (self.dragged_mark, pointer, &marks) {
                        (Some(end), Some(p), Some((_, _, axis))) => {
                            let count = g.dims[*axis];
                            let slice = (voxel_of(p)[*axis].round().max(0.0) as usize).min(count - 1);
                            events.push(ViewEvent::RangeMoved { end, slice });
                        }
                        _ => self.pan += response.drag_delta(),
                    }
                }
                if response.drag_stopped() {
                    self.dragged_mark = None;
                }
                if response.clicked_by(egui::PointerButton::Primary)
                    && let Some(p) = pointer
                {
                    let v = voxel_of(p);
                    if inside(v) {
                        events.push(ViewEvent::Crosshair(v));
                    }
                }
            }
            Tool::Box => {
                // The box prompt on this slice, which a drag at a corner resizes and a drag
                // inside moves; a drag anywhere else draws a new box.
                let current = input.prompts.iter().find_map(|m| match m {
                    PromptMark::Box { plane, slice: s, a, b } if *plane == self.plane && *s == slice => Some((*a, *b)),
                    _ => None,
                });
                // Grabbed where the button went down (the drag starts a few points later).
                let pressed_at = ui.input(|i| i.pointer.press_origin()).or(pointer);
                if response.drag_started_by(egui::PointerButton::Primary)
                    && let Some(pressed) = pressed_at
                {
                    let drag = current.map_or(BoxDrag::New, |(a, b)| box_drag_at(pressed, a, b, &frame, &to_screen));
                    self.box_drag = Some((drag, voxel_of(pressed)));
                }
                if response.dragged_by(egui::PointerButton::Primary)
                    && let (Some(p), Some((drag, start))) = (pointer, self.box_drag)
                {
                    let v = voxel_of(p);
                    self.box_shown = Some(match drag {
                        BoxDrag::New => (start, v),
                        BoxDrag::Corner { fixed } => (fixed, v),
                        BoxDrag::Move { a, b } => {
                            let d: [f64; 3] = std::array::from_fn(|i| v[i] - start[i]);
                            (std::array::from_fn(|i| a[i] + d[i]), std::array::from_fn(|i| b[i] + d[i]))
                        }
                    });
                }
                if response.drag_stopped_by(egui::PointerButton::Primary)
                    && let (Some((drag, _)), Some((a, b))) = (self.box_drag.take(), self.box_shown.take())
                {
                    events.push(match drag {
                        BoxDrag::New => ViewEvent::BoxDrawn { plane: self.plane, slice, a, b },
                        BoxDrag::Corner { .. } | BoxDrag::Move { .. } => ViewEvent::BoxEdited { plane: self.plane, slice, a, b },
                    });
                }
            }
            Tool::PositivePoint | Tool::NegativePoint => {
                if response.clicked_by(egui::PointerButton::Primary)
                    && let Some(p) = pointer
                {
                    let v = voxel_of(p);
                    if inside(v) {
                        events.push(ViewEvent::Point { plane: self.plane, slice, at: v, positive: input.tool == Tool::PositivePoint });
                    }
                }
            }
            Tool::Brush | Tool::Eraser => {
                let painting = response.is_pointer_button_down_on() && ui.input(|i| i.pointer.primary_down());
                if (painting || response.clicked_by(egui::PointerButton::Primary))
                    && let Some(p) = pointer.or(response.hover_pos())
                {
                    let v = voxel_of(p);
                    if inside(v) {
                        events.push(ViewEvent::Paint { at: nearest(v), normal: frame.normal, erase: input.tool == Tool::Eraser });
                    }
                }
                if response.drag_stopped_by(egui::PointerButton::Primary) || response.clicked_by(egui::PointerButton::Primary) {
                    events.push(ViewEvent::StrokeEnd);
                }
            }
            Tool::RegionGrow => {
                if response.clicked_by(egui::PointerButton::Primary)
                    && let Some(p) = pointer
                {
                    let v = voxel_of(p);
                    if inside(v) {
                        events.push(ViewEvent::Seed(nearest(v)));
                    }
                }
            }
        }

        self.paint(ui, pane, img, &frame, slice, input);
        if let Some((ends, across, _)) = marks {
            let painter = ui.painter_at(pane);
            let stroke = Stroke::new(1.5, Color32::from_rgb(255, 140, 40));
            // Labels a quarter in from the image's edge, clear of the orientation letters.
            for (end, slice, at) in ends {
                let (line, text_at, align) = if across {
                    ([Pos2::new(at, img.top()), Pos2::new(at, img.bottom())], Pos2::new(at + 3.0, img.top() + img.height() * 0.25), egui::Align2::LEFT_TOP)
                } else {
                    ([Pos2::new(img.left(), at), Pos2::new(img.right(), at)], Pos2::new(img.left() + img.width() * 0.25, at - 2.0), egui::Align2::LEFT_BOTTOM)
                };
                painter.line_segment(line, stroke);
                let name = match end {
                    RangeEnd::First => "from",
                    RangeEnd::Last => "to",
                };
                painter.text(text_at, align, format!("{name} {}", slice + 1), egui::FontId::proportional(12.0), stroke.color);
            }
        }
        events
    }

    /// True while a box-tool drag moves or resizes the box prompt.
    fn editing_box(&self) -> bool {
        matches!(self.box_drag, Some((BoxDrag::Corner { .. } | BoxDrag::Move { .. }, _)))
    }

    fn handle_wheel(&mut self, ui: &egui::Ui, response: &egui::Response, pane: Rect, events: &mut Vec<ViewEvent>) {
        if !response.hovered() {
            return;
        }
        let wheel: Vec<(egui::MouseWheelUnit, Vec2, egui::Modifiers)> = ui.input(|i| {
            i.events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::MouseWheel { unit, delta, modifiers, .. } => Some((*unit, *delta, *modifiers)),
                    _ => None,
                })
                .collect()
        });
        for (unit, delta, modifiers) in wheel {
            let notches = match unit {
                egui::MouseWheelUnit::Line => delta.y,
                egui::MouseWheelUnit::Point => delta.y / 40.0,
                egui::MouseWheelUnit::Page => delta.y * 10.0,
            };
            if modifiers.ctrl || modifiers.command {
                let factor = 1.1f32.powf(notches);
                let old = self.zoom;
                self.zoom = (self.zoom * factor).clamp(0.25, 40.0);
                if let Some(p) = response.hover_pos() {
                    // Keep the point under the cursor in place.
                    let c = pane.center() + self.pan;
                    let f = self.zoom / old;
                    let new_c = p - (p - c) * f;
                    self.pan = new_c - pane.center();
                }
            } else if notches != 0.0 {
                let steps = notches.signum() as i32 * (notches.abs().round().max(1.0) as i32);
                events.push(ViewEvent::StepSlices(steps));
            }
        }
    }

    fn paint(&self, ui: &egui::Ui, pane: Rect, img: Rect, frame: &ViewFrame, slice: usize, input: &ViewInputs) {
        let g = input.geometry;
        let painter = ui.painter_at(pane);
        painter.rect_filled(pane, 0.0, Color32::BLACK);
        if input.gpu {
            let ppp = ui.ctx().pixels_per_point() as f64;
            let rect_px = [img.left() as f64 * ppp, img.top() as f64 * ppp, img.width() as f64 * ppp, img.height() as f64 * ppp];
            let rows = frame.pixel_to_voxel_rows(g, slice, rect_px);
            let row = |r: usize| [rows[r][0] as f32, rows[r][1] as f32, rows[r][2] as f32, 0.0];
            let mut step_x = [0i32; 4];
            step_x[frame.right] = 1;
            let mut step_y = [0i32; 4];
            step_y[frame.down] = 1;
            let uniforms = SliceUniforms {
                m0: row(0),
                m1: row(1),
                m2: row(2),
                dims: [g.dims[0] as f32, g.dims[1] as f32, g.dims[2] as f32, 0.0],
                window: [input.window.lo as f32, input.window.hi as f32, input.label_opacity, if input.outline { 1.0 } else { 0.0 }],
                step_x,
                step_y,
                flags: [input.colormap.row(), input.show_labels as u32, 0, 0],
            };
            painter.add(egui_wgpu::Callback::new_paint_callback(pane, SliceCallback { view_id: self.id(), uniforms }));
        }
        let to_screen = |v: [f64; 3]| screen_of(frame, g, img, v);
        // Crosshair through the other two planes.
        let c = to_screen(input.crosshair);
        let cross = Stroke::new(1.0, Color32::from_rgba_unmultiplied(255, 220, 0, 140));
        painter.line_segment([Pos2::new(img.left(), c.y), Pos2::new(img.right(), c.y)], cross);
        painter.line_segment([Pos2::new(c.x, img.top()), Pos2::new(c.x, img.bottom())], cross);
        // Prompts on this slice.
        for mark in input.prompts {
            match mark {
                // While a drag moves or resizes it, the box is drawn where the drag puts it.
                PromptMark::Box { plane, slice: s, a, b } if *plane == self.plane && *s == slice && !self.editing_box() => {
                    let rect = Rect::from_two_pos(to_screen(*a), to_screen(*b));
                    let color = Color32::from_rgb(80, 160, 255);
                    painter.rect_stroke(rect, 0.0, Stroke::new(2.0, color), egui::StrokeKind::Middle);
                    if input.tool == Tool::Box {
                        // Handles: a corner drag resizes the box.
                        for corner in [rect.left_top(), rect.right_top(), rect.left_bottom(), rect.right_bottom()] {
                            painter.rect_filled(Rect::from_center_size(corner, Vec2::splat(6.0)), 0.0, color);
                        }
                    }
                }
                PromptMark::Point { plane, slice: s, at, positive } if *plane == self.plane && *s == slice => {
                    let color = if *positive { Color32::from_rgb(60, 220, 90) } else { Color32::from_rgb(240, 70, 70) };
                    painter.circle(to_screen(*at), 5.0, color, Stroke::new(1.5, Color32::WHITE));
                }
                _ => {}
            }
        }
        if let Some((a, b)) = self.box_shown {
            painter.rect_stroke(Rect::from_two_pos(to_screen(a), to_screen(b)), 0.0, Stroke::new(1.5, Color32::from_rgb(80, 160, 255)), egui::StrokeKind::Middle);
        }
        // Brush cursor: the radius in mm drawn to scale.
        if matches!(input.tool, Tool::Brush | Tool::Eraser)
            && let Some(p) = ui.ctx().pointer_hover_pos().filter(|p| pane.contains(*p))
        {
            let (w_mm, _) = frame.size_mm(g);
            let r = input.brush.radius_mm as f32 * img.width() / w_mm as f32;
            painter.circle_stroke(p, r.max(1.0), Stroke::new(1.0, Color32::WHITE));
        }
        // Orientation letters and the slice number.
        let letters = frame.edge_letters();
        let font = egui::FontId::proportional(14.0);
        let text = Color32::from_rgb(230, 200, 60);
        painter.text(Pos2::new(pane.left() + 6.0, pane.center().y), egui::Align2::LEFT_CENTER, letters[0], font.clone(), text);
        painter.text(Pos2::new(pane.right() - 6.0, pane.center().y), egui::Align2::RIGHT_CENTER, letters[1], font.clone(), text);
        painter.text(Pos2::new(pane.center().x, pane.top() + 4.0), egui::Align2::CENTER_TOP, letters[2], font.clone(), text);
        painter.text(Pos2::new(pane.center().x, pane.bottom() - 4.0), egui::Align2::CENTER_BOTTOM, letters[3], font.clone(), text);
        painter.text(
            pane.left_top() + Vec2::new(6.0, 4.0),
            egui::Align2::LEFT_TOP,
            format!("{}  {}/{}", self.plane.name(), slice + 1, frame.slice_count(g)),
            egui::FontId::proportional(13.0),
            Color32::from_gray(220),
        );
        painter.text(
            pane.left_bottom() + Vec2::new(6.0, -4.0),
            egui::Align2::LEFT_BOTTOM,
            format!("W {:.0}  L {:.0}", input.window.width(), input.window.level()),
            egui::FontId::proportional(12.0),
            Color32::from_gray(180),
        );
    }
}
