//! `therapygym serve`: the TherapyGym RL service (`docs/serve.md`).
//!
//! Four surfaces over one session runner and one judge — the evaluation's own, no second
//! implementation:
//!
//! - **env-step** `POST /v1/episodes`, `…/{id}/step`, `…/{id}/score`, `DELETE …/{id}`, plus
//!   `GET /v1/groups/{group_id}`: the engine owns the loop; episodes expire after an idle TTL;
//! - **stateless scoring** `POST /v1/score`;
//! - **OpenRLHF** `POST /get_reward`;
//! - **driver** `POST /v1/rollouts`: TherapyGym runs the session against a policy's
//!   OpenAI-compatible `base_url`;
//!
//! and `GET /healthz`, `GET /v1/info`, `GET /metrics` (Prometheus). Every finished episode is
//! written to a run store in the `eval` format (manifest kind `serve`), so `therapygym export`
//! and `therapygym judge` work on it.

mod allow;
pub mod auth;
mod circuit;
pub mod config;
mod episodes;
pub mod error;
mod groups;
mod metrics;
mod openrlhf;
mod rollouts;
mod routes;
mod state;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use auth::{AuthToken, TOKEN_ENV, check_exposure};
pub use config::{ChatFormat, CircuitConfig, ServerConfig, UnscoredPolicy};
pub use error::{ApiError, ServerError};
pub use openrlhf::{parse_label, parse_query};
pub use state::PROTOCOL;

use crate::state::AppState;

/// A configured service: data loaded, models open, run directory created.
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Loads the data, opens the patient and judge, creates the run directory (when
    /// `config.out` is set) and starts the TTL sweeper.
    pub async fn new(config: ServerConfig) -> Result<Server, ServerError> {
        let state = Arc::new(AppState::build(config).await?);
        let weak = Arc::downgrade(&state);
        let every = state
            .cfg
            .sweep_interval
            .max(std::time::Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else {
                    break;
                };
                episodes::sweep(&state).await;
            }
        });
        Ok(Server { state })
    }

    /// The HTTP routes (for `axum::serve` or in-process tests).
    pub fn router(&self) -> Router {
        routes::router(Arc::clone(&self.state))
    }

    /// The run directory finished episodes are written to.
    pub fn run_dir(&self) -> Option<PathBuf> {
        self.state.run_dir().map(PathBuf::from)
    }

    /// What `GET /v1/info` answers.
    pub fn info(&self) -> serde_json::Value {
        self.state.info()
    }

    /// Serves on `listener` until `shutdown` resolves, then stores every unfinished episode
    /// with status `expired`. Refuses an address beyond loopback without a token.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<(), ServerError>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let bound = listener.local_addr().map_err(|source| ServerError::Io {
            addr: "the listener".into(),
            source,
        })?;
        check_exposure(&bound, self.state.cfg.auth_token.is_some())?;
        let addr = bound.to_string();
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        self.shutdown().await;
        result.map_err(|source| ServerError::Io { addr, source })
    }

    /// Stores every unfinished episode with status `expired` (also run by [`Server::serve`]).
    pub async fn shutdown(&self) {
        episodes::expire_all(&self.state).await;
    }
}

/// Binds `addr` (e.g. `127.0.0.1:8700`; port 0 picks a free one).
pub async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Io {
            addr: addr.to_string(),
            source,
        })
}
