//! Hook commands (stop/start the application) and termination signals.
//!
//! Hooks run through `sh -c` with no standard input; their output goes to
//! the log. A hook's failure names the hook, its exit status and the last
//! lines it printed.

use std::process::Stdio;

use crate::error::CoreError;

/// Runs hook `name` (`stop` or `start`).
pub async fn run(name: &str, cmd: &str) -> Result<(), CoreError> {
    tracing::info!(hook = name, command = cmd, "running {name} command");
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
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
