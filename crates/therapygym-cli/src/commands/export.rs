use std::process::ExitCode;

use anyhow::Context;
use therapygym_store::{RunStore, export};

use crate::cli::{ExportArgs, ExportFormat};
use crate::ui;

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = RunStore::open(&a.dir)?;
    let hash = match a.judge_hash {
        Some(h) => {
            let sets = store.judge_sets()?;
            sets.iter()
                .find(|s| {
                    s.hash == h
                        || s.hash
                            .trim_start_matches("sha256:")
                            .starts_with(h.trim_start_matches("sha256:"))
                })
                .map(|s| s.hash.clone())
                .with_context(|| {
                    format!(
                        "no judgment set `{h}` in {}; sets: {}",
                        a.dir.display(),
                        sets.iter()
                            .map(|s| s.hash.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?
        }
        None => store.latest_judge_hash()?.unwrap_or_default(),
    };
    let judgments = store.judgments(&hash)?;
    let rows: Vec<_> = store
        .sessions()?
        .into_iter()
        .map(|s| {
            let j = judgments.get(&s.id).cloned();
            (s, j)
        })
        .collect();
    let text = match a.format {
        ExportFormat::Jsonl => export::jsonl(&rows),
        ExportFormat::Csv => export::csv(&rows),
    };
    match a.out {
        Some(path) => {
            therapygym_store::fs::atomic_write(&path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            ui::info(&format!(
                "wrote {} sessions to {}",
                rows.len(),
                path.display()
            ));
        }
        None => ui::out(text.trim_end()),
    }
    Ok(ExitCode::SUCCESS)
}
