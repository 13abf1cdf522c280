//! Who may use the service (`docs/serve.md`, "Security"): a bearer token on every route but
//! `/healthz`, required whenever the service listens beyond this machine.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ServerError};
use crate::state::AppState;

/// The environment variable that holds the token when `--auth-token-file` is not given.
pub const TOKEN_ENV: &str = "THERAPYGYM_SERVE_TOKEN";

/// Shortest token accepted: 16 characters (a guessable token is no protection).
pub const MIN_TOKEN_CHARS: usize = 16;

/// The bearer token, kept only as its SHA-256 digest: comparing digests takes the same time
/// whatever the presented token shares with the real one, and the token itself is nowhere in
/// memory to be printed.
#[derive(Clone)]
pub struct AuthToken([u8; 32]);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(****)")
    }
}

impl AuthToken {
    /// A token from text (surrounding whitespace, e.g. a file's newline, is not part of it).
    pub fn new(token: &str) -> Result<Self, String> {
        let t = token.trim();
        if t.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!(
                "the service token must have at least {MIN_TOKEN_CHARS} characters; make one with `openssl rand -hex 32`"
            ));
        }
        Ok(AuthToken(Sha256::digest(t.as_bytes()).into()))
    }

    /// The token in a file (`--auth-token-file`).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        Self::new(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Constant-time comparison of the presented token with this one.
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        d.iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Refuses to serve beyond loopback without a token.
pub fn check_exposure(addr: &SocketAddr, has_token: bool) -> Result<(), ServerError> {
    if has_token || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(ServerError::Config(format!(
        "refusing to listen on {addr} without authentication: anyone who reaches the port could create episodes, score and drive rollouts. \
Set a token with `--auth-token-file FILE` or the environment variable {TOKEN_ENV} (e.g. `openssl rand -hex 32 > serve.token`), \
and give it to the clients (the Python adapters read {TOKEN_ENV}); or listen on 127.0.0.1"
    )))
}

/// The middleware: with a token configured, every route but `/healthz` needs
/// `Authorization: Bearer TOKEN`; anything else is 401 `unauthorized`.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.cfg.auth_token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    if presented.is_some_and(|t| token.matches(t)) {
        return next.run(req).await;
    }
    let why = if presented.is_some() {
        "the bearer token is wrong"
    } else {
        "this service requires `Authorization: Bearer TOKEN`"
    };
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{why} (the operator set it with `--auth-token-file` or {TOKEN_ENV}; the Python adapters send {TOKEN_ENV})"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_are_never_printed() {
        let t = AuthToken::new("  0123456789abcdef-secret\n").unwrap();
        assert!(t.matches("0123456789abcdef-secret"));
        assert!(!t.matches("0123456789abcdef-secre"));
        assert!(!t.matches("0123456789abcdef-secret2"));
        assert!(!t.matches(""));
        assert_eq!(format!("{t:?}"), "AuthToken(****)");
        assert!(
            AuthToken::new("short")
                .unwrap_err()
                .contains("openssl rand")
        );
    }

    #[test]
    fn only_loopback_may_go_without_a_token() {
        let ok = ["127.0.0.1:8700", "[::1]:8700"];
        for a in ok {
            assert!(check_exposure(&a.parse().unwrap(), false).is_ok(), "{a}");
        }
        let e = check_exposure(&"0.0.0.0:8700".parse().unwrap(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--auth-token-file") && e.contains(TOKEN_ENV),
            "{e}"
        );
        assert!(check_exposure(&"0.0.0.0:8700".parse().unwrap(), true).is_ok());
    }
}
