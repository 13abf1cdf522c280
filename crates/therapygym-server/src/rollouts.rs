//! The driver (`POST /v1/rollouts`, `docs/serve.md`): TherapyGym runs a whole session
//! against a policy behind any OpenAI-compatible `base_url` (a token-recording proxy: rLLM
//! gateway, AReaL, OpenRLHF's executor, TRL AsyncGRPO, ART), then judges it.
//!
//! The session is the same [`therapygym_session::Session`] state machine `eval` drives; the
//! driver keeps its own chat history, because proxies require the **exact, append-only** history
//! every turn: the policy's replies are resent byte for byte (the transcript the judge reads
//! holds the cleaned text; the policy never sees it), patient replies are appended once and never
//! rewritten, and the closing patient reply is judged but never sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use therapygym_core::Speaker;
use therapygym_models::{
    ApiKey, ChatMessage, ChatRequest, Model, ModelSpec, OpenAiBackend, Sampling, redact_url,
};
use therapygym_run::{model_options, record_of};
use therapygym_session::{EndReason, Session};
use therapygym_store::SessionStatus;

use crate::episodes::{
    EpisodeSpec, LimitsIn, OpeningIn, TaskIn, admit, approx_tokens, final_info, new_session,
    patient_turn, resolve,
};
use crate::error::ApiError;
use crate::groups::MemberStatus;
use crate::state::{AppState, PROTOCOL};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutIn {
    #[serde(default)]
    pub episode_id: Option<String>,
    #[serde(default)]
    pub group_id: Option<String>,
    pub task: TaskIn,
    #[serde(default)]
    pub limits: Option<LimitsIn>,
    #[serde(default)]
    pub opening: Option<OpeningIn>,
    pub policy: PolicyIn,
}

/// No `Debug`: it holds the policy's API key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub sampling: Option<SamplingIn>,
    #[serde(default)]
    pub extra_body: Option<Map<String, Value>>,
    #[serde(default)]
    pub return_choices: bool,
}

/// Sampling settings; keys other than these (e.g. `top_k`, `min_p`, `logprobs`) are sent as is.
#[derive(Debug, Deserialize)]
pub struct SamplingIn {
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Decrements the live-rollout gauge however the rollout ends.
struct LiveGuard(Arc<AppState>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live_rollouts.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Only an endpoint under the operator's `--policy-url-allow` prefixes is ever called.
fn check_allowed(state: &AppState, base_url: &str) -> Result<(), ApiError> {
    let forbidden = |kind, message: &str| {
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            kind,
            message,
        ))
    };
    if state.policy_allow.is_empty() {
        return forbidden(
            "rollouts_disabled",
            "the rollout driver is disabled: the operator allowed no policy endpoints (`therapygym serve --policy-url-allow PREFIX`); drive episodes with /v1/episodes instead",
        );
    }
    if !state.policy_allow.allows(base_url) {
        return forbidden(
            "policy_url_not_allowed",
            "`policy.base_url` is not under a prefix the operator allowed (`--policy-url-allow`); ask the operator to allow your policy endpoint",
        );
    }
    Ok(())
}

fn policy_model(state: &AppState, p: PolicyIn) -> Result<(Model, Sampling, Value), ApiError> {
    if p.return_choices {
        return Err(ApiError::bad_request(
            "`policy.return_choices` is not supported by this service: the model layer does not keep raw choices or logprobs; read them from the token-recording proxy",
        ));
    }
    let base_url = p.base_url.trim_end_matches('/').to_string();
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(ApiError::bad_request(
            "`policy.base_url` must be an http(s) URL ending in /v1, e.g. http://127.0.0.1:8000/v1",
        ));
    }
    check_allowed(state, &base_url)?;
    let model = p.model.unwrap_or_else(|| "default".to_string());
    if model.is_empty() {
        return Err(ApiError::bad_request("`policy.model` must not be empty"));
    }
    let s = p.sampling.unwrap_or(SamplingIn {
        temperature: None,
        top_p: None,
        max_tokens: None,
        seed: None,
        stop: None,
        extra: Map::new(),
    });
    let sampling = Sampling {
        temperature: s.temperature.unwrap_or(1.0),
        top_p: s.top_p.unwrap_or(1.0),
        max_tokens: s.max_tokens.unwrap_or(1024),
        seed: s.seed,
        stop: s.stop.unwrap_or_default(),
    };
    let valid = sampling.temperature.is_finite()
        && sampling.temperature >= 0.0
        && sampling.top_p > 0.0
        && sampling.top_p <= 1.0
        && sampling.max_tokens > 0;
    if !valid {
        return Err(ApiError::bad_request(
            "`policy.sampling` needs temperature ≥ 0, 0 < top_p ≤ 1 and max_tokens ≥ 1",
        ));
    }
    let mut extra = s.extra;
    if let Some(e) = p.extra_body {
        extra.extend(e);
    }
    let backend = OpenAiBackend::new(model.clone(), base_url.clone(), p.api_key.map(ApiKey::new))
        .map_err(|e| ApiError::bad_request(format!("policy: {e}")))?
        .with_extra_body(extra);
    let spec = ModelSpec::OpenAi {
        model: model.clone(),
        base_url: base_url.clone(),
        key_env: None,
    };
    let mut o = model_options(&spec, 1);
    o.retry = state.cfg.retry.clone();
    let shown = json!({"base_url": redact_url(&base_url), "model": model});
    let m = Model::from_backend(spec, Arc::new(backend), o)
        .map_err(|e| ApiError::bad_request(format!("policy: {e}")))?;
    Ok((m, sampling, shown))
}

/// `POST /v1/rollouts`.
pub async fn rollout(state: Arc<AppState>, body: RolloutIn) -> Result<Value, ApiError> {
    let (id, spec) = resolve(
        &state,
        body.episode_id,
        body.group_id,
        &body.task,
        body.limits.as_ref(),
        body.opening,
    )?;
    let (policy, sampling, shown) =
        policy_model(&state, body.policy).map_err(|e| e.episode(&id).group(&spec.group_id))?;
    if state.episodes.contains(&id) {
        // Ids are unique across env-step episodes and rollouts.
        return Err(ApiError::conflict(
            "episode_exists",
            format!("`{id}` is the id of an env-step episode; use a new episode_id"),
        )
        .episode(&id)
        .group(&spec.group_id));
    }
    state
        .check_circuit()
        .map_err(|e| e.episode(&id).group(&spec.group_id))?;
    admit(&state).map_err(|e| e.episode(&id).group(&spec.group_id))?;
    let session = new_session(&state, &spec).map_err(|e| e.episode(&id))?;
    state.live_rollouts.fetch_add(1, Ordering::Relaxed);
    let guard = LiveGuard(Arc::clone(&state));
    if state.groups.join(
        &spec.group_id,
        &spec.profile_id,
        spec.seed,
        &id,
        "rollout",
        state.cfg.group_size,
    )? {
        state
            .metrics
            .counters
            .group_overflows
            .fetch_add(1, Ordering::Relaxed);
    }
    // Spawned so a client that disconnects does not leave a group member hanging.
    let st = Arc::clone(&state);
    let task_id = id.clone();
    let result = tokio::spawn(async move {
        let _guard = guard;
        drive(st, task_id, spec, session, policy, sampling, shown).await
    })
    .await;
    result.map_err(|e| ApiError::internal(format!("rollout task failed: {e}")).episode(&id))?
}

/// A rollout in progress: the policy's chat history (append-only, resent every turn) and a
/// record per policy turn.
struct Rollout<'a> {
    id: &'a str,
    gid: &'a str,
    spec: &'a EpisodeSpec,
    policy: &'a Model,
    sampling: &'a Sampling,
    history: Vec<ChatMessage>,
    turns: Vec<Value>,
    token_limit: bool,
}

impl Rollout<'_> {
    /// Alternates patient and policy turns until the session ends.
    async fn play(&mut self, state: &AppState, s: &mut Session) -> Result<(), ApiError> {
        while let Some(next) = s.next_speaker() {
            match next {
                Speaker::Patient => {
                    let text = patient_turn(state, s, self.id, self.gid).await?;
                    if !s.is_done() {
                        self.history.push(ChatMessage::user(text));
                    }
                }
                Speaker::Therapist => self.policy_turn(s).await?,
            }
        }
        Ok(())
    }

    /// One therapist turn from the policy; ends the session when the token budget is spent.
    async fn policy_turn(&mut self, s: &mut Session) -> Result<(), ApiError> {
        let req = ChatRequest::new(self.history.clone()).with_sampling(self.sampling.clone());
        let resp = self.policy.chat(&req).await.map_err(|e| {
            let (status, kind) = if e.is_retryable() {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "policy_unavailable",
                )
            } else {
                (axum::http::StatusCode::BAD_GATEWAY, "policy_error")
            };
            // The policy's own reply stays in the operator's log: echoing an upstream body to
            // the client would make the service a window into whatever answers at that URL.
            tracing::warn!(episode = %self.id, error = %e, "policy call failed");
            let status_text = e.status().map(|c| format!(", HTTP {c}")).unwrap_or_default();
            ApiError::new(
                status,
                kind,
                format!(
                    "policy turn {} failed after bounded retries ({}{status_text}, {} attempt(s)); the service log has the details",
                    s.therapist_turns() + 1,
                    e.kind(),
                    e.attempts()
                ),
            )
            .retryable(e.is_retryable())
            .episode(self.id)
            .group(self.gid)
        })?;
        self.turns.push(json!({
            "request_id": null,
            "finish_reason": resp.finish_reason.as_str(),
            "usage": {"prompt_tokens": resp.prompt_tokens, "completion_tokens": resp.completion_tokens},
            "latency_ms": u64::try_from(resp.latency.as_millis()).unwrap_or(u64::MAX),
            "attempts": resp.attempts,
        }));
        self.history.push(ChatMessage::assistant(resp.text.clone()));
        s.push_therapist(&resp.text, Some(&resp))
            .map_err(|e| ApiError::internal(e.to_string()).episode(self.id))?;
        if let Some(limit) = self.spec.max_total_tokens
            && !s.is_done()
            && approx_tokens(&s.therapist_system, &s.transcript) >= limit
        {
            s.end = Some(EndReason::TurnLimit);
            self.token_limit = true;
        }
        Ok(())
    }
}

async fn drive(
    state: Arc<AppState>,
    id: String,
    spec: EpisodeSpec,
    mut s: Session,
    policy: Model,
    sampling: Sampling,
    shown: Value,
) -> Result<Value, ApiError> {
    let started = Instant::now();
    let gid = spec.group_id.clone();
    let mut rollout = Rollout {
        id: &id,
        gid: &gid,
        spec: &spec,
        policy: &policy,
        sampling: &sampling,
        history: vec![ChatMessage::system(s.therapist_system.clone())],
        turns: Vec::new(),
        token_limit: false,
    };
    let outcome = rollout.play(&state, &mut s).await;
    let Rollout {
        history,
        turns,
        token_limit,
        ..
    } = rollout;
    let c = &state.metrics.counters;
    c.policy_calls.fetch_add(
        policy.stats().calls.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    c.policy_retries.fetch_add(
        policy.stats().retries.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    let meta = json!({
        "source": "rollout",
        "episode_id": id,
        "group_id": gid,
        "split": spec.split.as_str(),
        "max_therapist_turns": spec.turns,
        "max_total_tokens": spec.max_total_tokens,
        "closing_patient_reply": spec.closing_patient_reply,
        "token_limit_reached": token_limit,
        "policy": shown,
        "sampling": sampling,
        "turns": turns,
        "protocol": PROTOCOL,
    });
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Err(e) = outcome {
        c.rollouts_failed.fetch_add(1, Ordering::Relaxed);
        state
            .groups
            .finish(&gid, &id, MemberStatus::Failed, None, None);
        let mut rec = record_of(
            &s,
            0,
            SessionStatus::Failed,
            Some(e.message.clone()),
            ms,
            state.attempt(),
            meta,
        );
        rec.id = id.clone();
        state.store(rec, None).await;
        return Err(e);
    }
    let scored = state.score(&s.transcript, s.seeds().judge).await;
    let info = final_info(&state, &s, &scored, token_limit);
    state.groups.finish_judged(&gid, &id, &scored);
    c.rollouts_finished.fetch_add(1, Ordering::Relaxed);
    let mut rec = record_of(
        &s,
        0,
        SessionStatus::Completed,
        None,
        ms,
        state.attempt(),
        meta,
    );
    rec.id = id.clone();
    state.store(rec, Some(scored.clone())).await;
    Ok(json!({
        "episode_id": id,
        "group_id": gid,
        "protocol": PROTOCOL,
        "messages": history.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect::<Vec<_>>(),
        "done": true,
        "reward": scored.reward(),
        "status": scored.status(),
        "info": info,
        "turns": turns,
    }))
}
