//! The dbsnap snapshot archive, format v1: one tar file holding
//! `dbsnap.json` (metadata) first, one pg_dump custom archive per database,
//! optional extras, and `manifest.json` (size and SHA-256 of every member)
//! last, so a streamed archive verifies without seeking.
//!
//! The writer streams members of unknown size straight into the tar: it
//! reserves the member's header, streams the data, and fills the header in
//! once the size is known. It never seeks and never buffers a member: an
//! [`ArchiveOutput`] only appends, plus fills reserved placeholders (a file
//! by a positional write, an object store by holding back the part that
//! holds the placeholder).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::version::SchemaVersion;

/// Name of the metadata member (always first).
pub const METADATA_MEMBER: &str = "dbsnap.json";
/// Name of the manifest member (always last).
pub const MANIFEST_MEMBER: &str = "manifest.json";
/// Format version written by this crate.
pub const FORMAT_VERSION: &str = "1.1";
/// Major format version this crate reads.
pub const FORMAT_MAJOR: u32 = 1;
/// Largest metadata or manifest member accepted (they are small).
const MAX_JSON_MEMBER: u64 = 64 << 20;

/// How the moment of a snapshot was made consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyMethod {
    /// Identical transaction snapshots in every database.
    Snapshot,
    /// Writers briefly blocked by SHARE locks while snapshots were taken.
    Barrier,
    /// The application was stopped while snapshots were taken.
    Quiesce,
    /// Each database on its own, like pg_dump.
    None,
}

impl ConsistencyMethod {
    /// Lowercase name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsistencyMethod::Snapshot => "snapshot",
            ConsistencyMethod::Barrier => "barrier",
            ConsistencyMethod::Quiesce => "quiesce",
            ConsistencyMethod::None => "none",
        }
    }
}

/// Record of how the cut was established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    /// Method used.
    pub method: ConsistencyMethod,
    /// True only if all databases were captured at one moment.
    pub consistent_cut: bool,
    /// Attempts needed (snapshot method).
    pub attempts: u32,
    /// The shared transaction snapshot (`xmin:xmax:xip`), when one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// One database in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseEntry {
    /// Database name on the server.
    pub name: String,
    /// Archive member holding its pg_dump custom archive.
    pub member: String,
    /// Server, as `host:port` (no user, no password).
    pub server: String,
    /// `server_version`.
    pub server_version: String,
    /// `server_version_num`.
    pub server_version_num: u32,
    /// The pg_dump that wrote the member.
    pub pg_dump_version: String,
    /// Schema version at the snapshot, if a migration table was found.
    pub schema_version: Option<SchemaVersion>,
    /// How it was reached, as a libpq `key=value` string without password
    /// (host, port, dbname, user, sslmode): restore's default connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The server's system identifier (`pg_control_system()`): which
    /// cluster the database was taken from, whatever address reached it.
    /// None in snapshots of format 1.0, or where the role could not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
}

/// The Kubernetes workload a snapshot was taken for (`create --k8s`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesOrigin {
    /// Namespace of the workload.
    pub namespace: String,
    /// The workload, as `kind/name` (`deployment/core-api`).
    pub workload: String,
}

impl std::fmt::Display for KubernetesOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in namespace {}", self.workload, self.namespace)
    }
}

/// Contents of `dbsnap.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Archive format version (`1.0`).
    pub format_version: String,
    /// Tool name and version that wrote it.
    pub tool_version: String,
    /// When the cut was taken (RFC 3339, UTC).
    pub created_at: String,
    /// Target name, when from config.
    pub target: Option<String>,
    /// File name prefix.
    pub prefix: String,
    /// Set on a safety snapshot: the id of the restore run that took it
    /// before changing the databases in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_for: Option<String>,
    /// How the cut was made.
    pub consistency: Consistency,
    /// Databases, in archive order.
    pub databases: Vec<DatabaseEntry>,
    /// The Kubernetes workload whose databases these are, when taken
    /// through the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesOrigin>,
    /// Set when the members are encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How a snapshot's members are encrypted: every member but `dbsnap.json`,
/// the key member and `manifest.json` is an age file encrypted to the
/// snapshot's own X25519 key, and that key (an age identity file) is in
/// the key member, itself an age file encrypted to the user's recipients
/// or passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `age`.
    pub scheme: String,
    /// The member holding the snapshot key (`snapshot-key.age`), second
    /// in the archive.
    pub key_member: String,
    /// Who can open the key member: age recipients (public keys), or
    /// `passphrase`.
    pub key_for: Vec<String>,
}

impl Metadata {
    /// The version token used in file names: the first database with a
    /// schema version, else `none`.
    pub fn version_token(&self) -> String {
        self.databases
            .iter()
            .find_map(|d| d.schema_version.as_ref())
            .map(|v| v.file_token())
            .unwrap_or_else(|| "none".into())
    }
}

/// One member's size and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// Member path inside the tar.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// Contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Archive format version.
    pub format_version: String,
    /// Every member before the manifest, in order.
    pub members: Vec<MemberEntry>,
    /// Per database member, where the pieces of its split tables lie (only
    /// members written by the native engine with split tables have any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, Vec<TableIndex>>,
}

/// The pieces of one table's data block, so that a restore can load them
/// with several connections at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableIndex {
    /// The TABLE DATA entry's dump id.
    pub dump_id: i64,
    /// Its pieces, in order.
    pub pieces: Vec<PieceIndex>,
}

/// One piece of a table's data block: whole chunks holding whole rows,
/// raw deflate ending on a full flush (the first piece after the zlib
/// header, the last one before the Adler-32 trailer), or plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceIndex {
    /// Its first chunk header, in bytes from the member's start.
    pub offset: u64,
    /// One past its last chunk.
    pub end: u64,
    /// Rows (COPY lines) in it.
    pub rows: u64,
    /// Length of its data, decompressed.
    pub raw_len: u64,
    /// Adler-32 of its data, decompressed.
    pub adler32: u32,
}

/// Errors reading or writing a snapshot archive.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// I/O failure.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a dbsnap archive.
    #[error("not a dbsnap snapshot: {0}")]
    NotSnapshot(String),
    /// Written by a newer, incompatible dbsnap.
    #[error("snapshot format {0} is not supported by this dbsnap (reads {FORMAT_MAJOR}.x)\nhint: upgrade dbsnap to read it")]
    UnsupportedFormat(String),
    /// Ends early.
    #[error("snapshot is truncated: {0}")]
    Truncated(String),
    /// Contents do not match the manifest or are malformed.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn header_for(name: &str, size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn padding(size: u64) -> usize {
    ((512 - (size % 512)) % 512) as usize
}

/// A placeholder reserved in an [`ArchiveOutput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placeholder {
    /// Offset from the start of the output.
    pub offset: u64,
    /// Length in bytes.
    pub len: usize,
}

/// Where an archive is written: bytes are only appended, except that a
/// placeholder reserved earlier is filled in once (a tar header whose size
/// is known only after its data). No seeking: object stores cannot.
pub trait ArchiveOutput: Write {
    /// Reserves `len` bytes at the current end (written as zeros for now).
    fn reserve(&mut self, len: usize) -> io::Result<Placeholder>;
    /// Fills a placeholder with exactly its length of bytes.
    fn fill(&mut self, at: Placeholder, data: &[u8]) -> io::Result<()>;
}

fn check_fill(at: Placeholder, data: &[u8]) -> io::Result<()> {
    if data.len() != at.len {
        return Err(io::Error::other(format!(
            "placeholder of {} bytes filled with {}",
            at.len,
            data.len()
        )));
    }
    Ok(())
}

/// A local file: placeholders are filled by a positional write.
impl ArchiveOutput for std::fs::File {
    fn reserve(&mut self, len: usize) -> io::Result<Placeholder> {
        use std::io::Seek;
        let offset = self.stream_position()?;
        self.write_all(&vec![0u8; len])?;
        Ok(Placeholder { offset, len })
    }

    fn fill(&mut self, at: Placeholder, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        check_fill(at, data)?;
        self.write_all_at(data, at.offset)
    }
}

/// Memory (tests, small archives).
impl ArchiveOutput for io::Cursor<Vec<u8>> {
    fn reserve(&mut self, len: usize) -> io::Result<Placeholder> {
        let offset = self.position();
        self.write_all(&vec![0u8; len])?;
        Ok(Placeholder { offset, len })
    }

    fn fill(&mut self, at: Placeholder, data: &[u8]) -> io::Result<()> {
        check_fill(at, data)?;
        let start = at.offset as usize;
        self.get_mut()[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// Streams a snapshot archive into `W`.
pub struct SnapshotWriter<W: ArchiveOutput> {
    out: W,
    mtime: u64,
    members: Vec<MemberEntry>,
    tables: BTreeMap<String, Vec<TableIndex>>,
}

impl<W: ArchiveOutput> SnapshotWriter<W> {
    /// Starts an archive (at the output's current end, normally its start)
    /// and writes `dbsnap.json` as its first member.
    pub fn new(out: W, metadata: &Metadata, mtime: u64) -> Result<Self, ArchiveError> {
        let mut w = SnapshotWriter {
            out,
            mtime,
            members: Vec::new(),
            tables: BTreeMap::new(),
        };
        let json = serde_json::to_vec_pretty(metadata).map_err(io::Error::other)?;
        w.add_bytes(METADATA_MEMBER, &json)?;
        Ok(w)
    }

    /// Adds a member from memory.
    pub fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
        let h = header_for(name, data.len() as u64, self.mtime)?;
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(data)?;
        self.out
            .write_all(&[0u8; 512][..padding(data.len() as u64)])?;
        self.members.push(MemberEntry {
            name: name.into(),
            size: data.len() as u64,
            sha256: sha256_hex(data),
        });
        Ok(())
    }

    /// Adds a member of known size and checksum by copying from `src`
    /// (e.g. a spool file written while the checksum was computed).
    pub fn add_precomputed(
        &mut self,
        name: &str,
        src: &mut impl Read,
        size: u64,
        sha256: &str,
    ) -> Result<(), ArchiveError> {
        let h = header_for(name, size, self.mtime)?;
        self.out.write_all(h.as_bytes())?;
        let copied = io::copy(&mut src.take(size), &mut self.out)?;
        if copied != size {
            return Err(ArchiveError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("member {name}: expected {size} bytes, got {copied}"),
            )));
        }
        self.out.write_all(&[0u8; 512][..padding(size)])?;
        self.members.push(MemberEntry {
            name: name.into(),
            size,
            sha256: sha256.into(),
        });
        Ok(())
    }

    /// Starts a member of unknown size; write its bytes to the returned
    /// stream, then call [`MemberStream::finish`].
    pub fn stream_member(&mut self, name: &str) -> Result<MemberStream<'_, W>, ArchiveError> {
        // Checks the name now; the header is filled in by `finish`.
        header_for(name, 0, self.mtime)?;
        let header = self.out.reserve(512)?;
        Ok(MemberStream {
            w: self,
            name: name.into(),
            header,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Members written so far.
    pub fn members(&self) -> &[MemberEntry] {
        &self.members
    }

    /// Records where the pieces of member `name`'s split tables lie.
    pub fn index_member(&mut self, name: &str, tables: Vec<TableIndex>) {
        if !tables.is_empty() {
            self.tables.insert(name.to_string(), tables);
        }
    }

    /// Writes `manifest.json` and the end-of-archive marker; returns the
    /// output (not yet fsynced) and the manifest.
    pub fn finish(mut self) -> Result<(W, Manifest), ArchiveError> {
        let manifest = Manifest {
            format_version: FORMAT_VERSION.into(),
            members: self.members.clone(),
            tables: std::mem::take(&mut self.tables),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        let h = header_for(MANIFEST_MEMBER, json.len() as u64, self.mtime)?;
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(&json)?;
        self.out
            .write_all(&[0u8; 512][..padding(json.len() as u64)])?;
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok((self.out, manifest))
    }
}

/// A member being streamed into the archive.
pub struct MemberStream<'a, W: ArchiveOutput> {
    w: &'a mut SnapshotWriter<W>,
    name: String,
    header: Placeholder,
    hasher: Sha256,
    size: u64,
}

impl<W: ArchiveOutput> Write for MemberStream<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.out.flush()
    }
}

impl<W: ArchiveOutput> MemberStream<'_, W> {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Patches the member's header with its size and records its checksum.
    pub fn finish(self) -> Result<MemberEntry, ArchiveError> {
        let out = &mut self.w.out;
        out.write_all(&[0u8; 512][..padding(self.size)])?;
        let header = header_for(&self.name, self.size, self.w.mtime)?;
        out.fill(self.header, header.as_bytes())?;
        let entry = MemberEntry {
            name: self.name,
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        };
        self.w.members.push(entry.clone());
        Ok(entry)
    }
}

fn entry_name(e: &tar::Entry<'_, impl Read>) -> Result<String, ArchiveError> {
    Ok(e.path()
        .map_err(|err| ArchiveError::Corrupt(format!("bad member name: {err}")))?
        .to_string_lossy()
        .into_owned())
}

fn map_tar_err(e: io::Error, what: &str) -> ArchiveError {
    // The tar crate reports a short header block as a plain error.
    let short = e.to_string().contains("failed to read entire block");
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ArchiveError::Truncated(format!("ended inside {what}")),
        _ if short => ArchiveError::Truncated(format!("ended inside {what}")),
        io::ErrorKind::InvalidData | io::ErrorKind::Other => {
            ArchiveError::Corrupt(format!("{what}: {e}"))
        }
        _ => ArchiveError::Io(e),
    }
}

fn parse_metadata(bytes: &[u8]) -> Result<Metadata, ArchiveError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ArchiveError::Corrupt(format!("{METADATA_MEMBER} is not valid JSON: {e}")))?;
    let fv = value
        .get("format_version")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let major = fv.split('.').next().and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(FORMAT_MAJOR) => {}
        Some(_) => return Err(ArchiveError::UnsupportedFormat(fv.to_string())),
        None => {
            return Err(ArchiveError::Corrupt(format!(
                "{METADATA_MEMBER} has no format_version"
            )))
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ArchiveError::Corrupt(format!("{METADATA_MEMBER}: {e}")))
}

/// Reads only the metadata (first member): cheap on any size of file.
pub fn read_metadata<R: Read>(input: R) -> Result<Metadata, ArchiveError> {
    let mut ar = tar::Archive::new(crate::identify::check_start(input)?);
    let mut entries = ar.entries().map_err(|e| map_tar_err(e, "archive"))?;
    let mut first = match entries.next() {
        Some(e) => e.map_err(|e| map_tar_err(e, "first member header"))?,
        None => return Err(ArchiveError::NotSnapshot("empty or not a tar file".into())),
    };
    let name = entry_name(&first)?;
    if name != METADATA_MEMBER {
        return Err(ArchiveError::NotSnapshot(format!(
            "first member is \"{name}\", not {METADATA_MEMBER}"
        )));
    }
    if first.size() > MAX_JSON_MEMBER {
        return Err(ArchiveError::Corrupt(format!(
            "{METADATA_MEMBER} is {} bytes",
            first.size()
        )));
    }
    let mut buf = Vec::new();
    first
        .read_to_end(&mut buf)
        .map_err(|e| map_tar_err(e, METADATA_MEMBER))?;
    parse_metadata(&buf)
}

/// What a member visitor sees.
pub struct MemberVisit<'a> {
    /// Member name.
    pub name: &'a str,
    /// Size from the tar header.
    pub size: u64,
}

/// Outcome of [`verify`].
#[derive(Debug, Clone)]
pub struct Verified {
    /// The metadata.
    pub metadata: Metadata,
    /// The manifest.
    pub manifest: Manifest,
}

/// Reads a whole archive, checking every member's size and SHA-256 against
/// the manifest (which is last), in one pass. `inspect` is given each
/// member's bytes as they stream (for deeper checks such as parsing a
/// pg_dump member); its error aborts the walk.
pub fn verify<R: Read>(
    input: R,
    inspect: impl FnMut(&MemberVisit<'_>, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<Verified, ArchiveError> {
    verify_confirming(input, inspect, &mut Vec::new())
}

/// [`verify`], also filling `confirmed` with the members that matched the
/// manifest, in order: on a failure, those before the first that did not
/// (none when the archive ends before its manifest, which comes last).
pub fn verify_confirming<R: Read>(
    input: R,
    mut inspect: impl FnMut(&MemberVisit<'_>, &mut dyn Read) -> Result<(), ArchiveError>,
    confirmed: &mut Vec<MemberEntry>,
) -> Result<Verified, ArchiveError> {
    let mut ar = tar::Archive::new(crate::identify::check_start(input)?);
    let entries = ar.entries().map_err(|e| map_tar_err(e, "archive"))?;
    let mut seen: Vec<MemberEntry> = Vec::new();
    let mut metadata: Option<Metadata> = None;
    let mut manifest: Option<Manifest> = None;
    for entry in entries {
        let what = seen
            .last()
            .map(|m| format!("the header after member \"{}\"", m.name))
            .unwrap_or("the first header".into());
        let mut entry = entry.map_err(|e| map_tar_err(e, &what))?;
        let name = entry_name(&entry)?;
        if manifest.is_some() {
            return Err(ArchiveError::Corrupt(format!(
                "member \"{name}\" after {MANIFEST_MEMBER}"
            )));
        }
        let size = entry.size();
        if name == METADATA_MEMBER || name == MANIFEST_MEMBER {
            if size > MAX_JSON_MEMBER {
                return Err(ArchiveError::Corrupt(format!("{name} is {size} bytes")));
            }
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| map_tar_err(e, &format!("member \"{name}\"")))?;
            if buf.len() as u64 != size {
                return Err(ArchiveError::Truncated(format!("member \"{name}\"")));
            }
            if name == METADATA_MEMBER {
                if !seen.is_empty() {
                    return Err(ArchiveError::Corrupt(format!(
                        "{METADATA_MEMBER} is not the first member"
                    )));
                }
                metadata = Some(parse_metadata(&buf)?);
                seen.push(MemberEntry {
                    name,
                    size,
                    sha256: sha256_hex(&buf),
                });
            } else {
                manifest = Some(serde_json::from_slice(&buf).map_err(|e| {
                    ArchiveError::Corrupt(format!("{MANIFEST_MEMBER} is not valid: {e}"))
                })?);
            }
            continue;
        }
        if metadata.is_none() {
            return Err(ArchiveError::NotSnapshot(format!(
                "first member is \"{name}\", not {METADATA_MEMBER}"
            )));
        }
        let mut hashing = HashingReader {
            inner: &mut entry,
            hasher: Sha256::new(),
            count: 0,
        };
        inspect(&MemberVisit { name: &name, size }, &mut hashing)?;
        // Whatever the inspector did not read still counts.
        io::copy(&mut hashing, &mut io::sink())
            .map_err(|e| map_tar_err(e, &format!("member \"{name}\"")))?;
        if hashing.count != size {
            return Err(ArchiveError::Truncated(format!(
                "member \"{name}\" has {} of {size} bytes",
                hashing.count
            )));
        }
        seen.push(MemberEntry {
            name,
            size,
            sha256: hex::encode(hashing.hasher.finalize()),
        });
    }
    let metadata =
        metadata.ok_or_else(|| ArchiveError::NotSnapshot("no dbsnap.json member".into()))?;
    let manifest = manifest.ok_or_else(|| {
        ArchiveError::Truncated(format!(
            "no {MANIFEST_MEMBER} at the end (last complete member: \"{}\")",
            seen.last().map(|m| m.name.as_str()).unwrap_or("")
        ))
    })?;
    check_against_manifest(&seen, &metadata, &manifest, confirmed)?;
    Ok(Verified { metadata, manifest })
}

/// The members read, in order, must be exactly the manifest's (names,
/// sizes, checksums), and every database of the metadata must have its
/// member.
fn check_against_manifest(
    seen: &[MemberEntry],
    metadata: &Metadata,
    manifest: &Manifest,
    confirmed: &mut Vec<MemberEntry>,
) -> Result<(), ArchiveError> {
    for (i, want) in manifest.members.iter().enumerate() {
        let got = seen.get(i).ok_or_else(|| {
            ArchiveError::Truncated(format!("member \"{}\" is missing", want.name))
        })?;
        if got.name != want.name {
            return Err(ArchiveError::Corrupt(format!(
                "member {} is \"{}\", manifest says \"{}\"",
                i + 1,
                got.name,
                want.name
            )));
        }
        if got.size != want.size {
            return Err(ArchiveError::Corrupt(format!(
                "member \"{}\" is {} bytes, manifest says {}",
                got.name, got.size, want.size
            )));
        }
        if got.sha256 != want.sha256 {
            return Err(ArchiveError::Corrupt(format!(
                "member \"{}\" fails its SHA-256 checksum",
                got.name
            )));
        }
        confirmed.push(want.clone());
    }
    if let Some(extra) = seen.get(manifest.members.len()) {
        return Err(ArchiveError::Corrupt(format!(
            "member \"{}\" is not in the manifest",
            extra.name
        )));
    }
    for db in &metadata.databases {
        if !manifest.members.iter().any(|m| m.name == db.member) {
            return Err(ArchiveError::Corrupt(format!(
                "database \"{}\" has no member \"{}\"",
                db.name, db.member
            )));
        }
    }
    Ok(())
}

struct HashingReader<'a, R: Read> {
    inner: &'a mut R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Finds member `name` in a snapshot stream and hands its bytes to `f`.
/// Reads sequentially (no seeking): the member is streamed, never buffered.
pub fn with_member<R: Read, T>(
    input: R,
    name: &str,
    f: impl FnOnce(&mut dyn Read) -> Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    let mut ar = tar::Archive::new(input);
    for entry in ar.entries().map_err(|e| map_tar_err(e, "archive"))? {
        let mut entry = entry.map_err(|e| map_tar_err(e, "a member header"))?;
        if entry_name(&entry)? == name {
            return f(&mut entry);
        }
    }
    Err(ArchiveError::Corrupt(format!(
        "member \"{name}\" not found"
    )))
}

/// Where the named members' bytes lie in a snapshot file: (offset, size)
/// each, in the order asked, from one walk over the headers (seeking over
/// the contents). A missing member is an error.
pub fn member_spans<R: Read + io::Seek>(
    input: R,
    names: &[&str],
) -> Result<Vec<(u64, u64)>, ArchiveError> {
    let mut found: Vec<Option<(u64, u64)>> = vec![None; names.len()];
    let mut ar = tar::Archive::new(input);
    for entry in ar
        .entries_with_seek()
        .map_err(|e| map_tar_err(e, "archive"))?
    {
        let entry = entry.map_err(|e| map_tar_err(e, "a member header"))?;
        let name = entry_name(&entry)?;
        if let Some(i) = names.iter().position(|n| *n == name) {
            found[i] = Some((entry.raw_file_position(), entry.size()));
        }
    }
    names
        .iter()
        .zip(found)
        .map(|(name, span)| {
            span.ok_or_else(|| ArchiveError::Corrupt(format!("member \"{name}\" not found")))
        })
        .collect()
}

#[cfg(test)]
mod tests;
