//! Encryption at rest with age.
//!
//! An encrypted snapshot is still a tar with `dbsnap.json` first and
//! `manifest.json` last, both readable without a key (so `list`,
//! `extract-version`, `verify`'s checksums, `copy` and `prune` work
//! without one). Every other member is an age file encrypted to the
//! snapshot's own X25519 key, generated for it; that key, as an age
//! identity file, is the second member (`snapshot-key.age`), encrypted to
//! the user's recipients or passphrase. Opening a snapshot unwraps its key
//! once (one scrypt run for a passphrase, however many members and ranges
//! are read); a key is kept in memory only.
//!
//! Stock tools recover it: `tar xf S.tar`, `age -d -i me.txt
//! snapshot-key.age > k.txt`, `age -d -i k.txt app.dump > app.pgdump`,
//! `pg_restore app.pgdump`.
//!
//! Members are told apart by their first bytes (an age header), so the
//! readers below pass plain members through unchanged.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use age::secrecy::{ExposeSecret, SecretString};
use dbsnap_archive::snapshot::{self, Encryption};
use dbsnap_storage::{ReadSeek, SnapshotRef};

use crate::error::CoreError;

/// The member holding the snapshot key.
pub const KEY_MEMBER: &str = "snapshot-key.age";

/// How every age file starts.
const MAGIC: &[u8] = b"age-encryption.org/";

/// What `create` encrypts the snapshot key to.
#[derive(Clone)]
pub enum Seal {
    /// age recipients (public keys).
    Recipients(Vec<age::x25519::Recipient>),
    /// A passphrase (scrypt).
    Passphrase(SecretString),
}

/// The keys a reading command may use: age identity files and a
/// passphrase.
#[derive(Default, Clone)]
pub struct Keys {
    /// Identity files (`--identity`, `identity` in `[encryption]`).
    pub identity_files: Vec<PathBuf>,
    /// `DBSNAP_PASSPHRASE`.
    pub passphrase: Option<SecretString>,
}

/// One run's encryption: what its new snapshots are encrypted to, the keys
/// it opens snapshots with, and the snapshot keys unwrapped so far (once
/// per snapshot: one scrypt run for a passphrase). A value carried by the
/// options of create, restore, verify and prune; nothing process-wide.
#[derive(Default)]
pub struct Crypto {
    seal: Option<Seal>,
    keys: Keys,
    unwrapped: Mutex<HashMap<String, age::x25519::Identity>>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Crypto")
            .field("encrypts", &self.seal.is_some())
            .field(
                "keys",
                &(
                    self.keys.identity_files.len(),
                    self.keys.passphrase.is_some(),
                ),
            )
            .finish()
    }
}

impl Crypto {
    /// New snapshots encrypted to `seal` (`None`: not encrypted), opened
    /// with `keys`.
    pub fn new(seal: Option<Seal>, keys: Keys) -> Crypto {
        Crypto {
            seal,
            keys,
            unwrapped: Mutex::new(HashMap::new()),
        }
    }

    /// No encryption and no keys.
    pub fn none() -> std::sync::Arc<Crypto> {
        std::sync::Arc::new(Crypto::default())
    }
}

/// Reads recipients: `age1…` keys as given, anything else is a file of
/// them (one per line, `#` comments), as `age -R` reads. `from` names
/// where they were given (`--encrypt-to`, `recipients in [encryption]`).
/// A secret key given by mistake is refused without being repeated.
pub fn parse_recipients(
    specs: &[String],
    from: &str,
) -> Result<Vec<age::x25519::Recipient>, CoreError> {
    let mut out = Vec::new();
    for spec in specs {
        if let Some(e) = not_a_recipient(spec, from) {
            return Err(e);
        }
        if spec.starts_with("age1") {
            out.push(parse_recipient(spec, from)?);
            continue;
        }
        let text = std::fs::read_to_string(spec).map_err(|e| CoreError::Config {
            message: format!(
                "{from}: {spec:?} is neither an age public key (age1…) nor a readable file of them: {e}"
            ),
            hint: "give an age public key (age1…), or a file of them, one per line".into(),
        })?;
        let before = out.len();
        for (n, line) in text.lines().map(str::trim).enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{from}: line {} of {spec}", n + 1);
            if let Some(e) = not_a_recipient(line, &at) {
                return Err(e);
            }
            out.push(parse_recipient(line, &at)?);
        }
        if out.len() == before {
            return Err(CoreError::Config {
                message: format!("{from}: the recipients file {spec} holds no recipient"),
                hint: "put age public keys (age1…) in it, one per line".into(),
            });
        }
    }
    Ok(out)
}

/// A secret key or an SSH key where a recipient belongs, named without
/// its value.
fn not_a_recipient(s: &str, at: &str) -> Option<CoreError> {
    if s.starts_with("AGE-SECRET-KEY-") || (s.contains("AGE-SECRET-KEY-") && !s.contains('/')) {
        return Some(CoreError::Config {
            message: format!("{at}: a secret key (AGE-SECRET-KEY-…) was given where a public key belongs; it is not repeated here"),
            hint: "give its public key: `age-keygen -y KEYFILE` prints it (age1…); keep the secret key for --identity".into(),
        });
    }
    if s.starts_with("ssh-") || s.starts_with("ecdsa-") {
        return Some(CoreError::Config {
            message: format!("{at}: SSH keys are not supported as recipients"),
            hint: "make an age key with `age-keygen` and give its public key (age1…)".into(),
        });
    }
    None
}

fn parse_recipient(s: &str, from: &str) -> Result<age::x25519::Recipient, CoreError> {
    age::x25519::Recipient::from_str(s).map_err(|e| CoreError::Config {
        message: format!("{from}: \"{s}\" is not an age public key: {e}"),
        hint: "an age public key looks like age1…; `age-keygen -y key.txt` prints the one of a key"
            .into(),
    })
}

/// A new snapshot's encryption: its key, wrapped for the member, and the
/// recipient members are encrypted to.
pub struct Sealer {
    recipient: age::x25519::Recipient,
    wrapped: Vec<u8>,
    info: Encryption,
}

impl Crypto {
    /// The sealer for a new snapshot, when encryption is configured.
    pub fn sealer(&self) -> Result<Option<Sealer>, CoreError> {
        let Some(seal) = &self.seal else {
            return Ok(None);
        };
        let key = age::x25519::Identity::generate();
        let mut text = key.to_string().expose_secret().to_string();
        text.push('\n');
        let (encryptor, key_for) = match seal {
            Seal::Recipients(r) => (
                age::Encryptor::with_recipients(r.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| CoreError::Internal(format!("age: {e}")))?,
                r.iter().map(|r| r.to_string()).collect(),
            ),
            Seal::Passphrase(p) => (
                age::Encryptor::with_user_passphrase(p.clone()),
                vec!["passphrase".to_string()],
            ),
        };
        let mut wrapped = Vec::new();
        let mut w = encryptor
            .wrap_output(&mut wrapped)
            .map_err(|e| CoreError::Internal(format!("age: {e}")))?;
        w.write_all(text.as_bytes())
            .and_then(|()| w.finish().map(|_| ()))
            .map_err(|e| CoreError::Internal(format!("age: {e}")))?;
        Ok(Some(Sealer {
            recipient: key.to_public(),
            wrapped,
            info: Encryption {
                scheme: "age".into(),
                key_member: KEY_MEMBER.into(),
                key_for,
            },
        }))
    }
}

impl Sealer {
    /// What the metadata records.
    pub fn info(&self) -> Encryption {
        self.info.clone()
    }

    /// The key member's bytes.
    pub fn key_member(&self) -> &[u8] {
        &self.wrapped
    }

    /// Encrypts what is written to `out`; [`Sealed::finish`] ends it.
    pub fn seal<W: Write>(&self, out: W) -> io::Result<Sealed<W>> {
        let e = age::Encryptor::with_recipients(std::iter::once(&self.recipient as _))
            .map_err(io::Error::other)?;
        Ok(Sealed(e.wrap_output(out)?))
    }

    /// `data`, encrypted.
    pub fn seal_bytes(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut w = self.seal(Vec::new())?;
        w.write_all(data)?;
        w.finish()
    }
}

/// A writer encrypting into `W`.
pub struct Sealed<W: Write>(age::stream::StreamWriter<W>);

impl<W: Write> Sealed<W> {
    /// Writes the last chunk; returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.0.finish()
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Crypto {
    /// The encryption of a safety snapshot taken before `file` is restored:
    /// this run's when it has one, else like `file`'s: to the same recipients,
    /// or to the passphrase given. A restore of an encrypted snapshot never
    /// leaves its data unencrypted beside it.
    pub fn seal_like(&self, file: &SnapshotRef) -> Result<Crypto, CoreError> {
        let same = |seal: Option<Seal>| Crypto::new(seal, self.keys.clone());
        if self.seal.is_some() {
            return Ok(same(self.seal.clone()));
        }
        let Ok(metadata) = crate::inspect::read_metadata(file) else {
            return Ok(same(None));
        };
        let Some(info) = metadata.encryption else {
            return Ok(same(None));
        };
        let seal = if info.key_for.iter().any(|k| k == "passphrase") {
            self.keys.passphrase.clone().map(Seal::Passphrase)
        } else {
            Some(Seal::Recipients(parse_recipients(
                &info.key_for,
                "the snapshot's recipients",
            )?))
        };
        Ok(same(seal))
    }
}

impl Crypto {
    /// Whether any key to open snapshots was given.
    pub fn has_keys(&self) -> bool {
        !self.keys.identity_files.is_empty() || self.keys.passphrase.is_some()
    }
}

impl Crypto {
    /// Unwraps the snapshot's key now, when it is encrypted: a missing or
    /// wrong key is an error before anything else is done.
    /// (A snapshot whose metadata cannot be read passes: reading it says why.)
    pub fn check_keys(&self, file: &SnapshotRef) -> Result<(), CoreError> {
        let Ok(metadata) = crate::inspect::read_metadata(file) else {
            return Ok(());
        };
        if let Some(info) = &metadata.encryption {
            self.snapshot_key(file, info)?;
        }
        Ok(())
    }
}

impl Crypto {
    fn snapshot_key(
        &self,
        file: &SnapshotRef,
        info: &Encryption,
    ) -> Result<age::x25519::Identity, CoreError> {
        if let Some(k) = self.unwrapped(file) {
            return Ok(k);
        }
        let key = self.unwrap_key(file, info)?;
        if let Ok(mut m) = self.unwrapped.lock() {
            m.insert(file.display(), key.clone());
        }
        Ok(key)
    }
}

impl Crypto {
    /// The snapshot's key, when it was unwrapped already.
    fn unwrapped(&self, file: &SnapshotRef) -> Option<age::x25519::Identity> {
        let id = file.display();
        self.unwrapped.lock().ok().and_then(|m| m.get(&id).cloned())
    }
}

fn no_key(file: &SnapshotRef, info: &Encryption, what: &str) -> CoreError {
    let hint = if info.key_for.iter().any(|k| k == "passphrase") {
        "it was encrypted with a passphrase: set DBSNAP_PASSPHRASE to it".to_string()
    } else {
        format!(
            "pass --identity FILE (or `identity` in [encryption] of dbsnap.toml) with the age key of one of: {}",
            info.key_for.join(", ")
        )
    };
    CoreError::Config {
        message: format!("{file} is encrypted (age) and {what}"),
        hint,
    }
}

impl Crypto {
    fn unwrap_key(
        &self,
        file: &SnapshotRef,
        info: &Encryption,
    ) -> Result<age::x25519::Identity, CoreError> {
        let keys = Some(&self.keys);
        let passphrase_snapshot = info.key_for.iter().any(|k| k == "passphrase");
        let mut identities: Vec<Box<dyn age::Identity>> = Vec::new();
        for path in keys
            .map(|k| k.identity_files.as_slice())
            .unwrap_or_default()
        {
            let read = age::IdentityFile::from_file(path.display().to_string())
                .and_then(|f| f.into_identities().map_err(io::Error::other));
            match read {
                Ok(mut ids) => identities.append(&mut ids),
                Err(e) => {
                    return Err(CoreError::Config {
                        message: format!(
                            "cannot read the age identity file {}: {e}",
                            path.display()
                        ),
                        hint:
                            "--identity takes a file made by `age-keygen` (AGE-SECRET-KEY-1… lines)"
                                .into(),
                    })
                }
            }
        }
        let mut passphrase_given = false;
        if let Some(p) = keys.and_then(|k| k.passphrase.clone()) {
            if passphrase_snapshot {
                passphrase_given = true;
                identities.push(Box::new(age::scrypt::Identity::new(p)));
            }
        }
        if identities.is_empty() || (passphrase_snapshot && !passphrase_given) {
            return Err(no_key(file, info, "no key to open it was given"));
        }
        let wrapped = read_key_member(file, &info.key_member)?;
        let decryptor = age::Decryptor::new_buffered(&wrapped[..])
            .map_err(|e| damaged(file, &info.key_member, e))?;
        let mut reader = match decryptor.decrypt(identities.iter().map(|i| i.as_ref())) {
            Ok(r) => r,
            Err(age::DecryptError::NoMatchingKeys) | Err(age::DecryptError::DecryptionFailed) => {
                let what = if passphrase_snapshot {
                    "the passphrase given does not open it"
                } else {
                    "none of the keys given opens it"
                };
                return Err(no_key(file, info, what));
            }
            Err(e) => return Err(damaged(file, &info.key_member, e)),
        };
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|e| damaged(file, &info.key_member, e))?;
        let line = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap_or_default();
        age::x25519::Identity::from_str(line).map_err(|e| damaged(file, &info.key_member, e))
    }
}

fn damaged(file: &SnapshotRef, member: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::Verify {
        file: file.display(),
        message: format!("member \"{member}\" cannot be decrypted: {e}"),
    }
}

fn read_key_member(file: &SnapshotRef, member: &str) -> Result<Vec<u8>, CoreError> {
    let f = crate::inspect::open(file)?;
    snapshot::with_member(io::BufReader::new(f), member, |r| {
        let mut bytes = Vec::new();
        r.take(1 << 20).read_to_end(&mut bytes)?;
        Ok(bytes)
    })
    .map_err(|e| crate::inspect::archive_error(file, e))
}

impl Crypto {
    /// The plaintext of member `member` of `file`, read from `input` (its
    /// bytes as stored): decrypted when it is an age file, else as it is.
    pub fn reader<'a>(
        &self,
        file: &SnapshotRef,
        member: &str,
        mut input: impl Read + 'a,
    ) -> Result<Box<dyn Read + 'a>, CoreError> {
        let mut head = Vec::with_capacity(MAGIC.len());
        (&mut input)
            .take(MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| io_error(file, e))?;
        let whole = io::Cursor::new(head.clone()).chain(input);
        if head != MAGIC {
            return Ok(Box::new(whole));
        }
        Ok(Box::new(self.decrypt(file, member, whole)?))
    }
}

impl Crypto {
    /// Member `member` (`stored`, an age file) decrypted with its snapshot's key.
    fn decrypt<R: Read>(
        &self,
        file: &SnapshotRef,
        member: &str,
        stored: R,
    ) -> Result<age::stream::StreamReader<R>, CoreError> {
        let key = self.key_for_member(file)?;
        age::Decryptor::new(stored)
            .and_then(|d| d.decrypt(std::iter::once(&key as &dyn age::Identity)))
            .map_err(|e| damaged(file, member, e))
    }
}

impl Crypto {
    fn key_for_member(&self, file: &SnapshotRef) -> Result<age::x25519::Identity, CoreError> {
        // Every member and range opened asks: the metadata is read only once.
        if let Some(k) = self.unwrapped(file) {
            return Ok(k);
        }
        let metadata = crate::inspect::read_metadata(file)?;
        match &metadata.encryption {
            Some(info) => self.snapshot_key(file, info),
            None => Err(damaged(
                file,
                "dbsnap.json",
                "a member is encrypted but the metadata does not say how",
            )),
        }
    }
}

fn io_error(file: &SnapshotRef, e: io::Error) -> CoreError {
    CoreError::Storage(dbsnap_storage::StorageError::Io {
        path: file.display(),
        source: e,
    })
}

impl Crypto {
    /// A member of `file`, seekable over its plaintext (position 0 is its
    /// first byte): the member `at` (offset, size) in the archive, decrypted
    /// chunk by chunk when it is an age file.
    pub fn member_seekable(
        &self,
        file: &SnapshotRef,
        member: &str,
        (offset, size): (u64, u64),
    ) -> Result<Box<dyn ReadSeek>, CoreError> {
        let mut span = Span {
            inner: file.open_seekable()?,
            start: offset,
            len: size,
            pos: 0,
        };
        span.inner
            .seek(SeekFrom::Start(offset))
            .map_err(|e| io_error(file, e))?;
        let mut head = Vec::new();
        (&mut span)
            .take(MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| io_error(file, e))?;
        span.seek(SeekFrom::Start(0))
            .map_err(|e| io_error(file, e))?;
        if head != MAGIC {
            return Ok(Box::new(span));
        }
        Ok(Box::new(self.decrypt(file, member, span)?))
    }
}

/// A window `start..start + len` of a seekable reader, seen as a file of
/// its own.
struct Span {
    inner: Box<dyn ReadSeek>,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Span {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Span {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        if target != self.pos {
            self.inner.seek(SeekFrom::Start(self.start + target))?;
            self.pos = target;
        }
        Ok(self.pos)
    }
}

impl Crypto {
    /// [`snapshot::with_member`] over the member's plaintext: finds member
    /// `member` in `input` (the snapshot from its start) and hands `f` its
    /// bytes, decrypted when it is encrypted.
    pub fn with_member<T>(
        &self,
        file: &SnapshotRef,
        input: impl Read,
        member: &str,
        f: impl FnOnce(&mut dyn Read) -> Result<T, snapshot::ArchiveError>,
    ) -> Result<T, CoreError> {
        let mut failed = None;
        let r = snapshot::with_member(input, member, |stored| {
            match self.reader(file, member, stored) {
                Ok(mut plain) => f(&mut plain),
                Err(e) => {
                    let message = e.to_string();
                    failed = Some(e);
                    Err(snapshot::ArchiveError::Corrupt(message))
                }
            }
        });
        match (r, failed) {
            (_, Some(e)) => Err(e),
            (Ok(v), None) => Ok(v),
            (Err(e), None) => Err(crate::inspect::archive_error(file, e)),
        }
    }
}
