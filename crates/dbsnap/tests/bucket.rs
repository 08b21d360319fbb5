//! `bucket-backup` / `bucket-restore` against real S3 servers (s3s-fs and
//! moto), the objects written and read by a real S3 client
//! (object_store): a second run copies only what changed (also an object
//! rewritten at the same size), restoring an older run gives exactly that
//! run's objects, `--at` picks the run of that time, a run killed before
//! recording itself is finished by the next one without copying again, a
//! damaged blob is never written out, and wrong arguments fail clearly.

mod common;
#[path = "common/s3_client.rs"]
mod s3_client;

use std::collections::BTreeMap;
use std::process::Command;

use common::{run, run_json, Home};
use dbsnap_test_support::s3::{S3Server, KINDS};
use s3_client::Client;

fn big() -> Vec<u8> {
    // 11 MiB: more than one upload part.
    (0..11u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn expect(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

#[test]
fn a_second_run_copies_only_what_changed_and_any_run_restores_exactly() {
    for kind in KINDS {
        let server = S3Server::start(kind);
        for b in ["usage", "backups", "back1", "back2", "back3"] {
            server.create_bucket(b);
        }
        let s3 = Client::new(&server);
        let home = Home::new();
        let cmd = || {
            let mut c = home.dbsnap();
            for (k, v) in server.env() {
                c.env(k, v);
            }
            c
        };
        let big = big();
        s3.put("usage", "a.txt", b"alpha");
        s3.put("usage", "models/ckpt.bin", &big);
        s3.put("usage", "c.txt", b"gamma");
        let backup = || {
            let (code, v, err) = run_json(cmd().args([
                "bucket-backup",
                "--from",
                "s3://usage",
                "--to",
                "s3://backups/usage",
            ]));
            assert_eq!(code, 0, "{kind:?}: {v}\n{err}");
            v
        };
        let first = backup();
        assert_eq!(
            (first["objects"].as_u64(), first["copied"].as_u64()),
            (Some(3), Some(3)),
            "{first}"
        );

        // A change at the same size, a new object, a deleted one.
        s3.put("usage", "c.txt", b"GAMMA");
        s3.put("usage", "d.txt", b"delta");
        s3.delete("usage", "a.txt");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let second = backup();
        assert_eq!(second["objects"], 3, "{second}");
        assert_eq!(second["copied"], 2, "only c.txt and d.txt: {second}");
        assert_eq!(second["unchanged"], 1, "{second}");
        let third = backup();
        assert_eq!(third["copied"], 0, "{third}");

        let (code, v, err) =
            run_json(cmd().args(["bucket-restore", "--from", "s3://backups/usage", "--list"]));
        assert_eq!(code, 0, "{err}");
        let runs: Vec<String> = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(runs.len(), 3, "{v}");
        assert_eq!(runs[0], first["run"].as_str().unwrap());

        // The first run, as it was, into another bucket.
        let restore = |extra: &[&str]| {
            let mut c = cmd();
            c.args(["bucket-restore", "--from", "s3://backups/usage"])
                .args(extra);
            run_json(&mut c)
        };
        let (code, v, err) = restore(&["--run", &runs[0], "--to", "s3://back1"]);
        assert_eq!(code, 0, "{kind:?}: {v}\n{err}");
        let run1 = expect(&[
            ("a.txt", b"alpha"),
            ("c.txt", b"gamma"),
            ("models/ckpt.bin", &big),
        ]);
        assert!(
            s3.objects("back1", "") == run1,
            "{kind:?}: run 1 not restored exactly"
        );
        // Again: nothing to write.
        let (code, v, _) = restore(&["--run", &runs[0], "--to", "s3://back1"]);
        assert_eq!(code, 0);
        assert_eq!(
            v["written"].as_u64().unwrap() + v["present"].as_u64().unwrap(),
            3,
            "{v}"
        );
        assert!(
            v["present"].as_u64().unwrap() >= 2,
            "small objects are recognised: {v}"
        );

        // The newest run into a prefix; then run 1 over it with
        // --delete-extra: exactly run 1 again.
        let (code, v, err) = restore(&["--to", "s3://back2/restored"]);
        assert_eq!(code, 0, "{v}\n{err}");
        let newest = expect(&[
            ("c.txt", b"GAMMA"),
            ("d.txt", b"delta"),
            ("models/ckpt.bin", &big),
        ]);
        assert!(
            s3.objects("back2", "restored") == newest,
            "{kind:?}: newest run not restored exactly"
        );
        let (code, _, err) = run(cmd().args([
            "bucket-restore",
            "--from",
            "s3://backups/usage",
            "--to",
            "s3://back2/restored",
            "--run",
            &runs[0],
            "--delete-extra",
        ]));
        assert_eq!(code, 15, "--delete-extra without --yes: {err}");
        let (code, v, err) = restore(&[
            "--run",
            &runs[0],
            "--to",
            "s3://back2/restored",
            "--delete-extra",
            "--yes",
        ]);
        assert_eq!(code, 0, "{v}\n{err}");
        assert_eq!(v["extra"], serde_json::json!(["d.txt"]), "{v}");
        assert!(s3.objects("back2", "restored") == run1);

        // --at: the run that had finished by then.
        let (code, v, err) = restore(&["--at", "2000-01-01T00:00:00Z", "--to", "s3://back3"]);
        assert_eq!(code, 2, "before every run: {v}\n{err}");
        let runs_v =
            run_json(cmd().args(["bucket-restore", "--from", "s3://backups/usage", "--list"])).1;
        let first_done = runs_v["runs"][0]["finished_at"]
            .as_str()
            .unwrap()
            .to_string();
        let (code, v, err) = restore(&["--at", &first_done, "--to", "s3://back3"]);
        assert_eq!(code, 0, "{v}\n{err}");
        assert_eq!(v["run"], runs[0].as_str(), "{v}");
        assert!(s3.objects("back3", "") == run1);

        // A run killed before it recorded itself: its blobs stay, the next
        // run copies nothing again and records the run.
        s3.put("usage", "e.txt", b"epsilon");
        let fourth = backup();
        assert_eq!(fourth["copied"], 1, "{fourth}");
        s3.delete(
            "backups",
            &format!("usage/runs/{}.json", fourth["run"].as_str().unwrap()),
        );
        let fifth = backup();
        assert_eq!(
            fifth["copied"], 0,
            "blobs of the killed run are reused: {fifth}"
        );
        assert_eq!(fifth["objects"], 4, "{fifth}");
    }
}

#[test]
fn a_damaged_blob_is_not_written_and_bad_arguments_fail_clearly() {
    let server = S3Server::start(dbsnap_test_support::s3::S3Kind::S3sFs);
    server.create_bucket("usage");
    server.create_bucket("out");
    let s3 = Client::new(&server);
    let home = Home::new();
    let cmd = || {
        let mut c: Command = home.dbsnap();
        for (k, v) in server.env() {
            c.env(k, v);
        }
        c
    };
    s3.put("usage", "x.txt", b"the original bytes");
    s3.put("usage", "y.txt", b"other");
    let local = home.path().join("bk");
    let local_s = local.to_str().unwrap();
    let (code, v, err) =
        run_json(cmd().args(["bucket-backup", "--from", "s3://usage", "--to", local_s]));
    assert_eq!(code, 0, "{v}\n{err}");
    // Flip the blob holding x.txt.
    let blobs = local.join("blobs");
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        if std::fs::read(e.path()).unwrap() == b"the original bytes" {
            std::fs::write(e.path(), b"the 0riginal bytes").unwrap();
        }
    }
    let (code, out, err) =
        run(cmd().args(["bucket-restore", "--from", local_s, "--to", "s3://out"]));
    assert_eq!(code, 10, "{out}\n{err}");
    assert!(
        err.contains("x.txt") && err.contains("does not match its checksum"),
        "{err}"
    );
    assert!(
        !s3.objects("out", "").contains_key("x.txt"),
        "a damaged object was written"
    );

    let (code, _, err) =
        run(cmd().args(["bucket-backup", "--from", local_s, "--to", "s3://out/x"]));
    assert_eq!(code, 2, "--from must be S3: {err}");
    let (code, _, err) =
        run(cmd().args(["bucket-backup", "--from", "s3://nope", "--to", "s3://out/x"]));
    assert_eq!(code, 2, "missing bucket: {err}");
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, err) = run(cmd().args([
        "bucket-restore",
        "--from",
        "s3://out/empty",
        "--to",
        "s3://out/y",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no bucket-backup run"), "{err}");
    let (code, _, err) = run(cmd().args([
        "bucket-restore",
        "--from",
        local_s,
        "--to",
        "s3://out",
        "--at",
        "yesterday",
    ]));
    assert_eq!(code, 2, "{err}");

    // A blob cut short is copied again by the next backup.
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        if std::fs::read(e.path()).unwrap() == b"other" {
            std::fs::write(e.path(), b"o").unwrap();
        }
    }
    let (code, v, err) =
        run_json(cmd().args(["bucket-backup", "--from", "s3://usage", "--to", local_s]));
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["copied"], 1, "the cut blob: {v}");

    // Backups inside the bucket they back up, a restore over its own
    // backups, a second source in one location, an empty source: refused.
    for (args, what) in [
        (
            [
                "bucket-backup",
                "--from",
                "s3://usage",
                "--to",
                "s3://usage/bk",
            ],
            "inside",
        ),
        (
            [
                "bucket-backup",
                "--from",
                "s3://usage/a",
                "--to",
                "s3://usage",
            ],
            "inside",
        ),
        (
            ["bucket-backup", "--from", "s3://out", "--to", local_s],
            "holds backups of",
        ),
        (
            [
                "bucket-backup",
                "--from",
                "s3://usage/none",
                "--to",
                "s3://out/bk",
            ],
            "holds no objects",
        ),
        (
            ["bucket-restore", "--from", local_s, "--to", local_s],
            "would hold the backups",
        ),
    ] {
        let (code, _, err) = run(cmd().args(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
    }
    // Reading a location that does not exist creates nothing.
    let missing = home.path().join("nothing-here");
    let (code, _, err) = run(cmd().args([
        "bucket-restore",
        "--from",
        missing.to_str().unwrap(),
        "--list",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(!missing.exists());
}

/// Runs a bucket command expecting exit 2 with `message` and a hint
/// saying `hint_says`, never naming `--repo` or `--dir` (flags it does
/// not take); returns stderr.
fn refused_naming(cmd: &mut Command, message: &str, hint_says: &str) -> String {
    let (code, v, err) = run_json(cmd);
    assert_eq!(code, 2, "{message}: {v}\n{err}");
    assert_eq!(v["error"]["kind"], "usage", "{v}");
    assert!(err.contains(message), "{err}");
    let hint = err
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_else(|| panic!("no hint: {err}"));
    assert!(hint.contains(hint_says), "{hint}");
    assert!(
        !hint.contains("--repo") && !hint.contains("--dir"),
        "{hint}"
    );
    err
}

/// A missing bucket, a missing directory or a file where a location
/// should be: exit 2 naming the flag (--from or --to) and the location,
/// before anything is written.
#[test]
fn a_bad_location_is_named_by_the_flag_that_gave_it() {
    use dbsnap_test_support::s3::S3Kind;
    for kind in KINDS {
        let server = S3Server::start(kind);
        server.create_bucket("usage");
        server.create_bucket("out");
        let s3 = Client::new(&server);
        s3.put("usage", "x.txt", b"x");
        let home = Home::new();
        let cmd = |args: &[&str]| {
            let mut c: Command = home.dbsnap();
            for (k, v) in server.env() {
                c.env(k, v);
            }
            c.args(args);
            c
        };
        let local = home.path().join("bk");
        let local_s = local.to_str().unwrap();
        let (code, v, err) = run_json(&mut cmd(&[
            "bucket-backup",
            "--from",
            "s3://usage",
            "--to",
            local_s,
        ]));
        assert_eq!(code, 0, "{v}\n{err}");

        // Buckets that do not exist: read from...
        let mut cases = vec![
            (
                vec![
                    "bucket-backup",
                    "--from",
                    "s3://nope",
                    "--to",
                    "s3://out/bk",
                ],
                "--from s3://nope",
            ),
            (
                vec![
                    "bucket-restore",
                    "--from",
                    "s3://nope/bk",
                    "--to",
                    "s3://out",
                ],
                "--from s3://nope/bk",
            ),
            (
                vec!["bucket-restore", "--from", "s3://nope/bk", "--list"],
                "--from s3://nope/bk",
            ),
            (
                vec!["bucket-verify", "--from", "s3://nope/bk"],
                "--from s3://nope/bk",
            ),
            (
                vec!["bucket-prune", "--from", "s3://nope/bk", "--keep-last", "1"],
                "--from s3://nope/bk",
            ),
        ];
        // ...and written to (s3s-fs makes the bucket a write names, as
        // no S3 service does; moto refuses like one).
        if kind == S3Kind::Moto {
            cases.extend([
                (
                    vec![
                        "bucket-backup",
                        "--from",
                        "s3://usage",
                        "--to",
                        "s3://gone/bk",
                    ],
                    "--to s3://gone/bk",
                ),
                (
                    vec!["bucket-restore", "--from", local_s, "--to", "s3://gone/r"],
                    "--to s3://gone/r",
                ),
            ]);
        }
        for (args, location) in cases {
            let flag = &location[..location.find(' ').unwrap()];
            let err = refused_naming(
                &mut cmd(&args),
                &format!("{location}: the bucket does not exist"),
                &format!("check {flag}"),
            );
            // The destination's bucket is the one to create; a source's is not.
            assert_eq!(
                err.contains("dbsnap does not create buckets"),
                flag == "--to",
                "{kind:?} {args:?}: {err}"
            );
        }
        assert!(
            s3.objects("out", "").is_empty(),
            "{kind:?}: something was written"
        );
        if kind == S3Kind::Moto {
            continue;
        }

        // A backup location that does not exist.
        let missing = home.path().join("nothing-here");
        let missing_s = missing.to_str().unwrap();
        for args in [
            vec!["bucket-restore", "--from", missing_s, "--list"],
            vec!["bucket-restore", "--from", missing_s, "--to", "s3://out"],
            vec!["bucket-verify", "--from", missing_s],
            vec!["bucket-prune", "--from", missing_s, "--keep-last", "1"],
        ] {
            refused_naming(
                &mut cmd(&args),
                &format!("--from {missing_s}: does not exist"),
                "check --from",
            );
        }
        assert!(!missing.exists(), "a location only read was created");

        // A file where a location should be (was exit 9, "File exists").
        let file = home.path().join("a-file");
        std::fs::write(&file, "mine").unwrap();
        let file_s = file.to_str().unwrap();
        for (args, flag) in [
            (
                vec!["bucket-backup", "--from", "s3://usage", "--to", file_s],
                "--to",
            ),
            (
                vec!["bucket-restore", "--from", local_s, "--to", file_s],
                "--to",
            ),
            (
                vec!["bucket-restore", "--from", file_s, "--to", "s3://out"],
                "--from",
            ),
            (vec!["bucket-restore", "--from", file_s, "--list"], "--from"),
            (vec!["bucket-verify", "--from", file_s], "--from"),
            (
                vec!["bucket-prune", "--from", file_s, "--keep-last", "1"],
                "--from",
            ),
        ] {
            refused_naming(
                &mut cmd(&args),
                &format!("{flag} {file_s}: is a file, not a directory or s3:// location"),
                &format!("{flag} names"),
            );
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"mine", "the file changed");
        assert!(s3.objects("out", "").is_empty(), "something was restored");
    }
}
