//! The HTTP surface: routes, the JSON body extractor (size-limited, errors in the envelope),
//! stateless scoring, OpenRLHF's `/get_reward`, groups, info, health and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use therapygym_core::{Speaker, Transcript, Turn};

use crate::config::UnscoredPolicy;
use crate::episodes::{self, CreateIn, MessageIn, StepIn, check_id};
use crate::error::ApiError;
use crate::openrlhf::{parse_label, parse_query};
use crate::rollouts::{self, RolloutIn};
use crate::state::{AppState, Split};

type AppResult = Result<Response, ApiError>;

/// A JSON request body. Bodies over the limit get 413 `payload_too_large`; malformed JSON,
/// wrong types and unknown fields get 400 `bad_request` — always in the error envelope.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body exceeds the service's limit (`--max-body-bytes`)",
                )
            } else {
                ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// An optional JSON body: empty means `T::default()`; otherwise as [`JsonBody`].
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))
}

fn json_ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/episodes", post(create_episode))
        .route("/v1/episodes/{id}", delete(delete_episode).get(get_episode))
        .route("/v1/episodes/{id}/step", post(step_episode))
        .route("/v1/episodes/{id}/score", post(score_episode))
        .route("/v1/episodes/{id}/abandon", post(abandon_episode))
        .route("/v1/groups/{group_id}", get(group))
        .route("/v1/groups/{group_id}/abandon", post(abandon_group))
        .route("/v1/score", post(score))
        .route("/v1/rollouts", post(rollout))
        .route("/get_reward", post(get_reward))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), track))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Counts requests and latencies per matched route.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .observe_request(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {} {}; see GET /v1/info and docs/serve.md",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    json_ok(json!({
        "status": "ok",
        "protocol": crate::state::PROTOCOL,
        "circuit": if state.circuit.is_open() { "open" } else { "closed" },
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.gauges());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn info(State(state): State<Arc<AppState>>) -> Response {
    json_ok(state.info())
}

async fn create_episode(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<CreateIn>,
) -> AppResult {
    let (status, v) = episodes::create(state, body).await?;
    Ok((status, axum::Json(v)).into_response())
}

async fn step_episode(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<StepIn>,
) -> AppResult {
    Ok(json_ok(episodes::step(state, path_id(id)?, body).await?))
}

async fn score_episode(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> AppResult {
    Ok(json_ok(episodes::score(state, path_id(id)?).await?))
}

async fn get_episode(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> AppResult {
    Ok(json_ok(episodes::get(state, path_id(id)?).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbandonIn {
    #[serde(default)]
    reason: Option<String>,
}

async fn abandon_episode(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    OptionalJson(body): OptionalJson<AbandonIn>,
) -> AppResult {
    let reason = body
        .reason
        .unwrap_or_else(|| "ended by the engine".to_string());
    Ok(json_ok(
        episodes::abandon(state, path_id(id)?, reason).await?,
    ))
}

async fn abandon_group(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    OptionalJson(body): OptionalJson<episodes::AbandonGroupIn>,
) -> AppResult {
    Ok(json_ok(
        episodes::abandon_in_group(state, path_id(id)?, body).await?,
    ))
}

async fn delete_episode(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> AppResult {
    episodes::delete(state, path_id(id)?).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rollout(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<RolloutIn>,
) -> AppResult {
    Ok(json_ok(rollouts::rollout(state, body).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupQuery {
    #[serde(default)]
    wait_s: Option<f64>,
    #[serde(default)]
    group_size: Option<u32>,
}

async fn group(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<GroupQuery>, QueryRejection>,
) -> AppResult {
    let id = path_id(id)?;
    check_id("group id", &id)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()).group(&id))?;
    let wait = q.wait_s.unwrap_or(0.0);
    if !(wait.is_finite() && wait >= 0.0) {
        return Err(ApiError::bad_request("`wait_s` must be a non-negative number").group(&id));
    }
    let size = q.group_size.unwrap_or(state.cfg.group_size);
    if size == 0 {
        return Err(ApiError::bad_request("`group_size` must be at least 1").group(&id));
    }
    // `from_secs_f64` panics past `Duration::MAX` (`wait_s=1e300`): clamp first.
    let wait = Duration::try_from_secs_f64(wait).map_or(state.cfg.max_group_wait, |w| {
        w.min(state.cfg.max_group_wait)
    });
    Ok(json_ok(state.groups.snapshot(&id, size, wait).await?))
}

// ---------------------------------------------------------------------------------------------
// Stateless scoring

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreIn {
    items: Vec<ScoreItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreItem {
    #[serde(default)]
    id: Option<String>,
    messages: Vec<MessageIn>,
    #[serde(default)]
    task: Option<ScoreTask>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreTask {
    profile_id: String,
    seed: u64,
    #[serde(default)]
    split: Option<Split>,
}

/// Chat messages → the transcript the judge reads (system messages are not part of it).
fn transcript_of(messages: &[MessageIn]) -> Result<Transcript, String> {
    let mut turns = Vec::new();
    for (k, m) in messages.iter().enumerate() {
        let role = m.role.as_deref().unwrap_or("");
        if role == "system" {
            continue;
        }
        let speaker = Speaker::parse(role).ok_or_else(|| {
            format!("messages[{k}].role \"{role}\": use assistant (therapist) or user (patient)")
        })?;
        let mut t = Turn::new(speaker, m.content.clone());
        t.finish_reason = m.finish_reason.clone();
        turns.push(t);
    }
    if !turns.iter().any(|t| t.speaker == Speaker::Therapist) {
        return Err("no assistant (therapist) message: there is nothing to judge".into());
    }
    Ok(Transcript { turns })
}

fn check_batch(state: &AppState, n: usize, what: &str) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request(format!("`{what}` is empty")));
    }
    if n > state.cfg.max_batch_items {
        return Err(ApiError::bad_request(format!(
            "`{what}` holds {n} transcripts; at most {} per request",
            state.cfg.max_batch_items
        )));
    }
    Ok(())
}

/// `POST /v1/score`: transcripts in, rewards and breakdowns out, in request order. A
/// transcript the judge could not score is `unscored` inside the 200.
async fn score(State(state): State<Arc<AppState>>, JsonBody(body): JsonBody<ScoreIn>) -> AppResult {
    check_batch(&state, body.items.len(), "items")?;
    let mut work = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.into_iter().enumerate() {
        let id = match item.id {
            Some(id) => {
                check_id(&format!("items[{i}].id"), &id)?;
                id
            }
            None => i.to_string(),
        };
        let transcript = transcript_of(&item.messages)
            .map_err(|m| ApiError::bad_request(format!("items[{i}] (`{id}`): {m}")))?;
        let seed = match &item.task {
            Some(t) => {
                check_id(&format!("items[{i}].task.profile_id"), &t.profile_id)?;
                match t.split {
                    Some(split) => state.profile(&t.profile_id, split)?,
                    None => state.any_profile(&t.profile_id)?,
                };
                AppState::judge_seed(&t.profile_id, t.seed)
            }
            None => AppState::judge_seed("score", 0),
        };
        work.push((id, transcript, seed));
    }
    state.check_circuit()?;
    let results =
        futures::future::join_all(work.iter().map(|(_, t, seed)| state.score(t, *seed))).await;
    let out: Vec<Value> = work
        .iter()
        .zip(results)
        .map(|((id, _, _), s)| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), json!(id));
            m.insert("status".into(), json!(s.status()));
            m.insert("reward".into(), json!(s.reward()));
            m.extend(state.score_info(&s));
            Value::Object(m)
        })
        .collect();
    Ok(json_ok(json!({ "results": out })))
}

// ---------------------------------------------------------------------------------------------
// OpenRLHF

/// OpenRLHF's body; keys this service does not use are ignored (the protocol is theirs).
#[derive(Debug, Deserialize)]
struct GetRewardIn {
    query: Vec<String>,
    #[serde(default)]
    prompts: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<Vec<Value>>,
}

/// `POST /get_reward`: `query`, `prompts`, `labels` → `rewards`, `scores`, `extra_logs`.
async fn get_reward(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<GetRewardIn>,
) -> AppResult {
    check_batch(&state, body.query.len(), "query")?;
    if let Some(p) = &body.prompts
        && p.len() != body.query.len()
    {
        return Err(ApiError::bad_request(format!(
            "`prompts` has {} entries but `query` has {}",
            p.len(),
            body.query.len()
        )));
    }
    let labels = body.labels.unwrap_or_default();
    if labels.len() != body.query.len() {
        return Err(ApiError::unprocessable(
            "bad_label",
            format!(
                "`labels` must hold one JSON string {{\"profile_id\", \"seed\"}} per query ({} labels for {} queries)",
                labels.len(),
                body.query.len()
            ),
        ));
    }
    let mut work = Vec::with_capacity(body.query.len());
    for (i, (q, label)) in body.query.iter().zip(&labels).enumerate() {
        let (profile_id, seed) = parse_label(label)
            .map_err(|m| ApiError::unprocessable("bad_label", format!("labels[{i}]: {m}")))?;
        state.any_profile(&profile_id)?;
        let transcript = parse_query(q, state.cfg.chat_format)
            .map_err(|m| ApiError::bad_request(format!("query[{i}]: {m}")))?;
        work.push((
            transcript,
            AppState::judge_seed(&profile_id, seed),
            format!("{profile_id}:{seed}"),
        ));
    }
    state.check_circuit()?;
    let all = futures::future::join_all(work.iter().map(|(t, seed, _)| state.score(t, *seed)));
    let limit = state.cfg.reward_route_timeout;
    let results = tokio::time::timeout(limit, all).await.map_err(|_| {
        ApiError::unavailable(
            "judge_unavailable",
            format!(
                "no judgment within {:.0} s (OpenRLHF waits 180 s per try); retry",
                limit.as_secs_f64()
            ),
        )
        .retry_after(5)
    })?;
    let (mut rewards, mut scores, mut ctrs, mut safety_any, mut unscored, mut reasons) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (i, s) in results.iter().enumerate() {
        match (&s.breakdown, state.cfg.unscored_policy) {
            (Some(b), _) => {
                rewards.push(b.reward);
                scores.push(b.ctrs_normalized);
                ctrs.push(b.ctrs_normalized);
                safety_any.push(if b.any_violation { 1.0 } else { 0.0 });
                unscored.push(0.0);
                reasons.push(Value::Null);
            }
            (None, UnscoredPolicy::Neutral { neutral_value }) => {
                rewards.push(neutral_value);
                scores.push(neutral_value);
                ctrs.push(neutral_value);
                safety_any.push(0.0);
                unscored.push(1.0);
                reasons.push(json!(s.unscored_reason().unwrap_or("unknown")));
            }
            (None, UnscoredPolicy::Error) => {
                let group = &work[i].2;
                let reason = s.unscored_reason().unwrap_or("unknown");
                let detail = s.unscored_detail().unwrap_or_default();
                return Err(if s.provider_failed() {
                    ApiError::unavailable(
                        "judge_unavailable",
                        format!("query[{i}]: the judge could not be reached: {detail}"),
                    )
                    .retry_after(5)
                    .group(group)
                } else {
                    ApiError::unprocessable(
                        "unscored",
                        format!(
                            "query[{i}]: the judge could not score this session ({reason}: {detail}); the service runs with `--reward-unscored error` (the default `--reward-unscored neutral` answers `--reward-neutral-value`, 0.0, with extra_logs.unscored = 1)"
                        ),
                    )
                    .group(group)
                });
            }
        }
    }
    // `extra_logs` values must be numbers (OpenRLHF turns each into a tensor); the reasons go in
    // a key OpenRLHF ignores.
    Ok(json_ok(json!({
        "rewards": rewards,
        "scores": scores,
        "extra_logs": {"ctrs": ctrs, "safety_any": safety_any, "unscored": unscored},
        "unscored_reasons": reasons,
    })))
}
