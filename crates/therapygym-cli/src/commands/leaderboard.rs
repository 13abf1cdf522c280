//! `therapygym leaderboard`: therapist runs ranked in statistical tiers.

use std::process::ExitCode;

use anyhow::bail;
use therapygym_report::Leaderboard;

use crate::cli::LeaderboardArgs;
use crate::commands::report::{config, inputs, load_runs, write_out};

pub fn run(a: LeaderboardArgs) -> anyhow::Result<ExitCode> {
    let runs = load_runs(&a.runs)?;
    let inputs = inputs(&runs, &a.bootstrap)?;
    let board = Leaderboard::build(
        &inputs,
        &config(&a.bootstrap),
        &therapygym_store::timestamp(),
    )?;
    let ext = a
        .out
        .as_ref()
        .and_then(|p| p.extension())
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let text = match ext.as_deref() {
        None if a.out.is_none() => board.markdown(),
        Some("md" | "markdown") => board.markdown(),
        Some("html" | "htm") => board.html()?,
        Some("json") => serde_json::to_string_pretty(&board)?,
        _ => bail!(
            "`--out` must end in .html, .md or .json (the extension picks the format); got {}",
            a.out
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
    };
    write_out(a.out.as_deref(), &text, "the leaderboard")?;
    Ok(ExitCode::SUCCESS)
}
