//! Progress events from a run; the CLI renders them (libraries never print).

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutcome {
    Completed,
    Failed(String),
}

pub trait Progress: Send + Sync {
    /// The run directory is ready (created, or reopened when `resumed`); nothing ran yet.
    fn started(&self, _run_dir: &std::path::Path, _resumed: bool) {}
    /// A session's simulation began (its slot was free).
    fn session_started(&self, _id: &str) {}
    /// A finished session went to the judge.
    fn judging(&self, _id: &str) {}
    /// `total` planned sessions, `done` of them already finished by an earlier attempt.
    fn planned(&self, _total: u64, _done: u64) {}
    fn session_finished(&self, _id: &str, _outcome: SessionOutcome) {}
    fn judged(&self, _id: &str, _scored: bool) {}
}

/// Progress that goes nowhere (tests, embedding).
pub struct Silent;

impl Progress for Silent {}
