//! H.264 encoding of RGB frames with OpenH264.
//!
//! Owns one OpenH264 encoder and its YUV conversion buffer. Receives RGB images of a fixed, even
//! size; emits length-prefixed (MP4 framing) access units plus the SPS/PPS the muxer needs.
//! Frame skipping is off, so every input frame produces exactly one output frame.

use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType, RateControlMode};

use super::RecordError;
use crate::capture::FrameSize;
use crate::capture::yuv::I420Image;

const NAL_TYPE_MASK: u8 = 0x1F;
const NAL_TYPE_SPS: u8 = 7;
const NAL_TYPE_PPS: u8 = 8;
/// Prefix size of each NAL unit in MP4 samples.
const NAL_LENGTH_BYTES: usize = 4;

/// Quality settings of the encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    /// Target bit rate in bits per second.
    pub bitrate_bps: u32,
    /// Expected frame rate, for rate control.
    pub frame_rate_hint_hz: f64,
}

/// One encoded picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPicture {
    /// NAL units with 4-byte big-endian length prefixes (SPS/PPS removed).
    pub avcc: Vec<u8>,
    /// Whether the picture is an IDR frame that decoding can start from.
    pub is_keyframe: bool,
}

/// Wraps an OpenH264 encoder for a fixed picture size.
pub struct H264Encoder {
    encoder: Encoder,
    size: FrameSize,
    yuv: I420Image,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl H264Encoder {
    /// Creates an encoder for pictures of `size` (both sides even, at most 3840x2160).
    pub fn new(size: FrameSize, settings: EncoderSettings) -> Result<Self, RecordError> {
        let Some(yuv) = I420Image::new(size.width as usize, size.height as usize) else {
            return Err(RecordError::InvalidFrameSize { size });
        };
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.frame_rate_hint_hz as f32))
            .rate_control_mode(RateControlMode::Quality)
            .skip_frames(false);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| RecordError::Encoder(format!("cannot create H.264 encoder: {e}")))?;
        Ok(Self { encoder, size, yuv, sps: None, pps: None })
    }

    /// Picture size this encoder accepts.
    pub fn size(&self) -> FrameSize {
        self.size
    }

    /// SPS and PPS, known after the first keyframe.
    pub fn parameter_sets(&self) -> Option<(&[u8], &[u8])> {
        Some((self.sps.as_deref()?, self.pps.as_deref()?))
    }

    /// Encodes one picture; `force_keyframe` requests an IDR frame.
    pub fn encode(&mut self, pixels: &image::RgbImage, force_keyframe: bool) -> Result<EncodedPicture, RecordError> {
        let actual = FrameSize::of(pixels);
        if actual != self.size {
            return Err(RecordError::FrameSizeChanged { expected: self.size, actual });
        }
        if !self.yuv.fill_from_rgb(pixels) {
            return Err(RecordError::FrameSizeChanged { expected: self.size, actual });
        }
        if force_keyframe {
            self.encoder.force_intra_frame();
        }
        let stream =
            self.encoder.encode(&self.yuv).map_err(|e| RecordError::Encoder(format!("encoding failed: {e}")))?;
        let is_keyframe = stream.frame_type() == FrameType::IDR;
        let mut avcc = Vec::new();
        let mut sps = None;
        let mut pps = None;
        for layer_index in 0..stream.num_layers() {
            let Some(layer) = stream.layer(layer_index) else { continue };
            for nal_index in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(nal_index) else { continue };
                let nal = strip_start_code(nal);
                let Some(&header) = nal.first() else { continue };
                match header & NAL_TYPE_MASK {
                    NAL_TYPE_SPS => sps = Some(nal.to_vec()),
                    NAL_TYPE_PPS => pps = Some(nal.to_vec()),
                    _ => {
                        let len =
                            u32::try_from(nal.len()).map_err(|_| RecordError::Encoder("NAL unit too large".into()))?;
                        avcc.reserve(NAL_LENGTH_BYTES + nal.len());
                        avcc.extend_from_slice(&len.to_be_bytes());
                        avcc.extend_from_slice(nal);
                    }
                }
            }
        }
        // Parameter sets go into the avcC box; a change mid-stream is carried in-band as well.
        if let Some(sps) = sps {
            self.keep_parameter_set(sps, true, &mut avcc);
        }
        if let Some(pps) = pps {
            self.keep_parameter_set(pps, false, &mut avcc);
        }
        Ok(EncodedPicture { avcc, is_keyframe })
    }

    fn keep_parameter_set(&mut self, set: Vec<u8>, is_sps: bool, avcc: &mut Vec<u8>) {
        let slot = if is_sps { &mut self.sps } else { &mut self.pps };
        match slot {
            None => *slot = Some(set),
            Some(known) if *known == set => {}
            Some(_) => {
                let mut prefixed = Vec::with_capacity(set.len() + NAL_LENGTH_BYTES);
                prefixed.extend_from_slice(&(set.len() as u32).to_be_bytes());
                prefixed.extend_from_slice(&set);
                avcc.splice(0..0, prefixed);
            }
        }
    }
}

/// Removes an Annex-B start code (`00 00 01` or `00 00 00 01`) from the front of a NAL unit.
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if let Some(rest) = nal.strip_prefix(&[0, 0, 0, 1]) {
        rest
    } else if let Some(rest) = nal.strip_prefix(&[0, 0, 1]) {
        rest
    } else {
        nal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_both_start_code_lengths() {
        assert_eq!(strip_start_code(&[0, 0, 0, 1, 0x65]), &[0x65]);
        assert_eq!(strip_start_code(&[0, 0, 1, 0x41]), &[0x41]);
        assert_eq!(strip_start_code(&[0x09]), &[0x09]);
    }

    #[test]
    fn odd_size_is_rejected() {
        let settings = EncoderSettings { bitrate_bps: 1_000_000, frame_rate_hint_hz: 30.0 };
        assert!(matches!(
            H264Encoder::new(FrameSize::new(63, 48), settings),
            Err(RecordError::InvalidFrameSize { .. })
        ));
    }
}
