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
    #[serde(flatten)]
    owner: Owner,
}

impl Marker {
    pub(super) fn mine(upload_id: String) -> Marker {
        Marker {
            upload_id,
            owner: Owner::me(),
        }
    }

    /// Whether the writer is gone: its process (same host) no longer runs,
    /// or the marker was not refreshed for [`STALE_AFTER`].
    pub(super) fn is_dead(&self, refreshed: SystemTime) -> bool {
        if self.owner.is_me() {
            return stale(refreshed)
                || !LIVE_UPLOADS
                    .lock()
                    .is_ok_and(|l| l.contains(&self.upload_id));
        }
        self.owner.is_gone(refreshed)
    }
}

/// The process holding a marker or a lock: enough to tell, from any
/// process, whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The process start time (clock ticks since boot), so that a reused
    /// pid is not taken for the owner.
    pub start: Option<u64>,
}

impl Owner {
    /// This process.
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            host: hostname(),
            pid,
            start: process_start(pid),
        }
    }

    /// Whether this is the calling process.
    pub fn is_me(&self) -> bool {
        self.host == hostname() && self.pid == std::process::id()
    }

    /// Whether the owner is gone: its process (same host) no longer runs,
    /// or what it holds was last refreshed (`refreshed`) more than
    /// [`STALE_AFTER`] ago. Another host's live process is not gone.
    pub fn is_gone(&self, refreshed: SystemTime) -> bool {
        if stale(refreshed) {
            return true;
        }
        if self.host != hostname() {
            return false;
        }
        match process_start(self.pid) {
            None => true,
            Some(start) => self.start.is_some_and(|s| s != start),
        }
    }
}

/// Whether something refreshed at `refreshed` was left for more than
/// [`STALE_AFTER`] (its writer is taken to be gone).
pub fn stale(refreshed: SystemTime) -> bool {
    SystemTime::now()
        .duration_since(refreshed)
        .unwrap_or_default()
        > STALE_AFTER
}

/// Upload ids of this process's pending writes: process state by nature
/// (a marker names a process), shared by every repository value of a
/// bucket so that none takes another's live upload for a dead one.
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
