//! What `therapygym runs` shows of a run directory made by `eval`, `serve`, `train` or
//! `import-transcripts` (every run with a `run.sqlite`): its kind, date, models, session
//! counts and judgment sets. Reading records no attempt.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use therapygym_store::{RunStore, SessionStatus};

use crate::error::RunError;

/// Session counts of a run (all judgment sets alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionTally {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    /// Episodes an RL engine abandoned or that timed out (`serve`).
    pub expired: u64,
}

/// One judgment set of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetInfo {
    pub hash: String,
    pub judge: String,
    pub created_at: String,
    pub scored: u64,
    pub unscored: u64,
    pub calibrated: bool,
}

/// One run, as `therapygym runs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub dir: String,
    /// `eval`, `serve`, `train`, `import` (or `synth`, which the CLI adds).
    pub kind: String,
    pub created_at: Option<String>,
    /// Role → model spec.
    pub models: BTreeMap<String, String>,
    pub sessions: SessionTally,
    /// Oldest first; the last is what `export` and `validate` read by default.
    pub judge_sets: Vec<SetInfo>,
    pub attempts: u32,
    /// The manifest (for `therapygym runs RUN_DIR --json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
}

/// The roles' model specs: the manifest's `roles`, else its `config`.
fn models(m: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for role in ["therapist", "patient", "judge"] {
        let spec = m["roles"][role]["spec"]
            .as_str()
            .or_else(|| m["config"][role].as_str())
            .or_else(|| m["train_config"]["run"][role].as_str());
        if let Some(s) = spec {
            out.insert(role.to_string(), s.to_string());
        }
    }
    out
}

/// Reads one run directory (it must hold a `run.sqlite`).
pub fn describe(dir: &Path, with_manifest: bool) -> Result<RunInfo, RunError> {
    let store = RunStore::open(dir)?;
    let (m, _) = store.manifest()?;
    let mut sessions = SessionTally::default();
    for status in store.session_statuses()?.values() {
        sessions.total += 1;
        match status {
            SessionStatus::Completed => sessions.completed += 1,
            SessionStatus::Failed => sessions.failed += 1,
            SessionStatus::Expired => sessions.expired += 1,
        }
    }
    let counts = store.judgment_counts()?;
    let judge_sets = store
        .judge_sets()?
        .into_iter()
        .map(|s| {
            let (scored, unscored) = counts.get(&s.hash).copied().unwrap_or_default();
            SetInfo {
                judge: s.judge_spec().to_string(),
                calibrated: s.identity.get("calibration").is_some(),
                hash: s.hash,
                created_at: s.created_at,
                scored,
                unscored,
            }
        })
        .collect();
    Ok(RunInfo {
        dir: dir.display().to_string(),
        kind: m["kind"].as_str().unwrap_or("unknown").to_string(),
        created_at: m["created_at"].as_str().map(String::from),
        models: models(&m),
        sessions,
        judge_sets,
        attempts: store.attempts()?,
        manifest: with_manifest.then_some(m),
    })
}

/// Whether `dir` is a run with a store.
pub fn is_store_run(dir: &Path) -> bool {
    dir.join("run.sqlite").is_file()
}
