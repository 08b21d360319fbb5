//! Upload markers: which multipart uploads are in progress, and whether
//! their writer still lives.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::SystemTime;

use super::STALE_AFTER;

/// What an upload marker records.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Marker {
    pub(super) upload_id: String,
    host: String,
    pid: u32,
    /// The writer's process start time (clock ticks since boot), so that a
    /// reused pid is not taken for the writer.
    start: Option<u64>,
}

impl Marker {
    pub(super) fn mine(upload_id: String) -> Marker {
        let pid = std::process::id();
        Marker {
            upload_id,
            host: hostname(),
            pid,
            start: process_start(pid),
        }
    }

    /// Whether the writer is gone: its process (same host) no longer runs,
    /// or the marker was not refreshed for [`STALE_AFTER`].
    pub(super) fn is_dead(&self, refreshed: SystemTime) -> bool {
        let age = SystemTime::now()
            .duration_since(refreshed)
            .unwrap_or_default();
        if age > STALE_AFTER {
            return true;
        }
        if self.host != hostname() {
            return false;
        }
        if self.pid == std::process::id() {
            return !LIVE_UPLOADS
                .lock()
                .is_ok_and(|l| l.contains(&self.upload_id));
        }
        match process_start(self.pid) {
            None => true,
            Some(start) => self.start.is_some_and(|s| s != start),
        }
    }
}

/// Upload ids of this process's pending writes.
pub(super) static LIVE_UPLOADS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A process's start time from /proc (None when it does not run).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}
