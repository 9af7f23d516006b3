//! Identity vectors from files and from a user-supplied ArcFace-style embedder: `identities add --embedder` /
//! `--id-vector`, the tag each identity records, and models refusing identities from another embedder.
//!
//! The embedder is a randomly initialised network of the ArcFace interface (input `[1, 3, 112, 112]`, output
//! `[1, 48]`) that the test emits with the project's own ONNX writer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use metaportrait::face::arcface::{arcface_chip, arcface5_points};
use metaportrait::face::embed::{DLIB_EMBEDDER_TAG, IdEmbedder, arcface_tag, default_id_model_path};
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::exec::onnx::OnnxBuilder;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::ops::Ops;
use metaportrait::model::weights::WeightStore;
use metaportrait::rng::SplitMix64;
use metaportrait::runtime::ort::{OrtSession, SessionOptions};
use metaportrait::tensor::HostTensor;

const EMBEDDING_DIM: usize = 48;
const CONV_CHANNELS: usize = 4;
/// 112 → 56 (stride-2 conv) → 28 → 14 → 7 (three 2× average pools).
const POOLED_SIDE: usize = 7;

fn random(shape: &[usize], scale: f32, rng: &mut SplitMix64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::new(shape.to_vec(), (0..n).map(|_| scale * (2.0 * rng.uniform() as f32 - 1.0)).collect()).unwrap()
}

/// conv 3×3/2 → ReLU → 3 average pools → linear to 48: an ArcFace-shaped network with random weights.
fn arcface_like_onnx(path: &Path, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let flat = CONV_CHANNELS * POOLED_SIDE * POOLED_SIDE;
    let mut weights = WeightStore::new();
    weights.insert("conv.weight", random(&[CONV_CHANNELS, 3, 3, 3], 0.5, &mut rng));
    weights.insert("conv.bias", random(&[CONV_CHANNELS], 0.1, &mut rng));
    weights.insert("fc.weight", random(&[EMBEDDING_DIM, flat], 0.2, &mut rng));
    weights.insert("fc.bias", random(&[EMBEDDING_DIM], 0.1, &mut rng));
    let mut b = OnnxBuilder::new(&weights);
    let x = b.input("input.1", &[1, 3, 112, 112]);
    let cw = b.param("conv.weight", &[CONV_CHANNELS, 3, 3, 3]).unwrap();
    let cb = b.param("conv.bias", &[CONV_CHANNELS]).unwrap();
    let mut y = b.conv2d(&x, &cw, Some(&cb), 2, 1);
    y = b.relu(&y);
    for _ in 0..3 {
        y = b.avg_pool2(&y);
    }
    let y = b.reshape(&y, &[1, flat]);
    let fw = b.param("fc.weight", &[EMBEDDING_DIM, flat]).unwrap();
    let fb = b.param("fc.bias", &[EMBEDDING_DIM]).unwrap();
    let out = b.linear(&y, &fw, Some(&fb));
    b.output("fc1", &out);
    let bytes = b.finish().expect("graph");
    std::fs::write(path, &bytes).expect("write onnx");
    bytes
}

fn face(name: &str) -> (image::RgbImage, Vec<[f32; 3]>) {
    let faces = common::fixtures_dir().join("faces");
    let img = image::open(faces.join("images").join(format!("{name}.png"))).expect("image").to_rgb8();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(faces.join("mediapipe").join(format!("{name}.json"))).unwrap()).unwrap();
    let (w, h) = (img.width() as f32, img.height() as f32);
    let points = json["face_mesh_refined"]
        .as_array()
        .expect("refined mesh")
        .iter()
        .map(|p| {
            let c: Vec<f32> = p.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            [c[0] * w, c[1] * h, c[2] * w]
        })
        .collect();
    (img, points)
}

#[test]
fn an_arcface_style_network_embeds_aligned_faces_into_unit_vectors_of_its_size() {
    let dir = common::tempdir("embedder-lib");
    let path = dir.join("arcface_like.onnx");
    let bytes = arcface_like_onnx(&path, 7);
    let mut embedder = IdEmbedder::new(&path).expect("opens");
    assert_eq!(embedder.tag(), arcface_tag(&bytes));
    assert!(embedder.tag().starts_with("arcface-") && embedder.tag().len() == "arcface-".len() + 16);
    let (img, points) = face("imgs_0_00000002");
    let e = embedder.embed(&img, &points).expect("embeds");
    assert_eq!(e.len(), EMBEDDING_DIM);
    let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    // The same as running the network by hand on the aligned chip and normalising.
    let mut chip = Vec::new();
    arcface_chip(&img, &arcface5_points(&points).expect("points"), &mut chip).expect("chip");
    let mut session = OrtSession::from_bytes(&bytes, &SessionOptions::default()).expect("session");
    let input = HostTensor::new(vec![1, 3, 112, 112], chip).unwrap();
    let raw = session.run(&[("input.1", &input)]).expect("runs")["fc1"].clone();
    let raw_norm = raw.data().iter().map(|v| v * v).sum::<f32>().sqrt();
    for (a, b) in e.iter().zip(raw.data()) {
        assert!((a - b / raw_norm).abs() < 1e-6);
    }
    // Another person gives another vector.
    let (img2, points2) = face("astronaut");
    let e2 = embedder.embed(&img2, &points2).expect("embeds");
    let cos: f32 = e.iter().zip(&e2).map(|(a, b)| a * b).sum();
    assert!(cos < 0.9999, "{cos}");
    // The provisioned network is still recognised as dlib's.
    assert_eq!(IdEmbedder::new(&default_id_model_path()).expect("dlib model").tag(), DLIB_EMBEDDER_TAG);
    std::fs::remove_dir_all(&dir).ok();
}

fn cli(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).env("METAPORTRAIT_HOME", home).args(args).output().expect("run")
}

fn portrait() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/portrait.png")
}

/// A tiny generator with `id_dim` and `embedder` (random weights): config JSON and weights in `dir`.
fn tiny_model(dir: &Path, name: &str, id_dim: usize, embedder: &str) -> (PathBuf, PathBuf) {
    let mut config = GeneratorConfig::tiny();
    config.name = name.into();
    config.id_dim = id_dim;
    config.embedder = embedder.into();
    let config_path = dir.join(format!("{name}.json"));
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    let model = GeneratorModel::random(config, 5).expect("model");
    let weights = dir.join(format!("{name}.safetensors"));
    model.weights.save_safetensors(&weights).expect("weights");
    (config_path, weights)
}

fn manifest(home: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("identities").join(id).join("identity.json")).unwrap()).unwrap()
}

fn write_npy(path: &Path, shape: &str, values: &[f32]) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn identities_carry_their_embedder_and_models_refuse_other_embedders() {
    let dir = common::tempdir("embedder-cli");
    let home = dir.join("home");
    let onnx = dir.join("arcface_like.onnx");
    let tag = arcface_tag(&arcface_like_onnx(&onnx, 9));
    let s = |p: &Path| p.to_str().expect("utf8").to_owned();

    // An identity embedded by the user's network: its size and tag are recorded.
    let out =
        cli(&home, &["identities", "add", "--portrait", &s(&portrait()), "--name", "Arc", "--embedder", &s(&onnx)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(manifest(&home, "arc")["embedder"], tag.as_str());
    let store = metaportrait::personalize::store::IdentityStore::open(&home.join("identities")).unwrap();
    assert_eq!(store.load("arc").unwrap().id_vector.map(|v| v.len()), Some(EMBEDDING_DIM));

    // A vector from a file, of any size: recorded as it is, as `external`.
    let vector: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
    write_npy(&dir.join("v.npy"), "(1, 40)", &vector);
    let out = cli(
        &home,
        &["identities", "add", "--portrait", &s(&portrait()), "--name", "Vec", "--id-vector", &s(&dir.join("v.npy"))],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(manifest(&home, "vec")["embedder"], "external");
    assert_eq!(store.load("vec").unwrap().id_vector, Some(vector));
    // Not one vector: refused, nothing added.
    write_npy(&dir.join("m.npy"), "(2, 20)", &[0.5; 40]);
    let out = cli(
        &home,
        &["identities", "add", "--portrait", &s(&portrait()), "--name", "Bad", "--id-vector", &s(&dir.join("m.npy"))],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one vector"));
    assert_eq!(store.list().unwrap().len(), 2);
    let listed: serde_json::Value =
        serde_json::from_slice(&cli(&home, &["identities", "list", "--json"]).stdout).expect("list json");
    let tags: Vec<&str> = listed.as_array().unwrap().iter().map(|r| r["embedder"].as_str().unwrap()).collect();
    assert_eq!(tags, [tag.as_str(), "external"]);

    // Three frames of a real person drive the renders.
    let driving = dir.join("driving");
    std::fs::create_dir_all(&driving).unwrap();
    for k in 2..5 {
        let name = format!("imgs_0_0000000{k}.png");
        std::fs::copy(common::fixtures_dir().join("faces/images").join(&name), driving.join(&name)).unwrap();
    }
    let render = |identity: &[&str], config: &Path, weights: &Path, output: &Path, extra: &[&str]| {
        let mut args = vec!["render".to_owned()];
        args.extend(identity.iter().map(|a| (*a).to_owned()));
        args.extend([
            "--driving".into(),
            s(&driving),
            "--engine".into(),
            "neural".into(),
            "--device".into(),
            "cpu".into(),
        ]);
        args.extend(["--config".into(), s(config), "--weights".into(), s(weights), "--output".into(), s(output)]);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&home, &args)
    };

    // A model trained with the dlib network refuses the ArcFace identity even at the right size.
    let (dlib_cfg, dlib_w) = tiny_model(&dir, "dlib48", EMBEDDING_DIM, DLIB_EMBEDDER_TAG);
    let refused = dir.join("refused.mp4");
    let out = render(&["--identity", "Arc"], &dlib_cfg, &dlib_w, &refused, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&tag) && stderr.contains(DLIB_EMBEDDER_TAG), "{stderr}");
    assert!(!refused.exists());

    // A model that names this embedder renders it, and a portrait embedded on the fly with --embedder.
    let (arc_cfg, arc_w) = tiny_model(&dir, "arc48", EMBEDDING_DIM, &tag);
    for (what, identity, extra) in [
        ("library identity", vec!["--identity", "Arc"], vec![]),
        (
            "portrait with --embedder",
            vec!["--source", portrait().to_str().unwrap()],
            vec!["--embedder", onnx.to_str().unwrap()],
        ),
    ] {
        let output = dir.join(format!("{}.mp4", what.replace(' ', "_")));
        let out = render(&identity, &arc_cfg, &arc_w, &output, &extra);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(output.is_file(), "{what}");
    }
    // Without --embedder the portrait gets a dlib vector (128-d), which this model refuses.
    let out = render(&["--source", &s(&portrait())], &arc_cfg, &arc_w, &dir.join("no.mp4"), &[]);
    assert!(!out.status.success());

    // The file vector drives a model of its size, whatever embedder that model names.
    let (cfg40, w40) = tiny_model(&dir, "any40", 40, DLIB_EMBEDDER_TAG);
    let output = dir.join("vec.mp4");
    let out = render(&["--identity", "Vec"], &cfg40, &w40, &output, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(output.is_file());
    std::fs::remove_dir_all(&dir).ok();
}
