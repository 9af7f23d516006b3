//! `metaportrait identities add`: a portrait file becomes a library identity, its identity vector made by an
//! embedder (the provisioned dlib network or `--embedder FILE.onnx`) or read from a `.npy` file.
//!
//! Owns the command's arguments and the vector file's checks; cropping and landmarks are
//! `pipeline::render::prepare_portrait`, storage is `personalize::store`. Receives a portrait, a name and optionally a
//! vector file; emits a new identity (which records the embedder's tag) and one line naming it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use metaportrait::model::inputs::EXTERNAL_EMBEDDER;
use metaportrait::personalize::store::{IdentityStore, NewIdentity};
use metaportrait::tensor::HostTensor;

use super::embedder::EmbedderArgs;

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The portrait (PNG or JPEG with one face).
    #[arg(long)]
    pub portrait: PathBuf,
    /// Display name of the new identity.
    #[arg(long)]
    pub name: String,
    /// The identity vector as a `.npy` float array of any length (the id_dim of the model it is for, e.g. an
    /// official `src_<n>_id.npy`), instead of embedding the portrait.
    #[arg(long, value_name = "FILE.npy", conflicts_with = "embedder")]
    pub id_vector: Option<PathBuf>,
    /// Tag of the embedder that made `--id-vector`, as model configs name it (e.g. `official-release`). Without it
    /// the vector is recorded as `external`: any model whose id_dim fits accepts it.
    #[arg(long, requires = "id_vector")]
    pub id_vector_embedder: Option<String>,
    #[command(flatten)]
    pub embedder: EmbedderArgs,
    /// Face models folder (default: the bundled `models/`).
    #[arg(long)]
    pub models: Option<PathBuf>,
}

pub fn run(store: &IdentityStore, args: &AddArgs) -> Result<()> {
    // Read the vector first: a bad file fails before the face models load.
    let from_file = match &args.id_vector {
        Some(path) => {
            Some(metaportrait::face::npy::read_vector(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let models = args.models.clone().unwrap_or_else(metaportrait::face::default_models_dir);
    let mut mesher = metaportrait::face::FaceMesher::from_dir(&models)?;
    let portrait = metaportrait::face::load_image(&args.portrait)?;
    let prepared = metaportrait::pipeline::render::prepare_portrait(&mut mesher, &portrait, &args.portrait)?;
    let (id_vector, tag) = match from_file {
        Some(v) => (v, args.id_vector_embedder.clone().unwrap_or_else(|| EXTERNAL_EMBEDDER.to_owned())),
        None => {
            let mut embedder = args.embedder.open()?;
            (embedder.embed(&portrait, &prepared.frame_landmarks)?, embedder.tag().to_owned())
        }
    };
    let n = prepared.landmarks.len();
    let landmarks = HostTensor::new(vec![n, 3], prepared.landmarks.iter().flatten().copied().collect())?;
    let dim = id_vector.len();
    let id = store.add(&NewIdentity {
        name: args.name.clone(),
        portrait: prepared.crop,
        landmarks,
        id_vector: Some(id_vector),
        weights_delta: Default::default(),
        base_model_sha256: None,
        personalization: None,
        embedder: Some(tag.clone()),
    })?;
    eprintln!("added `{id}` ({dim}-d identity vector from {tag})");
    Ok(())
}
