//! `therapygym runs [DIR]`: every run under DIR (eval, serve, train, imported, synth), or one
//! run's manifest and judgment sets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};
use therapygym_run::catalog::{self, RunInfo};
use therapygym_synth::state::{Manifest as SynthManifest, STATE_FILE, read_json};

use crate::cli::RunsArgs;
use crate::commands::summary::short_hash;
use crate::ui;

/// A synthesis run: its own directory layout (`synth.json`), no session store.
fn synth_info(dir: &Path) -> anyhow::Result<Value> {
    let m: SynthManifest = read_json(&dir.join(STATE_FILE))?;
    let started = m.attempts.first().map(|a| a.started_unix);
    Ok(json!({
        "dir": dir.display().to_string(),
        "kind": "synth",
        "status": m.status,
        "started_unix": started,
        "model": m.config.model,
        "target": m.config.target,
        "profiles": m.summary.as_ref().and_then(|s| s.get("profiles")).cloned(),
        "attempts": m.attempts.len(),
    }))
}

fn is_synth(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

fn date(s: Option<&str>) -> String {
    // RFC 3339 → `2026-11-27 10:15`.
    s.map(|t| t.get(..16).unwrap_or(t).replace('T', " "))
        .unwrap_or_else(|| "?".into())
}

fn line(r: &RunInfo) -> String {
    let s = &r.sessions;
    let models = ["therapist", "patient", "judge"]
        .iter()
        .filter_map(|k| r.models.get(*k).map(|m| format!("{}={m}", &k[..1])))
        .collect::<Vec<_>>()
        .join(" ");
    let latest = r.judge_sets.last();
    format!(
        "{:<36} {:<7} {:<16} {:>5} {:>5} {:>5} {:>5}  {:<22} {}",
        r.dir,
        r.kind,
        date(r.created_at.as_deref()),
        s.completed,
        s.failed + s.expired,
        latest
            .map(|l| l.unscored.to_string())
            .unwrap_or_else(|| "-".into()),
        r.judge_sets.len(),
        latest
            .map(|l| short_hash(&l.hash))
            .unwrap_or_else(|| "-".into()),
        models
    )
}

fn show_one(dir: &Path, json_out: bool) -> anyhow::Result<()> {
    let info = catalog::describe(dir, true)?;
    if json_out {
        ui::json(&info);
        return Ok(());
    }
    let s = &info.sessions;
    ui::out(&format!(
        "run: {} ({} run, created {}, {} attempt(s))",
        info.dir,
        info.kind,
        date(info.created_at.as_deref()),
        info.attempts
    ));
    for role in ["therapist", "patient", "judge"] {
        if let Some(m) = info.models.get(role) {
            ui::out(&format!("  {role:<10} {m}"));
        }
    }
    ui::out(&format!(
        "sessions: {} · {} completed · {} failed · {} expired",
        s.total, s.completed, s.failed, s.expired
    ));
    if let Some(m) = &info.manifest {
        let c = &m["config"];
        ui::out(&format!(
            "settings: turns {} · sessions per profile {} · seed {} · profiles {} ({} ids) · rubric {} · taxonomy {}",
            c["session"]["turns"],
            c["sessions_per_profile"],
            c["seed"],
            m["profiles"]["source"].as_str().unwrap_or("-"),
            m["profiles"]["ids"].as_array().map_or(0, Vec::len),
            m["rubric"]["id"].as_str().unwrap_or("-"),
            m["safety_taxonomy"]["id"].as_str().unwrap_or("-"),
        ));
    }
    ui::out("");
    if info.judge_sets.is_empty() {
        ui::out("judgment sets: none yet (score the run with `therapygym judge DIR`)");
    } else {
        ui::out(&format!(
            "{:<72} {:<17} {:>6} {:>8}  judge",
            "judgment set", "created", "scored", "unscored"
        ));
        for j in &info.judge_sets {
            let cal = if j.calibrated { " (calibrated)" } else { "" };
            ui::out(&format!(
                "{:<72} {:<17} {:>6} {:>8}  {}{cal}",
                j.hash,
                date(Some(&j.created_at)),
                j.scored,
                j.unscored,
                j.judge
            ));
        }
        ui::out(
            "the last set is the one `export` and `validate` read by default; pick another with `--judge-hash PREFIX`",
        );
    }
    Ok(())
}

pub fn run(a: RunsArgs) -> anyhow::Result<ExitCode> {
    let dir = &a.dir;
    if !dir.exists() {
        anyhow::bail!(
            "{} does not exist; runs are created by `therapygym eval`, `serve`, `train`, `synth` and `import-transcripts` (under runs/ by default)",
            dir.display()
        );
    }
    if catalog::is_store_run(dir) {
        show_one(dir, a.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if is_synth(dir) {
        let v = synth_info(dir)?;
        if a.json {
            ui::json(&v);
        } else {
            ui::out(&format!(
                "run: {} (synth run, {}, model {}, {} profiles); its files are listed in docs/synth.md",
                dir.display(),
                v["status"].as_str().unwrap_or("?"),
                v["model"].as_str().unwrap_or("?"),
                v["profiles"]
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    children.sort();
    let (mut runs, mut synths, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for c in &children {
        if catalog::is_store_run(c) {
            match catalog::describe(c, false) {
                Ok(r) => runs.push(r),
                Err(e) => errors.push(format!("{}: {e}", c.display())),
            }
        } else if is_synth(c) {
            match synth_info(c) {
                Ok(v) => synths.push(v),
                Err(e) => errors.push(format!("{}: {e}", c.display())),
            }
        }
    }
    if a.json {
        ui::json(&json!({"runs": runs, "synth_runs": synths, "unreadable": errors}));
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() && synths.is_empty() {
        ui::out(&format!("no runs under {}", dir.display()));
    }
    if !runs.is_empty() {
        ui::out(&format!(
            "{:<36} {:<7} {:<16} {:>5} {:>5} {:>5} {:>5}  {:<22} {}",
            "run",
            "kind",
            "created",
            "done",
            "fail",
            "unsc",
            "sets",
            "latest set",
            "models (t/p/j)"
        ));
        for r in &runs {
            ui::out(&line(r));
        }
    }
    if !synths.is_empty() {
        ui::out("");
        ui::out(&format!(
            "{:<36} {:<9} {:>8}  model",
            "synth run", "status", "profiles"
        ));
        for v in &synths {
            ui::out(&format!(
                "{:<36} {:<9} {:>8}  {}",
                v["dir"].as_str().unwrap_or(""),
                v["status"].as_str().unwrap_or(""),
                v["profiles"],
                v["model"].as_str().unwrap_or("")
            ));
        }
    }
    for e in &errors {
        ui::warn(e);
    }
    if !runs.is_empty() {
        ui::out("");
        ui::out("`unsc` counts the latest judgment set; `therapygym runs RUN_DIR` shows every set");
    }
    Ok(ExitCode::SUCCESS)
}
