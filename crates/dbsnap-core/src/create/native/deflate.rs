//! Compression of one piece of table data: raw deflate ending on a full
//! flush, so the pieces of a table concatenate into one zlib stream (pigz's
//! method) whose Adler-32 is combined from the pieces'; plain bytes at
//! level 0. Pure: bytes in, bytes out.

use flate2::{Compress, FlushCompress, Status};

use crate::error::CoreError;

/// A finished piece: compressed bytes, and the Adler-32 and length of what
/// went in.
pub(super) struct Piece {
    pub(super) bytes: Vec<u8>,
    pub(super) adler: u32,
    pub(super) raw_len: u64,
    /// COPY rows (lines) in it.
    pub(super) rows: u64,
}

/// Compresses one piece: raw deflate ending on a full flush (or the final
/// block for a table's last piece), or plain bytes at level 0.
pub(super) struct Encoder {
    deflate: Option<Compress>,
    last: bool,
    out: Vec<u8>,
    adler: u32,
    raw_len: u64,
    rows: u64,
}

impl Encoder {
    pub(super) fn new(level: u32, last: bool) -> Encoder {
        Encoder {
            deflate: (level > 0).then(|| Compress::new(flate2::Compression::new(level), false)),
            last,
            out: Vec::new(),
            adler: 1,
            raw_len: 0,
            rows: 0,
        }
    }

    pub(super) fn write(&mut self, mut data: &[u8]) -> Result<(), CoreError> {
        self.raw_len += data.len() as u64;
        self.rows += data.iter().filter(|b| **b == b'\n').count() as u64;
        self.adler = zlib_rs::adler32::adler32(self.adler, data);
        let Some(c) = self.deflate.as_mut() else {
            self.out.extend_from_slice(data);
            return Ok(());
        };
        while !data.is_empty() {
            self.out.reserve((data.len() / 2).max(64 << 10));
            let before = c.total_in();
            c.compress_vec(data, &mut self.out, FlushCompress::None)
                .map_err(|e| CoreError::Internal(format!("compressing: {e}")))?;
            data = &data[(c.total_in() - before) as usize..];
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Piece, CoreError> {
        if let Some(c) = self.deflate.as_mut() {
            let flush = if self.last {
                FlushCompress::Finish
            } else {
                FlushCompress::Full
            };
            loop {
                self.out.reserve(64 << 10);
                let status = c
                    .compress_vec(&[], &mut self.out, flush)
                    .map_err(|e| CoreError::Internal(format!("compressing: {e}")))?;
                let room_left = self.out.len() < self.out.capacity();
                if status == Status::StreamEnd || (!self.last && room_left) {
                    break;
                }
            }
        }
        Ok(Piece {
            bytes: self.out,
            adler: self.adler,
            raw_len: self.raw_len,
            rows: self.rows,
        })
    }
}

/// The two bytes that open a zlib stream (32 KiB window, level hint).
pub(super) fn zlib_header(level: u32) -> [u8; 2] {
    let cmf: u16 = 0x78;
    let flevel: u16 = match level {
        0 | 1 => 0,
        2..=5 => 1,
        6 => 2,
        _ => 3,
    };
    let flg = flevel << 6;
    let check = 31 - ((cmf << 8) | flg) % 31;
    [cmf as u8, (flg | (check % 31)) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn zlib_headers_are_valid() {
        assert_eq!(zlib_header(1), [0x78, 0x01]);
        assert_eq!(zlib_header(2), [0x78, 0x5e]);
        assert_eq!(zlib_header(6), [0x78, 0x9c]);
        assert_eq!(zlib_header(9), [0x78, 0xda]);
    }

    #[test]
    fn pieces_concatenate_into_one_zlib_stream() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{i}\trow {}\n", i * 7).into_bytes())
            .collect();
        let parts = [&data[..100_000], &data[100_000..100_001], &data[100_001..]];
        let mut stream = zlib_header(2).to_vec();
        let mut adler = 1;
        for (i, part) in parts.iter().enumerate() {
            let mut e = Encoder::new(2, i == parts.len() - 1);
            e.write(part).unwrap();
            let p = e.finish().unwrap();
            adler = zlib_rs::adler32::adler32_combine(adler, p.adler, p.raw_len);
            stream.extend_from_slice(&p.bytes);
        }
        stream.extend_from_slice(&adler.to_be_bytes());
        let mut back = Vec::new();
        flate2::read::ZlibDecoder::new(&stream[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
