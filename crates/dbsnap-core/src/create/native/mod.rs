//! The native dump engine: pg_dump writes the schema and what only it knows
//! how to dump (sequence values, large objects, extension configuration
//! data, materialized view refreshes); dbsnap copies every ordinary table's
//! rows itself, with a pool of connections under the same exported
//! snapshot, big tables split into ctid ranges, compressed in the workers.
//! The result is one custom-format member that stock pg_restore reads like
//! pg_dump's own (same entries, same order, gzip-compatible data).
//!
//! How the work is split: pg_dump runs with `--exclude-table-data` for the
//! tables this engine copies, so every other entry (and its data) is
//! pg_dump's, unchanged. Its header and table of contents are read, a
//! `TABLE DATA` entry is added for each excluded table that pg_dump lists
//! (so nothing pg_dump would not dump is dumped, and nothing it would dump
//! is lost), and the member is written in table-of-contents order: header,
//! entries, this engine's data blocks, then pg_dump's own data blocks as it
//! wrote them.
//!
//! A big table is copied as several pieces (TID range scans on 14+; on 13
//! one piece per worker, each a filtered scan). Each piece is raw deflate
//! ending on a full flush, so the pieces of one table concatenate into one
//! zlib stream (pigz's method), its Adler-32 combined from the pieces'.
//!
//! Memory is bounded: workers take pieces in output order and never run
//! more than one piece ahead of the writer per worker.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::BytesMut;
use dbsnap_archive::custom::{self, section, Head, RawEntry};
use dbsnap_archive::snapshot::{PieceIndex, TableIndex};
use dbsnap_pg::process::Tool;
use dbsnap_pg::PgError;
use futures::StreamExt;
use tokio_postgres::Client;

mod deflate;
mod sessions;

use super::dump::{spawn_pg_dump, DumpControl, ToolControl};
use super::{DumpEngine, DumpJob, PgDumpEngine, RunningDump, Work};
use crate::error::CoreError;
use deflate::{zlib_header, Encoder, Piece};
use sessions::{list_tables, measure, open_workers, server_facts, Table};

/// Tables bigger than this (heap and TOAST) are copied in several pieces
/// of about this size; `DBSNAP_SPLIT_BYTES` overrides it.
const PIECE_BYTES: i64 = 64 << 20;
/// At most this many pieces per table.
const MAX_PIECES: i64 = 256;
/// Data chunk size in the member.
const CHUNK: usize = 1 << 20;
/// Bytes of COPY rows handed from a connection to its compressor at once.
const BATCH: usize = 256 << 10;
/// Compression level when the user does not choose one: zlib-rs' level 1
/// is a faster but weaker method than zlib's; level 2 gives pg_dump -Z1's
/// size or better, faster.
pub const DEFAULT_LEVEL: u32 = 2;

/// Writes members natively; falls back to pg_dump for compressions it does
/// not write itself (lz4, zstd).
pub struct NativeEngine;

impl DumpEngine for NativeEngine {
    fn start(&self, job: &DumpJob) -> Result<RunningDump, CoreError> {
        let Some(level) = gzip_level(job.compress.as_deref())? else {
            tracing::info!(database = %job.display, "--compress {} is written by pg_dump itself", job.compress.as_deref().unwrap_or(""));
            return PgDumpEngine.start(job);
        };
        let (reader, writer) = std::io::pipe()
            .map_err(|e| CoreError::Internal(format!("cannot create a pipe: {e}")))?;
        let shared = Arc::new(Shared::default());
        let runtime = tokio::runtime::Handle::current();
        let (job, inner) = (job.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("dbsnap-dump".into())
            .spawn(move || {
                let result = produce(&runtime, &job, level, writer, &inner);
                if result.is_err() {
                    inner.abort();
                }
                result
            })
            .map_err(|e| CoreError::Internal(format!("cannot start a dump thread: {e}")))?;
        *shared.thread.lock().expect("fresh lock") = Some(thread);
        Ok(RunningDump {
            output: Box::new(reader),
            control: shared,
        })
    }
}

/// The zlib level of a `--compress` value (0 = none), or None when the
/// value names another method (written by pg_dump).
pub fn gzip_level(compress: Option<&str>) -> Result<Option<u32>, CoreError> {
    let Some(c) = compress else {
        return Ok(Some(DEFAULT_LEVEL));
    };
    compression_level(c).map_err(|(why, example)| CoreError::Config {
        message: format!("--compress {}: {why}", c.trim()),
        hint: example,
    })
}

/// [`gzip_level`] of a value in words only: on a bad value, what is wrong
/// with it and an example of a good one (the config file's check, which
/// names the key and line instead of the flag).
pub fn compression_level(c: &str) -> Result<Option<u32>, (String, String)> {
    let c = c.trim();
    let (method, detail) = c.split_once(':').unwrap_or((c, ""));
    let level = |s: &str, default: u32| -> Result<u32, (String, String)> {
        let s = s.trim().trim_start_matches("level=");
        if s.is_empty() {
            return Ok(default);
        }
        s.parse::<u32>().ok().filter(|l| *l <= 9).ok_or_else(|| {
            (
                "the level must be 0 to 9".to_string(),
                "e.g. 1, gzip:6 or none".to_string(),
            )
        })
    };
    let other_level = |most: u32| -> Result<Option<u32>, (String, String)> {
        let l = detail.trim().trim_start_matches("level=");
        match l.parse::<u32>() {
            Ok(l) if !(1..=most).contains(&l) => Err((
                format!("the level of {method} must be 1 to {most}"),
                format!("e.g. {method}:3, or {method}"),
            )),
            _ => Ok(None),
        }
    };
    match method.to_ascii_lowercase().as_str() {
        "none" => Ok(Some(0)),
        "gzip" => level(detail, 6).map(Some),
        "lz4" => other_level(12),
        "zstd" => other_level(22),
        digits if digits.chars().all(|d| d.is_ascii_digit()) => level(digits, 6).map(Some),
        _ => Err((
            "unknown compression".to_string(),
            "use a level 0-9, gzip[:LEVEL], none, or lz4/zstd (restorable by pg_restore 16+)"
                .to_string(),
        )),
    }
}

/// The oldest pg_dump (and pg_restore) that can write (and read) data
/// compressed as `compress` asks: 16 for lz4 and zstd.
pub fn compress_needs(compress: Option<&str>) -> Option<u32> {
    // A valid value that is not zlib is one pg_dump writes: lz4 or zstd.
    matches!(gzip_level(compress), Ok(None)).then_some(16)
}

/// State shared by the producer, its workers and the control.
#[derive(Default)]
struct Shared {
    aborted: AtomicBool,
    error: Mutex<Option<CoreError>>,
    pg_dump: Mutex<Option<Arc<ToolControl>>>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<(), CoreError>>>>,
    queue: Mutex<Queue>,
    changed: Condvar,
    /// Where the pieces of split tables went in the member.
    index: Mutex<Vec<TableIndex>>,
    /// Table data copied so far (catalog bytes of the pieces done, rows).
    work: Mutex<Option<Work>>,
}

/// Pieces handed out and finished, in output order.
#[derive(Default)]
struct Queue {
    next: usize,
    written: usize,
    done: BTreeMap<usize, Piece>,
}

impl Shared {
    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(p) = self.pg_dump.lock().ok().and_then(|p| p.clone()) {
            p.kill();
        }
        let _guard = self.queue.lock();
        self.changed.notify_all();
    }

    fn aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Records the first error and stops everything.
    fn fail(&self, e: CoreError) {
        if let Ok(mut slot) = self.error.lock() {
            if slot.is_none() && !self.aborted() {
                *slot = Some(e);
            }
        }
        self.abort();
    }

    /// The next piece to copy, waiting while the worker would run too far
    /// ahead of the writer; None when all are taken or the run stops.
    fn take(&self, total: usize, window: usize) -> Option<usize> {
        let mut q = self.queue.lock().ok()?;
        loop {
            if self.aborted() || q.next >= total {
                return None;
            }
            if q.next < q.written + window {
                q.next += 1;
                return Some(q.next - 1);
            }
            q = self.changed.wait(q).ok()?;
        }
    }

    fn finish(&self, index: usize, piece: Piece, item: &Item) {
        if let Ok(mut w) = self.work.lock() {
            if let Some(w) = w.as_mut() {
                w.done += item.bytes;
                // The last piece's lines include the end-of-data marker's three.
                let marker = if item.last { 3 } else { 0 };
                w.rows += piece.rows.saturating_sub(marker);
            }
        }
        if let Ok(mut q) = self.queue.lock() {
            q.done.insert(index, piece);
        }
        self.changed.notify_all();
    }

    /// Waits for piece `index` (the writer's next).
    fn wait_for(&self, index: usize) -> Option<Piece> {
        let mut q = self.queue.lock().ok()?;
        loop {
            if self.aborted() {
                return None;
            }
            if let Some(p) = q.done.remove(&index) {
                q.written = index + 1;
                self.changed.notify_all();
                return Some(p);
            }
            q = self.changed.wait(q).ok()?;
        }
    }
}

impl DumpControl for Shared {
    fn kill(&self) {
        self.abort();
    }

    fn index(&self) -> Vec<TableIndex> {
        self.index.lock().map(|i| i.clone()).unwrap_or_default()
    }

    fn work(&self) -> Option<Work> {
        self.work.lock().ok().and_then(|w| *w)
    }

    fn wait(&self, display_name: &str) -> Result<(), CoreError> {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        let result = match thread {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(CoreError::Internal("dump thread panicked".into()))),
            None => Ok(()),
        };
        if let Err(e) = result {
            tracing::info!(database = %display_name, "native dump failed: {e}");
            return Err(e);
        }
        Ok(())
    }
}

/// One unit of work: a table, or a piece of one.
#[derive(Debug, Clone)]
struct Item {
    /// The table, for errors.
    table: String,
    sql: String,
    /// Last piece of its table: ends the zlib stream and the COPY data.
    last: bool,
    /// Its share of the table's size in the catalog (for progress).
    bytes: u64,
}

/// A table's data entry and which items make it.
struct Block {
    dump_id: i64,
    items: std::ops::Range<usize>,
}

/// The whole native dump of one database into `out`.
fn produce(
    runtime: &tokio::runtime::Handle,
    job: &DumpJob,
    level: u32,
    out: std::io::PipeWriter,
    shared: &Arc<Shared>,
) -> Result<(), CoreError> {
    let jobs = job.jobs.max(1);
    let clients = runtime.block_on(open_workers(job, jobs))?;
    let (version_num, encoding) = runtime.block_on(server_facts(&clients[0], &job.display))?;
    if encoding != "UTF8" {
        // COPY rows and entry names must be in the database's encoding;
        // these connections speak UTF-8 only.
        tracing::info!(database = %job.display, encoding, "database encoding is not UTF8: pg_dump writes the whole member");
        drop(clients);
        return whole_pg_dump(job, level, out, shared);
    }
    let mut tables = runtime.block_on(list_tables(&clients[0], &job.display))?;

    let mut tool = pg_dump_tool(job, level);
    for t in &tables {
        tool.arg(format!("--exclude-table-data={}", t.pattern));
    }
    let (stdout, pg_dump) = spawn_pg_dump(job, tool)?;
    *shared.pg_dump.lock().expect("lock") = Some(pg_dump.clone());
    let mut input = BufReader::with_capacity(1 << 20, stdout);
    let head = match custom::read_head(&mut input) {
        Ok(h) => h,
        Err(e) => {
            pg_dump.wait(&job.display)?;
            return Err(CoreError::Internal(format!(
                "reading pg_dump's table of contents: {e}"
            )));
        }
    };
    // Only the tables pg_dump lists (and so has locked) are measured.
    let listed: std::collections::BTreeSet<u32> = head
        .entries
        .iter()
        .filter(|e| e.desc() == "TABLE")
        .filter_map(RawEntry::oid)
        .collect();
    tables.retain(|t| listed.contains(&t.oid));
    runtime.block_on(measure(&clients[0], &job.display, &mut tables))?;
    let piece_bytes = std::env::var("DBSNAP_SPLIT_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(PIECE_BYTES);
    let (head, blocks, items) = plan(head, &tables, jobs, version_num, piece_bytes);
    if let Ok(mut w) = shared.work.lock() {
        *w = Some(Work {
            expected: items.iter().map(|i| i.bytes).sum(),
            ..Work::default()
        });
    }
    tracing::info!(
        database = %job.display,
        tables = blocks.len(),
        pieces = items.len(),
        jobs,
        level,
        "native dump: pg_dump writes the schema, dbsnap the table data"
    );

    let written = std::thread::scope(|scope| {
        for client in &clients {
            let (items, shared) = (&items, &**shared);
            scope.spawn(move || {
                let window = jobs + 1;
                while let Some(i) = shared.take(items.len(), window) {
                    match copy_piece(runtime, client, &items[i], level, shared) {
                        Ok(p) => shared.finish(i, p, &items[i]),
                        Err(e) => {
                            shared.fail(e);
                            return;
                        }
                    }
                }
            });
        }
        let result = write_member(&head, &blocks, level, out, &mut input, shared);
        if result.is_err() {
            shared.abort();
        }
        result
    });
    let first_error = shared.error.lock().ok().and_then(|mut e| e.take());
    let waited = pg_dump.wait(&job.display);
    if let Some(e) = first_error {
        return Err(e);
    }
    written?;
    waited
}

/// pg_dump writing a custom archive compressed at `level`.
fn pg_dump_tool(job: &DumpJob, level: u32) -> Tool {
    let mut tool = Tool::new(&job.program.path);
    tool.arg("--format=custom")
        .arg(format!("--compress={level}"));
    tool
}

/// pg_dump alone writes the member.
fn whole_pg_dump(
    job: &DumpJob,
    level: u32,
    mut out: std::io::PipeWriter,
    shared: &Shared,
) -> Result<(), CoreError> {
    let (mut stdout, pg_dump) = spawn_pg_dump(job, pg_dump_tool(job, level))?;
    *shared.pg_dump.lock().expect("lock") = Some(pg_dump.clone());
    let copied = std::io::copy(&mut stdout, &mut out);
    drop(out);
    pg_dump.wait(&job.display)?;
    copied.map_err(|e| CoreError::Internal(format!("writing the member: {e}")))?;
    Ok(())
}

/// Adds a `TABLE DATA` entry for every copied table pg_dump lists, before
/// the first data or post-data entry, in pg_dump's order (schema, then
/// name); splits each into items.
fn plan(
    mut head: Head,
    tables: &[Table],
    jobs: usize,
    version_num: i32,
    piece_bytes: i64,
) -> (Head, Vec<Block>, Vec<Item>) {
    let by_oid: BTreeMap<u32, &Table> = tables.iter().map(|t| (t.oid, t)).collect();
    let mut listed: Vec<(&RawEntry, &Table)> = head
        .entries
        .iter()
        .filter(|e| e.desc() == "TABLE")
        .filter_map(|e| e.oid().and_then(|o| by_oid.get(&o)).map(|t| (e, *t)))
        .collect();
    listed.sort_by(|a, b| {
        (a.0.namespace.as_deref(), a.0.tag.as_deref())
            .cmp(&(b.0.namespace.as_deref(), b.0.tag.as_deref()))
    });
    let mut new_entries = Vec::new();
    let mut blocks = Vec::new();
    let mut items = Vec::new();
    for (next_id, (table_entry, table)) in (head.max_dump_id() + 1..).zip(listed) {
        let copy_columns = if table.columns.is_empty() {
            String::new()
        } else {
            format!("({})", table.columns)
        };
        new_entries.push(RawEntry {
            dump_id: next_id,
            had_dumper: true,
            table_oid: Some(b"0".to_vec()),
            oid: table_entry.oid.clone(),
            tag: table_entry.tag.clone(),
            desc: Some(b"TABLE DATA".to_vec()),
            section: section::DATA,
            copy_stmt: Some(
                format!("COPY {} {copy_columns} FROM stdin;\n", table.qualified).into_bytes(),
            ),
            namespace: table_entry.namespace.clone(),
            owner: table_entry.owner.clone(),
            with_oids: Some(b"false".to_vec()),
            deps: vec![table_entry.dump_id.to_string().into_bytes()],
            offset_flag: custom::OFFSET_POS_NOT_SET,
            ..RawEntry::default()
        });
        let start = items.len();
        items.extend(pieces(table, jobs, version_num, piece_bytes));
        blocks.push(Block {
            dump_id: next_id,
            items: start..items.len(),
        });
    }
    let at = head
        .entries
        .iter()
        .position(|e| e.section == section::DATA || e.section == section::POST_DATA)
        .unwrap_or(head.entries.len());
    head.entries.splice(at..at, new_entries);
    (head, blocks, items)
}

/// The COPY statements of one table: one, or one per ctid range.
fn pieces(t: &Table, jobs: usize, version_num: i32, piece_bytes: i64) -> Vec<Item> {
    let wanted = if jobs < 2 || t.bytes <= piece_bytes || t.pages < 2 {
        1
    } else if version_num < 140_000 {
        // No TID range scan: every piece reads the whole table, so no
        // more pieces than workers.
        jobs as i64
    } else {
        ((t.bytes + piece_bytes - 1) / piece_bytes).clamp(2, MAX_PIECES)
    };
    let n = wanted.min(t.pages).max(1);
    if n == 1 {
        let sql = if t.columns.is_empty() {
            format!("COPY {} TO STDOUT", t.qualified)
        } else {
            format!("COPY {} ({}) TO STDOUT", t.qualified, t.columns)
        };
        return vec![Item {
            table: t.qualified.clone(),
            sql,
            last: true,
            bytes: t.bytes.max(0) as u64,
        }];
    }
    (0..n)
        .map(|i| {
            let lo = t.pages * i / n;
            let hi = t.pages * (i + 1) / n;
            let mut cond = Vec::new();
            if i > 0 {
                cond.push(format!("ctid >= '({lo},0)'::tid"));
            }
            if i < n - 1 {
                cond.push(format!("ctid < '({hi},0)'::tid"));
            }
            Item {
                table: t.qualified.clone(),
                sql: format!(
                    "COPY (SELECT {} FROM ONLY {} WHERE {}) TO STDOUT",
                    t.columns,
                    t.qualified,
                    cond.join(" AND ")
                ),
                last: i == n - 1,
                bytes: (t.bytes.max(0) * (hi - lo) / t.pages.max(1)) as u64,
            }
        })
        .collect()
}

/// Copies one item into a compressed piece.
fn copy_piece(
    runtime: &tokio::runtime::Handle,
    client: &Arc<Client>,
    item: &Item,
    level: u32,
    shared: &Shared,
) -> Result<Piece, CoreError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let (client, sql) = (client.clone(), item.sql.clone());
    let reader = runtime.spawn(async move {
        let stream = client.copy_out(sql.as_str()).await?;
        futures::pin_mut!(stream);
        let mut batch = BytesMut::with_capacity(BATCH + (64 << 10));
        while let Some(row) = stream.next().await {
            batch.extend_from_slice(&row?);
            if batch.len() >= BATCH && tx.send(batch.split().freeze()).await.is_err() {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch.freeze()).await;
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    let mut encoder = Encoder::new(level, item.last);
    while let Some(batch) = rx.blocking_recv() {
        if shared.aborted() {
            reader.abort();
            return Err(CoreError::Internal("stopped".into()));
        }
        encoder.write(&batch)?;
    }
    runtime
        .block_on(reader)
        .map_err(|e| CoreError::Internal(format!("copy task failed: {e}")))?
        .map_err(|e| CoreError::Pg(PgError::from_pg(e, &item.table, "copying rows")))?;
    if item.last {
        // pg_dump ends every table's COPY data with this marker.
        encoder.write(b"\\.\n\n\n")?;
    }
    encoder.finish()
}

/// Writes the header, the entries, this engine's blocks as their pieces
/// arrive, then pg_dump's own data blocks.
fn write_member(
    head: &Head,
    blocks: &[Block],
    level: u32,
    out: std::io::PipeWriter,
    pg_dump_rest: &mut impl Read,
    shared: &Shared,
) -> Result<(), CoreError> {
    let broken = |e: std::io::Error| CoreError::Internal(format!("writing the member: {e}"));
    let mut out = Counting {
        inner: std::io::BufWriter::with_capacity(1 << 20, out),
        at: 0,
    };
    out.write_all(&head.to_bytes()).map_err(broken)?;
    let mut frame = Vec::with_capacity(16);
    let mut index = Vec::new();
    for block in blocks {
        frame.clear();
        head.block_start(&mut frame, block.dump_id);
        if level > 0 {
            head.chunk_header(&mut frame, 2);
            frame.extend_from_slice(&zlib_header(level));
        }
        out.write_all(&frame).map_err(broken)?;
        let mut adler = 1u32;
        let mut pieces = Vec::new();
        for index in block.items.clone() {
            let Some(piece) = shared.wait_for(index) else {
                return Err(CoreError::Internal("stopped".into()));
            };
            adler = zlib_rs::adler32::adler32_combine(adler, piece.adler, piece.raw_len);
            let offset = out.at;
            for chunk in piece.bytes.chunks(CHUNK) {
                frame.clear();
                head.chunk_header(&mut frame, chunk.len());
                out.write_all(&frame).map_err(broken)?;
                out.write_all(chunk).map_err(broken)?;
            }
            pieces.push(PieceIndex {
                offset,
                end: out.at,
                rows: piece.rows,
                raw_len: piece.raw_len,
                adler32: piece.adler,
            });
        }
        if pieces.len() > 1 {
            index.push(TableIndex {
                dump_id: block.dump_id,
                pieces,
            });
        }
        frame.clear();
        if level > 0 {
            head.chunk_header(&mut frame, 4);
            frame.extend_from_slice(&adler.to_be_bytes());
        }
        head.block_end(&mut frame);
        out.write_all(&frame).map_err(broken)?;
    }
    std::io::copy(pg_dump_rest, &mut out).map_err(broken)?;
    out.flush().map_err(broken)?;
    if let Ok(mut slot) = shared.index.lock() {
        *slot = index;
    }
    Ok(())
}

/// Counts the bytes written (the member's offsets).
struct Counting<W: Write> {
    inner: W,
    at: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_values() {
        assert_eq!(gzip_level(None).unwrap(), Some(DEFAULT_LEVEL));
        assert_eq!(gzip_level(Some("0")).unwrap(), Some(0));
        assert_eq!(gzip_level(Some("none")).unwrap(), Some(0));
        assert_eq!(gzip_level(Some("gzip")).unwrap(), Some(6));
        assert_eq!(gzip_level(Some("gzip:3")).unwrap(), Some(3));
        assert_eq!(gzip_level(Some("gzip:level=4")).unwrap(), Some(4));
        assert_eq!(gzip_level(Some("zstd:3")).unwrap(), None);
        assert!(gzip_level(Some("12")).is_err());
        assert!(gzip_level(Some("brotli")).is_err());
        assert!(gzip_level(Some("zstd:99")).is_err());
        assert!(gzip_level(Some("lz4:13")).is_err());
        assert_eq!(gzip_level(Some("zstd:level=22")).unwrap(), None);
        assert_eq!(gzip_level(Some("zstd:long")).unwrap(), None);
        assert_eq!(compress_needs(Some("zstd:3")), Some(16));
        assert_eq!(compress_needs(Some("LZ4")), Some(16));
        assert_eq!(compress_needs(Some("gzip:3")), None);
        assert_eq!(compress_needs(None), None);
    }

    #[test]
    fn split_tables_cover_every_page() {
        let t = Table {
            oid: 1,
            qualified: "public.t".into(),
            pattern: String::new(),
            columns: "a".into(),
            pages: 10_000,
            bytes: 3 * PIECE_BYTES + 1,
        };
        let items = pieces(&t, 2, 150_000, PIECE_BYTES);
        assert_eq!(items.len(), 4);
        assert!(items[0].sql.contains("ctid < '(2500,0)'") && !items[0].sql.contains(">="));
        assert!(items[3].sql.contains("ctid >= '(7500,0)'") && !items[3].sql.contains(" < "));
        assert!(items[3].last && !items[2].last);
        assert_eq!(pieces(&t, 2, 130_000, PIECE_BYTES).len(), 2);
        assert_eq!(pieces(&t, 1, 150_000, PIECE_BYTES).len(), 1);
    }
}
