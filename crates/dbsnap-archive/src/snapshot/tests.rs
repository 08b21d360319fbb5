//! The archive writer and reader: round trips, stock tar, spans, damage.

use super::*;
use std::io::Cursor;

fn meta() -> Metadata {
    Metadata {
        format_version: FORMAT_VERSION.into(),
        tool_version: "dbsnap test".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        target: None,
        prefix: "db-snapshot".into(),
        safety_for: None,
        consistency: Consistency {
            method: ConsistencyMethod::None,
            consistent_cut: false,
            attempts: 1,
            snapshot: None,
        },
        databases: vec![DatabaseEntry {
            name: "a".into(),
            member: "a.dump".into(),
            server: "h:1".into(),
            server_version: "15".into(),
            server_version_num: 150000,
            pg_dump_version: "15".into(),
            schema_version: None,
            connection: None,
            system_identifier: None,
        }],
        kubernetes: None,
        encryption: None,
    }
}

fn build() -> Vec<u8> {
    let mut w = SnapshotWriter::new(Cursor::new(Vec::new()), &meta(), 0).unwrap();
    let mut s = w.stream_member("a.dump").unwrap();
    for i in 0..1000u32 {
        s.write_all(&i.to_le_bytes()).unwrap();
    }
    s.finish().unwrap();
    w.add_bytes("extras/x.yaml", b"hello").unwrap();
    w.finish().unwrap().0.into_inner()
}

#[test]
fn member_spans_point_at_the_member_bytes() {
    let bytes = build();
    let spans = member_spans(Cursor::new(&bytes), &["a.dump", MANIFEST_MEMBER]).unwrap();
    let (at, size) = spans[0];
    let want: Vec<u8> = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect();
    assert_eq!(size, want.len() as u64);
    assert_eq!(&bytes[at as usize..(at + size) as usize], &want[..]);
    assert!(spans[1].0 > at + size);
    assert!(member_spans(Cursor::new(&bytes), &["b.dump"]).is_err());
}

/// A connection lost in the middle (a read failing with a kind other
/// than end-of-file or invalid data) is I/O, never damage.
#[test]
fn a_read_failing_midway_is_io_not_damage() {
    struct Failing<'a>(&'a [u8], usize);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 >= self.0.len() / 2 {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "lost"));
            }
            let n = buf.len().min(self.0.len() / 2 - self.1).min(100);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let bytes = build();
    match verify(Failing(&bytes, 0), |_, r| {
        io::copy(r, &mut io::sink())?;
        Ok(())
    }) {
        Err(ArchiveError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn round_trip_and_stock_tar_reads_it() {
    let bytes = build();
    let v = verify(Cursor::new(&bytes), |_, _| Ok(())).unwrap();
    assert_eq!(v.metadata, meta());
    assert_eq!(v.manifest.members.len(), 3);
    assert_eq!(v.manifest.members[1].size, 4000);
    assert_eq!(read_metadata(Cursor::new(&bytes)).unwrap(), meta());
    let mut ar = tar::Archive::new(Cursor::new(&bytes));
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["dbsnap.json", "a.dump", "extras/x.yaml", "manifest.json"]
    );
}

#[test]
fn every_flipped_byte_and_every_truncation_is_caught() {
    let bytes = build();
    for i in (0..bytes.len()).step_by(97) {
        let mut b = bytes.clone();
        b[i] ^= 0x20;
        if b == bytes {
            continue;
        }
        // Either an error, or the flip was in padding that no reader looks at.
        if verify(Cursor::new(&b), |_, _| Ok(())).is_ok() {
            assert!(is_padding(&bytes, i), "flip at {i} not caught");
        }
        let _ = read_metadata(Cursor::new(&b));
    }
    for cut in (0..bytes.len() - 1024).step_by(101) {
        assert!(
            verify(Cursor::new(&bytes[..cut]), |_, _| Ok(())).is_err(),
            "truncation at {cut} not caught"
        );
        let _ = read_metadata(Cursor::new(&bytes[..cut]));
    }
}

/// Bytes no reader interprets: tar padding after member data, and the
/// second end-of-archive block.
fn is_padding(bytes: &[u8], i: usize) -> bool {
    if i >= bytes.len() - 512 {
        return true;
    }
    let mut ar = tar::Archive::new(Cursor::new(bytes));
    ar.entries().unwrap().any(|e| {
        let e = e.unwrap();
        let end = e.raw_file_position() as usize + e.size() as usize;
        i >= end && i < end.div_ceil(512) * 512
    })
}

#[test]
fn refuses_unknown_major() {
    let mut m = meta();
    m.format_version = "2.0".into();
    let mut w = SnapshotWriter::new(Cursor::new(Vec::new()), &m, 0).unwrap();
    w.add_bytes("a.dump", b"x").unwrap();
    let bytes = w.finish().unwrap().0.into_inner();
    assert!(matches!(
        read_metadata(Cursor::new(&bytes)),
        Err(ArchiveError::UnsupportedFormat(_))
    ));
}
