//! What every TherapyGym run shares, whichever command drives it (`eval`, `serve`, `train`):
//!
//! - [`assets`]: the data a run uses (profiles, rubric, taxonomy, vocabulary, prompts, reward),
//!   loaded from files or the shipped defaults, with the hashes that go into its manifest;
//! - [`config`]: the run's settings (roles, sessions, judge, data) and each role's model options;
//! - [`roles`]: opening a role's model and describing the roles in a manifest;
//! - [`inputs`] and [`rundir`]: a run directory that holds its own inputs, created in one step;
//! - [`finish`]: a finished session as a store record, and judging it: verdict, reward,
//!   calibrated scores, committed to the run store.
//!
//! The commands build on this crate; it knows nothing of any one of them.

pub mod assets;
pub mod catalog;
pub mod config;
pub mod error;
pub mod finish;
pub mod inputs;
pub mod roles;
pub mod rundir;
pub mod shard;

pub use assets::{AssetSources, Assets};
pub use config::{
    LOCAL_JUDGE_MAX_TOKENS, LOCAL_JUDGE_RATIONALE_CHARS, RunConfig, judge_config_for, model_options,
};
pub use error::RunError;
pub use finish::{
    JudgeCtx, Judged, judge_and_store, judge_set, off_runtime, record_of, reward_error, session_id,
    session_reward, store_judgment, store_judgment_reward, store_session,
};
pub use inputs::{INPUTS_DIR, InputFiles};
pub use roles::{open_role, roles_json};
pub use rundir::{ClaimedDir, OutDir, Staged};
pub use shard::Shard;
