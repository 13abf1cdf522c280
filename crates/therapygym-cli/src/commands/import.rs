use std::process::ExitCode;

use crate::cli::ImportArgs;
use crate::ui;

pub fn run(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let n = therapygym_eval::import::import_transcripts(&a.file, &a.out, &a.judge)?;
    ui::info(&format!(
        "imported {n} dialogues into {}; score them with `therapygym judge {}`",
        a.out.display(),
        a.out.display()
    ));
    Ok(ExitCode::SUCCESS)
}
