//! The landmarks JSON of `metaportrait landmarks --json`, written and read back in one place.
//!
//! Owns the document's shape: `{"width", "height", "faces": [{"score", "box": [x, y, w, h], "landmarks": [[x, y, z],
//! …]}]}` in image pixels, largest face first. Receives detected faces (to write) or the document's bytes (to read);
//! emits the JSON value, or the first face's landmarks normalised by the image size (what `condition` draws).

use super::Face;

/// Why a landmarks document cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LandmarksJsonError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// The `faces` list is empty or missing.
    #[error("has no face")]
    NoFace,
    /// `width`/`height` are missing or not positive.
    #[error("width/height missing")]
    Size,
    /// The first face has no `landmarks` array.
    #[error("no landmarks array")]
    NoLandmarks,
    /// A landmark is not a list of numbers.
    #[error("landmarks must be [x, y, z] numbers")]
    Point,
}

/// The document for `faces` found in a `width × height` image.
pub fn faces_json(width: u32, height: u32, faces: &[Face]) -> serde_json::Value {
    let faces: Vec<serde_json::Value> = faces
        .iter()
        .map(|f| serde_json::json!({"score": f.score, "box": f.bbox_xywh(), "landmarks": f.landmarks.points}))
        .collect();
    serde_json::json!({"width": width, "height": height, "faces": faces})
}

/// The first face's landmarks, divided by the image's width and height.
pub fn first_face_normalized(bytes: &[u8]) -> Result<Vec<[f32; 2]>, LandmarksJsonError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    let (w, h) = (v["width"].as_f64().unwrap_or(0.0), v["height"].as_f64().unwrap_or(0.0));
    let face = v["faces"].get(0).ok_or(LandmarksJsonError::NoFace)?;
    if w <= 0.0 || h <= 0.0 {
        return Err(LandmarksJsonError::Size);
    }
    let pts = face["landmarks"].as_array().ok_or(LandmarksJsonError::NoLandmarks)?;
    pts.iter()
        .map(|p| Some([(p.get(0)?.as_f64()? / w) as f32, (p.get(1)?.as_f64()? / h) as f32]))
        .collect::<Option<Vec<_>>>()
        .ok_or(LandmarksJsonError::Point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_face_comes_back_normalised() {
        let doc = br#"{"width": 200, "height": 100, "faces": [{"landmarks": [[50, 25, 3], [200, 100, 0]]}]}"#;
        assert_eq!(first_face_normalized(doc).unwrap(), vec![[0.25, 0.25], [1.0, 1.0]]);
        assert!(matches!(
            first_face_normalized(br#"{"width": 2, "height": 1, "faces": []}"#),
            Err(LandmarksJsonError::NoFace)
        ));
        assert!(matches!(first_face_normalized(br#"{"faces": [{"landmarks": []}]}"#), Err(LandmarksJsonError::Size)));
        assert!(matches!(
            first_face_normalized(br#"{"width": 2, "height": 1, "faces": [{"landmarks": [["a"]]}]}"#),
            Err(LandmarksJsonError::Point)
        ));
        assert!(matches!(first_face_normalized(b"nope"), Err(LandmarksJsonError::Syntax(_))));
    }
}
