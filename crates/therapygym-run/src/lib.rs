//! What every TherapyGym run shares, whichever command drives it (`eval`, `serve`, `train`):
//!
//! - [`assets`]: the data a run uses (profiles, rubric, taxonomy, vocabulary, prompts, reward),
//!   loaded from files or the shipped defaults, with the hashes that go into its manifest;
//! - [`config`]: the run's settings (roles, sessions, judge, data) and each role's model options;
//! - [`roles`]: opening a role's model and describing the roles in a manifest;
//! - [`finish`]: a finished session as a store record, and judging it: verdict, reward,
//!   calibrated scores, committed to the run store.
//!
//! The commands build on this crate; it knows nothing of any one of them.

pub mod assets;
pub mod config;
pub mod error;
pub mod finish;
pub mod roles;

pub use assets::{AssetSources, Assets};
pub use config::{RunConfig, model_options};
pub use error::RunError;
pub use finish::{
    JudgeCtx, Judged, judge_and_store, record_of, session_id, session_reward, store_judgment,
};
pub use roles::{open_role, roles_json};
