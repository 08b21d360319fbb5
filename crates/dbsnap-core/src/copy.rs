//! `copy`: snapshots from one repository to another (a directory or S3,
//! either way), checked on the way and on arrival.
//!
//! Each snapshot is read once from the source and written to the
//! destination as it streams, while its members' checksums are checked
//! against its manifest (a damaged snapshot is not copied: its pending
//! write is dropped, leaving nothing). Once committed, the destination is
//! read back in full and its SHA-256 compared with what was sent; a
//! mismatch deletes the copy. A name already at the destination is
//! skipped when it is the same snapshot (same size, same last blocks:
//! the manifest with every member's checksum) and refused otherwise:
//! nothing is ever overwritten. A snapshot pinned at the source is pinned
//! at the destination too, also one that was there already; copy never
//! unpins one.

use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dbsnap_archive::identify::END_CHECK_BYTES;
use dbsnap_archive::snapshot;
use dbsnap_storage::{PendingWrite, Repository, SnapshotInfo, SnapshotRef, StorageError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::create::Progress;
use crate::error::CoreError;
use crate::inspect;

/// What became of one snapshot in a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyStatus {
    /// Copied, checked and read back.
    Copied,
    /// The same snapshot was there already.
    Present,
    /// Not copied (see its error).
    Failed,
}

/// What happened to one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct CopyItem {
    /// Its name (the same in both repositories).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// What became of it.
    pub status: CopyStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// The kind of failure, as in `--json` errors (`verify`, `storage`, …).
    pub kind: Option<&'static str>,
    /// The exit code of the failure.
    #[serde(skip)]
    pub code: u8,
    /// Pinned at the destination because it is pinned at the source.
    pub pinned: bool,
    /// Seconds spent on it (read, write and read-back).
    pub seconds: f64,
}

/// Result of `copy`.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// The source repository.
    pub from: String,
    /// The destination repository.
    pub to: String,
    /// One entry per snapshot considered, oldest first.
    pub snapshots: Vec<CopyItem>,
    /// Bytes copied (not counting those already present).
    pub bytes: u64,
}

impl CopyReport {
    /// The first failure's exit code, if any failed.
    pub fn failure_code(&self) -> Option<u8> {
        self.snapshots
            .iter()
            .find(|i| i.status == CopyStatus::Failed)
            .map(|i| i.code)
    }
}

/// Copies `names` (every snapshot, when empty) from `from` to `to`,
/// oldest first. A name not in `from` is an error before anything is
/// copied; a snapshot that fails is reported on its row and the others
/// are still copied. `cancel` stops at the next read (the snapshot being
/// copied is abandoned, leaving nothing).
pub fn copy(
    from: &Arc<dyn Repository>,
    to: &Arc<dyn Repository>,
    names: &[String],
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<CopyReport, CoreError> {
    if same_place(from, to) {
        return Err(CoreError::Config {
            message: format!(
                "--from and --to are the same repository ({})",
                from.location()
            ),
            hint: "name another directory or s3:// URL with --to".into(),
        });
    }
    let mut chosen = select(from, names)?;
    chosen.reverse();
    let pins = from.pinned()?;
    let (present, pinned_there) = match to.list() {
        Ok(l) => (l, to.pinned()?),
        Err(StorageError::NoRepository(_)) => Default::default(),
        Err(e) => return Err(e.into()),
    };
    // What an earlier copy killed on the way left behind, and a missing
    // bucket before anything is read.
    match to.remove_stale() {
        Ok(_) | Err(StorageError::NoRepository(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut report = CopyReport {
        from: from.location(),
        to: to.location(),
        snapshots: Vec::new(),
        bytes: 0,
    };
    let total = chosen.len();
    for (i, info) in chosen.into_iter().enumerate() {
        progress.phase(&format!("copying {} ({}/{total})", info.name, i + 1));
        let started = Instant::now();
        let outcome = match present.iter().find(|p| p.name == info.name) {
            Some(there) => compare(from, to, &info, there).map(|()| CopyStatus::Present),
            None => copy_one(from, to, &info, progress, i, cancel).map(|()| CopyStatus::Copied),
        };
        let pinned = pins.contains(&info.name);
        let outcome = outcome.and_then(|status| {
            if pinned && !pinned_there.contains(&info.name) {
                pin(to, &info.name)?;
            }
            Ok(status)
        });
        if matches!(outcome, Err(CoreError::Interrupted(_))) {
            return Err(CoreError::Interrupted(format!(
                " while copying {}; it was not written (the {} copied before it are complete)",
                info.name,
                report
                    .snapshots
                    .iter()
                    .filter(|s| s.status == CopyStatus::Copied)
                    .count()
            )));
        }
        let mut item = CopyItem {
            name: info.name.clone(),
            size: info.size,
            status: CopyStatus::Copied,
            error: None,
            kind: None,
            code: 0,
            pinned: false,
            seconds: started.elapsed().as_secs_f64(),
        };
        match outcome {
            Ok(status) => {
                item.status = status;
                item.pinned = pinned;
                if status == CopyStatus::Copied {
                    report.bytes += info.size;
                }
            }
            Err(e) => {
                tracing::warn!(target: crate::REPORTED, "{}: {e}", info.name);
                item.status = CopyStatus::Failed;
                item.code = e.exit_code();
                item.kind = Some(e.kind_name());
                item.error = Some(e.to_string());
            }
        }
        report.snapshots.push(item);
    }
    Ok(report)
}

/// Pins a snapshot at the destination, as it is at the source.
fn pin(to: &Arc<dyn Repository>, name: &str) -> Result<(), CoreError> {
    to.set_pinned(name, true).map_err(|e| CoreError::Left {
        error: Box::new(e.into()),
        note: format!(
            "{name} is at {} but not pinned there as it is at the source\nhint: run copy again, or `dbsnap pin {name} --repo {}`",
            to.location(),
            to.location()
        ),
    })
}

fn same_place(a: &Arc<dyn Repository>, b: &Arc<dyn Repository>) -> bool {
    match (a.local_dir(), b.local_dir()) {
        (Some(x), Some(y)) => match (x.canonicalize(), y.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => x == y,
        },
        _ => a.location().trim_end_matches('/') == b.location().trim_end_matches('/'),
    }
}

/// The snapshots to copy, newest first: every one, or those named (with
/// or without `.tar`), each of which must exist.
fn select(from: &Arc<dyn Repository>, names: &[String]) -> Result<Vec<SnapshotInfo>, CoreError> {
    let listed = from.list()?;
    if names.is_empty() {
        return Ok(listed);
    }
    let mut chosen = Vec::new();
    for name in names {
        let with_tar = format!("{name}.tar");
        let found = listed
            .iter()
            .find(|s| &s.name == name || s.name == with_tar)
            .ok_or_else(|| CoreError::Config {
                message: format!("snapshot \"{name}\" not found in {}", from.location()),
                hint: format!(
                    "run `dbsnap list --repo {}` to see its snapshots",
                    from.location()
                ),
            })?;
        if !chosen.contains(found) {
            chosen.push(found.clone());
        }
    }
    dbsnap_storage::newest_first(&mut chosen);
    Ok(chosen)
}

/// A snapshot of the same name is at the destination: the same one, or
/// a refusal.
fn compare(
    from: &Arc<dyn Repository>,
    to: &Arc<dyn Repository>,
    info: &SnapshotInfo,
    there: &SnapshotInfo,
) -> Result<(), CoreError> {
    let same = there.size == info.size && tail(from, info)? == tail(to, there)?;
    if same {
        return Ok(());
    }
    Err(CoreError::Storage(StorageError::Remote {
        location: SnapshotRef::new(to.clone(), &info.name).display(),
        message: format!(
            "a different snapshot of the same name is there already ({} bytes, the source's is {})",
            there.size, info.size
        ),
        hint: "nothing was overwritten; compare both with `dbsnap verify`, and delete the wrong one with `dbsnap delete` if you mean to replace it".into(),
    }))
}

/// The last blocks of a snapshot: its manifest, with every member's
/// checksum.
fn tail(repo: &Arc<dyn Repository>, info: &SnapshotInfo) -> Result<Vec<u8>, CoreError> {
    let len = info.size.min(END_CHECK_BYTES);
    let mut bytes = Vec::new();
    repo.open_range(&info.name, info.size - len)?
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(repo, &info.name, e))?;
    Ok(bytes)
}

fn io_error(repo: &Arc<dyn Repository>, name: &str, e: io::Error) -> CoreError {
    CoreError::Storage(StorageError::Io {
        path: SnapshotRef::new(repo.clone(), name).display(),
        source: e,
    })
}

/// Streams one snapshot across, checking it, then reads the copy back.
fn copy_one(
    from: &Arc<dyn Repository>,
    to: &Arc<dyn Repository>,
    info: &SnapshotInfo,
    progress: &dyn Progress,
    index: usize,
    cancel: &AtomicBool,
) -> Result<(), CoreError> {
    let source = SnapshotRef::new(from.clone(), &info.name);
    let mut pending = to.begin(&info.name)?;
    progress.transfer_started(index, &info.name);
    let mut tee = Tee {
        input: source.open()?,
        output: &mut pending,
        hash: Sha256::new(),
        done: 0,
        write_error: None,
        progress,
        index,
        cancel,
    };
    let checked = snapshot::verify(BufReader::with_capacity(1 << 20, &mut tee), |_, _| Ok(()))
        .map(|_| ())
        .and_then(|()| {
            // What follows the manifest (the archive's end blocks).
            io::copy(&mut tee, &mut io::sink())
                .map(|_| ())
                .map_err(Into::into)
        });
    if let Some(e) = tee.write_error.take() {
        return Err(CoreError::Storage(StorageError::Io {
            path: SnapshotRef::new(to.clone(), &info.name).display(),
            source: e,
        }));
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(CoreError::Interrupted(String::new()));
    }
    checked.map_err(|e| inspect::archive_error(&source, e))?;
    let (sent, done) = (tee.hash.finalize(), tee.done);
    if done != info.size {
        return Err(CoreError::Storage(StorageError::Io {
            path: source.display(),
            source: io::Error::other(format!(
                "read {done} bytes, the repository lists {} (did it change while being copied?)",
                info.size
            )),
        }));
    }
    pending.flush().map_err(|e| io_error(to, &info.name, e))?;
    pending.commit()?;
    progress.transfer_finished(index, done);
    progress.phase(&format!(
        "checking {} on arrival (reading it back)",
        info.name
    ));
    read_back(to, &info.name, &sent)
}

/// Reads the committed copy back and compares its SHA-256 with what was
/// sent; a copy that differs is deleted.
fn read_back(to: &Arc<dyn Repository>, name: &str, sent: &[u8]) -> Result<(), CoreError> {
    let mut hash = Sha256::new();
    let mut reader = to.open(name)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| io_error(to, name, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    if hash.finalize().as_slice() == sent {
        return Ok(());
    }
    let removed = match to.delete(name) {
        Ok(()) => "it was deleted".to_string(),
        Err(e) => format!("deleting it failed too ({e}): delete it with `dbsnap delete`"),
    };
    Err(CoreError::Verify {
        file: SnapshotRef::new(to.clone(), name).display(),
        message: format!(
            "the copy read back differs from what was sent; {removed}; run copy again"
        ),
    })
}

/// Passes what is read on to the destination and hashes it.
struct Tee<'a> {
    input: Box<dyn Read + Send>,
    output: &'a mut Box<dyn PendingWrite>,
    hash: Sha256,
    done: u64,
    write_error: Option<io::Error>,
    progress: &'a dyn Progress,
    index: usize,
    cancel: &'a AtomicBool,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("interrupted"));
        }
        let n = self.input.read(buf)?;
        if let Err(e) = self.output.write_all(&buf[..n]) {
            let message = e.to_string();
            self.write_error = Some(e);
            return Err(io::Error::other(message));
        }
        self.hash.update(&buf[..n]);
        self.done += n as u64;
        self.progress.transfer_bytes(self.index, self.done);
        Ok(n)
    }
}
