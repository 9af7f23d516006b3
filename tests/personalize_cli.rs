//! `metaportrait personalize` end to end on real frames of one person (the official example clip in
//! `../shared/fixtures/faces`): clip → crops, landmarks, source and held-out frames → identity embedding → K Adam
//! steps → an identity in the library, with the report's keys. The base model is the tiny fixture generator with its
//! identity input widened to our 128-d embedding (the tensors that depend on `id_dim` freshly initialised; every
//! other tensor is the fixture's).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::weights::WeightStore;
use metaportrait::personalize::store::IdentityStore;

const STEPS: usize = 6;

fn personalize(home: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(common::bin()).env("METAPORTRAIT_HOME", home).arg("personalize").args(args).output().expect("run")
}

#[test]
fn personalization_lowers_the_heldout_loss_and_adds_an_identity() {
    let dir = common::tempdir("personalize-cli");
    let (config, weights) = common::tiny_id128(&dir);
    let clip = common::example_clip(&dir);
    let home = dir.join("home");
    let report_path = dir.join("report.json");
    let steps = STEPS.to_string();
    let out = personalize(
        &home,
        &[
            "--clip".as_ref(),
            clip.as_os_str(),
            "--name".as_ref(),
            "Example person".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--weights".as_ref(),
            weights.as_os_str(),
            "--steps".as_ref(),
            steps.as_ref(),
            "--perceptual".as_ref(),
            "off".as_ref(),
            "--report".as_ref(),
            report_path.as_os_str(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("report json");
    eprintln!("{report}");
    assert_eq!(report["steps"], STEPS);
    assert!(report["seconds"].as_f64().is_some_and(|s| s > 0.0));
    let before = report["heldout_loss_before"].as_f64().expect("before");
    let after = report["heldout_loss_after"].as_f64().expect("after");
    assert!(after < before, "held-out loss {before} → {after}");
    assert_eq!(report["losses"], serde_json::json!(["l1", "eye", "mouth"]));
    assert!(report["frames_heldout"].as_u64().is_some_and(|n| n >= 1));

    let store = IdentityStore::open(&home.join("identities")).expect("store");
    let list = store.list().expect("list");
    assert_eq!(list.len(), 1);
    let identity = store.load(&list[0].id).expect("loads");
    assert_eq!(identity.meta.name, "Example person");
    assert_eq!(identity.id_vector.as_ref().map(Vec::len), Some(128));
    assert!(!identity.weights_delta.is_empty(), "the fine-tuned tensors are stored");
    let base = WeightStore::load_safetensors(&weights).expect("base");
    assert!(identity.weights_delta.len() < base.len(), "a delta, not a full copy");
    let info = identity.meta.personalization.expect("personalization info");
    assert_eq!((info.steps, info.heldout_loss_after), (STEPS, after));
    assert_eq!(identity.meta.base_model_sha256, Some(metaportrait::checksum::sha256_file(&weights).expect("sha")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_cancelled_or_faceless_personalization_leaves_the_library_untouched() {
    use metaportrait::clip::frames::prepare_clip;
    use metaportrait::personalize::job::{PersonalizeError, PersonalizeJob, personalize as run};
    let dir = common::tempdir("personalize-cancel");
    let (config, weights) = common::tiny_id128(&dir);
    let home = dir.join("home");

    // Cancelled before the first step: an error, nothing to store.
    let mut mesher =
        metaportrait::face::FaceMesher::from_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
            .expect("face models");
    let mut source = metaportrait::capture::ImageSequenceSource::open(common::example_clip(&dir), 25.0).expect("clip");
    let clip = prepare_clip(&mut mesher, &mut source, Some(10), 10, |_| {}).expect("frames");
    assert_eq!(clip.frames.len(), 10);
    assert!(!clip.holdout.contains(&clip.source));
    let base = GeneratorModel::load(GeneratorConfig::from_json_file(&config).expect("config"), &weights).expect("base");
    let device = metaportrait::runtime::burn_device::exec_device(metaportrait::runtime::Device::Cpu).expect("device");
    let job = PersonalizeJob {
        name: "never".into(),
        steps: STEPS,
        adam: Default::default(),
        vgg: None,
        device: &device,
        base_sha256: None,
        embedder: metaportrait::face::embed::DLIB_EMBEDDER_TAG.into(),
    };
    let cancel = AtomicBool::new(true);
    let result = run(&base, &clip, vec![1.0; 128], &job, &cancel, |_| {});
    assert!(matches!(result, Err(PersonalizeError::Loop(_))), "cancel must stop the job");

    // A clip without faces: a clear error, exit status ≠ 0, no identity.
    let blank = dir.join("blank");
    std::fs::create_dir_all(&blank).expect("mkdir");
    for i in 0..4 {
        image::RgbImage::from_pixel(128, 128, image::Rgb([90, 90, 90]))
            .save(blank.join(format!("{i}.png")))
            .expect("png");
    }
    let out = personalize(
        &home,
        &[
            "--clip".as_ref(),
            blank.as_os_str(),
            "--name".as_ref(),
            "nobody".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--weights".as_ref(),
            weights.as_os_str(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 frames with a face"), "{stderr}");
    let store = IdentityStore::open(&home.join("identities")).expect("store");
    assert!(store.list().expect("list").is_empty());
    std::fs::remove_dir_all(&dir).ok();
}
