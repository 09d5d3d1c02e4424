//! Progress bars for long operations: shown on a terminal, silent otherwise
//! (and under `--json`).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;

fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

fn shown(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A byte-count progress bar, hidden when stderr is not a terminal.
pub fn bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if !shown(quiet) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(style());
    pb.set_message(what.to_string());
    pb
}

/// Bars for an operation with parts (a host backup's machines): one for
/// the whole on top, one per part below it, added as the parts appear.
/// Hidden when stderr is not a terminal. Usable from several threads.
pub struct Bars {
    multi: MultiProgress,
    whole: ProgressBar,
    parts: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Bars {
    pub fn new(what: &str, quiet: bool) -> Bars {
        let multi = MultiProgress::new();
        if !shown(quiet) {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        let whole = multi.add(ProgressBar::new(0));
        whole.set_style(style());
        whole.set_message(what.to_string());
        Bars {
            multi,
            whole,
            parts: Mutex::new(BTreeMap::new()),
        }
    }

    /// The whole is at `done` of `total`.
    pub fn whole(&self, done: u64, total: u64) {
        self.whole.set_length(total);
        self.whole.set_position(done);
    }

    /// Part `key` is at `done` of `total`, working on `message`.
    pub fn part(&self, key: &str, message: &str, done: u64, total: u64) {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let pb = parts.entry(key.to_string()).or_insert_with(|| {
            let pb = self.multi.add(ProgressBar::new(total));
            pb.set_style(style());
            pb
        });
        pb.set_message(message.to_string());
        pb.set_length(total);
        pb.set_position(done);
    }

    /// Removes every bar.
    pub fn finish(&self) {
        for pb in self
            .parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            pb.finish_and_clear();
        }
        self.whole.finish_and_clear();
        let _ = self.multi.clear();
    }
}
