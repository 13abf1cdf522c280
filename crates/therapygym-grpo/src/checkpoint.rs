//! Checkpoints: weights and AdamW state as safetensors plus a JSON manifest.
//!
//! Layout of a checkpoint directory:
//! - `model.safetensors`: f32 weights under HF names (`model.layers.0.self_attn.q_proj.weight`, …)
//! - `optimizer.safetensors`: `<name>.exp_avg` / `<name>.exp_avg_sq` for every parameter that
//!   has AdamW state
//! - `trainer_state.json`: [`TrainerState`] (schema revision, step, model and optimizer config)
//!
//! f32 round-trips through safetensors bit for bit, so resuming reproduces an uninterrupted run.
//! Every file is written to a temporary name and renamed, so a crash never leaves a torn file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{GrpoError, Result};
use crate::model::{Llama, LlamaConfig};
use crate::optim::{AdamW, AdamWConfig, MomentState};

/// Weights file name inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer state file name.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Manifest file name.
pub const STATE_FILE: &str = "trainer_state.json";
/// Current manifest schema revision.
pub const SCHEMA_REVISION: u32 = 1;

/// Manifest of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Manifest format revision.
    pub schema_revision: u32,
    /// Optimizer updates applied.
    pub step: u64,
    /// Model hyper-parameters (enough to rebuild the model from `model.safetensors`).
    pub model: LlamaConfig,
    /// Optimizer hyper-parameters.
    pub adamw: AdamWConfig,
    /// Parameter names in optimizer order.
    pub params: Vec<String>,
    /// Free-form data of the caller (run id, data cursor, GRPO config, …).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// Writes weights, optimizer state and manifest into `dir` (created if needed).
pub fn save_checkpoint(
    dir: impl AsRef<Path>,
    model: &Llama,
    opt: &AdamW,
    extra: serde_json::Value,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| GrpoError::io("create directory", dir, e))?;

    let weights: HashMap<String, Tensor> = model.weights()?.into_iter().collect();
    write_safetensors(&dir.join(MODEL_FILE), &weights)?;

    let mut state = HashMap::new();
    for (i, (name, var)) in opt.params().iter().enumerate() {
        if let Some(m) = opt.moments(i) {
            let shape = var.shape().clone();
            state.insert(
                format!("{name}.exp_avg"),
                Tensor::from_slice(&m.m, shape.clone(), &Device::Cpu)?,
            );
            state.insert(
                format!("{name}.exp_avg_sq"),
                Tensor::from_slice(&m.v, shape, &Device::Cpu)?,
            );
        }
    }
    write_safetensors(&dir.join(OPTIMIZER_FILE), &state)?;

    let manifest = TrainerState {
        schema_revision: SCHEMA_REVISION,
        step: opt.step_count(),
        model: model.config().clone(),
        adamw: *opt.config(),
        params: opt.params().iter().map(|(n, _)| n.clone()).collect(),
        extra,
    };
    let path = dir.join(STATE_FILE);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| GrpoError::State {
        path: path.clone(),
        source,
    })?;
    atomic_write(&path, |tmp| {
        std::fs::write(tmp, &json).map_err(|e| GrpoError::io("write", tmp, e))
    })
}

/// Reads the manifest of a checkpoint.
pub fn read_state(dir: impl AsRef<Path>) -> Result<TrainerState> {
    let path = dir.as_ref().join(STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| GrpoError::io("read", &path, e))?;
    let state: TrainerState =
        serde_json::from_slice(&bytes).map_err(|source| GrpoError::State {
            path: path.clone(),
            source,
        })?;
    if state.schema_revision != SCHEMA_REVISION {
        return Err(GrpoError::Checkpoint {
            path,
            reason: format!(
                "schema revision {} (this build reads {SCHEMA_REVISION})",
                state.schema_revision
            ),
        });
    }
    Ok(state)
}

/// Builds a model from a checkpoint directory alone (config from the manifest).
pub fn load_model(dir: impl AsRef<Path>) -> Result<Llama> {
    let dir = dir.as_ref();
    let state = read_state(dir)?;
    let weights = read_safetensors(&dir.join(MODEL_FILE))?;
    Llama::from_tensors(state.model, weights)
}

/// Loads weights and optimizer state of a checkpoint into an existing model and optimizer
/// (which must have the same parameters). Returns the manifest.
pub fn load_checkpoint(
    dir: impl AsRef<Path>,
    model: &Llama,
    opt: &mut AdamW,
) -> Result<TrainerState> {
    let dir = dir.as_ref();
    let state = read_state(dir)?;
    let mismatch = |reason: String| GrpoError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    if &state.model != model.config() {
        return Err(mismatch(
            "model configuration differs from the loaded model".into(),
        ));
    }
    let names: Vec<&str> = opt.params().iter().map(|(n, _)| n.as_str()).collect();
    if state
        .params
        .iter()
        .map(String::as_str)
        .ne(names.iter().copied())
    {
        return Err(mismatch(
            "parameter list differs from the optimizer's".into(),
        ));
    }

    let mut weights = read_safetensors(&dir.join(MODEL_FILE))?;
    let mut optim = read_safetensors(&dir.join(OPTIMIZER_FILE))?;
    // Validate everything before touching a single Var, so a bad checkpoint leaves the model
    // intact.
    let mut new_weights = Vec::new();
    let mut moments = Vec::new();
    for (name, var) in model.params() {
        let w = weights
            .remove(name)
            .ok_or_else(|| mismatch(format!("weights lack `{name}`")))?;
        if w.dims() != var.dims() {
            return Err(mismatch(format!("`{name}` has shape {:?}", w.dims())));
        }
        new_weights.push((var, w));
        let m = optim.remove(&format!("{name}.exp_avg"));
        let v = optim.remove(&format!("{name}.exp_avg_sq"));
        moments.push(match (m, v) {
            (Some(m), Some(v)) => Some(MomentState {
                m: m.flatten_all()?.to_vec1::<f32>()?,
                v: v.flatten_all()?.to_vec1::<f32>()?,
            }),
            (None, None) => None,
            _ => {
                return Err(mismatch(format!(
                    "half of the AdamW state of `{name}` is missing"
                )));
            }
        });
    }
    opt.restore(state.step, moments)?;
    for (var, w) in new_weights {
        var.set(&w)?;
    }
    Ok(state)
}

fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(GrpoError::Checkpoint {
            path: path.to_path_buf(),
            reason: "file missing".into(),
        });
    }
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    atomic_write(path, |tmp| {
        Ok(candle_core::safetensors::save(tensors, tmp)?)
    })
}

/// Writes through `write` to `<path>.tmp`, then renames over `path`.
pub(crate) fn atomic_write(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp: PathBuf = path.to_path_buf();
    tmp.as_mut_os_string().push(".tmp");
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| GrpoError::io("rename into", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny;
    use crate::optim::Gradients;

    fn bits(m: &Llama) -> Vec<Vec<u32>> {
        m.weights()
            .unwrap()
            .iter()
            .map(|(_, t)| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect()
    }

    /// One AdamW step with a deterministic pseudo-gradient.
    fn step(m: &Llama, opt: &mut AdamW, salt: f32) {
        let mut g = Gradients::zeros(m.params().len());
        let logits = m
            .forward(
                &Tensor::new(&[[1u32, 5, 9, 2]], &Device::Cpu).unwrap(),
                None,
                crate::model::Mode::Train,
            )
            .unwrap();
        let loss = (logits.sqr().unwrap().mean_all().unwrap() * f64::from(salt)).unwrap();
        let store = loss.backward().unwrap();
        let vars: Vec<_> = m.params().iter().map(|(_, v)| v).collect();
        g.accumulate(&vars, &store).unwrap();
        opt.step(&g, 1e-3).unwrap();
    }

    #[test]
    fn round_trip_is_bit_exact_and_resume_matches_uninterrupted_run() {
        let dir = tempfile::tempdir().unwrap();
        let a = tiny(20, true);
        let mut opt_a = AdamW::new(a.params(), AdamWConfig::default());
        step(&a, &mut opt_a, 1.0);
        step(&a, &mut opt_a, 0.5);
        save_checkpoint(dir.path(), &a, &opt_a, serde_json::json!({"run": "x"})).unwrap();

        // Fresh model with different weights, then load.
        let b = tiny(21, true);
        let mut opt_b = AdamW::new(b.params(), AdamWConfig::default());
        let st = load_checkpoint(dir.path(), &b, &mut opt_b).unwrap();
        assert_eq!(st.step, 2);
        assert_eq!(st.extra["run"], "x");
        assert_eq!(bits(&a), bits(&b));
        for i in 0..a.params().len() {
            assert_eq!(opt_a.moments(i), opt_b.moments(i));
        }

        // Continuing both gives identical weights.
        step(&a, &mut opt_a, 0.25);
        step(&b, &mut opt_b, 0.25);
        assert_eq!(bits(&a), bits(&b));

        let c = load_model(dir.path()).unwrap();
        assert_eq!(c.config(), a.config());
    }

    #[test]
    fn mismatched_checkpoint_is_rejected_and_model_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let a = tiny(22, false);
        let opt_a = AdamW::new(a.params(), AdamWConfig::default());
        save_checkpoint(dir.path(), &a, &opt_a, serde_json::Value::Null).unwrap();
        let b = tiny(23, true); // tied: different parameter list
        let before = bits(&b);
        let mut opt_b = AdamW::new(b.params(), AdamWConfig::default());
        let err = load_checkpoint(dir.path(), &b, &mut opt_b).unwrap_err();
        assert!(matches!(err, GrpoError::Checkpoint { .. }), "{err}");
        assert_eq!(before, bits(&b));
        assert!(matches!(
            read_state("/nonexistent-checkpoint"),
            Err(GrpoError::Io { .. })
        ));
    }
}
