//! The settings of a run: roles, sessions, the judge and the data. `eval` runs with them as
//! they are; `serve` and `train` store them in the same shape, so `judge`, `export` and
//! `validate` read any run alike. Everything that changes results is hashed into the manifest;
//! concurrency is not (it changes speed only).

use serde::{Deserialize, Serialize};
use therapygym_judge::JudgeConfig;
use therapygym_models::{ModelOptions, ModelSpec, RetryPolicy, Timeouts};
use therapygym_session::SessionConfig;
use therapygym_store::RunStore;

use crate::assets::AssetSources;
use crate::error::RunError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub therapist: String,
    pub patient: String,
    pub judge: String,
    pub sessions_per_profile: u32,
    pub seed: u64,
    pub session: SessionConfig,
    pub judge_config: JudgeConfig,
    pub assets: AssetSources,
    /// Above this share of unscored sessions the command exits with code 1.
    pub max_unscored_rate: f64,
}

impl RunConfig {
    pub fn new(therapist_prompt: &str) -> Self {
        Self {
            therapist: "embedded".into(),
            patient: "embedded".into(),
            judge: "embedded".into(),
            sessions_per_profile: 1,
            seed: 20261127,
            session: SessionConfig::default(),
            judge_config: JudgeConfig::default(),
            assets: AssetSources::new(therapist_prompt),
            max_unscored_rate: 0.02,
        }
    }

    /// The settings a stored run was made with (its manifest's `config`).
    pub fn stored(store: &RunStore) -> Result<Self, RunError> {
        let (m, _) = store.manifest()?;
        serde_json::from_value(m["config"].clone()).map_err(|e| {
            RunError::Invalid(format!(
                "{}: the manifest's config is unreadable: {e}",
                store.dir().display()
            ))
        })
    }
}

/// Model options for a role. A local model serves every role from one worker, so a call may
/// queue behind the others' generations: its attempt timeout must cover that wait.
pub fn model_options(spec: &ModelSpec, concurrency: usize) -> ModelOptions {
    let timeouts = if spec.is_local() {
        Timeouts {
            attempt: std::time::Duration::from_secs(3600),
            total: std::time::Duration::from_secs(7200),
        }
    } else {
        Timeouts::default()
    };
    ModelOptions {
        retry: RetryPolicy::default(),
        timeouts,
        concurrency: concurrency.max(1),
    }
}
