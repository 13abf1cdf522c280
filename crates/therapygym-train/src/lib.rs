//! The training loop of TherapyGym (`therapygym train`, `docs/train.md`): the candle policy of
//! `therapygym-grpo` plays the therapist in the same sessions `eval` runs, the frozen judge
//! scores them, and GRPO updates the policy on its own tokens only.

pub mod backend;
pub mod config;
pub mod error;
pub mod run;
pub mod sequence;

pub use backend::{PolicyBackend, SampledIds};
pub use config::{TrainConfig, export_type, parse_preset, policy_path};
pub use error::TrainError;
pub use run::{
    EXPORT_FILE, METRICS_FILE, Quiet, RewardStats, StepRecord, TrainObserver, TrainOutcome,
    TrainStart, latest_checkpoint, run_train,
};
