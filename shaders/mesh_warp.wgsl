// Preview engine on the GPU: the portrait's landmark mesh drawn as textured triangles.
//
// Each vertex carries where it goes (target, output pixels) and where it comes from (source, portrait pixels); the
// rasteriser interpolates the source position across the triangle (barycentric, as the CPU path) and the fragment
// stage samples the portrait bilinearly with clamp-to-edge. Pixel coordinates have pixel centres at i + 0.5 on both
// sides, so the GPU and CPU paths sample the same points.

struct Frame {
    size_px: vec2<f32>,
    _pad: vec2<f32>,
};

@group(0) @binding(0) var portrait: texture_2d<f32>;
@group(0) @binding(1) var portrait_sampler: sampler;
@group(0) @binding(2) var<uniform> frame: Frame;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@location(0) target_px: vec2<f32>, @location(1) source_px: vec2<f32>) -> VertexOut {
    let unit = target_px / frame.size_px;
    var out: VertexOut;
    out.position = vec4<f32>(unit.x * 2.0 - 1.0, 1.0 - unit.y * 2.0, 0.0, 1.0);
    out.uv = source_px / frame.size_px;
    return out;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    return vec4<f32>(textureSampleLevel(portrait, portrait_sampler, in.uv, 0.0).rgb, 1.0);
}
