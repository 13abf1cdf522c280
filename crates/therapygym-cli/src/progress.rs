//! Renders run progress with indicatif: done / failed / unscored and an ETA.
#![allow(clippy::print_stderr)]

use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use therapygym_eval::{Progress, SessionOutcome};

pub struct Bar {
    bar: ProgressBar,
    failed: AtomicU64,
    unscored: AtomicU64,
    judged: AtomicU64,
}

impl Bar {
    pub fn new(what: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{msg}} (ETA {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        Self {
            bar,
            failed: AtomicU64::new(0),
            unscored: AtomicU64::new(0),
            judged: AtomicU64::new(0),
        }
    }

    fn refresh(&self) {
        self.bar.set_message(format!(
            "judged {} · failed {} · unscored {}",
            self.judged.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.unscored.load(Ordering::Relaxed)
        ));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn planned(&self, total: u64, done: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
        if done > 0 {
            self.bar.println(format!(
                "resuming: {done} of {total} sessions already finished"
            ));
        }
        self.refresh();
    }

    fn session_finished(&self, id: &str, outcome: SessionOutcome) {
        if let SessionOutcome::Failed(e) = outcome {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.bar.println(format!("session {id} failed: {e}"));
            self.bar.inc(1);
        }
        self.refresh();
    }

    fn judged(&self, _id: &str, scored: bool) {
        self.judged.fetch_add(1, Ordering::Relaxed);
        if !scored {
            self.unscored.fetch_add(1, Ordering::Relaxed);
        }
        self.bar.inc(1);
        self.refresh();
    }
}
