//! Restoring a database member into a new, empty database (swap and
//! `--create`) with dbsnap's own data load:
//!
//! 1. the schema file: the member's header and table of contents, plus the
//!    data blocks stock pg_restore still loads (large objects, tables
//!    without a COPY statement), with their offsets; a temporary file next
//!    to the snapshot, usually a few hundred kilobytes;
//! 2. pre-data: `pg_restore --section=pre-data` of the schema file;
//! 3. data: every table's block COPYed by `jobs` connections, largest
//!    first, each read at its offset straight from the snapshot (no
//!    extraction) and decompressed by its worker; a plain table is
//!    truncated in the loading transaction and loaded `COPY ... FREEZE`
//!    (rows written frozen: no later rewrite to set hint bits); the rows of
//!    the archive and the server's COPY count must agree; then stock
//!    pg_restore loads the rest of the data section from the schema file
//!    (sequence values, large objects);
//! 4. post-data: `pg_restore --section=post-data --jobs N` (indexes,
//!    constraints, triggers, materialized views built in parallel).
//!
//! The database is new and not yet in use: a failure at any step leaves a
//! partial copy that the caller drops. Several databases load at once under
//! one budget of connections ([`Shared`]); when one fails, the others stop
//! at their next table or stage.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dbsnap_archive::custom::{self, BlockSpan, Head};
use dbsnap_archive::pgdump::CopyRows;
use dbsnap_archive::snapshot::{self, ArchiveError, Manifest, PieceIndex};
use dbsnap_archive::sql::quote_ident;
use dbsnap_pg::tools::Program;
use dbsnap_pg::{ConnInfo, Resolver};
use dbsnap_storage::{Scratch, SnapshotRef, StorageError};
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::data_only::TableCount;
use super::replace::{self, RestoreFlags, RestoreOutput};
use super::{blocking, pg_err, Meter};
use crate::chunks::{for_each_chunk, ChunkError};
use crate::crypt::Crypto;
use crate::error::CoreError;

/// Where a member's head and data blocks lie in a local snapshot file.
pub(crate) struct Layout {
    file: SnapshotRef,
    member: String,
    head: Head,
    /// The member's first byte in the snapshot file.
    offset: u64,
    /// Its size as stored.
    size: u64,
    /// Whether it is encrypted (its positions are then in the plaintext).
    encrypted: bool,
    /// Opens it when it is.
    crypto: Arc<Crypto>,
    blocks: Vec<BlockSpan>,
    /// Where the pieces of split tables lie (from `manifest.json`).
    pieces: BTreeMap<i64, Vec<PieceIndex>>,
}

/// One table's data block, or one piece of it, to be COPYed.
struct Job {
    table: String,
    copy: String,
    span: BlockSpan,
    piece: Option<PieceIndex>,
}

impl Job {
    fn bytes(&self) -> u64 {
        match &self.piece {
            Some(p) => p.end - p.offset,
            None => self.span.end - self.span.start,
        }
    }
}

impl Layout {
    /// Reads the member's head and finds its data blocks (seeking over
    /// them). None when the native load cannot read it: a snapshot that is
    /// not a local file, data compressed with lz4 or zstd, or a database
    /// whose encoding is not UTF8 (dbsnap's connections speak UTF-8; its
    /// rows stay in their own encoding): stock pg_restore restores those.
    pub(crate) fn read(
        file: &SnapshotRef,
        member: &str,
        crypto: &Arc<Crypto>,
    ) -> Result<Option<Layout>, CoreError> {
        let open = || file.open_seekable();
        let path = std::path::PathBuf::from(file.display());
        let spans = snapshot::member_spans(
            BufReader::new(open()?),
            &[member, snapshot::MANIFEST_MEMBER],
        )?;
        let (offset, size) = spans[0];
        let corrupt = |e: dbsnap_archive::pgdump::PgDumpError| {
            ArchiveError::Corrupt(format!("member \"{member}\": {e}"))
        };
        let encrypted = crate::inspect::read_metadata(file)?.encryption.is_some();
        let (mut r, plain_size) = if encrypted {
            let mut m = crypto.member_seekable(file, member, (offset, size))?;
            let plain_size = m
                .seek(SeekFrom::End(0))
                .and_then(|n| m.seek(SeekFrom::Start(0)).map(|_| n))
                .map_err(|e| corrupt(dbsnap_archive::pgdump::PgDumpError::Io(e)))?;
            (BufReader::with_capacity(1 << 16, m), plain_size)
        } else {
            let mut r = BufReader::with_capacity(1 << 16, open()?);
            r.seek(SeekFrom::Start(offset))
                .map_err(|e| StorageError::io(&path, e))?;
            (r, size)
        };
        let head = custom::read_head(&mut r).map_err(corrupt)?;
        let readable = matches!(
            head.compression(),
            custom::BlockCompression::None | custom::BlockCompression::Gzip
        );
        if !readable || !is_utf8(&head) {
            return Ok(None);
        }
        let blocks = head
            .scan_blocks(&mut r, head.byte_len(), plain_size)
            .map_err(corrupt)?;
        let pieces = read_pieces(open()?, spans[1], member, &blocks)?;
        Ok(Some(Layout {
            file: file.clone(),
            member: member.to_string(),
            head,
            offset,
            size,
            encrypted,
            crypto: crypto.clone(),
            blocks,
            pieces,
        }))
    }

    /// The member's bytes from `start` (in the plaintext when encrypted).
    fn open_at(&self, start: u64) -> Result<Box<dyn Read + Send>, CoreError> {
        if !self.encrypted {
            return Ok(self
                .file
                .repo
                .open_range(&self.file.name, self.offset + start)?);
        }
        let mut m =
            self.crypto
                .member_seekable(&self.file, &self.member, (self.offset, self.size))?;
        m.seek(SeekFrom::Start(start)).map_err(|e| {
            CoreError::Archive(ArchiveError::Corrupt(format!(
                "member \"{}\": {e}",
                self.member
            )))
        })?;
        Ok(Box::new(m))
    }

    /// Table data blocks with a COPY statement, largest first; the other
    /// blocks are left to pg_restore.
    fn split(&self) -> (Vec<Job>, Vec<BlockSpan>) {
        let (mut jobs, mut rest) = (Vec::new(), Vec::new());
        for span in &self.blocks {
            let entry = self.head.entries.iter().find(|e| e.dump_id == span.dump_id);
            let copy = entry
                .and_then(|e| e.copy_stmt.as_deref())
                .unwrap_or_default();
            let copy = String::from_utf8_lossy(copy).trim().to_string();
            match entry {
                Some(e) if !span.blobs && e.desc() == "TABLE DATA" && copy.starts_with("COPY ") => {
                    let table = match e.namespace() {
                        "" => quote_ident(e.tag()),
                        ns => format!("{}.{}", quote_ident(ns), quote_ident(e.tag())),
                    };
                    match self.pieces.get(&span.dump_id) {
                        Some(pieces) => jobs.extend(pieces.iter().map(|p| Job {
                            table: table.clone(),
                            copy: copy.clone(),
                            span: *span,
                            piece: Some(*p),
                        })),
                        None => jobs.push(Job {
                            table,
                            copy,
                            span: *span,
                            piece: None,
                        }),
                    }
                }
                _ => rest.push(*span),
            }
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.bytes()));
        (jobs, rest)
    }

    /// Writes the schema file: the head, with `rest`'s blocks after it at
    /// recorded offsets (pg_restore seeks to them).
    fn write_schema_file(&self, rest: &[BlockSpan]) -> Result<Scratch, CoreError> {
        let mut head = self.head.clone();
        let mut at = head.byte_len();
        for span in rest {
            if let Some(e) = head.entries.iter_mut().find(|e| e.dump_id == span.dump_id) {
                e.offset_flag = custom::OFFSET_POS_SET;
                e.offset = at;
            }
            at += span.end - span.start;
        }
        let bytes = head.to_bytes();
        debug_assert_eq!(bytes.len() as u64, head.byte_len());
        let tmp = self.file.repo.scratch("schema")?;
        let path = tmp.path().to_path_buf();
        let write_err = |e| CoreError::write_io(&path, e);
        let mut out = std::io::BufWriter::new(tmp.as_file());
        out.write_all(&bytes).map_err(write_err)?;
        for span in rest {
            let mut block = self.open_at(span.start)?.take(span.end - span.start);
            std::io::copy(&mut block, &mut out).map_err(write_err)?;
        }
        out.flush().map_err(write_err)?;
        drop(out);
        Ok(tmp)
    }
}

/// The pieces of the member's split tables, from the snapshot's manifest,
/// each checked to lie inside its table's block, in order.
fn read_pieces(
    mut file: Box<dyn dbsnap_storage::ReadSeek>,
    (at, size): (u64, u64),
    member: &str,
    blocks: &[BlockSpan],
) -> Result<BTreeMap<i64, Vec<PieceIndex>>, CoreError> {
    let bad =
        |what: String| ArchiveError::Corrupt(format!("{}: {what}", snapshot::MANIFEST_MEMBER));
    let mut json = Vec::new();
    file.seek(SeekFrom::Start(at))
        .and_then(|_| file.take(size).read_to_end(&mut json))
        .map_err(|e| bad(e.to_string()))?;
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    let mut pieces = BTreeMap::new();
    for t in manifest.tables.get(member).into_iter().flatten() {
        let span = blocks.iter().find(|b| b.dump_id == t.dump_id && !b.blobs);
        let mut at = span.map_or(u64::MAX, |s| s.data);
        for p in &t.pieces {
            let end = span.map_or(0, |s| s.end);
            if p.offset < at || p.end < p.offset || p.end > end {
                return Err(bad(format!(
                    "pieces of entry {} in \"{member}\" lie outside its data block",
                    t.dump_id
                ))
                .into());
            }
            at = p.end;
        }
        pieces.insert(t.dump_id, t.pieces.clone());
    }
    Ok(pieces)
}

/// Whether the archive's data is UTF-8 (its ENCODING entry says so).
fn is_utf8(head: &Head) -> bool {
    head.entries
        .iter()
        .find(|e| e.desc() == "ENCODING")
        .and_then(|e| e.defn.as_deref())
        .is_some_and(|d| {
            let d = String::from_utf8_lossy(d).to_ascii_uppercase();
            d.contains("'UTF8'") || d.contains("'UTF-8'")
        })
}

/// What the databases of one restore, loaded at the same time, share: how
/// many tables may load at any moment (`--jobs` for the whole run, not per
/// database), and whether one of them failed.
pub(crate) struct Shared {
    permits: tokio::sync::Semaphore,
    failed: AtomicBool,
}

impl Shared {
    pub(crate) fn new(jobs: usize) -> Shared {
        Shared {
            permits: tokio::sync::Semaphore::new(jobs.max(1)),
            failed: AtomicBool::new(false),
        }
    }

    /// Records a failure; true for the first one (the error to report: the
    /// others may only say they stopped because of it).
    pub(crate) fn fail(&self) -> bool {
        !self.failed.swap(true, Ordering::SeqCst)
    }

    /// An error once another database's restore failed.
    fn go_on(&self, target: &str) -> Result<(), CoreError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(CoreError::Internal(format!(
                "{target}: stopped, another database's restore failed"
            )));
        }
        Ok(())
    }
}

/// What [`restore`] needs besides the layout.
pub(crate) struct Target<'a> {
    pub program: Program,
    pub info: ConnInfo,
    pub route: Arc<dyn Resolver>,
    pub flags: RestoreFlags,
    /// Connections for this database's data and post-data builds.
    pub jobs: usize,
    pub server_major: u32,
    pub target: &'a str,
    pub shared: &'a Shared,
}

/// Restores the member of `layout` into the new database of `to`; returns
/// pg_restore's ignored errors and every loaded table's row counts (archive
/// and server agree).
pub(crate) async fn restore(
    layout: Layout,
    to: Target<'_>,
    meter: Meter,
) -> Result<(RestoreOutput, Vec<TableCount>), CoreError> {
    let layout = Arc::new(layout);
    let (jobs, rest) = layout.split();
    let schema = {
        let layout = layout.clone();
        let rest = rest.clone();
        Arc::new(blocking(move || layout.write_schema_file(&rest)).await?)
    };
    let stage = |args: Vec<String>| {
        let (program, info, route, flags) = (
            to.program.clone(),
            to.info.clone(),
            to.route.clone(),
            to.flags,
        );
        let schema = schema.clone();
        blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            replace::pg_restore_file(&program, schema.path(), &args, &info, &*route, flags)
        })
    };
    tracing::info!(
        "native load: {} tables ({} pieces of split tables) by {} connections, {} other data blocks by pg_restore",
        layout.blocks.len() - rest.len(),
        jobs.iter().filter(|j| j.piece.is_some()).count(),
        to.jobs.min(jobs.len()).max(1),
        rest.len()
    );
    let t0 = std::time::Instant::now();
    to.shared.go_on(to.target)?;
    let mut out = stage(vec!["--section=pre-data".into()]).await?;
    let t_pre = t0.elapsed();
    meter.say(&format!(
        "{}: loading {} tables with {} connections",
        to.target,
        layout.blocks.len() - rest.len(),
        to.jobs.min(jobs.len()).max(1)
    ));
    let loaded: std::collections::BTreeSet<i64> = jobs.iter().map(|j| j.span.dump_id).collect();
    let counts = load_tables(&layout, jobs, &to, meter).await?;
    let t_data = t0.elapsed();
    // The rest of the data section as stock pg_restore would restore it
    // (sequence values, large objects, what sits between): every entry but
    // the tables loaded above, limited to the section.
    let list = layout.file.repo.scratch("list")?;
    let text: String = layout
        .head
        .entries
        .iter()
        .filter(|e| !loaded.contains(&e.dump_id))
        .map(|e| format!("{};\n", e.dump_id))
        .collect();
    std::fs::write(list.path(), text).map_err(|e| CoreError::write_io(list.path(), e))?;
    // Crash tests: killed with the schema and list scratch files on disk.
    crate::failpoint("restore-tables-loaded");
    to.shared.go_on(to.target)?;
    let data = vec![
        "--section=data".to_string(),
        format!("--use-list={}", list.path().display()),
    ];
    out.ignored.extend(stage(data).await?.ignored);
    let mut post = vec!["--section=post-data".to_string()];
    if to.jobs > 1 {
        post.push(format!("--jobs={}", to.jobs));
    }
    to.shared.go_on(to.target)?;
    let more = stage(post).await?;
    out.ignored.extend(more.ignored);
    tracing::info!(
        "native load of {}: pre-data {:.2} s, tables {:.2} s, rest of the data and post-data {:.2} s",
        to.target,
        t_pre.as_secs_f64(),
        (t_data - t_pre).as_secs_f64(),
        (t0.elapsed() - t_data).as_secs_f64()
    );
    Ok((out, counts))
}

/// COPYs every job's block with up to `to.jobs` connections, each table
/// (or piece) holding one of the shared permits while it loads.
async fn load_tables(
    layout: &Arc<Layout>,
    jobs: Vec<Job>,
    to: &Target<'_>,
    mut meter: Meter,
) -> Result<Vec<TableCount>, CoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    meter.expect(jobs.iter().map(Job::bytes).sum());
    let workers = to.jobs.clamp(1, jobs.len());
    let mut clients = Vec::with_capacity(workers);
    for _ in 0..workers {
        clients.push(session(to).await?);
    }
    // A table loaded in pieces is loaded by several transactions at once:
    // none of them can truncate it, so no FREEZE.
    let tables: Vec<String> = jobs
        .iter()
        .filter(|j| j.piece.is_none())
        .map(|j| j.table.clone())
        .collect();
    // Plain tables (not partitioned, not foreign) take COPY ... FREEZE
    // after a TRUNCATE in the same transaction.
    let plain = super::data_only::plain_tables(&clients[0], to.target, &tables).await?;
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<Job>>());
    let meter = Arc::new(Mutex::new(meter));
    let work = clients.iter_mut().map(|client| {
        let (queue, meter, plain) = (&queue, meter.clone(), &plain);
        async move {
            let mut counts = Vec::new();
            loop {
                let _permit = to.shared.permits.acquire().await.map_err(|_| {
                    CoreError::Internal("the loading connections' budget was closed".into())
                })?;
                to.shared.go_on(to.target)?;
                let next = queue.lock().expect("queue").pop_front();
                let Some(job) = next else {
                    return Ok::<_, CoreError>(counts);
                };
                let freeze = plain.contains(&job.table);
                counts.push(load_table(client, layout, job, freeze, to.target, &meter).await?);
            }
        }
    });
    let done = futures::future::try_join_all(work).await?;
    if let Ok(m) = meter.lock() {
        m.finish();
    }
    // One count per table, its pieces summed.
    let mut counts: Vec<TableCount> = Vec::new();
    for c in done.into_iter().flatten() {
        match counts.iter_mut().find(|t| t.table == c.table) {
            Some(t) => {
                t.snapshot_rows += c.snapshot_rows;
                t.restored_rows += c.restored_rows;
            }
            None => counts.push(c),
        }
    }
    Ok(counts)
}

/// One loading connection, with the settings pg_restore gives its own.
async fn session(to: &Target<'_>) -> Result<Client, CoreError> {
    let client = to.route.connect(&to.info).await?;
    let mut sql = String::from(
        "SET statement_timeout = 0; SET lock_timeout = 0; \
         SET idle_in_transaction_session_timeout = 0; SET row_security = off;",
    );
    if to.server_major >= 17 {
        sql.push_str(" SET transaction_timeout = 0;");
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(pg_err(to.target, "set up a loading session"))?;
    Ok(client)
}

/// Loads one table in its own transaction; its block is read and
/// decompressed on a blocking thread while the rows go to the server.
async fn load_table(
    client: &mut Client,
    layout: &Arc<Layout>,
    job: Job,
    freeze: bool,
    target: &str,
    meter: &Arc<Mutex<Meter>>,
) -> Result<TableCount, CoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_err(target, "begin loading"))?;
    let mut stmt = job.copy.trim_end_matches(';').to_string();
    if freeze {
        tx.batch_execute(&format!("TRUNCATE ONLY {}", job.table))
            .await
            .map_err(pg_err(target, &format!("truncate {}", job.table)))?;
        stmt.push_str(" WITH (FREEZE)");
    }
    let sink = tx
        .copy_in::<_, Bytes>(&stmt)
        .await
        .map_err(pg_err(target, &format!("start loading {}", job.table)))?;
    let mut sink = Box::pin(sink);
    let (send, mut rows_in) = mpsc::channel::<Bytes>(4);
    let reader = {
        let (layout, meter) = (layout.clone(), meter.clone());
        let (span, piece) = (job.span, job.piece);
        tokio::task::spawn_blocking(move || read_block(&layout, span, piece, &send, &meter))
    };
    let mut sent = Ok(());
    while let Some(bytes) = rows_in.recv().await {
        sent = sink.send(bytes).await;
        if sent.is_err() {
            break;
        }
    }
    drop(rows_in);
    let read = reader
        .await
        .map_err(|e| CoreError::Internal(format!("archive reader: {e}")))?;
    // The server's error first: the reader then only saw its channel close.
    sent.map_err(pg_err(target, &format!("load {}", job.table)))?;
    let rows = read?;
    let loaded = sink
        .as_mut()
        .finish()
        .await
        .map_err(pg_err(target, &format!("load {}", job.table)))?;
    if loaded != rows {
        return Err(CoreError::Check(format!(
            "{target}: {} received {loaded} rows, the snapshot has {rows}",
            job.table
        )));
    }
    tx.commit()
        .await
        .map_err(pg_err(target, &format!("commit {}", job.table)))?;
    if let Ok(mut m) = meter.lock() {
        m.add_rows(loaded);
    }
    Ok(TableCount {
        table: job.table,
        snapshot_rows: rows,
        restored_rows: loaded,
    })
}

/// Reads one table's block (or one piece of it) from the snapshot, sends
/// its rows in chunks; returns how many rows it held.
fn read_block(
    layout: &Layout,
    span: BlockSpan,
    piece: Option<PieceIndex>,
    send: &mpsc::Sender<Bytes>,
    meter: &Arc<Mutex<Meter>>,
) -> Result<u64, CoreError> {
    let corrupt = |e: String| {
        CoreError::Archive(ArchiveError::Corrupt(format!(
            "member \"{}\": {e}",
            layout.member
        )))
    };
    let (start, len) = match &piece {
        Some(p) => (p.offset, p.end - p.offset),
        None => (span.data, span.end - span.data),
    };
    let raw = layout.open_at(start)?;
    let counted = BufReader::with_capacity(
        1 << 20,
        Counted {
            inner: Box::new(raw.take(len)),
            meter: meter.clone(),
        },
    );
    let contents = match &piece {
        None => layout.head.block_contents(counted),
        Some(_) => layout.head.piece_contents(counted),
    }
    .map_err(|e| corrupt(e.to_string()))?;
    let mut checked = Checked {
        inner: contents,
        adler: 1,
        len: 0,
        want: piece,
    };
    let mut rows = CopyRows::new(&mut checked);
    let moved = for_each_chunk(&mut rows, |chunk| {
        send.blocking_send(Bytes::from(chunk))
            .map_err(|_| std::io::Error::other("loader stopped"))
    });
    match moved {
        Ok(_) => Ok(rows.rows()),
        Err(ChunkError::Read(e)) => Err(corrupt(format!(
            "table data of entry {}: {e}",
            span.dump_id
        ))),
        Err(ChunkError::Sink(e)) => Err(CoreError::Internal(e.to_string())),
    }
}

/// Checks a piece's length and Adler-32 against the index at its end (a
/// whole block is checked by its own zlib trailer).
struct Checked<R: Read> {
    inner: R,
    adler: u32,
    len: u64,
    want: Option<PieceIndex>,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let Some(want) = &self.want else {
            return Ok(n);
        };
        if n > 0 {
            self.adler = zlib_rs::adler32::adler32(self.adler, &buf[..n]);
            self.len += n as u64;
        } else if self.len != want.raw_len || self.adler != want.adler32 {
            return Err(std::io::Error::other(format!(
                "a piece holds {} bytes with Adler-32 {:08x}, the manifest says {} bytes, {:08x}",
                self.len, self.adler, want.raw_len, want.adler32
            )));
        }
        Ok(n)
    }
}

/// Counts compressed bytes read, for the progress display.
struct Counted {
    inner: Box<dyn Read + Send>,
    meter: Arc<Mutex<Meter>>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut m) = self.meter.lock() {
            m.add(n);
        }
        Ok(n)
    }
}
