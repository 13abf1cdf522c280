//! Settings the run commands (`eval`, `judge`, `serve`, `train`) take alike: the judge flags,
//! a calibration map, and data paths made absolute for the manifest.

use std::path::PathBuf;
use std::sync::Arc;

use therapygym_judge::Calibration;
use therapygym_run::{AssetSources, RunConfig};

use crate::cli::JudgeArgs;

pub fn apply_judge_args(config: &mut RunConfig, j: &JudgeArgs) {
    if let Some(r) = j.judge_retries {
        config.judge_config.retries = r;
    }
    if let Some(s) = j.judge_samples {
        config.judge_config.samples = s.max(1);
    }
    if let Some(m) = j.judge_max_tokens {
        config.judge_config.max_tokens = m;
    }
    if let Some(c) = j.judge_rationale_chars {
        config.judge_config.rationale_max_chars = c;
    }
    let a = &mut config.assets;
    a.reward_config = j.reward_config.clone().or(a.reward_config.take());
    a.rubric = j.rubric.clone().or(a.rubric.take());
    a.taxonomy = j.taxonomy.clone().or(a.taxonomy.take());
    if !j.safety_labels.is_empty() {
        a.safety_labels = j.safety_labels.clone();
    }
}

pub fn load_calibration(path: &Option<PathBuf>) -> anyhow::Result<Option<Arc<Calibration>>> {
    Ok(match path {
        Some(p) => Some(Arc::new(Calibration::load(p)?)),
        None => None,
    })
}

pub fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// Makes the data-file paths absolute, so a run's manifest names them wherever it is resumed.
pub fn absolute_data_paths(a: &mut AssetSources) {
    for p in [&mut a.reward_config, &mut a.rubric, &mut a.taxonomy] {
        if let Some(x) = p.take() {
            *p = Some(absolute(x));
        }
    }
}
