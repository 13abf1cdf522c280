//! Settings the run commands (`eval`, `judge`, `serve`, `train`) take alike: the judge flags,
//! a calibration map, and data paths made absolute for the manifest.

use std::path::PathBuf;
use std::sync::Arc;

use therapygym_judge::Calibration;
use therapygym_run::{AssetSources, ClaimedDir, RunConfig};

use crate::cli::{Given, JudgeArgs};

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
    a.calibration = j.calibration.clone().or(a.calibration.take());
}

/// The one wording for a flag a resumed run cannot take: the flag, the value typed, the run's
/// value, and which flags may change.
pub fn refuse_on_resume(
    command: &str,
    flag: &str,
    typed: &str,
    run_value: &str,
    allowed: &[&str],
) -> anyhow::Error {
    let allowed: Vec<String> = allowed
        .iter()
        .filter(|id| **id != "resume" && **id != "debug")
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    let typed = if typed.is_empty() {
        String::new()
    } else {
        format!(" {typed}")
    };
    anyhow::anyhow!(
        "`{flag}{typed}` would change the results of the run being resumed, which keeps the settings it started with ({flag}: {run_value}). {}",
        resume_rule(command, &allowed)
    )
}

/// The one wording of which flags may change on resume.
fn resume_rule(command: &str, allowed: &[String]) -> String {
    format!(
        "Only these flags may change on resume: {}. For other settings start a new run (`therapygym {command}` without `--resume`).",
        allowed.join(", ")
    )
}

/// Refuses any flag typed with `--resume` but `allowed` (argument ids): the run keeps the
/// settings it started with, and a flag it would ignore must not look accepted.
pub fn check_resume_flags(command: &str, given: &Given, allowed: &[&str]) -> anyhow::Result<()> {
    let shown: Vec<String> = allowed
        .iter()
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    for (id, flag) in given.iter() {
        if id != "resume" && id != "debug" && !allowed.contains(&id) {
            anyhow::bail!(
                "`{flag}` cannot change on resume: the run keeps the settings it started with. {}",
                resume_rule(command, &shown)
            );
        }
    }
    Ok(())
}

/// A path as a shell word (quoted when it holds anything but safe characters), for commands a
/// message tells the user to run.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+,=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn load_calibration(path: &Option<PathBuf>) -> anyhow::Result<Option<Arc<Calibration>>> {
    Ok(match path {
        Some(p) => Some(Arc::new(Calibration::load(p)?)),
        None => None,
    })
}

/// `--out` when given, else a fresh `runs/KIND-<local time>[-N]` claimed for this process
/// (kept in `claimed`, which removes it again if the command fails before writing to it).
pub fn out_or_claim(
    out: &Option<PathBuf>,
    kind: &str,
    claimed: &mut Option<ClaimedDir>,
) -> anyhow::Result<PathBuf> {
    if let Some(o) = out {
        return Ok(o.clone());
    }
    let c = ClaimedDir::claim(std::path::Path::new("runs"), kind)?;
    let path = c.path().to_path_buf();
    *claimed = Some(c);
    Ok(path)
}

pub fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// Makes the data-file paths absolute, so a run's manifest names them wherever it is resumed.
/// A built-in rubric name (`--rubric mi`) with no file of that name stays a name.
pub fn absolute_data_paths(a: &mut AssetSources) {
    let builtin_rubric = a.rubric.as_ref().is_some_and(|p| {
        !p.exists()
            && therapygym_core::builtin::RUBRICS
                .iter()
                .any(|(n, _)| p.as_os_str() == *n)
    });
    for (i, p) in [&mut a.reward_config, &mut a.rubric, &mut a.taxonomy]
        .into_iter()
        .enumerate()
    {
        if i == 1 && builtin_rubric {
            continue;
        }
        if let Some(x) = p.take() {
            *p = Some(absolute(x));
        }
    }
}
