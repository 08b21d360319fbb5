//! Progress on a terminal: one line per database with bytes written, rate
//! and elapsed time. Hidden when standard error is not a terminal, with
//! `--json`, or with `--no-progress`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use dbsnap_core::create::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The terminal progress display.
pub struct Ui {
    multi: Option<MultiProgress>,
    phase: Mutex<Option<ProgressBar>>,
    bars: Mutex<Vec<Option<ProgressBar>>>,
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

    fn transfer_finished(&self, index: usize, bytes: u64) {
        if let Some(b) = self.bar(index) {
            b.set_position(bytes);
            b.finish_with_message("done");
        }
    }
}
