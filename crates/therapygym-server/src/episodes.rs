//! Env-step episodes (`docs/serve.md`): the engine posts each therapist turn and gets
//! the patient's reply, or `done` with the reward. Each episode is a [`Session`] — the same state
//! machine `eval` drives — held in a registry with an idle TTL and a hard lifetime, swept in the
//! background (verl never closes its interactions).
//!
//! Every mutation of an episode runs in a spawned task holding the episode's lock, so a client
//! that disconnects mid-request never leaves an episode half-updated: its retry (same turn, same
//! content) gets the stored response.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use therapygym_core::profile::valid_id;
use therapygym_core::seed::derive;
use therapygym_core::{Speaker, Transcript};
use therapygym_run::record_of;
use therapygym_session::{EndReason, Session, SessionConfig, SessionError};
use therapygym_store::SessionStatus;
use tokio::sync::OwnedMutexGuard;

use crate::error::ApiError;
use crate::groups::MemberStatus;
use crate::state::{AppState, PROTOCOL, Scored, Split};

// ---------------------------------------------------------------------------------------------
// Wire types

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskIn {
    pub profile_id: String,
    pub seed: u64,
    #[serde(default)]
    pub split: Option<Split>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsIn {
    #[serde(default)]
    pub max_therapist_turns: Option<u32>,
    #[serde(default)]
    pub max_total_tokens: Option<u64>,
    #[serde(default)]
    pub closing_patient_reply: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpeningIn {
    Therapist,
    Patient,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIn {
    #[serde(default)]
    pub episode_id: Option<String>,
    #[serde(default)]
    pub group_id: Option<String>,
    pub task: TaskIn,
    #[serde(default)]
    pub limits: Option<LimitsIn>,
    #[serde(default)]
    pub opening: Option<OpeningIn>,
}

/// A chat message as engines send it (extra OpenAI keys such as `name` are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct MessageIn {
    #[serde(default)]
    pub role: Option<String>,
    pub content: String,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepIn {
    pub assistant: MessageIn,
    pub turn: u32,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The normalised task of an episode (also used by the rollout driver)

#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeSpec {
    pub profile_id: String,
    pub seed: u64,
    pub split: Split,
    pub group_id: String,
    pub turns: u32,
    pub max_total_tokens: Option<u64>,
    pub closing_patient_reply: bool,
    pub opening: Speaker,
}

pub fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{what}` must be 1 to 128 characters from A-Z a-z 0-9 . _ : - (got {} characters)",
            id.chars().count()
        )))
    }
}

/// Validates ids and limits, resolves defaults and checks the profile against its split.
pub fn resolve(
    state: &AppState,
    episode_id: Option<String>,
    group_id: Option<String>,
    task: &TaskIn,
    limits: Option<&LimitsIn>,
    opening: Option<OpeningIn>,
) -> Result<(String, EpisodeSpec), ApiError> {
    let id = match episode_id {
        Some(id) => {
            check_id("episode_id", &id)?;
            id
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    check_id("task.profile_id", &task.profile_id).map_err(|e| e.episode(&id))?;
    let group_id = group_id.unwrap_or_else(|| format!("{}:{}", task.profile_id, task.seed));
    check_id("group_id", &group_id).map_err(|e| e.episode(&id))?;
    let d = &state.cfg.session;
    let limits = limits.cloned().unwrap_or_default();
    let turns = limits.max_therapist_turns.unwrap_or(d.turns);
    if turns == 0 || turns > state.cfg.max_turns {
        return Err(ApiError::bad_request(format!(
            "`limits.max_therapist_turns` must be between 1 and {}",
            state.cfg.max_turns
        ))
        .episode(&id)
        .group(&group_id));
    }
    if limits.max_total_tokens == Some(0) {
        return Err(
            ApiError::bad_request("`limits.max_total_tokens` must be positive")
                .episode(&id)
                .group(&group_id),
        );
    }
    let split = task.split.unwrap_or(Split::Train);
    state
        .profile(&task.profile_id, split)
        .map_err(|e| e.episode(&id).group(&group_id))?;
    Ok((
        id,
        EpisodeSpec {
            profile_id: task.profile_id.clone(),
            seed: task.seed,
            split,
            group_id,
            turns,
            max_total_tokens: limits.max_total_tokens,
            closing_patient_reply: limits
                .closing_patient_reply
                .unwrap_or(d.closing_patient_reply),
            opening: match opening {
                Some(OpeningIn::Therapist) => Speaker::Therapist,
                Some(OpeningIn::Patient) => Speaker::Patient,
                None => d.opening,
            },
        },
    ))
}

/// A fresh session for a task: the patient of `(profile_id, seed)`, whoever drives it.
pub fn new_session(state: &AppState, spec: &EpisodeSpec) -> Result<Session, ApiError> {
    let profile = state.profile(&spec.profile_id, spec.split)?;
    let config = SessionConfig {
        turns: spec.turns,
        opening: spec.opening,
        closing_patient_reply: spec.closing_patient_reply,
        ..state.cfg.session.clone()
    };
    let system = state.therapist_system(&config)?;
    Session::new(
        profile,
        spec.seed,
        config,
        &state.assets.vocab,
        &state.assets.patient_prompt,
        system,
    )
    .map_err(|e| ApiError::internal(format!("cannot start the session: {e}")))
}

/// Runs the patient's turn; a patient that ends the session before the therapist has spoken is
/// not allowed to (there would be nothing to judge).
pub async fn patient_turn(
    state: &AppState,
    s: &mut Session,
    episode_id: &str,
    group_id: &str,
) -> Result<String, ApiError> {
    match s.patient_turn(&state.patient).await {
        Ok(t) => {
            let text = t.text.clone();
            if s.therapist_turns() == 0 && s.end == Some(EndReason::PatientEnded) {
                s.end = None;
            }
            Ok(text)
        }
        Err(SessionError::Model { source, .. }) => Err(ApiError::unavailable(
            "patient_unavailable",
            format!("the patient model failed after bounded retries: {source}"),
        )
        .retry_after(5)
        .episode(episode_id)
        .group(group_id)),
        Err(e) => Err(ApiError::internal(e.to_string())
            .episode(episode_id)
            .group(group_id)),
    }
}

/// Approximate tokens of a session (UTF-8 bytes / 4, as `docs/serve.md` documents).
pub fn approx_tokens(system: &str, t: &Transcript) -> u64 {
    let bytes = system.len() + t.turns.iter().map(|x| x.text.len()).sum::<usize>();
    (bytes / 4) as u64
}

pub fn seeds_json(s: &Session) -> Value {
    let seeds = s.seeds();
    json!({"session": seeds.session, "patient": seeds.session, "patient_open": seeds.patient_open, "judge": seeds.judge})
}

pub fn end_reason(s: &Session) -> Option<&'static str> {
    s.end.map(|e| match e {
        EndReason::TurnLimit => "turn_limit",
        EndReason::PatientEnded => "patient_ended",
    })
}

fn expires_at(ttl: Duration) -> String {
    let at = chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

// ---------------------------------------------------------------------------------------------
// The registry

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Being created (the patient may be writing its opening).
    Opening,
    Active,
    Done,
    Expired,
    Deleted,
    /// Creation failed; the entry is gone.
    Failed,
    /// The engine ended it before the service did (`POST /v1/episodes/{id}/abandon`).
    Abandoned,
}

#[derive(Debug)]
struct StepRecord {
    content: String,
    response: Value,
}

pub struct Episode {
    phase: Phase,
    session: Session,
    steps: Vec<StepRecord>,
    final_score: Option<Value>,
    opening_messages: Vec<Value>,
    started: Instant,
    token_limit_hit: bool,
}

pub struct Entry {
    pub id: String,
    pub spec: EpisodeSpec,
    ep: Arc<tokio::sync::Mutex<Episode>>,
    touched: Mutex<Instant>,
    created: Instant,
    done: AtomicBool,
}

impl Entry {
    fn touch(&self) {
        if let Ok(mut t) = self.touched.lock() {
            *t = Instant::now();
        }
    }

    fn idle(&self) -> Duration {
        self.touched.lock().map(|t| t.elapsed()).unwrap_or_default()
    }
}

enum Lookup {
    Live(Arc<Entry>),
    Expired,
    Missing,
}

/// Live episodes by id, plus the ids of expired ones (so they answer 410, not 404).
#[derive(Default)]
pub struct Registry {
    map: Mutex<HashMap<String, Arc<Entry>>>,
    active: AtomicUsize,
    tombstones: Mutex<(HashSet<String>, VecDeque<String>)>,
}

const TOMBSTONES: usize = 200_000;

impl Registry {
    fn lookup(&self, id: &str) -> Lookup {
        if let Some(e) = self.map.lock().ok().and_then(|m| m.get(id).cloned()) {
            return Lookup::Live(e);
        }
        if self.tombstones.lock().is_ok_and(|t| t.0.contains(id)) {
            return Lookup::Expired;
        }
        Lookup::Missing
    }

    fn get(&self, id: &str) -> Result<Arc<Entry>, ApiError> {
        match self.lookup(id) {
            Lookup::Live(e) => {
                e.touch();
                Ok(e)
            }
            Lookup::Expired => Err(ApiError::episode_expired(id)),
            Lookup::Missing => Err(ApiError::episode_not_found(id)),
        }
    }

    /// Inserts a new entry unless the id is taken (then returns the holder).
    fn insert(&self, e: Arc<Entry>) -> Result<(), Arc<Entry>> {
        let Ok(mut m) = self.map.lock() else {
            return Err(e);
        };
        if let Some(existing) = m.get(&e.id) {
            return Err(Arc::clone(existing));
        }
        m.insert(e.id.clone(), e);
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Marks an entry done or gone (once): it no longer counts as live.
    fn retire(&self, e: &Entry) {
        if !e.done.swap(true, Ordering::AcqRel) {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, id: &str) -> Option<Arc<Entry>> {
        let e = self.map.lock().ok()?.remove(id)?;
        self.retire(&e);
        Some(e)
    }

    fn tombstone(&self, id: &str) {
        if let Ok(mut t) = self.tombstones.lock()
            && t.0.insert(id.to_string())
        {
            t.1.push_back(id.to_string());
            while t.1.len() > TOMBSTONES {
                if let Some(old) = t.1.pop_front() {
                    t.0.remove(&old);
                }
            }
        }
    }

    /// Removes and returns the entries idle past `ttl` or older than `max_lifetime`.
    fn take_expired(&self, ttl: Duration, max_lifetime: Duration) -> Vec<Arc<Entry>> {
        let Ok(mut m) = self.map.lock() else {
            return Vec::new();
        };
        let ids: Vec<String> = m
            .values()
            .filter(|e| e.idle() > ttl || e.created.elapsed() > max_lifetime)
            .map(|e| e.id.clone())
            .collect();
        let out: Vec<Arc<Entry>> = ids.iter().filter_map(|id| m.remove(id)).collect();
        drop(m);
        for e in &out {
            self.retire(e);
            self.tombstone(&e.id);
        }
        out
    }

    fn take_all(&self) -> Vec<Arc<Entry>> {
        let Ok(mut m) = self.map.lock() else {
            return Vec::new();
        };
        let out: Vec<Arc<Entry>> = m.drain().map(|(_, e)| e).collect();
        drop(m);
        for e in &out {
            self.retire(e);
        }
        out
    }

    /// (episodes in progress, finished episodes still held).
    pub fn counts(&self) -> (usize, usize) {
        let total = self.map.lock().map(|m| m.len()).unwrap_or(0);
        let active = self.active.load(Ordering::Relaxed);
        (active, total.saturating_sub(active))
    }

    pub fn contains(&self, id: &str) -> bool {
        !matches!(self.lookup(id), Lookup::Missing)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// Admission control: episodes and rollouts in progress are capped (429 `overloaded`).
pub fn admit(state: &AppState) -> Result<(), ApiError> {
    let live = state.episodes.active() + state.live_rollouts.load(Ordering::Relaxed);
    if live >= state.cfg.max_live_episodes {
        state
            .metrics
            .counters
            .overloaded
            .fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!(
                "{live} episodes are in progress (max_live_episodes = {}); finish or DELETE some, or retry later",
                state.cfg.max_live_episodes
            ),
        )
        .retry_after(5));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Routes' logic

fn create_response(state: &AppState, entry: &Entry, ep: &Episode) -> Value {
    let profile_hash = state
        .profile(&entry.spec.profile_id, entry.spec.split)
        .map(|p| p.hash())
        .ok();
    json!({
        "episode_id": entry.id,
        "group_id": entry.spec.group_id,
        "protocol": PROTOCOL,
        "messages": ep.opening_messages,
        "done": matches!(ep.phase, Phase::Done | Phase::Abandoned),
        "turn": ep.session.therapist_turns(),
        "ttl_s": state.cfg.ttl.as_secs(),
        "expires_at": expires_at(state.cfg.ttl),
        "info": {
            "profile_id": entry.spec.profile_id,
            "profile_hash": profile_hash,
            "split": entry.spec.split.as_str(),
            "seeds": seeds_json(&ep.session),
            "rubric": state.assets.rubric.version_id(),
            "safety_taxonomy": state.assets.taxonomy.version_id(),
            "max_therapist_turns": entry.spec.turns,
            "closing_patient_reply": entry.spec.closing_patient_reply,
            "opening": entry.spec.opening.as_str(),
        },
    })
}

/// `POST /v1/episodes`: 201 with the opening messages, or 200 with the existing episode.
pub async fn create(state: Arc<AppState>, body: CreateIn) -> Result<(StatusCode, Value), ApiError> {
    let (id, spec) = resolve(
        &state,
        body.episode_id,
        body.group_id,
        &body.task,
        body.limits.as_ref(),
        body.opening,
    )?;
    loop {
        match state.episodes.lookup(&id) {
            Lookup::Live(entry) => return existing(&state, entry, &spec).await,
            Lookup::Expired => return Err(ApiError::episode_expired(&id)),
            Lookup::Missing => {}
        }
        state
            .check_circuit()
            .map_err(|e| e.episode(&id).group(&spec.group_id))?;
        admit(&state).map_err(|e| e.episode(&id).group(&spec.group_id))?;
        let session = new_session(&state, &spec).map_err(|e| e.episode(&id))?;
        let entry = Arc::new(Entry {
            id: id.clone(),
            spec: spec.clone(),
            ep: Arc::new(tokio::sync::Mutex::new(Episode {
                phase: Phase::Opening,
                opening_messages: vec![
                    json!({"role": "system", "content": session.therapist_system}),
                ],
                session,
                steps: Vec::new(),
                final_score: None,
                started: Instant::now(),
                token_limit_hit: false,
            })),
            touched: Mutex::new(Instant::now()),
            created: Instant::now(),
            done: AtomicBool::new(false),
        });
        let Ok(guard) = Arc::clone(&entry.ep).try_lock_owned() else {
            return Err(ApiError::internal("a new episode was locked").episode(&id));
        };
        let overflow = state.groups.join(
            &spec.group_id,
            &spec.profile_id,
            spec.seed,
            &id,
            "episode",
            state.cfg.group_size,
        )?;
        if state.episodes.insert(Arc::clone(&entry)).is_err() {
            // Another request created this id meanwhile: answer as a repeat.
            continue;
        }
        if overflow {
            state
                .metrics
                .counters
                .group_overflows
                .fetch_add(1, Ordering::Relaxed);
        }
        state
            .metrics
            .counters
            .episodes_created
            .fetch_add(1, Ordering::Relaxed);
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move { open_episode(st, entry, guard).await });
        return task
            .await
            .map_err(|e| ApiError::internal(format!("episode task failed: {e}")).episode(&id))?
            .map(|v| (StatusCode::CREATED, v));
    }
}

async fn open_episode(
    state: Arc<AppState>,
    entry: Arc<Entry>,
    mut ep: OwnedMutexGuard<Episode>,
) -> Result<Value, ApiError> {
    if ep.session.next_speaker() == Some(Speaker::Patient) {
        match patient_turn(&state, &mut ep.session, &entry.id, &entry.spec.group_id).await {
            Ok(text) => ep
                .opening_messages
                .push(json!({"role": "user", "content": text})),
            Err(e) => {
                ep.phase = Phase::Failed;
                state.episodes.remove(&entry.id);
                state.groups.leave(&entry.spec.group_id, &entry.id);
                return Err(e);
            }
        }
    }
    ep.phase = Phase::Active;
    Ok(create_response(&state, &entry, &ep))
}

async fn existing(
    state: &AppState,
    entry: Arc<Entry>,
    spec: &EpisodeSpec,
) -> Result<(StatusCode, Value), ApiError> {
    if &entry.spec != spec {
        return Err(ApiError::conflict(
            "episode_exists",
            format!(
                "episode `{}` exists with another task (profile_id `{}`, seed {}, split {}, group `{}`, {} turns); use a new episode_id",
                entry.id,
                entry.spec.profile_id,
                entry.spec.seed,
                entry.spec.split.as_str(),
                entry.spec.group_id,
                entry.spec.turns
            ),
        )
        .episode(&entry.id)
        .group(&entry.spec.group_id));
    }
    entry.touch();
    let ep = entry.ep.lock().await;
    match ep.phase {
        Phase::Failed => Err(ApiError::unavailable(
            "patient_unavailable",
            "creating this episode failed (the patient could not open); retry",
        )
        .retry_after(5)
        .episode(&entry.id)),
        Phase::Expired => Err(ApiError::episode_expired(&entry.id)),
        Phase::Deleted => Err(ApiError::episode_not_found(&entry.id)),
        _ => Ok((StatusCode::OK, create_response(state, &entry, &ep))),
    }
}

/// `POST /v1/episodes/{id}/step`.
pub async fn step(state: Arc<AppState>, id: String, body: StepIn) -> Result<Value, ApiError> {
    check_id("episode id", &id)?;
    if let Some(role) = &body.assistant.role
        && role != "assistant"
    {
        return Err(ApiError::bad_request(format!(
            "`assistant.role` must be \"assistant\" (the therapist), not \"{role}\""
        ))
        .episode(&id));
    }
    if body.turn == 0 {
        return Err(
            ApiError::bad_request("`turn` is the 1-based number of the therapist turn")
                .episode(&id),
        );
    }
    let entry = state.episodes.get(&id)?;
    let guard = Arc::clone(&entry.ep).lock_owned().await;
    let st = Arc::clone(&state);
    tokio::spawn(async move { step_locked(st, entry, guard, body).await })
        .await
        .map_err(|e| ApiError::internal(format!("step task failed: {e}")).episode(&id))?
}

fn phase_error(entry: &Entry, phase: Phase) -> Option<ApiError> {
    match phase {
        Phase::Expired => Some(ApiError::episode_expired(&entry.id)),
        Phase::Deleted | Phase::Failed => Some(ApiError::episode_not_found(&entry.id)),
        _ => None,
    }
}

async fn step_locked(
    state: Arc<AppState>,
    entry: Arc<Entry>,
    mut ep: OwnedMutexGuard<Episode>,
    body: StepIn,
) -> Result<Value, ApiError> {
    if let Some(e) = phase_error(&entry, ep.phase) {
        return Err(e);
    }
    let (id, gid) = (entry.id.as_str(), entry.spec.group_id.as_str());
    let turn = body.turn as usize;
    let content = body.assistant.content;
    if let Some(prev) = ep.steps.get(turn - 1) {
        if prev.content == content {
            return Ok(prev.response.clone());
        }
        return Err(ApiError::conflict(
            "turn_conflict",
            format!("turn {turn} was already answered for different therapist content"),
        )
        .episode(id)
        .group(gid));
    }
    if ep.phase == Phase::Abandoned {
        return Err(ApiError::conflict(
            "episode_abandoned",
            format!(
                "the episode was abandoned after turn {} (POST /v1/episodes/{id}/abandon); it takes no more turns and has no reward",
                ep.steps.len()
            ),
        )
        .episode(id)
        .group(gid));
    }
    if ep.phase == Phase::Done {
        return Err(ApiError::conflict(
            "episode_done",
            format!(
                "the episode ended after turn {}; get the reward with POST /v1/episodes/{id}/score",
                ep.steps.len()
            ),
        )
        .episode(id)
        .group(gid));
    }
    if turn != ep.steps.len() + 1 {
        return Err(ApiError::conflict(
            "turn_conflict",
            format!(
                "turn {turn} skips ahead: the next therapist turn is {}",
                ep.steps.len() + 1
            ),
        )
        .episode(id)
        .group(gid));
    }
    let finish = body
        .finish_reason
        .or(body.assistant.finish_reason)
        .unwrap_or_else(|| "stop".to_string());
    ep.session
        .push_therapist(&content, None)
        .map_err(|e| ApiError::internal(e.to_string()).episode(id))?;
    if let Some(t) = ep.session.transcript.turns.last_mut() {
        t.finish_reason = Some(finish);
    }
    state.metrics.counters.steps.fetch_add(1, Ordering::Relaxed);
    if let Some(limit) = entry.spec.max_total_tokens
        && !ep.session.is_done()
        && approx_tokens(&ep.session.therapist_system, &ep.session.transcript) >= limit
    {
        ep.session.end = Some(EndReason::TurnLimit);
        ep.token_limit_hit = true;
    }
    if ep.session.next_speaker() == Some(Speaker::Patient)
        && let Err(e) = patient_turn(&state, &mut ep.session, id, gid).await
    {
        // Undo the therapist turn so the engine can retry it.
        ep.session.transcript.turns.pop();
        ep.session.end = None;
        return Err(e);
    }
    let response = if ep.session.is_done() {
        finalize(&state, &entry, &mut ep).await
    } else {
        let reply = ep
            .session
            .transcript
            .turns
            .last()
            .map(|t| t.text.clone())
            .unwrap_or_default();
        let mut v = json!({
            "episode_id": id,
            "turn": turn,
            "done": false,
            "reward": 0.0,
            "observation": [{"role": "user", "content": reply}],
            "info": {
                "patient_ended": false,
                "patient_seed": derive("patient", &entry.spec.profile_id, entry.spec.seed, Some(body.turn)),
            },
        });
        if state.cfg.turn_reward
            && let Some(tr) = &state.assets.reward.turn_reward
        {
            let (value, parts) = turn_reward(&state, tr, &ep.session, &content, body.turn).await;
            v["turn_reward"] = json!(value);
            v["info"]["turn_reward"] = parts;
        }
        v
    };
    ep.steps.push(StepRecord {
        content,
        response: response.clone(),
    });
    Ok(response)
}

/// The per-turn reward of an intermediate step (`--turn-reward`): the turn's text terms, plus
/// on every `judge_every`-th turn `judge_weight` × the session reward of the transcript so far
/// (an unscored judgment adds nothing and says so). Never part of the session reward.
async fn turn_reward(
    state: &AppState,
    tr: &therapygym_core::reward::TurnReward,
    s: &Session,
    content: &str,
    turn: u32,
) -> (f64, Value) {
    let (text, terms) = tr.text_value(content);
    let mut parts = json!({"text_terms": terms, "judged": false});
    let mut value = text;
    if tr.judges(turn) {
        let scored = state.score(&s.transcript, s.seeds().judge).await;
        parts["judged"] = json!(true);
        match scored.reward() {
            Some(r) => {
                value += tr.judge_weight * r;
                parts["judge"] = json!(tr.judge_weight * r);
            }
            None => {
                parts["judge"] = Value::Null;
                parts["unscored_reason"] = json!(scored.unscored_reason());
            }
        }
    }
    (value, parts)
}

/// The final outcome's `info`: the score breakdown plus the session facts.
pub fn final_info(state: &AppState, s: &Session, scored: &Scored, token_limit: bool) -> Value {
    let mut info = state.score_info(scored);
    let closing = s
        .transcript
        .turns
        .last()
        .filter(|t| t.speaker == Speaker::Patient)
        .map(|t| t.text.clone());
    info.insert("closing_patient_reply".into(), json!(closing));
    info.insert(
        "patient_ended".into(),
        json!(s.end == Some(EndReason::PatientEnded)),
    );
    info.insert("end_reason".into(), json!(end_reason(s)));
    info.insert("therapist_turns".into(), json!(s.therapist_turns()));
    if token_limit {
        info.insert("token_limit_reached".into(), json!(true));
    }
    info.insert("seeds".into(), seeds_json(s));
    Value::Object(info)
}

async fn finalize(state: &AppState, entry: &Entry, ep: &mut Episode) -> Value {
    ep.phase = Phase::Done;
    state.episodes.retire(entry);
    let scored = state
        .score(&ep.session.transcript, ep.session.seeds().judge)
        .await;
    let info = final_info(state, &ep.session, &scored, ep.token_limit_hit);
    ep.final_score = Some(
        json!({"episode_id": entry.id, "reward": scored.reward(), "status": scored.status(), "info": info}),
    );
    state
        .groups
        .finish_judged(&entry.spec.group_id, &entry.id, &scored);
    state
        .metrics
        .counters
        .episodes_finished
        .fetch_add(1, Ordering::Relaxed);
    let record = stored_record(state, entry, ep, SessionStatus::Completed, None);
    state.store(record, Some(scored.clone())).await;
    json!({
        "episode_id": entry.id,
        "turn": ep.session.therapist_turns(),
        "done": true,
        "observation": [],
        "reward": scored.reward(),
        "status": scored.status(),
        "info": info,
    })
}

fn stored_record(
    state: &AppState,
    entry: &Entry,
    ep: &Episode,
    status: SessionStatus,
    error: Option<String>,
) -> therapygym_store::SessionRecord {
    let ms = u64::try_from(ep.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut r = record_of(
        &ep.session,
        0,
        status,
        error,
        ms,
        state.attempt(),
        json!({
            "source": "episode",
            "episode_id": entry.id,
            "group_id": entry.spec.group_id,
            "split": entry.spec.split.as_str(),
            "max_therapist_turns": entry.spec.turns,
            "max_total_tokens": entry.spec.max_total_tokens,
            "closing_patient_reply": entry.spec.closing_patient_reply,
            "token_limit_reached": ep.token_limit_hit,
            "protocol": PROTOCOL,
        }),
    );
    r.id = entry.id.clone();
    r
}

/// `POST /v1/episodes/{id}/score`: the final outcome again (cached), or 409 before the end.
pub async fn score(state: Arc<AppState>, id: String) -> Result<Value, ApiError> {
    check_id("episode id", &id)?;
    let entry = state.episodes.get(&id)?;
    let ep = entry.ep.lock().await;
    if let Some(e) = phase_error(&entry, ep.phase) {
        return Err(e);
    }
    match &ep.final_score {
        Some(v) => Ok(v.clone()),
        None => Err(ApiError::conflict(
            "episode_not_done",
            format!(
                "the episode is not finished ({} of {} therapist turns taken)",
                ep.session.therapist_turns(),
                entry.spec.turns
            ),
        )
        .episode(&id)
        .group(&entry.spec.group_id)),
    }
}

/// `GET /v1/episodes/{id}`: the episode's opening as create answered it, without side effects
/// (no patient call, no TTL refresh), so an engine can retry safely.
pub async fn get(state: Arc<AppState>, id: String) -> Result<Value, ApiError> {
    check_id("episode id", &id)?;
    let entry = match state.episodes.lookup(&id) {
        Lookup::Live(e) => e,
        Lookup::Expired => return Err(ApiError::episode_expired(&id)),
        Lookup::Missing => return Err(ApiError::episode_not_found(&id)),
    };
    let ep = entry.ep.lock().await;
    if let Some(e) = phase_error(&entry, ep.phase) {
        return Err(e);
    }
    if ep.phase == Phase::Opening {
        return Err(ApiError::conflict(
            "episode_opening",
            "the episode is still being created (the patient is writing its opening); retry",
        )
        .episode(&id)
        .group(&entry.spec.group_id));
    }
    Ok(create_response(&state, &entry, &ep))
}

/// `POST /v1/episodes/{id}/abandon`: the engine ended the episode before the service did (a token
/// or turn limit of its own, a crash). The member is masked (`reward: null`, status
/// `abandoned`) and its group can complete; the transcript is stored as `expired`. Idempotent;
/// a finished episode answers its outcome unchanged.
pub async fn abandon(state: Arc<AppState>, id: String, reason: String) -> Result<Value, ApiError> {
    check_id("episode id", &id)?;
    let entry = match state.episodes.lookup(&id) {
        Lookup::Live(e) => e,
        Lookup::Expired => return Err(ApiError::episode_expired(&id)),
        Lookup::Missing => return Err(ApiError::episode_not_found(&id)),
    };
    entry.touch();
    let guard = Arc::clone(&entry.ep).lock_owned().await;
    let st = Arc::clone(&state);
    tokio::spawn(async move { abandon_locked(&st, &entry, guard, &reason).await })
        .await
        .map_err(|e| ApiError::internal(format!("abandon task failed: {e}")).episode(&id))?
}

async fn abandon_locked(
    state: &AppState,
    entry: &Entry,
    mut ep: OwnedMutexGuard<Episode>,
    reason: &str,
) -> Result<Value, ApiError> {
    if let Some(e) = phase_error(entry, ep.phase) {
        return Err(e);
    }
    if let Some(v) = &ep.final_score {
        return Ok(v.clone());
    }
    state.groups.finish(
        &entry.spec.group_id,
        &entry.id,
        MemberStatus::Abandoned,
        None,
        Some(reason.to_string()),
    );
    ep.phase = Phase::Abandoned;
    state.episodes.retire(entry);
    state
        .metrics
        .counters
        .episodes_abandoned
        .fetch_add(1, Ordering::Relaxed);
    let v = json!({
        "episode_id": entry.id,
        "group_id": entry.spec.group_id,
        "turn": ep.session.therapist_turns(),
        "done": true,
        "reward": null,
        "status": "abandoned",
        "info": {"unscored_reason": "abandoned", "abandon_reason": reason, "therapist_turns": ep.session.therapist_turns()},
    });
    ep.final_score = Some(v.clone());
    let record = stored_record(
        state,
        entry,
        &ep,
        SessionStatus::Expired,
        Some(format!("abandoned by the engine: {reason}")),
    );
    state.store(record, None).await;
    Ok(v)
}

/// Which members `POST /v1/groups/{id}/abandon` ends.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbandonGroupIn {
    /// Only members with exactly this many therapist turns.
    #[serde(default)]
    pub turns: Option<u32>,
    /// Only members whose every therapist turn occurs, in order, in this text (whitespace
    /// ignored): the engine's decoded response of the member it cut short.
    #[serde(default)]
    pub response: Option<String>,
    /// When more members match than this, none is abandoned (`"ambiguous": true`).
    #[serde(default)]
    pub at_most: Option<usize>,
    /// `group` (default): members of this group; `task`: members of every group of this
    /// group's `(profile_id, seed)` (per-episode validation groups).
    #[serde(default)]
    pub scope: Option<String>,
    /// The task for `scope: task` (default: the group's own task, if the group exists).
    #[serde(default)]
    pub task: Option<TaskIn>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every therapist turn of `turns`, in order, in `response` (whitespace-insensitive).
fn turns_in(turns: &[String], response: &str) -> bool {
    let hay = squash(response);
    let mut at = 0;
    for t in turns {
        let needle = squash(t);
        match hay[at..].find(&needle) {
            Some(k) => at += k + needle.len(),
            None => return false,
        }
    }
    true
}

/// `POST /v1/groups/{group_id}/abandon`: abandons the group's members still in progress that
/// match (all of them without filters).
pub async fn abandon_in_group(
    state: Arc<AppState>,
    group_id: String,
    body: AbandonGroupIn,
) -> Result<Value, ApiError> {
    check_id("group id", &group_id)?;
    let groups: Vec<String> = match body.scope.as_deref() {
        None | Some("group") => vec![group_id.clone()],
        Some("task") => {
            let own = body.task.as_ref().map(|t| (t.profile_id.clone(), t.seed));
            let (profile, seed) =
                own.or_else(|| state.groups.task_of(&group_id))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "group_not_found",
                            format!("group `{group_id}` has no members"),
                        )
                        .group(&group_id)
                    })?;
            state.groups.groups_of_task(&profile, seed)
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`scope` is `group` or `task`, not `{other}`"
            ))
            .group(&group_id));
        }
    };
    if groups.is_empty() || !groups.iter().any(|g| state.groups.exists(g)) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "group_not_found",
            format!(
                "group `{group_id}` has no members (never created, or forgotten after its TTL)"
            ),
        )
        .group(&group_id));
    }
    let mut matching = Vec::new();
    for g in &groups {
        for id in state.groups.active_members(g) {
            let Lookup::Live(entry) = state.episodes.lookup(&id) else {
                continue;
            };
            let ep = entry.ep.lock().await;
            if ep.phase != Phase::Active {
                continue;
            }
            if body
                .turns
                .is_some_and(|t| t != ep.session.therapist_turns())
            {
                continue;
            }
            if let Some(resp) = &body.response {
                let texts: Vec<String> = ep
                    .session
                    .transcript
                    .turns
                    .iter()
                    .filter(|t| t.speaker == Speaker::Therapist)
                    .map(|t| t.text.clone())
                    .collect();
                if !turns_in(&texts, resp) {
                    continue;
                }
            }
            drop(ep);
            matching.push(entry);
        }
    }
    let candidates = matching.len();
    if body.at_most.is_some_and(|n| candidates > n) {
        return Ok(json!({
            "group_id": group_id, "abandoned": [], "candidates": candidates, "ambiguous": true,
        }));
    }
    let reason = body
        .reason
        .unwrap_or_else(|| "ended by the engine".to_string());
    let mut out = Vec::new();
    for entry in matching {
        let v = abandon(Arc::clone(&state), entry.id.clone(), reason.clone()).await?;
        if v["status"] == "abandoned" {
            out.push(
                json!({"episode_id": entry.id, "group_id": entry.spec.group_id, "turn": v["turn"]}),
            );
        }
    }
    Ok(json!({
        "group_id": group_id, "abandoned": out, "candidates": candidates, "ambiguous": false,
    }))
}

/// `DELETE /v1/episodes/{id}`: always 204. An unfinished episode is stored as `expired`.
pub async fn delete(state: Arc<AppState>, id: String) {
    let Some(entry) = state.episodes.remove(&id) else {
        return;
    };
    state
        .metrics
        .counters
        .episodes_deleted
        .fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let mut ep = entry.ep.lock().await;
        close(
            &state,
            &entry,
            &mut ep,
            "deleted by the engine before the end",
        )
        .await;
        ep.phase = Phase::Deleted;
    });
}

/// Stores an unfinished episode as `expired` and ends its group membership.
async fn close(state: &AppState, entry: &Entry, ep: &mut Episode, why: &str) {
    if matches!(ep.phase, Phase::Opening | Phase::Active) {
        state.groups.finish(
            &entry.spec.group_id,
            &entry.id,
            MemberStatus::Expired,
            None,
            None,
        );
        let record = stored_record(
            state,
            entry,
            ep,
            SessionStatus::Expired,
            Some(why.to_string()),
        );
        state.store(record, None).await;
    }
}

/// Expires idle and over-age episodes; called periodically.
pub async fn sweep(state: &Arc<AppState>) {
    let expired = state
        .episodes
        .take_expired(state.cfg.ttl, state.cfg.max_lifetime);
    for entry in expired {
        let st = Arc::clone(state);
        tokio::spawn(async move {
            let mut ep = entry.ep.lock().await;
            if matches!(ep.phase, Phase::Opening | Phase::Active) {
                st.metrics
                    .counters
                    .episodes_expired
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(episode_id = %entry.id, "episode expired");
            }
            close(
                &st,
                &entry,
                &mut ep,
                "expired: idle past the TTL or older than the hard lifetime",
            )
            .await;
            ep.phase = Phase::Expired;
        });
    }
    state.groups.sweep(state.cfg.ttl);
}

/// Stores every unfinished episode as `expired` (shutdown).
pub async fn expire_all(state: &Arc<AppState>) {
    for entry in state.episodes.take_all() {
        let mut ep = entry.ep.lock().await;
        close(
            state,
            &entry,
            &mut ep,
            "the service shut down before the end",
        )
        .await;
        ep.phase = Phase::Expired;
    }
}
