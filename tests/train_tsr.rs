//! `metaportrait train tsr` end to end on real frames: a dataset prepared at the tiny network's output size, two
//! steps of two 3-frame clips each, checkpoints with the EMA, the frozen StyleGAN2 decoder untouched, exact resume
//! (also with the optional GAN term, whose discriminator trains and resumes too), a dataset of the wrong crop
//! size refused with the fix, and `prepare --consecutive` for clips of consecutive video frames.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::max_store_diff as max_diff;
use metaportrait::model::weights::WeightStore;
use metaportrait::tsr::config::TsrConfig;
use metaportrait::tsr::runner::{DEFAULT_INIT_SEED, TsrModel};

fn run(args: &[&OsStr]) -> (bool, String) {
    let out = Command::new(common::bin()).args(args).output().expect("run");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn latest(run_dir: &Path) -> (serde_json::Value, WeightStore, WeightStore) {
    let ckpt = common::latest_checkpoint(run_dir);
    (ckpt.state, ckpt.weights, ckpt.optimizer)
}

#[test]
fn tsr_training_freezes_the_decoder_keeps_an_ema_and_resumes_exactly() {
    let dir = common::tempdir("train-tsr");
    let src = dir.join("videos");
    common::fixture_frames("imgs_0_", &src.join("person_a/clip1"));
    common::fixture_frames("final_0_", &src.join("person_a/clip2"));
    let out_size = TsrConfig::tiny().out_size;
    let prepare = |data: &PathBuf, size: usize| {
        let size = size.to_string();
        run(&[
            "prepare".as_ref(),
            "--videos".as_ref(),
            src.as_os_str(),
            "--out".as_ref(),
            data.as_os_str(),
            "--crop-size".as_ref(),
            size.as_ref(),
        ])
    };
    let data = dir.join("data");
    let (ok, stderr) = prepare(&data, out_size);
    assert!(ok, "{stderr}");
    let crop = image::open(data.join("person_a/clip1/frame_000000.png")).expect("crop");
    assert_eq!((crop.width() as usize, crop.height() as usize), (out_size, out_size));

    let train_with = |data: &PathBuf, out: &PathBuf, steps: &str, extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec!["train".as_ref(), "tsr".as_ref()];
        for (flag, value) in [("--data", data.as_os_str()), ("--out", out.as_os_str())] {
            args.extend([OsStr::new(flag), value]);
        }
        args.extend(
            ["--config", "tiny", "--steps", steps, "--frames", "3", "--batch", "2", "--checkpoint-every", "1"]
                .map(OsStr::new),
        );
        args.extend(extra.iter().map(OsStr::new));
        run(&args)
    };
    let train = |data: &PathBuf, out: &PathBuf, steps: &str| train_with(data, out, steps, &[]);
    let interrupted = dir.join("run");
    let (ok, stderr) = train(&data, &interrupted, "2");
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("not consecutive"), "all ten frames were kept in order: {stderr}");
    let vgg_present = !stderr.contains("no VGG-19 weights");
    assert!(stderr.contains(if vgg_present { "L1 + perceptual + style" } else { "L1 only" }), "{stderr}");
    let (state, weights, optimizer) = latest(&interrupted);
    assert_eq!((state["stage"].as_str(), state["step"].as_u64()), (Some("tsr"), Some(2)));
    assert!(state["log"].as_array().is_some_and(|l| l.iter().all(|e| e["loss"].as_f64().is_some_and(f64::is_finite))));

    let init = TsrModel::random(TsrConfig::tiny(), DEFAULT_INIT_SEED).expect("init").weights;
    let (mut decoder_moved, mut others_moved) = (0, 0);
    for (key, t) in weights.iter() {
        let moved = t.data() != init.get(key).expect("same keys").data();
        match (moved, key.starts_with("stylegan_decoder.")) {
            (true, true) => decoder_moved += 1,
            (true, false) => others_moved += 1,
            _ => {}
        }
    }
    assert!(decoder_moved == 0 && others_moved > 0, "decoder moved: {decoder_moved}, others: {others_moved}");
    // The EMA sits between the initial and the current weights: after 2 steps, 0.999² of the way back to init.
    let ema_key =
        weights.iter().find(|(k, t)| !k.starts_with("stylegan_decoder.") && init.get(k) != Some(t)).expect("moved");
    let ema = optimizer.get(&format!("ema.{}", ema_key.0)).expect("ema entry");
    let (w0, w2) = (init.get(ema_key.0).expect("init"), ema_key.1);
    let gap_now = ema.max_abs_diff(w2).expect("shape");
    assert!(gap_now > 0.0 && ema.max_abs_diff(w0).expect("shape") < gap_now, "the EMA stays near the start");
    assert!(interrupted.join("ema.safetensors").is_file());

    let (ok, stderr) = train(&data, &interrupted, "3");
    assert!(ok, "{stderr}");
    let (_, resumed, resumed_opt) = latest(&interrupted);
    let straight = dir.join("straight");
    let (ok, stderr) = train(&data, &straight, "3");
    assert!(ok, "{stderr}");
    let (_, uninterrupted, uninterrupted_opt) = latest(&straight);
    let diff = max_diff(&resumed, &uninterrupted).max(max_diff(&resumed_opt, &uninterrupted_opt));
    assert!(diff <= 1e-5, "resumed and uninterrupted TSR runs differ by {diff}");

    // With a GAN term: the discriminator trains too, rides along in the checkpoints and resumes exactly.
    let gan = ["--gan-weight", "0.1", "--discriminator", "official"];
    let gan_run = dir.join("gan");
    let (ok, stderr) = train_with(&data, &gan_run, "1", &gan);
    assert!(ok, "{stderr}");
    let (_, gan_weights, _) = latest(&gan_run);
    let d_init = metaportrait::train::discriminator::random_weights(
        &metaportrait::train::discriminator::DiscriminatorConfig::official(),
        out_size,
        0,
    )
    .expect("discriminator init");
    let d_moved = d_init.iter().filter(|(k, t)| gan_weights.get(k).is_some_and(|w| w.data() != t.data())).count();
    assert!(d_moved > 0 && gan_weights.get("discs.1.conv.weight").is_some(), "discriminator moved: {d_moved}");
    let (ok, stderr) = train_with(&data, &gan_run, "2", &gan);
    assert!(ok, "{stderr}");
    let gan_straight = dir.join("gan-straight");
    let (ok, stderr) = train_with(&data, &gan_straight, "2", &gan);
    assert!(ok, "{stderr}");
    let ((_, a, ao), (_, b, bo)) = (latest(&gan_run), latest(&gan_straight));
    let diff = max_diff(&a, &b).max(max_diff(&ao, &bo));
    assert!(diff <= 1e-5, "resumed and uninterrupted GAN runs differ by {diff}");
    // Resuming it without the GAN term would silently drop the discriminator: refused.
    let (ok, stderr) = train(&data, &gan_run, "3");
    assert!(!ok && stderr.contains("GAN setting"), "{stderr}");

    // Generator outputs as inputs (the official TSR training's): `prepare --lq-weights` renders them into `lq/`.
    let (gen_config, gen_weights) = common::tiny_id128(&dir);
    let lq_data = dir.join("data-lq");
    let (ok, stderr) = run(&[
        "prepare".as_ref(),
        "--videos".as_ref(),
        src.as_os_str(),
        "--out".as_ref(),
        lq_data.as_os_str(),
        "--crop-size".as_ref(),
        out_size.to_string().as_ref(),
        "--lq-weights".as_ref(),
        gen_weights.as_os_str(),
        "--lq-config".as_ref(),
        gen_config.as_os_str(),
    ]);
    assert!(ok, "{stderr}");
    let clip_dir = lq_data.join("person_a/clip1");
    let crops = std::fs::read_dir(&clip_dir).expect("clip").filter_map(Result::ok);
    let crops = crops.filter(|e| e.file_name().to_string_lossy().starts_with("frame_")).count();
    let lq_frames = std::fs::read_dir(clip_dir.join("lq")).expect("lq/").count();
    assert!(crops >= 3 && lq_frames == crops, "{crops} crops, {lq_frames} generator frames");
    let lq = image::open(clip_dir.join("lq/frame_000000.png")).expect("lq frame");
    assert_eq!((lq.width(), lq.height()), (256, 256), "generator-size outputs");
    let (ok, stderr) = train(&lq_data, &dir.join("lq-run"), "1");
    assert!(ok && stderr.contains("generator outputs (lq/) for 2 clips"), "{stderr}");

    // A dataset of generator-sized crops does not fit the tiny network: refused, with the flag that fixes it.
    let wrong = dir.join("data-256");
    let (ok, stderr) = prepare(&wrong, 256);
    assert!(ok, "{stderr}");
    let (ok, stderr) = train(&wrong, &dir.join("wrong"), "1");
    assert!(!ok && stderr.contains(&format!("--crop-size {out_size}")), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

fn clip_indices(clip_dir: &Path) -> Vec<u64> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(clip_dir.join("clip.json")).expect("clip.json")).expect("json");
    json["frames"].as_array().expect("frames").iter().map(|f| f["index"].as_u64().expect("index")).collect()
}

#[test]
fn prepare_consecutive_keeps_frames_in_a_row_and_train_tsr_warns_about_spread_ones() {
    let dir = common::tempdir("tsr-consecutive");
    let src = dir.join("videos");
    common::fixture_frames("imgs_0_", &src.join("person_a/clip1"));
    let size = TsrConfig::tiny().out_size.to_string();
    let prepare = |out: &Path, extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec!["prepare".as_ref(), "--videos".as_ref(), src.as_os_str()];
        args.extend([OsStr::new("--out"), out.as_os_str()]);
        args.extend(["--crop-size", size.as_str(), "--frames", "4"].map(OsStr::new));
        args.extend(extra.iter().map(OsStr::new));
        run(&args)
    };
    let (spread, consecutive) = (dir.join("spread"), dir.join("consecutive"));
    let (ok, stderr) = prepare(&spread, &[]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = prepare(&consecutive, &["--consecutive"]);
    assert!(ok, "{stderr}");
    // Ten frames: four spread over them are every third; four consecutive are the first four.
    assert_eq!(clip_indices(&spread.join("person_a/clip1")), vec![0, 3, 6, 9]);
    assert_eq!(clip_indices(&consecutive.join("person_a/clip1")), vec![0, 1, 2, 3]);
    for (data, warns) in [(&spread, true), (&consecutive, false)] {
        let out = dir.join(format!("run-{warns}"));
        let mut args: Vec<&OsStr> = vec!["train".as_ref(), "tsr".as_ref()];
        args.extend([OsStr::new("--data"), data.as_os_str(), OsStr::new("--out"), out.as_os_str()]);
        args.extend(["--config", "tiny", "--steps", "1", "--frames", "3", "--batch", "1"].map(OsStr::new));
        let (ok, stderr) = run(&args);
        assert!(ok, "{stderr}");
        assert_eq!(stderr.contains("not consecutive video frames"), warns, "{stderr}");
    }
}
