//! Evaluation runs: `eval` (simulate, judge, summarise, resume), `judge` (re-score a stored run
//! under a new judge), `import-transcripts` (bring external dialogues in for judging). The
//! machinery they share with `serve` and `train` is `therapygym-run`.

pub mod config;
pub mod import;
pub mod import_csv;
pub mod merge;
pub mod progress;
pub mod rescore;
pub mod run;
pub mod summary;

pub use config::Concurrency;
pub use progress::{Progress, SessionOutcome, Silent};
pub use run::{
    EvalOutcome, Start, check_kind, plan, planned_sessions, prepare, run_eval, run_eval_until,
    stored_concurrency,
};
pub use summary::{Summary, summarize};
