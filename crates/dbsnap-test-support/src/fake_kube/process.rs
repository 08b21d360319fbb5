//! Local processes standing in for containers and exec sessions: each in
//! its own process group, with a clean environment, killed (the whole
//! group) when its guard drops or the fake stops.
//!
//! Never leaks the test's environment into a "container": only `PATH` and
//! `HOME` of the fake's own process pass, besides what the pod spec says.

use super::*;
use rustix::process::{kill_process_group, Pid, Signal};
use std::collections::BTreeSet;
use std::process::Stdio;

/// The process groups the fake started.
#[derive(Default)]
pub(super) struct ProcessGroups {
    /// Groups whose leader has not been reaped: killed when the fake drops.
    pub(super) live: BTreeSet<i32>,
    /// Every group ever started, to count what is left of them.
    pub(super) started: Vec<i32>,
}

impl ProcessGroups {
    /// Sends SIGKILL to every live group.
    pub(super) fn kill_all(&mut self) {
        for pgid in std::mem::take(&mut self.live) {
            signal_group(pgid, Signal::KILL);
        }
    }
}

/// Sends `signal` to the process group `pgid` (gone groups are ignored).
pub(super) fn signal_group(pgid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid) {
        let _ = kill_process_group(pid, signal);
    }
}

/// SIGTERM for the whole group.
pub(super) fn terminate_group(pgid: i32) {
    signal_group(pgid, Signal::TERM);
}

/// How a "container" process is wired.
pub(super) struct Launch<'a> {
    pub(super) argv: &'a [String],
    pub(super) env: &'a [(String, String)],
    /// Pipes for stdin, stdout and stderr (else /dev/null, and stdout and
    /// stderr piped for the pod's log).
    pub(super) interactive: bool,
}

/// A started process; dropping it kills its group.
pub(super) struct Started {
    pub(super) child: tokio::process::Child,
    pub(super) pgid: i32,
    shared: Shared,
}

impl Drop for Started {
    fn drop(&mut self) {
        signal_group(self.pgid, Signal::KILL);
        lock(&self.shared).kubelet.groups.live.remove(&self.pgid);
    }
}

/// Starts `launch.argv` in a new process group, registered with the fake.
pub(super) fn start_process(shared: &Shared, launch: &Launch<'_>) -> std::io::Result<Started> {
    let Some((program, args)) = launch.argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no command",
        ));
    };
    let program = lock(shared).kubelet.mapped_command(program);
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(basic_env())
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(std::env::temp_dir())
        .process_group(0)
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if launch.interactive {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let child = command.spawn()?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .unwrap_or(0);
    let mut state = lock(shared);
    state.kubelet.groups.live.insert(pgid);
    state.kubelet.groups.started.push(pgid);
    drop(state);
    Ok(Started {
        child,
        pgid,
        shared: shared.clone(),
    })
}

/// What every container sees from the fake's own environment.
fn basic_env() -> Vec<(String, String)> {
    ["PATH", "HOME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect()
}

/// The exit code Kubernetes reports: the code, or 128 + the signal.
pub(super) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// How many processes (not zombies) of the given groups are alive, read
/// from `/proc`.
pub(super) fn count_live(groups: &[i32]) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| state_and_group(&stat))
        .filter(|(state, pgid)| *state != 'Z' && *state != 'X' && groups.contains(pgid))
        .count()
}

/// `(state, pgrp)` out of `/proc/PID/stat` (`pid (comm) state ppid pgrp …`).
fn state_and_group(stat: &str) -> Option<(char, i32)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse() {
        assert_eq!(
            state_and_group("42 (sh (x) y) S 1 42 42 0"),
            Some(('S', 42))
        );
    }
}
