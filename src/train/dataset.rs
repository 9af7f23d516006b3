//! The training dataset on disk: folders of identities → clips → face crops with cached landmarks.
//!
//! Owns the layout and its preparation. `prepare_clip_dir` turns one video (or image folder) into a clip folder —
//! up to `max_frames` 256² crops (official policy, fixed per clip), `clip.json` with every frame's landmarks, the
//! neutral source frame and its identity embedding — written to a staging folder and renamed into place, so a clip
//! is either complete or absent. `Dataset::open` lists identities and clips; `Dataset::task` builds the training
//! samples of one clip (the source frame posed as the others).
//!
//! ```text
//! DATA/<identity>/<clip>/frame_000000.png …
//! DATA/<identity>/<clip>/clip.json   {"format": 1, "source": k, "id_vector": [128], "frames": [{"file", "index", "landmarks"}]}
//! ```

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::clip::frames::{ClipFrames, CropFrame};

/// Manifest of a prepared clip; a clip folder without it is not (yet) part of the dataset.
pub const CLIP_FILE: &str = "clip.json";

/// File name of the clip's `k`-th frame.
pub fn frame_file(k: usize) -> String {
    format!("frame_{k:06}.png")
}
const FORMAT: u32 = 1;
const STAGING_PREFIX: &str = ".staging-";

/// Why a clip could not be written or the dataset read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file or folder could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's contents are unusable: a manifest of another format or with the source out of range, an
    /// undecodable frame, or a frame that could not be encoded.
    #[error("{path}: {reason}")]
    Invalid {
        /// The offending file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No identity folder holds a prepared clip.
    #[error("the dataset at {0} has no prepared clips (run `metaportrait prepare`)")]
    Empty(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io { path: path.to_path_buf(), source }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FrameEntry {
    file: String,
    index: u64,
    landmarks: Vec<[f32; 3]>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ClipManifest {
    format: u32,
    source: usize,
    id_vector: Vec<f32>,
    frames: Vec<FrameEntry>,
}

/// Writes a prepared clip into `dir` (created atomically; an existing clip is left alone and reported as such).
/// Returns false when the clip already existed.
pub fn write_clip(dir: &Path, clip: &ClipFrames, id_vector: &[f32]) -> Result<bool, DatasetError> {
    if dir.join(CLIP_FILE).is_file() {
        return Ok(false);
    }
    let parent = dir.parent().ok_or_else(|| DatasetError::Invalid { path: dir.into(), reason: "no parent".into() })?;
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = parent.join(format!("{STAGING_PREFIX}{name}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let result = (|| {
        let mut frames = Vec::with_capacity(clip.frames.len());
        for (k, frame) in clip.frames.iter().enumerate() {
            let file = frame_file(k);
            let path = staging.join(&file);
            frame.crop.save(&path).map_err(|e| DatasetError::Invalid { path: path.clone(), reason: e.to_string() })?;
            frames.push(FrameEntry { file, index: frame.index, landmarks: frame.landmarks.clone() });
        }
        let manifest = ClipManifest { format: FORMAT, source: clip.source, id_vector: id_vector.to_vec(), frames };
        let text = serde_json::to_string(&manifest)
            .map_err(|e| DatasetError::Invalid { path: staging.clone(), reason: e.to_string() })?;
        let path = staging.join(CLIP_FILE);
        crate::atomic_file::write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
        std::fs::rename(&staging, dir).map_err(io(dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| true)
}

/// One prepared clip.
#[derive(Clone, Debug)]
pub struct ClipRef {
    /// Name of the identity folder it belongs to.
    pub identity: String,
    /// The clip's folder (holds `clip.json` and the frames).
    pub dir: PathBuf,
}

/// A prepared dataset: its clips grouped by identity.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The dataset's folder (`DATA`).
    pub root: PathBuf,
    /// Identities (sorted) and their clips (sorted).
    pub identities: Vec<(String, Vec<ClipRef>)>,
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    out.sort();
    Ok(out)
}

impl Dataset {
    /// Lists the prepared clips under `root` (hidden folders and unfinished clips skipped); none is `Empty`.
    pub fn open(root: &Path) -> Result<Self, DatasetError> {
        let mut identities = Vec::new();
        for id_dir in sorted_dirs(root)? {
            let identity = id_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let clips: Vec<ClipRef> = sorted_dirs(&id_dir)?
                .into_iter()
                .filter(|d| d.join(CLIP_FILE).is_file())
                .map(|dir| ClipRef { identity: identity.clone(), dir })
                .collect();
            if !clips.is_empty() {
                identities.push((identity, clips));
            }
        }
        if identities.is_empty() {
            return Err(DatasetError::Empty(root.to_path_buf()));
        }
        Ok(Self { root: root.to_path_buf(), identities })
    }

    /// A random identity, then a random clip of it (two draws from `rng`): every stage samples the dataset so.
    pub fn pick_clip(&self, rng: &mut crate::rng::SplitMix64) -> &ClipRef {
        let (_, clips) = &self.identities[(rng.next_u64() % self.identities.len() as u64) as usize];
        &clips[(rng.next_u64() % clips.len() as u64) as usize]
    }

    /// Loads a clip back as `ClipFrames` (with its held-out set empty) and its identity vector.
    pub fn load_clip(clip: &ClipRef) -> Result<(ClipFrames, Vec<f32>), DatasetError> {
        let path = clip.dir.join(CLIP_FILE);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let manifest: ClipManifest = serde_json::from_str(&text)
            .map_err(|e| DatasetError::Invalid { path: path.clone(), reason: e.to_string() })?;
        if manifest.format != FORMAT || manifest.source >= manifest.frames.len() {
            return Err(DatasetError::Invalid { path, reason: "unknown format or source index out of range".into() });
        }
        let mut frames = Vec::with_capacity(manifest.frames.len());
        for entry in &manifest.frames {
            let file = clip.dir.join(&entry.file);
            let crop: RgbImage = image::open(&file)
                .map_err(|e| DatasetError::Invalid { path: file.clone(), reason: e.to_string() })?
                .to_rgb8();
            frames.push(CropFrame { crop, landmarks: entry.landmarks.clone(), index: entry.index });
        }
        let source = manifest.source;
        let source_picture = frames[source].crop.clone();
        let source_picture_landmarks = frames[source].landmarks.clone();
        let clip_frames = ClipFrames {
            frames,
            source,
            holdout: Vec::new(),
            source_picture,
            source_picture_landmarks,
            frames_read: manifest.frames.len(),
            frames_without_face: 0,
        };
        Ok((clip_frames, manifest.id_vector))
    }
}
