//! The three roles of a run (therapist, patient, judge): opening a role's model, and how the
//! roles are described in a manifest.

use std::sync::Arc;

use serde_json::{Value, json};
use therapygym_models::{Model, ModelSpec, open_model};

use crate::config::{RunConfig, model_options};
use crate::error::RunError;

/// Opens one role's model with the pool size and timeouts a run uses for it.
pub async fn open_role(spec: &str, concurrency: usize) -> Result<Arc<Model>, RunError> {
    let spec: ModelSpec = spec.parse()?;
    Ok(open_model(&spec, model_options(&spec, concurrency)).await?)
}

/// The manifest's `roles`: each role's spec, backend and sampling (specs as displayed: URL
/// credentials masked; keys come from the environment and are never stored).
pub fn roles_json(therapist: &Model, patient: &Model, judge: &Model, config: &RunConfig) -> Value {
    json!({
        "therapist": {"spec": therapist.spec().to_string(), "backend": therapist.info(), "sampling": config.session.therapist_sampling},
        "patient": {"spec": patient.spec().to_string(), "backend": patient.info(), "sampling": config.session.patient_sampling},
        "judge": {"spec": judge.spec().to_string(), "backend": judge.info(), "config": config.judge_config},
    })
}
