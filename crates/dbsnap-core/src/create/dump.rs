//! The dump step behind [`DumpEngine`]: `pg_dump -Fc --snapshot` run
//! through dbsnap-pg's process runner, or the native engine
//! ([`super::native`]) that writes the same archive format.

use std::io::Read;
use std::process::{ChildStdout, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbsnap_pg::process::{Tool, ToolChild};
use dbsnap_pg::tools::{self, Program};
use dbsnap_pg::{ConnInfo, Resolver};

use crate::error::CoreError;

/// Produces one database's pg_dump custom archive as a byte stream.
pub trait DumpEngine: Send + Sync {
    /// Starts dumping `info` at exported snapshot `snapshot`; returns a
    /// running job whose output is read until end of stream.
    fn start(&self, job: &DumpJob) -> Result<RunningDump, CoreError>;
}

/// Inputs of one database dump.
#[derive(Debug, Clone)]
pub struct DumpJob {
    /// Connection settings.
    pub info: ConnInfo,
    /// Printable name.
    pub display: String,
    /// Exported snapshot id.
    pub snapshot: String,
    /// pg_dump to run.
    pub program: Program,
    /// How the database is reached.
    pub route: Arc<dyn Resolver>,
    /// How long pg_dump waits for a table lock before giving up
    /// (`--lock-wait-timeout`): a dump never hangs behind another session.
    pub lock_wait: Duration,
    /// `--compress` value.
    pub compress: Option<String>,
    /// Connections copying tables at once (the native engine).
    pub jobs: usize,
}

/// Stops and waits for a running dump, whatever produces it.
pub trait DumpControl: Send + Sync {
    /// Stops it (idempotent; the output then ends or fails).
    fn kill(&self);
    /// Waits for the end; the dump's own error if it failed.
    fn wait(&self, display_name: &str) -> Result<(), CoreError>;
    /// Once it ended: where the pieces of its split tables lie in the member.
    fn index(&self) -> Vec<dbsnap_archive::snapshot::TableIndex> {
        Vec::new()
    }
    /// How far its table data is, when the engine knows.
    fn work(&self) -> Option<super::Work> {
        None
    }
}

/// A dump in progress: a byte stream plus a way to wait for and stop it.
pub struct RunningDump {
    /// The archive bytes.
    pub output: Box<dyn Read + Send>,
    pub(super) control: Arc<dyn DumpControl>,
}

/// The pg_dump engine: runs `pg_dump -Fc --snapshot`.
pub struct PgDumpEngine;

impl DumpEngine for PgDumpEngine {
    fn start(&self, job: &DumpJob) -> Result<RunningDump, CoreError> {
        let mut tool = Tool::new(&job.program.path);
        tool.arg("--format=custom");
        if let Some(c) = &job.compress {
            tool.arg(format!("--compress={c}"));
        }
        let (output, control) = spawn_pg_dump(job, tool)?;
        Ok(RunningDump {
            output: Box::new(output),
            control,
        })
    }
}

/// Starts `tool` (pg_dump with its format arguments) on `job`'s snapshot and
/// database: its stdout, and its control (stderr is collected for errors).
pub(super) fn spawn_pg_dump(
    job: &DumpJob,
    mut tool: Tool,
) -> Result<(ChildStdout, Arc<ToolControl>), CoreError> {
    tool.arg(format!("--snapshot={}", job.snapshot))
        .arg(format!(
            "--lock-wait-timeout={}ms",
            job.lock_wait.as_millis()
        ));
    job.route
        .prepare_tool(&mut tool, &job.info, &job.info.dbname)?;
    tool.stdout(Stdio::piped()).stderr(Stdio::piped());
    tracing::info!(database = %job.display, pg_dump = %job.program.path.display(), "starting pg_dump");
    let mut child = tool.spawn()?;
    let (Some(stdout), Some(mut stderr)) = (child.take_stdout(), child.take_stderr()) else {
        return Err(CoreError::Internal("pg_dump without pipes".into()));
    };
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Ok((
        stdout,
        Arc::new(ToolControl {
            child: Mutex::new(child),
            stderr: Mutex::new(Some(stderr)),
        }),
    ))
}

/// A running pg_dump process.
pub(super) struct ToolControl {
    child: Mutex<ToolChild>,
    stderr: Mutex<Option<std::thread::JoinHandle<String>>>,
}

impl DumpControl for ToolControl {
    fn kill(&self) {
        if let Ok(mut c) = self.child.lock() {
            c.kill();
        }
    }

    fn wait(&self, display_name: &str) -> Result<(), CoreError> {
        let status = self
            .child
            .lock()
            .map_err(|_| CoreError::Internal("poisoned".into()))?
            .wait();
        let stderr = self
            .stderr
            .lock()
            .ok()
            .and_then(|mut h| h.take())
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        for line in stderr.lines() {
            tracing::info!(database = %display_name, "pg_dump: {line}");
        }
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(_) => Err(tools::classify_stderr("pg_dump", &stderr, display_name).into()),
            Err(e) => Err(CoreError::Internal(format!("waiting for pg_dump: {e}"))),
        }
    }
}

impl RunningDump {
    pub(super) fn kill(&self) {
        self.control.kill();
    }

    /// Waits for the end. The output is closed first: a producer still
    /// writing into it (after a failure on the reading side) then stops.
    pub(super) fn wait(self, display_name: &str) -> Result<(), CoreError> {
        let RunningDump { output, control } = self;
        drop(output);
        control.wait(display_name)
    }
}
