//! `therapygym merge SHARD_DIR... --out DIR`.

use std::process::ExitCode;

use crate::cli::MergeArgs;
use crate::commands::summary::report;
use crate::ui;

pub fn run(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let m = therapygym_eval::merge::merge_shards(&a.shards, &a.out)?;
    ui::info(&format!(
        "merged {} shards ({} sessions) into {}",
        m.shards,
        m.sessions,
        m.dir.display()
    ));
    report(&m.summary, a.json);
    Ok(ExitCode::SUCCESS)
}
