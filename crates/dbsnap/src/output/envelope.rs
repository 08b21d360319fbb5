//! The one `--json` envelope and errors: how every command's document is
//! shaped (docs/SCRIPTING.md), and how a failure is printed.

use super::*;

/// The one shape of every command's `--json` document (docs/SCRIPTING.md):
/// `ok`; `dry_run` for commands that have it; the warnings the run logged;
/// the command's `result`; on failure `error` (and the run's `log`).
#[derive(Debug, serde::Serialize)]
pub struct Envelope {
    /// Whether the command did what it was asked (its exit code is 0).
    pub ok: bool,
    /// For the commands that take `--dry-run`, always: true when it was
    /// given (nothing was changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Warnings the run logged, in order.
    pub warnings: Vec<String>,
    /// What the command produced (also on some failures: a partial copy,
    /// a verification report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDoc>,
    /// The run's log file, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<std::path::PathBuf>,
}

/// A failure in `--json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorDoc {
    /// The error's kind (the exit code's name, e.g. `usage`, `verify`).
    pub kind: String,
    /// The exit code.
    pub exit_code: u8,
    /// What went wrong.
    pub message: String,
    /// What to do about it, when dbsnap knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ErrorDoc {
    /// `e` as a JSON error: its message and hint apart.
    pub fn of(e: &CoreError) -> ErrorDoc {
        let mut doc = Self::from_text(e.kind_name(), e.exit_code(), &e.to_string());
        if doc.hint.is_none() {
            doc.hint = crate::hints::for_error(e);
        }
        doc
    }

    /// An error from its words (`message\nhint: hint`).
    pub fn from_text(kind: &str, exit_code: u8, text: &str) -> ErrorDoc {
        let (message, hint) = match text.split_once("\nhint: ") {
            Some((m, h)) => (m.to_string(), Some(h.to_string())),
            None => (text.to_string(), None),
        };
        ErrorDoc {
            kind: kind.to_string(),
            exit_code,
            message,
            hint,
        }
    }
}

/// The run's command's `--dry-run`, when it takes one ([`command_dry_run`]).
static DRY_RUN: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();

/// Says, once, whether the run's command takes `--dry-run` and was given
/// it, so that every document it prints, success or failure, says so.
pub fn command_dry_run(dry_run: Option<bool>) {
    let _ = DRY_RUN.set(dry_run);
}

impl Envelope {
    /// A run that did what it was asked, and what it produced. A result
    /// that cannot be serialized is an internal error, never an empty
    /// success.
    pub fn ok(result: &impl serde::Serialize) -> Envelope {
        match serde_json::to_value(result) {
            Ok(v) => Envelope {
                result: Some(v),
                ..Envelope::done()
            },
            Err(e) => Envelope::failed(ErrorDoc::from_text(
                "internal",
                dbsnap_core::error::exit::INTERNAL,
                &format!("internal: the result cannot be written as JSON: {e}"),
            )),
        }
    }

    /// A run that did what it was asked and has nothing to show.
    pub fn done() -> Envelope {
        Envelope {
            ok: true,
            dry_run: None,
            warnings: Vec::new(),
            result: None,
            error: None,
            log: None,
        }
    }

    /// A run that failed.
    pub fn failed(error: ErrorDoc) -> Envelope {
        Envelope::done().error(Some(error))
    }

    /// With a failure beside the result (a copy where one snapshot
    /// failed, a verification that found damage): `ok` is false.
    pub fn error(mut self, error: Option<ErrorDoc>) -> Envelope {
        if let Some(e) = error {
            self.ok = false;
            self.error = Some(e);
        }
        self
    }

    /// Whether the run was a dry run (nothing was changed).
    pub fn dry_run(mut self, dry_run: bool) -> Envelope {
        self.dry_run = Some(dry_run);
        self
    }

    /// Warnings the result carries (said before those only logged).
    pub fn warnings(mut self, warnings: &[String]) -> Envelope {
        self.warnings.extend(warnings.iter().cloned());
        self
    }

    /// The run's log file.
    pub fn log(mut self, log: Option<&Path>) -> Envelope {
        self.log = log.map(Path::to_path_buf);
        self
    }

    /// Takes a field out of the result that the envelope says instead (a
    /// report's `ok`, `dry_run` or `warnings`, a verdict's `error` text).
    pub fn without(mut self, fields: &[&str]) -> Envelope {
        if let Some(o) = self.result.as_mut().and_then(|r| r.as_object_mut()) {
            for f in fields {
                o.remove(*f);
            }
        }
        self
    }

    /// Adds a field to the result, beside what the command produced.
    pub fn field(mut self, key: &str, value: serde_json::Value) -> Envelope {
        if let Some(o) = self.result.as_mut().and_then(|r| r.as_object_mut()) {
            o.insert(key.to_string(), value);
        }
        self
    }

    /// Prints the document on standard output, with every warning the run
    /// logged (once each) after the result's own.
    pub fn print(mut self) {
        if self.dry_run.is_none() {
            self.dry_run = DRY_RUN.get().copied().flatten();
        }
        for w in crate::logging::warnings() {
            if !self.warnings.iter().any(|known| w.contains(known.as_str())) {
                self.warnings.push(w);
            }
        }
        match serde_json::to_string_pretty(&self) {
            Ok(text) => println!("{text}"),
            Err(e) => println!(
                "{{\"ok\": false, \"warnings\": [], \"error\": {{\"kind\": \"internal\", \"exit_code\": {}, \"message\": \"internal: the document cannot be written as JSON: {}\"}}}}",
                dbsnap_core::error::exit::INTERNAL,
                e.to_string().replace('"', "'")
            ),
        }
    }
}

impl ErrorDoc {
    /// An error of `kind` (the exit code's name) with its code and message.
    pub fn new(kind: &str, exit_code: u8, message: impl Into<String>) -> ErrorDoc {
        ErrorDoc {
            kind: kind.to_string(),
            exit_code,
            message: message.into(),
            hint: None,
        }
    }
}

/// The error of a run whose work is done but whose start command failed
/// (exit 11): said in `--json` beside the result.
pub(super) fn hook_failed(done: &str, failure: &str) -> ErrorDoc {
    ErrorDoc::from_text(
        "hook",
        dbsnap_core::error::exit::HOOK,
        &format!("{done}, but the application was not started again: {failure}"),
    )
}

/// Prints an error with its hint.
pub fn print_error(e: &CoreError, json: bool, log: Option<&Path>) {
    eprintln!("error: {e}");
    if let Some(h) = crate::hints::for_error(e) {
        eprintln!("hint: {h}");
    }
    if let Some(l) = log {
        eprintln!("log: {}", l.display());
    }
    if json {
        Envelope::failed(ErrorDoc::of(e)).log(log).print();
    }
}
