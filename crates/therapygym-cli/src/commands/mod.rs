use std::process::ExitCode;

use crate::cli::{Cli, Command, Given};

mod chat;
mod eval;
mod export;
mod import;
mod interrupt;
mod judge;
mod leaderboard;
mod merge;
mod models;
mod report;
mod run_args;
mod runs;
mod serve;
mod summary;
mod synth;
mod train;
mod validate;
mod view;

pub async fn run(cli: Cli, given: Given) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Chat(a) => chat::run(a).await,
        Command::Models(a) => models::run(a),
        Command::Eval(a) => eval::run(*a, &given).await,
        Command::Judge(a) => judge::run(a).await,
        Command::Export(a) => export::run(a),
        Command::ImportTranscripts(a) => import::run(a),
        Command::Synth(a) => synth::run(*a, &given).await,
        Command::Serve(a) => serve::run(*a).await,
        Command::Validate(a) => validate::run(*a),
        Command::Train(a) => train::run(*a, &given).await,
        Command::Report(a) => report::run(a),
        Command::Leaderboard(a) => leaderboard::run(a),
        Command::View(a) => view::run(a).await,
        Command::Runs(a) => runs::run(a),
        Command::Merge(a) => merge::run(a),
    }
}
