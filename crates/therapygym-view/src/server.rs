//! The viewer's web app: GET-only, pages rendered from the run loaded at start (no route reads a
//! file, so none can read outside the run), loopback unless the operator allows otherwise,
//! bounded (requests in flight, request time, URI length), every page with a strict CSP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::ViewError;
use crate::render::Pages;

/// Requests served at once; more get 503 (rendering is CPU work, not I/O).
pub const MAX_IN_FLIGHT: usize = 16;
/// Longest time one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted request target.
pub const MAX_URI_BYTES: usize = 1024;

struct App {
    pages: Pages,
    permits: Semaphore,
}

/// Checks the address: loopback, or anything with `allow_remote`.
pub fn check_addr(addr: &str, allow_remote: bool) -> Result<SocketAddr, ViewError> {
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        ViewError::Input(format!(
            "`--addr {addr}` is not an address like 127.0.0.1:8710"
        ))
    })?;
    if !parsed.ip().is_loopback() && !allow_remote {
        return Err(ViewError::Input(format!(
            "`--addr {addr}` is not a loopback address; the viewer has no authentication, so anyone who reaches it reads every transcript. Add `--allow-remote` to serve it there anyway"
        )));
    }
    Ok(parsed)
}

/// The router over `pages`.
pub fn router(pages: Pages) -> Router {
    let app = Arc::new(App {
        pages,
        permits: Semaphore::new(MAX_IN_FLIGHT),
    });
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/sessions/{file}", get(session))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), bound))
        .with_state(app)
}

fn page(status: StatusCode, html: String, script: Option<&str>) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The same policy as the page's own meta tag.
    if let Ok(v) = HeaderValue::from_str(&therapygym_report::html::csp(script)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, msg: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

fn rendered(r: Result<String, therapygym_report::ReportError>, script: Option<&str>) -> Response {
    match r {
        Ok(html) => page(StatusCode::OK, html, script),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be rendered; run `therapygym view --export DIR` to see the error",
        ),
    }
}

async fn index(State(app): State<Arc<App>>) -> Response {
    rendered(app.pages.index(), Some(crate::render::SCRIPT))
}

async fn session(State(app): State<Arc<App>>, Path(file): Path<String>) -> Response {
    let Some(slug) = file.strip_suffix(".html") else {
        return not_found().await;
    };
    match app.pages.session(slug) {
        Ok(Some(html)) => page(StatusCode::OK, html, None),
        Ok(None) => not_found().await,
        Err(e) => rendered(Err(e), None),
    }
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "no such page in this run")
}

/// Bounds every request: URI length, requests in flight, time.
async fn bound(State(app): State<Arc<App>>, req: Request<Body>, next: Next) -> Response {
    if req.uri().to_string().len() > MAX_URI_BYTES {
        return text(StatusCode::URI_TOO_LONG, "request target too long");
    }
    let Ok(_permit) = app.permits.try_acquire() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "busy; try again");
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "request took too long"),
    }
}

/// Serves until `shutdown` resolves; `on_bound` gets the bound address first (port 0 picks one).
pub async fn serve(
    pages: Pages,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ViewError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ViewError::Input(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ViewError::Input(format!("cannot listen on {addr}: {e}")))?;
    on_bound(bound);
    axum::serve(listener, router(pages))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ViewError::Input(format!("viewer on {bound} stopped: {e}")))
}
