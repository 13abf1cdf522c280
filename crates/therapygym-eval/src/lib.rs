//! Evaluation runs: `eval` (simulate, judge, summarise, resume), `judge` (re-score a stored run
//! under a new judge), `import-transcripts` (bring external dialogues in for judging).

pub mod assets;
pub mod config;
pub mod error;
pub mod import;
pub mod progress;
pub mod rescore;
pub mod run;
pub mod summary;

pub use assets::{AssetSources, Assets};
pub use config::{Concurrency, EvalConfig, model_options};
pub use error::EvalError;
pub use progress::{Progress, SessionOutcome, Silent};
pub use run::{
    JudgeCtx, Start, judge_and_store, open_role, plan, prepare, record_of, run_eval, session_id,
    session_reward, store_judgment,
};
pub use summary::{Summary, summarize};
