use std::process::ExitCode;

use anyhow::bail;
use therapygym_eval::import_csv::{CsvMapping, import_csv_transcripts, parse_speaker_map};

use crate::cli::{ImportArgs, ImportFormat};
use crate::ui;

/// The CSV column mapping, or an error naming every missing flag.
fn mapping(a: &ImportArgs) -> anyhow::Result<CsvMapping> {
    let missing: Vec<&str> = [
        ("--dialogue-col", a.dialogue_col.is_none()),
        ("--order-col", a.order_col.is_none()),
        ("--speaker-col", a.speaker_col.is_none()),
        ("--text-col", a.text_col.is_none()),
        ("--speaker-map", a.speaker_map.is_empty()),
    ]
    .into_iter()
    .filter_map(|(flag, absent)| absent.then_some(flag))
    .collect();
    if !missing.is_empty() {
        bail!(
            "a CSV import needs {} (e.g. `--dialogue-col dialogue_id --order-col turn --speaker-col speaker --text-col text --speaker-map therapist=therapist,client=patient`)",
            missing.join(", ")
        );
    }
    Ok(CsvMapping {
        dialogue_col: a.dialogue_col.clone().unwrap_or_default(),
        order_col: a.order_col.clone().unwrap_or_default(),
        speaker_col: a.speaker_col.clone().unwrap_or_default(),
        text_col: a.text_col.clone().unwrap_or_default(),
        speaker_map: parse_speaker_map(&a.speaker_map)?,
        label_cols: a.label_col.clone(),
        annotation_cols: a.annotation_col.clone(),
    })
}

pub fn run(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let csv = a.file.extension().is_some_and(|e| e == "csv");
    let n = match a.format.unwrap_or(if csv {
        ImportFormat::Csv
    } else {
        ImportFormat::Jsonl
    }) {
        ImportFormat::Csv => import_csv_transcripts(&a.file, &a.out, &a.judge, &mapping(&a)?)?,
        ImportFormat::Jsonl => {
            let csv_flags = a.dialogue_col.is_some()
                || a.order_col.is_some()
                || a.speaker_col.is_some()
                || a.text_col.is_some()
                || !a.speaker_map.is_empty()
                || !a.label_col.is_empty()
                || !a.annotation_col.is_empty();
            if csv_flags {
                bail!(
                    "the column flags (--dialogue-col, --speaker-map, --label-col, ...) are for CSV files; add `--format csv`"
                );
            }
            therapygym_eval::import::import_transcripts(&a.file, &a.out, &a.judge)?
        }
    };
    let dir = crate::commands::run_args::shell_quote(&a.out.display().to_string());
    ui::info(&format!(
        "imported {n} dialogues into {dir}; score them with `therapygym judge {dir}`"
    ));
    Ok(ExitCode::SUCCESS)
}
