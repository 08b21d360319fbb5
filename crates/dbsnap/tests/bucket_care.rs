//! Taking care of bucket backups, against real S3 servers (s3s-fs and
//! moto) and directories: `bucket-verify` finds a blob damaged at the same
//! size (exit 10, the object named) and a missing one; `bucket-backup`
//! does not carry such a blob forward once its verification is older than
//! `--reverify-after` (or never happened) but copies it again; a
//! `bucket-prune` removes the runs its rules do not keep and then exactly
//! the blobs no kept run needs, never while a manifest cannot be read or
//! another process holds the location; a killed backup's temporary files
//! are removed by the next run.

mod common;
#[path = "common/s3_client.rs"]
mod s3_client;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, run_json, Home};
use dbsnap_test_support::s3::{S3Kind, S3Server, KINDS};
use s3_client::Client;
use serde_json::Value;

/// A backup location: a directory, or a prefix of a bucket.
enum Location {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    fn url(&self) -> String {
        match self {
            Location::Dir(d) => d.to_str().unwrap().to_string(),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    fn read(&self, s3: &Client, rel: &str) -> Option<Vec<u8>> {
        match self {
            Location::Dir(d) => std::fs::read(d.join(rel)).ok(),
            Location::S3 { bucket, prefix } => s3.get(bucket, &format!("{prefix}/{rel}")),
        }
    }

    fn write(&self, s3: &Client, rel: &str, bytes: &[u8]) {
        match self {
            Location::Dir(d) => std::fs::write(d.join(rel), bytes).unwrap(),
            Location::S3 { bucket, prefix } => s3.put(bucket, &format!("{prefix}/{rel}"), bytes),
        }
    }

    fn delete(&self, s3: &Client, rel: &str) {
        match self {
            Location::Dir(d) => std::fs::remove_file(d.join(rel)).unwrap(),
            Location::S3 { bucket, prefix } => s3.delete(bucket, &format!("{prefix}/{rel}")),
        }
    }

    /// Names of the objects under `dir` (`blobs`, `runs`, `locks`).
    fn names(&self, s3: &Client, dir: &str) -> BTreeSet<String> {
        match self {
            Location::Dir(d) => std::fs::read_dir(d.join(dir))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            Location::S3 { bucket, prefix } => s3
                .objects(bucket, &format!("{prefix}/{dir}"))
                .into_keys()
                .collect(),
        }
    }

    /// A run's manifest.
    fn manifest(&self, s3: &Client, run: &str) -> Value {
        let bytes = self.read(s3, &format!("runs/{run}.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn set_manifest(&self, s3: &Client, run: &str, m: &Value) {
        let bytes = serde_json::to_vec_pretty(m).unwrap();
        self.write(s3, &format!("runs/{run}.json"), &bytes);
    }
}

/// The blob of `key` in a manifest.
fn blob_of(manifest: &Value, key: &str) -> String {
    manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"] == key)
        .unwrap_or_else(|| panic!("{key} not in {manifest}"))["blob"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every blob a run needs.
fn blobs_of(manifest: &Value) -> BTreeSet<String> {
    manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["blob"].as_str().unwrap().to_string())
        .collect()
}

/// The same bytes with one changed: damage that keeps the size.
fn flipped(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[4] ^= 0x20;
    b
}

struct Setup {
    server: S3Server,
    s3: Client,
    home: Home,
}

impl Setup {
    fn new(kind: S3Kind) -> Setup {
        let server = S3Server::start(kind);
        for b in ["usage", "backups", "out"] {
            server.create_bucket(b);
        }
        let s3 = Client::new(&server);
        Setup {
            server,
            s3,
            home: Home::new(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = self.home.dbsnap();
        for (k, v) in self.server.env() {
            c.env(k, v);
        }
        c
    }

    /// `dbsnap ARGS --json`, which must exit `want`.
    fn ok(&self, want: i32, args: &[&str]) -> Value {
        let (code, v, err) = run_json(self.cmd().args(args));
        assert_eq!(code, want, "{args:?}: {v}\n{err}");
        v
    }

    fn backup(&self, to: &Location, extra: &[&str]) -> Value {
        let mut args = vec!["bucket-backup", "--from", "s3://usage"];
        let url = to.url();
        args.extend(["--to", &url]);
        args.extend(extra);
        self.ok(0, &args)
    }
}

#[test]
fn a_blob_damaged_at_the_same_size_is_found_and_not_carried_forward() {
    for kind in KINDS {
        let t = Setup::new(kind);
        let locations = [
            Location::S3 {
                bucket: "backups".into(),
                prefix: "usage".into(),
            },
            Location::Dir(t.home.path().join("bk")),
        ];
        for (n, loc) in locations.iter().enumerate() {
            let (x, y, z) = (
                format!("x{n}.txt"),
                format!("y{n}.txt"),
                format!("z{n}.txt"),
            );
            t.s3.put("usage", &x, b"the original bytes");
            t.s3.put("usage", &y, b"other bytes");
            t.s3.put("usage", &z, b"third object");
            let first = t.backup(loc, &[]);
            let run1 = first["run"].as_str().unwrap().to_string();
            let url = loc.url();
            let v = t.ok(0, &["bucket-verify", "--from", &url]);
            assert_eq!(
                (v["ok"].as_bool(), v["runs"].clone()),
                (Some(true), serde_json::json!([run1])),
                "{v}"
            );
            assert_eq!(v["blobs"].as_u64(), first["objects"].as_u64(), "{v}");

            // One byte changed, the size kept: only a full read finds it.
            let m1 = loc.manifest(&t.s3, &run1);
            let xb = blob_of(&m1, &x);
            let at = format!("blobs/{xb}");
            loc.write(&t.s3, &at, &flipped(&loc.read(&t.s3, &at).unwrap()));
            let (code, out, err) = run(t.cmd().args(["bucket-verify", "--from", &url]));
            assert_eq!(code, 10, "{kind:?} {url}: {out}\n{err}");
            assert!(
                err.contains(&format!("\"{x}\""))
                    && err.contains("1 of 3 object(s)")
                    && err.contains("hint:"),
                "{err}"
            );
            assert!(out.contains("DAMAGED") && out.contains(&x), "{out}");
            let v = t.ok(10, &["bucket-verify", "--from", &url, "--all"]);
            assert_eq!(v["ok"], false, "{v}");
            assert_eq!(v["error"]["exit_code"], 10, "{v}");
            let damaged = v["damaged"].as_array().unwrap();
            assert_eq!(damaged.len(), 1, "{v}");
            assert_eq!(damaged[0]["key"], x.as_str());
            assert_eq!(damaged[0]["damage"], "checksum_mismatch");
            assert_eq!(damaged[0]["runs"], serde_json::json!([run1]));

            // Verified just now: the next run reuses the blob without
            // reading it (the period has not passed).
            let second = t.backup(loc, &[]);
            assert_eq!(
                (second["copied"].as_u64(), second["reverified"].as_u64()),
                (Some(0), Some(0)),
                "{second}"
            );
            let run2 = second["run"].as_str().unwrap().to_string();

            // Once its verification is older than --reverify-after (here:
            // recorded 40 days ago), or was never recorded (a manifest of
            // an older version), a reused blob is read again first: the
            // damaged one is copied again from the source, the sound one
            // is verified.
            let old = (time::OffsetDateTime::now_utc() - time::Duration::days(40))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            for run in [&run1, &run2] {
                let mut m = loc.manifest(&t.s3, run);
                for o in m["objects"].as_array_mut().unwrap() {
                    if o["key"] == x.as_str() {
                        o["verified_at"] = Value::String(old.clone());
                    } else if o["key"] == y.as_str() {
                        o.as_object_mut().unwrap().remove("verified_at");
                    }
                }
                loc.set_manifest(&t.s3, run, &m);
            }
            let (code, third, err) =
                run_json(
                    t.cmd()
                        .args(["bucket-backup", "--from", "s3://usage", "--to", &url]),
                );
            assert_eq!(code, 0, "{third}\n{err}");
            assert!(
                err.contains(&format!("warning: the blob of \"{x}\" (blobs/{xb})"))
                    && err.contains("copying it again"),
                "{err}"
            );
            assert_eq!(
                third["repaired"],
                serde_json::json!([x]),
                "{kind:?} {url}: {third}"
            );
            assert_eq!(
                (third["copied"].as_u64(), third["reverified"].as_u64()),
                (Some(1), Some(1)),
                "{third}"
            );
            assert_eq!(loc.read(&t.s3, &at).unwrap(), b"the original bytes");
            // The blob is shared: every run that has it is sound again.
            let v = t.ok(0, &["bucket-verify", "--from", &url, "--all"]);
            assert_eq!(v["runs"].as_array().unwrap().len(), 3, "{v}");
            let (code, out, err) = run(t.cmd().args(["bucket-verify", "--from", &url]));
            assert_eq!(code, 0, "{err}");
            assert!(out.contains("each matches its size and SHA-256"), "{out}");

            // --reverify-after 0 reads every reused blob.
            let yb = blob_of(&m1, &y);
            let at_y = format!("blobs/{yb}");
            loc.write(&t.s3, &at_y, &flipped(&loc.read(&t.s3, &at_y).unwrap()));
            let fourth = t.backup(loc, &["--reverify-after", "0"]);
            assert_eq!(fourth["repaired"], serde_json::json!([y]), "{fourth}");
            assert_eq!(fourth["reverified"], 2, "{fourth}");
            let (code, out, _) = run(t.cmd().args([
                "bucket-backup",
                "--from",
                "s3://usage",
                "--to",
                &url,
                "--reverify-after",
                "0",
            ]));
            assert_eq!(code, 0);
            assert!(out.contains("3 read again and verified"), "{out}");

            // A missing blob is named too; the next backup copies it again.
            let zb = blob_of(&m1, &z);
            loc.delete(&t.s3, &format!("blobs/{zb}"));
            let v = t.ok(10, &["bucket-verify", "--from", &url, "--run", &run1]);
            assert_eq!(v["damaged"][0]["key"], z.as_str(), "{v}");
            assert_eq!(v["damaged"][0]["damage"], "missing", "{v}");
            let fifth = t.backup(loc, &[]);
            assert_eq!(fifth["copied"], 1, "{fifth}");
            t.ok(0, &["bucket-verify", "--from", &url, "--all"]);

            // A manifest that cannot be read: --all says so (exit 10), the
            // newest run still verifies.
            loc.write(
                &t.s3,
                "runs/20000101T000000Z.json",
                b"{\"format\": 1, \"run\"",
            );
            let v = t.ok(10, &["bucket-verify", "--from", &url, "--all"]);
            assert_eq!(v["unreadable_runs"][0]["run"], "20000101T000000Z", "{v}");
            t.ok(0, &["bucket-verify", "--from", &url]);
            loc.delete(&t.s3, "runs/20000101T000000Z.json");

            // What is restored is the objects' real bytes.
            t.ok(
                0,
                &[
                    "bucket-restore",
                    "--from",
                    &url,
                    "--to",
                    &format!("s3://out/{n}"),
                ],
            );
            let restored = t.s3.objects("out", &n.to_string());
            assert_eq!(restored[&x], b"the original bytes");
            assert_eq!(restored[&y], b"other bytes");
            for k in [&x, &y, &z] {
                t.s3.delete("usage", k);
            }
        }
        // Wrong arguments.
        let (code, _, err) = run(t.cmd().args(["bucket-verify", "--from", "s3://out/none"]));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("no bucket-backup run") && err.contains("hint:"),
            "{err}"
        );
        let (code, _, err) = run(t.cmd().args([
            "bucket-verify",
            "--from",
            "s3://backups/usage",
            "--run",
            "nope",
        ]));
        assert_eq!(code, 2, "{err}");
        let (code, _, err) = run(t.cmd().args([
            "bucket-backup",
            "--from",
            "s3://usage",
            "--to",
            "s3://backups/usage",
            "--reverify-after",
            "soon",
        ]));
        assert_eq!(code, 2, "{err}");
    }
}

/// Sets every run's start `days` days back, oldest first (a history
/// without waiting for it).
fn age_runs(t: &Setup, loc: &Location, runs: &[String]) {
    for (i, run) in runs.iter().enumerate() {
        let mut m = loc.manifest(&t.s3, run);
        let at =
            time::OffsetDateTime::now_utc() - time::Duration::days(10 * (runs.len() - i) as i64);
        m["started_at"] = Value::String(
            at.format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        );
        loc.set_manifest(&t.s3, run, &m);
    }
}

#[test]
fn prune_removes_unkept_runs_then_exactly_the_blobs_no_kept_run_needs() {
    for kind in KINDS {
        let t = Setup::new(kind);
        let loc = Location::S3 {
            bucket: "backups".into(),
            prefix: "usage".into(),
        };
        let url = loc.url();
        // Four runs: a and b; a and c (b deleted); a, c and d; a and d.
        let mut runs = Vec::new();
        for (put, delete) in [
            (&[("a", "alpha"), ("b", "beta")][..], &[][..]),
            (&[("c", "gamma")][..], &["b"][..]),
            (&[("d", "delta")][..], &[][..]),
            (&[][..], &["c"][..]),
        ] {
            for (k, v) in put {
                t.s3.put("usage", k, v.as_bytes());
            }
            for k in delete {
                t.s3.delete("usage", k);
            }
            runs.push(t.backup(&loc, &[])["run"].as_str().unwrap().to_string());
        }
        let manifests: Vec<Value> = runs.iter().map(|r| loc.manifest(&t.s3, r)).collect();
        let b_blob = blob_of(&manifests[0], "b");
        assert_eq!(loc.names(&t.s3, "blobs").len(), 4);

        // No rule, or no --yes without a terminal: refused.
        let (code, _, err) = run(t.cmd().args(["bucket-prune", "--from", &url, "--yes"]));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("--keep-last") && err.contains("hint:"),
            "{err}"
        );
        let (code, _, err) =
            run(t
                .cmd()
                .args(["bucket-prune", "--from", &url, "--keep-last", "2"]));
        assert_eq!(code, 15, "{err}");
        // The plan: runs 1 and 2 go, and b's blob with them (c's is still
        // needed by run 3).
        let v = t.ok(
            0,
            &[
                "bucket-prune",
                "--from",
                &url,
                "--keep-last",
                "2",
                "--dry-run",
            ],
        );
        let gone: Vec<&str> = v["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["run"].as_str().unwrap())
            .collect();
        assert_eq!(gone, [runs[0].as_str(), runs[1].as_str()], "{v}");
        assert_eq!(
            (v["removed_blobs"].as_u64(), v["dry_run"].as_bool()),
            (Some(1), Some(true)),
            "{v}"
        );
        assert_eq!(
            loc.names(&t.s3, "runs").len(),
            4,
            "a dry run changes nothing"
        );

        // A manifest that cannot be read: never counted, kept, and no blob
        // is removed while it is there (which ones it needs is unknown).
        loc.write(&t.s3, "runs/20000101T000000Z.json", b"not json");
        let (code, v, err) =
            run_json(
                t.cmd()
                    .args(["bucket-prune", "--from", &url, "--keep-last", "2", "--yes"]),
            );
        assert_eq!(code, 0, "{v}\n{err}");
        assert!(
            err.contains("runs/20000101T000000Z.json: not a bucket-backup run manifest")
                && err.contains("removes no blob"),
            "{err}"
        );
        assert_eq!(v["removed"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["removed_blobs"], 0, "{v}");
        assert!(
            v["blobs_kept_because"]
                .as_str()
                .unwrap()
                .contains("20000101T000000Z"),
            "{v}"
        );
        assert!(
            v["kept"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["run"] == "20000101T000000Z"),
            "{v}"
        );
        assert!(loc.names(&t.s3, "blobs").contains(&b_blob));
        loc.delete(&t.s3, "runs/20000101T000000Z.json");

        // Without it: exactly the blobs no kept run needs go.
        let v = t.ok(
            0,
            &["bucket-prune", "--from", &url, "--keep-last", "2", "--yes"],
        );
        assert_eq!(
            (
                v["removed"].as_array().unwrap().len(),
                v["removed_blobs"].as_u64()
            ),
            (0, Some(1)),
            "{v}"
        );
        let needed: BTreeSet<String> = blobs_of(&manifests[2])
            .union(&blobs_of(&manifests[3]))
            .cloned()
            .collect();
        assert_eq!(loc.names(&t.s3, "blobs"), needed);
        let left: BTreeSet<String> = loc.names(&t.s3, "runs");
        assert_eq!(
            left,
            [&runs[2], &runs[3]]
                .iter()
                .map(|r| format!("{r}.json"))
                .collect()
        );
        t.ok(0, &["bucket-verify", "--from", &url, "--all"]);
        t.ok(
            0,
            &[
                "bucket-restore",
                "--from",
                &url,
                "--run",
                &runs[2],
                "--to",
                "s3://out/r3",
            ],
        );
        let r3 = t.s3.objects("out", "r3");
        assert_eq!(r3.keys().collect::<Vec<_>>(), ["a", "c", "d"]);
        assert_eq!(r3["c"], b"gamma");

        // Rules that keep no run (every start more than a day ago): the
        // newest run stays all the same.
        age_runs(&t, &loc, &runs[2..]);
        let (code, out, err) = run(t.cmd().args([
            "bucket-prune",
            "--from",
            &url,
            "--keep-within",
            "1d",
            "--yes",
        ]));
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!("keep    {}  (newest run)", runs[3])),
            "{out}"
        );
        assert!(out.contains(&format!("removed  {}", runs[2])), "{out}");
        assert_eq!(loc.names(&t.s3, "blobs"), blobs_of(&manifests[3]));
        t.ok(0, &["bucket-verify", "--from", &url, "--all"]);
    }
}

/// This machine's host name, as a lock records it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn lock_body(command: &str, host: &str, pid: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "command": command, "since": "2026-01-01T00:00:00Z", "host": host, "pid": pid, "start": 1
    }))
    .unwrap()
}

#[test]
fn a_location_in_use_is_not_pruned_and_a_killed_backup_is_cleaned_up() {
    let t = Setup::new(S3Kind::S3sFs);
    let loc = Location::Dir(t.home.path().join("bk"));
    let url = loc.url();
    // A big object: its copy takes a while, through a temporary file.
    let big: Vec<u8> = (0..160u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    t.s3.put("usage", "small.txt", b"small");
    t.backup(&loc, &[]);
    t.backup(&loc, &[]);

    // A lock held by a process of another host (it may be alive):
    // neither a prune nor a backup goes on, and both say who holds it.
    std::fs::create_dir_all(t.home.path().join("bk/locks")).unwrap();
    let other = t.home.path().join("bk/locks/0123456789abcdef.json");
    std::fs::write(&other, lock_body("bucket-backup", "another-host", 42)).unwrap();
    for args in [
        &["bucket-prune", "--from", &url, "--keep-last", "1", "--yes"][..],
        &["bucket-backup", "--from", "s3://usage", "--to", &url][..],
    ] {
        let (code, _, err) = run(t.cmd().args(args));
        assert_eq!(code, 16, "{args:?}: {err}");
        assert!(
            err.contains("in use by bucket-backup (host another-host, pid 42")
                && err.contains("hint:"),
            "{err}"
        );
    }
    // One of a process of this host that is gone is removed.
    std::fs::write(&other, lock_body("bucket-prune", &hostname(), u32::MAX - 1)).unwrap();
    t.backup(&loc, &[]);
    assert!(!other.exists(), "the dead process's lock stays");
    t.s3.put("usage", "big.bin", &big);

    // kill -9 in the middle of copying the big object: its temporary
    // file (blobs/<id>#<n>) and its lock stay behind.
    let mut child = t
        .cmd()
        .args(["bucket-backup", "--from", "s3://usage", "--to", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let temporaries = || -> Vec<String> {
        loc.names(&t.s3, "blobs")
            .into_iter()
            .filter(|n| n.contains('#'))
            .collect()
    };
    let waited = Instant::now();
    while temporaries().is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before copying"
        );
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "no temporary file appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // While it runs, the location is in use: a prune removes nothing.
    let (code, _, err) =
        run(t
            .cmd()
            .args(["bucket-prune", "--from", &url, "--keep-last", "1", "--yes"]));
    assert_eq!(code, 16, "{err}");
    assert!(err.contains("in use by bucket-backup"), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
    let left = temporaries();
    assert!(!left.is_empty(), "kill -9 left no temporary file");
    assert_eq!(loc.names(&t.s3, "locks").len(), 1, "the killed run's lock");
    assert_eq!(
        loc.names(&t.s3, "runs").len(),
        3,
        "a killed run records nothing"
    );

    // The next run removes them and completes the run.
    let v = t.backup(&loc, &[]);
    assert_eq!(
        v["removed_temporary"].as_u64(),
        Some(left.len() as u64),
        "{v}"
    );
    assert_eq!(
        (v["objects"].as_u64(), v["copied"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    assert!(temporaries().is_empty(), "{:?}", temporaries());
    assert!(loc.names(&t.s3, "locks").is_empty());
    let v = t.ok(0, &["bucket-verify", "--from", &url]);
    assert_eq!(v["bytes"].as_u64(), Some(big.len() as u64 + 5), "{v}");
}
