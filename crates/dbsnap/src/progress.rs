//! Progress on a terminal: one line per database with bytes moved, rate,
//! elapsed time, and, when the engine knows them, the share of the table
//! data done, rows and an estimate of the time left. Hidden when standard
//! error is not a terminal, with `--json`, or with `--no-progress`. The log
//! gets a progress line per database every 10 seconds whatever the display.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbsnap_core::create::{Progress, Work};
use dbsnap_core::CoreError;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The terminal progress display.
pub struct Ui {
    multi: Option<MultiProgress>,
    phase: Mutex<Option<ProgressBar>>,
    bars: Mutex<Vec<Option<ProgressBar>>>,
    /// Per database: name, when it started, when progress was last logged.
    clocks: Mutex<Vec<Option<Clock>>>,
}

struct Clock {
    name: String,
    started: Instant,
    logged: Instant,
    /// Rows moved, once the engine said.
    rows: Option<u64>,
}

/// How often a database's progress goes to the log.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// `work` in words: `43% of 1.2 GiB, 1234567 rows, about 12s left`
/// (without the share and the estimate when the total is unknown).
fn describe(work: Work, elapsed: Duration) -> String {
    let rows = format!("{} rows", work.rows);
    if work.expected == 0 {
        return rows;
    }
    let share = (work.done as f64 / work.expected as f64).min(1.0);
    let mut text = format!(
        "{:.0}% of {}, {rows}",
        share * 100.0,
        indicatif::BinaryBytes(work.expected)
    );
    if share > 0.01 && share < 1.0 {
        let left = elapsed.as_secs_f64() * (1.0 - share) / share;
        text.push_str(&format!(
            ", about {} left",
            indicatif::HumanDuration(Duration::from_secs_f64(left.ceil()))
        ));
    }
    text
}

impl Ui {
    /// A display, active only if `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Arc<Ui> {
        let multi = (enabled && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Arc::new(Ui {
            multi,
            phase: Mutex::new(None),
            bars: Mutex::new(Vec::new()),
            clocks: Mutex::new(Vec::new()),
        })
    }

    /// Clears the display.
    pub fn finish(&self) {
        if let Ok(mut p) = self.phase.lock() {
            if let Some(p) = p.take() {
                p.finish_and_clear();
            }
        }
        if let Ok(bars) = self.bars.lock() {
            for b in bars.iter().flatten() {
                b.finish();
            }
        }
    }

    /// Runs `f` (a prompt) with the display hidden.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }

    fn bar(&self, index: usize) -> Option<ProgressBar> {
        self.bars.lock().ok()?.get(index).cloned().flatten()
    }
}

impl Progress for Ui {
    fn phase(&self, message: &str) {
        tracing::info!("{message}");
        let Some(multi) = &self.multi else { return };
        let mut phase = self.phase.lock().unwrap();
        let bar = phase.get_or_insert_with(|| {
            let b = multi.add(ProgressBar::new_spinner());
            b.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        bar.set_message(message.to_string());
    }

    fn transfer_started(&self, index: usize, name: &str) {
        if let Ok(mut clocks) = self.clocks.lock() {
            if clocks.len() <= index {
                clocks.resize_with(index + 1, || None);
            }
            clocks[index] = Some(Clock {
                name: name.to_string(),
                started: Instant::now(),
                logged: Instant::now(),
                rows: None,
            });
        }
        let Some(multi) = &self.multi else { return };
        let b = multi.add(ProgressBar::new_spinner());
        b.set_style(
            ProgressStyle::with_template(
                "  {prefix:<24} {bytes:>10} {binary_bytes_per_sec:>12} {elapsed:>4} {msg}",
            )
            .unwrap(),
        );
        b.set_prefix(name.to_string());
        let mut bars = self.bars.lock().unwrap();
        if bars.len() <= index {
            bars.resize(index + 1, None);
        }
        bars[index] = Some(b);
    }

    fn transfer_bytes(&self, index: usize, bytes: u64) {
        if let Some(b) = self.bar(index) {
            b.set_position(bytes);
        }
    }

    fn transfer_work(&self, index: usize, work: Work) {
        let Ok(mut clocks) = self.clocks.lock() else {
            return;
        };
        let Some(Some(clock)) = clocks.get_mut(index) else {
            return;
        };
        clock.rows = Some(work.rows);
        let text = describe(work, clock.started.elapsed());
        if clock.logged.elapsed() >= LOG_EVERY {
            clock.logged = Instant::now();
            tracing::info!("{}: {text}", clock.name);
        }
        if let Some(b) = self.bar(index) {
            b.set_message(text);
        }
    }

    fn transfer_finished(&self, index: usize, bytes: u64) {
        let rows = self
            .clocks
            .lock()
            .ok()
            .and_then(|c| c.get(index).and_then(|c| c.as_ref().and_then(|c| c.rows)));
        let done = match rows {
            Some(rows) => format!("done, {rows} rows"),
            None => "done".to_string(),
        };
        if let Some(b) = self.bar(index) {
            b.set_position(bytes);
            b.finish_with_message(done);
        }
    }
}

/// Runs `work` on a blocking thread with the progress display (when
/// `show`); Ctrl-C / SIGTERM sets the flag `work` is given and waits for it
/// to stop (what is in flight is abandoned, what is done is kept).
pub async fn cancellable<T: Send + 'static>(
    show: bool,
    work: impl FnOnce(Arc<dyn Progress>, Arc<AtomicBool>) -> Result<T, CoreError> + Send + 'static,
) -> Result<T, CoreError> {
    let ui = Ui::new(show);
    let cancel = Arc::new(AtomicBool::new(false));
    let task = {
        let (cancel, sink): (_, Arc<dyn Progress>) = (cancel.clone(), ui.clone());
        tokio::task::spawn_blocking(move || work(sink, cancel))
    };
    tokio::pin!(task);
    let r = tokio::select! {
        r = &mut task => r,
        s = dbsnap_core::hooks::termination_signal() => {
            cancel.store(true, Ordering::Relaxed);
            tracing::warn!("{s}: stopping; what is done is kept");
            task.await
        }
    };
    ui.finish();
    r.map_err(|e| CoreError::Internal(format!("task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_in_words() {
        let w = |done, expected, rows| Work {
            done,
            expected,
            rows,
        };
        let secs = Duration::from_secs;
        assert_eq!(describe(w(5, 0, 12), secs(3)), "12 rows");
        assert_eq!(
            describe(w(1 << 29, 1 << 30, 7), secs(10)),
            "50% of 1.00 GiB, 7 rows, about 10 seconds left"
        );
        // No estimate before 1% or once everything is done.
        assert_eq!(
            describe(w(0, 1 << 30, 0), secs(1)),
            "0% of 1.00 GiB, 0 rows"
        );
        assert_eq!(
            describe(w(1 << 30, 1 << 30, 9), secs(1)),
            "100% of 1.00 GiB, 9 rows"
        );
    }
}
