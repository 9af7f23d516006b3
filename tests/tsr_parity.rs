//! The temporal SR network reproduces the official forward on the tiny fixture with both executors, its state-dict
//! listing equals the official one, and the streaming stage agrees with the offline path where they must.
//!
//! Tolerance (issue): output and every intermediate within 1e-4 × max(1, max|expected|).

mod common;

use std::collections::BTreeMap;

use metaportrait::model::exec::ExecutorKind;
use metaportrait::runtime::Device;
use metaportrait::tensor::HostTensor;
use metaportrait::tsr::config::{OFFICIAL_CHUNK_FRAMES, TsrConfig};
use metaportrait::tsr::net::INPUT_LQ;
use metaportrait::tsr::runner::{self, TsrModel, TsrOptions, TsrRunner};
use metaportrait::tsr::stream::TsrStream;

const RTOL: f32 = 1e-4;

fn tiny_engine(executor: ExecutorKind, taps: bool) -> TsrRunner {
    let model =
        TsrModel::load(TsrConfig::tiny(), &common::tsr_fixture("tsr_tiny_weights.safetensors")).expect("weights");
    TsrRunner::new(model, TsrOptions { executor, device: Device::Cpu, threads: 2, taps }).expect("engine")
}

/// `(1, n, 3, h, w)` → `[n, 3, h, w]`.
fn frames_of(lq: &HostTensor) -> HostTensor {
    lq.clone().reshaped(lq.shape()[1..].to_vec()).expect("reshape")
}

fn check(executor: ExecutorKind) {
    let io = common::load_tsr("tsr_tiny_io.safetensors");
    let lq = io.get(INPUT_LQ).expect("input");
    let mut engine = tiny_engine(executor, true);
    let out: BTreeMap<String, HostTensor> = engine.run_frames(&frames_of(lq)).expect("forward");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, expected) in io.iter().filter(|(k, _)| k.as_str() != INPUT_LQ) {
        let actual = out.get(name.as_str()).unwrap_or_else(|| panic!("{} produced no `{name}`", executor.name()));
        let actual = actual.clone().reshaped(expected.shape().to_vec()).expect("same element count");
        let (diff, scale) = common::diff_stats(&actual, expected);
        report.push(format!("{name}: {diff:.2e} (max {scale:.2})"));
        if diff > RTOL * scale.max(1.0) {
            failures.push(name.clone());
        }
        compared += 1;
    }
    eprintln!("{} TSR parity:\n  {}", executor.name(), report.join("\n  "));
    assert!(compared >= 14, "only {compared} tensors compared");
    assert!(failures.is_empty(), "{} out of tolerance: {failures:?}", executor.name());
}

#[test]
fn ort_matches_the_official_forward() {
    check(ExecutorKind::Ort);
}

#[test]
fn burn_matches_the_official_forward() {
    check(ExecutorKind::Burn);
}

#[test]
fn fixture_metadata_config_is_the_tiny_preset() {
    let path = common::tsr_fixture("tsr_tiny_io.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let json = meta.metadata().as_ref().and_then(|m| m.get("config")).expect("config metadata").clone();
    let cfg = TsrConfig::from_json_str(&json, "fixture").expect("parse");
    assert_eq!(TsrConfig { name: "tiny".into(), ..cfg }, TsrConfig::tiny());
}

#[test]
fn official_listing_equals_the_reference() {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::tsr_fixture("tsr_info.json")).expect("read")).expect("json");
    let official = &info["official"];
    let expected: BTreeMap<String, Vec<usize>> =
        serde_json::from_value(official["state_dict_shapes"].clone()).expect("shapes");
    let cfg = TsrConfig::from_json_str(&official.to_string(), "tsr_info.json").expect("constructor");
    let entries = runner::expected_entries(&cfg).expect("listing");
    let ours: Vec<(String, Vec<usize>)> = entries.iter().map(|e| (e.key.clone(), e.shape.clone())).collect();
    let theirs: Vec<(String, Vec<usize>)> = expected.into_iter().collect();
    let ours_sorted: BTreeMap<_, _> = ours.iter().cloned().collect();
    assert_eq!(ours_sorted.into_iter().collect::<Vec<_>>(), theirs);
    let params: usize = entries
        .iter()
        .filter(|e| e.kind == metaportrait::model::weights::EntryKind::Parameter)
        .map(|e| e.shape.iter().product::<usize>())
        .sum();
    assert_eq!(params as u64, official["parameters"].as_u64().expect("count"));
    let buffers: usize = entries.iter().map(|e| e.shape.iter().product::<usize>()).sum::<usize>() - params;
    assert_eq!(buffers as u64, official["buffers"].as_u64().expect("count"));
}

#[test]
fn bad_weights_are_refused_with_every_problem() {
    let mut store = common::load_tsr("tsr_tiny_weights.safetensors");
    store.remove("final_linear.bias");
    store.insert("final_conv.weight", HostTensor::zeros(&[16, 16, 1, 1]));
    let msg = TsrModel::new(TsrConfig::tiny(), store).unwrap_err().to_string();
    assert!(msg.contains("final_linear.bias") && msg.contains("final_conv.weight"), "{msg}");
    // The official-size config against tiny weights: mismatches, not a crash.
    let store = common::load_tsr("tsr_tiny_weights.safetensors");
    assert!(TsrModel::new(TsrConfig::official(), store).is_err());
}

/// A clip of `n` frames `[1, n, 3, 32, 32]` that moves: the fixture frames played back and forth.
fn moving_clip(n: usize) -> HostTensor {
    let io = common::load_tsr("tsr_tiny_io.safetensors");
    let lq = io.get(INPUT_LQ).expect("input");
    let per = lq.len() / lq.shape()[1];
    let src = lq.shape()[1];
    let mut data = Vec::with_capacity(n * per);
    for t in 0..n {
        let period = 2 * (src - 1);
        let k = if t % period < src { t % period } else { period - t % period };
        data.extend_from_slice(&lq.data()[k * per..(k + 1) * per]);
    }
    HostTensor::new(vec![1, n, 3, 32, 32], data).expect("clip")
}

fn frame(clip: &HostTensor, t: usize) -> HostTensor {
    let per = clip.len() / clip.shape()[1];
    HostTensor::new(clip.shape()[2..].to_vec(), clip.data()[t * per..(t + 1) * per].to_vec()).expect("frame")
}

fn stream_all(engine: &mut TsrRunner, clip: &HostTensor, history: usize) -> Vec<(usize, HostTensor)> {
    let mut stream = TsrStream::new(history);
    let mut outs = Vec::new();
    for t in 0..clip.shape()[1] {
        if let Some(o) = stream.push(engine, frame(clip, t), t).expect("push") {
            outs.push((o.tag, o.image));
        }
    }
    outs.extend(stream.finish(engine).expect("finish").map(|o| (o.tag, o.image)));
    outs
}

#[test]
fn streaming_emits_every_frame_once_in_order_from_its_window() {
    let mut engine = tiny_engine(ExecutorKind::Ort, false);
    let n = 7;
    let clip = moving_clip(n);
    let history = 1;
    let outs = stream_all(&mut engine, &clip, history);
    assert_eq!(outs.iter().map(|(t, _)| *t).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
    for (t, image) in &outs {
        // Frame t is the clip [t - history, t + 1] cut at the ends, run offline.
        let (start, end) = (t.saturating_sub(history), (t + 2).min(n));
        let sub = HostTensor::new(vec![1, end - start, 3, 32, 32], clip.data()[start * 3072..end * 3072].to_vec())
            .expect("sub-clip");
        let offline = engine.run_clip(&sub, OFFICIAL_CHUNK_FRAMES).expect("offline");
        let expected = frame(&offline, t - start);
        let (diff, _) = common::diff_stats(image, &expected);
        assert!(diff <= 1e-6, "frame {t}: {diff}");
    }
}

#[test]
fn streaming_equals_offline_chunks_where_the_clips_coincide() {
    let mut engine = tiny_engine(ExecutorKind::Ort, false);
    // A still scene: every temporal window sees the same frame, so chunking cannot matter.
    let still = {
        let f = frame(&moving_clip(1), 0);
        let n = 20;
        HostTensor::new(vec![1, n, 3, 32, 32], f.data().repeat(n)).expect("still")
    };
    let offline = engine.run_clip(&still, OFFICIAL_CHUNK_FRAMES).expect("offline");
    for (t, image) in stream_all(&mut engine, &still, 1) {
        let (diff, _) = common::diff_stats(&image, &frame(&offline, t));
        assert!(diff <= 1e-5, "still frame {t}: {diff}");
    }
    // A clip as short as the window: the middle frame's window is the whole clip.
    let short = moving_clip(3);
    let offline = engine.run_clip(&short, OFFICIAL_CHUNK_FRAMES).expect("offline");
    let streamed = stream_all(&mut engine, &short, 1);
    let (diff, _) = common::diff_stats(&streamed[1].1, &frame(&offline, 1));
    assert!(diff <= 1e-6, "middle frame: {diff}");
    // On moving content the windows differ from 16-frame chunks; report by how much (the stage's approximation).
    let clip = moving_clip(16);
    let offline = engine.run_clip(&clip, OFFICIAL_CHUNK_FRAMES).expect("offline");
    let worst = stream_all(&mut engine, &clip, 1)
        .iter()
        .map(|(t, image)| common::diff_stats(image, &frame(&offline, *t)).0)
        .fold(0.0f32, f32::max);
    eprintln!("streaming vs 16-frame chunks on a moving clip: max |Δ| = {worst:.3e}");
    assert!(worst.is_finite());
}

#[test]
fn chunked_offline_runs_chunks_independently() {
    let mut engine = tiny_engine(ExecutorKind::Ort, false);
    let clip = moving_clip(5);
    let chunked = engine.run_clip(&clip, 2).expect("chunks of 2");
    let whole = engine.run_clip(&clip, 16).expect("one chunk");
    assert_eq!(chunked.shape(), &[1, 5, 3, 64, 64]);
    // The last chunk (frame 4 alone) equals that frame run by itself.
    let alone = engine
        .run_clip(&HostTensor::new(vec![1, 1, 3, 32, 32], frame(&clip, 4).into_data()).expect("one"), 16)
        .unwrap();
    assert!(common::diff_stats(&frame(&chunked, 4), &frame(&alone, 0)).0 <= 1e-6);
    // And chunking changes moving content (the temporal windows are real).
    assert!(common::diff_stats(&frame(&chunked, 1), &frame(&whole, 1)).0 > 1e-5);
    let bad = HostTensor::zeros(&[1, 2, 3, 30, 30]);
    assert!(engine.run_clip(&bad, 16).unwrap_err().to_string().contains("input.lq"));
}

/// Other sizes and the style-MLP path (`input_is_latent = false`, one shared `w`): both executors run the one
/// definition, and ORT's graph (static shapes) must agree with burn's eager evaluation on every output.
#[test]
fn other_configurations_agree_across_executors() {
    let json = r#"{"out_size": 32, "num_style_feat": 24, "channel_multiplier": 1, "narrow": 0.125,
                   "sft_half": true, "different_w": false, "input_is_latent": false, "num_mlp": 3}"#;
    let cfg = TsrConfig::from_json_str(json, "custom").expect("config");
    let model = TsrModel::random(cfg.clone(), 7).expect("random");
    let entries = runner::expected_entries(&cfg).expect("listing");
    assert!(entries.iter().any(|e| e.key == "stylegan_decoder.style_mlp.5.weight"));
    assert!(!entries.iter().any(|e| e.key == "stylegan_decoder.style_mlp.7.weight"));
    let frames = moving_clip(3);
    let frames = {
        // Downsample the 32² fixture frames to 16² (input side = out_size / 2) by 2×2 averaging.
        let mut data = Vec::new();
        for f in 0..3 {
            for c in 0..3 {
                for y in 0..16 {
                    for x in 0..16 {
                        let at =
                            |dy: usize, dx: usize| frames.data()[((f * 3 + c) * 32 + 2 * y + dy) * 32 + 2 * x + dx];
                        data.push(0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)));
                    }
                }
            }
        }
        HostTensor::new(vec![3, 3, 16, 16], data).expect("frames")
    };
    let mut outs = Vec::new();
    for executor in [ExecutorKind::Ort, ExecutorKind::Burn] {
        let opts = TsrOptions { executor, device: Device::Cpu, threads: 2, taps: false };
        let mut engine = TsrRunner::new(model.clone(), opts).expect("engine");
        outs.push(engine.run_frames(&frames).expect("forward").remove("output").expect("output"));
    }
    assert_eq!(outs[0].shape(), &[3, 3, 32, 32]);
    let (diff, scale) = common::diff_stats(&outs[0], &outs[1]);
    assert!(scale > 1e-3 && diff <= RTOL * scale.max(1.0), "ort vs burn: {diff} (max {scale})");
}
