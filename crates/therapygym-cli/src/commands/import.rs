use std::process::ExitCode;

use crate::cli::ImportArgs;
use crate::ui;

pub fn run(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let n = therapygym_eval::import::import_transcripts(&a.file, &a.out, &a.judge)?;
    let dir = crate::commands::run_args::shell_quote(&a.out.display().to_string());
    ui::info(&format!(
        "imported {n} dialogues into {dir}; score them with `therapygym judge {dir}`"
    ));
    Ok(ExitCode::SUCCESS)
}
