//! `therapygym validate`: judge-expert agreement on a ratings file (judge = a rater in the file,
//! or a run's judgments with `--run`), optionally fitting a calibration map.

use std::process::ExitCode;

use anyhow::{Context, bail};
use therapygym_validate::stats::BootstrapConfig;
use therapygym_validate::{
    AnnotationMap, Catalog, Dataset, KnownGroupsReport, Resampling, fit_calibration,
    known_groups_report, load_run, read_ratings, render_known_groups, render_text, validate,
};

use crate::cli::ValidateArgs;
use crate::ui;

/// `--known-groups` on `--run`: the report, and whether it is all that was asked.
fn known_groups(a: &ValidateArgs) -> anyhow::Result<Option<KnownGroupsReport>> {
    let (Some(spec), Some(dir)) = (&a.known_groups, &a.run) else {
        return Ok(None);
    };
    let map = AnnotationMap::parse(&a.annotation_map).map_err(anyhow::Error::msg)?;
    let fallback = match &a.rubric {
        Some(p) => therapygym_core::builtin::load_rubric(p)?,
        None => therapygym_core::builtin::rubric()?,
    };
    let config = BootstrapConfig::new(a.bootstrap, a.seed);
    Ok(Some(known_groups_report(
        dir,
        a.judge_hash.as_deref(),
        spec,
        &map,
        &fallback,
        &config,
    )?))
}

pub fn run(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let groups = known_groups(&a)?;
    let path = match (a.ratings.clone().or(a.file.clone()), &groups) {
        (Some(p), _) => p,
        (None, Some(g)) => {
            if a.html.is_some() || a.fit_calibration.is_some() {
                bail!(
                    "--html and --fit-calibration compare the judge with expert ratings: add `--ratings FILE`"
                );
            }
            if a.json {
                ui::json(&serde_json::json!({ "known_groups": g }));
            } else {
                ui::out(render_known_groups(g).trim_end());
            }
            return Ok(ExitCode::SUCCESS);
        }
        (None, None) => anyhow::bail!("no ratings file: give it as `--ratings FILE`"),
    };
    let catalog = Catalog::load(a.rubric.as_deref(), a.taxonomy.as_deref())?;
    let file = read_ratings(&path, &catalog)?;
    let ds = match &a.run {
        Some(dir) => {
            let run = load_run(dir, a.judge_hash.as_deref())?;
            Dataset::from_run(&file, &a.judge_rater, &run, &catalog)?
        }
        None => Dataset::from_ratings(&file, &a.judge_rater, &catalog)?,
    };
    let resampling = Resampling::Seeded(BootstrapConfig::new(a.bootstrap, a.seed));
    let report = validate(&ds, &resampling)?;

    let mut calibration = None;
    let mut curves = None;
    if let Some(out) = &a.fit_calibration {
        let fit = fit_calibration(&ds)?;
        curves = Some(
            fit.calibration
                .items
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        m.x.iter().copied().zip(m.y.iter().copied()).collect(),
                    )
                })
                .collect::<therapygym_report::Curves>(),
        );
        for s in &fit.skipped {
            ui::warn(&format!(
                "calibration: `{}` keeps raw scores: {}",
                s.item, s.reason
            ));
        }
        if fit.calibration.items.is_empty() {
            bail!(
                "cannot fit a calibration from {}: no CTRS item has two distinct judge scores on dialogues the experts rated",
                path.display()
            );
        }
        let text = fit.calibration.to_toml();
        if text.is_empty() {
            bail!("cannot serialise the calibration map for {}", out.display());
        }
        therapygym_store::fs::atomic_write(out, text.as_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?;
        ui::info(&format!(
            "wrote calibration maps for {} item(s) to {}; apply with `therapygym eval --calibration {}` or `therapygym judge DIR --calibration {}`",
            fit.calibration.items.len(),
            out.display(),
            out.display(),
            out.display()
        ));
        calibration = Some(serde_json::json!({
            "file": out.display().to_string(),
            "items": fit.calibration.items.keys().collect::<Vec<_>>(),
            "skipped": fit.skipped,
        }));
    }

    if let Some(path) = &a.html {
        let html = therapygym_report::validation_html(&report, &ds, curves.as_ref())?;
        therapygym_store::fs::atomic_write(path, html.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        ui::info(&format!(
            "wrote the validation pictures to {}",
            path.display()
        ));
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let (Some(c), Some(obj)) = (calibration, v.as_object_mut()) {
            obj.insert("calibration".to_owned(), c);
        }
        if let (Some(g), Some(obj)) = (&groups, v.as_object_mut()) {
            obj.insert("known_groups".to_owned(), serde_json::to_value(g)?);
        }
        ui::json(&v);
    } else {
        ui::out(render_text(&report).trim_end());
        if let Some(g) = &groups {
            ui::out("");
            ui::out(render_known_groups(g).trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}
