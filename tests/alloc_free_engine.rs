//! The neural engine's frame path allocates nothing on the host (a counting global allocator over N frames, CPU),
//! and its staged run — identity inputs bound once, the pose's inputs written in place — gives exactly the frames
//! of a plain run. ONNX Runtime's own C++ allocations are not ours and do not pass through Rust's allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use image::RgbImage;
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::inputs::{InputBuilder, prediction_to_image};
use metaportrait::model::net::{INPUT_NAMES, OUTPUT_PREDICTION};
use metaportrait::model::runner::{GeneratorRunner, RunnerOptions};
use metaportrait::pipeline::engine::{EngineIdentity, LiveEngine, NeuralEngine};
use metaportrait::runtime::Device;
use metaportrait::tensor::HostTensor;

/// Counts allocations made by the current thread while counting is on (other threads — ONNX Runtime's pool, the
/// test harness — are not ours to count here).
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: thread-local storage may be gone while a thread exits.
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled portrait's crop and landmarks, and the tiny fixture generator with an embedding of its size.
fn tiny_setup() -> (GeneratorModel, EngineIdentity) {
    let fixtures = repo().join("../shared/fixtures/generator");
    let config = GeneratorConfig::from_json_file(&fixtures.join("tiny_config.json")).expect("tiny config");
    let model = GeneratorModel::load(config, &fixtures.join("tiny_weights.safetensors")).expect("tiny weights");
    let path = repo().join("assets/portrait.png");
    let portrait = image::open(&path).expect("portrait").to_rgb8();
    let mut mesher = metaportrait::face::FaceMesher::from_dir(&repo().join("models")).expect("face models");
    let prepared = metaportrait::pipeline::render::prepare_portrait(&mut mesher, &portrait, &path).expect("face");
    let id: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
    let identity =
        EngineIdentity { id_vector: Some(id), ..EngineIdentity::portrait_only(prepared.crop, prepared.landmarks) };
    (model, identity)
}

/// Poses that move: the identity's landmarks shifted and squeezed a little more each frame.
fn pose(identity: &EngineIdentity, k: usize) -> Vec<[f32; 3]> {
    let t = k as f32;
    identity.landmarks.iter().map(|p| [p[0] + 0.8 * t, p[1] * (1.0 - 0.004 * t) + 0.5 * t, p[2]]).collect()
}

#[test]
fn a_neural_frame_allocates_nothing_and_matches_a_plain_run() {
    const FRAMES: usize = 8;
    // The counter sees this thread's allocations.
    assert_eq!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 64]))), 1);
    let (model, identity) = tiny_setup();
    let options = RunnerOptions { device: Device::Cpu, threads: 2, ..Default::default() };
    let mut engine = NeuralEngine::new(model.clone(), options.clone()).expect("engine");
    engine.set_identity(&identity).expect("identity");
    let mut out = RgbImage::new(256, 256);
    let poses: Vec<Vec<[f32; 3]>> = (0..FRAMES + 2).map(|k| pose(&identity, k)).collect();
    // Warm-up: the first run binds the buffers.
    engine.drive(&poses[0], &mut out).expect("frame");
    let mut frames = Vec::new();
    for p in &poses[1..] {
        let count = allocations_during(|| engine.drive(p, &mut out).expect("frame"));
        assert_eq!(count, 0, "a frame allocated {count} times");
        frames.push(out.clone());
    }
    assert_ne!(frames[0], frames[FRAMES - 1], "the poses should move the picture");

    // The same frames through the plain path: every input built afresh and run by name.
    let mut plain = GeneratorRunner::new(&model, &options).expect("plain engine");
    let mut builder = InputBuilder::new(&model.config).expect("builder");
    let side = identity.portrait.width() as f32;
    for (p, staged) in poses[1..].iter().zip(&frames) {
        let id = identity.id_vector.as_deref().expect("id");
        let inputs = builder.frame(&identity.portrait, &identity.landmarks, p, id, side).expect("inputs");
        let named: BTreeMap<String, HostTensor> =
            inputs.named().iter().map(|(n, t)| ((*n).to_owned(), (*t).clone())).collect();
        assert_eq!(named.len(), INPUT_NAMES.len());
        let result = plain.run(&named).expect("plain run");
        let mut picture = RgbImage::new(256, 256);
        prediction_to_image(&result[OUTPUT_PREDICTION], &mut picture).expect("picture");
        assert!(picture == *staged, "the staged run differs from the plain run");
    }
}

#[test]
fn switching_identity_restages_its_inputs() {
    let (model, identity) = tiny_setup();
    let options = RunnerOptions { device: Device::Cpu, threads: 2, ..Default::default() };
    let mut engine = NeuralEngine::new(model, options).expect("engine");
    let mut out = RgbImage::new(256, 256);
    assert!(engine.drive(&identity.landmarks, &mut out).is_err(), "no identity yet");
    engine.set_identity(&identity).expect("identity");
    engine.drive(&identity.landmarks, &mut out).expect("frame");
    let first = out.clone();
    let mut other = identity.clone();
    other.portrait = image::imageops::flip_horizontal(&identity.portrait);
    other.id_vector = Some((0..32).map(|i| (i as f32 * 1.3).cos()).collect());
    engine.set_identity(&other).expect("other identity");
    engine.drive(&identity.landmarks, &mut out).expect("frame");
    assert_ne!(out, first, "the new identity's inputs were not staged");
    engine.set_identity(&identity).expect("back");
    engine.drive(&identity.landmarks, &mut out).expect("frame");
    assert_eq!(out, first, "the first identity's frame is reproduced exactly");
}

#[test]
fn the_staged_tsr_window_allocates_nothing() {
    use metaportrait::tsr::config::TsrConfig;
    use metaportrait::tsr::runner::{TsrModel, TsrOptions, TsrRunner};
    use metaportrait::tsr::staged_stream::StagedTsrStream;
    let model = TsrModel::random(TsrConfig::tiny(), 5).expect("tsr");
    let mut engine =
        TsrRunner::new(model, TsrOptions { device: Device::Cpu, threads: 1, ..Default::default() }).expect("engine");
    let side = 32;
    let mut stream = StagedTsrStream::new(1, side);
    let frames: Vec<Vec<f32>> =
        (0..8).map(|k| (0..3 * side * side).map(|i| ((i * 7 + k * 13) % 255) as f32 / 255.0).collect()).collect();
    // Warm-up: the 2- and 3-frame sessions are built and bound.
    for (k, f) in frames[..3].iter().enumerate() {
        stream.push(&mut engine, f, k).expect("push");
    }
    for (k, f) in frames.iter().enumerate().skip(3) {
        let mut tag = None;
        let count = allocations_during(|| tag = stream.push(&mut engine, f, k).expect("push").map(|(_, t)| t));
        assert_eq!(count, 0, "a TSR frame allocated {count} times");
        assert_eq!(tag, Some(k - 1), "one frame of look-ahead");
    }
}

#[test]
fn a_tsr_reading_the_generator_range_equals_one_reading_images() {
    use metaportrait::tsr::config::TsrConfig;
    use metaportrait::tsr::net::InputRange;
    use metaportrait::tsr::runner::{TsrModel, TsrOptions, TsrRunner};
    let model = TsrModel::random(TsrConfig::tiny(), 6).expect("tsr");
    let opts = |input_range| TsrOptions { device: Device::Cpu, threads: 1, input_range, ..Default::default() };
    let mut unit = TsrRunner::new(model.clone(), opts(InputRange::Unit)).expect("engine");
    let mut signed = TsrRunner::new(model, opts(InputRange::Signed)).expect("engine");
    let n = 2 * 3 * 32 * 32;
    // The generator's prediction, a little outside [-1, 1] at places (tanh output before any clipping).
    let prediction: Vec<f32> = (0..n).map(|i| ((i * 31 % 101) as f32 / 50.0 - 1.0) * 1.05).collect();
    let image: Vec<f32> = prediction.iter().map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect();
    let a = unit.run_frames(&HostTensor::new(vec![2, 3, 32, 32], image).unwrap()).expect("unit")["output"].clone();
    let b =
        signed.run_frames(&HostTensor::new(vec![2, 3, 32, 32], prediction).unwrap()).expect("signed")["output"].clone();
    let diff = a.max_abs_diff(&b).expect("same shape");
    assert!(diff <= 1e-5, "signed input differs by {diff}");
}
