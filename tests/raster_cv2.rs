//! The rasteriser against images drawn by OpenCV (`scripts/make_cv2_line_refs.py`, cv2 4.10; 5.0 gives the same).

use metaportrait::face::raster::{PixelPoint, Rgb, RgbCanvas};

const REFS: &str = include_str!("data/raster/cv2_line_refs.json");
/// Background "gradient": level (3x + 5y + 40c) mod 256.
const GRADIENT: [usize; 3] = [3, 5, 40];

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_else(|e| panic!("hex: {e}")))
        .collect()
}

#[test]
fn matches_cv2_line_aa_exactly() {
    let doc: serde_json::Value = serde_json::from_str(REFS).unwrap_or_else(|e| panic!("refs: {e}"));
    let cases = doc["cases"].as_array().unwrap_or_else(|| panic!("no cases"));
    let (mut worst, mut total, mut count) = (0u32, 0u64, 0usize);
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let num = |key: &str| case[key].as_u64().unwrap_or_else(|| panic!("{name}: {key}")) as usize;
        let (width, height) = (num("width"), num("height"));
        let mut canvas = RgbCanvas::new(width, height).unwrap_or_else(|e| panic!("{name}: {e}"));
        if case["background"] == "gradient" {
            for (i, v) in canvas.as_bytes_mut().iter_mut().enumerate() {
                let (c, x, y) = (i % 3, (i / 3) % width, i / 3 / width);
                *v = ((GRADIENT[0] * x + GRADIENT[1] * y + GRADIENT[2] * c) % 256) as u8;
            }
        }
        for line in case["lines"].as_array().unwrap_or_else(|| panic!("{name}: lines")) {
            let v: Vec<i64> = (0..7).map(|i| line[i].as_i64().unwrap_or_else(|| panic!("{name}: {line}"))).collect();
            let colour = Rgb::new(v[4] as u8, v[5] as u8, v[6] as u8);
            canvas.draw_line_aa(
                PixelPoint::new(v[0] as i32, v[1] as i32),
                PixelPoint::new(v[2] as i32, v[3] as i32),
                colour,
            );
        }
        let expected = hex_bytes(case["rgb_hex"].as_str().unwrap_or_else(|| panic!("{name}: rgb_hex")));
        assert_eq!(expected.len(), canvas.as_bytes().len(), "{name}");
        for (&a, &b) in canvas.as_bytes().iter().zip(&expected) {
            let d = u32::from(a.abs_diff(b));
            worst = worst.max(d);
            total += u64::from(d);
            count += 1;
        }
        assert_eq!(canvas.as_bytes(), &expected[..], "case {name} differs from cv2");
    }
    println!("cv2 comparison: {} cases, max abs diff {worst}, mean {:.6}", cases.len(), total as f64 / count as f64);
}
