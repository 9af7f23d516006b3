//! The identity embedding on real faces: dlib's face-recognition ResNet (ONNX, provisioned by
//! `scripts/provision-id-model.sh`) on chips aligned from our own MediaPipe landmarks must tell people apart —
//! frames of one person close together, different people clearly apart. dlib's unit descriptors sit in a narrow
//! cone (unrelated faces still reach cosine ≈ 0.8), so the bounds are set from the measured separation: same
//! person ≥ 0.98, different people ≤ 0.84 on these fixtures.

use std::path::PathBuf;

use metaportrait::face::FaceMesher;
use metaportrait::face::embed::{EMBEDDING_DIM, IdEmbedder, default_id_model_path};

/// Same person: every pair at least this close.
const SAME_PERSON_MIN_COSINE: f32 = 0.95;
/// Different people: every pair at most this close.
const DIFFERENT_PERSON_MAX_COSINE: f32 = 0.90;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Which person a fixture frame shows (the official example clip `imgs_0`/`final_0` is one person; the astronaut
/// and its synthetic views another; `imgs_train_0` a third).
fn person(name: &str) -> Option<&'static str> {
    if name.starts_with("imgs_0_") || name.starts_with("final_0_") {
        Some("example")
    } else if name.contains("astronaut") {
        Some("astronaut")
    } else if name.starts_with("imgs_train_0") {
        Some("train")
    } else {
        None
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn embeddings_separate_people_and_group_one_persons_frames() {
    let mut embedder = IdEmbedder::new(&default_id_model_path())
        .expect("the identity model is provisioned (bash scripts/provision-id-model.sh, run by scripts/test.sh)");
    let mut mesher = FaceMesher::from_dir(&root().join("models")).expect("face models");
    let dir = root().join("../shared/fixtures/faces/images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("fixture faces").map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut people = Vec::new();
    for file in &files {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let Some(who) = person(&name) else { continue };
        let image = metaportrait::face::load_image(file).expect("image");
        let faces = mesher.detect_landmarks(&image, false).expect("landmarks");
        let Some(face) = faces.first() else { continue };
        let e = embedder.embed(&image, &face.landmarks.points).expect("embedding");
        assert_eq!(e.len(), EMBEDDING_DIM);
        assert!((cosine(&e, &e) - 1.0).abs() < 1e-4, "unit norm");
        people.push((name, who, e));
    }
    assert!(people.len() >= 20, "only {} fixture faces embedded", people.len());
    if std::env::var("ID_EMBED_DUMP").is_ok() {
        for (na, _, ea) in &people {
            let row: Vec<String> = people.iter().map(|(_, _, eb)| format!("{:.2}", cosine(ea, eb))).collect();
            eprintln!("{na:>40} {}", row.join(" "));
        }
    }
    let (mut same_min, mut diff_max) = (f32::INFINITY, f32::NEG_INFINITY);
    for (i, (na, pa, ea)) in people.iter().enumerate() {
        for (nb, pb, eb) in &people[i + 1..] {
            let c = cosine(ea, eb);
            if pa == pb {
                same_min = same_min.min(c);
                assert!(c >= SAME_PERSON_MIN_COSINE, "{na} vs {nb}: cosine {c:.3} for one person");
            } else {
                diff_max = diff_max.max(c);
                assert!(c <= DIFFERENT_PERSON_MAX_COSINE, "{na} vs {nb}: cosine {c:.3} for different people");
            }
        }
    }
    eprintln!("{} faces: same-person min cosine {same_min:.3}, different-person max {diff_max:.3}", people.len());
}

#[test]
fn a_missing_model_file_is_a_clear_error() {
    let err = IdEmbedder::new(&root().join("no-such-model.onnx")).err().expect("fails");
    assert!(err.to_string().contains("no-such-model.onnx"), "{err}");
}
