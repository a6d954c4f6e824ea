// The 3D view: surfaces lit by a headlight and translucent slice planes, drawn off-screen with
// a depth buffer (blit.wgsl copies the result into egui's pass).

struct Camera {
    view_proj: mat4x4<f32>,
    // Direction the light comes from (towards the camera), world space.
    light_dir: vec4<f32>,
};

struct Surface {
    // RGB and opacity.
    color: vec4<f32>,
};

@group(0) @binding(0) var<uniform> camera: Camera;
@group(1) @binding(0) var<uniform> surface: Surface;

struct MeshIn {
    @location(0) position: vec3<f32>,
    @location(1) normal: vec3<f32>,
};

struct MeshOut {
    @builtin(position) clip: vec4<f32>,
    @location(0) normal: vec3<f32>,
};

@vertex
fn vs_mesh(v: MeshIn) -> MeshOut {
    var out: MeshOut;
    out.clip = camera.view_proj * vec4<f32>(v.position, 1.0);
    out.normal = v.normal;
    return out;
}

@fragment
fn fs_mesh(in: MeshOut, @builtin(front_facing) front: bool) -> @location(0) vec4<f32> {
    var n = normalize(in.normal);
    if (!front) {
        n = -n;
    }
    let diffuse = max(dot(n, camera.light_dir.xyz), 0.0);
    let shade = 0.25 + 0.75 * diffuse;
    return vec4<f32>(surface.color.rgb * shade, surface.color.a);
}

// Slice planes: flat translucent colour, no lighting.
@vertex
fn vs_plane(@location(0) position: vec3<f32>) -> @builtin(position) vec4<f32> {
    return camera.view_proj * vec4<f32>(position, 1.0);
}

@fragment
fn fs_plane() -> @location(0) vec4<f32> {
    return surface.color;
}
