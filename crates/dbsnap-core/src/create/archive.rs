//! Writing the snapshot from the running dumps: the largest member streams
//! straight into the archive, the others into spool files appended after,
//! SHA-256 on the way; a failing dump stops the others and its error (the
//! root cause) is the one reported; the manifest goes last and the pending
//! write is published.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dbsnap_archive::snapshot::{Metadata, SnapshotWriter};
use dbsnap_storage::{PendingWrite, Repository};
use sha2::{Digest, Sha256};

use super::{DumpControl, DumpEngine, DumpJob, Progress, RunningDump};
use crate::chunks::{for_each_chunk, ChunkError};
use crate::crypt::Sealer;
use crate::error::CoreError;

/// A member spooled to a file, with its size and checksum.
struct Spooled {
    file: File,
    size: u64,
    sha256: String,
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies a dump's output into `out`, reporting progress. Write errors are
/// storage errors (full disk); read errors belong to the dump.
fn pump(
    run: &mut RunningDump,
    out: &mut dyn Write,
    index: usize,
    progress: &dyn Progress,
    path: &std::path::Path,
) -> Result<u64, CoreError> {
    let mut total = 0u64;
    let control = run.control.clone();
    let mut last = None;
    for_each_chunk(&mut run.output, |chunk| {
        out.write_all(&chunk)?;
        total += chunk.len() as u64;
        progress.transfer_bytes(index, total);
        let work = control.work();
        if work.is_some() && work != last {
            progress.transfer_work(index, work.unwrap_or_default());
            last = work;
        }
        Ok(())
    })
    .map_err(|e| match e {
        ChunkError::Read(e) => CoreError::Internal(format!("reading pg_dump output: {e}")),
        ChunkError::Sink(e) => CoreError::write_io(path, e),
    })
}

/// The archive being written.
type Writer = SnapshotWriter<Box<dyn PendingWrite>>;

/// Where one dump's bytes go: straight into the archive, or a spool file.
enum Sink {
    Direct(Box<Writer>),
    Spool(File, PathBuf),
}

/// What one dump thread hands back: the archive writer (if it streamed
/// into it), its spool (otherwise), and the bytes written.
type DumpOutcome = (Option<Box<Writer>>, Option<Spooled>, u64);

#[allow(clippy::too_many_arguments)]
pub(super) async fn write_archive(
    repo: &dyn Repository,
    file_name: &str,
    metadata: &Metadata,
    jobs: &[DumpJob],
    members: &[String],
    direct: usize,
    engine: &dyn DumpEngine,
    progress: &Arc<dyn Progress>,
    extra: &[(String, Vec<u8>)],
    sealer: Option<Arc<Sealer>>,
) -> Result<(dbsnap_storage::SnapshotInfo, Vec<u64>), CoreError> {
    let mut pending = begin_unique(repo, file_name)?;
    // Errors name the snapshot being written.
    let tmp_path = PathBuf::from(format!("{}/{}", repo.location(), pending.name()));
    let mut spools = Vec::new();
    for (i, m) in members.iter().enumerate() {
        spools.push(if i == direct {
            None
        } else {
            Some(pending.spool(m)?)
        });
    }
    let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let mut writer =
        SnapshotWriter::new(pending, metadata, mtime).map_err(|e| archive_io(&tmp_path, e))?;
    if let Some(s) = &sealer {
        writer
            .add_bytes(crate::crypt::KEY_MEMBER, s.key_member())
            .map_err(|e| archive_io(&tmp_path, e))?;
    }
    let mut writer = Some(Box::new(writer));
    let sinks: Vec<Sink> = spools
        .into_iter()
        .map(|spool| match spool {
            Some((file, path)) => Sink::Spool(file, path),
            None => Sink::Direct(writer.take().expect("one direct member")),
        })
        .collect();
    let running = start_dumps(engine, jobs)?;
    let aborter = Aborter::new(&running);
    let _kill_on_cancel = KillOnDrop(aborter.children.clone());
    let (jobs_owned, members_owned, progress_owned, tmp_owned, sealer_owned) = (
        jobs.to_vec(),
        members.to_vec(),
        progress.clone(),
        tmp_path.clone(),
        sealer.clone(),
    );
    let abort = aborter.clone();
    // Blocking copies run off the async workers, so signals are still handled.
    let result = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = running
                .into_iter()
                .zip(sinks)
                .enumerate()
                .map(|(i, (run, sink))| {
                    let (job, member) = (&jobs_owned[i], &members_owned[i]);
                    let (abort, tmp_path, progress) = (&abort, &tmp_owned, &*progress_owned);
                    let sealer = sealer_owned.as_deref();
                    scope.spawn(move || {
                        copy_dump(i, run, sink, job, member, abort, progress, tmp_path, sealer)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(CoreError::Internal("dump thread panicked".into())))
                })
                .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|e| CoreError::Internal(format!("dump task failed: {e}")))?;
    let (mut writer, spooled, sizes) = gather(result, aborter.root())?;
    for (member, control) in members.iter().zip(&aborter.children) {
        writer.index_member(member, control.index());
    }
    let extra = match &sealer {
        Some(s) => extra
            .iter()
            .map(|(name, bytes)| Ok((name.clone(), s.seal_bytes(bytes)?)))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| CoreError::Internal(format!("age: {e}")))?,
        None => extra.to_vec(),
    };
    let info = finish_archive(writer, spooled, members.to_vec(), extra, tmp_path).await?;
    Ok((info, sizes))
}

/// Begins the snapshot; two snapshots in the same second get distinct names.
fn begin_unique(
    repo: &dyn Repository,
    file_name: &str,
) -> Result<Box<dyn PendingWrite>, CoreError> {
    let mut attempt = 1;
    loop {
        let name = if attempt == 1 {
            file_name.to_string()
        } else {
            format!("{}-{attempt}.tar", file_name.trim_end_matches(".tar"))
        };
        match repo.begin(&name) {
            Err(dbsnap_storage::StorageError::Exists(_)) if attempt < 100 => attempt += 1,
            other => return Ok(other?),
        }
    }
}

/// Starts every dump; if one cannot start, the started ones are stopped.
fn start_dumps(engine: &dyn DumpEngine, jobs: &[DumpJob]) -> Result<Vec<RunningDump>, CoreError> {
    let mut running = Vec::new();
    for job in jobs {
        match engine.start(job) {
            Ok(r) => running.push(r),
            Err(e) => {
                running.iter().for_each(RunningDump::kill);
                return Err(e);
            }
        }
    }
    Ok(running)
}

/// Stops every dump once one fails, and remembers which failed first (the
/// root cause, not the dumps stopped because of it).
#[derive(Clone)]
struct Aborter {
    children: Vec<Arc<dyn DumpControl>>,
    aborting: Arc<AtomicBool>,
    first_failure: Arc<Mutex<Option<usize>>>,
}

impl Aborter {
    fn new(running: &[RunningDump]) -> Aborter {
        Aborter {
            children: running.iter().map(|r| r.control.clone()).collect(),
            aborting: Arc::new(AtomicBool::new(false)),
            first_failure: Arc::new(Mutex::new(None)),
        }
    }

    fn abort(&self, index: usize) {
        if !self.aborting.swap(true, Ordering::SeqCst) {
            if let Ok(mut f) = self.first_failure.lock() {
                *f = Some(index);
            }
        }
        for c in &self.children {
            c.kill();
        }
    }

    fn root(&self) -> Option<usize> {
        self.first_failure.lock().ok().and_then(|f| *f)
    }
}

/// Copies dump `i` into its sink and waits for it; a failure stops the others.
#[allow(clippy::too_many_arguments)]
fn copy_dump(
    i: usize,
    mut run: RunningDump,
    sink: Sink,
    job: &DumpJob,
    member: &str,
    abort: &Aborter,
    progress: &dyn Progress,
    tmp_path: &std::path::Path,
    sealer: Option<&Sealer>,
) -> Result<DumpOutcome, CoreError> {
    progress.transfer_started(i, &job.info.dbname);
    let seal_err = |e| CoreError::write_io(tmp_path, e);
    let copied = (|| -> Result<DumpOutcome, CoreError> {
        match sink {
            Sink::Direct(mut w) => {
                let mut stream = w
                    .stream_member(member)
                    .map_err(|e| archive_io(tmp_path, e))?;
                let n = match sealer {
                    Some(s) => {
                        let mut sealed = s.seal(&mut stream).map_err(seal_err)?;
                        let n = pump(&mut run, &mut sealed, i, progress, tmp_path)?;
                        sealed.finish().map_err(seal_err)?;
                        n
                    }
                    None => pump(&mut run, &mut stream, i, progress, tmp_path)?,
                };
                stream.finish().map_err(|e| archive_io(tmp_path, e))?;
                Ok((Some(w), None, n))
            }
            Sink::Spool(file, path) => {
                let mut hw = HashingWriter {
                    inner: file,
                    hasher: Sha256::new(),
                    size: 0,
                };
                let n = match sealer {
                    Some(s) => {
                        let mut sealed = s.seal(&mut hw).map_err(seal_err)?;
                        let n = pump(&mut run, &mut sealed, i, progress, &path)?;
                        sealed.finish().map_err(seal_err)?;
                        n
                    }
                    None => pump(&mut run, &mut hw, i, progress, &path)?,
                };
                let sha256 = hex::encode(hw.hasher.finalize());
                let spooled = Spooled {
                    file: hw.inner,
                    size: hw.size,
                    sha256,
                };
                Ok((None, Some(spooled), n))
            }
        }
    })();
    if copied.is_err() {
        abort.abort(i);
    }
    let waited = run.wait(&job.display);
    if waited.is_err() {
        abort.abort(i);
    }
    let outcome = copied?;
    waited?;
    progress.transfer_finished(i, outcome.2);
    Ok(outcome)
}

/// The archive writer, the spools in member order and the bytes per dump;
/// on failure, the root cause's error.
#[allow(clippy::type_complexity)]
fn gather(
    result: Vec<Result<DumpOutcome, CoreError>>,
    root: Option<usize>,
) -> Result<(Box<Writer>, Vec<Option<Spooled>>, Vec<u64>), CoreError> {
    if result.iter().any(Result::is_err) {
        let mut failed: Vec<(usize, CoreError)> = result
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.err().map(|e| (i, e)))
            .collect();
        let pos = failed
            .iter()
            .position(|(i, _)| Some(*i) == root)
            .unwrap_or(0);
        return Err(failed.swap_remove(pos).1);
    }
    let (mut writer, mut spooled, mut sizes) = (None, Vec::new(), Vec::new());
    for (w, s, n) in result.into_iter().flatten() {
        writer = writer.or(w);
        spooled.push(s);
        sizes.push(n);
    }
    let writer = writer.ok_or_else(|| CoreError::Internal("no direct member".into()))?;
    Ok((writer, spooled, sizes))
}

/// Appends the spooled members and the extra ones, writes the manifest,
/// and publishes.
async fn finish_archive(
    mut writer: Box<Writer>,
    spooled: Vec<Option<Spooled>>,
    members: Vec<String>,
    extra: Vec<(String, Vec<u8>)>,
    tmp_path: PathBuf,
) -> Result<dbsnap_storage::SnapshotInfo, CoreError> {
    tokio::task::spawn_blocking(move || -> Result<dbsnap_storage::SnapshotInfo, CoreError> {
        for (i, s) in spooled.into_iter().enumerate() {
            if let Some(mut s) = s {
                s.file
                    .seek(SeekFrom::Start(0))
                    .map_err(|e| CoreError::write_io(&tmp_path, e))?;
                writer
                    .add_precomputed(&members[i], &mut s.file, s.size, &s.sha256)
                    .map_err(|e| archive_io(&tmp_path, e))?;
            }
        }
        for (name, bytes) in &extra {
            writer
                .add_bytes(name, bytes)
                .map_err(|e| archive_io(&tmp_path, e))?;
        }
        let (pending, _) = writer.finish().map_err(|e| archive_io(&tmp_path, e))?;
        Ok(pending.commit()?)
    })
    .await
    .map_err(|e| CoreError::Internal(format!("finishing the archive failed: {e}")))?
}

/// Kills the dumps if the run is abandoned (a signal drops the future).
struct KillOnDrop(Vec<Arc<dyn DumpControl>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for c in &self.0 {
            c.kill();
        }
    }
}

fn archive_io(path: &std::path::Path, e: dbsnap_archive::snapshot::ArchiveError) -> CoreError {
    match e {
        dbsnap_archive::snapshot::ArchiveError::Io(io) => CoreError::write_io(path, io),
        other => other.into(),
    }
}
