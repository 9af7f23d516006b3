//! Where the app keeps user data: the identity library, settings and recordings.
//!
//! Owns the resolution of the data directory — `METAPORTRAIT_HOME` when set, otherwise the platform data dir
//! (`~/.local/share/metaportrait` on Linux) — and the layout under it. Receives nothing but the environment; emits
//! paths, creating directories on demand.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the data directory (tests, portable installs).
pub const HOME_ENV: &str = "METAPORTRAIT_HOME";
const APP_NAME: &str = "metaportrait";
const IDENTITIES_DIR: &str = "identities";
const SETTINGS_FILE: &str = "settings.json";
const RECORDINGS_DIR: &str = "recordings";

/// Why the data directory or a directory under it is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// Neither `METAPORTRAIT_HOME` nor a home directory is set, so there is nowhere to keep user data.
    #[error("no data directory: set {HOME_ENV} or HOME")]
    NoDataDir,
    /// A directory under the data home could not be created (permissions, read-only or full disk).
    #[error("cannot create {path}: {source}")]
    Create {
        /// The directory that was being created.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// The user's data directory (not created).
pub fn data_home() -> Result<PathBuf, HomeError> {
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", APP_NAME).map(|d| d.data_dir().to_path_buf()).ok_or(HomeError::NoDataDir)
}

fn ensure(path: PathBuf) -> Result<PathBuf, HomeError> {
    std::fs::create_dir_all(&path).map_err(|source| HomeError::Create { path: path.clone(), source })?;
    Ok(path)
}

/// `<home>/identities`, created if missing.
pub fn identities_dir(home: &Path) -> Result<PathBuf, HomeError> {
    ensure(home.join(IDENTITIES_DIR))
}

/// `<home>/recordings`, created if missing.
pub fn recordings_dir(home: &Path) -> Result<PathBuf, HomeError> {
    ensure(home.join(RECORDINGS_DIR))
}

/// `<home>/settings.json` (not created).
pub fn settings_path(home: &Path) -> PathBuf {
    home.join(SETTINGS_FILE)
}
