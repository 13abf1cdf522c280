//! `therapygym`: parse arguments, run the command, map the outcome to an exit code
//! (0 success, 1 finished but a quality gate failed, 2 error).

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod progress;
mod ui;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    ui::init_tracing(args.debug);
    match commands::run(args).await {
        Ok(code) => code,
        Err(e) => {
            ui::error(&e);
            ExitCode::from(2)
        }
    }
}
