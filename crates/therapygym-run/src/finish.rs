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
    meta: Value,
) -> SessionRecord {
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

/// What judging a stored session gave.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The judge's verdict was scored.
    pub scored: bool,
    /// The session's reward; `None` when unscored (never 0).
    pub reward: Option<RewardBreakdown>,
}

/// Judges one stored session and commits the judgment and its reward.
pub async fn judge_and_store(h: &JudgeCtx, s: &SessionRecord) -> Result<Judged, RunError> {
    let seed = therapygym_core::seed::derive("judge", &s.profile_id, s.seed, None);
    let record: JudgeRecord = h.judge.judge(&s.transcript, seed).await;
    let reward = session_reward(&h.reward, &h.rubric, &s.transcript, &record.verdict);
    store_judgment(h, &s.id, &record, reward.as_ref())?;
    Ok(Judged {
        scored: record.verdict.judgment().is_some(),
        reward,
    })
}

/// The reward of a judged transcript: `None` when the verdict is unscored (never 0). The
/// therapist's text feeds text terms; a last therapist turn cut at max_tokens is "truncated".
pub fn session_reward(
    reward: &RewardConfig,
    rubric: &Rubric,
    transcript: &Transcript,
    verdict: &Verdict,
) -> Option<RewardBreakdown> {
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
            .ok(),
        Verdict::Unscored { .. } => None,
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
        reward_breakdown: breakdown.map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
        calibrated,
        attempts: record.attempts(),
        created_at: therapygym_store::timestamp(),
    };
    h.store.insert_judgment(&row)?;
    Ok(())
}
