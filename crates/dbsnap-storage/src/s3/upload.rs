//! Writing a snapshot as a multipart upload.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use futures::future::BoxFuture;
use object_store::multipart::PartId;
use object_store::path::Path as Key;
use object_store::PutPayload;

use super::marker::{Marker, LIVE_UPLOADS};
use super::{error_chain, S3Repository, ABORT_WAIT, HEARTBEAT, MAX_PARTS, PARTS_IN_FLIGHT, UPLOAD};
use crate::{
    ArchiveOutput, PendingWrite, Placeholder, Repository, Scratch, SnapshotInfo, StorageError,
};

/// The multipart upload of a pending write, once its first part is full.
struct Upload {
    id: String,
    marker: Key,
    heartbeat: tokio::task::JoinHandle<()>,
}

type PartResult = Result<(usize, PartId), object_store::Error>;

/// A snapshot being uploaded.
pub(super) struct S3Pending {
    repo: S3Repository,
    name: String,
    key: Key,
    upload: Option<Upload>,
    /// Bytes written so far (the offset of the next byte).
    written: u64,
    /// Parts not uploaded yet: the one being filled and full ones with
    /// unfilled placeholders.
    parts: BTreeMap<usize, Vec<u8>>,
    /// Unfilled placeholders per part.
    open: BTreeMap<usize, usize>,
    in_flight: VecDeque<tokio::task::JoinHandle<PartResult>>,
    done: BTreeMap<usize, PartId>,
    failed: Option<String>,
    spools: Vec<Scratch>,
    committed: bool,
}

impl S3Pending {
    pub(super) fn new(repo: S3Repository, name: &str) -> S3Pending {
        S3Pending {
            key: repo.key(name),
            repo,
            name: name.to_string(),
            upload: None,
            written: 0,
            parts: BTreeMap::new(),
            open: BTreeMap::new(),
            in_flight: VecDeque::new(),
            done: BTreeMap::new(),
            failed: None,
            spools: Vec::new(),
            committed: false,
        }
    }

    fn part_size(&self) -> u64 {
        self.repo.part_size as u64
    }

    fn fail(&mut self, why: String) -> io::Error {
        self.failed = Some(why.clone());
        io::Error::other(why)
    }

    fn check_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some(why) => Err(io::Error::other(why.clone())),
            None => Ok(()),
        }
    }

    /// Starts the multipart upload and its marker.
    fn start_upload(&mut self) -> io::Result<()> {
        let (store, key) = (self.repo.store.clone(), self.key.clone());
        let id = self
            .repo
            .io
            .wait(async move { store.create_multipart(&key).await })
            .map_err(|e| {
                self.fail(format!(
                    "starting the upload of {}: {}",
                    self.location(),
                    error_chain(&e)
                ))
            })?;
        LIVE_UPLOADS.lock().map(|mut l| l.insert(id.clone())).ok();
        let token: u64 = rand::random();
        let marker = self
            .repo
            .key(&format!(".{}{UPLOAD}{token:016x}", self.name));
        let body = serde_json::to_vec(&Marker::mine(id.clone())).expect("marker serialises");
        let (store, mkey) = (self.repo.store.clone(), marker.clone());
        let put = move || {
            let (store, mkey, body) = (store.clone(), mkey.clone(), body.clone());
            async move { store.put(&mkey, PutPayload::from(body)).await }
        };
        let first = put();
        let written = self.repo.io.wait(first);
        let upload = Upload {
            id,
            marker,
            heartbeat: self.repo.io.spawn(async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    let _ = put().await;
                }
            }),
        };
        self.upload = Some(upload);
        written.map(|_| ()).map_err(|e| {
            self.fail(format!(
                "writing the upload marker of {}: {}",
                self.location(),
                error_chain(&e)
            ))
        })
    }

    fn location(&self) -> String {
        self.repo.url_of(&self.name)
    }

    /// Uploads part `index` now (its placeholders are filled).
    fn send(&mut self, index: usize) -> io::Result<()> {
        if index >= MAX_PARTS {
            return Err(self.fail(format!(
                "{} is larger than S3's 10,000 parts of {} MiB: set a larger part_size in [s3] of dbsnap.toml",
                self.location(),
                self.repo.part_size >> 20
            )));
        }
        if self.upload.is_none() {
            self.start_upload()?;
        }
        let data = self.parts.remove(&index).unwrap_or_default();
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_one()?;
        }
        let upload = self.upload.as_ref().expect("upload started");
        let (store, key, id) = (self.repo.store.clone(), self.key.clone(), upload.id.clone());
        let fut: BoxFuture<'static, PartResult> = Box::pin(async move {
            store
                .put_part(&key, &id, index, PutPayload::from(data))
                .await
                .map(|p| (index, p))
        });
        self.in_flight.push_back(self.repo.io.spawn(fut));
        Ok(())
    }

    fn wait_one(&mut self) -> io::Result<()> {
        let Some(h) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match self.repo.io.join(h) {
            Ok(Ok((i, p))) => {
                self.done.insert(i, p);
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(format!(
                "uploading {}: {}",
                self.location(),
                error_chain(&e)
            ))),
            Err(e) => Err(self.fail(format!("uploading {}: {e}", self.location()))),
        }
    }

    /// Appends `data` at the end, sending every part it completes.
    fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        let size = self.part_size();
        while !data.is_empty() {
            let index = (self.written / size) as usize;
            let room = (size - self.written % size) as usize;
            let n = room.min(data.len());
            self.parts
                .entry(index)
                .or_insert_with(|| Vec::with_capacity(size as usize))
                .extend_from_slice(&data[..n]);
            self.written += n as u64;
            data = &data[n..];
            if n == room && self.open.get(&index).copied().unwrap_or(0) == 0 {
                self.send(index)?;
            }
        }
        Ok(())
    }
}

impl Write for S3Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_failed()?;
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check_failed()
    }
}

impl ArchiveOutput for S3Pending {
    fn reserve(&mut self, len: usize) -> io::Result<Placeholder> {
        self.check_failed()?;
        let offset = self.written;
        let size = self.part_size();
        if len > 0 {
            let (first, last) = (offset / size, (offset + len as u64 - 1) / size);
            for i in first..=last {
                *self.open.entry(i as usize).or_default() += 1;
            }
        }
        self.append(&vec![0u8; len])?;
        Ok(Placeholder { offset, len })
    }

    fn fill(&mut self, at: Placeholder, data: &[u8]) -> io::Result<()> {
        self.check_failed()?;
        if data.len() != at.len {
            return Err(io::Error::other(format!(
                "placeholder of {} bytes filled with {}",
                at.len,
                data.len()
            )));
        }
        let size = self.part_size();
        let mut pos = at.offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = (pos / size) as usize;
            let within = (pos % size) as usize;
            let n = ((size as usize) - within).min(rest.len());
            let Some(part) = self.parts.get_mut(&index) else {
                return Err(io::Error::other("placeholder filled twice"));
            };
            part[within..within + n].copy_from_slice(&rest[..n]);
            let open = self.open.entry(index).or_default();
            *open = open.saturating_sub(1);
            let complete = *open == 0 && (index as u64 + 1) * size <= self.written;
            if *open == 0 {
                self.open.remove(&index);
            }
            if complete {
                self.send(index)?;
            }
            pos += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }
}

impl PendingWrite for S3Pending {
    fn name(&self) -> &str {
        &self.name
    }

    fn spool(&mut self, tag: &str) -> Result<(File, PathBuf), StorageError> {
        let s = Scratch::in_temp_dir(&format!("spool{tag}"))?;
        let f = s
            .as_file()
            .try_clone()
            .map_err(|e| StorageError::io(s.path(), e))?;
        let path = s.path().to_path_buf();
        self.spools.push(s);
        Ok((f, path))
    }

    fn commit(mut self: Box<Self>) -> Result<SnapshotInfo, StorageError> {
        let location = self.location();
        let io_err = |e: io::Error| StorageError::Remote {
            location: location.clone(),
            message: e.to_string(),
            hint: String::new(),
        };
        self.check_failed().map_err(io_err)?;
        if !self.open.is_empty() {
            return Err(io_err(io::Error::other("a placeholder was never filled")));
        }
        // Taken meanwhile?
        match self.repo.head(&self.name) {
            Ok(_) => return Err(StorageError::Exists(self.name.clone())),
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let (store, key) = (self.repo.store.clone(), self.key.clone());
        if self.upload.is_none() {
            // Smaller than one part: one PUT.
            let data = self.parts.remove(&0).unwrap_or_default();
            self.repo
                .io
                .wait(async move { store.put(&key, PutPayload::from(data)).await })
                .map_err(|e| self.repo.error(&self.name, e))?;
        } else {
            let last = (self.written.saturating_sub(1) / self.part_size()) as usize;
            if self.parts.contains_key(&last) {
                self.send(last).map_err(io_err)?;
            }
            while !self.in_flight.is_empty() {
                self.wait_one().map_err(io_err)?;
            }
            let parts: Vec<PartId> = std::mem::take(&mut self.done).into_values().collect();
            if parts.len() != last + 1 {
                return Err(io_err(io::Error::other(format!(
                    "{} of {} parts uploaded",
                    parts.len(),
                    last + 1
                ))));
            }
            let id = self.upload.as_ref().expect("upload").id.clone();
            self.repo
                .io
                .wait(async move { store.complete_multipart(&key, &id, parts).await })
                .map_err(|e| self.repo.error(&self.name, e))?;
        }
        self.committed = true;
        if let Some(u) = self.upload.take() {
            // The heartbeat ends before the marker goes, so that no late
            // refresh brings it back.
            u.heartbeat.abort();
            let _ = self.repo.io.join(u.heartbeat);
            LIVE_UPLOADS.lock().map(|mut l| l.remove(&u.id)).ok();
            // A marker left by a failure here is removed by the next sweep
            // (its upload is complete; the abort finds nothing).
            let _ = self.repo.delete_key(u.marker);
        }
        self.repo.stat(&self.name)
    }
}

impl Drop for S3Pending {
    fn drop(&mut self) {
        for h in &self.in_flight {
            h.abort();
        }
        let Some(u) = self.upload.take() else { return };
        u.heartbeat.abort();
        if self.committed {
            return;
        }
        let (store, key, id, marker) = (
            self.repo.store.clone(),
            self.key.clone(),
            u.id.clone(),
            u.marker,
        );
        let aborted = self.repo.io.wait(async move {
            tokio::time::timeout(ABORT_WAIT, async move {
                store.abort_multipart(&key, &id).await?;
                store.delete(&marker).await
            })
            .await
        });
        LIVE_UPLOADS.lock().map(|mut l| l.remove(&u.id)).ok();
        if !matches!(aborted, Ok(Ok(()))) {
            tracing::warn!(
                "the unfinished upload of {} could not be aborted now; the next `dbsnap create` (or `dbsnap cleanup`) into {} aborts it",
                self.location(),
                self.repo.location()
            );
        }
    }
}
