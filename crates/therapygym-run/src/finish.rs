//! A finished session: its store record, its judgment and reward, committed to the run store.
//! `eval`, `serve` and `train` all end a session here, so a run's sessions look the same
//! whichever command made them.

use std::sync::Arc;

use serde_json::Value;
use therapygym_core::{RewardBreakdown, RewardConfig, Rubric, Speaker, Transcript, Verdict};
use therapygym_judge::{Calibration, Judge, JudgeRecord};
use therapygym_session::Session;
use therapygym_store::{JudgmentRow, RunStore, SessionRecord, SessionStatus};

use crate::error::RunError;

/// What judging needs: the judge, the store its judgments go to, and the reward they give.
#[derive(Clone)]
pub struct JudgeCtx {
    pub store: Arc<RunStore>,
    pub judge: Arc<Judge>,
    pub judge_hash: String,
    pub reward: RewardConfig,
    pub rubric: Arc<Rubric>,
    pub calibration: Option<Arc<Calibration>>,
}

/// The store id of a session: `profile_id:epoch`.
pub fn session_id(profile_id: &str, epoch: u32) -> String {
    format!("{profile_id}:{epoch}")
}

/// A session (finished, or failed with the turns taken so far) as a store record.
pub fn record_of(
    s: &Session,
    epoch: u32,
    status: SessionStatus,
    error: Option<String>,
    duration_ms: u64,
    attempt: u32,
    mut meta: Value,
) -> SessionRecord {
    // Retries are kept with the session (summary: `retries`), only when there were any.
    if s.retries.total() > 0
        && let (Some(obj), Ok(r)) = (meta.as_object_mut(), serde_json::to_value(s.retries))
    {
        obj.insert("retries".into(), r);
    }
    SessionRecord {
        id: session_id(&s.profile_id, epoch),
        profile_id: s.profile_id.clone(),
        epoch,
        seed: s.seed,
        status,
        style: s.patient.style.clone(),
        end_reason: s.end.map(|e| {
            serde_json::to_value(e)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        }),
        therapist_system: s.therapist_system.clone(),
        patient_system: s.patient.system_prompt.clone(),
        transcript: s.transcript.clone(),
        error,
        duration_ms,
        attempt,
        created_at: therapygym_store::timestamp(),
        meta,
    }
}

/// The identity and hash of a judgment set: the judge's own identity, plus the calibration map
/// when one is applied, so calibrated and uncalibrated judgments never share a set. Without a
/// map the identity is the judge's alone (hashes of earlier runs are unchanged).
pub fn judge_set(judge: &Judge, calibration: Option<&Calibration>) -> (String, Value) {
    let mut identity = judge.identity();
    if let (Some(c), Some(obj)) = (calibration, identity.as_object_mut()) {
        obj.insert(
            "calibration".into(),
            serde_json::json!({"sha256": c.hash(), "fitted_on": c.fitted_on}),
        );
    }
    (therapygym_core::hash::content_hash(&identity), identity)
}

/// What judging a stored session gave.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The judge's verdict was scored.
    pub scored: bool,
    /// The session's reward; `None` when unscored (never 0) or when it could not be computed.
    pub reward: Option<RewardBreakdown>,
    /// Why a scored session has no reward (kept with its judgment row).
    pub reward_error: Option<String>,
}

/// Runs a store write on tokio's blocking pool, off the async workers: the store commits with
/// `synchronous=FULL` (an fsync per transaction, and a wait while another connection holds the
/// write lock), which must not stall the tasks that drive model calls. The write runs to its
/// end even when the awaiting task is cancelled, so a row is still committed whole or not at all.
pub async fn off_runtime<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, RunError> + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(write)
        .await
        .map_err(|e| RunError::Invalid(format!("a store write stopped unexpectedly: {e}")))?
}

/// Commits a session with its messages ([`RunStore::insert_session`]) off the async workers
/// and gives the record back.
pub async fn store_session(
    store: &Arc<RunStore>,
    record: SessionRecord,
) -> Result<SessionRecord, RunError> {
    let store = Arc::clone(store);
    off_runtime(move || {
        store.insert_session(&record)?;
        Ok(record)
    })
    .await
}

/// Judges one stored session and commits the judgment and its reward (off the async workers).
pub async fn judge_and_store(h: &JudgeCtx, s: &SessionRecord) -> Result<Judged, RunError> {
    let seed = therapygym_core::seed::derive("judge", &s.profile_id, s.seed, None);
    let record: JudgeRecord = h.judge.judge(&s.transcript, seed).await;
    let scored = record.verdict.judgment().is_some();
    let reward = session_reward(&h.reward, &h.rubric, &s.transcript, &record.verdict);
    let (ctx, id) = (h.clone(), s.id.clone());
    let reward = off_runtime(move || {
        store_judgment_reward(&ctx, &id, &record, &reward)?;
        Ok(reward)
    })
    .await?;
    let (reward, reward_error) = match reward {
        Ok(r) => (r, None),
        Err(e) => (None, Some(e)),
    };
    Ok(Judged {
        scored,
        reward,
        reward_error,
    })
}

/// The reward of a judged transcript: `Ok(None)` when the verdict is unscored (never 0), `Err`
/// with the reason when a scored verdict gives no reward (e.g. an item the reward weights is
/// not scored). The therapist's text feeds text terms; a last therapist turn cut at max_tokens
/// is "truncated".
pub fn session_reward(
    reward: &RewardConfig,
    rubric: &Rubric,
    transcript: &Transcript,
    verdict: &Verdict,
) -> Result<Option<RewardBreakdown>, String> {
    let therapist_text: String = transcript
        .turns
        .iter()
        .filter(|t| t.speaker == Speaker::Therapist)
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let truncated = transcript
        .turns
        .iter()
        .rev()
        .find(|t| t.speaker == Speaker::Therapist)
        .is_some_and(|t| t.finish_reason.as_deref() == Some("length"));
    match verdict {
        Verdict::Scored { judgment } => reward
            .compute(judgment, rubric, &therapist_text, truncated)
            .map(Some)
            .map_err(|e| format!("reward `{}`: {e}", reward.id)),
        Verdict::Unscored { .. } => Ok(None),
    }
}

/// The reason a stored judgment row has no reward although it is scored: its breakdown is
/// `{"error": REASON}` (see [`store_judgment_reward`]).
pub fn reward_error(row: &JudgmentRow) -> Option<&str> {
    match (&row.reward, &row.reward_breakdown) {
        (None, Some(b)) => b.get("error").and_then(Value::as_str),
        _ => None,
    }
}

/// Commits one judgment (with its reward, and calibrated scores when a calibration is set) of a
/// stored session under the context's judge hash.
pub fn store_judgment(
    h: &JudgeCtx,
    session_id: &str,
    record: &JudgeRecord,
    breakdown: Option<&RewardBreakdown>,
) -> Result<(), RunError> {
    store_judgment_reward(h, session_id, record, &Ok(breakdown.cloned()))
}

/// [`store_judgment`] with the reward's outcome: a reward that could not be computed is stored
/// as `reward = null` with the breakdown `{"error": REASON}`, so the row says why.
pub fn store_judgment_reward(
    h: &JudgeCtx,
    session_id: &str,
    record: &JudgeRecord,
    reward: &Result<Option<RewardBreakdown>, String>,
) -> Result<(), RunError> {
    let (breakdown, reward_breakdown) = match reward {
        Ok(b) => (
            b.as_ref(),
            b.as_ref()
                .map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
        ),
        Err(e) => (None, Some(serde_json::json!({"error": e}))),
    };
    let calibrated = match (&h.calibration, record.verdict.judgment()) {
        (Some(c), Some(j)) => Some(c.apply(j)),
        _ => None,
    };
    let row = JudgmentRow {
        session_id: session_id.to_string(),
        judge_hash: h.judge_hash.clone(),
        verdict: record.verdict.clone(),
        record: serde_json::to_value(record).unwrap_or(Value::Null),
        reward: breakdown.map(|b| b.reward),
        reward_breakdown,
        calibrated,
        attempts: record.attempts(),
        created_at: therapygym_store::timestamp(),
    };
    h.store.insert_judgment(&row)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use therapygym_core::{ItemScore, Judgment, Turn, builtin};

    /// A session write that waits (here on another connection's write lock, as it may on an
    /// fsync) runs on the blocking pool: the runtime's only worker keeps running other tasks.
    #[tokio::test(flavor = "current_thread")]
    async fn a_session_write_does_not_stall_the_async_workers() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::time::{Duration, Instant};
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(RunStore::create(d.path(), &serde_json::json!({}), "h").unwrap());
        let db = d.path().join("run.sqlite");
        let (locked, wait_locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let c = rusqlite::Connection::open(db).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            c.execute_batch("COMMIT").unwrap();
        });
        wait_locked.recv().unwrap();
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let record = SessionRecord {
            id: "p:0".into(),
            profile_id: "p".into(),
            epoch: 0,
            seed: 1,
            status: SessionStatus::Completed,
            style: "plain".into(),
            end_reason: None,
            therapist_system: String::new(),
            patient_system: String::new(),
            transcript: Transcript {
                turns: vec![Turn::new(Speaker::Therapist, "hi")],
            },
            error: None,
            duration_ms: 1,
            attempt: 1,
            created_at: String::new(),
            meta: Value::Null,
        };
        let started = Instant::now();
        let back = store_session(&store, record).await.unwrap();
        let waited = started.elapsed();
        ticker.abort();
        holder.join().unwrap();
        assert_eq!(back.id, "p:0");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        let n = ticks.load(Ordering::SeqCst);
        assert!(
            n >= 10,
            "the runtime ran other tasks {n} times during a {waited:?} write"
        );
        assert_eq!(store.session_statuses().unwrap().len(), 1);
    }

    #[test]
    fn a_reward_that_cannot_be_computed_keeps_its_reason() {
        let rubric = builtin::rubric().unwrap();
        let reward = builtin::reward_config().unwrap();
        let transcript = Transcript {
            turns: vec![Turn::new(Speaker::Therapist, "hi")],
        };
        // A scored verdict that lacks an item the reward weights.
        let mut ctrs = std::collections::BTreeMap::new();
        ctrs.insert(
            "agenda".to_string(),
            ItemScore {
                score: 3,
                rationale: String::new(),
            },
        );
        let verdict = Verdict::Scored {
            judgment: Judgment {
                codes: Vec::new(),
                ctrs,
                safety: Default::default(),
            },
        };
        let e = session_reward(&reward, &rubric, &transcript, &verdict).unwrap_err();
        assert!(e.contains("is not scored"), "{e}");
        let row = JudgmentRow {
            session_id: "s".into(),
            judge_hash: "h".into(),
            verdict,
            record: Value::Null,
            reward: None,
            reward_breakdown: Some(serde_json::json!({"error": e})),
            calibrated: None,
            attempts: 1,
            created_at: String::new(),
        };
        assert!(reward_error(&row).unwrap().contains("is not scored"));
    }
}
