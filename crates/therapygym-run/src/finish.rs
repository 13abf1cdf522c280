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

/// Judges one stored session and commits the judgment and its reward.
pub async fn judge_and_store(h: &JudgeCtx, s: &SessionRecord) -> Result<Judged, RunError> {
    let seed = therapygym_core::seed::derive("judge", &s.profile_id, s.seed, None);
    let record: JudgeRecord = h.judge.judge(&s.transcript, seed).await;
    let reward = session_reward(&h.reward, &h.rubric, &s.transcript, &record.verdict);
    store_judgment_reward(h, &s.id, &record, &reward)?;
    let (reward, reward_error) = match reward {
        Ok(r) => (r, None),
        Err(e) => (None, Some(e)),
    };
    Ok(Judged {
        scored: record.verdict.judgment().is_some(),
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
