//! Minimal ISO-BMFF (MP4) demuxer for one H.264 video track.
//!
//! It owns the parsing of the box structure (ISO/IEC 14496-12): classic files with a sample table
//! (`stbl`) and fragmented files (`moov`+`mvex`, then `moof`/`mdat` pairs), including files that
//! end in the middle of a box, as a recording killed mid-write does. It receives a file path and
//! emits a [`VideoTrack`]: the decoder configuration (`avcC`) and the list of samples in decode
//! order with their byte ranges and timestamps. Reading sample bytes is left to the caller.
//!
//! The parser never trusts sizes in the file: every read is bounds-checked, and allocations are
//! capped by [`MAX_METADATA_BOX_BYTES`] and [`MAX_SAMPLES`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::CaptureError;

mod boxes;
mod moof;
mod moov;

use boxes::ParseError;
use moof::{TrackFragment, parse_moof};
use moov::{Moov, parse_moov};

/// Largest `moov`/`moof` box we load into memory.
pub const MAX_METADATA_BOX_BYTES: u64 = 256 * 1024 * 1024;
/// Largest number of samples we accept in one track (about 90 hours at 30 fps).
pub const MAX_SAMPLES: usize = 10_000_000;
const BOX_HEADER_BYTES: u64 = 8;
const LARGE_BOX_HEADER_BYTES: u64 = 16;
/// Top-level box types that can start an ISO-BMFF file; anything else is "not an MP4".
const KNOWN_TOP_LEVEL_BOXES: [&[u8; 4]; 9] =
    [b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"uuid"];

// Track fragment header (tfhd) flags.
const TFHD_BASE_DATA_OFFSET: u32 = 0x00_0001;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x00_0002;
const TFHD_DEFAULT_DURATION: u32 = 0x00_0008;
const TFHD_DEFAULT_SIZE: u32 = 0x00_0010;
const TFHD_DEFAULT_FLAGS: u32 = 0x00_0020;
// Track run (trun) flags.
const TRUN_DATA_OFFSET: u32 = 0x00_0001;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x00_0004;
const TRUN_DURATION: u32 = 0x00_0100;
const TRUN_SIZE: u32 = 0x00_0200;
const TRUN_FLAGS: u32 = 0x00_0400;
const TRUN_COMPOSITION_OFFSET: u32 = 0x00_0800;
/// `sample_is_non_sync_sample` bit of the sample flags.
const SAMPLE_FLAG_NON_SYNC: u32 = 0x0001_0000;

/// One compressed sample (an access unit) of the video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef {
    /// Byte offset of the sample in the file.
    pub offset: u64,
    /// Size of the sample in bytes.
    pub size_bytes: u32,
    /// Decode time in track timescale ticks.
    pub decode_time_ticks: i64,
    /// Presentation minus decode time in ticks (B-frames make this non-zero).
    pub composition_offset_ticks: i64,
    /// Whether the sample is a random access point (keyframe).
    pub is_sync: bool,
}

/// H.264 decoder configuration from the `avcC` box.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvcConfig {
    /// H.264 profile (66 Baseline, 77 Main, 100 High, ...).
    pub profile_idc: u8,
    /// H.264 level times ten (31 means level 3.1).
    pub level_idc: u8,
    /// Bytes used by each NAL length prefix inside samples (1, 2 or 4).
    pub nal_length_size: u8,
    /// Sequence parameter set NAL units, without start codes or length prefixes.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter set NAL units, without start codes or length prefixes.
    pub pps: Vec<Vec<u8>>,
}

/// The video track of an MP4 file, ready for decoding.
#[derive(Debug, Clone)]
pub struct VideoTrack {
    /// The track's ID from its `tkhd` box; fragments refer to it.
    pub track_id: u32,
    /// Ticks per second of the track's timestamps.
    pub timescale: u32,
    /// Picture width in pixels, from the sample entry.
    pub width: u32,
    /// Picture height in pixels, from the sample entry.
    pub height: u32,
    /// Decoder configuration needed before the first sample.
    pub avc: AvcConfig,
    /// Samples in decode order.
    pub samples: Vec<SampleRef>,
    /// Presentation time (ticks) that maps to time zero, from the edit list.
    pub presentation_start_ticks: i64,
    /// Duration in ticks of the whole track (sum of sample durations).
    pub duration_ticks: i64,
    /// The file ended inside a box or a sample: the samples listed are the complete ones.
    pub truncated: bool,
    /// Whether the file uses movie fragments (`moof`).
    pub fragmented: bool,
}

impl VideoTrack {
    /// Presentation time of a sample in microseconds from the track start.
    pub fn presentation_time_us(&self, sample: &SampleRef) -> i64 {
        let ticks = sample
            .decode_time_ticks
            .saturating_add(sample.composition_offset_ticks)
            .saturating_sub(self.presentation_start_ticks);
        ticks_to_us(ticks, self.timescale)
    }
}

/// Converts track ticks to microseconds, rounding to nearest.
pub fn ticks_to_us(ticks: i64, timescale: u32) -> i64 {
    let scale = i128::from(timescale.max(1));
    let us = (i128::from(ticks) * i128::from(super::MICROS_PER_SECOND) + scale / 2).div_euclid(scale);
    i64::try_from(us).unwrap_or(i64::MAX)
}

/// A top-level box as found while scanning a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopLevelBox {
    /// The four-character box type, such as `moov`.
    pub kind: [u8; 4],
    /// Byte offset of the box header in the file.
    pub offset: u64,
    /// Declared size including the header.
    pub size_bytes: u64,
    /// Header length: 8, or 16 for a box with a 64-bit size.
    pub header_bytes: u64,
    /// The declared size runs past the end of the file.
    pub truncated: bool,
}

/// Lists the top-level boxes of a file; stops at the first box that runs past the end or is malformed.
pub fn scan_top_level_boxes(file: &mut File, file_len: u64) -> std::io::Result<Vec<TopLevelBox>> {
    let mut boxes = Vec::new();
    let mut pos = 0u64;
    while pos + BOX_HEADER_BYTES <= file_len {
        file.seek(SeekFrom::Start(pos))?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8])?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        let (size_bytes, header_bytes) = match size32 {
            0 => (file_len - pos, BOX_HEADER_BYTES),
            1 => {
                if pos + LARGE_BOX_HEADER_BYTES > file_len {
                    boxes.push(TopLevelBox {
                        kind,
                        offset: pos,
                        size_bytes: u64::MAX,
                        header_bytes: 16,
                        truncated: true,
                    });
                    break;
                }
                file.read_exact(&mut header[8..16])?;
                let mut large = [0u8; 8];
                large.copy_from_slice(&header[8..16]);
                (u64::from_be_bytes(large), LARGE_BOX_HEADER_BYTES)
            }
            n => (u64::from(n), BOX_HEADER_BYTES),
        };
        if size_bytes < header_bytes {
            // A size smaller than its own header: garbage from here on.
            break;
        }
        let end = pos.saturating_add(size_bytes);
        let truncated = end > file_len;
        boxes.push(TopLevelBox { kind, offset: pos, size_bytes, header_bytes, truncated });
        if truncated {
            break;
        }
        pos = end;
    }
    Ok(boxes)
}

/// Opens `path` and extracts its first H.264 video track.
pub fn read_video_track(path: &Path) -> Result<VideoTrack, CaptureError> {
    let io_err = |source| CaptureError::Io { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let not_mp4 = |reason: &str| CaptureError::NotMp4 { path: path.to_path_buf(), reason: reason.to_string() };
    if file_len < BOX_HEADER_BYTES {
        return Err(not_mp4(if file_len == 0 { "the file is empty" } else { "the file is too short" }));
    }
    let boxes = scan_top_level_boxes(&mut file, file_len).map_err(io_err)?;
    let Some(first) = boxes.first() else {
        return Err(not_mp4("no ISO-BMFF box structure found"));
    };
    if !KNOWN_TOP_LEVEL_BOXES.iter().any(|k| **k == first.kind) {
        return Err(not_mp4("no ISO-BMFF box structure found"));
    }

    let mut parser = FileParser { path: path.to_path_buf(), truncated: false, moov: None, fragments: Vec::new() };
    for top in &boxes {
        if top.truncated {
            parser.truncated = true;
            if &top.kind == b"moov" {
                return Err(CaptureError::Truncated { path: path.to_path_buf(), decoded_frames: 0 });
            }
            continue;
        }
        match &top.kind {
            b"moov" => {
                let body = read_box_body(&mut file, top, path)?;
                parser.moov = Some(parse_moov(&body).map_err(|e| parser.corrupt(e))?);
            }
            b"moof" => {
                let body = read_box_body(&mut file, top, path)?;
                match parse_moof(&body, top.offset) {
                    Ok(trafs) => parser.fragments.extend(trafs),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), offset = top.offset, "ignoring damaged moof: {}", e.0);
                        parser.truncated = true;
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    parser.finish(file_len)
}

fn read_box_body(file: &mut File, top: &TopLevelBox, path: &Path) -> Result<Vec<u8>, CaptureError> {
    let body_len = top.size_bytes - top.header_bytes;
    if body_len > MAX_METADATA_BOX_BYTES {
        return Err(CaptureError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("metadata box '{}' is implausibly large ({body_len} bytes)", fourcc(&top.kind)),
        });
    }
    let io_err = |source| CaptureError::Io { path: path.to_path_buf(), source };
    file.seek(SeekFrom::Start(top.offset + top.header_bytes)).map_err(io_err)?;
    let mut body = vec![0u8; usize::try_from(body_len).unwrap_or(0)];
    file.read_exact(&mut body).map_err(io_err)?;
    Ok(body)
}

/// Renders a four-character code for messages.
pub fn fourcc(kind: &[u8; 4]) -> String {
    kind.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '?' }).collect()
}

struct FileParser {
    path: PathBuf,
    truncated: bool,
    moov: Option<Moov>,
    fragments: Vec<TrackFragment>,
}

impl FileParser {
    fn corrupt(&self, reason: ParseError) -> CaptureError {
        CaptureError::Corrupt { path: self.path.clone(), reason: reason.0 }
    }

    fn finish(self, file_len: u64) -> Result<VideoTrack, CaptureError> {
        let path = self.path.clone();
        let Some(moov) = self.moov else {
            // ftyp/mdat present but no index: a classic MP4 whose writer never finished.
            return Err(CaptureError::Truncated { path, decoded_frames: 0 });
        };
        let Some(trak) = moov.traks.into_iter().find(|t| &t.handler == b"vide") else {
            return Err(CaptureError::NoVideoTrack { path });
        };
        if !matches!(&trak.codec, b"avc1" | b"avc3") {
            return Err(CaptureError::UnsupportedCodec { path, codec: fourcc(&trak.codec) });
        }
        let Some(avc) = trak.avc.clone() else {
            return Err(CaptureError::Corrupt { path, reason: "H.264 track without avcC configuration".into() });
        };
        let trex = moov.trex.iter().find(|t| t.track_id == trak.track_id).copied().unwrap_or_default();
        let mut samples = trak.samples;
        let mut next_decode_time = trak.stbl_end_ticks;
        let fragmented = !self.fragments.is_empty();
        for traf in self.fragments.iter().filter(|f| f.track_id == trak.track_id) {
            let mut decode_time =
                traf.base_decode_time.map_or(next_decode_time, |t| i64::try_from(t).unwrap_or(i64::MAX));
            for s in &traf.samples {
                if samples.len() >= MAX_SAMPLES {
                    break;
                }
                let duration = s.duration.or(traf.default_duration).unwrap_or(trex.default_duration);
                let size_bytes = s.size.or(traf.default_size).unwrap_or(trex.default_size);
                let flags = s.flags.or(traf.default_flags).unwrap_or(trex.default_flags);
                samples.push(SampleRef {
                    offset: s.offset,
                    size_bytes,
                    decode_time_ticks: decode_time,
                    composition_offset_ticks: s.composition_offset,
                    is_sync: flags & SAMPLE_FLAG_NON_SYNC == 0,
                });
                decode_time = decode_time.saturating_add(i64::from(duration));
            }
            next_decode_time = decode_time;
        }
        let mut truncated = self.truncated;
        let complete =
            samples.iter().take_while(|s| s.offset.saturating_add(u64::from(s.size_bytes)) <= file_len).count();
        if complete < samples.len() {
            truncated = true;
            samples.truncate(complete);
        }
        let duration_ticks = if fragmented { next_decode_time } else { trak.stbl_end_ticks };
        Ok(VideoTrack {
            track_id: trak.track_id,
            timescale: trak.timescale,
            width: trak.width,
            height: trak.height,
            avc,
            samples,
            presentation_start_ticks: trak.edit_media_time.unwrap_or(0),
            duration_ticks,
            truncated,
            fragmented,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::boxes::children;
    use super::moov::parse_avcc;
    use super::*;

    #[test]
    fn ticks_convert_to_microseconds() {
        assert_eq!(ticks_to_us(90_000, 90_000), 1_000_000);
        assert_eq!(ticks_to_us(512, 12_800), 40_000);
        assert_eq!(ticks_to_us(-1024, 12_800), -80_000);
    }

    #[test]
    fn children_rejects_oversized_box() {
        let body = [0, 0, 0, 100, b'f', b'r', b'e', b'e', 0, 0];
        assert!(children(&body).is_err());
    }

    #[test]
    fn avcc_round_trip_fields() {
        let avcc = [1, 66, 0xC0, 30, 0xFF, 0xE1, 0, 2, 0x67, 0x42, 1, 0, 1, 0x68];
        let cfg = parse_avcc(&avcc).map_err(|e| e.0).unwrap_or_default();
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.sps, vec![vec![0x67, 0x42]]);
        assert_eq!(cfg.pps, vec![vec![0x68]]);
    }
}
