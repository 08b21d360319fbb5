//! Hook commands (stop/start the application) and termination signals.
//!
//! Hooks run through `sh -c` with no standard input; their output goes to
//! the log. A hook's failure names the hook, its exit status and the last
//! lines it printed.

use crate::error::CoreError;

/// `sh -c cmd` as the user would run it (see [`dbsnap_pg::process::user_command`]).
fn shell(cmd: &str) -> std::process::Command {
    dbsnap_pg::process::user_command(cmd, dbsnap_storage::user_umask())
}

/// A word for a POSIX shell: as is when plain, else single-quoted (for
/// commands dbsnap writes itself, like `--scale`'s).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Runs hook `name` (`stop` or `start`).
pub async fn run(name: &str, cmd: &str) -> Result<(), CoreError> {
    tracing::info!(hook = name, command = cmd, "running {name} command");
    let out = tokio::process::Command::from(shell(cmd))
        .output()
        .await
        .map_err(|e| CoreError::Hook(format!("could not run the {name} command `{cmd}`: {e}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines() {
        tracing::info!(hook = name, "{line}");
    }
    if out.status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(CoreError::Hook(format!(
        "the {name} command `{cmd}` failed ({}){}\nhint: fix the command, then check the application's state by hand",
        out.status,
        if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" / ")) }
    )))
}

/// Resolves when the process receives SIGINT or SIGTERM; returns its name.
pub async fn termination_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Runs the start command when dropped unless disarmed: the application is
/// brought back even if the work between stop and start is cancelled (the
/// future dropped on a signal) or panics.
pub struct StartGuard {
    cmd: Option<String>,
}

impl StartGuard {
    /// Arms the guard for `cmd` (none: nothing to run).
    pub fn new(cmd: Option<&str>) -> Self {
        StartGuard {
            cmd: cmd.map(str::to_string),
        }
    }

    /// Takes the command out; the caller runs it.
    pub fn disarm(&mut self) -> Option<String> {
        self.cmd.take()
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(cmd) = self.cmd.take() {
            tracing::warn!(command = %cmd, "interrupted while the application was stopped; running the start command");
            match shell(&cmd).status() {
                Ok(s) if s.success() => tracing::info!("start command succeeded"),
                Ok(s) => tracing::error!(
                    "start command `{cmd}` failed ({s}); start the application by hand"
                ),
                Err(e) => tracing::error!(
                    "could not run start command `{cmd}`: {e}; start the application by hand"
                ),
            }
        }
    }
}

/// After Ctrl-C or SIGTERM: cancels the query in flight on every connection
/// dbsnap opened and stops every child program (which cancel theirs), so
/// that no session holds a lock and nothing runs on once dbsnap exits.
pub async fn stop_everything() {
    let (connections, programs) = tokio::join!(
        dbsnap_pg::connect::cancel_all(std::time::Duration::from_secs(5)),
        dbsnap_pg::process::stop_all(std::time::Duration::from_secs(5)),
    );
    tracing::info!(
        connections,
        programs = %programs.join(", "),
        "interrupted: queries cancelled, programs stopped"
    );
}
