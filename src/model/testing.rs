//! Reference formulas shared by the executors' op tests (test builds only).

/// PyTorch's `reflect_coordinates` for `align_corners=False` (reflection about `[-0.5, size - 0.5]`), followed by
/// `clip_coordinates`: where `grid_sample` with reflection padding reads a source coordinate.
pub fn reflect_clip(coord: f64, size: usize) -> f64 {
    let (min, span) = (-0.5, size as f64);
    let v = (coord - min).abs();
    let extra = v % span;
    let flips = (v / span).floor() as i64;
    let r = if flips % 2 == 0 { extra + min } else { span - extra + min };
    r.clamp(0.0, size as f64 - 1.0)
}
