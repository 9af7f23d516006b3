//! H.264 bitstream framing helpers.
//!
//! Owns the conversion between the MP4 framing of NAL units (each prefixed by its length, "AVCC")
//! and the Annex-B framing (each prefixed by a `00 00 00 01` start code) that OpenH264 consumes.
//! Receives sample bytes and the `avcC` length size; emits Annex-B byte streams.

/// The four-byte Annex-B start code.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Why a sample could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("NAL length prefix of {length_size} bytes is not supported")]
    BadLengthSize { length_size: u8 },
    #[error("NAL unit of {declared} bytes runs past the end of the {available}-byte sample")]
    NalOverrun { declared: usize, available: usize },
}

/// Appends `sample` (length-prefixed NAL units) to `out` in Annex-B framing.
pub fn avcc_to_annex_b(sample: &[u8], length_size: u8, out: &mut Vec<u8>) -> Result<(), FramingError> {
    let n = usize::from(length_size);
    if !matches!(n, 1 | 2 | 4) {
        return Err(FramingError::BadLengthSize { length_size });
    }
    let mut pos = 0usize;
    while pos < sample.len() {
        if sample.len() - pos < n {
            return Err(FramingError::NalOverrun { declared: n, available: sample.len() - pos });
        }
        let len = sample[pos..pos + n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += n;
        if len > sample.len() - pos {
            return Err(FramingError::NalOverrun { declared: len, available: sample.len() - pos });
        }
        if len > 0 {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(&sample[pos..pos + len]);
        }
        pos += len;
    }
    Ok(())
}

/// Appends parameter sets (SPS/PPS without prefixes) to `out` in Annex-B framing.
pub fn parameter_sets_to_annex_b<'a>(sets: impl IntoIterator<Item = &'a Vec<u8>>, out: &mut Vec<u8>) {
    for set in sets {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_four_byte_lengths() {
        let sample = [0, 0, 0, 2, 0x65, 0xAA, 0, 0, 0, 1, 0x41];
        let mut out = Vec::new();
        assert_eq!(avcc_to_annex_b(&sample, 4, &mut out), Ok(()));
        assert_eq!(out, vec![0, 0, 0, 1, 0x65, 0xAA, 0, 0, 0, 1, 0x41]);
    }

    #[test]
    fn rejects_overrun() {
        let mut out = Vec::new();
        assert!(matches!(avcc_to_annex_b(&[0, 9, 1], 2, &mut out), Err(FramingError::NalOverrun { .. })));
    }
}
