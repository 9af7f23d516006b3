//! The official inference layout (the release's README and `base_model/dataset.py`): what is where, checked before
//! any frame is generated.
//!
//! Owns discovery and validation. `DIR/<n>/imgs/<frame>.<ext>` are the driving (and ground-truth) frames,
//! `DIR/<n>/ldmks/<frame stem>_ldmk.npy` their 669 landmarks in [0, 1], `DIR/src_map_dict.pkl` maps each frame's
//! file name to its source index `k`, and `DIR/src_<k>.png`, `src_<k>_ldmk.npy`, `src_<k>_id.npy` are that source's
//! picture, landmarks and identity vector. `thetas/` is not read: the official loader loads it, but no input of the
//! generator depends on it. Frames are taken in the official order (full paths sorted as strings), and — as the
//! official glob `[!src_]*` does — names starting with `s`, `r`, `c` or `_` are skipped. Landmarks are paired with
//! their frame by name (the official loader pairs two sorted lists by position, which agrees on well-formed data
//! and silently mispairs otherwise). Receives a folder; emits an `OfficialData` listing or the first problem, naming
//! its file. The pickle is read by the safe reader (`model::import::plain`): nothing in it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ReconstructError;
use crate::face::npy;
use crate::face::topology::OFFICIAL_POINTS;
use crate::model::import::plain::{PlainValue, read_plain_dict};

/// The map from frame file names to source indices.
pub const MAP_DICT_FILE: &str = "src_map_dict.pkl";
/// Extensions the official loader takes as pictures (`IMAGE_EXTENSIONS`).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"];
/// First characters the official glob `[!src_]*` excludes (a character class, not a prefix).
const GLOB_EXCLUDED_FIRST: [char; 4] = ['s', 'r', 'c', '_'];

/// One driving frame: its picture (also the ground truth), landmarks, and source.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameEntry {
    /// File name, e.g. `00000000.png` (the key in the map dict and the name of the output picture).
    pub name: String,
    /// `<n>/imgs/<frame>`.
    pub image: PathBuf,
    /// `<n>/ldmks/<stem>_ldmk.npy`.
    pub landmarks: PathBuf,
    /// Source index `k` (`src_<k>.png`).
    pub source: String,
}

/// One source portrait with its landmarks and identity vector.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceEntry {
    /// `src_<k>.png`.
    pub image: PathBuf,
    /// `src_<k>_ldmk.npy`.
    pub landmarks: PathBuf,
    /// `src_<k>_id.npy`.
    pub id_vector: PathBuf,
}

/// A data folder in the official inference layout.
#[derive(Clone, Debug)]
pub struct OfficialData {
    /// The data folder.
    pub root: PathBuf,
    /// In the official order.
    pub frames: Vec<FrameEntry>,
    /// By source index.
    pub sources: BTreeMap<String, SourceEntry>,
    /// Frames the official glob skips (names starting with s, r, c or _), reported, not used.
    pub skipped: Vec<PathBuf>,
}

fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, ReconstructError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(ReconstructError::io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(ReconstructError::io(dir)))
        .collect::<Result<_, _>>()?;
    // Python sorts the full paths as strings; within one folder that is the byte order of the names.
    out.sort_by(|a, b| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
    Ok(out)
}

fn require(path: PathBuf, what: &'static str) -> Result<PathBuf, ReconstructError> {
    if path.is_file() { Ok(path) } else { Err(ReconstructError::Missing { path, what }) }
}

fn read_map(path: &Path) -> Result<BTreeMap<String, String>, ReconstructError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ReconstructError::Missing { path: path.into(), what: "the frame → source map" }
        }
        _ => ReconstructError::Io { path: path.into(), source: e },
    })?;
    let entries =
        read_plain_dict(&bytes).map_err(|e| ReconstructError::BadFile { path: path.into(), reason: e.to_string() })?;
    Ok(entries
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                PlainValue::Int(i) => i.to_string(),
                PlainValue::Str(s) => s,
            };
            (k, v)
        })
        .collect())
}

impl OfficialData {
    /// Lists the frames and sources of `root`, checking that every file they need exists.
    pub fn open(root: &Path) -> Result<Self, ReconstructError> {
        if !root.is_dir() {
            return Err(ReconstructError::Missing { path: root.into(), what: "the data folder" });
        }
        let map = read_map(&root.join(MAP_DICT_FILE))?;
        let mut frames = Vec::new();
        let mut skipped = Vec::new();
        for sub in read_dir_sorted(root)? {
            let imgs = sub.join("imgs");
            if !imgs.is_dir() {
                continue;
            }
            for image in read_dir_sorted(&imgs)? {
                if !image.is_file() || !is_picture(&image) {
                    continue;
                }
                let Some(name) = image.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                    return Err(ReconstructError::BadFile { path: image, reason: "the file name is not UTF-8".into() });
                };
                if name.starts_with(GLOB_EXCLUDED_FIRST) {
                    skipped.push(image);
                    continue;
                }
                let stem = Path::new(&name).file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
                let landmarks = require(sub.join("ldmks").join(format!("{stem}_ldmk.npy")), "the frame's landmarks")?;
                let Some(source) = map.get(&name).cloned() else {
                    return Err(ReconstructError::BadFile {
                        path: root.join(MAP_DICT_FILE),
                        reason: format!("no source for frame `{name}` ({})", image.display()),
                    });
                };
                frames.push(FrameEntry { name, image, landmarks, source });
            }
        }
        if frames.is_empty() {
            return Err(ReconstructError::NoFrames { path: root.into() });
        }
        let mut names = std::collections::HashSet::new();
        for f in &frames {
            if !names.insert(f.name.as_str()) {
                return Err(ReconstructError::BadFile {
                    path: f.image.clone(),
                    reason: format!(
                        "another folder has a frame named `{}`; the map dict cannot tell them apart",
                        f.name
                    ),
                });
            }
        }
        let mut sources = BTreeMap::new();
        for f in &frames {
            if sources.contains_key(&f.source) {
                continue;
            }
            let k = &f.source;
            let entry = SourceEntry {
                image: require(root.join(format!("src_{k}.png")), "the source picture")?,
                landmarks: require(root.join(format!("src_{k}_ldmk.npy")), "the source landmarks")?,
                id_vector: require(root.join(format!("src_{k}_id.npy")), "the source identity vector")?,
            };
            sources.insert(k.clone(), entry);
        }
        Ok(Self { root: root.into(), frames, sources, skipped })
    }

    /// Reads every landmark and identity file once, so a bad one stops the run before anything is generated.
    pub fn validate(&self, id_dim: usize) -> Result<(), ReconstructError> {
        for s in self.sources.values() {
            read_landmarks(&s.landmarks)?;
            read_id_vector(&s.id_vector, id_dim)?;
        }
        for f in &self.frames {
            read_landmarks(&f.landmarks)?;
        }
        Ok(())
    }
}

/// 669 landmarks in [0, 1] (x, y) from a `_ldmk.npy` file.
pub fn read_landmarks(path: &Path) -> Result<Vec<[f32; 2]>, ReconstructError> {
    let points = npy::read_points(path).map_err(|e| match e {
        npy::NpyError::Io { source, .. } => ReconstructError::Io { path: path.into(), source },
        other => ReconstructError::BadFile { path: path.into(), reason: other.to_string() },
    })?;
    if points.len() != OFFICIAL_POINTS {
        return Err(ReconstructError::LandmarkCount {
            path: path.into(),
            expected: OFFICIAL_POINTS,
            actual: points.len(),
        });
    }
    if points.iter().flatten().any(|v| !v.is_finite()) {
        return Err(ReconstructError::BadFile { path: path.into(), reason: "a landmark is not finite".into() });
    }
    Ok(points)
}

/// An identity vector of `id_dim` values, as stored (the official loader squeezes it and does not normalise it).
pub fn read_id_vector(path: &Path, id_dim: usize) -> Result<Vec<f32>, ReconstructError> {
    let vector = npy::read_vector(path).map_err(|e| match e {
        npy::NpyError::Io { source, .. } => ReconstructError::Io { path: path.into(), source },
        other => ReconstructError::BadFile { path: path.into(), reason: other.to_string() },
    })?;
    if vector.len() != id_dim {
        return Err(ReconstructError::IdDim { path: path.into(), expected: id_dim, actual: vector.len() });
    }
    Ok(vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_dict_is_read_safely_with_int_or_str_values() {
        let dir = std::env::temp_dir().join(format!("mp-layout-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(MAP_DICT_FILE);
        // pickle.dumps({'a': 0, 'b': '1'}, protocol=2)
        std::fs::write(&path, b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x00X\x01\x00\x00\x00bX\x01\x00\x00\x001u.").unwrap();
        let map = read_map(&path).unwrap();
        assert_eq!(map.get("a").map(String::as_str), Some("0"));
        assert_eq!(map.get("b").map(String::as_str), Some("1"));
        // {'a': 1.5}: a float is not a source index.
        std::fs::write(&path, b"\x80\x02}q\x00X\x01\x00\x00\x00aG?\xf8\x00\x00\x00\x00\x00\x00s.").unwrap();
        let err = read_map(&path).unwrap_err().to_string();
        assert!(err.contains(MAP_DICT_FILE) && err.contains("`a`"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
