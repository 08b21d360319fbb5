//! A log file per run that may change something ([`Cli::writes`], the rule
//! docs/guide/create.md states under logs; or with `-v`/`--log-file`) in
//! `$DBSNAP_HOME/logs/`, plus warnings (more with -v) on standard error.
//! Nothing logged ever contains a password: connection settings are only
//! ever logged through their redacted display form.

use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
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

/// Where this run's log goes: `--log-file`, else a new file in
/// `$DBSNAP_HOME/logs/` for a command that writes (or with `-v`), else none.
fn log_path(cli: &Cli) -> Option<PathBuf> {
    if let Some(p) = &cli.global.log_file {
        return Some(p.clone());
    }
    if !cli.writes() && cli.global.verbose == 0 {
        return None;
    }
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    Some(dbsnap_core::config::log_dir().join(format!(
        "dbsnap-{stamp}-{}-{}.log",
        cli.command_name(),
        std::process::id()
    )))
}

/// Opens the log file (creating its directory).
fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    File::create(path)
}

/// Sets up logging: warnings (more with -v) on standard error, and a log
/// file when [`log_path`] names one. Returns the log file, if any; a log
/// file that cannot be created is a warning, not a failure.
pub fn init(cli: &Cli) -> Option<RunLog> {
    let log = log_path(cli).and_then(|path| match open_log(&path) {
        Ok(file) => Some((path, file)),
        Err(e) => {
            eprintln!("warning: no log file \"{}\": {e}", path.display());
            None
        }
    });
    let stderr_level = match cli.global.verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    // kube-rs logs each failure (and what it could not parse) before
    // returning the error dbsnap reports in words; its raw lines only with -vv.
    let verbose = cli.global.verbose;
    let quiet_kube =
        move |m: &tracing::Metadata<'_>| verbose >= 2 || !m.target().starts_with("kube_client");
    let (path, file_layer) = match log {
        Some((path, file)) => (
            Some(path),
            Some(
                fmt::layer()
                    .with_ansi(false)
                    .with_target(false)
                    .with_writer(Mutex::new(file))
                    .with_filter(LevelFilter::INFO)
                    .with_filter(filter::filter_fn(quiet_kube)),
            ),
        ),
        None => (None, None),
    };
    let ansi = colour(std::io::stderr().is_terminal());
    let stderr_layer = fmt::layer()
        .event_format(Said { ansi })
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_filter(stderr_level)
        .with_filter(filter::filter_fn(|m| m.target() != dbsnap_core::REPORTED))
        .with_filter(filter::filter_fn(quiet_kube));
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .with(
            Collect
                .with_filter(LevelFilter::WARN)
                .with_filter(filter::filter_fn(quiet_kube)),
        )
        .init();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        command = cli.command_name(),
        "dbsnap started"
    );
    path.map(|path| RunLog { path })
}

/// Standard error's lines: `warning: …`, `error: …` (`info: …`, `debug: …`
/// with -v), as the binary's own messages read; the level in colour on a
/// terminal.
struct Said {
    ansi: bool,
}

impl<S, N> fmt::FormatEvent<S, N> for Said
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &fmt::FmtContext<'_, S, N>,
        mut writer: fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let (level, colour) = match *event.metadata().level() {
            tracing::Level::ERROR => ("error", "31"),
            tracing::Level::WARN => ("warning", "33"),
            tracing::Level::INFO => ("info", "32"),
            tracing::Level::DEBUG => ("debug", "34"),
            tracing::Level::TRACE => ("trace", "35"),
        };
        if self.ansi {
            write!(writer, "\x1b[{colour}m{level}\x1b[0m: ")?;
        } else {
            write!(writer, "{level}: ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The warnings this run logged, for `--json`'s `warnings` (the binary's
/// own record; libraries only log).
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The warnings logged so far, in order.
pub fn warnings() -> Vec<String> {
    WARNINGS.lock().map(|w| w.clone()).unwrap_or_default()
}

/// Keeps every warning's message (and its fields) for [`warnings`].
struct Collect;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0.insert_str(0, &format!("{value:?}"));
                } else {
                    self.0.push_str(&format!(" {}={value:?}", field.name()));
                }
            }
        }
        if event.metadata().target() == dbsnap_core::REPORTED {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        if let Ok(mut w) = WARNINGS.lock() {
            w.push(text.0);
        }
    }
}

/// Prunes old logs and journals of finished restores, per the config's
/// `[retention]` (defaults when the config cannot be read: that error is
/// reported by the command itself). Only runs that write do this.
pub fn prune(cli: &Cli, log: Option<&RunLog>) {
    if !cli.writes() {
        return;
    }
    let retention = dbsnap_core::config::Config::load(cli.global.config.as_deref())
        .map(|c| c.retention)
        .unwrap_or_default();
    let current = log.map(|l| l.path.as_path());
    let logs =
        dbsnap_core::housekeeping::prune_logs(&dbsnap_core::config::log_dir(), current, &retention);
    let journals = dbsnap_core::housekeeping::prune_journals(&retention);
    if logs + journals > 0 {
        tracing::info!("pruned {logs} old log(s) and {journals} finished restore journal(s)");
    }
}
