//! `therapygym serve`: the RL service (docs/serve.md). Behaviour lives in `therapygym-server`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use therapygym_core::Speaker;
use therapygym_run::RunConfig;
use therapygym_server::{AuthToken, ChatFormat, Server, ServerConfig, TOKEN_ENV, UnscoredPolicy};

use crate::cli::{Opening, ServeArgs};
use crate::commands::run_args::{
    absolute, absolute_data_paths, apply_judge_args, load_calibration, out_or_claim,
};
use crate::ui;

pub fn config(a: &ServeArgs) -> anyhow::Result<ServerConfig> {
    // The judge flags shared with `eval` and `judge` apply through the same code.
    let mut ec = RunConfig::new(&a.therapist_prompt);
    apply_judge_args(&mut ec, &a.judge_args);
    let mut assets = ec.assets;
    assets.profiles = a.profiles.clone().map(absolute);
    absolute_data_paths(&mut assets);
    let mut session = ec.session;
    session.turns = a.turns;
    session.closing_patient_reply = !a.no_closing_patient_reply;
    if let Some(o) = a.opening {
        session.opening = match o {
            Opening::Therapist => Speaker::Therapist,
            Opening::Patient => Speaker::Patient,
        };
    }
    if let Some(m) = a.patient_max_tokens {
        session.patient_sampling.max_tokens = m;
    }
    let unscored_policy = match a.reward_unscored.as_str() {
        "error" => UnscoredPolicy::Error,
        _ => UnscoredPolicy::Neutral {
            neutral_value: a.reward_neutral_value,
        },
    };
    let chat_format: ChatFormat = a.chat_format.parse().map_err(anyhow::Error::msg)?;
    Ok(ServerConfig {
        patient: a.patient.clone(),
        judge: a.judge.clone(),
        assets,
        holdout: a.holdout.clone().map(absolute),
        session,
        judge_config: ec.judge_config,
        calibration: load_calibration(&a.judge_args.calibration)?,
        out: a.out.clone(),
        ttl: Duration::from_secs(a.ttl_s),
        max_lifetime: Duration::from_secs(a.max_lifetime_s.max(a.ttl_s)),
        max_live_episodes: a.max_live_episodes,
        group_size: a.group_size,
        max_body_bytes: a.max_body_bytes,
        unscored_policy,
        chat_format,
        patient_concurrency: a.patient_concurrency.max(1),
        judge_concurrency: a.judge_concurrency.max(1),
        judge_timeout: a.judge_timeout_s.map(Duration::from_secs),
        auth_token: auth_token(a)?,
        policy_url_allow: a.policy_url_allow.clone(),
        turn_reward: a.turn_reward,
        ..ServerConfig::default()
    })
}

/// The token from `--auth-token-file`, else the environment (never a flag value: flags show
/// in `ps`).
fn auth_token(a: &ServeArgs) -> anyhow::Result<Option<AuthToken>> {
    if let Some(path) = &a.auth_token_file {
        return Ok(Some(
            AuthToken::from_file(path).map_err(anyhow::Error::msg)?,
        ));
    }
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(
            AuthToken::new(&t).map_err(|e| anyhow::anyhow!("{TOKEN_ENV}: {e}"))?,
        )),
        _ => Ok(None),
    }
}

pub async fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = config(&a)?;
    // Bind first: a port in use or a bad address must not leave a run directory behind, and an
    // exposed address without a token fails before the models load.
    let listener = therapygym_server::bind(&a.addr).await?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {}", a.addr))?;
    therapygym_server::check_exposure(&addr, cfg.auth_token.is_some())?;
    let authenticated = cfg.auth_token.is_some();
    // The run directory is claimed only once the address is bound.
    let mut _claimed = None;
    cfg.out = Some(out_or_claim(&cfg.out, "serve", &mut _claimed)?);
    let server = Server::new(cfg).await.context("cannot start the service")?;
    if authenticated {
        ui::info("authentication: a bearer token is required on every route but /healthz");
    }
    if let Some(dir) = server.run_dir() {
        ui::info(&format!("run directory: {}", dir.display()));
    }
    // Tests and the Python adapters read this line to find the port.
    ui::out(&format!("listening on http://{addr}"));
    server.serve(listener, shutdown_signal()).await?;
    ui::info("stopped; unfinished episodes were stored as expired");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
