//! A reader for pg_dump's custom archive format (`pg_dump -Fc`).
//!
//! Reads the header and table of contents, then walks every data block to
//! the end of the stream, checking that the archive is structurally whole:
//! every entry that has data has exactly one block, every block's chunks are
//! complete. It does not decompress data (the member checksum covers bit
//! flips); it proves the archive is complete and readable by pg_restore's
//! parser. Works on a non-seekable stream.

use std::collections::BTreeMap;
use std::io::{self, Read};

use thiserror::Error;

const MAGIC: &[u8; 5] = b"PGDMP";
const FORMAT_CUSTOM: u8 = 1;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const OFFSET_NO_DATA: u8 = 3;

/// Largest archive version this reader knows (1.16, PostgreSQL 17/18).
pub const MAX_VERSION: (u8, u8) = (1, 16);

const fn v(maj: u8, min: u8) -> u32 {
    ((maj as u32) << 16) | ((min as u32) << 8)
}

/// Why a pg_dump archive is not readable.
#[derive(Debug, Error)]
pub enum PgDumpError {
    /// Not a pg_dump custom archive at all.
    #[error("not a pg_dump custom-format archive ({0})")]
    NotCustomFormat(String),
    /// A version newer than this reader knows.
    #[error("pg_dump archive version {0}.{1} is newer than this dbsnap understands (up to 1.16)\nhint: upgrade dbsnap")]
    UnsupportedVersion(u8, u8),
    /// The archive ends early.
    #[error("pg_dump archive is truncated ({0})")]
    Truncated(String),
    /// Something inside is inconsistent.
    #[error("pg_dump archive is corrupt: {0}")]
    Corrupt(String),
    /// Reading failed.
    #[error("reading pg_dump archive: {0}")]
    Io(#[from] io::Error),
}

/// One table-of-contents entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// Dump id.
    pub dump_id: i64,
    /// Whether the entry has a data block.
    pub has_data: bool,
    /// Object kind (`TABLE`, `TABLE DATA`, `SEQUENCE SET`, ...).
    pub desc: String,
    /// Object name.
    pub tag: String,
    /// Schema, if any.
    pub namespace: Option<String>,
    /// Owner, if any.
    pub owner: Option<String>,
}

/// What was learnt from reading a whole archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgDumpSummary {
    /// Archive format version (major, minor, revision).
    pub version: (u8, u8, u8),
    /// Database name recorded by pg_dump.
    pub dbname: Option<String>,
    /// Server version string recorded by pg_dump.
    pub server_version: Option<String>,
    /// pg_dump's own version string.
    pub pg_dump_version: Option<String>,
    /// Compression (algorithm byte for >= 1.15, level before).
    pub compression: i64,
    /// TOC entries.
    pub entries: Vec<TocEntry>,
    /// Number of data blocks read.
    pub data_blocks: usize,
    /// Total bytes of the archive.
    pub bytes: u64,
}

struct Reader<R> {
    inner: R,
    pos: u64,
    version: u32,
    int_size: usize,
    off_size: usize,
}

impl<R: Read> Reader<R> {
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), PgDumpError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(PgDumpError::Truncated(
                format!("ended while reading {what} at byte {}", self.pos),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8, PgDumpError> {
        let mut b = [0u8; 1];
        self.exact(&mut b, what)?;
        Ok(b[0])
    }

    /// Reads one byte, or None at a clean end of stream.
    fn byte_or_eof(&mut self) -> Result<Option<u8>, PgDumpError> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.pos += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn int(&mut self, what: &str) -> Result<i64, PgDumpError> {
        let negative = if self.version > v(1, 0) {
            self.byte(what)? != 0
        } else {
            false
        };
        let mut value: u64 = 0;
        for i in 0..self.int_size {
            let b = self.byte(what)? as u64;
            if i < 8 {
                value |= b << (8 * i);
            }
        }
        let value = value as i64;
        Ok(if negative { -value } else { value })
    }

    fn string(&mut self, what: &str) -> Result<Option<String>, PgDumpError> {
        let len = self.int(what)?;
        if len < 0 {
            return Ok(None);
        }
        if len > 1 << 30 {
            return Err(PgDumpError::Corrupt(format!(
                "string length {len} in {what} at byte {}",
                self.pos
            )));
        }
        // Grow with the data actually read: a corrupt length must not
        // allocate a gigabyte up front.
        let mut buf = Vec::with_capacity((len as usize).min(64 * 1024));
        let got = (&mut self.inner).take(len as u64).read_to_end(&mut buf)?;
        self.pos += got as u64;
        if got as i64 != len {
            return Err(PgDumpError::Truncated(format!(
                "ended while reading {what} at byte {}",
                self.pos
            )));
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), PgDumpError> {
        let mut buf = [0u8; 64 * 1024];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..k], what)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Skips a run of length-prefixed chunks ending with a zero length.
    fn skip_chunks(&mut self, what: &str) -> Result<(), PgDumpError> {
        loop {
            let len = self.int(what)?;
            if len == 0 {
                return Ok(());
            }
            if len < 0 {
                return Err(PgDumpError::Corrupt(format!(
                    "negative chunk length in {what} at byte {}",
                    self.pos
                )));
            }
            self.skip(len as u64, what)?;
        }
    }
}

/// Reads a whole custom-format archive from `input`, checking its structure.
pub fn read_archive<R: Read>(input: R) -> Result<PgDumpSummary, PgDumpError> {
    let mut r = Reader {
        inner: input,
        pos: 0,
        version: 0,
        int_size: 4,
        off_size: 8,
    };
    let mut magic = [0u8; 5];
    r.exact(&mut magic, "magic")
        .map_err(|_| PgDumpError::NotCustomFormat("too short".into()))?;
    if &magic != MAGIC {
        return Err(PgDumpError::NotCustomFormat("no PGDMP magic".into()));
    }
    let vmaj = r.byte("header")?;
    let vmin = r.byte("header")?;
    let vrev = if vmaj > 1 || (vmaj == 1 && vmin > 0) {
        r.byte("header")?
    } else {
        0
    };
    if (vmaj, vmin) > MAX_VERSION {
        return Err(PgDumpError::UnsupportedVersion(vmaj, vmin));
    }
    if vmaj < 1 || (vmaj == 1 && vmin < 7) {
        return Err(PgDumpError::NotCustomFormat(format!(
            "archive version {vmaj}.{vmin} is older than PostgreSQL 7.3"
        )));
    }
    r.version = v(vmaj, vmin);
    r.int_size = r.byte("header")? as usize;
    if !(1..=32).contains(&r.int_size) {
        return Err(PgDumpError::Corrupt(format!(
            "integer size {} in header",
            r.int_size
        )));
    }
    r.off_size = r.byte("header")? as usize;
    if !(1..=32).contains(&r.off_size) {
        return Err(PgDumpError::Corrupt(format!(
            "offset size {} in header",
            r.off_size
        )));
    }
    let format = r.byte("header")?;
    if format != FORMAT_CUSTOM {
        return Err(PgDumpError::NotCustomFormat(format!(
            "archive format {format}, expected custom (1)"
        )));
    }
    let compression = if r.version >= v(1, 15) {
        r.byte("header")? as i64
    } else {
        r.int("header")?
    };
    for _ in 0..7 {
        r.int("creation date")?;
    }
    let dbname = r.string("database name")?;
    let (server_version, pg_dump_version) = if r.version >= v(1, 10) {
        (r.string("server version")?, r.string("pg_dump version")?)
    } else {
        (None, None)
    };
    let count = r.int("TOC count")?;
    if !(0..=10_000_000).contains(&count) {
        return Err(PgDumpError::Corrupt(format!("TOC entry count {count}")));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut wants_data: BTreeMap<i64, bool> = BTreeMap::new();
    for _ in 0..count {
        let dump_id = r.int("TOC entry")?;
        if dump_id <= 0 {
            return Err(PgDumpError::Corrupt(format!(
                "TOC entry id {dump_id} out of range"
            )));
        }
        let had_dumper = r.int("TOC entry")? != 0;
        if r.version >= v(1, 8) {
            r.string("TOC table oid")?;
        }
        r.string("TOC oid")?;
        let tag = r.string("TOC tag")?.unwrap_or_default();
        let desc = r.string("TOC desc")?.unwrap_or_default();
        if r.version >= v(1, 11) {
            r.int("TOC section")?;
        }
        r.string("TOC definition")?;
        r.string("TOC drop statement")?;
        r.string("TOC copy statement")?;
        let namespace = r.string("TOC namespace")?;
        if r.version >= v(1, 10) {
            r.string("TOC tablespace")?;
        }
        if r.version >= v(1, 14) {
            r.string("TOC table access method")?;
        }
        if r.version >= v(1, 16) {
            r.int("TOC relkind")?;
        }
        let owner = r.string("TOC owner")?;
        if r.version >= v(1, 9) {
            r.string("TOC with-oids flag")?;
        }
        while r.string("TOC dependency")?.is_some() {}
        // Custom format: data offset flag plus offset.
        let flag = r.byte("TOC data offset")?;
        r.skip(r.off_size as u64, "TOC data offset")?;
        let has_data = flag != OFFSET_NO_DATA && had_dumper;
        if has_data {
            wants_data.insert(dump_id, false);
        }
        entries.push(TocEntry {
            dump_id,
            has_data,
            desc,
            tag,
            namespace,
            owner,
        });
    }
    let mut data_blocks = 0;
    while let Some(kind) = r.byte_or_eof()? {
        let id = r.int("data block id")?;
        let what = format!("data block {id}");
        match wants_data.get_mut(&id) {
            Some(seen @ false) => *seen = true,
            Some(true) => {
                return Err(PgDumpError::Corrupt(format!(
                    "two data blocks for entry {id}"
                )))
            }
            None => {
                return Err(PgDumpError::Corrupt(format!(
                    "data block for unknown entry {id} at byte {}",
                    r.pos
                )))
            }
        }
        match kind {
            BLK_DATA => r.skip_chunks(&what)?,
            BLK_BLOBS => loop {
                let oid = r.int(&what)?;
                if oid == 0 {
                    break;
                }
                r.skip_chunks(&what)?;
            },
            other => {
                return Err(PgDumpError::Corrupt(format!(
                    "unknown block type {other} at byte {}",
                    r.pos - 1
                )))
            }
        }
        data_blocks += 1;
    }
    if let Some((id, _)) = wants_data.iter().find(|(_, seen)| !**seen) {
        let e = entries.iter().find(|e| e.dump_id == *id);
        return Err(PgDumpError::Truncated(format!(
            "no data for entry {id} ({})",
            e.map(|e| format!("{} {}", e.desc, e.tag))
                .unwrap_or_default()
        )));
    }
    Ok(PgDumpSummary {
        version: (vmaj, vmin, vrev),
        dbname,
        server_version,
        pg_dump_version,
        compression,
        entries,
        data_blocks,
        bytes: r.pos,
    })
}
