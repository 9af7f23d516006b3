//! The box reader under the demuxer: a bounds-checked big-endian cursor over a box body, and child-box listing.
//!
//! Owns `Cursor`, `ParseError` and `children`/`child`. Receives box bodies; emits numbers and child boxes, or an error
//! naming what was out of bounds. Nothing here trusts a size read from the file.

use super::fourcc;

#[derive(Debug)]
pub(super) struct ParseError(pub(super) String);

pub(super) fn perr(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

/// Bounds-checked big-endian cursor over a box body.
pub(super) struct Cursor<'a> {
    data: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if n > self.remaining() {
            return Err(perr(format!("box ends early (needs {n} more bytes, has {})", self.remaining())));
        }
        let slice = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    pub(super) fn skip(&mut self, n: usize) -> Result<(), ParseError> {
        self.bytes(n).map(|_| ())
    }

    pub(super) fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.bytes(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, ParseError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self) -> Result<u32, ParseError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, ParseError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }

    pub(super) fn fourcc(&mut self) -> Result<[u8; 4], ParseError> {
        let b = self.bytes(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    /// Version byte and 24-bit flags of a full box.
    pub(super) fn full_box_header(&mut self) -> Result<(u8, u32), ParseError> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00FF_FFFF))
    }
}

/// Iterates the child boxes of a container body as (type, body).
/// A child box: its type and body.
type ChildBox<'a> = ([u8; 4], &'a [u8]);

pub(super) fn children(body: &[u8]) -> Result<Vec<ChildBox<'_>>, ParseError> {
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

pub(super) fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, ParseError> {
    Ok(children(body)?.into_iter().find(|(k, _)| k == kind).map(|(_, b)| b))
}
