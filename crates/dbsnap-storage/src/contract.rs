//! The repository contract as a test suite every backend runs: give
//! [`check`] a function that makes a fresh, empty repository; it panics,
//! naming the broken promise, if the backend breaks one.
//!
//! Only for tests (feature `contract`).

use std::io::{Read, Write};

use crate::{Repository, StorageError};

/// Runs every check, each on a fresh repository from `fresh`.
pub fn check(fresh: &dyn Fn() -> Box<dyn Repository>) {
    invisible_until_commit(&*fresh());
    round_trip_with_placeholders_and_ranges(&*fresh());
    never_overwrites(&*fresh());
    dropped_write_leaves_nothing(&*fresh());
    scratch_in_use_is_never_stale(&*fresh());
    not_found_is_typed(&*fresh());
    delete(&*fresh());
    newest_first(&*fresh());
    names(&*fresh());
    pins(&*fresh());
    drills(&*fresh());
}

fn read_all(repo: &dyn Repository, name: &str, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    repo.open_range(name, offset)
        .unwrap_or_else(|e| panic!("open_range {name} @{offset}: {e}"))
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn names_of(repo: &dyn Repository) -> Vec<String> {
    match repo.list() {
        Ok(l) => l.into_iter().map(|s| s.name).collect(),
        // A repository never written to may not exist yet.
        Err(StorageError::NoRepository(_)) => Vec::new(),
        Err(e) => panic!("list: {e}"),
    }
}

/// Bytes that differ at every position (a misplaced part shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

fn invisible_until_commit(repo: &dyn Repository) {
    let mut w = repo.begin("a.tar").expect("begin");
    w.write_all(b"hello").unwrap();
    assert!(names_of(repo).is_empty(), "a pending write is listed");
    assert!(
        matches!(repo.stat("a.tar"), Err(StorageError::NotFound(_))),
        "a pending write has a stat"
    );
    assert!(repo.open("a.tar").is_err(), "a pending write can be opened");
    let info = w.commit().expect("commit");
    assert_eq!((info.name.as_str(), info.size), ("a.tar", 5));
    assert_eq!(names_of(repo), ["a.tar"]);
    assert_eq!(repo.stat("a.tar").unwrap().size, 5);
    assert_eq!(read_all(repo, "a.tar", 0), b"hello");
}

fn round_trip_with_placeholders_and_ranges(repo: &dyn Repository) {
    // Big enough to cross object-store part boundaries, with placeholders
    // early, late, and right at the start.
    let body = pattern(13 << 20);
    let mut w = repo.begin("big.tar").unwrap();
    let first = w.reserve(512).unwrap();
    w.write_all(&body[..7 << 20]).unwrap();
    let middle = w.reserve(512).unwrap();
    w.write_all(&body[7 << 20..]).unwrap();
    let last = w.reserve(100).unwrap();
    w.fill(middle, &[2u8; 512]).unwrap();
    w.fill(last, &[3u8; 100]).unwrap();
    w.fill(first, &[1u8; 512]).unwrap();
    assert!(
        w.fill(first, &[1u8; 10]).is_err(),
        "a fill of the wrong length is accepted"
    );
    w.commit().unwrap();
    let mut want = vec![1u8; 512];
    want.extend_from_slice(&body[..7 << 20]);
    want.extend_from_slice(&[2u8; 512]);
    want.extend_from_slice(&body[7 << 20..]);
    want.extend_from_slice(&[3u8; 100]);
    let got = read_all(repo, "big.tar", 0);
    assert_eq!(got.len(), want.len(), "size after commit");
    assert!(got == want, "contents differ after commit");
    assert_eq!(repo.stat("big.tar").unwrap().size, want.len() as u64);
    let from = (9 << 20) + 3;
    assert!(
        read_all(repo, "big.tar", from as u64) == want[from..],
        "range read differs"
    );
}

fn never_overwrites(repo: &dyn Repository) {
    let mut w = repo.begin("x.tar").unwrap();
    w.write_all(b"first").unwrap();
    // A second writer of the same name, started before the first commits.
    let second = repo.begin("x.tar");
    w.commit().unwrap();
    match second {
        Err(StorageError::Exists(_)) => {}
        Ok(mut s) => {
            s.write_all(b"second").unwrap();
            assert!(
                matches!(s.commit(), Err(StorageError::Exists(_))),
                "a commit replaced a snapshot"
            );
        }
        Err(e) => panic!("second begin: {e}"),
    }
    assert!(
        matches!(repo.begin("x.tar"), Err(StorageError::Exists(_))),
        "begin over a snapshot"
    );
    assert_eq!(read_all(repo, "x.tar", 0), b"first");
}

fn dropped_write_leaves_nothing(repo: &dyn Repository) {
    {
        let mut w = repo.begin("gone.tar").unwrap();
        w.write_all(&pattern(1 << 20)).unwrap();
        let (mut spool, path) = w.spool("db 1/x").unwrap();
        spool.write_all(b"spooled").unwrap();
        assert!(path.exists());
    }
    assert!(names_of(repo).is_empty(), "a dropped write is listed");
    assert!(
        repo.remove_stale().unwrap().is_empty(),
        "a dropped write left something stale"
    );
    // The name is free again.
    let w = repo.begin("gone.tar").unwrap();
    w.commit().unwrap();
    assert_eq!(names_of(repo), ["gone.tar"]);
}

fn scratch_in_use_is_never_stale(repo: &dyn Repository) {
    repo.begin("s.tar").unwrap().commit().unwrap();
    let scratch = repo.scratch("schema").expect("scratch");
    scratch.as_file().write_all(b"member").unwrap();
    assert_eq!(names_of(repo), ["s.tar"], "a scratch file is listed");
    let path = scratch.path().to_path_buf();
    let mine = path.display().to_string();
    assert!(
        !repo.stale().unwrap().contains(&mine),
        "a scratch file in use is stale"
    );
    assert!(
        !repo.remove_stale().unwrap().contains(&mine) && path.exists(),
        "remove_stale removed a scratch file in use"
    );
    drop(scratch);
    assert!(!path.exists(), "a dropped scratch file stayed");
}

fn not_found_is_typed(repo: &dyn Repository) {
    assert!(matches!(
        repo.stat("none.tar"),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        repo.open("none.tar"),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        repo.delete("none.tar"),
        Err(StorageError::NotFound(_))
    ));
}

fn delete(repo: &dyn Repository) {
    repo.begin("d.tar").unwrap().commit().unwrap();
    repo.begin("e.tar").unwrap().commit().unwrap();
    repo.delete("d.tar").unwrap();
    assert_eq!(names_of(repo), ["e.tar"]);
    assert!(
        matches!(repo.delete("d.tar"), Err(StorageError::NotFound(_))),
        "delete is not NotFound twice"
    );
}

fn pins(repo: &dyn Repository) {
    assert!(repo.pinned().unwrap().is_empty());
    for n in ["p1.tar", "p2.tar"] {
        repo.begin(n).unwrap().commit().unwrap();
    }
    repo.set_pinned("p1.tar", true).unwrap();
    repo.set_pinned("p1.tar", true).unwrap();
    assert_eq!(
        repo.pinned().unwrap().into_iter().collect::<Vec<_>>(),
        ["p1.tar"]
    );
    // A pin is not a snapshot.
    assert_eq!(names_of(repo), ["p2.tar", "p1.tar"]);
    assert!(matches!(
        repo.set_pinned("none.tar", true),
        Err(StorageError::NotFound(_))
    ));
    repo.set_pinned("p1.tar", false).unwrap();
    repo.set_pinned("p1.tar", false).unwrap();
    assert!(repo.pinned().unwrap().is_empty());
    // Deleting a pinned snapshot takes its pin along.
    repo.set_pinned("p2.tar", true).unwrap();
    repo.delete("p2.tar").unwrap();
    assert!(repo.pinned().unwrap().is_empty());
    repo.begin("p2.tar").unwrap().commit().unwrap();
    assert!(
        repo.pinned().unwrap().is_empty(),
        "a new snapshot of the same name is not pinned"
    );
    assert!(repo.stale().unwrap().is_empty(), "a pin is not a leftover");
}

fn drills(repo: &dyn Repository) {
    assert!(repo.drills().unwrap().is_empty());
    for n in ["r1.tar", "r2.tar"] {
        repo.begin(n).unwrap().commit().unwrap();
    }
    repo.set_drill("r1.tar", b"{\"passed\":false}").unwrap();
    repo.set_drill("r1.tar", b"{\"passed\":true}").unwrap();
    let got = repo.drills().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got["r1.tar"], b"{\"passed\":true}",
        "the newest record replaces the older"
    );
    // A record is not a snapshot, nor a leftover.
    assert_eq!(names_of(repo), ["r2.tar", "r1.tar"]);
    assert!(
        repo.stale().unwrap().is_empty(),
        "a drill record is not a leftover"
    );
    assert!(matches!(
        repo.set_drill("none.tar", b"{}"),
        Err(StorageError::NotFound(_))
    ));
    // Deleting the snapshot takes its record along.
    repo.delete("r1.tar").unwrap();
    assert!(repo.drills().unwrap().is_empty());
    repo.begin("r1.tar").unwrap().commit().unwrap();
    assert!(
        repo.drills().unwrap().is_empty(),
        "a new snapshot of the same name has no drill record"
    );
}

fn newest_first(repo: &dyn Repository) {
    for n in ["m1.tar", "m2.tar", "m3.tar"] {
        repo.begin(n).unwrap().commit().unwrap();
    }
    assert_eq!(names_of(repo), ["m3.tar", "m2.tar", "m1.tar"]);
}

fn names(repo: &dyn Repository) {
    for bad in [".hidden.tar", "no-suffix", "a/b.tar"] {
        assert!(repo.begin(bad).is_err(), "begin accepted {bad:?}");
    }
}
