//! Run progress on stderr: done / failed / unscored, what is in flight, and an ETA. On a
//! terminal an indicatif bar; otherwise (stderr piped to a file or a CI log) a plain line every
//! `THERAPYGYM_PROGRESS_S` seconds (default 10), so a slow run always shows it is alive.
#![allow(clippy::print_stderr)]

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use therapygym_eval::{Progress, SessionOutcome};

/// Counters shared by the bar and the plain-line ticker.
#[derive(Default)]
struct Counts {
    total: AtomicU64,
    /// Finished before this process started (a resume).
    earlier: AtomicU64,
    /// Finished by this process (judged or failed).
    done: AtomicU64,
    failed: AtomicU64,
    unscored: AtomicU64,
    judged: AtomicU64,
    simulating: AtomicU64,
    judging: AtomicU64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn dec(a: &AtomicU64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

impl Counts {
    fn message(&self) -> String {
        format!(
            "judged {} · failed {} · unscored {} · in flight: {} simulating, {} judging",
            get(&self.judged),
            get(&self.failed),
            get(&self.unscored),
            get(&self.simulating),
            get(&self.judging)
        )
    }

    /// One plain progress line, with an ETA from this process's pace.
    fn line(&self, what: &str, started: Instant) -> String {
        let elapsed = started.elapsed();
        let (total, earlier, done) = (get(&self.total), get(&self.earlier), get(&self.done));
        let left = total.saturating_sub(earlier + done);
        let eta = if done == 0 {
            "ETA after the first session".to_string()
        } else {
            let per = elapsed.as_secs_f64() / done as f64;
            format!("ETA {}", clock(Duration::from_secs_f64(per * left as f64)))
        };
        format!(
            "{what}: {}/{total} · {} · {} elapsed · {eta}",
            earlier + done,
            self.message(),
            clock(elapsed)
        )
    }
}

pub struct Bar {
    what: String,
    /// `Some` on a terminal.
    bar: Option<ProgressBar>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Seconds between plain progress lines.
fn interval() -> Duration {
    let s = std::env::var("THERAPYGYM_PROGRESS_S")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(10.0);
    Duration::from_secs_f64(s.min(86_400.0))
}

impl Bar {
    pub fn new(what: &str) -> Self {
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(&format!(
                "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{msg}} (ETA {{eta}})"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(500));
            return Self {
                what: what.into(),
                bar: Some(bar),
                counts,
                stop,
                ticker: Mutex::new(None),
            };
        }
        let (c, s, w, every) = (
            Arc::clone(&counts),
            Arc::clone(&stop),
            what.to_string(),
            interval(),
        );
        let ticker = std::thread::spawn(move || {
            let started = Instant::now();
            let mut next = started + every;
            while !s.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(200).min(every));
                if Instant::now() >= next && !s.load(Ordering::Relaxed) {
                    eprintln!("{}", c.line(&w, started));
                    next += every;
                }
            }
        });
        Self {
            what: what.into(),
            bar: None,
            counts,
            stop,
            ticker: Mutex::new(Some(ticker)),
        }
    }

    fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn refresh(&self) {
        if let Some(b) = &self.bar {
            b.set_length(get(&self.counts.total));
            b.set_position(get(&self.counts.earlier) + get(&self.counts.done));
            b.set_message(self.counts.message());
        }
    }

    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Ok(mut t) = self.ticker.lock()
            && let Some(t) = t.take()
        {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Progress for Bar {
    fn started(&self, run_dir: &Path, resumed: bool) {
        let verb = if resumed { "resuming" } else { "run directory" };
        self.println(&format!("{verb}: {}", run_dir.display()));
    }

    fn planned(&self, total: u64, done: u64) {
        self.counts.total.store(total, Ordering::Relaxed);
        self.counts.earlier.store(done, Ordering::Relaxed);
        if done > 0 {
            self.println(&format!("{done} of {total} {} already finished", self.what));
        }
        self.refresh();
    }

    fn session_started(&self, _id: &str) {
        self.counts.simulating.fetch_add(1, Ordering::Relaxed);
        self.refresh();
    }

    fn session_finished(&self, id: &str, outcome: SessionOutcome) {
        dec(&self.counts.simulating);
        if let SessionOutcome::Failed(e) = outcome {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            self.counts.done.fetch_add(1, Ordering::Relaxed);
            self.println(&format!("session {id} failed: {e}"));
        }
        self.refresh();
    }

    fn judging(&self, _id: &str) {
        self.counts.judging.fetch_add(1, Ordering::Relaxed);
        self.refresh();
    }

    fn judged(&self, _id: &str, scored: bool) {
        dec(&self.counts.judging);
        self.counts.judged.fetch_add(1, Ordering::Relaxed);
        self.counts.done.fetch_add(1, Ordering::Relaxed);
        if !scored {
            self.counts.unscored.fetch_add(1, Ordering::Relaxed);
        }
        self.refresh();
    }
}
