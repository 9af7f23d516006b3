//! Minimal fragmented-MP4 writer for one H.264 video track (ISO/IEC 14496-12 box layouts).
//!
//! Owns the output byte stream. Receives the track parameters (size, timescale, SPS/PPS) and
//! length-prefixed H.264 samples with decode times; emits an init segment (`ftyp` + `moov` with
//! `mvex`, empty sample tables) followed by one `moof` + `mdat` pair per fragment. Each fragment is
//! written with a single `write_all` and flushed, so the bytes on disk are always "init + N whole
//! fragments + possibly one cut-off fragment": players (and our demuxer) read everything up to the
//! last whole fragment, which is what makes a recording survive SIGKILL or a full disk.
//!
//! Sample durations are exact: a sample is written only when its successor's decode time is known
//! (the last sample of a recording gets the previous sample's duration).

use std::io::{self, Write};

use crate::capture::FrameSize;

/// Track timescale: 90 kHz, the usual video clock.
pub const TIMESCALE_HZ: u32 = 90_000;
/// Movie header timescale (milliseconds).
const MOVIE_TIMESCALE_HZ: u32 = 1_000;
const TRACK_ID: u32 = 1;
/// tkhd flags: track enabled | track in movie.
const TKHD_FLAGS: u32 = 0x3;
/// tfhd flag: data offsets are relative to the start of the moof.
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// trun flags: data offset, then per-sample duration, size and flags.
const TRUN_FLAGS: u32 = 0x00_0001 | 0x00_0100 | 0x00_0200 | 0x00_0400;
/// Sample flags of a keyframe: depends on no other sample.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// Sample flags of a delta frame: depends on others, non-sync.
const DELTA_SAMPLE_FLAGS: u32 = 0x0101_0000;
/// Identity transformation matrix used by mvhd and tkhd.
const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];
/// Packed ISO-639-2 code "und".
const LANGUAGE_UNDETERMINED: u16 = 0x55C4;
/// Bytes of a box header (size + type).
const BOX_HEADER_BYTES: usize = 8;

/// Track parameters written into the init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackParams {
    /// Picture size in pixels.
    pub size: FrameSize,
    /// Ticks per second of the sample timestamps (normally [`TIMESCALE_HZ`]).
    pub timescale: u32,
    /// Sequence parameter set NAL unit, without start code or length.
    pub sps: Vec<u8>,
    /// Picture parameter set NAL unit, without start code or length.
    pub pps: Vec<u8>,
}

/// One compressed frame in MP4 framing (4-byte NAL lengths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSample {
    /// The access unit: NAL units, each behind a 4-byte big-endian length.
    pub data: Vec<u8>,
    /// Decode (= presentation, no B-frames) time in track ticks.
    pub decode_time_ticks: u64,
    /// Whether the sample is a keyframe (playback can start here).
    pub is_sync: bool,
}

/// Fragment cutting policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentPolicy {
    /// A keyframe starts a new fragment once the pending one spans at least this long.
    pub min_fragment_ticks: u64,
    /// A fragment is cut even without a keyframe once it spans this long.
    pub max_fragment_ticks: u64,
    /// Duration given to the very last sample when nothing follows it.
    pub fallback_duration_ticks: u32,
}

/// Streams a fragmented MP4 into `W`.
pub struct FragmentedMp4Writer<W: Write> {
    out: W,
    policy: FragmentPolicy,
    pending: Vec<EncodedSample>,
    sequence_number: u32,
    bytes_written: u64,
    samples_written: u64,
    /// Decode time just past the last written sample.
    written_end_ticks: u64,
    last_duration_ticks: u32,
}

impl<W: Write> FragmentedMp4Writer<W> {
    /// Writes the init segment and returns the writer.
    pub fn new(mut out: W, params: &TrackParams, policy: FragmentPolicy) -> io::Result<Self> {
        let init = build_init_segment(params)?;
        out.write_all(&init)?;
        out.flush()?;
        Ok(Self {
            out,
            policy,
            pending: Vec::new(),
            sequence_number: 1,
            bytes_written: init.len() as u64,
            samples_written: 0,
            written_end_ticks: 0,
            last_duration_ticks: policy.fallback_duration_ticks,
        })
    }

    /// Queues a sample; returns `true` when a fragment was written to the output first.
    ///
    /// Decode times must increase; a sample that does not is moved 1 tick past its predecessor.
    pub fn push(&mut self, mut sample: EncodedSample) -> io::Result<bool> {
        if let Some(prev) = self.pending.last() {
            sample.decode_time_ticks = sample.decode_time_ticks.max(prev.decode_time_ticks + 1);
        } else if self.samples_written > 0 {
            sample.decode_time_ticks = sample.decode_time_ticks.max(self.written_end_ticks);
        }
        let mut wrote = false;
        if let Some(first) = self.pending.first() {
            let span = sample.decode_time_ticks - first.decode_time_ticks;
            if (sample.is_sync && span >= self.policy.min_fragment_ticks) || span >= self.policy.max_fragment_ticks {
                self.write_fragment(sample.decode_time_ticks)?;
                wrote = true;
            }
        }
        self.pending.push(sample);
        Ok(wrote)
    }

    /// Writes all queued samples as a final fragment and flushes the output.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(last) = self.pending.last() {
            let end = last.decode_time_ticks + u64::from(self.last_duration_ticks);
            self.write_fragment(end)?;
        }
        self.out.flush()
    }

    /// The output stream.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Bytes handed to the output successfully (init segment + whole fragments).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Samples contained in whole fragments written so far.
    pub fn samples_written(&self) -> u64 {
        self.samples_written
    }

    /// Decode time just past the last written sample, in ticks.
    pub fn written_end_ticks(&self) -> u64 {
        self.written_end_ticks
    }

    /// Samples queued for the next fragment.
    pub fn pending_samples(&self) -> usize {
        self.pending.len()
    }

    /// The output, for syncing or truncating.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn write_fragment(&mut self, end_ticks: u64) -> io::Result<()> {
        let samples = std::mem::take(&mut self.pending);
        let Some(first) = samples.first() else {
            return Ok(());
        };
        let mut durations = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let next = samples.get(i + 1).map_or(end_ticks, |n| n.decode_time_ticks);
            let duration = u32::try_from(next.saturating_sub(s.decode_time_ticks).max(1)).unwrap_or(u32::MAX);
            durations.push(duration);
        }
        let bytes = build_fragment(self.sequence_number, first.decode_time_ticks, &samples, &durations)?;
        self.out.write_all(&bytes)?;
        self.out.flush()?;
        self.sequence_number += 1;
        self.bytes_written += bytes.len() as u64;
        self.samples_written += samples.len() as u64;
        self.written_end_ticks = end_ticks;
        if let Some(&d) = durations.last() {
            self.last_duration_ticks = if samples.len() >= 2 { durations[durations.len() - 2] } else { d };
        }
        Ok(())
    }
}

fn too_large(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what} does not fit in an MP4 field"))
}

fn open_box(buf: &mut Vec<u8>, kind: &[u8; 4]) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(kind);
    start
}

fn open_full_box(buf: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32) -> usize {
    let start = open_box(buf, kind);
    buf.extend_from_slice(&((u32::from(version) << 24) | (flags & 0x00FF_FFFF)).to_be_bytes());
    start
}

fn close_box(buf: &mut [u8], start: usize) -> io::Result<()> {
    let size = u32::try_from(buf.len() - start).map_err(|_| too_large("box size"))?;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_matrix(buf: &mut Vec<u8>) {
    for v in UNITY_MATRIX {
        put_u32(buf, v);
    }
}

/// `ftyp` + `moov` (with `mvex`) for a single H.264 track.
pub fn build_init_segment(params: &TrackParams) -> io::Result<Vec<u8>> {
    if params.sps.len() < 4 || params.pps.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "SPS/PPS missing or too short"));
    }
    let width = u16::try_from(params.size.width).map_err(|_| too_large("width"))?;
    let height = u16::try_from(params.size.height).map_err(|_| too_large("height"))?;
    let mut b = Vec::with_capacity(1024);

    let ftyp = open_box(&mut b, b"ftyp");
    b.extend_from_slice(b"iso6");
    put_u32(&mut b, 0);
    for brand in [b"iso6", b"iso5", b"isom", b"avc1", b"mp41"] {
        b.extend_from_slice(brand);
    }
    close_box(&mut b, ftyp)?;

    let moov = open_box(&mut b, b"moov");
    let mvhd = open_full_box(&mut b, b"mvhd", 0, 0);
    put_u32(&mut b, 0); // creation_time
    put_u32(&mut b, 0); // modification_time
    put_u32(&mut b, MOVIE_TIMESCALE_HZ);
    put_u32(&mut b, 0); // duration: unknown, given by fragments
    put_u32(&mut b, 0x0001_0000); // rate 1.0
    put_u16(&mut b, 0x0100); // volume 1.0
    b.extend_from_slice(&[0; 10]); // reserved
    put_matrix(&mut b);
    b.extend_from_slice(&[0; 24]); // pre_defined
    put_u32(&mut b, TRACK_ID + 1); // next_track_ID
    close_box(&mut b, mvhd)?;

    let trak = open_box(&mut b, b"trak");
    let tkhd = open_full_box(&mut b, b"tkhd", 0, TKHD_FLAGS);
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    put_u32(&mut b, TRACK_ID);
    put_u32(&mut b, 0); // reserved
    put_u32(&mut b, 0); // duration
    b.extend_from_slice(&[0; 8]); // reserved
    put_u16(&mut b, 0); // layer
    put_u16(&mut b, 0); // alternate_group
    put_u16(&mut b, 0); // volume (video)
    put_u16(&mut b, 0); // reserved
    put_matrix(&mut b);
    put_u32(&mut b, u32::from(width) << 16);
    put_u32(&mut b, u32::from(height) << 16);
    close_box(&mut b, tkhd)?;

    let mdia = open_box(&mut b, b"mdia");
    let mdhd = open_full_box(&mut b, b"mdhd", 0, 0);
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    put_u32(&mut b, params.timescale);
    put_u32(&mut b, 0);
    put_u16(&mut b, LANGUAGE_UNDETERMINED);
    put_u16(&mut b, 0);
    close_box(&mut b, mdhd)?;
    let hdlr = open_full_box(&mut b, b"hdlr", 0, 0);
    put_u32(&mut b, 0);
    b.extend_from_slice(b"vide");
    b.extend_from_slice(&[0; 12]);
    b.extend_from_slice(b"VideoHandler\0");
    close_box(&mut b, hdlr)?;

    let minf = open_box(&mut b, b"minf");
    let vmhd = open_full_box(&mut b, b"vmhd", 0, 1);
    b.extend_from_slice(&[0; 8]); // graphicsmode + opcolor
    close_box(&mut b, vmhd)?;
    let dinf = open_box(&mut b, b"dinf");
    let dref = open_full_box(&mut b, b"dref", 0, 0);
    put_u32(&mut b, 1);
    let url = open_full_box(&mut b, b"url ", 0, 1); // flag 1: media is in this file
    close_box(&mut b, url)?;
    close_box(&mut b, dref)?;
    close_box(&mut b, dinf)?;

    let stbl = open_box(&mut b, b"stbl");
    let stsd = open_full_box(&mut b, b"stsd", 0, 0);
    put_u32(&mut b, 1);
    let avc1 = open_box(&mut b, b"avc1");
    b.extend_from_slice(&[0; 6]); // reserved
    put_u16(&mut b, 1); // data_reference_index
    b.extend_from_slice(&[0; 16]); // pre_defined + reserved
    put_u16(&mut b, width);
    put_u16(&mut b, height);
    put_u32(&mut b, 0x0048_0000); // 72 dpi
    put_u32(&mut b, 0x0048_0000);
    put_u32(&mut b, 0); // reserved
    put_u16(&mut b, 1); // frame_count
    b.extend_from_slice(&[0; 32]); // compressorname
    put_u16(&mut b, 0x0018); // depth
    put_u16(&mut b, 0xFFFF); // pre_defined = -1
    write_avcc(&mut b, params)?;
    close_box(&mut b, avc1)?;
    close_box(&mut b, stsd)?;
    for kind in [b"stts", b"stsc", b"stco"] {
        let empty = open_full_box(&mut b, kind, 0, 0);
        put_u32(&mut b, 0);
        close_box(&mut b, empty)?;
    }
    let stsz = open_full_box(&mut b, b"stsz", 0, 0);
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    close_box(&mut b, stsz)?;
    close_box(&mut b, stbl)?;
    close_box(&mut b, minf)?;
    close_box(&mut b, mdia)?;
    close_box(&mut b, trak)?;

    let mvex = open_box(&mut b, b"mvex");
    let trex = open_full_box(&mut b, b"trex", 0, 0);
    put_u32(&mut b, TRACK_ID);
    put_u32(&mut b, 1); // default_sample_description_index
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    close_box(&mut b, trex)?;
    close_box(&mut b, mvex)?;
    close_box(&mut b, moov)?;
    Ok(b)
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15).
fn write_avcc(b: &mut Vec<u8>, params: &TrackParams) -> io::Result<()> {
    /// Profiles whose record carries chroma format and bit depth fields.
    const HIGH_PROFILES: [u8; 4] = [100, 110, 122, 144];
    let avcc = open_box(b, b"avcC");
    let sps = &params.sps;
    b.push(1); // configurationVersion
    b.push(sps[1]); // AVCProfileIndication
    b.push(sps[2]); // profile_compatibility
    b.push(sps[3]); // AVCLevelIndication
    b.push(0xFF); // 4-byte NAL lengths
    b.push(0xE1); // one SPS
    put_u16(b, u16::try_from(sps.len()).map_err(|_| too_large("SPS"))?);
    b.extend_from_slice(sps);
    b.push(1); // one PPS
    put_u16(b, u16::try_from(params.pps.len()).map_err(|_| too_large("PPS"))?);
    b.extend_from_slice(&params.pps);
    if HIGH_PROFILES.contains(&sps[1]) {
        b.extend_from_slice(&[0xFC | 1, 0xF8, 0xF8, 0]); // 4:2:0, 8-bit luma/chroma, no SPS ext
    }
    close_box(b, avcc)
}

/// One `moof` + `mdat` pair.
fn build_fragment(
    sequence_number: u32,
    base_decode_ticks: u64,
    samples: &[EncodedSample],
    durations: &[u32],
) -> io::Result<Vec<u8>> {
    let payload_len: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut b = Vec::with_capacity(payload_len + 64 + samples.len() * 12);
    let moof = open_box(&mut b, b"moof");
    let mfhd = open_full_box(&mut b, b"mfhd", 0, 0);
    put_u32(&mut b, sequence_number);
    close_box(&mut b, mfhd)?;
    let traf = open_box(&mut b, b"traf");
    let tfhd = open_full_box(&mut b, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF);
    put_u32(&mut b, TRACK_ID);
    close_box(&mut b, tfhd)?;
    let tfdt = open_full_box(&mut b, b"tfdt", 1, 0);
    b.extend_from_slice(&base_decode_ticks.to_be_bytes());
    close_box(&mut b, tfdt)?;
    let trun = open_full_box(&mut b, b"trun", 0, TRUN_FLAGS);
    put_u32(&mut b, u32::try_from(samples.len()).map_err(|_| too_large("sample count"))?);
    let data_offset_pos = b.len();
    put_u32(&mut b, 0); // data_offset, patched below
    for (s, &d) in samples.iter().zip(durations) {
        put_u32(&mut b, d);
        put_u32(&mut b, u32::try_from(s.data.len()).map_err(|_| too_large("sample size"))?);
        put_u32(&mut b, if s.is_sync { SYNC_SAMPLE_FLAGS } else { DELTA_SAMPLE_FLAGS });
    }
    close_box(&mut b, trun)?;
    close_box(&mut b, traf)?;
    close_box(&mut b, moof)?;
    // Sample data starts right after the mdat header; offsets are relative to the moof start.
    let data_offset = u32::try_from(b.len() - moof + BOX_HEADER_BYTES).map_err(|_| too_large("data offset"))?;
    b[data_offset_pos..data_offset_pos + 4].copy_from_slice(&data_offset.to_be_bytes());
    let mdat = open_box(&mut b, b"mdat");
    for s in samples {
        b.extend_from_slice(&s.data);
    }
    close_box(&mut b, mdat)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> TrackParams {
        TrackParams {
            size: FrameSize::new(64, 48),
            timescale: TIMESCALE_HZ,
            sps: vec![0x67, 66, 0xC0, 30],
            pps: vec![0x68, 1],
        }
    }

    const POLICY: FragmentPolicy =
        FragmentPolicy { min_fragment_ticks: 9_000, max_fragment_ticks: 90_000, fallback_duration_ticks: 3_000 };

    #[test]
    fn init_segment_box_sizes_add_up() {
        let init = build_init_segment(&params()).unwrap_or_default();
        let ftyp_len = u32::from_be_bytes([init[0], init[1], init[2], init[3]]) as usize;
        assert_eq!(&init[4..8], b"ftyp");
        let moov_len = u32::from_be_bytes([init[ftyp_len], init[ftyp_len + 1], init[ftyp_len + 2], init[ftyp_len + 3]]);
        assert_eq!(&init[ftyp_len + 4..ftyp_len + 8], b"moov");
        assert_eq!(ftyp_len + moov_len as usize, init.len());
    }

    #[test]
    fn fragments_cut_at_keyframes_with_exact_durations() -> io::Result<()> {
        let mut w = FragmentedMp4Writer::new(Vec::new(), &params(), POLICY)?;
        for i in 0..10u64 {
            let sample =
                EncodedSample { data: vec![0, 0, 0, 1, 0x41], decode_time_ticks: i * 3_000, is_sync: i % 5 == 0 };
            w.push(sample)?;
        }
        assert_eq!(w.samples_written(), 5);
        assert_eq!(w.written_end_ticks(), 15_000);
        w.finish()?;
        assert_eq!(w.samples_written(), 10);
        assert_eq!(w.written_end_ticks(), 30_000);
        let out = w.into_inner();
        let fragments = out.windows(4).filter(|w| w == b"moof").count();
        assert_eq!(fragments, 2);
        Ok(())
    }
}
