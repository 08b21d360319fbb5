//! Writing pg_dump custom-format archives (`pg_dump -Fc`).
//!
//! The native engine lets pg_dump write the schema and reads its header and
//! table of contents as they are ([`Head`]: every field kept, as bytes in
//! the database's encoding, never re-encoded), adds the entries whose data
//! it produces itself, and frames data blocks exactly as pg_restore reads
//! them. Pure: bytes in, bytes out.

use std::io::{BufReader, Read, Seek};

use crate::pgdump::{read_header, v, ChunkReader, Compression, PgDumpError, Reader};

/// Section numbers of pg_dump's `teSection`.
pub mod section {
    /// Not in a section (comments, ACLs).
    pub const NONE: i64 = 1;
    /// Before the data.
    pub const PRE_DATA: i64 = 2;
    /// The data.
    pub const DATA: i64 = 3;
    /// After the data (indexes, constraints, triggers).
    pub const POST_DATA: i64 = 4;
}

/// Data offset flag: the entry has data, its position is not recorded.
pub const OFFSET_POS_NOT_SET: u8 = 1;
/// Data offset flag: the entry has data at the recorded position.
pub const OFFSET_POS_SET: u8 = 2;
/// Data offset flag: the entry has no data.
pub const OFFSET_NO_DATA: u8 = 3;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

/// Where one data block lies, in bytes from the archive's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpan {
    /// The entry it belongs to.
    pub dump_id: i64,
    /// Whether it holds large objects (else one entry's data stream).
    pub blobs: bool,
    /// Its first byte (the block type).
    pub start: u64,
    /// Its first chunk header, after the type and the id.
    pub data: u64,
    /// One past its last byte.
    pub end: u64,
}

/// How an archive's data blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCompression {
    /// Plain bytes.
    None,
    /// zlib streams (pg_dump's "gzip").
    Gzip,
    /// LZ4 frames (pg_dump 16+).
    Lz4,
    /// zstd frames (pg_dump 16+).
    Zstd,
}

/// One table-of-contents entry with every field pg_dump wrote.
///
/// Fields an archive version does not have stay at their defaults and are
/// not written for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntry {
    /// Dump id, unique in the archive.
    pub dump_id: i64,
    /// Whether pg_dump had a data dumper for it.
    pub had_dumper: bool,
    /// Catalog of the object (1.8+).
    pub table_oid: Option<Vec<u8>>,
    /// Object oid.
    pub oid: Option<Vec<u8>>,
    /// Object name.
    pub tag: Option<Vec<u8>>,
    /// Kind (`TABLE`, `TABLE DATA`, ...).
    pub desc: Option<Vec<u8>>,
    /// Section (1.11+), see [`section`].
    pub section: i64,
    /// SQL that creates it.
    pub defn: Option<Vec<u8>>,
    /// SQL that drops it.
    pub drop_stmt: Option<Vec<u8>>,
    /// COPY statement of TABLE DATA.
    pub copy_stmt: Option<Vec<u8>>,
    /// Schema.
    pub namespace: Option<Vec<u8>>,
    /// Tablespace (1.10+).
    pub tablespace: Option<Vec<u8>>,
    /// Table access method (1.14+).
    pub tableam: Option<Vec<u8>>,
    /// Relation kind (1.16+).
    pub relkind: i64,
    /// Owner.
    pub owner: Option<Vec<u8>>,
    /// `with oids` flag text (1.9+).
    pub with_oids: Option<Vec<u8>>,
    /// Dump ids it depends on, as pg_dump wrote them (decimal text).
    pub deps: Vec<Vec<u8>>,
    /// Data offset flag ([`OFFSET_POS_NOT_SET`], ...).
    pub offset_flag: u8,
    /// Data offset, when [`OFFSET_POS_SET`].
    pub offset: u64,
}

impl RawEntry {
    /// The kind as text.
    pub fn desc(&self) -> &str {
        text(&self.desc)
    }

    /// The name as text.
    pub fn tag(&self) -> &str {
        text(&self.tag)
    }

    /// The schema as text (empty when none).
    pub fn namespace(&self) -> &str {
        text(&self.namespace)
    }

    /// The object's oid, if it has one.
    pub fn oid(&self) -> Option<u32> {
        text(&self.oid).parse().ok().filter(|o| *o != 0)
    }

    /// Whether a data block belongs to this entry.
    pub fn has_data(&self) -> bool {
        self.had_dumper && self.offset_flag != OFFSET_NO_DATA
    }
}

fn text(b: &Option<Vec<u8>>) -> &str {
    b.as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

/// An archive's header and table of contents, read as pg_dump wrote them.
#[derive(Debug, Clone)]
pub struct Head {
    raw_header: Vec<u8>,
    version: u32,
    int_size: usize,
    off_size: usize,
    compression: BlockCompression,
    /// The entries, in archive order.
    pub entries: Vec<RawEntry>,
}

/// Copies what passes through into `seen` while `on`.
struct Recorder<'a, R> {
    inner: &'a mut R,
    seen: Vec<u8>,
    on: bool,
}

impl<R: Read> Read for Recorder<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.on {
            self.seen.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// Reads the header and table of contents from `input`, leaving it at the
/// first data block.
pub fn read_head<R: Read>(input: &mut R) -> Result<Head, PgDumpError> {
    let mut r = Reader {
        inner: Recorder {
            inner: input,
            seen: Vec::new(),
            on: true,
        },
        pos: 0,
        version: 0,
        int_size: 4,
        off_size: 8,
    };
    let header = read_header(&mut r)?;
    r.inner.on = false;
    let raw_header = std::mem::take(&mut r.inner.seen);
    let compression = Compression::from_header(r.version, header.compression)?;
    let count = r.int("TOC count")?;
    if !(0..=10_000_000).contains(&count) {
        return Err(PgDumpError::Corrupt(format!("TOC entry count {count}")));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        entries.push(read_entry(&mut r)?);
    }
    Ok(Head {
        raw_header,
        version: r.version,
        int_size: r.int_size,
        off_size: r.off_size,
        compression,
        entries,
    })
}

fn read_entry<R: Read>(r: &mut Reader<R>) -> Result<RawEntry, PgDumpError> {
    let version = r.version;
    let mut e = RawEntry {
        dump_id: r.int("TOC entry")?,
        had_dumper: r.int("TOC entry")? != 0,
        ..RawEntry::default()
    };
    if version >= v(1, 8) {
        e.table_oid = r.raw_string("TOC table oid")?;
    }
    e.oid = r.raw_string("TOC oid")?;
    e.tag = r.raw_string("TOC tag")?;
    e.desc = r.raw_string("TOC desc")?;
    if version >= v(1, 11) {
        e.section = r.int("TOC section")?;
    }
    e.defn = r.raw_string("TOC definition")?;
    e.drop_stmt = r.raw_string("TOC drop statement")?;
    e.copy_stmt = r.raw_string("TOC copy statement")?;
    e.namespace = r.raw_string("TOC namespace")?;
    if version >= v(1, 10) {
        e.tablespace = r.raw_string("TOC tablespace")?;
    }
    if version >= v(1, 14) {
        e.tableam = r.raw_string("TOC table access method")?;
    }
    if version >= v(1, 16) {
        e.relkind = r.int("TOC relkind")?;
    }
    e.owner = r.raw_string("TOC owner")?;
    if version >= v(1, 9) {
        e.with_oids = r.raw_string("TOC with-oids flag")?;
    }
    while let Some(d) = r.raw_string("TOC dependency")? {
        e.deps.push(d);
    }
    e.offset_flag = r.byte("TOC data offset")?;
    let mut offset: u64 = 0;
    for i in 0..r.off_size {
        let b = r.byte("TOC data offset")? as u64;
        if i < 8 {
            offset |= b << (8 * i);
        }
    }
    e.offset = offset;
    Ok(e)
}

impl Head {
    /// Length in bytes of the header and table of contents as written by
    /// [`Head::to_bytes`] (and as read: the bytes are pg_dump's own).
    pub fn byte_len(&self) -> u64 {
        self.to_bytes().len() as u64
    }

    fn reader<R: Read>(&self, inner: R, pos: u64) -> Reader<R> {
        Reader {
            inner,
            pos,
            version: self.version,
            int_size: self.int_size,
            off_size: self.off_size,
        }
    }

    /// Finds every data block of the archive without reading their
    /// contents: `input` is at byte `from` (right after the head), the
    /// archive ends at byte `end`. Each block must belong to an entry with
    /// data, once.
    pub fn scan_blocks<R: Read + Seek>(
        &self,
        input: &mut BufReader<R>,
        from: u64,
        end: u64,
    ) -> Result<Vec<BlockSpan>, PgDumpError> {
        let mut expected: std::collections::BTreeMap<i64, bool> = self
            .entries
            .iter()
            .filter(|e| e.has_data())
            .map(|e| (e.dump_id, false))
            .collect();
        let mut r = self.reader(input, from);
        let mut blocks = Vec::new();
        while r.pos < end {
            let start = r.pos;
            let kind = r.byte("data block type")?;
            let dump_id = r.int("data block id")?;
            match expected.get_mut(&dump_id) {
                Some(seen @ false) => *seen = true,
                _ => {
                    return Err(PgDumpError::Corrupt(format!(
                        "unexpected data block for entry {dump_id} at byte {start}"
                    )))
                }
            }
            let data = r.pos;
            match kind {
                BLK_DATA => skip_chunks(&mut r, end)?,
                BLK_BLOBS => {
                    while r.int("large object oid")? != 0 {
                        skip_chunks(&mut r, end)?;
                    }
                }
                other => {
                    return Err(PgDumpError::Corrupt(format!(
                        "unknown block type {other} at byte {start}"
                    )))
                }
            }
            blocks.push(BlockSpan {
                dump_id,
                blobs: kind == BLK_BLOBS,
                start,
                data,
                end: r.pos,
            });
        }
        if r.pos != end {
            return Err(PgDumpError::Truncated(format!(
                "a data block runs past the end of the archive ({} > {end})",
                r.pos
            )));
        }
        if let Some((id, _)) = expected.iter().find(|(_, seen)| !**seen) {
            return Err(PgDumpError::Truncated(format!("no data for entry {id}")));
        }
        Ok(blocks)
    }

    /// The decompressed contents of a data block (not large objects):
    /// `input` is at the block's first chunk header ([`BlockSpan::data`]).
    pub fn block_contents<'a, R: Read + 'a>(
        &self,
        input: R,
    ) -> Result<Box<dyn Read + 'a>, PgDumpError> {
        self.compression
            .reader(ChunkReader::new(self.reader(input, 0)))
    }

    /// The data of one piece of a split table's block (see
    /// [`crate::snapshot::PieceIndex`]): `input` holds exactly its chunks.
    /// Raw deflate pieces are inflated on their own; the caller checks
    /// length and Adler-32 against the index.
    pub fn piece_contents<'a, R: Read + 'a>(
        &self,
        input: R,
    ) -> Result<Box<dyn Read + 'a>, PgDumpError> {
        let mut chunks = ChunkReader::new(self.reader(input, 0));
        chunks.open_ended = true;
        match self.compression {
            BlockCompression::None => Ok(Box::new(chunks)),
            BlockCompression::Gzip => Ok(Box::new(Inflate {
                inner: chunks,
                state: flate2::Decompress::new(false),
                buf: vec![0; 64 << 10],
                pos: 0,
                len: 0,
                eof: false,
            })),
            other => Err(PgDumpError::Unsupported(format!(
                "pieces compressed with {other:?}"
            ))),
        }
    }

    /// How data blocks are compressed.
    pub fn compression(&self) -> BlockCompression {
        self.compression
    }

    /// Archive version as (major, minor).
    pub fn version(&self) -> (u8, u8) {
        ((self.version >> 16) as u8, (self.version >> 8) as u8)
    }

    /// The largest dump id in use, by an entry or as a dependency (pg_dump
    /// refers to internal objects that have no entry).
    pub fn max_dump_id(&self) -> i64 {
        self.entries
            .iter()
            .flat_map(|e| {
                e.deps
                    .iter()
                    .filter_map(|d| std::str::from_utf8(d).ok()?.trim().parse().ok())
                    .chain([e.dump_id])
            })
            .max()
            .unwrap_or(0)
    }

    /// The header and table of contents as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.raw_header.clone();
        self.put_int(&mut out, self.entries.len() as i64);
        for e in &self.entries {
            self.put_entry(&mut out, e);
        }
        out
    }

    fn put_entry(&self, out: &mut Vec<u8>, e: &RawEntry) {
        let version = self.version;
        self.put_int(out, e.dump_id);
        self.put_int(out, i64::from(e.had_dumper));
        if version >= v(1, 8) {
            self.put_str(out, &e.table_oid);
        }
        self.put_str(out, &e.oid);
        self.put_str(out, &e.tag);
        self.put_str(out, &e.desc);
        if version >= v(1, 11) {
            self.put_int(out, e.section);
        }
        self.put_str(out, &e.defn);
        self.put_str(out, &e.drop_stmt);
        self.put_str(out, &e.copy_stmt);
        self.put_str(out, &e.namespace);
        if version >= v(1, 10) {
            self.put_str(out, &e.tablespace);
        }
        if version >= v(1, 14) {
            self.put_str(out, &e.tableam);
        }
        if version >= v(1, 16) {
            self.put_int(out, e.relkind);
        }
        self.put_str(out, &e.owner);
        if version >= v(1, 9) {
            self.put_str(out, &e.with_oids);
        }
        for d in &e.deps {
            self.put_str(out, &Some(d.clone()));
        }
        self.put_str(out, &None);
        out.push(e.offset_flag);
        for i in 0..self.off_size {
            out.push(if i < 8 {
                (e.offset >> (8 * i)) as u8
            } else {
                0
            });
        }
    }

    /// pg_dump's integer: a sign byte, then the magnitude little-endian.
    pub fn put_int(&self, out: &mut Vec<u8>, value: i64) {
        out.push(u8::from(value < 0));
        let magnitude = value.unsigned_abs();
        for i in 0..self.int_size {
            out.push(if i < 8 {
                (magnitude >> (8 * i)) as u8
            } else {
                0
            });
        }
    }

    fn put_str(&self, out: &mut Vec<u8>, s: &Option<Vec<u8>>) {
        match s {
            None => self.put_int(out, -1),
            Some(b) => {
                self.put_int(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }

    /// The start of entry `dump_id`'s data block.
    pub fn block_start(&self, out: &mut Vec<u8>, dump_id: i64) {
        out.push(BLK_DATA);
        self.put_int(out, dump_id);
    }

    /// One chunk of a data block (never empty: a zero length ends the block).
    pub fn chunk_header(&self, out: &mut Vec<u8>, len: usize) {
        debug_assert!(len > 0);
        self.put_int(out, len as i64);
    }

    /// The end of a data block.
    pub fn block_end(&self, out: &mut Vec<u8>) {
        self.put_int(out, 0);
    }
}

/// Inflates raw deflate that may end on a flush point rather than a final
/// block (a piece): its end is the input's end.
struct Inflate<R: Read> {
    inner: R,
    state: flate2::Decompress,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
}

impl<R: Read> Read for Inflate<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos == self.len && !self.eof {
                self.len = self.inner.read(&mut self.buf)?;
                self.pos = 0;
                self.eof = self.len == 0;
            }
            let (before_in, before_out) = (self.state.total_in(), self.state.total_out());
            let status = self
                .state
                .decompress(
                    &self.buf[self.pos..self.len],
                    out,
                    flate2::FlushDecompress::None,
                )
                .map_err(std::io::Error::other)?;
            self.pos += (self.state.total_in() - before_in) as usize;
            let produced = (self.state.total_out() - before_out) as usize;
            if produced > 0 || status == flate2::Status::StreamEnd {
                return Ok(produced);
            }
            if self.eof && self.pos == self.len {
                return Ok(0);
            }
        }
    }
}

/// Skips a run of chunks by seeking, checking each stays before `end`.
fn skip_chunks<R: Read + Seek>(
    r: &mut Reader<&mut BufReader<R>>,
    end: u64,
) -> Result<(), PgDumpError> {
    loop {
        let len = r.int("data chunk length")?;
        if len == 0 {
            return Ok(());
        }
        if len < 0 || r.pos + len as u64 > end {
            return Err(PgDumpError::Corrupt(format!(
                "data chunk of {len} bytes at byte {} runs past the end of the archive",
                r.pos
            )));
        }
        r.inner.seek_relative(len)?;
        r.pos += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_head_reads_back_the_same() {
        let mut raw = b"PGDMP\x01\x10\x00\x04\x08\x01\x01".to_vec();
        let head0 = Head {
            raw_header: Vec::new(),
            version: v(1, 16),
            int_size: 4,
            off_size: 8,
            compression: BlockCompression::Gzip,
            entries: Vec::new(),
        };
        for x in [0, 1, 2, 3, 4, 5, 126] {
            head0.put_int(&mut raw, x);
        }
        for s in ["exp", "18.6", "18.6"] {
            head0.put_str(&mut raw, &Some(s.as_bytes().to_vec()));
        }
        let entry = RawEntry {
            dump_id: 7,
            had_dumper: true,
            table_oid: Some(b"0".to_vec()),
            oid: Some(b"16386".to_vec()),
            tag: Some("tåble".as_bytes().to_vec()),
            desc: Some(b"TABLE DATA".to_vec()),
            section: section::DATA,
            defn: Some(Vec::new()),
            drop_stmt: Some(Vec::new()),
            copy_stmt: Some(b"COPY public.t (a) FROM stdin;\n".to_vec()),
            namespace: Some(b"public".to_vec()),
            tablespace: None,
            tableam: None,
            relkind: 0,
            owner: Some(b"postgres".to_vec()),
            with_oids: Some(b"false".to_vec()),
            deps: vec![b"3".to_vec()],
            offset_flag: OFFSET_POS_SET,
            offset: 123_456,
        };
        let head = Head {
            raw_header: raw.clone(),
            entries: vec![entry.clone()],
            ..head0
        };
        let bytes = head.to_bytes();
        let read = read_head(&mut &bytes[..]).unwrap();
        assert_eq!(read.entries, vec![entry]);
        assert_eq!(read.raw_header, raw);
        assert_eq!(read.compression(), BlockCompression::Gzip);
        assert_eq!(read.to_bytes(), bytes);
        assert_eq!(read.entries[0].oid(), Some(16386));
    }
}
