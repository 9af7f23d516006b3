// Main output view: the newest generated frame, letterboxed into the viewport.
//
// One full-viewport triangle; the fragment stage maps each pixel to the frame's texture coordinates and paints the
// bars outside the picture black. `letterbox.scale` is the picture's half-extent in normalized device coordinates
// (1 on the axis it fills, less than 1 on the other), so the picture keeps its aspect ratio.

struct Letterbox {
    scale: vec2<f32>,
    _pad: vec2<f32>,
};

@group(0) @binding(0) var frame_texture: texture_2d<f32>;
@group(0) @binding(1) var frame_sampler: sampler;
@group(0) @binding(2) var<uniform> letterbox: Letterbox;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) ndc: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    // (-1,-1), (3,-1), (-1,3): covers the whole viewport.
    let ndc = vec2<f32>(f32((index << 1u) & 2u) * 2.0 - 1.0, f32(index & 2u) * 2.0 - 1.0);
    var out: VertexOut;
    out.position = vec4<f32>(ndc, 0.0, 1.0);
    out.ndc = ndc;
    return out;
}

const BORDER_COLOR: vec4<f32> = vec4<f32>(0.0, 0.0, 0.0, 1.0);

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let picture = in.ndc / letterbox.scale;
    let uv = vec2<f32>(picture.x * 0.5 + 0.5, 0.5 - picture.y * 0.5);
    let texel = textureSampleLevel(frame_texture, frame_sampler, clamp(uv, vec2<f32>(0.0), vec2<f32>(1.0)), 0.0);
    let inside = all(abs(picture) <= vec2<f32>(1.0));
    return select(BORDER_COLOR, vec4<f32>(texel.rgb, 1.0), inside);
}
