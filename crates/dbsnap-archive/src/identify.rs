//! Cheap checks that read a few blocks, not a whole archive: what a file
//! that is not a dbsnap snapshot looks like, from its first bytes (so that
//! "not a dbsnap snapshot" can say "it is a pg_dump archive" or "it is a
//! text file" instead of "truncated"), and whether a snapshot ends where
//! its manifest says it should (a truncated file does not).

use std::io::{self, Read};

use crate::snapshot::{ArchiveError, Manifest, MANIFEST_MEMBER, METADATA_MEMBER};

/// How many bytes from the end of a file [`check_end`] wants: enough for
/// the manifest of a snapshot of well over a thousand databases.
pub const END_CHECK_BYTES: u64 = 256 * 1024;

/// One tar block: a snapshot's first header.
const BLOCK: usize = 512;

/// What a file that is not a dbsnap snapshot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreign {
    /// No bytes at all.
    Empty,
    /// A pg_dump custom-format archive (starts with `PGDMP`).
    PgDump,
    /// A tar archive whose first member is not `dbsnap.json`.
    Tar {
        /// Its first member's name.
        first: String,
    },
    /// Compressed data (`gzip`, `zstd`).
    Compressed(&'static str),
    /// Text (valid UTF-8, no NUL bytes).
    Text,
    /// Anything else that is not a tar archive.
    Binary,
}

impl Foreign {
    /// What it is and what to do, for a "not a dbsnap snapshot" message.
    pub fn describe(&self) -> String {
        match self {
            Foreign::Empty => "the file is empty".into(),
            Foreign::PgDump => "it is a single pg_dump custom-format archive (a snapshot is a \
                 .tar holding one per database)\nhint: restore it with pg_restore, e.g. \
                 `pg_restore -d DBNAME FILE`"
                .into(),
            Foreign::Tar { first } => format!(
                "it is a tar archive without {METADATA_MEMBER} (its first member is \"{first}\")\n\
                 hint: dbsnap snapshots are written by `dbsnap create`; extract this one with `tar xf`"
            ),
            Foreign::Compressed(how) => format!(
                "it is {how}-compressed data, not a tar archive\nhint: a dbsnap snapshot is an \
                 uncompressed .tar; if this is a compressed one, decompress it first"
            ),
            Foreign::Text => "it is a text file, not a tar archive".into(),
            Foreign::Binary => "it is not a tar archive".into(),
        }
    }
}

/// Classifies the first bytes of a file (up to one tar block): `None` when
/// they start like a snapshot (a tar whose first member is `dbsnap.json`,
/// possibly cut short), else what the file is.
pub fn identify(head: &[u8]) -> Option<Foreign> {
    if head.is_empty() {
        return Some(Foreign::Empty);
    }
    if head.starts_with(b"PGDMP") {
        return Some(Foreign::PgDump);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(Foreign::Compressed("gzip"));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(Foreign::Compressed("zstd"));
    }
    if head.len() >= BLOCK && tar_checksum_ok(&head[..BLOCK]) {
        let name = header_name(&head[..BLOCK]);
        return (name != METADATA_MEMBER).then_some(Foreign::Tar { first: name });
    }
    if head.len() < BLOCK && head.starts_with(format!("{METADATA_MEMBER}\0").as_bytes()) {
        return None; // a snapshot cut inside its first header
    }
    if !head.contains(&0) && looks_like_utf8(head) {
        return Some(Foreign::Text);
    }
    Some(Foreign::Binary)
}

/// Valid UTF-8, allowing a character cut at the end of the sample.
fn looks_like_utf8(head: &[u8]) -> bool {
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// The name field of a tar header (up to its first NUL).
fn header_name(block: &[u8]) -> String {
    let field = &block[..100];
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Whether a 512-byte block is a tar header: its checksum field matches
/// the sum of its bytes (the field itself counted as spaces).
fn tar_checksum_ok(block: &[u8]) -> bool {
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| c.is_digit(8))
        .collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    sum == stored
}

/// Size of a member's data in the archive (padded to whole blocks).
fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// The size field of a tar header.
fn header_size(block: &[u8]) -> Option<u64> {
    let digits: String = block[124..136]
        .iter()
        .map(|&b| b as char)
        .filter(|c| c.is_digit(8))
        .collect();
    u64::from_str_radix(&digits, 8).ok()
}

/// Checks the end of a snapshot of `file_size` bytes from its last bytes
/// (`tail`, at most [`END_CHECK_BYTES`], starting on a block boundary): the
/// end-of-archive marker, `manifest.json` just before it, and a file size
/// that is exactly what the manifest's members add up to. A file cut short
/// anywhere fails this without being read in full.
pub fn check_end(tail: &[u8], file_size: u64) -> Result<(), ArchiveError> {
    let cut = |why: String| Err(ArchiveError::Truncated(why));
    if !file_size.is_multiple_of(BLOCK as u64) {
        return cut(format!(
            "{file_size} bytes is not a whole number of tar blocks"
        ));
    }
    if tail.len() < 2 * BLOCK || tail[tail.len() - 2 * BLOCK..].iter().any(|&b| b != 0) {
        return cut("no end-of-archive marker at the end of the file".into());
    }
    let body = &tail[..tail.len() - 2 * BLOCK];
    let found = (0..body.len() / BLOCK).rev().find_map(|i| {
        let at = i * BLOCK;
        let block = &body[at..at + BLOCK];
        let size = header_size(block)?;
        let fits = (at + BLOCK) as u64 + padded(size) == body.len() as u64;
        (fits && tar_checksum_ok(block) && header_name(block) == MANIFEST_MEMBER)
            .then(|| &body[at + BLOCK..at + BLOCK + size as usize])
    });
    let Some(json) = found else {
        return cut(format!("no {MANIFEST_MEMBER} at the end of the file"));
    };
    let manifest: Manifest = serde_json::from_slice(json)
        .map_err(|e| ArchiveError::Corrupt(format!("{MANIFEST_MEMBER} is not valid: {e}")))?;
    let expected: u64 = manifest
        .members
        .iter()
        .map(|m| BLOCK as u64 + padded(m.size))
        .sum::<u64>()
        + BLOCK as u64
        + padded(json.len() as u64)
        + 2 * BLOCK as u64;
    if expected != file_size {
        return Err(ArchiveError::Corrupt(format!(
            "the file is {file_size} bytes, its manifest's members add up to {expected}"
        )));
    }
    Ok(())
}

/// Reads the first block of `input`, refuses a file that is not a snapshot
/// ([`ArchiveError::NotSnapshot`] saying what it is), and gives back a
/// reader over the whole input again.
pub fn check_start<R: Read>(mut input: R) -> Result<impl Read, ArchiveError> {
    let mut head = Vec::with_capacity(BLOCK);
    (&mut input).take(BLOCK as u64).read_to_end(&mut head)?;
    if let Some(foreign) = identify(&head) {
        return Err(ArchiveError::NotSnapshot(foreign.describe()));
    }
    Ok(io::Cursor::new(head).chain(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(name: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(&mut h, name, &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn names_what_a_foreign_file_is() {
        assert_eq!(identify(b""), Some(Foreign::Empty));
        assert_eq!(identify(b"PGDMP\x01\x0f\x00"), Some(Foreign::PgDump));
        assert_eq!(identify(b"hello, world\n"), Some(Foreign::Text));
        assert_eq!(
            identify(&[0x1f, 0x8b, 8, 0]),
            Some(Foreign::Compressed("gzip"))
        );
        assert_eq!(identify(&[0, 1, 2, 3, 255]), Some(Foreign::Binary));
        assert_eq!(
            identify(&tar_with("data.csv")),
            Some(Foreign::Tar {
                first: "data.csv".into()
            })
        );
        assert!(Foreign::PgDump.describe().contains("pg_restore"));
    }

    fn snapshot_bytes() -> Vec<u8> {
        use crate::snapshot::{Metadata, SnapshotWriter};
        let meta: Metadata = serde_json::from_value(serde_json::json!({
            "format_version": "1.0", "tool_version": "0", "created_at": "2026-01-01T00:00:00Z", "prefix": "p",
            "target": null, "consistency": {"method": "none", "consistent_cut": false, "attempts": 1},
            "databases": []
        }))
        .unwrap();
        let mut w = SnapshotWriter::new(io::Cursor::new(Vec::new()), &meta, 0).unwrap();
        w.add_bytes("a.dump", &[7u8; 1000]).unwrap();
        w.finish().unwrap().0.into_inner()
    }

    #[test]
    fn the_end_check_catches_every_cut() {
        let full = snapshot_bytes();
        check_end(&full, full.len() as u64).unwrap();
        for len in (0..full.len())
            .step_by(97)
            .chain([full.len() - 512, full.len() - 1])
        {
            let part = &full[..len];
            let start = (len.saturating_sub(END_CHECK_BYTES as usize) / BLOCK) * BLOCK;
            assert!(
                check_end(&part[start..], len as u64).is_err(),
                "a cut at {len} of {} passed",
                full.len()
            );
        }
    }

    #[test]
    fn a_snapshot_start_is_not_foreign_even_cut_short() {
        let t = tar_with(METADATA_MEMBER);
        assert_eq!(identify(&t[..BLOCK]), None);
        assert_eq!(identify(&t[..100]), None);
        let mut r = check_start(&t[..]).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, t, "the reader gives back every byte");
    }
}
