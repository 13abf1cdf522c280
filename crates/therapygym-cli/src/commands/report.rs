//! `therapygym report`: one HTML (or JSON) report of one or more runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use therapygym_report::stats::BootstrapConfig;
use therapygym_report::{Report, RunData, SetData};

use crate::cli::{BootstrapArgs, ReportArgs};
use crate::ui;

/// Reads every run directory (a clear error names the one that fails).
pub fn load_runs(dirs: &[PathBuf]) -> anyhow::Result<Vec<RunData>> {
    dirs.iter()
        .map(|d| RunData::load(d).with_context(|| format!("cannot read run {}", d.display())))
        .collect()
}

/// Each run with its chosen judgment set.
pub fn inputs<'a>(
    runs: &'a [RunData],
    b: &BootstrapArgs,
) -> anyhow::Result<Vec<(&'a RunData, &'a SetData)>> {
    runs.iter()
        .map(|r| Ok((r, r.set(b.judge_hash.as_deref())?)))
        .collect()
}

pub fn config(b: &BootstrapArgs) -> BootstrapConfig {
    BootstrapConfig::new(b.bootstrap, b.seed)
}

/// Writes `text` to `out` atomically, or to stdout when `out` is `None`.
pub fn write_out(out: Option<&Path>, text: &str, what: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            therapygym_store::fs::atomic_write(path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            ui::info(&format!("wrote {what} to {}", path.display()));
        }
        None => ui::out(text.trim_end()),
    }
    Ok(())
}

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let runs = load_runs(&a.runs)?;
    let inputs = inputs(&runs, &a.bootstrap)?;
    let report = Report::build(
        &inputs,
        &config(&a.bootstrap),
        &therapygym_store::timestamp(),
    )?;
    if a.json {
        let text = serde_json::to_string_pretty(&report)?;
        write_out(a.out.as_deref(), &text, "the report's numbers")?;
    } else {
        let out = a.out.unwrap_or_else(|| PathBuf::from("report.html"));
        write_out(Some(&out), &report.html(&inputs)?, "the report")?;
    }
    Ok(ExitCode::SUCCESS)
}
