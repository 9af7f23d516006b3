//! `metaportrait identities list|remove|export|import` against a library in `METAPORTRAIT_HOME`.

mod common;

use std::process::Command;

use image::RgbImage;
use metaportrait::model::weights::WeightStore;
use metaportrait::personalize::store::{IdentityStore, NewIdentity};
use metaportrait::tensor::HostTensor;

fn cli(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).env("METAPORTRAIT_HOME", home).args(args).output().expect("run")
}

#[test]
fn list_export_remove_import() {
    let home = common::tempdir("identities");
    let store = IdentityStore::open(&home.join("identities")).expect("open");
    let new = NewIdentity {
        name: "Marie Curie".into(),
        portrait: RgbImage::from_pixel(8, 8, image::Rgb([9, 8, 7])),
        landmarks: HostTensor::zeros(&[4, 3]),
        id_vector: None,
        weights_delta: WeightStore::new(),
        base_model_sha256: None,
        personalization: None,
        embedder: None,
    };
    let id = store.add(&new).expect("add");
    std::fs::create_dir_all(home.join("identities").join("broken")).expect("mkdir");

    let out = cli(&home, &["identities", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["id"], "broken");
    assert_eq!(rows[0]["ok"], false);
    assert_eq!(rows[1]["name"], "Marie Curie");

    let archive = home.join("marie.mpid");
    let out = cli(&home, &["identities", "export", "Marie Curie", archive.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&home, &["identities", "remove", &id]);
    assert!(out.status.success());
    let out = cli(&home, &["identities", "remove", &id]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no identity"));
    let out = cli(&home, &["identities", "import", archive.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(store.load(&id).is_ok());
    std::fs::remove_dir_all(&home).ok();
}
