//! `--embedder FILE.onnx`, shared by every command that embeds a face (`render`, `live`, `personalize`, `prepare`,
//! `identities add`).
//!
//! Owns the flag and the choice between the user's network and the provisioned one; the networks themselves are
//! `metaportrait::face::embed`. Receives the flag; emits an opened `IdEmbedder` or its path.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use metaportrait::face::embed::{IdEmbedder, default_id_model_path};

/// Which face-recognition network makes identity vectors.
#[derive(Args, Debug, Clone, Default)]
pub struct EmbedderArgs {
    /// Face-recognition network for identity vectors, instead of the provisioned dlib one: an ArcFace-style ONNX
    /// file (input [1, 3, 112, 112] RGB in [−1, 1], the face aligned to the 5-point ArcFace template; output [1, D],
    /// any D, L2-normalised here). Identities record which network made their vector; models refuse others.
    #[arg(long, value_name = "FILE.onnx")]
    pub embedder: Option<PathBuf>,
}

impl EmbedderArgs {
    /// The network file: `--embedder`, else the provisioned dlib network.
    pub fn path(&self) -> PathBuf {
        self.embedder.clone().unwrap_or_else(default_id_model_path)
    }

    /// Opens the network, with the fix when the provisioned one is missing.
    pub fn open(&self) -> Result<IdEmbedder> {
        match &self.embedder {
            Some(path) => IdEmbedder::new(path).with_context(|| format!("loading the embedder {}", path.display())),
            None => IdEmbedder::new(&default_id_model_path())
                .context("the identity-embedding network is not installed: run `bash scripts/provision-id-model.sh`"),
        }
    }
}
