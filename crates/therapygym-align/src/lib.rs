//! The alignment loop of TherapyGym (`therapygym train`, paper.md §8): the candle policy of
//! `therapygym-train` plays the therapist in the same sessions `eval` runs, the frozen judge
//! scores them, and GRPO updates the policy on its own tokens only.

pub mod backend;
pub mod config;
pub mod error;
pub mod run;
pub mod sequence;

pub use backend::{PolicyBackend, SampledIds};
pub use config::{TrainConfig, export_type, parse_preset, policy_path};
pub use error::AlignError;
pub use run::{
    EXPORT_FILE, METRICS_FILE, Quiet, RewardStats, StepRecord, TrainObserver, TrainOutcome,
    TrainStart, latest_checkpoint, run_train,
};
