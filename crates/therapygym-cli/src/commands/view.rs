//! `therapygym view RUN_DIR`: the transcript viewer, served on loopback or exported as files.

use std::process::ExitCode;

use anyhow::Context;
use therapygym_view::{Pages, RunData, export, server};

use crate::cli::ViewArgs;
use crate::ui;

pub async fn run(a: ViewArgs) -> anyhow::Result<ExitCode> {
    // Check the address before reading anything, so a typo fails at once.
    let addr = match &a.export {
        None => Some(server::check_addr(&a.addr, a.allow_remote)?),
        Some(_) => None,
    };
    let run =
        RunData::load(&a.run).with_context(|| format!("cannot read run {}", a.run.display()))?;
    let pages = Pages::new(run)?;
    if let Some(dir) = &a.export {
        let done = export(&pages, dir)?;
        ui::info(&format!(
            "wrote {} pages to {}; open {} in a browser, or copy the folder to any static host",
            done.pages,
            dir.display(),
            dir.join("index.html").display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(addr) = addr else {
        return Ok(ExitCode::SUCCESS);
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server::serve(
        pages,
        addr,
        |bound| {
            ui::out(&format!("viewer on http://{bound}/"));
            ui::info("read-only; Ctrl-C stops it");
        },
        shutdown,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
