use std::process::ExitCode;

use anyhow::Context;
use therapygym_store::export::{self, Columns};
use therapygym_store::{JudgeSet, RunStore};

use crate::cli::{ExportArgs, ExportFormat};
use crate::ui;

/// CSV columns in the order of the set's rubric and taxonomy (sets from before store revision
/// 2 keep no definitions: their columns come from the rows).
fn columns(set: Option<&JudgeSet>) -> Option<Columns> {
    let set = set?;
    let labels = set
        .taxonomy()?
        .enabled_ids()
        .into_iter()
        .map(String::from)
        .collect();
    Some(Columns::of(&set.rubric()?, labels))
}

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = RunStore::open(&a.dir)?;
    // A run with no judgments yet still exports its transcripts.
    let set = match (&a.judge_hash, store.judge_sets()?.is_empty()) {
        (None, true) => None,
        (wanted, _) => Some(store.find_judge_set(wanted.as_deref())?),
    };
    let hash = set.as_ref().map(|s| s.hash.clone());
    let judgments = match &hash {
        Some(h) => store.judgments(h)?,
        None => Default::default(),
    };
    let rows: Vec<_> = store
        .sessions()?
        .into_iter()
        .map(|s| {
            let j = judgments.get(&s.id).cloned();
            (s, j)
        })
        .collect();
    // The set's own rubric (stored with it) gives codes, counts and derived scores.
    let rubric = set.as_ref().and_then(JudgeSet::rubric);
    let text = match a.format {
        ExportFormat::Jsonl => export::jsonl_in(&rows, hash.as_deref(), rubric.as_ref()),
        ExportFormat::Csv => {
            let cols = columns(set.as_ref()).unwrap_or_else(|| Columns::seen(&rows));
            export::csv_in(&rows, &cols, hash.as_deref(), rubric.as_ref())
        }
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
