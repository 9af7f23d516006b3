//! `metaportrait prepare` and `metaportrait train meta|warp|full` end to end: real frames of three people (the
//! fixture faces) become a dataset; two Reptile outer steps write checkpoints; a resumed run continues exactly where
//! the first stopped, equal to an uninterrupted run; the warping stage moves only the warping network; the joint
//! stage trains generator and discriminator together and resumes exactly too.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::max_store_diff as max_diff;
use metaportrait::model::weights::WeightStore;

fn run(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(common::bin()).args(args).output().expect("run");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn latest(run_dir: &Path) -> (serde_json::Value, WeightStore) {
    let ckpt = common::latest_checkpoint(run_dir);
    (ckpt.state, ckpt.weights)
}

#[test]
fn prepare_then_meta_train_with_checkpoints_and_exact_resume() {
    let dir = common::tempdir("train-cli");
    let src = dir.join("videos");
    common::fixture_frames("imgs_0_", &src.join("person_a/clip1"));
    common::fixture_frames("final_0_", &src.join("person_a/clip2"));
    common::fixture_frames("imgs_train_0_", &src.join("person_b/clip1"));
    let blank = src.join("person_c/blank");
    std::fs::create_dir_all(&blank).expect("mkdir");
    for i in 0..4 {
        image::RgbImage::from_pixel(96, 96, image::Rgb([80, 80, 80]))
            .save(blank.join(format!("{i}.png")))
            .expect("png");
    }
    let data = dir.join("data");
    let prepare = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["prepare".as_ref(), "--videos".as_ref(), src.as_os_str(), "--out".as_ref(), data.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        run(&args)
    };
    let (ok, stderr) = prepare(&["--frames", "6"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("prepared 3 clips") && stderr.contains("1 skipped"), "{stderr}");
    assert!(stderr.contains("blank"), "the faceless clip is named: {stderr}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("person_a/clip1/clip.json")).expect("clip.json"))
            .expect("json");
    // 10 frames, at most 6 evenly spread: every second one.
    assert_eq!(manifest["frames"].as_array().map(Vec::len), Some(5));
    assert_eq!(manifest["id_vector"].as_array().map(Vec::len), Some(128));
    assert!(!data.join("person_c").join("blank").exists(), "nothing half-written for a failed clip");
    let (ok, stderr) = prepare(&["--frames", "6"]);
    assert!(ok && stderr.contains("prepared 0 clips") && stderr.contains("3 already there"), "{stderr}");

    let (config, weights) = common::tiny_id128(&dir);
    // `train STAGE` on the dataset and model above, into `out`, up to `steps`, without VGG.
    let train = |stage: &str, out: &PathBuf, steps: &str, extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["train".as_ref(), stage.as_ref()];
        for (flag, value) in [("--data", &data), ("--config", &config), ("--weights", &weights), ("--out", out)] {
            args.extend([flag.as_ref(), value.as_os_str()]);
        }
        args.extend(["--steps", steps, "--perceptual", "off"].map(std::ffi::OsStr::new));
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        run(&args)
    };
    let meta_args = ["--tasks", "2", "--inner-steps", "2", "--support", "3", "--checkpoint-every", "1"];
    let meta = |out: &PathBuf, steps: &str| train("meta", out, steps, &meta_args);
    let interrupted = dir.join("run");
    let (ok, stderr) = meta(&interrupted, "2");
    assert!(ok, "{stderr}");
    let (state, after_two) = latest(&interrupted);
    assert_eq!(state["step"], 2);
    assert_eq!(state["log"].as_array().map(Vec::len), Some(2));
    let first_step = &state["log"][0]["meta"];
    assert!(first_step["inner_loss_last"].as_f64() < first_step["inner_loss_first"].as_f64(), "{first_step}");
    let init = WeightStore::load_safetensors(&weights).expect("init");
    assert!(max_diff(&after_two, &init) > 0.0, "meta-training changed nothing");
    // Resume to 3 steps, and compare with a run that goes to 3 in one go.
    let (ok, stderr) = meta(&interrupted, "3");
    assert!(ok, "{stderr}");
    let (resumed_state, resumed) = latest(&interrupted);
    assert_eq!(resumed_state["step"], 3);
    let history = |s: &serde_json::Value| s["log"].as_array().map(|l| l[..2].to_vec()).unwrap_or_default();
    assert_eq!(history(&resumed_state), history(&state), "the resumed run keeps its history");
    let straight = dir.join("straight");
    let (ok, stderr) = meta(&straight, "3");
    assert!(ok, "{stderr}");
    let (_, uninterrupted) = latest(&straight);
    let diff = max_diff(&resumed, &uninterrupted);
    assert!(diff <= 1e-5, "resumed and uninterrupted runs differ by {diff}");
    let kept = std::fs::read_dir(&straight).expect("run dir").filter_map(Result::ok).count();
    assert_eq!(kept, 3, "latest + the last two checkpoints");

    // Warping pre-training: only the warping network moves.
    let warp_run = dir.join("warp");
    let (ok, stderr) = train("warp", &warp_run, "2", &[]);
    assert!(ok, "{stderr}");
    let (warp_state, warped) = latest(&warp_run);
    assert_eq!(warp_state["stage"], "warp");
    assert_eq!(warp_state["step"], 2);
    assert!(
        warp_state["log"].as_array().is_some_and(|l| l.iter().all(|e| e["loss"].as_f64().is_some_and(f64::is_finite)))
    );
    let is_warp = |k: &str| k.starts_with("ladder_network.") || k.starts_with("dense_motion_network.");
    let (mut warp_moved, mut other_moved) = (0, 0);
    for (key, t) in warped.iter() {
        let moved = t.data() != init.get(key).expect("same keys").data();
        if moved && is_warp(key) {
            warp_moved += 1;
        } else if moved {
            other_moved += 1;
        }
    }
    assert!(warp_moved > 0 && other_moved == 0, "warp tensors moved: {warp_moved}, others: {other_moved}");
    // A run folder of another stage is not resumed by mistake.
    let (ok, stderr) = meta(&warp_run, "3");
    assert!(!ok && stderr.contains("another architecture or stage"), "{stderr}");

    // Joint training with the patch discriminator: both networks move, checkpoints carry both, resume is exact.
    let full =
        |out: &PathBuf, steps: &str| train("full", out, steps, &["--discriminator", "tiny", "--checkpoint-every", "1"]);
    let full_run = dir.join("full");
    let (ok, stderr) = full(&full_run, "2");
    assert!(ok, "{stderr}");
    let (full_state, joint) = latest(&full_run);
    assert_eq!(full_state["stage"], "full");
    for entry in full_state["log"].as_array().expect("log") {
        let adv = &entry["adversarial"];
        for term in ["generator_gan", "feature_matching", "discriminator"] {
            assert!(adv[term].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{term}: {entry}");
        }
    }
    let disc_keys: Vec<&String> = joint.iter().map(|(k, _)| k).filter(|k| k.starts_with("discs.")).collect();
    assert!(
        disc_keys.iter().any(|k| k.starts_with("discs.1.")) && disc_keys.iter().any(|k| k.starts_with("discs.0-5."))
    );
    let generator_moved = init.iter().any(|(k, t)| joint.get(k).is_some_and(|j| j.data() != t.data()));
    assert!(generator_moved, "the generator did not move");
    let (ok, stderr) = full(&full_run, "3");
    assert!(ok, "{stderr}");
    let (_, full_resumed) = latest(&full_run);
    let full_straight = dir.join("full-straight");
    let (ok, stderr) = full(&full_straight, "3");
    assert!(ok, "{stderr}");
    let (_, full_uninterrupted) = latest(&full_straight);
    let diff = max_diff(&full_resumed, &full_uninterrupted);
    assert!(diff <= 1e-5, "resumed and uninterrupted joint runs differ by {diff}");
    assert!(max_diff(&full_resumed, &joint) > 0.0, "the third step changed nothing");
    std::fs::remove_dir_all(&dir).ok();
}
