//! Delaunay triangulation (Bowyer–Watson) of a portrait's landmark set, computed once per identity.
//!
//! Owns nothing beyond the call: receives 2-D points (pixels), emits triangles as index triples into them,
//! counter-clockwise in image coordinates (y down). Duplicate points are kept as vertices but never form triangles.

/// How far the enclosing super-triangle reaches, in units of the points' extent: far enough that hull edges of
/// (nearly) collinear border points are not cut off by it.
const SUPER_SCALE: f64 = 1.0e4;

/// A triangle as three indices into the input points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Triangle(pub [usize; 3]);

#[derive(Clone, Copy, Debug)]
struct Circle {
    cx: f64,
    cy: f64,
    r2: f64,
}

fn circumcircle(p: [[f64; 2]; 3]) -> Option<Circle> {
    let [[ax, ay], [bx, by], [cx, cy]] = p;
    let d = 2.0 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by));
    if d.abs() < 1e-12 {
        return None;
    }
    let (a2, b2, c2) = (ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy);
    let ux = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d;
    let uy = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d;
    Some(Circle { cx: ux, cy: uy, r2: (ax - ux).powi(2) + (ay - uy).powi(2) })
}

/// Twice the signed area; positive when `a → b → c` turns counter-clockwise in a y-up frame.
pub fn orient(a: [f32; 2], b: [f32; 2], c: [f32; 2]) -> f32 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

/// Triangulates `points`. Points with non-finite coordinates are ignored.
pub fn triangulate(points: &[[f32; 2]]) -> Vec<Triangle> {
    let finite: Vec<usize> = (0..points.len()).filter(|&i| points[i].iter().all(|v| v.is_finite())).collect();
    if finite.len() < 3 {
        return Vec::new();
    }
    let pt = |i: usize| -> [f64; 2] { [points[i][0] as f64, points[i][1] as f64] };
    let (mut min, mut max) = ([f64::MAX; 2], [f64::MIN; 2]);
    for &i in &finite {
        let p = pt(i);
        for k in 0..2 {
            min[k] = min[k].min(p[k]);
            max[k] = max[k].max(p[k]);
        }
    }
    let span = (max[0] - min[0]).max(max[1] - min[1]).max(1.0);
    let mid = [(min[0] + max[0]) / 2.0, (min[1] + max[1]) / 2.0];
    // A super-triangle far outside every point; its vertices get indices past the input.
    let n = points.len();
    let mut verts: Vec<[f64; 2]> = (0..n).map(pt).collect();
    verts.push([mid[0] - SUPER_SCALE * span, mid[1] - span]);
    verts.push([mid[0], mid[1] + SUPER_SCALE * span]);
    verts.push([mid[0] + SUPER_SCALE * span, mid[1] - span]);
    let mut tris: Vec<([usize; 3], Option<Circle>)> = Vec::new();
    let super_tri = [n, n + 1, n + 2];
    tris.push((super_tri, circumcircle([verts[n], verts[n + 1], verts[n + 2]])));
    let mut seen = std::collections::HashSet::new();
    for &i in &finite {
        let p = verts[i];
        let key = (p[0].to_bits(), p[1].to_bits());
        if !seen.insert(key) {
            continue;
        }
        let mut edges: Vec<[usize; 2]> = Vec::new();
        tris.retain(|(t, c)| {
            let inside = c.is_some_and(|c| (p[0] - c.cx).powi(2) + (p[1] - c.cy).powi(2) < c.r2 * (1.0 + 1e-12));
            if inside {
                edges.extend([[t[0], t[1]], [t[1], t[2]], [t[2], t[0]]]);
            }
            !inside
        });
        // Boundary of the cavity: edges that belong to exactly one removed triangle.
        let mut boundary = Vec::with_capacity(edges.len());
        for (k, e) in edges.iter().enumerate() {
            let shared = edges.iter().enumerate().any(|(j, f)| j != k && f[0] == e[1] && f[1] == e[0]);
            if !shared {
                boundary.push(*e);
            }
        }
        for [a, b] in boundary {
            let circle = circumcircle([verts[a], verts[b], p]);
            tris.push(([a, b, i], circle));
        }
    }
    tris.into_iter()
        .filter(|(t, _)| t.iter().all(|&v| v < n))
        .map(|(t, _)| {
            let [a, b, c] = t;
            let (pa, pb, pc) = (points[a], points[b], points[c]);
            if orient(pa, pb, pc) < 0.0 { Triangle([a, c, b]) } else { Triangle([a, b, c]) }
        })
        .filter(|Triangle([a, b, c])| orient(points[*a], points[*b], points[*c]).abs() > 1e-9)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(points: &[[f32; 2]], tris: &[Triangle]) -> f32 {
        tris.iter().map(|Triangle([a, b, c])| orient(points[*a], points[*b], points[*c]).abs() / 2.0).sum()
    }

    #[test]
    fn a_grid_is_covered_exactly_once() {
        let points: Vec<[f32; 2]> =
            (0..6).flat_map(|y| (0..5).map(move |x| [x as f32 * 10.0, y as f32 * 7.0])).collect();
        let tris = triangulate(&points);
        assert_eq!(tris.len(), 2 * 4 * 5);
        assert!((area(&points, &tris) - 40.0 * 35.0).abs() < 1e-2);
        assert!(tris.iter().all(|Triangle([a, b, c])| orient(points[*a], points[*b], points[*c]) > 0.0));
    }

    #[test]
    fn the_empty_circle_property_holds_on_scattered_points() {
        let mut rng = crate::rng::SplitMix64::new(3);
        let mut points: Vec<[f32; 2]> =
            (0..200).map(|_| [rng.uniform() as f32 * 100.0, rng.uniform() as f32 * 80.0]).collect();
        points.extend([[0.0, 0.0], [100.0, 0.0], [0.0, 80.0], [100.0, 80.0]]);
        let tris = triangulate(&points);
        assert!((area(&points, &tris) - 8000.0).abs() < 1e-1, "covers the hull");
        for Triangle([a, b, c]) in &tris {
            let p = |i: usize| [points[i][0] as f64, points[i][1] as f64];
            let circle = circumcircle([p(*a), p(*b), p(*c)]).expect("non-degenerate");
            for (k, q) in points.iter().enumerate() {
                if [*a, *b, *c].contains(&k) {
                    continue;
                }
                let d2 = (q[0] as f64 - circle.cx).powi(2) + (q[1] as f64 - circle.cy).powi(2);
                assert!(d2 >= circle.r2 * (1.0 - 1e-6), "point {k} inside the circumcircle of {a},{b},{c}");
            }
        }
    }

    #[test]
    fn degenerate_input_gives_no_triangles() {
        assert!(triangulate(&[[0.0, 0.0], [1.0, 1.0]]).is_empty());
        assert!(triangulate(&[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]).is_empty());
        let dup = [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [f32::NAN, 0.0]];
        let tris = triangulate(&dup);
        assert_eq!(tris.len(), 1);
    }
}
