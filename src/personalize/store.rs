//! The identity library on disk: one directory per identity, written atomically and verified on load.
//!
//! Owns the identity format. An identity directory holds `portrait.png` (the 256² crop the generator uses),
//! `tensors.safetensors` (the portrait's landmarks, its identity vector and — for a personalized identity — only the
//! weight tensors that differ from the base model, under `delta.<official key>`) and `identity.json` (name, dates,
//! base-model hash, personalization report, and the SHA-256 of every other file). Receives `NewIdentity` values and
//! names; emits `Identity` values, listings that include broken entries (so the UI can show them), and export files.
//!
//! Writes never leave a half identity: files go into a staging directory that is renamed into place (a directory
//! rename is atomic on one filesystem); the manifest is written last and lists hashes, so a torn or tampered
//! directory is reported as corrupt and skipped, never loaded half-way. Leftover staging directories from a crash are
//! removed when the store is opened.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;
use crate::model::weights::WeightStore;
use crate::tensor::HostTensor;

/// Version written to `identity.json`; an identity of another version is reported corrupt rather than misread.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST_FILE: &str = "identity.json";
const PORTRAIT_FILE: &str = "portrait.png";
const TENSORS_FILE: &str = "tensors.safetensors";
/// Files an identity may contain besides the manifest.
const DATA_FILES: [&str; 2] = [PORTRAIT_FILE, TENSORS_FILE];
const STAGING_PREFIX: &str = ".staging-";
const TRASH_PREFIX: &str = ".trash-";
/// Tensor names inside `tensors.safetensors`: the portrait's landmarks, `[n, 2|3]` in portrait pixels.
pub const LANDMARKS_TENSOR: &str = "landmarks";
/// The identity embedding, `[d]` (absent when none was computed).
pub const ID_VECTOR_TENSOR: &str = "id_vector";
/// Prefix of the weight-delta tensors: `delta.<official key>` replaces base tensor `<official key>`.
pub const DELTA_PREFIX: &str = "delta.";
/// Largest file accepted from an import archive (a full generator copy is ~520 MB).
const MAX_IMPORT_FILE_BYTES: u64 = 2 << 30;
const MAX_NAME_CHARS: usize = 80;

/// Why an identity could not be listed, loaded, written or moved; the library on disk is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a file or directory of the library failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No identity directory has this id (or the id is not a valid slug).
    #[error("identity `{0}` does not exist")]
    NotFound(String),
    /// The identity's directory is incomplete, tampered with or of another format version; it is never loaded.
    #[error("identity `{id}` is corrupt: {reason}")]
    Corrupt {
        /// The identity's id (its directory name).
        id: String,
        /// What is wrong (missing file, failed checksum, bad manifest).
        reason: String,
    },
    /// What the caller asked to store is not valid (a bad name, landmarks of the wrong shape).
    #[error("invalid identity: {0}")]
    Invalid(String),
    /// An import or export archive is malformed, incomplete or fails its checksums.
    #[error("identity archive {path} is not usable: {reason}")]
    Archive {
        /// The archive file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_path_buf(), source }
}

/// How an identity was personalized (absent for a plain portrait).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersonalizationInfo {
    /// Adam steps taken.
    pub steps: usize,
    /// Wall time of the fine-tuning job, in seconds.
    pub seconds: f64,
    /// Loss terms used ("l1", "eye", "mouth", "perceptual").
    pub losses: Vec<String>,
    /// Mean held-out loss with the base weights.
    pub heldout_loss_before: f64,
    /// Mean held-out loss with the personalized weights.
    pub heldout_loss_after: f64,
}

/// `identity.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentityMeta {
    /// `FORMAT_VERSION` of the build that wrote it.
    pub format_version: u32,
    /// Directory name: a slug of the name, unique in the library, never changed by a rename.
    pub id: String,
    /// Display name (1–80 printable characters).
    pub name: String,
    /// Creation time, in seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// SHA-256 of the base weights a delta applies to (None: no weights delta).
    pub base_model_sha256: Option<String>,
    /// The personalization report (`None`: a plain portrait).
    pub personalization: Option<PersonalizationInfo>,
    /// SHA-256 of every data file, by file name.
    pub files: BTreeMap<String, String>,
    /// Tag of the face embedder that made the identity vector (`face::embed`; `external` for a vector given as a
    /// file). Absent in identities made before it was recorded, whose vectors all came from the dlib network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
}

/// A loaded identity.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Its manifest, checksums verified.
    pub meta: IdentityMeta,
    /// The 256² portrait crop.
    pub portrait: RgbImage,
    /// The portrait's landmarks `[n, 3]` in portrait pixels.
    pub landmarks: HostTensor,
    /// Identity embedding the generator is conditioned on (`None`: not computed; the neural engine needs it).
    pub id_vector: Option<Vec<f32>>,
    /// Changed weight tensors by official key (empty when not personalized).
    pub weights_delta: WeightStore,
}

/// What the caller provides to create an identity.
#[derive(Clone, Debug)]
pub struct NewIdentity {
    /// Display name (1–80 printable characters; the id is derived from it).
    pub name: String,
    /// The 256² portrait crop.
    pub portrait: RgbImage,
    /// The portrait's landmarks `[n, 2|3]` in portrait pixels.
    pub landmarks: HostTensor,
    /// Identity embedding (`None`: not computed).
    pub id_vector: Option<Vec<f32>>,
    /// Weight tensors that differ from the base model, by official key (empty: the base model).
    pub weights_delta: WeightStore,
    /// SHA-256 of the base weights the delta applies to.
    pub base_model_sha256: Option<String>,
    /// The personalization report (`None`: a plain portrait).
    pub personalization: Option<PersonalizationInfo>,
    /// Tag of the embedder that made `id_vector` (see `IdentityMeta::embedder`).
    pub embedder: Option<String>,
}

/// One row of a listing: the directory name and either its manifest or why it cannot be used.
#[derive(Debug)]
pub struct ListEntry {
    /// The directory name.
    pub id: String,
    /// The verified manifest, or why the identity cannot be loaded.
    pub meta: Result<IdentityMeta, IdentityError>,
}

pub use crate::checksum::sha256_hex;

fn sha256_file(path: &Path) -> Result<String, IdentityError> {
    crate::checksum::sha256_file(path).map_err(io_err(path))
}

/// A directory-safe id from a display name: lowercase ASCII letters, digits and dashes.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_owned();
    if out.is_empty() { "identity".to_owned() } else { out }
}

fn validate_name(name: &str) -> Result<String, IdentityError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(IdentityError::Invalid(format!(
            "name must be 1–{MAX_NAME_CHARS} printable characters, got {name:?}"
        )));
    }
    Ok(name.to_owned())
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn encode_png(img: &RgbImage) -> Result<Vec<u8>, IdentityError> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| IdentityError::Invalid(format!("cannot encode the portrait: {e}")))?;
    Ok(bytes)
}

fn tensors_bytes(new: &NewIdentity) -> Result<Vec<u8>, IdentityError> {
    let shape = new.landmarks.shape();
    if shape.len() != 2 || !(2..=3).contains(&shape[1]) || shape[0] == 0 {
        return Err(IdentityError::Invalid(format!("landmarks must be [n, 2|3], got {shape:?}")));
    }
    let mut store = WeightStore::new();
    store.insert(LANDMARKS_TENSOR, new.landmarks.clone());
    if let Some(v) = &new.id_vector {
        let t = HostTensor::new(vec![v.len()], v.clone()).map_err(|e| IdentityError::Invalid(e.to_string()))?;
        store.insert(ID_VECTOR_TENSOR, t);
    }
    for (key, t) in new.weights_delta.iter() {
        store.insert(format!("{DELTA_PREFIX}{key}"), t.clone());
    }
    store.to_safetensors_bytes().map_err(|e| IdentityError::Invalid(e.to_string()))
}

/// Writes `bytes` to `path` and flushes it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// The identity library rooted at a directory.
///
/// ```
/// use metaportrait::personalize::store::{IdentityStore, NewIdentity};
/// use metaportrait::tensor::HostTensor;
///
/// let dir = tempfile::tempdir()?;
/// let store = IdentityStore::open(dir.path())?;
/// let id = store.add(&NewIdentity {
///     name: "Ada".into(),
///     portrait: image::RgbImage::new(256, 256),
///     landmarks: HostTensor::zeros(&[478, 3]),
///     id_vector: Some(vec![0.0; 128]),
///     weights_delta: Default::default(),
///     base_model_sha256: None,
///     personalization: None,
///     embedder: Some("dlib-resnet-v1".into()),
/// })?;
/// let listed = store.list()?;
/// assert_eq!((listed.len(), listed[0].id.as_str()), (1, id.as_str()));
/// let ada = store.load(&id)?;
/// assert_eq!((ada.meta.name.as_str(), ada.id_vector.map(|v| v.len())), ("Ada", Some(128)));
/// store.remove(&id)?;
/// assert!(store.list()?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct IdentityStore {
    root: PathBuf,
}

impl IdentityStore {
    /// Opens (creating) the library and removes leftovers of interrupted writes.
    pub fn open(root: &Path) -> Result<Self, IdentityError> {
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let store = Self { root: root.to_path_buf() };
        store.recover()?;
        Ok(store)
    }

    /// The library's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Staging dirs are incomplete writes: delete. Trash dirs are replaced identities: restore the old one if the
    /// replacement never arrived, else delete.
    fn recover(&self) -> Result<(), IdentityError> {
        for entry in std::fs::read_dir(&self.root).map_err(io_err(&self.root))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(STAGING_PREFIX) {
                tracing::warn!(path = %path.display(), "removing an interrupted identity write");
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
            } else if let Some(rest) = name.strip_prefix(TRASH_PREFIX) {
                let id = rest.split('.').next().unwrap_or_default();
                let target = self.root.join(id);
                if !id.is_empty() && !target.exists() {
                    tracing::warn!(id, "restoring an identity whose replacement was interrupted");
                    std::fs::rename(&path, &target).map_err(io_err(&path))?;
                } else {
                    std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                }
            }
        }
        Ok(())
    }

    fn dir(&self, id: &str) -> Result<PathBuf, IdentityError> {
        if id.is_empty() || id != slug(id) {
            return Err(IdentityError::NotFound(id.to_owned()));
        }
        Ok(self.root.join(id))
    }

    /// Every identity directory, sorted by id, with its manifest or the reason it is unusable.
    pub fn list(&self) -> Result<Vec<ListEntry>, IdentityError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_err(&self.root))?.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let meta = self.verified_meta(&id);
            out.push(ListEntry { id, meta });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn read_meta(&self, id: &str) -> Result<IdentityMeta, IdentityError> {
        let dir = self.dir(id)?;
        if !dir.is_dir() {
            return Err(IdentityError::NotFound(id.to_owned()));
        }
        let corrupt = |reason: String| IdentityError::Corrupt { id: id.to_owned(), reason };
        let bytes = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| corrupt(format!("{MANIFEST_FILE}: {e}")))?;
        let meta: IdentityMeta =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{MANIFEST_FILE}: {e}")))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(corrupt(format!("format version {} (this build reads {FORMAT_VERSION})", meta.format_version)));
        }
        if meta.id != id {
            return Err(corrupt(format!("manifest names `{}`", meta.id)));
        }
        Ok(meta)
    }

    /// The manifest after checking every listed file's hash.
    fn verified_meta(&self, id: &str) -> Result<IdentityMeta, IdentityError> {
        let meta = self.read_meta(id)?;
        let dir = self.dir(id)?;
        for required in DATA_FILES {
            if !meta.files.contains_key(required) {
                return Err(IdentityError::Corrupt { id: id.to_owned(), reason: format!("{required} is not listed") });
            }
        }
        for (file, expected) in &meta.files {
            if !DATA_FILES.contains(&file.as_str()) {
                return Err(IdentityError::Corrupt { id: id.to_owned(), reason: format!("unexpected file {file}") });
            }
            let actual = sha256_file(&dir.join(file))
                .map_err(|e| IdentityError::Corrupt { id: id.to_owned(), reason: e.to_string() })?;
            if &actual != expected {
                return Err(IdentityError::Corrupt { id: id.to_owned(), reason: format!("{file} fails its checksum") });
            }
        }
        Ok(meta)
    }

    /// Loads an identity completely or not at all.
    pub fn load(&self, id: &str) -> Result<Identity, IdentityError> {
        let meta = self.verified_meta(id)?;
        let dir = self.dir(id)?;
        let corrupt = |reason: String| IdentityError::Corrupt { id: id.to_owned(), reason };
        let portrait = image::open(dir.join(PORTRAIT_FILE)).map_err(|e| corrupt(format!("{PORTRAIT_FILE}: {e}")))?;
        let tensors = WeightStore::load_safetensors(&dir.join(TENSORS_FILE))
            .map_err(|e| corrupt(format!("{TENSORS_FILE}: {e}")))?;
        let landmarks = tensors.get(LANDMARKS_TENSOR).cloned().ok_or_else(|| corrupt("no landmarks".into()))?;
        let id_vector = tensors.get(ID_VECTOR_TENSOR).map(|t| t.data().to_vec());
        let mut weights_delta = WeightStore::new();
        for (key, t) in tensors.iter() {
            if let Some(k) = key.strip_prefix(DELTA_PREFIX) {
                weights_delta.insert(k, t.clone());
            }
        }
        Ok(Identity { meta, portrait: portrait.to_rgb8(), landmarks, id_vector, weights_delta })
    }

    /// An id derived from `name` that no directory uses yet.
    fn fresh_id(&self, name: &str) -> String {
        let base = slug(name);
        let mut id = base.clone();
        let mut k = 2;
        while self.root.join(&id).exists() {
            id = format!("{base}-{k}");
            k += 1;
        }
        id
    }

    fn staging_dir(&self, id: &str) -> PathBuf {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        self.root.join(format!("{STAGING_PREFIX}{id}.{}.{nanos}", std::process::id()))
    }

    /// Writes the files of an identity into a staging directory; returns it.
    fn stage(&self, id: &str, new: &NewIdentity) -> Result<PathBuf, IdentityError> {
        let name = validate_name(&new.name)?;
        let staging = self.staging_dir(id);
        std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        let result = (|| {
            let mut files = BTreeMap::new();
            for (file, bytes) in [(PORTRAIT_FILE, encode_png(&new.portrait)?), (TENSORS_FILE, tensors_bytes(new)?)] {
                write_synced(&staging.join(file), &bytes)?;
                files.insert(file.to_owned(), sha256_hex(&bytes));
            }
            let meta = IdentityMeta {
                format_version: FORMAT_VERSION,
                id: id.to_owned(),
                name,
                created_unix_s: unix_now_s(),
                base_model_sha256: new.base_model_sha256.clone(),
                personalization: new.personalization.clone(),
                files,
                embedder: new.embedder.clone(),
            };
            let json = serde_json::to_vec_pretty(&meta).map_err(|e| IdentityError::Invalid(e.to_string()))?;
            write_synced(&staging.join(MANIFEST_FILE), &json)
        })();
        if let Err(e) = result {
            std::fs::remove_dir_all(&staging).ok();
            return Err(e);
        }
        Ok(staging)
    }

    /// Adds a new identity; returns its id.
    pub fn add(&self, new: &NewIdentity) -> Result<String, IdentityError> {
        let id = self.fresh_id(&new.name);
        let staging = self.stage(&id, new)?;
        let target = self.root.join(&id);
        std::fs::rename(&staging, &target).map_err(|e| {
            std::fs::remove_dir_all(&staging).ok();
            IdentityError::Io { path: target.clone(), source: e }
        })?;
        Ok(id)
    }

    /// Replaces identity `id` with new contents (e.g. after personalization), atomically: at every instant either the
    /// old or the new identity is complete on disk.
    pub fn replace(&self, id: &str, new: &NewIdentity) -> Result<(), IdentityError> {
        let target = self.dir(id)?;
        if !target.is_dir() {
            return Err(IdentityError::NotFound(id.to_owned()));
        }
        let staging = self.stage(id, new)?;
        let trash = self.root.join(format!("{TRASH_PREFIX}{id}.{}", std::process::id()));
        std::fs::rename(&target, &trash).map_err(io_err(&target))?;
        if let Err(e) = std::fs::rename(&staging, &target) {
            std::fs::rename(&trash, &target).ok();
            std::fs::remove_dir_all(&staging).ok();
            return Err(IdentityError::Io { path: target, source: e });
        }
        std::fs::remove_dir_all(&trash).map_err(io_err(&trash))
    }

    /// Changes the display name (the id stays).
    pub fn rename(&self, id: &str, name: &str) -> Result<(), IdentityError> {
        let mut meta = self.verified_meta(id)?;
        meta.name = validate_name(name)?;
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| IdentityError::Invalid(e.to_string()))?;
        let path = self.dir(id)?.join(MANIFEST_FILE);
        write_atomic(&path, &json).map_err(io_err(&path))
    }

    /// Deletes an identity (first moved aside, so a crash cannot leave half of it listed).
    pub fn remove(&self, id: &str) -> Result<(), IdentityError> {
        let dir = self.dir(id)?;
        if !dir.is_dir() {
            return Err(IdentityError::NotFound(id.to_owned()));
        }
        let aside = self.root.join(format!("{STAGING_PREFIX}removed-{id}.{}", std::process::id()));
        std::fs::rename(&dir, &aside).map_err(io_err(&dir))?;
        std::fs::remove_dir_all(&aside).map_err(io_err(&aside))
    }

    /// Writes identity `id` as a single archive file (zip of its files), atomically.
    pub fn export(&self, id: &str, file: &Path) -> Result<(), IdentityError> {
        let meta = self.verified_meta(id)?;
        let dir = self.dir(id)?;
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(true);
            for name in std::iter::once(MANIFEST_FILE).chain(meta.files.keys().map(String::as_str)) {
                let bytes = std::fs::read(dir.join(name)).map_err(io_err(&dir.join(name)))?;
                let archive_err =
                    |e: zip::result::ZipError| IdentityError::Archive { path: file.into(), reason: e.to_string() };
                zip.start_file(name, opts).map_err(archive_err)?;
                zip.write_all(&bytes).map_err(io_err(file))?;
            }
            zip.finish().map_err(|e| IdentityError::Archive { path: file.into(), reason: e.to_string() })?;
        }
        write_atomic(file, buf.get_ref()).map_err(io_err(file))
    }

    /// Adds the identity in an archive made by `export`; verifies it fully first. Returns the new id.
    pub fn import(&self, file: &Path) -> Result<String, IdentityError> {
        let bad = |reason: String| IdentityError::Archive { path: file.into(), reason };
        let f = std::fs::File::open(file).map_err(io_err(file))?;
        let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(e.to_string()))?;
        let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
            let name = entry.name().map_err(|e| bad(e.to_string()))?.into_owned();
            if name != MANIFEST_FILE && !DATA_FILES.contains(&name.as_str()) {
                return Err(bad(format!("unexpected entry `{name}`")));
            }
            if entry.size() > MAX_IMPORT_FILE_BYTES {
                return Err(bad(format!("entry `{name}` is too large")));
            }
            let mut bytes = Vec::new();
            entry.by_ref().take(MAX_IMPORT_FILE_BYTES).read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
            contents.insert(name, bytes);
        }
        let manifest = contents.get(MANIFEST_FILE).ok_or_else(|| bad(format!("no {MANIFEST_FILE}")))?;
        let meta: IdentityMeta = serde_json::from_slice(manifest).map_err(|e| bad(format!("{MANIFEST_FILE}: {e}")))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(bad(format!("format version {}", meta.format_version)));
        }
        for file_name in DATA_FILES {
            let bytes = contents.get(file_name).ok_or_else(|| bad(format!("no {file_name}")))?;
            if meta.files.get(file_name) != Some(&sha256_hex(bytes)) {
                return Err(bad(format!("{file_name} fails its checksum")));
            }
        }
        let name = validate_name(&meta.name)?;
        let id = self.fresh_id(&name);
        let staging = self.staging_dir(&id);
        std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        let result = (|| {
            for file_name in DATA_FILES {
                write_synced(&staging.join(file_name), &contents[file_name])?;
            }
            let meta = IdentityMeta { id: id.clone(), name, ..meta };
            let json = serde_json::to_vec_pretty(&meta).map_err(|e| IdentityError::Invalid(e.to_string()))?;
            write_synced(&staging.join(MANIFEST_FILE), &json)?;
            let target = self.root.join(&id);
            std::fs::rename(&staging, &target).map_err(io_err(&target))
        })();
        if let Err(e) = result {
            std::fs::remove_dir_all(&staging).ok();
            return Err(e);
        }
        // Decode once so an archive with valid hashes but unreadable contents is not kept.
        if let Err(e) = self.load(&id) {
            self.remove(&id).ok();
            return Err(bad(e.to_string()));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("mp-store-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample(name: &str) -> NewIdentity {
        let mut delta = WeightStore::new();
        delta.insert("SPDAE_G.conv_img.bias", HostTensor::filled(&[3], 0.25));
        NewIdentity {
            name: name.into(),
            portrait: RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 7])),
            landmarks: HostTensor::new(vec![3, 3], (0..9).map(|v| v as f32).collect()).unwrap(),
            id_vector: Some(vec![0.6, 0.8]),
            weights_delta: delta,
            base_model_sha256: Some("ab".repeat(32)),
            personalization: None,
            embedder: Some("arcface-0011223344556677".into()),
        }
    }

    #[test]
    fn add_load_rename_replace_remove_round_trip() {
        let root = tempdir("roundtrip");
        let store = IdentityStore::open(&root).unwrap();
        let id = store.add(&sample("Ada Lovelace")).unwrap();
        assert_eq!(id, "ada-lovelace");
        assert_eq!(store.add(&sample("Ada Lovelace")).unwrap(), "ada-lovelace-2");
        let loaded = store.load(&id).unwrap();
        assert_eq!(loaded.meta.name, "Ada Lovelace");
        assert_eq!(loaded.meta.embedder.as_deref(), Some("arcface-0011223344556677"));
        assert_eq!(loaded.portrait, sample("x").portrait);
        assert_eq!(loaded.id_vector, Some(vec![0.6, 0.8]));
        assert_eq!(loaded.weights_delta.get("SPDAE_G.conv_img.bias").unwrap().data(), &[0.25; 3]);
        store.rename(&id, "Countess").unwrap();
        assert_eq!(store.load(&id).unwrap().meta.name, "Countess");
        let mut new = sample("Countess");
        new.id_vector = Some(vec![1.0, 0.0]);
        store.replace(&id, &new).unwrap();
        assert_eq!(store.load(&id).unwrap().id_vector, Some(vec![1.0, 0.0]));
        store.remove(&id).unwrap();
        assert!(matches!(store.load(&id), Err(IdentityError::NotFound(_))));
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.rename("../etc", "x").is_err());
        assert!(store.add(&sample("  ")).is_err());
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn corrupt_identities_are_listed_as_such_and_never_loaded() {
        let root = tempdir("corrupt");
        let store = IdentityStore::open(&root).unwrap();
        let good = store.add(&sample("good")).unwrap();
        let flipped = store.add(&sample("flipped")).unwrap();
        let torn = store.add(&sample("torn")).unwrap();
        let path = root.join(&flipped).join(TENSORS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        std::fs::remove_file(root.join(&torn).join(MANIFEST_FILE)).unwrap();
        let list = store.list().unwrap();
        let status: Vec<(&str, bool)> = list.iter().map(|e| (e.id.as_str(), e.meta.is_ok())).collect();
        assert_eq!(status, vec![("flipped", false), ("good", true), ("torn", false)]);
        assert!(matches!(store.load(&flipped), Err(IdentityError::Corrupt { .. })));
        assert!(store.load(&good).is_ok());
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn interrupted_writes_are_cleaned_and_replacements_recovered() {
        let root = tempdir("recover");
        let store = IdentityStore::open(&root).unwrap();
        let id = store.add(&sample("kept")).unwrap();
        // A crash mid-stage, and a crash after moving the old identity aside but before the new one arrived.
        std::fs::create_dir_all(root.join(format!("{STAGING_PREFIX}half.1.2"))).unwrap();
        std::fs::rename(root.join(&id), root.join(format!("{TRASH_PREFIX}{id}.99"))).unwrap();
        let store = IdentityStore::open(&root).unwrap();
        let names: Vec<String> =
            std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec![id.clone()]);
        assert!(store.load(&id).is_ok());
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn export_import_round_trip_and_bad_archives() {
        let root = tempdir("export");
        let store = IdentityStore::open(&root.join("lib")).unwrap();
        let id = store.add(&sample("Grace")).unwrap();
        let archive = root.join("grace.mpid");
        store.export(&id, &archive).unwrap();
        let other = IdentityStore::open(&root.join("other")).unwrap();
        let imported = other.import(&archive).unwrap();
        let (a, b) = (store.load(&id).unwrap(), other.load(&imported).unwrap());
        assert_eq!((a.portrait, a.id_vector, a.meta.files), (b.portrait, b.id_vector, b.meta.files));
        // Truncated and tampered archives are refused and leave nothing behind.
        let bytes = std::fs::read(&archive).unwrap();
        std::fs::write(root.join("cut.mpid"), &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(other.import(&root.join("cut.mpid")), Err(IdentityError::Archive { .. })));
        let mut tampered = bytes.clone();
        let pos = tampered.windows(4).position(|w| w == b"IDAT").unwrap() + 8;
        tampered[pos] ^= 0xff;
        std::fs::write(root.join("bad.mpid"), &tampered).unwrap();
        let err = other.import(&root.join("bad.mpid")).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        assert_eq!(other.list().unwrap().len(), 1);
        std::fs::remove_dir_all(&root).ok();
    }
}
