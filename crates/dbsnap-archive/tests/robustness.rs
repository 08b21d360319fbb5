//! The readers never panic, whatever the bytes: deterministic random
//! mutations (flips, truncations, insertions, deletions) of real pg_dump
//! archives (PostgreSQL 15 and 18, in fixtures/) and of a snapshot archive.
//! Each mutation must give an error or a successful parse, never a panic
//! or an unbounded allocation.

use std::io::{Cursor, Read};

use dbsnap_archive::pgdump::read_archive;
use dbsnap_archive::snapshot::{
    read_metadata, verify, Consistency, ConsistencyMethod, DatabaseEntry, Metadata, SnapshotWriter,
    FORMAT_VERSION,
};

/// xorshift64*: a fixed sequence, so every run tests the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => b.truncate(rng.below(b.len())),
            3 => {
                let i = rng.below(b.len());
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(i..i, bytes);
            }
            _ => {
                let i = rng.below(b.len());
                let n = rng.below(16).min(b.len() - i);
                b.drain(i..i + n);
            }
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn pg_dump_reader_survives_mutations() {
    for name in ["app-core-pg15.dump", "app-core-pg18.dump"] {
        let good = fixture(name);
        let summary = read_archive(Cursor::new(&good)).unwrap();
        assert_eq!(summary.dbname.as_deref(), Some("app-core"), "{name}");
        assert!(
            summary
                .entries
                .iter()
                .any(|e| e.desc == "TABLE DATA" && e.tag == "users"),
            "{name}"
        );
        let mut rng = Rng(0x5EED_0000_0000_0001 ^ good.len() as u64);
        let mut rejected = 0;
        for _ in 0..3000 {
            let bad = mutate(&mut rng, &good);
            if read_archive(Cursor::new(&bad)).is_err() {
                rejected += 1;
            }
        }
        // Most damage is structural and caught here; the rest is caught by checksums.
        assert!(
            rejected > 1000,
            "{name}: only {rejected} of 3000 mutations rejected"
        );
    }
}

#[test]
fn snapshot_readers_survive_mutations() {
    let meta = Metadata {
        format_version: FORMAT_VERSION.into(),
        tool_version: "test".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        target: Some("t".into()),
        prefix: "p".into(),
        safety_for: None,
        consistency: Consistency {
            method: ConsistencyMethod::Snapshot,
            consistent_cut: true,
            attempts: 1,
            snapshot: None,
        },
        databases: vec![DatabaseEntry {
            name: "app-core".into(),
            member: "app-core.dump".into(),
            server: "h:5432".into(),
            server_version: "15".into(),
            server_version_num: 150000,
            pg_dump_version: "15".into(),
            schema_version: None,
            connection: None,
            system_identifier: None,
        }],
        kubernetes: None,
        encryption: None,
    };
    let mut w = SnapshotWriter::new(Cursor::new(Vec::new()), &meta, 0).unwrap();
    w.add_bytes("app-core.dump", &fixture("app-core-pg15.dump"))
        .unwrap();
    let good = w.finish().unwrap().0.into_inner();
    let check = |bytes: &[u8]| {
        verify(Cursor::new(bytes), |v, r| {
            if v.name.ends_with(".dump") {
                read_archive(r)
                    .map_err(|e| dbsnap_archive::snapshot::ArchiveError::Corrupt(e.to_string()))?;
            }
            Ok(())
        })
    };
    assert!(check(&good).is_ok());
    let mut rng = Rng(0xD85A_0000_0000_0002);
    let mut accepted = 0;
    for _ in 0..2000 {
        let bad = mutate(&mut rng, &good);
        let _ = read_metadata(Cursor::new(&bad));
        if check(&bad).is_ok() {
            accepted += 1;
        }
    }
    // Only mutations confined to tar padding can pass verification.
    assert!(
        accepted < 200,
        "{accepted} of 2000 damaged archives verified"
    );
}

#[test]
fn data_reader_decompresses_table_data_and_survives_mutations() {
    use dbsnap_archive::pgdump::{read_archive_data, DataItem};
    for name in ["app-core-pg15.dump", "app-core-pg18.dump"] {
        let good = fixture(name);
        let mut rows = std::collections::BTreeMap::new();
        let mut toc_len = 0;
        read_archive_data(Cursor::new(&good), |item| -> Result<(), std::io::Error> {
            match item {
                DataItem::Toc(entries) => toc_len = entries.len(),
                DataItem::TableData { entry, data } => {
                    let mut copy = dbsnap_archive::pgdump::CopyRows::new(data);
                    let mut text = String::new();
                    copy.read_to_string(&mut text)?;
                    assert!(!text.contains("\\."), "{name}: end marker not stripped");
                    assert!(
                        entry
                            .copy_stmt
                            .as_deref()
                            .unwrap_or("")
                            .starts_with("COPY "),
                        "{name}"
                    );
                    assert_eq!(copy.rows() as usize, text.lines().count());
                    rows.insert(entry.tag.clone(), text.lines().count());
                }
                DataItem::LargeObject { .. } => {}
            }
            Ok(())
        })
        .unwrap();
        assert!(toc_len > 10);
        assert_eq!(rows.get("users"), Some(&2000), "{name}: {rows:?}");
        assert_eq!(rows.get("workspaces"), Some(&50), "{name}: {rows:?}");
        let mut rng = Rng(0xDA7A ^ good.len() as u64);
        for _ in 0..1500 {
            let bad = mutate(&mut rng, &good);
            let _ = read_archive_data(Cursor::new(&bad), |item| -> Result<(), std::io::Error> {
                if let DataItem::TableData { data, .. } | DataItem::LargeObject { data, .. } = item
                {
                    std::io::copy(data, &mut std::io::sink())?;
                }
                Ok(())
            });
        }
    }
}
