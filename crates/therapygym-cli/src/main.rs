//! `therapygym`: parse arguments, run the command, map the outcome to an exit code
//! (0 success, 1 finished but a quality gate failed, 2 error, 130 interrupted by Ctrl-C).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

mod cli;
mod commands;
mod progress;
mod ui;

#[tokio::main]
async fn main() -> ExitCode {
    let cmd = cli::Cli::command();
    let matches = cmd.clone().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let given = cli::Given::from_matches(&cmd, &matches);
    ui::init_tracing(args.debug);
    match commands::run(args, given).await {
        Ok(code) => code,
        Err(e) => {
            ui::error(&e);
            ExitCode::from(2)
        }
    }
}
