//! The movie box: tracks, their sample descriptions (`avcC`), edit lists and classic sample tables (`stbl`).
//!
//! Owns the parsing of `moov` into `Moov` (one `Trak` per track, `trex` defaults for fragments). Receives the box
//! body; emits tracks with their samples in decode order.

use super::boxes::{Cursor, ParseError, child, children, perr};
use super::*;

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Trex {
    pub(super) track_id: u32,
    pub(super) default_duration: u32,
    pub(super) default_size: u32,
    pub(super) default_flags: u32,
}

pub(super) struct Moov {
    pub(super) traks: Vec<Trak>,
    pub(super) trex: Vec<Trex>,
}

pub(super) struct Trak {
    pub(super) track_id: u32,
    pub(super) handler: [u8; 4],
    pub(super) timescale: u32,
    pub(super) codec: [u8; 4],
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) avc: Option<AvcConfig>,
    pub(super) edit_media_time: Option<i64>,
    pub(super) samples: Vec<SampleRef>,
    pub(super) stbl_end_ticks: i64,
}

pub(super) fn parse_moov(body: &[u8]) -> Result<Moov, ParseError> {
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

pub(super) fn parse_trak(body: &[u8]) -> Result<Trak, ParseError> {
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

pub(super) fn parse_elst(elst: &[u8]) -> Result<Option<i64>, ParseError> {
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
pub(super) fn parse_avcc(body: &[u8]) -> Result<AvcConfig, ParseError> {
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
pub(super) fn parse_stbl_samples(stbl: &[u8]) -> Result<(Vec<SampleRef>, i64), ParseError> {
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
