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
    pub profile_idc: u8,
    pub level_idc: u8,
    /// Bytes used by each NAL length prefix inside samples (1, 2 or 4).
    pub nal_length_size: u8,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

/// The video track of an MP4 file, ready for decoding.
#[derive(Debug, Clone)]
pub struct VideoTrack {
    pub track_id: u32,
    /// Ticks per second of the track's timestamps.
    pub timescale: u32,
    pub width: u32,
    pub height: u32,
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
    pub kind: [u8; 4],
    pub offset: u64,
    /// Declared size including the header.
    pub size_bytes: u64,
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

#[derive(Debug)]
struct ParseError(String);

fn perr(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

/// Bounds-checked big-endian cursor over a box body.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if n > self.remaining() {
            return Err(perr(format!("box ends early (needs {n} more bytes, has {})", self.remaining())));
        }
        let slice = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn skip(&mut self, n: usize) -> Result<(), ParseError> {
        self.bytes(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ParseError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }

    fn fourcc(&mut self) -> Result<[u8; 4], ParseError> {
        let b = self.bytes(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// Version byte and 24-bit flags of a full box.
    fn full_box_header(&mut self) -> Result<(u8, u32), ParseError> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00FF_FFFF))
    }
}

/// Iterates the child boxes of a container body as (type, body).
/// A child box: its type and body.
type ChildBox<'a> = ([u8; 4], &'a [u8]);

fn children(body: &[u8]) -> Result<Vec<ChildBox<'_>>, ParseError> {
    let mut out = Vec::new();
    let mut c = Cursor::new(body);
    while c.remaining() >= 8 {
        let size32 = c.u32()?;
        let kind = c.fourcc()?;
        let (size, header) = match size32 {
            0 => ((c.remaining() + 8) as u64, 8u64),
            1 => (c.u64()?, 16u64),
            n => (u64::from(n), 8u64),
        };
        if size < header || size - header > c.remaining() as u64 {
            return Err(perr(format!("child box '{}' has an invalid size {size}", fourcc(&kind))));
        }
        let len = (size - header) as usize;
        out.push((kind, c.bytes(len)?));
    }
    Ok(out)
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, ParseError> {
    Ok(children(body)?.into_iter().find(|(k, _)| k == kind).map(|(_, b)| b))
}

#[derive(Debug, Default, Clone, Copy)]
struct Trex {
    track_id: u32,
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
}

struct Moov {
    traks: Vec<Trak>,
    trex: Vec<Trex>,
}

struct Trak {
    track_id: u32,
    handler: [u8; 4],
    timescale: u32,
    codec: [u8; 4],
    width: u32,
    height: u32,
    avc: Option<AvcConfig>,
    edit_media_time: Option<i64>,
    samples: Vec<SampleRef>,
    stbl_end_ticks: i64,
}

fn parse_moov(body: &[u8]) -> Result<Moov, ParseError> {
    let mut traks = Vec::new();
    let mut trex = Vec::new();
    for (kind, b) in children(body)? {
        match &kind {
            b"trak" => traks.push(parse_trak(b)?),
            b"mvex" => {
                for (k, t) in children(b)? {
                    if &k == b"trex" {
                        let mut c = Cursor::new(t);
                        c.full_box_header()?;
                        let track_id = c.u32()?;
                        c.u32()?; // default_sample_description_index
                        trex.push(Trex {
                            track_id,
                            default_duration: c.u32()?,
                            default_size: c.u32()?,
                            default_flags: c.u32()?,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Moov { traks, trex })
}

fn parse_trak(body: &[u8]) -> Result<Trak, ParseError> {
    let tkhd = child(body, b"tkhd")?.ok_or_else(|| perr("trak without tkhd"))?;
    let mut c = Cursor::new(tkhd);
    let (version, _) = c.full_box_header()?;
    c.skip(if version == 1 { 16 } else { 8 })?; // creation + modification time
    let track_id = c.u32()?;
    let mdia = child(body, b"mdia")?.ok_or_else(|| perr("trak without mdia"))?;
    let mdhd = child(mdia, b"mdhd")?.ok_or_else(|| perr("mdia without mdhd"))?;
    let mut c = Cursor::new(mdhd);
    let (version, _) = c.full_box_header()?;
    c.skip(if version == 1 { 16 } else { 8 })?;
    let timescale = c.u32()?;
    if timescale == 0 {
        return Err(perr("track timescale is zero"));
    }
    let hdlr = child(mdia, b"hdlr")?.ok_or_else(|| perr("mdia without hdlr"))?;
    let mut c = Cursor::new(hdlr);
    c.full_box_header()?;
    c.u32()?; // pre_defined
    let handler = c.fourcc()?;

    let edit_media_time = match child(body, b"edts")? {
        Some(edts) => match child(edts, b"elst")? {
            Some(elst) => parse_elst(elst)?,
            None => None,
        },
        None => None,
    };

    let mut trak = Trak {
        track_id,
        handler,
        timescale,
        codec: [0; 4],
        width: 0,
        height: 0,
        avc: None,
        edit_media_time,
        samples: Vec::new(),
        stbl_end_ticks: 0,
    };
    if &handler != b"vide" {
        return Ok(trak);
    }
    let minf = child(mdia, b"minf")?.ok_or_else(|| perr("mdia without minf"))?;
    let stbl = child(minf, b"stbl")?.ok_or_else(|| perr("minf without stbl"))?;
    let stsd = child(stbl, b"stsd")?.ok_or_else(|| perr("stbl without stsd"))?;
    let mut c = Cursor::new(stsd);
    c.full_box_header()?;
    let entry_count = c.u32()?;
    if entry_count == 0 {
        return Err(perr("stsd has no sample description"));
    }
    let entries = children(&stsd[c.pos..])?;
    let (codec, entry) = entries.first().ok_or_else(|| perr("stsd has no sample description"))?;
    trak.codec = *codec;
    if matches!(codec, b"avc1" | b"avc3") {
        // VisualSampleEntry: 6 reserved + 2 data_reference_index + 16 pre_defined/reserved, then width/height.
        let mut c = Cursor::new(entry);
        c.skip(24)?;
        trak.width = u32::from(c.u16()?);
        trak.height = u32::from(c.u16()?);
        // 4+4 resolution, 4 reserved, 2 frame_count, 32 compressor name, 2 depth, 2 pre_defined = 50 bytes.
        c.skip(50)?;
        if let Some(avcc) = child(&entry[c.pos..], b"avcC")? {
            trak.avc = Some(parse_avcc(avcc)?);
        }
    }
    let (samples, end_ticks) = parse_stbl_samples(stbl)?;
    trak.samples = samples;
    trak.stbl_end_ticks = end_ticks;
    Ok(trak)
}

fn parse_elst(elst: &[u8]) -> Result<Option<i64>, ParseError> {
    let mut c = Cursor::new(elst);
    let (version, _) = c.full_box_header()?;
    let count = c.u32()?;
    for _ in 0..count {
        let media_time = if version == 1 {
            c.u64()?; // segment_duration
            c.u64()? as i64
        } else {
            c.u32()?;
            i64::from(c.u32()? as i32)
        };
        c.u32()?; // media_rate
        if media_time >= 0 {
            return Ok(Some(media_time));
        }
    }
    Ok(None)
}

/// Parses an `avcC` (AVCDecoderConfigurationRecord) body.
fn parse_avcc(body: &[u8]) -> Result<AvcConfig, ParseError> {
    let mut c = Cursor::new(body);
    let _version = c.u8()?;
    let profile_idc = c.u8()?;
    let _compat = c.u8()?;
    let level_idc = c.u8()?;
    let nal_length_size = (c.u8()? & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(perr("avcC declares 3-byte NAL lengths, which H.264 does not allow"));
    }
    let num_sps = c.u8()? & 0x1F;
    let mut sps = Vec::new();
    for _ in 0..num_sps {
        let len = usize::from(c.u16()?);
        sps.push(c.bytes(len)?.to_vec());
    }
    let num_pps = c.u8()?;
    let mut pps = Vec::new();
    for _ in 0..num_pps {
        let len = usize::from(c.u16()?);
        pps.push(c.bytes(len)?.to_vec());
    }
    Ok(AvcConfig { profile_idc, level_idc, nal_length_size, sps, pps })
}

/// Expands stts/ctts/stsc/stsz/stco/stss into a sample list; returns it and the end decode time.
fn parse_stbl_samples(stbl: &[u8]) -> Result<(Vec<SampleRef>, i64), ParseError> {
    let boxes = children(stbl)?;
    let find = |kind: &[u8; 4]| boxes.iter().find(|(k, _)| k == kind).map(|(_, b)| *b);

    // Sizes.
    let mut sizes: Vec<u32> = Vec::new();
    if let Some(stsz) = find(b"stsz") {
        let mut c = Cursor::new(stsz);
        c.full_box_header()?;
        let uniform = c.u32()?;
        let count = c.u32()? as usize;
        if count > MAX_SAMPLES {
            return Err(perr(format!("stsz declares {count} samples, more than the supported {MAX_SAMPLES}")));
        }
        if uniform != 0 {
            sizes = vec![uniform; count];
        } else {
            if count.saturating_mul(4) > c.remaining() {
                return Err(perr("stsz is shorter than its sample count"));
            }
            sizes.reserve(count);
            for _ in 0..count {
                sizes.push(c.u32()?);
            }
        }
    }
    let sample_count = sizes.len();
    if sample_count == 0 {
        return Ok((Vec::new(), 0));
    }

    // Chunk offsets.
    let mut chunk_offsets: Vec<u64> = Vec::new();
    if let Some(stco) = find(b"stco") {
        let mut c = Cursor::new(stco);
        c.full_box_header()?;
        let n = c.u32()? as usize;
        if n.saturating_mul(4) > c.remaining() {
            return Err(perr("stco is shorter than its entry count"));
        }
        for _ in 0..n {
            chunk_offsets.push(u64::from(c.u32()?));
        }
    } else if let Some(co64) = find(b"co64") {
        let mut c = Cursor::new(co64);
        c.full_box_header()?;
        let n = c.u32()? as usize;
        if n.saturating_mul(8) > c.remaining() {
            return Err(perr("co64 is shorter than its entry count"));
        }
        for _ in 0..n {
            chunk_offsets.push(c.u64()?);
        }
    } else {
        return Err(perr("sample table without chunk offsets (stco/co64)"));
    }

    // Sample-to-chunk.
    let stsc = find(b"stsc").ok_or_else(|| perr("sample table without stsc"))?;
    let mut c = Cursor::new(stsc);
    c.full_box_header()?;
    let n = c.u32()? as usize;
    if n.saturating_mul(12) > c.remaining() {
        return Err(perr("stsc is shorter than its entry count"));
    }
    let mut stsc_entries = Vec::with_capacity(n);
    for _ in 0..n {
        let first_chunk = c.u32()?;
        let per_chunk = c.u32()?;
        c.u32()?; // sample_description_index
        stsc_entries.push((first_chunk, per_chunk));
    }

    let mut offsets = Vec::with_capacity(sample_count);
    'chunks: for (chunk_idx, &chunk_offset) in chunk_offsets.iter().enumerate() {
        let chunk_no = chunk_idx as u64 + 1;
        let per_chunk =
            stsc_entries.iter().rev().find(|(first, _)| u64::from(*first) <= chunk_no).map_or(0, |(_, n)| *n);
        let mut pos = chunk_offset;
        for _ in 0..per_chunk {
            let Some(&size) = sizes.get(offsets.len()) else { break 'chunks };
            offsets.push(pos);
            pos = pos.saturating_add(u64::from(size));
        }
    }
    if offsets.len() < sample_count {
        return Err(perr(format!("chunk tables cover {} of {sample_count} samples", offsets.len())));
    }

    // Decode times.
    let stts = find(b"stts").ok_or_else(|| perr("sample table without stts"))?;
    let mut c = Cursor::new(stts);
    c.full_box_header()?;
    let n = c.u32()? as usize;
    let mut durations = Vec::with_capacity(sample_count);
    for _ in 0..n {
        let count = c.u32()? as usize;
        let delta = c.u32()?;
        let take = count.min(sample_count - durations.len());
        durations.extend(std::iter::repeat_n(delta, take));
        if durations.len() == sample_count {
            break;
        }
    }
    let last_delta = durations.last().copied().unwrap_or(0);
    durations.resize(sample_count, last_delta);

    // Composition offsets.
    let mut composition = vec![0i64; sample_count];
    if let Some(ctts) = find(b"ctts") {
        let mut c = Cursor::new(ctts);
        c.full_box_header()?;
        let n = c.u32()? as usize;
        let mut i = 0usize;
        for _ in 0..n {
            let count = c.u32()? as usize;
            // Version 0 is unsigned on paper, but writers put negative values there too.
            let offset = i64::from(c.u32()? as i32);
            for slot in composition.iter_mut().skip(i).take(count) {
                *slot = offset;
            }
            i = i.saturating_add(count);
            if i >= sample_count {
                break;
            }
        }
    }

    // Sync samples (absent box: every sample is a sync sample).
    let mut sync = vec![true; sample_count];
    if let Some(stss) = find(b"stss") {
        sync.fill(false);
        let mut c = Cursor::new(stss);
        c.full_box_header()?;
        let n = c.u32()? as usize;
        for _ in 0..n {
            let number = c.u32()? as usize;
            if let Some(slot) = number.checked_sub(1).and_then(|i| sync.get_mut(i)) {
                *slot = true;
            }
        }
    }

    let mut samples = Vec::with_capacity(sample_count);
    let mut t = 0i64;
    for i in 0..sample_count {
        samples.push(SampleRef {
            offset: offsets[i],
            size_bytes: sizes[i],
            decode_time_ticks: t,
            composition_offset_ticks: composition[i],
            is_sync: sync[i],
        });
        t += i64::from(durations[i]);
    }
    Ok((samples, t))
}

struct FragmentSample {
    offset: u64,
    duration: Option<u32>,
    size: Option<u32>,
    flags: Option<u32>,
    composition_offset: i64,
}

struct TrackFragment {
    track_id: u32,
    base_decode_time: Option<u64>,
    default_duration: Option<u32>,
    default_size: Option<u32>,
    default_flags: Option<u32>,
    samples: Vec<FragmentSample>,
}

fn parse_moof(body: &[u8], moof_offset: u64) -> Result<Vec<TrackFragment>, ParseError> {
    let mut out = Vec::new();
    for (kind, traf) in children(body)? {
        if &kind != b"traf" {
            continue;
        }
        let tfhd = child(traf, b"tfhd")?.ok_or_else(|| perr("traf without tfhd"))?;
        let mut c = Cursor::new(tfhd);
        let (_, flags) = c.full_box_header()?;
        let track_id = c.u32()?;
        // Without an explicit base offset we treat the moof start as the base (default-base-is-moof,
        // and also the rule for the first traf of a moof).
        let base = if flags & TFHD_BASE_DATA_OFFSET != 0 { c.u64()? } else { moof_offset };
        if flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
            c.u32()?;
        }
        let mut frag = TrackFragment {
            track_id,
            base_decode_time: None,
            default_duration: if flags & TFHD_DEFAULT_DURATION != 0 { Some(c.u32()?) } else { None },
            default_size: if flags & TFHD_DEFAULT_SIZE != 0 { Some(c.u32()?) } else { None },
            default_flags: if flags & TFHD_DEFAULT_FLAGS != 0 { Some(c.u32()?) } else { None },
            samples: Vec::new(),
        };
        let mut data_pos = base;
        for (k, b) in children(traf)? {
            match &k {
                b"tfdt" => {
                    let mut c = Cursor::new(b);
                    let (version, _) = c.full_box_header()?;
                    frag.base_decode_time = Some(if version == 1 { c.u64()? } else { u64::from(c.u32()?) });
                }
                b"trun" => {
                    let mut c = Cursor::new(b);
                    let (_version, tr_flags) = c.full_box_header()?;
                    let count = c.u32()? as usize;
                    if count > MAX_SAMPLES {
                        return Err(perr("trun declares too many samples"));
                    }
                    if tr_flags & TRUN_DATA_OFFSET != 0 {
                        let rel = i64::from(c.u32()? as i32);
                        data_pos = base.checked_add_signed(rel).ok_or_else(|| perr("trun data offset out of range"))?;
                    }
                    let first_flags = if tr_flags & TRUN_FIRST_SAMPLE_FLAGS != 0 { Some(c.u32()?) } else { None };
                    for i in 0..count {
                        let duration = if tr_flags & TRUN_DURATION != 0 { Some(c.u32()?) } else { None };
                        let size = if tr_flags & TRUN_SIZE != 0 { Some(c.u32()?) } else { None };
                        let mut flags = if tr_flags & TRUN_FLAGS != 0 { Some(c.u32()?) } else { None };
                        if i == 0 && first_flags.is_some() {
                            flags = first_flags;
                        }
                        let composition_offset = if tr_flags & TRUN_COMPOSITION_OFFSET != 0 {
                            // Version 0 is unsigned on paper; real files put small negative values there too.
                            i64::from(c.u32()? as i32)
                        } else {
                            0
                        };
                        let sample_size = size.or(frag.default_size).unwrap_or(0);
                        frag.samples.push(FragmentSample {
                            offset: data_pos,
                            duration,
                            size,
                            flags,
                            composition_offset,
                        });
                        data_pos = data_pos.saturating_add(u64::from(sample_size));
                    }
                }
                _ => {}
            }
        }
        out.push(frag);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
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
