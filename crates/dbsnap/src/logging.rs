//! A log file per run in `$DBSNAP_HOME/logs/`, plus warnings (more with -v)
//! on standard error. Nothing logged ever contains a password: connection
//! settings are only ever logged through their redacted display form.

use std::fs::File;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::filter::{self, LevelFilter};
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::cli::Cli;

/// The current run's log file.
pub struct RunLog {
    /// Path of the log file.
    pub path: PathBuf,
}

/// Whether to colour a stream: only a terminal, and never when `NO_COLOR`
/// is set to something (<https://no-color.org>).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Sets up logging; returns where the log file is.
pub fn init(cli: &Cli) -> std::io::Result<RunLog> {
    let dir = dbsnap_core::config::log_dir();
    std::fs::create_dir_all(&dir)?;
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let path = dir.join(format!(
        "dbsnap-{stamp}-{}-{}.log",
        cli.command_name(),
        std::process::id()
    ));
    let file = File::create(&path)?;
    let stderr_level = match cli.verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    let file_layer = fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(Mutex::new(file))
        .with_filter(LevelFilter::INFO);
    let stderr_layer = fmt::layer()
        .with_target(false)
        .without_time()
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .with_writer(std::io::stderr)
        .with_filter(stderr_level)
        .with_filter(filter::filter_fn(|m| m.target() != dbsnap_core::REPORTED));
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .init();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        command = cli.command_name(),
        "dbsnap started"
    );
    Ok(RunLog { path })
}
