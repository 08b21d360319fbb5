//! Moving a byte stream in large chunks: dump output into the archive,
//! archive data into COPY. One loop, so that interrupted reads, chunk
//! sizes and the read/write error split are handled once.

use std::io::{self, Read};

/// Chunk size for streaming copies.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Which side of a chunked copy failed.
#[derive(Debug)]
pub(crate) enum ChunkError<E> {
    /// Reading the input.
    Read(io::Error),
    /// The sink refused a chunk.
    Sink(E),
}

/// Reads `input` to its end in full chunks of [`CHUNK`] bytes (the last
/// one shorter) and hands each to `sink`; returns the bytes moved.
pub(crate) fn for_each_chunk<E>(
    input: &mut dyn Read,
    mut sink: impl FnMut(Vec<u8>) -> Result<(), E>,
) -> Result<u64, ChunkError<E>> {
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ChunkError::Read(e)),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        buf.truncate(filled);
        total += filled as u64;
        sink(buf).map_err(ChunkError::Sink)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_chunks_then_the_rest_and_errors_by_side() {
        let data: Vec<u8> = (0..CHUNK * 2 + 10).map(|i| i as u8).collect();
        let mut sizes = Vec::new();
        let mut out = Vec::new();
        let n = for_each_chunk(&mut &data[..], |c| -> Result<(), ()> {
            sizes.push(c.len());
            out.extend_from_slice(&c);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(sizes, vec![CHUNK, CHUNK, 10]);
        assert_eq!(out, data);
        let refused = for_each_chunk(&mut &data[..], |_| Err("full"));
        assert!(matches!(refused, Err(ChunkError::Sink("full"))));
    }
}
