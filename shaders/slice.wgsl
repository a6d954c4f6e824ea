// One slice view of a volume: window/level, colormap and the label overlay, all per fragment.
//
// The image and the label map are 3D textures; each fragment finds its voxel through an affine
// map from framebuffer pixels to continuous voxel indices (so any axis, zoom and pan is one
// matrix). IMAGE_TEXEL is replaced when the pipeline is built: i32 (R16Sint), u32 (R16Uint) or
// f32 (R32Float), matching how the volume's stored type was uploaded.

struct SliceUniforms {
    // voxel index = (dot(m0.xyz, p), dot(m1.xyz, p), dot(m2.xyz, p)) with p = (px, py, 1).
    m0: vec4<f32>,
    m1: vec4<f32>,
    m2: vec4<f32>,
    // Volume size in voxels (xyz).
    dims: vec4<f32>,
    // lo, hi of the window; label opacity; 1.0 = outline only.
    window: vec4<f32>,
    // One voxel step along the slice's screen x and screen y axes (for outlines).
    step_x: vec4<i32>,
    step_y: vec4<i32>,
    // x: colormap row; y: 1 = show labels.
    flags: vec4<u32>,
};

@group(0) @binding(0) var<uniform> u: SliceUniforms;
@group(1) @binding(0) var image: texture_3d<IMAGE_TEXEL>;
@group(1) @binding(1) var labels: texture_3d<u32>;
@group(1) @binding(2) var palette: texture_2d<f32>;
@group(1) @binding(3) var colormaps: texture_2d<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
};

// A rectangle covering the whole callback viewport, from the vertex index alone.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(-1.0, -1.0), vec2<f32>(1.0, -1.0), vec2<f32>(1.0, 1.0),
        vec2<f32>(-1.0, -1.0), vec2<f32>(1.0, 1.0), vec2<f32>(-1.0, 1.0),
    );
    var out: VertexOut;
    out.position = vec4<f32>(corners[index], 0.0, 1.0);
    return out;
}

fn inside(v: vec3<i32>) -> bool {
    let d = vec3<i32>(u.dims.xyz);
    return all(v >= vec3<i32>(0)) && all(v < d);
}

fn label_at(v: vec3<i32>) -> u32 {
    if (!inside(v)) {
        return 0u;
    }
    return textureLoad(labels, v, 0).r;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let p = vec3<f32>(in.position.xy, 1.0);
    let v = vec3<f32>(dot(u.m0.xyz, p), dot(u.m1.xyz, p), dot(u.m2.xyz, p));
    // Voxel i covers [i - 0.5, i + 0.5).
    let voxel = vec3<i32>(floor(v + vec3<f32>(0.5)));
    if (!inside(voxel)) {
        return vec4<f32>(0.0, 0.0, 0.0, 1.0);
    }
    let value = f32(textureLoad(image, voxel, 0).r);
    let width = max(u.window.y - u.window.x, 1e-6);
    let t = clamp((value - u.window.x) / width, 0.0, 1.0);
    var color = textureLoad(colormaps, vec2<i32>(i32(round(t * 255.0)), i32(u.flags.x)), 0).rgb;

    if (u.flags.y == 1u) {
        let label = label_at(voxel);
        if (label > 0u) {
            let lc = textureLoad(palette, vec2<i32>(i32(label), 0), 0);
            var alpha = lc.a * u.window.z;
            if (u.window.w > 0.5) {
                // Outline: only voxels with a differently labelled in-plane neighbour.
                let edge = label_at(voxel + u.step_x.xyz) != label || label_at(voxel - u.step_x.xyz) != label
                    || label_at(voxel + u.step_y.xyz) != label || label_at(voxel - u.step_y.xyz) != label;
                alpha = select(0.0, lc.a, edge);
            }
            color = mix(color, lc.rgb, alpha);
        }
    }
    return vec4<f32>(color, 1.0);
}
