//! Acceptance: `verify` catches a flipped byte and a truncated file and
//! names the member; `list` and `extract-version` survive damaged files;
//! the pg_dump reader rejects every truncation of a real dump.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use common::{run, run_json, tar_extract, Home};
use dbsnap_archive::pgdump;
use dbsnap_test_support::Cluster;

fn member_offset(file: &Path, name: &str) -> (u64, u64) {
    let bytes = std::fs::read(file).unwrap();
    let mut ar = tar::Archive::new(Cursor::new(bytes));
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == name {
            return (e.raw_file_position(), e.size());
        }
    }
    panic!("no member {name}");
}

fn setup(major: u32) -> (Cluster, Home, PathBuf) {
    let cluster = Cluster::start(major);
    for db in ["core", "backend"] {
        cluster.create_db(db);
        cluster.psql(db, "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g; SELECT lo_from_bytea(0, '\\xdeadbeef')");
    }
    let home = Home::new();
    let v = common::create(&home, &cluster, &["core", "backend"], &[]);
    (cluster, home, PathBuf::from(v["file"].as_str().unwrap()))
}

#[test]
fn verify_names_the_damaged_member_and_list_survives() {
    let (_cluster, home, good) = setup(15);
    let dir = home.snapshots();
    let copy = |name: &str| {
        let p = dir.join(name);
        std::fs::copy(&good, &p).unwrap();
        p
    };
    // A flipped byte in the middle of the second database's dump.
    let flipped = copy("flipped.tar");
    let (off, size) = member_offset(&flipped, "backend.dump");
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[(off + size / 2) as usize] ^= 0x01;
    std::fs::write(&flipped, &bytes).unwrap();
    let (code, v, _) = run_json(home.dbsnap().arg("verify").arg("--file").arg(&flipped));
    assert_eq!(code, 10, "{v}");
    assert_eq!(v["ok"], false);
    let msg = &common::error_text(&v);
    assert_eq!(v["error"]["exit_code"], 10, "{v}");
    assert!(msg.contains("backend.dump"), "{msg}");
    // It names the file and says what to do, as every error does; the
    // members that matched the manifest before the damaged one are listed.
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{}: ", flipped.display())),
        "{v}"
    );
    assert!(
        v["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("another snapshot")),
        "{v}"
    );
    let passed: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(passed.first(), Some(&"dbsnap.json"), "{v}");
    assert!(!passed.contains(&"backend.dump"), "{v}");
    // list and extract-version read only the ends: they do not see it
    // (docs/SCRIPTING.md says so).
    let (code, v, _) = run_json(home.dbsnap().arg("extract-version").arg(&flipped));
    assert_eq!(code, 0, "{v}");
    let (_, _, err) = run(home.dbsnap().arg("verify").arg("--file").arg(&flipped));
    assert!(
        err.contains("FAILED") && err.contains("backend.dump"),
        "{err}"
    );

    // Truncated in the middle, and just before the end.
    let full = std::fs::read(&good).unwrap();
    for (name, len) in [
        ("half.tar", full.len() / 2),
        ("almost.tar", full.len() - 1500),
        ("tiny.tar", 100),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, &full[..len]).unwrap();
        let (code, v, _) = run_json(home.dbsnap().arg("verify").arg("--file").arg(&p));
        assert_eq!(code, 10, "{name}: {v}");
        let msg = &common::error_text(&v);
        assert_eq!(v["error"]["exit_code"], 10, "{v}");
        assert!(
            msg.contains("truncated") || msg.contains("manifest"),
            "{name}: {msg}"
        );
        // One cause, one word and one code: extract-version refuses it too.
        let (code, v, _) = run_json(home.dbsnap().arg("extract-version").arg(&p));
        assert_eq!(code, 10, "{name}: {v}");
        if name != "tiny.tar" {
            assert!(common::error_text(&v).contains("truncated"), "{name}: {v}");
        }
    }
    // Damaged metadata; and a file that is not a tar at all.
    let meta_flip = copy("metaflip.tar");
    let (off, _) = member_offset(&meta_flip, "dbsnap.json");
    let mut bytes = std::fs::read(&meta_flip).unwrap();
    bytes[off as usize + 2] = b'#';
    std::fs::write(&meta_flip, &bytes).unwrap();
    std::fs::write(dir.join("garbage.tar"), b"this is not a snapshot").unwrap();

    // list shows every file, the damaged ones with their error, and does not fail.
    let (code, v, err) = run_json(home.dbsnap().arg("list"));
    assert_eq!(code, 0, "{err}");
    let rows = v["snapshots"].as_array().unwrap();
    assert_eq!(rows.len(), 7, "{v}");
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    assert!(row("garbage.tar")["error"].is_string());
    assert!(row("metaflip.tar")["error"].is_string());
    assert!(row("tiny.tar")["error"].is_string());
    // Truncated files are flagged by the cheap end check, though their
    // metadata still reads; the good one is not.
    for name in ["half.tar", "almost.tar"] {
        let r = row(name);
        assert_eq!(r["status"], "truncated", "{r}");
        assert!(r["created_at"].is_string(), "metadata still read: {r}");
    }
    assert_eq!(row("garbage.tar")["status"], "not_snapshot");
    assert_eq!(
        row("flipped.tar")["status"],
        "ok",
        "a flipped byte needs verify"
    );
    let good_name = good.file_name().unwrap().to_str().unwrap();
    assert!(row(good_name)["error"].is_null());
    assert_eq!(row(good_name)["status"], "ok");
    let (code, out, err) = run(home.dbsnap().arg("list"));
    assert_eq!(code, 0);
    assert!(!err.contains("panicked"));
    let line = |n: &str| out.lines().find(|l| l.contains(n)).unwrap().to_string();
    assert!(line("half.tar").contains("!! TRUNCATED"), "{out}");
    assert!(line(good_name).contains("s ago"), "{out}");
    assert!(!line(good_name).contains("!!"), "{out}");

    // extract-version reads the metadata and the end of the file: a
    // truncated snapshot is refused with the code verify gives it.
    let (code, v, _) = run_json(
        home.dbsnap()
            .arg("extract-version")
            .arg("--file")
            .arg("half.tar")
            .arg("--dir")
            .arg(&dir),
    );
    assert_eq!(code, 10, "{v}");
    // A restore of it names the file once, then what is wrong.
    let half = dir.join("half.tar");
    let (code, _, err) = run(home
        .dbsnap()
        .args([
            "restore",
            "--yes",
            "-d",
            "postgres://u@127.0.0.1:1/app",
            "--file",
        ])
        .arg(&half));
    assert_eq!(code, 10, "{err}");
    let first = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert_eq!(
        first.matches(&*half.display().to_string()).count(),
        1,
        "{err}"
    );
    assert!(
        first.contains("truncated") && first.contains("nothing was changed"),
        "{err}"
    );
    for bad in ["metaflip.tar", "garbage.tar", "tiny.tar"] {
        let (code, v, err) = run_json(
            home.dbsnap()
                .arg("extract-version")
                .arg("--file")
                .arg(dir.join(bad)),
        );
        assert_eq!(code, 10, "{bad}: {v}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, err) = run(home
        .dbsnap()
        .arg("verify")
        .arg("--file")
        .arg(dir.join("nonexistent.tar")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn pg_dump_reader_accepts_real_dumps_and_rejects_every_truncation() {
    for major in [15, 18] {
        let (cluster, _home, good) = setup(major);
        let out = cluster.scratch().join("x");
        tar_extract(&good, &out);
        let dump = std::fs::read(out.join("core.dump")).unwrap();
        let summary = pgdump::read_archive(Cursor::new(&dump)).unwrap();
        assert_eq!(summary.dbname.as_deref(), Some("core"));
        assert!(summary
            .entries
            .iter()
            .any(|e| e.desc == "TABLE DATA" && e.tag == "t"));
        assert!(
            summary.entries.iter().any(|e| e.desc.starts_with("BLOB")),
            "{:?}",
            summary.entries
        );
        assert!(summary.data_blocks >= 2);
        assert_eq!(summary.bytes, dump.len() as u64);
        let step = (dump.len() / 400).max(1);
        for cut in (0..dump.len()).step_by(step).chain([dump.len() - 1]) {
            assert!(
                pgdump::read_archive(Cursor::new(&dump[..cut])).is_err(),
                "PostgreSQL {major}: truncation at {cut} of {} accepted",
                dump.len()
            );
        }
        assert!(pgdump::read_archive(Cursor::new(b"PGDMP\x09\x00\x00")).is_err());
        assert!(matches!(
            pgdump::read_archive(Cursor::new(b"-- plain SQL")),
            Err(pgdump::PgDumpError::NotCustomFormat(_))
        ));
    }
}

#[test]
fn a_foreign_member_with_valid_checksums_is_not_a_readable_dump() {
    use dbsnap_archive::snapshot::{self, SnapshotWriter};
    let (_cluster, home, good) = setup(15);
    let meta = snapshot::read_metadata(std::fs::File::open(&good).unwrap()).unwrap();
    let path = home.snapshots().join("foreign.tar");
    let f = std::fs::File::create(&path).unwrap();
    let mut w = SnapshotWriter::new(f, &meta, 0).unwrap();
    w.add_bytes("core.dump", b"PGDMP but not really a dump")
        .unwrap();
    w.add_bytes("backend.dump", b"plain text").unwrap();
    w.finish().unwrap();
    let (code, v, _) = run_json(home.dbsnap().arg("verify").arg("--file").arg(&path));
    assert_eq!(code, 10, "{v}");
    let msg = &common::error_text(&v);
    assert_eq!(v["error"]["exit_code"], 10, "{v}");
    assert!(
        msg.contains("core.dump") && msg.contains("not a readable pg_dump archive"),
        "{msg}"
    );
}
