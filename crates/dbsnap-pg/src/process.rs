//! The one way dbsnap runs PostgreSQL's client programs (pg_dump,
//! pg_restore, psql).
//!
//! - **No password on disk.** A password reaches a child through an
//!   anonymous in-memory file (`memfd`, mode 0600, sealed) that the child
//!   sees as descriptor 3 and libpq reads through `PGPASSFILE=/dev/fd/3`.
//!   It has no name in any file system and disappears with the last process
//!   holding it, however dbsnap ends.
//! - **Children die with dbsnap.** Every child joins the process group of a
//!   small watchdog (`dbsnap` started with [`WATCHDOG_ARG`]) that reads a
//!   pipe from dbsnap; when dbsnap dies in any way, even `kill -9`, the pipe
//!   closes and the watchdog kills its whole group. Children live in their
//!   own group, so a terminal's Ctrl-C reaches only dbsnap, which stops them
//!   itself ([`stop_all`]) after cancelling its queries.
//! - **Messages in English.** Children run with `LC_MESSAGES=C`: dbsnap
//!   classifies their errors by text.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

use command_fds::{CommandFdExt, FdMapping};
use rustix::fs::{MemfdFlags, Mode, SealFlags};
use rustix::process::{Pid, Signal};

use crate::connect::DEFAULT_CONNECT_TIMEOUT;
use crate::conninfo::{pgpass_escape, ConnInfo};
use crate::error::{PgError, PgErrorKind};

/// The argument that makes the `dbsnap` binary act as the watchdog
/// ([`run_watchdog`]).
pub const WATCHDOG_ARG: &str = "__dbsnap-watchdog";

/// The descriptor number the password file has in a child.
const PASSFILE_FD: i32 = 3;

/// The executable to start as watchdog, set once by the binary.
static WATCHDOG_EXE: OnceLock<PathBuf> = OnceLock::new();
/// The running watchdog: its pipe (kept open while dbsnap lives) and pid.
static WATCHDOG: Mutex<Option<Watchdog>> = Mutex::new(None);
/// Children still running, by pid, with their program names.
static RUNNING: Mutex<BTreeMap<i32, String>> = Mutex::new(BTreeMap::new());

struct Watchdog {
    _lifeline: ChildStdin,
    child: Child,
    group: u32,
}

/// Makes every child die with this process: `exe` (normally the running
/// `dbsnap` binary) is started as watchdog on the first child. Without
/// this call (library tests) children run in dbsnap's own process group.
pub fn guard_children_with(exe: PathBuf) {
    let _ = WATCHDOG_EXE.set(exe);
}

/// The watchdog's main: waits until the pipe from dbsnap closes, then
/// stops every other member of its process group (every child dbsnap
/// started): SIGINT first, so that pg_dump, pg_restore and psql cancel
/// their queries and no session is left waiting for a lock, then SIGKILL
/// for the group, itself included.
pub fn run_watchdog() -> ! {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 64];
    while !matches!(stdin.read(&mut buf), Ok(0) | Err(_)) {}
    let group = rustix::process::getpgrp();
    let me = rustix::process::getpid();
    let members = || -> Vec<Pid> {
        group_members(group)
            .into_iter()
            .filter(|p| *p != me)
            .collect()
    };
    for pid in members() {
        let _ = rustix::process::kill_process(pid, Signal::INT);
    }
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while !members().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = rustix::process::kill_process_group(group, Signal::KILL);
    std::process::exit(0)
}

/// How long a stopped program has to cancel its query and exit.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Live (not zombie) processes of process group `group`, from /proc.
fn group_members(group: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid pgrp ...": comm may hold anything.
            let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
            let in_group = fields.get(2)?.parse::<i32>().ok()? == group.as_raw_nonzero().get();
            (in_group && fields.first() != Some(&"Z")).then(|| Pid::from_raw(pid))?
        })
        .collect()
}

/// The process group children join, starting the watchdog if needed.
fn watchdog_group() -> Result<Option<u32>, PgError> {
    let Some(exe) = WATCHDOG_EXE.get() else {
        return Ok(None);
    };
    let mut slot = WATCHDOG
        .lock()
        .map_err(|_| PgError::new(PgErrorKind::Io, "watchdog lock poisoned"))?;
    if let Some(w) = slot.as_mut() {
        if matches!(w.child.try_wait(), Ok(None)) {
            return Ok(Some(w.group));
        }
        // Killed from outside: children started from now on get a new one.
        tracing::warn!("the child watchdog ended; starting a new one");
    }
    let mut child = Command::new(exe)
        .arg(WATCHDOG_ARG)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            PgError::new(
                PgErrorKind::Tooling,
                format!("could not start the child watchdog {}: {e}", exe.display()),
            )
        })?;
    let lifeline = child
        .stdin
        .take()
        .ok_or_else(|| PgError::new(PgErrorKind::Io, "watchdog without a pipe"))?;
    let group = child.id();
    *slot = Some(Watchdog {
        _lifeline: lifeline,
        child,
        group,
    });
    Ok(Some(group))
}

/// A client program about to run.
pub struct Tool {
    cmd: Command,
    name: String,
}

impl Tool {
    /// `path`, with stdin from /dev/null, English messages, and none of the
    /// password environment dbsnap's caller may have.
    pub fn new(path: &Path) -> Tool {
        let mut cmd = Command::new(path);
        cmd.env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .env_remove("PGSERVICE")
            .env_remove("PGSERVICEFILE")
            .env_remove("LC_ALL")
            .env("LC_MESSAGES", "C")
            .stdin(Stdio::null());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Tool { cmd, name }
    }

    /// The program's file name (`pg_dump`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Tool {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Tool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Tool {
        self.cmd.env(key, value);
        self
    }

    /// Where the child's stdin comes from.
    pub fn stdin(&mut self, s: Stdio) -> &mut Tool {
        self.cmd.stdin(s);
        self
    }

    /// Where the child's stdout goes.
    pub fn stdout(&mut self, s: Stdio) -> &mut Tool {
        self.cmd.stdout(s);
        self
    }

    /// Where the child's stderr goes.
    pub fn stderr(&mut self, s: Stdio) -> &mut Tool {
        self.cmd.stderr(s);
        self
    }

    /// Connects the program to `info`: `--no-password -d <connection string
    /// without password>`, the password (if any) in an in-memory file, a
    /// connect timeout (dbsnap's default unless one is set), and
    /// `application_name = "dbsnap <tag>"` unless one is set.
    pub fn connect(&mut self, info: &ConnInfo, tag: &str) -> Result<&mut Tool, PgError> {
        let mut info = info.clone();
        info.application_name
            .get_or_insert_with(|| format!("dbsnap {tag}"));
        info.connect_timeout.get_or_insert(DEFAULT_CONNECT_TIMEOUT);
        if let Some(pw) = &info.password {
            let fd = password_file(pw)?;
            self.cmd
                .fd_mappings(vec![FdMapping {
                    parent_fd: fd,
                    child_fd: PASSFILE_FD,
                }])
                .map_err(|e| PgError::new(PgErrorKind::Io, format!("passing the password: {e}")))?;
            self.cmd.env("PGPASSFILE", format!("/dev/fd/{PASSFILE_FD}"));
        }
        self.cmd
            .arg("--no-password")
            .arg("-d")
            .arg(info.to_libpq_string_without_password());
        Ok(self)
    }

    /// Starts the program in the watchdog's process group.
    pub fn spawn(&mut self) -> Result<ToolChild, PgError> {
        if let Some(group) = watchdog_group()? {
            self.cmd.process_group(group as i32);
        }
        let child = self.cmd.spawn().map_err(|e| {
            PgError::new(
                PgErrorKind::Tooling,
                format!(
                    "could not run {}: {e}",
                    self.cmd.get_program().to_string_lossy()
                ),
            )
        })?;
        let pid = child.id() as i32;
        if let Ok(mut running) = RUNNING.lock() {
            running.insert(pid, self.name.clone());
        }
        tracing::debug!(program = %self.name, pid, "started");
        Ok(ToolChild {
            child,
            pid,
            reaped: false,
        })
    }
}

/// A command of the user's (`--stop-cmd`, `--start-cmd`) run by `sh -c`:
/// no standard input, no PGPASSWORD, and the user's `umask` (dbsnap's own
/// files are private; the user's files are theirs).
pub fn user_command(script: &str, umask: Option<u32>) -> Command {
    let mut c = Command::new("sh");
    let script = match umask {
        Some(mask) => format!("umask {mask:03o}\n{script}"),
        None => script.to_string(),
    };
    c.arg("-c")
        .arg(script)
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null());
    c
}

/// An anonymous, sealed, 0600 in-memory file holding a pgpass line that
/// matches any server.
fn password_file(password: &str) -> Result<OwnedFd, PgError> {
    let io = |e: std::io::Error| {
        PgError::new(
            PgErrorKind::Io,
            format!("could not prepare the password for a child program: {e}"),
        )
    };
    let fd = rustix::fs::memfd_create(
        "dbsnap-pgpass",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| io(e.into()))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)).map_err(|e| io(e.into()))?;
    let mut file = File::from(fd);
    writeln!(file, "*:*:*:*:{}", pgpass_escape(password)).map_err(io)?;
    let fd = OwnedFd::from(file);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(|e| io(e.into()))?;
    Ok(fd)
}

/// A running client program; killed if dropped before it was waited for.
pub struct ToolChild {
    child: Child,
    pid: i32,
    reaped: bool,
}

impl ToolChild {
    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdin, if piped and not yet taken.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's stdout, if piped and not yet taken.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stderr, if piped and not yet taken.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Stops the child if it still runs: SIGINT (the PostgreSQL programs
    /// then cancel their queries, so their sessions release their locks),
    /// SIGKILL if it has not exited within a short grace period.
    pub fn kill(&mut self) {
        if self.reaped || !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = Pid::from_raw(self.pid) {
            let _ = rustix::process::kill_process(pid, Signal::INT);
        }
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
    }

    /// Waits for the child to end.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait();
        self.reaped = true;
        forget(self.pid);
        status
    }
}

impl Drop for ToolChild {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.child.wait();
            forget(self.pid);
        }
    }
}

fn forget(pid: i32) {
    if let Ok(mut running) = RUNNING.lock() {
        running.remove(&pid);
    }
}

/// Stops every running child and returns their names; for Ctrl-C and
/// SIGTERM. SIGINT first (pg_dump, pg_restore and psql then cancel their
/// queries, so their sessions release their locks), SIGKILL for those
/// still running after `grace`.
pub async fn stop_all(grace: std::time::Duration) -> Vec<String> {
    let names: Vec<String> = running().into_values().collect();
    signal_all(Signal::INT);
    let deadline = std::time::Instant::now() + grace;
    while !running().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    signal_all(Signal::KILL);
    names
}

fn running() -> BTreeMap<i32, String> {
    RUNNING.lock().map(|r| r.clone()).unwrap_or_default()
}

fn signal_all(signal: Signal) {
    for (pid, name) in running() {
        if let Some(pid) = Pid::from_raw(pid) {
            tracing::info!(program = %name, pid = pid.as_raw_nonzero().get(), ?signal, "stopping");
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_password_reaches_the_child_by_descriptor_only() {
        let info = ConnInfo::resolve_with(
            "postgres://app:s3cr%3At@db.example:5433/app",
            &BTreeMap::<String, String>::new(),
        )
        .unwrap();
        // sh stands in for pg_dump: it reports what libpq would find.
        let mut tool = Tool::new(Path::new("sh"));
        tool.args([
            "-c",
            "printf '%s\\n' \"$PGPASSFILE\"; stat -L -c '%a %F' \"$PGPASSFILE\"; cat \"$PGPASSFILE\"; \
             printf 'LC_MESSAGES=%s\\n' \"$LC_MESSAGES\"; printf 'args %s\\n' \"$*\"",
            "sh",
        ])
        .connect(&info, "test")
        .unwrap()
        .stdout(Stdio::piped());
        let mut child = tool.spawn().unwrap();
        let mut out = String::new();
        child
            .take_stdout()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(child.wait().unwrap().success());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "/dev/fd/3");
        assert!(lines[1].starts_with("600 regular"), "{out}");
        assert_eq!(lines[2], "*:*:*:*:s3cr\\:t");
        assert_eq!(lines[3], "LC_MESSAGES=C");
        assert!(lines[4].contains("--no-password -d"), "{out}");
        assert!(!lines[4].contains("s3cr"), "the password is in argv: {out}");
    }

    #[test]
    fn a_child_dropped_while_running_is_stopped() {
        let mut tool = Tool::new(Path::new("sleep"));
        tool.arg("30");
        let child = tool.spawn().unwrap();
        let pid = child.id() as i32;
        assert!(running().contains_key(&pid));
        let started = std::time::Instant::now();
        drop(child);
        assert!(started.elapsed() < STOP_GRACE + std::time::Duration::from_secs(1));
        assert!(!running().contains_key(&pid));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
