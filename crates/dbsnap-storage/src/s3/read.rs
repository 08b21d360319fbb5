//! Reading an object by ranged GETs.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as Key;

use super::{error_chain, Io, FIRST_CHUNK, READ_AHEAD, READ_CHUNK};

/// Reads an object by ranged GETs, a few ahead.
pub(super) struct RangeReader {
    store: Arc<dyn super::Store>,
    io: Io,
    key: Key,
    location: String,
    /// Where the next request starts.
    next: u64,
    /// Its size.
    chunk: u64,
    end: u64,
    ahead: VecDeque<tokio::task::JoinHandle<object_store::Result<Bytes>>>,
    current: Bytes,
}

impl RangeReader {
    /// Reads `key` (`end` bytes long) from `offset`.
    pub(super) fn new(
        store: Arc<dyn super::Store>,
        io: Io,
        key: Key,
        location: String,
        offset: u64,
        end: u64,
    ) -> RangeReader {
        RangeReader {
            store,
            io,
            key,
            location,
            next: offset,
            chunk: FIRST_CHUNK,
            end,
            ahead: VecDeque::new(),
            current: Bytes::new(),
        }
    }

    fn request_ahead(&mut self) {
        while self.ahead.len() < READ_AHEAD && self.next < self.end {
            let to = (self.next + self.chunk).min(self.end);
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
            let (store, key, range) = (self.store.clone(), self.key.clone(), self.next..to);
            self.ahead.push_back(
                self.io
                    .spawn(async move { store.get_range(&key, range).await }),
            );
            self.next = to;
        }
    }
}

/// The kind of a read that failed on the way (a request that failed
/// after its retries): archive readers report it as a storage failure,
/// never as a damaged snapshot.
pub const LOST: io::ErrorKind = io::ErrorKind::ConnectionAborted;

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            self.request_ahead();
            let Some(first) = self.ahead.pop_front() else {
                return Ok(0);
            };
            self.current = match self.io.join(first) {
                Ok(Ok(b)) => b,
                // A failed request is the connection's fault, not the
                // snapshot's: a kind readers pass on as I/O, not damage.
                Ok(Err(e)) => {
                    return Err(io::Error::new(
                        LOST,
                        format!("reading {}: {}", self.location, error_chain(&e)),
                    ))
                }
                Err(e) => return Err(io::Error::new(LOST, e.to_string())),
            };
            self.request_ahead();
            if self.current.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        for h in &self.ahead {
            h.abort();
        }
    }
}
