//! Movie fragments (`moof`): the samples a fragmented MP4 (our crash-safe recordings, streaming writers) appends
//! after the movie box.
//!
//! Owns the parsing of `traf`/`tfhd`/`tfdt`/`trun` into `TrackFragment`s. Receives a `moof` body and its file
//! offset; emits each track fragment's samples with their absolute byte offsets.

use super::boxes::{Cursor, ParseError, child, children, perr};
use super::*;

pub(super) struct FragmentSample {
    pub(super) offset: u64,
    pub(super) duration: Option<u32>,
    pub(super) size: Option<u32>,
    pub(super) flags: Option<u32>,
    pub(super) composition_offset: i64,
}

pub(super) struct TrackFragment {
    pub(super) track_id: u32,
    pub(super) base_decode_time: Option<u64>,
    pub(super) default_duration: Option<u32>,
    pub(super) default_size: Option<u32>,
    pub(super) default_flags: Option<u32>,
    pub(super) samples: Vec<FragmentSample>,
}

pub(super) fn parse_moof(body: &[u8], moof_offset: u64) -> Result<Vec<TrackFragment>, ParseError> {
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
