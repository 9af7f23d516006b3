//! `reconstruct` against the official `PersonalDataset` + generator on a small dataset in the official layout
//! (`tests/data/official_data/`, made by `scripts/make_official_data_fixture.py` with the shared tiny weights).

mod common;
mod video_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use image::RgbImage;
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::net::OUTPUT_PREDICTION;
use metaportrait::model::runner::{GeneratorRunner, RunnerOptions};
use metaportrait::reconstruct::inputs::OfficialInputBuilder;
use metaportrait::reconstruct::layout::OfficialData;
use metaportrait::tensor::HostTensor;

/// The generator tolerance of the parity fixtures (outputs), plus the 16-bit storage step of the expected values.
const PREDICTION_TOL: f32 = 1e-4 + 1.6e-5;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/official_data")
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("manifest.json")).expect("manifest")).expect("json")
}

fn connectivity() -> PathBuf {
    common::fixtures_dir().join("official-topology/dense_669_connectivity.tsv")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The dataset in the official layout: the committed files plus the pictures, copied from the shared faces.
fn assemble(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    copy_tree(&fixture().join("data"), &data);
    let faces = common::fixtures_dir().join("faces/images");
    for (rel, face) in manifest()["pictures"].as_object().expect("pictures") {
        let target = data.join(rel);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(faces.join(face.as_str().expect("name")), target).expect("copy picture");
    }
    data
}

fn png(path: &Path) -> RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// A `[1, 3, H, W]` tensor as 8-bit levels (checking they are levels).
fn levels(t: &HostTensor) -> RgbImage {
    let &[1, 3, h, w] = t.shape() else { panic!("shape {:?}", t.shape()) };
    let plane = h * w;
    let level = |v: f32| {
        let l = v * 255.0;
        assert!((l - l.round()).abs() < 1e-3, "{v} is not k/255");
        l.round() as u8
    };
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb([level(t.data()[i]), level(t.data()[plane + i]), level(t.data()[2 * plane + i])])
    })
}

fn prediction16(path: &Path) -> Vec<f32> {
    let img = image::open(path).expect("prediction16").to_rgb16();
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(p[c]) / 65535.0 * 2.0 - 1.0;
        }
    }
    out
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other.as_f64().expect("number") as f32),
        }
    }
    walk(v, &mut out);
    out
}

#[test]
fn inputs_and_predictions_equal_the_official_loader_and_generator() {
    let dir = common::tempdir("reconstruct-parity");
    let data = OfficialData::open(&assemble(&dir)).expect("layout");
    let names: Vec<&str> = data.frames.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["00000000.png", "00000001.png", "00000002.png"]);
    let config = GeneratorConfig::tiny();
    data.validate(config.id_dim).expect("valid");
    let mut builder = OfficialInputBuilder::new(&config, &connectivity()).expect("builder");
    let model = GeneratorModel::load(config.clone(), &common::generator_fixture("tiny_weights.safetensors"))
        .expect("tiny weights");
    let mut engine = GeneratorRunner::new(&model, &RunnerOptions::default()).expect("engine");
    let manifest = manifest();
    for (frame, expected) in data.frames.iter().zip(manifest["frames"].as_array().expect("frames")) {
        assert_eq!(frame.name, expected["name"].as_str().expect("name"));
        let stem = frame.name.trim_end_matches(".png");
        let want = fixture().join("expected").join(stem);
        let built = builder.frame(&data, frame).expect("inputs");
        // Pictures are 8-bit in the official loader too: equal to the level.
        assert_eq!(built.ground_truth, png(&want.join("driving.png")), "{stem}: resized driving frame");
        assert_eq!(levels(&built.inputs.source_line), png(&want.join("source_line.png")), "{stem}: source line");
        assert_eq!(levels(&built.inputs.driving_line), png(&want.join("driving_line.png")), "{stem}: driving line");
        assert_eq!(levels(&built.inputs.mouth_line), png(&want.join("mouth_line.png")), "{stem}: mouth line");
        assert_eq!(built.inputs.driving_ldmk.data(), floats(&expected["driving_ldmk"]).as_slice(), "{stem}: keypoints");
        assert_eq!(built.inputs.src_id.data(), floats(&expected["src_id"]).as_slice(), "{stem}: id as stored");
        let named = std::collections::BTreeMap::from(built.inputs.named().map(|(n, t)| (n.to_owned(), t.clone())));
        let outputs = engine.run(&named).expect("run");
        let prediction = &outputs[OUTPUT_PREDICTION];
        let reference = prediction16(&want.join("prediction16.png"));
        let max = prediction.data().iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{stem}: max |ours − official| = {max:.2e}");
        assert!(max <= PREDICTION_TOL, "{stem}: prediction differs by {max}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn reconstruct(data: &Path, out: &Path) -> std::process::Output {
    Command::new(common::bin())
        .args(["reconstruct", "--config", "tiny", "--device", "cpu"])
        .arg("--data")
        .arg(data)
        .arg("--weights")
        .arg(common::generator_fixture("tiny_weights.safetensors"))
        .arg("--connectivity")
        .arg(connectivity())
        .arg("--output")
        .arg(out)
        .output()
        .expect("run metaportrait")
}

#[test]
fn the_command_writes_what_inference_py_writes() {
    let dir = common::tempdir("reconstruct-cli");
    let data = assemble(&dir);
    let out = dir.join("result");
    for attempt in 0..2 {
        // The second run replaces the first result.
        let run = reconstruct(&data, &out);
        assert!(run.status.success(), "attempt {attempt}: {}", String::from_utf8_lossy(&run.stderr));
    }
    for stem in ["00000000", "00000001", "00000002"] {
        let ours = png(&out.join("output_256").join(format!("{stem}.png")));
        let official = png(&fixture().join("expected").join(stem).join("official_output.png"));
        // Both truncate v·255; values within the generator tolerance of a level boundary may land one level apart.
        let diffs: Vec<u8> = ours.as_raw().iter().zip(official.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
        let off = diffs.iter().filter(|d| **d > 0).count();
        assert!(diffs.iter().all(|d| *d <= 1), "{stem}: a pixel differs by more than one level");
        assert!(off * 100 <= diffs.len(), "{stem}: {off} of {} values differ", diffs.len());
    }
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).expect("metrics")).expect("json");
    assert_eq!(metrics["frames"], 3);
    assert_eq!(metrics["per_frame"].as_array().map(Vec::len), Some(3));
    let video = out.join("out_256.mp4");
    assert!(video.is_file());
    if video_common::have_tool("ffprobe") {
        let probe = video_common::ffprobe(&video).expect("ffprobe runs");
        assert_eq!((probe.codec.as_str(), probe.frames), ("h264", 3), "{}", probe.stderr);
    }
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A `.npy` file of float32 values.
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
    std::fs::write(path, bytes).expect("write npy");
}

#[test]
fn bad_data_folders_are_one_line_errors_naming_the_file_and_write_nothing() {
    let dir = common::tempdir("reconstruct-bad");
    type Breakage = fn(&Path);
    let cases: [(&str, Breakage, &str); 6] = [
        (
            "missing landmarks",
            |d| std::fs::remove_file(d.join("0/ldmks/00000001_ldmk.npy")).unwrap(),
            "00000001_ldmk.npy",
        ),
        (
            "wrong landmark count",
            |d| write_npy(&d.join("1/ldmks/00000002_ldmk.npy"), "(500, 2)", &[0.5; 1000]),
            "500 landmarks",
        ),
        ("id vector of the wrong size", |d| write_npy(&d.join("src_0_id.npy"), "(1, 31)", &[0.1; 31]), "src_0_id.npy"),
        (
            "pickle that is a list",
            |d| std::fs::write(d.join("src_map_dict.pkl"), b"\x80\x02]q\x00.").unwrap(),
            "src_map_dict.pkl",
        ),
        (
            "pickle that runs code",
            |d| {
                std::fs::write(d.join("src_map_dict.pkl"), b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
                    .unwrap()
            },
            "os.system",
        ),
        ("missing source picture", |d| std::fs::remove_file(d.join("src_1.png")).unwrap(), "src_1.png"),
    ];
    for (what, breakage, needle) in cases {
        let data = assemble(&dir);
        breakage(&data);
        let out = dir.join("result");
        let run = reconstruct(&data, &out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{what}: succeeded");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{what}: {stderr}");
        assert!(errors[0].contains(needle), "{what}: {}", errors[0]);
        assert!(!out.exists(), "{what}: output written");
        let staged = std::fs::read_dir(&dir)
            .expect("read_dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with('.'));
        assert!(!staged, "{what}: staging left behind");
    }
    std::fs::remove_dir_all(&dir).ok();
}
