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

/// The role specs are kept as given (to open the models) but always serialized with URL
/// credentials masked, so no manifest, store or config hash ever holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(serialize_with = "redacted")]
    pub therapist: String,
    #[serde(serialize_with = "redacted")]
    pub patient: String,
    #[serde(serialize_with = "redacted")]
    pub judge: String,
    pub sessions_per_profile: u32,
    pub seed: u64,
    pub session: SessionConfig,
    pub judge_config: JudgeConfig,
    pub assets: AssetSources,
    /// Above this share of unscored sessions the command exits with code 1.
    pub max_unscored_rate: f64,
    /// `eval --shard I/N`: this run holds only that slice of the plan. Absent (and so out of
    /// the config hash) for whole runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::Shard>,
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
            shard: None,
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

fn redacted<S: serde::Serializer>(spec: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&therapygym_models::redact_spec(spec))
}

/// The judge's reply budget on a local model (llama.cpp on a CPU), chosen from measurement: a
/// 135M judge on 2 cores decodes ~10 tokens/s, and the reply (11 items and 4 labels, each with
/// a short rationale) is ~500 tokens at 40 characters per rationale, against ~1,700 at 300.
/// 1,024 tokens leaves room for the longest rationale the schema allows.
pub const LOCAL_JUDGE_MAX_TOKENS: u32 = 1024;
/// Longest rationale/evidence string a local judge writes (see [`LOCAL_JUDGE_MAX_TOKENS`]).
pub const LOCAL_JUDGE_RATIONALE_CHARS: u32 = 40;

/// The judge settings a run starts from for a judge spec: the defaults, with a shorter reply
/// budget for a local model (an unparseable spec gets the defaults; opening it reports it).
pub fn judge_config_for(spec: &str) -> JudgeConfig {
    let mut c = JudgeConfig::default();
    if spec.parse::<ModelSpec>().is_ok_and(|s| s.is_local()) {
        c.max_tokens = LOCAL_JUDGE_MAX_TOKENS;
        c.rationale_max_chars = LOCAL_JUDGE_RATIONALE_CHARS;
    }
    c
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stored_configs_never_hold_url_credentials() {
        let mut c = RunConfig::new("cbt");
        c.therapist = "openai:m@https://bob:s3cret@h.example/v1#key=T_KEY".into();
        c.patient = "openai:m@https://tok3n@h.example/v1".into();
        c.judge = "openai:@https://u:pw@broken".into();
        let text = serde_json::to_string(&c).unwrap();
        for secret in ["s3cret", "bob", "tok3n", "pw@"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("openai:m@https://****@h.example/v1#key=T_KEY"),
            "{text}"
        );
        // What was stored reads back as the masked spec, and masks to itself.
        let back: RunConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }
}
