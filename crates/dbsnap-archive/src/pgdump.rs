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

/// How data blocks are compressed (one type with the writer's).
pub(crate) use crate::custom::BlockCompression as Compression;

const MAGIC: &[u8; 5] = b"PGDMP";
const FORMAT_CUSTOM: u8 = 1;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const OFFSET_NO_DATA: u8 = 3;

/// Largest archive version this reader knows (1.16, PostgreSQL 17/18).
pub const MAX_VERSION: (u8, u8) = (1, 16);

pub(crate) const fn v(maj: u8, min: u8) -> u32 {
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
    /// A feature this reader does not handle.
    #[error("pg_dump archive uses {0}")]
    Unsupported(String),
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
    /// Definition (SQL), if any.
    pub defn: Option<String>,
    /// COPY statement for TABLE DATA entries.
    pub copy_stmt: Option<String>,
    /// Dump ids this entry depends on.
    pub dependencies: Vec<i64>,
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
    /// Compression algorithm name (`none`, `gzip`, `lz4`, `zstd`).
    pub compression_name: &'static str,
    /// TOC entries.
    pub entries: Vec<TocEntry>,
    /// Number of data blocks read.
    pub data_blocks: usize,
    /// Total bytes of the archive.
    pub bytes: u64,
}

pub(crate) struct Reader<R> {
    pub(crate) inner: R,
    pub(crate) pos: u64,
    pub(crate) version: u32,
    pub(crate) int_size: usize,
    pub(crate) off_size: usize,
}

impl<R: Read> Reader<R> {
    /// A reader of the same stream and position, borrowing this one's input.
    pub(crate) fn by_ref(&mut self) -> Reader<&mut R> {
        Reader {
            inner: &mut self.inner,
            pos: self.pos,
            version: self.version,
            int_size: self.int_size,
            off_size: self.off_size,
        }
    }

    pub(crate) fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), PgDumpError> {
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

    pub(crate) fn byte(&mut self, what: &str) -> Result<u8, PgDumpError> {
        let mut b = [0u8; 1];
        self.exact(&mut b, what)?;
        Ok(b[0])
    }

    /// Reads one byte, or None at a clean end of stream.
    pub(crate) fn byte_or_eof(&mut self) -> Result<Option<u8>, PgDumpError> {
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

    pub(crate) fn int(&mut self, what: &str) -> Result<i64, PgDumpError> {
        let first = self.byte(what)?;
        self.int_from(first, what)
    }

    /// An integer, or None at a clean end of stream before it.
    pub(crate) fn int_or_eof(&mut self, what: &str) -> Result<Option<i64>, PgDumpError> {
        match self.byte_or_eof()? {
            Some(first) => self.int_from(first, what).map(Some),
            None => Ok(None),
        }
    }

    /// The rest of an integer whose first byte was `first`.
    fn int_from(&mut self, first: u8, what: &str) -> Result<i64, PgDumpError> {
        let signed = self.version > v(1, 0);
        let negative = signed && first != 0;
        let mut value: u64 = 0;
        for i in 0..self.int_size {
            let b = if i == 0 && !signed {
                first
            } else {
                self.byte(what)?
            } as u64;
            if i < 8 {
                value |= b << (8 * i);
            }
        }
        let value = value as i64;
        Ok(if negative { -value } else { value })
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<Option<String>, PgDumpError> {
        Ok(self
            .raw_string(what)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// A length-prefixed string as bytes (the database's encoding).
    pub(crate) fn raw_string(&mut self, what: &str) -> Result<Option<Vec<u8>>, PgDumpError> {
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
        Ok(Some(buf))
    }

    pub(crate) fn skip(&mut self, mut n: u64, what: &str) -> Result<(), PgDumpError> {
        let mut buf = [0u8; 64 * 1024];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..k], what)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Skips a run of length-prefixed chunks ending with a zero length.
    pub(crate) fn skip_chunks(&mut self, what: &str) -> Result<(), PgDumpError> {
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
    read_archive_inner(input, false, &mut |_| Ok(()))
}

/// Reads a whole archive, handing `visit` the table of contents first, then
/// every table's COPY data and every large object's bytes, decompressed, in
/// archive order. Memory stays bounded: data is a stream.
pub fn read_archive_data<R: Read, E>(
    input: R,
    mut visit: impl FnMut(DataItem<'_>) -> Result<(), E>,
) -> Result<PgDumpSummary, DataError<E>> {
    let mut failed: Option<E> = None;
    let result = read_archive_inner(input, true, &mut |item| match visit(item) {
        Ok(()) => Ok(()),
        Err(e) => {
            failed = Some(e);
            Err(PgDumpError::Unsupported("an aborted read".into()))
        }
    });
    result.map_err(|e| match failed.take() {
        Some(v) => DataError::Visit(v),
        None => DataError::Archive(e),
    })
}

fn read_archive_inner<R: Read>(
    input: R,
    wants_contents: bool,
    visit: &mut dyn FnMut(DataItem<'_>) -> Result<(), PgDumpError>,
) -> Result<PgDumpSummary, PgDumpError> {
    let mut r = Reader {
        inner: input,
        pos: 0,
        version: 0,
        int_size: 4,
        off_size: 8,
    };
    let header = read_header(&mut r)?;
    let count = r.int("TOC count")?;
    if !(0..=10_000_000).contains(&count) {
        return Err(PgDumpError::Corrupt(format!("TOC entry count {count}")));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        entries.push(read_toc_entry(&mut r)?);
    }
    let compression_algo = Compression::from_header(r.version, header.compression)?;
    visit(DataItem::Toc(&entries))?;
    let data_blocks = read_data_blocks(&mut r, &entries, compression_algo, wants_contents, visit)?;
    Ok(PgDumpSummary {
        compression_name: compression_algo.name(),
        version: header.version,
        dbname: header.dbname,
        server_version: header.server_version,
        pg_dump_version: header.pg_dump_version,
        compression: header.compression,
        entries,
        data_blocks,
        bytes: r.pos,
    })
}

/// The archive header, before the table of contents.
pub(crate) struct Header {
    pub(crate) version: (u8, u8, u8),
    pub(crate) compression: i64,
    pub(crate) dbname: Option<String>,
    pub(crate) server_version: Option<String>,
    pub(crate) pg_dump_version: Option<String>,
}

/// Reads and checks the header; sets the reader's version and sizes.
pub(crate) fn read_header<R: Read>(r: &mut Reader<R>) -> Result<Header, PgDumpError> {
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
    Ok(Header {
        version: (vmaj, vmin, vrev),
        compression,
        dbname,
        server_version,
        pg_dump_version,
    })
}

/// Reads one table-of-contents entry (fields by archive version).
fn read_toc_entry<R: Read>(r: &mut Reader<R>) -> Result<TocEntry, PgDumpError> {
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
    let defn = r.string("TOC definition")?;
    r.string("TOC drop statement")?;
    let copy_stmt = r.string("TOC copy statement")?;
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
    let mut dependencies = Vec::new();
    while let Some(d) = r.string("TOC dependency")? {
        dependencies.extend(d.trim().parse::<i64>().ok());
    }
    // Custom format: data offset flag plus offset.
    let flag = r.byte("TOC data offset")?;
    r.skip(r.off_size as u64, "TOC data offset")?;
    Ok(TocEntry {
        dump_id,
        has_data: flag != OFFSET_NO_DATA && had_dumper,
        desc,
        tag,
        namespace,
        owner,
        defn,
        copy_stmt,
        dependencies,
    })
}

/// Reads every data block (streaming its contents to `visit` when
/// `wants_contents`, else skipping them); each entry with data must have
/// exactly one. Returns how many blocks were read.
fn read_data_blocks<R: Read>(
    r: &mut Reader<R>,
    entries: &[TocEntry],
    compression: Compression,
    wants_contents: bool,
    visit: &mut dyn FnMut(DataItem<'_>) -> Result<(), PgDumpError>,
) -> Result<usize, PgDumpError> {
    let mut seen: BTreeMap<i64, bool> = entries
        .iter()
        .filter(|e| e.has_data)
        .map(|e| (e.dump_id, false))
        .collect();
    let mut data_blocks = 0;
    while let Some(kind) = r.byte_or_eof()? {
        let id = r.int("data block id")?;
        let what = format!("data block {id}");
        match seen.get_mut(&id) {
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
        let entry = entries
            .iter()
            .find(|e| e.dump_id == id)
            .expect("known entry");
        match kind {
            BLK_DATA => {
                if wants_contents {
                    stream_item(r, compression, &mut |data| {
                        visit(DataItem::TableData { entry, data })
                    })?;
                } else {
                    r.skip_chunks(&what)?;
                }
            }
            BLK_BLOBS => loop {
                let oid = r.int(&what)?;
                if oid == 0 {
                    break;
                }
                if wants_contents {
                    let oid = u32::try_from(oid).map_err(|_| {
                        PgDumpError::Corrupt(format!("large object oid {oid} out of range"))
                    })?;
                    stream_item(r, compression, &mut |data| {
                        visit(DataItem::LargeObject { entry, oid, data })
                    })?;
                } else {
                    r.skip_chunks(&what)?;
                }
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
    if let Some((id, _)) = seen.iter().find(|(_, seen)| !**seen) {
        let e = entries.iter().find(|e| e.dump_id == *id);
        return Err(PgDumpError::Truncated(format!(
            "no data for entry {id} ({})",
            e.map(|e| format!("{} {}", e.desc, e.tag))
                .unwrap_or_default()
        )));
    }
    Ok(data_blocks)
}

/// What [`read_archive_data`] hands its visitor.
pub enum DataItem<'a> {
    /// The table of contents, before any data.
    Toc(&'a [TocEntry]),
    /// A `TABLE DATA` entry's COPY text.
    TableData {
        /// The entry (its `copy_stmt` says where the data goes).
        entry: &'a TocEntry,
        /// The decompressed COPY data.
        data: &'a mut dyn Read,
    },
    /// One large object's contents.
    LargeObject {
        /// The BLOBS entry.
        entry: &'a TocEntry,
        /// Its oid.
        oid: u32,
        /// The decompressed bytes.
        data: &'a mut dyn Read,
    },
}

/// An error of [`read_archive_data`]: the archive's, or the visitor's own.
#[derive(Debug)]
pub enum DataError<E> {
    /// The archive is unreadable.
    Archive(PgDumpError),
    /// The visitor failed.
    Visit(E),
}

impl<E> From<PgDumpError> for DataError<E> {
    fn from(e: PgDumpError) -> Self {
        DataError::Archive(e)
    }
}

impl<E: std::fmt::Display> std::fmt::Display for DataError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataError::Archive(e) => e.fmt(f),
            DataError::Visit(e) => e.fmt(f),
        }
    }
}

impl Compression {
    pub(crate) fn from_header(version: u32, value: i64) -> Result<Self, PgDumpError> {
        if version >= v(1, 15) {
            return match value {
                0 => Ok(Compression::None),
                1 => Ok(Compression::Gzip),
                2 => Ok(Compression::Lz4),
                3 => Ok(Compression::Zstd),
                other => Err(PgDumpError::Corrupt(format!(
                    "unknown compression algorithm {other}"
                ))),
            };
        }
        // Before 1.15 the header holds a zlib level: 0 means none.
        Ok(if value == 0 {
            Compression::None
        } else {
            Compression::Gzip
        })
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub(crate) fn reader<'a>(
        self,
        chunks: impl Read + 'a,
    ) -> Result<Box<dyn Read + 'a>, PgDumpError> {
        match self {
            Compression::None => Ok(Box::new(chunks)),
            Compression::Gzip => Ok(Box::new(flate2::read::ZlibDecoder::new(chunks))),
            // pg_dump 16+ writes each data block as zstd frames, or LZ4 frames.
            Compression::Zstd => Ok(Box::new(
                zstd::stream::read::Decoder::new(chunks)
                    .map_err(|e| PgDumpError::Corrupt(format!("zstd data block: {e}")))?,
            )),
            Compression::Lz4 => Ok(Box::new(lz4_flex::frame::FrameDecoder::new(chunks))),
        }
    }
}

/// Hands one data stream (a table's, or a large object's) to `f`,
/// decompressed, then consumes whatever `f` left unread.
fn stream_item<R: Read>(
    r: &mut Reader<R>,
    compression: Compression,
    f: &mut dyn FnMut(&mut dyn Read) -> Result<(), PgDumpError>,
) -> Result<(), PgDumpError> {
    let mut chunks = ChunkReader::new(r.by_ref());
    let mut data = compression.reader(&mut chunks)?;
    f(&mut data)?;
    drop(data);
    let drained = chunks.drain();
    r.pos = chunks.r.pos;
    drained
}

/// The bytes of one data stream: length-prefixed chunks ending with a zero length.
pub(crate) struct ChunkReader<R: Read> {
    pub(crate) r: Reader<R>,
    remaining: u64,
    done: bool,
    /// The input's end, between chunks, ends the stream (a run of chunks
    /// cut out of a block); else only a zero length does.
    pub(crate) open_ended: bool,
}

impl<R: Read> ChunkReader<R> {
    /// Reads the chunks at `r`'s position.
    pub(crate) fn new(r: Reader<R>) -> Self {
        ChunkReader {
            r,
            remaining: 0,
            done: false,
            open_ended: false,
        }
    }

    /// Consumes what the consumer left unread, up to the end marker.
    fn drain(&mut self) -> Result<(), PgDumpError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(io_to_pgdump(e)),
            }
        }
    }
}

fn io_to_pgdump(e: io::Error) -> PgDumpError {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<PgDumpError>() {
            Ok(p) => *p,
            Err(other) => PgDumpError::Corrupt(format!("compressed data: {other}")),
        },
        None => PgDumpError::Corrupt("unreadable data block".into()),
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.remaining == 0 && !self.done {
            let len = if self.open_ended {
                self.r.int_or_eof("data chunk").map_err(io::Error::other)?
            } else {
                Some(self.r.int("data chunk").map_err(io::Error::other)?)
            };
            let Some(len) = len else {
                self.done = true;
                break;
            };
            if len == 0 {
                self.done = true;
            } else if len < 0 {
                return Err(io::Error::other(PgDumpError::Corrupt(format!(
                    "negative chunk length at byte {}",
                    self.r.pos
                ))));
            } else {
                self.remaining = len as u64;
            }
        }
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.remaining) as usize;
        let got = self.r.inner.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::Error::other(PgDumpError::Truncated(format!(
                "ended inside a data chunk at byte {}",
                self.r.pos
            ))));
        }
        self.r.pos += got as u64;
        self.remaining -= got as u64;
        Ok(got)
    }
}

/// The COPY rows of a `TABLE DATA` stream, without pg_dump's end-of-data
/// marker (`\.` and blank lines), counting the rows that pass through.
pub struct CopyRows<R: Read> {
    inner: R,
    /// Bytes read but not yet released: the marker may be among them.
    held: Vec<u8>,
    eof: bool,
    rows: u64,
}

/// How many trailing bytes are held back until the end is known.
const MARKER_WINDOW: usize = 64;

impl<R: Read> CopyRows<R> {
    /// Wraps a decompressed TABLE DATA stream.
    pub fn new(inner: R) -> Self {
        CopyRows {
            inner,
            held: Vec::new(),
            eof: false,
            rows: 0,
        }
    }

    /// Rows (newline-terminated lines) released so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn strip_marker(&mut self) {
        while self.held.ends_with(b"\n\n") {
            self.held.pop();
        }
        let at_line_start = self.held.len() == 3
            || (self.held.len() > 3 && self.held[self.held.len() - 4] == b'\n');
        if self.held.ends_with(b"\\.\n") && at_line_start {
            self.held.truncate(self.held.len() - 3);
        }
    }
}

impl<R: Read> Read for CopyRows<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let releasable = if self.eof {
                self.held.len()
            } else {
                self.held.len().saturating_sub(MARKER_WINDOW)
            };
            if releasable > 0 {
                let n = releasable.min(buf.len());
                buf[..n].copy_from_slice(&self.held[..n]);
                self.rows += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                self.held.drain(..n);
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            let mut chunk = [0u8; 64 * 1024];
            let got = self.inner.read(&mut chunk)?;
            if got == 0 {
                self.eof = true;
                self.strip_marker();
            } else {
                self.held.extend_from_slice(&chunk[..got]);
            }
        }
    }
}
