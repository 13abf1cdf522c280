//! The settings of a training run. Stored in the run's manifest, so `--resume` continues with
//! exactly the settings the run started with.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use therapygym_grpo::{AdvantageNorm, ExportType, GrpoConfig, Preset};
use therapygym_models::ModelSpec;
use therapygym_run::RunConfig;

use crate::error::TrainError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Roles, session settings, judge settings and data files, as every run has them;
    /// `therapist` is the policy's spec (`embedded` or `gguf:PATH`). Stored as `eval`.
    #[serde(rename = "eval")]
    pub run: RunConfig,
    /// Held-out profiles for `eval_every` (default: the shipped held-out set).
    pub holdout: Option<PathBuf>,
    /// GRPO updates to run.
    pub steps: u64,
    /// Sessions per profile and step (GRPO's G).
    pub group_size: usize,
    /// Profiles (groups) per step.
    pub profiles_per_step: usize,
    /// Mean reward on the held-out profiles every this many steps (0 = never).
    pub eval_every: u64,
    /// A checkpoint every this many steps (the last step always gets one).
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk (the newest ones).
    pub keep_checkpoints: usize,
    /// Engine preset the advantage ε and loss aggregation came from (for the record).
    pub preset: Preset,
    pub advantage: AdvantageNorm,
    pub grpo: GrpoConfig,
    /// Tensor type of the exported GGUF: `q8_0`, `f16` or `f32`.
    pub export: String,
}

impl TrainConfig {
    /// Spec defaults (verl preset, lr 1e-6) around a run's settings.
    pub fn new(run: RunConfig) -> Self {
        let preset = Preset::Verl;
        Self {
            run,
            holdout: None,
            steps: 10,
            group_size: 4,
            profiles_per_step: 1,
            eval_every: 0,
            checkpoint_every: 1,
            keep_checkpoints: 2,
            preset,
            advantage: preset.advantage_norm(),
            grpo: GrpoConfig::from_preset(preset, 1e-6),
            export: "q8_0".into(),
        }
    }

    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        if self.steps == 0 {
            return bad("`--steps` must be at least 1");
        }
        if self.group_size < 2 {
            return bad(
                "`--group-size` must be at least 2: GRPO's advantage compares sessions of one group",
            );
        }
        if self.profiles_per_step == 0 {
            return bad("`--profiles-per-step` must be at least 1");
        }
        if self.checkpoint_every == 0 {
            return bad("`--checkpoint-every` must be at least 1");
        }
        if self.keep_checkpoints == 0 {
            return bad("`--keep-checkpoints` must be at least 1");
        }
        if !(self.grpo.clip.eps_low > 0.0 && self.grpo.clip.eps_high > 0.0) {
            return bad("`--clip-low` and `--clip-high` must be positive");
        }
        if self.grpo.kl_coef < 0.0 || !self.grpo.kl_coef.is_finite() {
            return bad("`--kl-coef` must be a finite number ≥ 0");
        }
        export_type(&self.export)?;
        policy_path(&self.run.therapist)?;
        Ok(())
    }
}

/// The GGUF file a policy spec names: the trainer needs the weights on this machine.
pub fn policy_path(spec: &str) -> Result<PathBuf, TrainError> {
    let parsed: ModelSpec = spec
        .parse()
        .map_err(|e| TrainError::Config(format!("`--policy {spec}`: {e}")))?;
    match parsed {
        ModelSpec::Embedded => Ok(therapygym_models::home::embedded_model_path()),
        ModelSpec::Gguf(p) => Ok(p),
        _ => Err(TrainError::Config(format!(
            "`--policy {spec}`: the trainer updates local weights, so the policy must be `embedded` or `gguf:PATH`; train a served model through `therapygym serve` and an RL engine (docs/rl-engines.md)"
        ))),
    }
}

pub fn export_type(name: &str) -> Result<ExportType, TrainError> {
    match name {
        "q8_0" => Ok(ExportType::Q8_0),
        "f16" => Ok(ExportType::F16),
        "f32" => Ok(ExportType::F32),
        other => Err(TrainError::Config(format!(
            "export type `{other}`: expected q8_0, f16 or f32"
        ))),
    }
}

/// Preset by its command-line name.
pub fn parse_preset(name: &str) -> Result<Preset, TrainError> {
    Ok(match name {
        "verl" => Preset::Verl,
        "trl" | "trl-dapo" => Preset::TrlDapo,
        "trl-grpo" => Preset::TrlGrpo,
        "openrlhf" => Preset::OpenRlhf,
        "dr_grpo" | "dr-grpo" => Preset::DrGrpo,
        other => {
            return Err(TrainError::Config(format!(
                "preset `{other}`: expected verl, trl, trl-grpo, openrlhf or dr_grpo"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_set_the_advantage_epsilon() {
        for (name, eps) in [("trl", 1e-4), ("verl", 1e-6), ("openrlhf", 1e-9)] {
            let p = parse_preset(name).unwrap();
            assert_eq!(p.advantage_norm(), AdvantageNorm::GroupStd { eps });
        }
        assert_eq!(
            parse_preset("dr_grpo").unwrap().advantage_norm(),
            AdvantageNorm::MeanOnly
        );
        assert!(parse_preset("ppo").is_err());
    }

    #[test]
    fn a_served_policy_is_refused_with_the_way_out() {
        let e = policy_path("openai:m@http://localhost:1/v1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("therapygym serve"), "{e}");
        assert_eq!(
            policy_path("gguf:/tmp/x.gguf").unwrap(),
            PathBuf::from("/tmp/x.gguf")
        );
    }

    #[test]
    fn groups_of_one_are_refused() {
        let mut c = TrainConfig::new(RunConfig::new("cbt"));
        c.group_size = 1;
        assert!(c.check().unwrap_err().to_string().contains("group"));
    }
}
