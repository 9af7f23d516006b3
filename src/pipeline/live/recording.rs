//! Recording from the live app: the recorder slot shared by the upscale stage (which hands it every shown frame) and
//! the control thread (which starts and stops it), and the recordings' file names.
//!
//! Owns the active recording (recorder, path, start instant, timestamps) behind a mutex that the upscale stage holds
//! only to queue a frame, never to wait on the encoder. Receives shown frames and start/stop requests; emits files in
//! `$METAPORTRAIT_HOME/recordings/` and what to tell the user.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::RgbImage;

use super::metrics::lock;
use crate::capture::Frame;
use crate::pipeline::messages::RecordingStatus;
use crate::record::{PushOutcome, RecordError, Recorder, RecorderConfig, RecorderState, RecordingSummary};

/// A recording in progress.
struct ActiveRecording {
    recorder: Recorder,
    path: PathBuf,
    started: Instant,
    last_timestamp_us: i64,
    next_index: u64,
}

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordingStartError {
    /// The recordings folder is not usable.
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    /// The recorder could not open its file.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The recording in progress, if any, shared by the upscale stage and the control thread.
#[derive(Clone, Default)]
pub(super) struct RecordingSlot(Arc<Mutex<Option<ActiveRecording>>>);

impl RecordingSlot {
    /// Hands the frame to the recorder without waiting (a lagging encoder drops and counts it).
    pub(super) fn record(&self, picture: &RgbImage, captured: Instant) {
        let mut slot = lock(&self.0);
        let Some(active) = slot.as_mut() else { return };
        let since_start = captured.saturating_duration_since(active.started).as_micros() as i64;
        let timestamp_us = since_start.max(active.last_timestamp_us + 1);
        let frame = Frame { pixels: picture.clone(), timestamp_us, index: active.next_index };
        if active.recorder.push(frame) == PushOutcome::Queued {
            active.last_timestamp_us = timestamp_us;
            active.next_index += 1;
        }
    }

    /// Starts recording into a new file under `home`'s recordings folder; `None` when one is already running.
    pub(super) fn start(&self, home: &Path, config: RecorderConfig) -> Result<Option<PathBuf>, RecordingStartError> {
        if lock(&self.0).is_some() {
            return Ok(None);
        }
        let dir = crate::home::recordings_dir(home)?;
        let path = unique_recording_path(&dir, std::time::SystemTime::now());
        let recorder = Recorder::start(&path, config)?;
        *lock(&self.0) = Some(ActiveRecording {
            recorder,
            path: path.clone(),
            started: Instant::now(),
            last_timestamp_us: -1,
            next_index: 0,
        });
        Ok(Some(path))
    }

    /// Finishes the recording (outside the slot's lock, so the upscale stage never waits on the encoder): its path
    /// and how it ended; `None` when none was running.
    pub(super) fn stop(&self) -> Option<(PathBuf, Result<RecordingSummary, RecordError>)> {
        let active = lock(&self.0).take()?;
        Some((active.path, active.recorder.stop()))
    }

    /// The reason the running recorder failed (disk full, write error), if it did.
    pub(super) fn failure(&self) -> Option<String> {
        match lock(&self.0).as_ref().map(|a| a.recorder.state()) {
            Some(RecorderState::Failed(reason)) => Some(reason),
            _ => None,
        }
    }

    /// What the panel shows of the running recording.
    pub(super) fn status(&self) -> Option<RecordingStatus> {
        lock(&self.0).as_ref().map(|a| RecordingStatus {
            file_name: a.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            elapsed_s: a.started.elapsed().as_secs_f64(),
        })
    }
}

/// `recording-YYYYMMDD-HHMMSS.mp4` (UTC) in `dir`, with a counter when that name is taken.
pub fn unique_recording_path(dir: &Path, now: std::time::SystemTime) -> PathBuf {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stamp = utc_stamp(secs);
    let mut path = dir.join(format!("recording-{stamp}.mp4"));
    let mut n = 2;
    while path.exists() || crate::record::partial_path_for(&path).exists() {
        path = dir.join(format!("recording-{stamp}-{n}.mp4"));
        n += 1;
    }
    path
}

/// `YYYYMMDD-HHMMSS` of a UNIX time, UTC (civil-from-days, proleptic Gregorian).
fn utc_stamp(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs_of_day = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        secs_of_day / 3_600,
        secs_of_day % 3_600 / 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn utc_stamps_match_known_dates() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_796_053_599), "20261130-154639");
    }

    #[test]
    fn recording_names_never_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_796_053_599);
        let first = unique_recording_path(dir.path(), now);
        assert_eq!(first.file_name().and_then(|n| n.to_str()), Some("recording-20261130-154639.mp4"));
        std::fs::write(&first, b"x").expect("write");
        let second = unique_recording_path(dir.path(), now);
        assert_eq!(second.file_name().and_then(|n| n.to_str()), Some("recording-20261130-154639-2.mp4"));
    }
}
