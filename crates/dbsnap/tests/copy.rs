//! `dbsnap copy` between a local directory and real S3 servers (s3s-fs and
//! moto), both ways and bucket to bucket: what arrives is byte for byte
//! what was sent, a second run copies nothing, a damaged snapshot is not
//! copied (nothing left at the destination), a different snapshot of the
//! same name is never overwritten, a pinned snapshot is pinned where it
//! is copied, and wrong arguments fail before anything is read.

mod common;

use std::path::Path;

use common::{create, run, run_json, Home};
use dbsnap_test_support::s3::{S3Server, KINDS};
use dbsnap_test_support::Cluster;

fn names(v: &serde_json::Value, status: &str) -> Vec<String> {
    names_where(v, |s| s["status"] == status)
}

/// The sorted names of the snapshots in `v` that `keep` keeps.
fn names_where(v: &serde_json::Value, keep: impl Fn(&serde_json::Value) -> bool) -> Vec<String> {
    let mut n: Vec<String> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| keep(s))
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn tar_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn copies_local_to_s3_and_back_byte_for_byte_and_skips_what_is_there() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g",
    );
    let home = Home::new();
    let first = create(&home, &cluster, &["app"], &[]);
    cluster.psql("app", "INSERT INTO t VALUES (0, 'later')");
    let second = create(&home, &cluster, &["app"], &[]);
    let local = tar_files(&home.snapshots());
    assert_eq!(local.len(), 2, "{local:?}");
    let first_name = first["file"].as_str().unwrap().rsplit('/').next().unwrap();
    assert!(second["file"].as_str().is_some());

    for kind in KINDS {
        let server = S3Server::start(kind);
        server.create_bucket("offsite");
        server.create_bucket("other");
        let tmp = tempfile::tempdir().unwrap();
        let cmd = || {
            let mut c = home.dbsnap();
            for (k, v) in server.env() {
                c.env(k, v);
            }
            c.env("TMPDIR", tmp.path());
            c
        };
        let to = "s3://offsite/platform";

        // One named snapshot first, then all: the named one is present.
        let (code, v, err) = run_json(cmd().args(["copy", "--to", to, first_name]));
        assert_eq!(code, 0, "{kind:?}: {v}\n{err}");
        assert_eq!(names(&v, "copied"), [first_name.to_string()], "{v}");
        let (code, v, err) = run_json(cmd().args(["copy", "--to", to]));
        assert_eq!(code, 0, "{kind:?}: {v}\n{err}");
        assert_eq!(names(&v, "present"), [first_name.to_string()], "{v}");
        assert_eq!(names(&v, "copied").len(), 1, "{v}");
        // A third run copies nothing.
        let (code, v, err) = run_json(cmd().args(["copy", "--to", to]));
        assert_eq!(code, 0, "{err}");
        assert_eq!(names(&v, "present"), local, "{v}");
        assert_eq!(v["bytes"], 0, "{v}");

        // The copies list, verify, and come back identical (S3 to S3,
        // then S3 to a new local directory).
        let (code, v, err) = run_json(cmd().args(["list", "--repo", to]));
        assert_eq!(code, 0, "{err}");
        assert_eq!(v["snapshots"].as_array().unwrap().len(), 2, "{v}");
        let (code, v, err) = run_json(cmd().args(["verify", "--repo", to, first_name]));
        assert_eq!(code, 0, "{v}\n{err}");
        let (code, v, err) =
            run_json(cmd().args(["copy", "--from", to, "--to", "s3://other/again"]));
        assert_eq!(code, 0, "{kind:?} s3 to s3: {v}\n{err}");
        assert_eq!(names(&v, "copied"), local);
        let back = home.path().join(format!("back-{kind:?}"));
        let (code, v, err) = run_json(cmd().args([
            "copy",
            "--from",
            "s3://other/again",
            "--to",
            back.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "{kind:?} s3 to local: {v}\n{err}");
        assert_eq!(tar_files(&back), local, "nothing else in the directory");
        for name in &local {
            assert!(
                std::fs::read(back.join(name)).unwrap()
                    == std::fs::read(home.snapshots().join(name)).unwrap(),
                "{kind:?}: {name} differs after local -> S3 -> S3 -> local"
            );
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        if kind == dbsnap_test_support::s3::S3Kind::S3sFs {
            assert_eq!(server.open_uploads(), Vec::<String>::new());
            // A bucket name the server refuses is a usage error.
            let (code, _, err) = run(cmd().args(["copy", "--to", "s3://ab/x"]));
            assert_eq!(code, 2, "{err}");
            assert!(err.contains("bucket name is not valid"), "{err}");
        }
    }
}

#[test]
fn a_damaged_snapshot_or_a_name_clash_is_not_copied_and_nothing_is_left() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g",
    );
    let home = Home::new();
    let good = create(&home, &cluster, &["app"], &[]);
    let good = good["file"].as_str().unwrap().rsplit('/').next().unwrap();
    let bad = create(&home, &cluster, &["app"], &[]);
    let bad = bad["file"].as_str().unwrap().rsplit('/').next().unwrap();
    // One flipped byte in the middle of the second snapshot's dump.
    let path = home.snapshots().join(bad);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();

    let dest = home.path().join("dest");
    let cmd = || {
        let mut c = home.dbsnap();
        c.args(["copy", "--to", dest.to_str().unwrap()]);
        c
    };
    let (code, v, err) = run_json(&mut cmd());
    assert_eq!(code, 10, "a damaged source is exit 10: {v}\n{err}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(names(&v, "copied"), [good.to_string()]);
    assert_eq!(names(&v, "failed"), [bad.to_string()]);
    assert_eq!(tar_files(&dest), [good.to_string()], "no partial file");

    // A different snapshot under the good one's name at the destination:
    // refused (exit 9), not overwritten.
    let clash = home.path().join("clash");
    std::fs::create_dir_all(&clash).unwrap();
    std::fs::copy(home.snapshots().join(bad), clash.join(good)).unwrap();
    let before = std::fs::read(clash.join(good)).unwrap();
    let (code, out, err) = run(home
        .dbsnap()
        .args(["copy", "--to", clash.to_str().unwrap(), good]));
    assert_eq!(code, 9, "{out}\n{err}");
    assert!(
        err.contains("a different snapshot of the same name"),
        "{err}"
    );
    assert_eq!(std::fs::read(clash.join(good)).unwrap(), before);

    // Wrong arguments fail before anything is read or written.
    let (code, _, err) = run(home
        .dbsnap()
        .args(["copy", "--to", dest.to_str().unwrap(), "nope"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("snapshot \"nope\" not found"), "{err}");
    let snapshots = home.snapshots();
    let (code, _, err) = run(home
        .dbsnap()
        .args(["copy", "--to", snapshots.to_str().unwrap()]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the same repository"), "{err}");
    let (code, _, err) = run(home.dbsnap().args(["copy", "--to", "ftp://x/y"]));
    assert_eq!(code, 2, "{err}");
}

/// The names pinned in repository `repo`, as `list` shows them.
fn pinned_in(cmd: &mut std::process::Command, repo: &str) -> Vec<String> {
    let (code, v, err) = run_json(cmd.args(["list", "--repo", repo]));
    assert_eq!(code, 0, "{err}");
    names_where(&v, |s| s["pinned"] == true)
}

#[test]
fn a_pinned_snapshot_is_pinned_where_it_is_copied_also_when_there_already() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let home = Home::new();
    let name = |v: serde_json::Value| {
        v["file"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    };
    let a = name(create(&home, &cluster, &["app"], &[]));
    let b = name(create(&home, &cluster, &["app"], &[]));
    let (code, _, err) = run(home.dbsnap().args(["pin", &a]));
    assert_eq!(code, 0, "{err}");

    let server = S3Server::start(dbsnap_test_support::s3::S3Kind::S3sFs);
    server.create_bucket("offsite");
    let cmd = || {
        let mut c = home.dbsnap();
        for (k, v) in server.env() {
            c.env(k, v);
        }
        c
    };
    let dir = home.path().join("dest");
    for to in [dir.to_str().unwrap(), "s3://offsite/platform"] {
        // B alone, not pinned: not pinned there.
        let (code, v, err) = run_json(cmd().args(["copy", "--to", to, &b]));
        assert_eq!(code, 0, "{to}: {v}\n{err}");
        assert_eq!(v["snapshots"][0]["pinned"], false, "{v}");
        assert_eq!(pinned_in(&mut cmd(), to), Vec::<String>::new(), "{to}");

        // B pinned at the source too: A is copied and pinned, B (there
        // already) pinned; the text says so.
        let (code, _, err) = run(home.dbsnap().args(["pin", &b]));
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run(cmd().args(["copy", "--to", to]));
        assert_eq!(code, 0, "{to}: {out}\n{err}");
        let line = |n: &str| {
            out.lines()
                .find(|l| l.contains(n))
                .unwrap_or_else(|| panic!("no line for {n}: {out}"))
                .to_string()
        };
        assert!(
            line(&a).starts_with("copied") && line(&a).contains("pinned, as at the source"),
            "{out}"
        );
        assert!(
            line(&b).starts_with("present") && line(&b).contains("pinned, as at the source"),
            "{out}"
        );
        assert!(out.contains("(2 pinned there, as at the source)"), "{out}");
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(pinned_in(&mut cmd(), to), both, "{to}");
        // Pinned there: delete refuses them.
        let (code, _, err) = run(cmd().args(["delete", "--repo", to, "--yes", &a]));
        assert_eq!(code, 2, "{to}: {err}");
        assert!(err.contains("pinned"), "{to}: {err}");

        // Copy never unpins: B unpinned at the source stays pinned there.
        let (code, _, err) = run(home.dbsnap().args(["unpin", &b]));
        assert_eq!(code, 0, "{err}");
        let (code, v, err) = run_json(cmd().args(["copy", "--to", to]));
        assert_eq!(code, 0, "{to}: {v}\n{err}");
        assert_eq!(names(&v, "present"), both, "{v}");
        assert_eq!(pinned_in(&mut cmd(), to), both, "{to}");
    }
}

/// A file or a missing bucket where --to or --from names a repository:
/// exit 2 naming the flag and the location (a file was exit 9, "File
/// exists", or a hint about --dir and --file), nothing written.
#[test]
fn a_bad_location_is_named_by_the_flag_that_gave_it() {
    for kind in KINDS {
        let server = S3Server::start(kind);
        let home = Home::new();
        std::fs::create_dir_all(home.snapshots()).unwrap();
        let file = home.path().join("a-file");
        std::fs::write(&file, "mine").unwrap();
        let file_s = file.to_str().unwrap();
        let dest = home.path().join("dest");
        let dest_s = dest.to_str().unwrap();
        for (args, message, hint) in [
            (
                vec!["--to", file_s],
                format!("--to {file_s}: is a file, not a directory or s3:// location"),
                "--to names the repository to copy to",
            ),
            (
                vec!["--from", file_s, "--to", dest_s],
                format!("--from {file_s}: is a file, not a directory or s3:// location"),
                "--from names the repository to copy from",
            ),
            (
                vec!["--to", "s3://gone/x"],
                "--to s3://gone/x: the bucket does not exist".into(),
                "check --to",
            ),
            (
                vec!["--from", "s3://gone/x", "--to", dest_s],
                "--from s3://gone/x: the bucket does not exist".into(),
                "check --from",
            ),
        ] {
            let mut c = home.dbsnap();
            for (k, v) in server.env() {
                c.env(k, v);
            }
            let (code, v, err) = run_json(c.arg("copy").args(&args));
            assert_eq!(code, 2, "{kind:?} {args:?}: {v}\n{err}");
            assert!(err.contains(&message), "{kind:?} {args:?}: {err}");
            let hint_line = err.lines().find(|l| l.starts_with("hint: ")).unwrap_or("");
            assert!(hint_line.contains(hint), "{kind:?} {args:?}: {err}");
            assert!(
                !hint_line.contains("--dir") && !hint_line.contains("--file"),
                "{err}"
            );
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"mine");
        assert!(!dest.exists(), "{kind:?}: the destination was made");
    }
}
