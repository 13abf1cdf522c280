//! The run summary: per-item means (0–6) and normalised with 95% CIs, the CTRS normalised mean,
//! safety rates (per label, per-label mean and any-violation), unscored counts, mean reward,
//! tokens and wall time per role.
//! Computed from the store, so it covers every attempt of a resumed run.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use therapygym_core::{Judgment, Verdict};
use therapygym_run::{Assets, RunError};
use therapygym_store::{JudgmentRow, RunStore, SessionStatus, UsageByRole};

use crate::run::PlannedSession;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCounts {
    pub planned: u64,
    /// Sessions whose transcript finished (scored or unscored).
    pub completed: u64,
    /// Sessions that could not finish.
    pub failed: u64,
    /// Completed sessions the judge could not score.
    pub unscored: u64,
    /// Completed sessions not judged yet (an interrupted judging pass).
    pub unjudged: u64,
}

/// Retries over the planned sessions: transport retries of therapist and patient calls
/// (attempts beyond the first, failed calls included, from each session's meta) and, for this
/// judgment set, the judge's re-asks and transport retries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryCounts {
    pub therapist: u64,
    pub patient: u64,
    pub judge: u64,
    /// Sessions with at least one retry of any role.
    pub retried_sessions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemSummary {
    pub mean: Option<f64>,
    pub normalized: Option<f64>,
    /// 95% t-interval of the normalised mean.
    pub ci95: Option<[f64; 2]>,
    pub n: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated_mean: Option<f64>,
    pub reward: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtrsSummary {
    pub items: BTreeMap<String, ItemSummary>,
    /// Item ids in rubric order (JSON objects are unordered).
    pub item_order: Vec<String>,
    /// Mean over scored sessions of each session's mean score/6 over the reward items.
    pub normalized_mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub n: u64,
}

/// A behaviour count (`kind` = `count`) or a derived score (`kind` = its formula kind) over the
/// scored sessions: the per-session mean with its 95% t-interval; sessions where a derived score
/// has no value (a 0 denominator) are left out of the mean and counted with their reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureSummary {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    /// Sessions with a value.
    pub n: u64,
    /// Sum over sessions (counts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// Scored sessions without a value.
    #[serde(default)]
    pub no_value: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub no_value_reasons: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSummary {
    pub rate: Option<f64>,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetySummary {
    pub labels: BTreeMap<String, LabelSummary>,
    /// Share of sessions with at least one violation.
    pub any_violation_rate: Option<f64>,
    /// Share of (session, label) pairs flagged (the paper's likely "Safety Avg").
    pub per_label_mean_rate: Option<f64>,
    pub n: u64,
    pub taxonomy: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSummary {
    pub mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub n: u64,
    /// Scored sessions whose reward could not be computed, and why (the reason is also kept
    /// with each judgment row).
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub error_reasons: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub run_dir: String,
    pub judge_hash: String,
    /// The judge (model spec) of the judgment set.
    #[serde(default)]
    pub judge: Option<String>,
    /// The judgment set applies a calibration map (its sha256); calibrated means are then in
    /// `ctrs.items.*.calibrated_mean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    pub sessions: SessionCounts,
    /// Failed sessions grouped by reason (role and error, without ids and timings).
    #[serde(default)]
    pub failure_reasons: BTreeMap<String, u64>,
    pub unscored_rate: Option<f64>,
    pub unscored_reasons: BTreeMap<String, u64>,
    #[serde(default)]
    pub retries: RetryCounts,
    /// The rubric of the judgment set (`id/version`).
    #[serde(default)]
    pub rubric: Option<String>,
    /// The rubric's global items (named `ctrs` for every rubric).
    pub ctrs: CtrsSummary,
    /// Behaviour counts, then derived scores, in rubric order (empty for a rubric with neither).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<MeasureSummary>,
    pub safety: SafetySummary,
    pub reward: RewardSummary,
    pub attempts: u32,
    /// Tokens and wall time per role (therapist, patient, and this judgment set's judge).
    pub usage: UsageByRole,
}

/// Two-sided 97.5% quantile of Student's t (for 95% intervals).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        31..=60 => 2.042 - (df - 30) as f64 * (2.042 - 2.000) / 30.0,
        61..=120 => 2.000 - (df - 60) as f64 * (2.000 - 1.980) / 60.0,
        _ => 1.960,
    }
}

pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        None
    } else {
        Some(xs.iter().sum::<f64>() / xs.len() as f64)
    }
}

/// Mean ± t·sd/√n; None below two values.
pub fn ci95(xs: &[f64]) -> Option<[f64; 2]> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    let half = t975(xs.len() - 1) * (var / xs.len() as f64).sqrt();
    Some([m - half, m + half])
}

/// Normalised scores live in [0, 1]; a t-interval on few sessions can overshoot it.
fn clamp01([lo, hi]: [f64; 2]) -> [f64; 2] {
    [lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0)]
}

/// Scores of the judged sessions, gathered per item, per label and per session.
struct Tally<'a> {
    assets: &'a Assets,
    span: f64,
    item_scores: BTreeMap<&'a str, Vec<f64>>,
    item_calibrated: BTreeMap<String, Vec<f64>>,
    /// Each scored session's mean normalised score over the reward items.
    session_norm: Vec<f64>,
    label_flags: BTreeMap<&'a str, Vec<f64>>,
    /// Per scored session: each code's count.
    counts: BTreeMap<String, Vec<f64>>,
    /// Per scored session: each derived score's value, and why it had none.
    derived: BTreeMap<String, (Vec<f64>, BTreeMap<String, u64>)>,
    any: Vec<f64>,
    rewards: Vec<f64>,
    reward_errors: BTreeMap<String, u64>,
    unscored: u64,
    unjudged: u64,
    reasons: BTreeMap<String, u64>,
}

impl<'a> Tally<'a> {
    fn new(assets: &'a Assets) -> Self {
        let rubric = &assets.rubric;
        Self {
            assets,
            span: f64::from(rubric.max_score - rubric.min_score),
            item_scores: rubric
                .items
                .iter()
                .map(|i| (i.id.as_str(), Vec::new()))
                .collect(),
            item_calibrated: BTreeMap::new(),
            session_norm: Vec::new(),
            label_flags: assets
                .taxonomy
                .enabled_ids()
                .into_iter()
                .map(|l| (l, Vec::new()))
                .collect(),
            counts: BTreeMap::new(),
            derived: BTreeMap::new(),
            any: Vec::new(),
            rewards: Vec::new(),
            reward_errors: BTreeMap::new(),
            unscored: 0,
            unjudged: 0,
            reasons: BTreeMap::new(),
        }
    }

    fn add(&mut self, row: Option<&JudgmentRow>) {
        let Some(row) = row else {
            self.unjudged += 1;
            return;
        };
        match &row.verdict {
            Verdict::Unscored { reason, .. } => {
                self.unscored += 1;
                *self.reasons.entry(reason.as_str().to_string()).or_default() += 1;
            }
            Verdict::Scored { judgment } => self.add_scored(judgment, row),
        }
    }

    fn add_scored(&mut self, judgment: &Judgment, row: &JudgmentRow) {
        let rubric = &self.assets.rubric;
        for (item, v) in self.item_scores.iter_mut() {
            if let Some(s) = judgment.ctrs.get(*item) {
                v.push(f64::from(s.score));
            }
        }
        if let Some(serde_json::Value::Object(cal)) = &row.calibrated {
            for (k, v) in cal {
                if let Some(x) = v.as_f64() {
                    self.item_calibrated.entry(k.clone()).or_default().push(x);
                }
            }
        }
        let norms: Vec<f64> = rubric
            .reward_items()
            .filter_map(|i| judgment.ctrs.get(&i.id))
            .map(|s| (f64::from(s.score) - f64::from(rubric.min_score)) / self.span)
            .collect();
        if let Some(m) = mean(&norms) {
            self.session_norm.push(m);
        }
        for (code, n) in rubric.code_counts(judgment) {
            self.counts.entry(code).or_default().push(f64::from(n));
        }
        for (id, v) in rubric.derive(judgment) {
            let (values, reasons) = self.derived.entry(id).or_default();
            match (v.value, v.reason) {
                (Some(x), _) => values.push(x),
                (None, r) => *reasons.entry(r.unwrap_or_default()).or_default() += 1,
            }
        }
        let mut any_flag = false;
        for (label, v) in self.label_flags.iter_mut() {
            if let Some(f) = judgment.safety.get(*label) {
                v.push(if f.flag { 1.0 } else { 0.0 });
                any_flag |= f.flag;
            }
        }
        self.any.push(if any_flag { 1.0 } else { 0.0 });
        if let Some(r) = row.reward {
            self.rewards.push(r);
        } else if let Some(e) = therapygym_run::reward_error(row) {
            *self.reward_errors.entry(e.to_string()).or_default() += 1;
        }
    }

    fn ctrs(&self) -> CtrsSummary {
        let rubric = &self.assets.rubric;
        let items = rubric
            .items
            .iter()
            .map(|i| {
                let v = &self.item_scores[i.id.as_str()];
                let norm: Vec<f64> = v
                    .iter()
                    .map(|s| (s - f64::from(rubric.min_score)) / self.span)
                    .collect();
                let summary = ItemSummary {
                    mean: mean(v),
                    normalized: mean(&norm),
                    ci95: ci95(&norm).map(clamp01),
                    n: v.len() as u64,
                    calibrated_mean: self.item_calibrated.get(&i.id).and_then(|c| mean(c)),
                    reward: i.reward,
                };
                (i.id.clone(), summary)
            })
            .collect();
        CtrsSummary {
            items,
            item_order: rubric.items.iter().map(|i| i.id.clone()).collect(),
            normalized_mean: mean(&self.session_norm),
            ci95: ci95(&self.session_norm).map(clamp01),
            n: self.session_norm.len() as u64,
        }
    }

    fn measures(&self) -> Vec<MeasureSummary> {
        let rubric = &self.assets.rubric;
        let none = (Vec::new(), BTreeMap::new());
        let codes = rubric.codes.iter().map(|c| {
            let v = self.counts.get(&c.id).unwrap_or(&none.0);
            MeasureSummary {
                id: c.id.clone(),
                name: c.name.clone(),
                kind: "count".into(),
                mean: mean(v),
                ci95: ci95(v),
                n: v.len() as u64,
                total: Some(v.iter().sum()),
                no_value: 0,
                no_value_reasons: BTreeMap::new(),
            }
        });
        let derived = rubric.derived.iter().map(|d| {
            let (v, reasons) = self.derived.get(&d.id).unwrap_or(&none);
            MeasureSummary {
                id: d.id.clone(),
                name: d.name.clone(),
                kind: d.kind.as_str().into(),
                mean: mean(v),
                ci95: ci95(v),
                n: v.len() as u64,
                total: None,
                no_value: reasons.values().sum(),
                no_value_reasons: reasons.clone(),
            }
        });
        codes.chain(derived).collect()
    }

    fn safety(&self) -> SafetySummary {
        let all_flags: Vec<f64> = self.label_flags.values().flatten().copied().collect();
        SafetySummary {
            labels: self
                .label_flags
                .iter()
                .map(|(k, v)| {
                    let l = LabelSummary {
                        rate: mean(v),
                        n: v.len() as u64,
                    };
                    (k.to_string(), l)
                })
                .collect(),
            any_violation_rate: mean(&self.any),
            per_label_mean_rate: mean(&all_flags),
            n: self.any.len() as u64,
            taxonomy: self.assets.taxonomy.version_id(),
        }
    }
}

pub fn summarize(
    store: &RunStore,
    judge_hash: &str,
    planned: &[PlannedSession],
    assets: &Assets,
) -> Result<Summary, RunError> {
    let statuses = store.session_statuses()?;
    let judgments = store.judgments(judge_hash)?;
    let planned_ids: Vec<&str> = planned.iter().map(|p| p.id.as_str()).collect();
    let in_plan = |id: &str| planned_ids.is_empty() || planned_ids.contains(&id);
    let completed: Vec<&String> = statuses
        .iter()
        .filter(|(id, s)| **s == SessionStatus::Completed && in_plan(id))
        .map(|(id, _)| id)
        .collect();
    let failed = statuses
        .iter()
        .filter(|(id, s)| **s == SessionStatus::Failed && in_plan(id))
        .count() as u64;
    let errors = store.session_errors()?;
    let mut failure_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (id, e) in &errors {
        if statuses.get(id) == Some(&SessionStatus::Failed) && in_plan(id) {
            *failure_reasons.entry(failure_reason(e)).or_default() += 1;
        }
    }
    let set = store
        .judge_sets()?
        .into_iter()
        .find(|s| s.hash == judge_hash);
    let judge = set
        .as_ref()
        .and_then(|s| s.identity["model"].as_str().map(String::from));
    let calibration = set.as_ref().and_then(|s| {
        s.identity["calibration"]["sha256"]
            .as_str()
            .map(String::from)
    });
    let mut tally = Tally::new(assets);
    for id in &completed {
        tally.add(judgments.get(*id));
    }
    let judged = completed.len() as u64 - tally.unjudged;
    let retries = retry_counts(store, &judgments, &in_plan)?;
    Ok(Summary {
        run_dir: store.dir().display().to_string(),
        judge_hash: judge_hash.to_string(),
        judge,
        calibration,
        failure_reasons,
        sessions: SessionCounts {
            planned: planned.len().max(statuses.len()) as u64,
            completed: completed.len() as u64,
            failed,
            unscored: tally.unscored,
            unjudged: tally.unjudged,
        },
        unscored_rate: if judged == 0 {
            None
        } else {
            Some(tally.unscored as f64 / judged as f64)
        },
        unscored_reasons: tally.reasons.clone(),
        retries,
        rubric: Some(assets.rubric.version_id()),
        ctrs: tally.ctrs(),
        measures: tally.measures(),
        safety: tally.safety(),
        reward: RewardSummary {
            mean: mean(&tally.rewards),
            ci95: ci95(&tally.rewards),
            n: tally.rewards.len() as u64,
            errors: tally.reward_errors.values().sum(),
            error_reasons: tally.reward_errors.clone(),
        },
        attempts: store.attempts()?,
        usage: store.usage_by_role(judge_hash)?,
    })
}

fn retry_counts(
    store: &RunStore,
    judgments: &BTreeMap<String, JudgmentRow>,
    in_plan: &dyn Fn(&str) -> bool,
) -> Result<RetryCounts, RunError> {
    let mut out = RetryCounts::default();
    let mut retried: BTreeSet<&str> = BTreeSet::new();
    let sessions = store.session_retries()?;
    for (id, r) in sessions.iter().filter(|(id, _)| in_plan(id)) {
        let therapist = r["therapist"].as_u64().unwrap_or(0);
        let patient = r["patient"].as_u64().unwrap_or(0);
        out.therapist += therapist;
        out.patient += patient;
        if therapist + patient > 0 {
            retried.insert(id);
        }
    }
    for (id, row) in judgments.iter().filter(|(id, _)| in_plan(id)) {
        // Per sample: re-asks (attempts beyond the first) and transport retries.
        let reasks: u64 = row.record["samples"].as_array().map_or(0, |samples| {
            samples
                .iter()
                .map(|x| {
                    x["attempts"].as_u64().unwrap_or(1).saturating_sub(1)
                        + x["transport_retries"].as_u64().unwrap_or(0)
                })
                .sum()
        });
        out.judge += reasks;
        if reasks > 0 {
            retried.insert(id);
        }
    }
    out.retried_sessions = retried.len() as u64;
    Ok(out)
}

/// A failed session's error as a reason shared by sessions that failed alike: the profile id,
/// turn number and retry timings are dropped (`therapist: scripted server error (HTTP 500)`).
pub fn failure_reason(error: &str) -> String {
    let mut s = error.trim().to_string();
    // "ROLE turn N of profile `ID` failed: MESSAGE" (the session runner's wording).
    if let Some((head, rest)) = s.split_once(" failed: ")
        && let Some((role, _)) = head.split_once(" turn ")
        && head.contains(" of profile `")
    {
        s = format!("{role}: {rest}");
    }
    // "… (after N attempts in X s)" (the retry layer's suffix).
    if let Some(i) = s.rfind(" (after ")
        && s.ends_with(" s)")
    {
        s.truncate(i);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_group_by_role_and_error() {
        assert_eq!(
            failure_reason(
                "therapist turn 1 of profile `tg-002` failed: scripted server error (HTTP 500) (after 5 attempts in 6.0 s)"
            ),
            "therapist: scripted server error (HTTP 500)"
        );
        assert_eq!(failure_reason("expired: ttl"), "expired: ttl");
    }

    #[test]
    fn rewards_that_could_not_be_computed_are_counted_with_their_reason() {
        use serde_json::json;
        use therapygym_core::{Speaker, Transcript, Turn};
        use therapygym_store::SessionRecord;
        let assets = Assets::load(&therapygym_run::AssetSources::new("cbt")).unwrap();
        let d = tempfile::tempdir().unwrap();
        let store = RunStore::create(d.path(), &json!({}), "h").unwrap();
        store
            .ensure_judge_set("j", &json!({}), &assets.rubric, &assets.taxonomy)
            .unwrap();
        let scored = Verdict::Scored {
            judgment: Judgment {
                ctrs: BTreeMap::new(),
                safety: BTreeMap::new(),
                codes: Vec::new(),
            },
        };
        // As `store_judgment_reward` writes them: a reward, and two without one, with why.
        let rewards = [
            (Some(0.5), None),
            (
                None,
                Some(json!({"error": "reward `default`: item `agenda` is not scored"})),
            ),
            (
                None,
                Some(json!({"error": "reward `default`: item `agenda` is not scored"})),
            ),
        ];
        for (i, (reward, breakdown)) in rewards.into_iter().enumerate() {
            let id = format!("p:{i}");
            store
                .insert_session(&SessionRecord {
                    id: id.clone(),
                    profile_id: "p".into(),
                    epoch: i as u32,
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
                    meta: json!({}),
                })
                .unwrap();
            store
                .insert_judgment(&JudgmentRow {
                    session_id: id,
                    judge_hash: "j".into(),
                    verdict: scored.clone(),
                    record: json!({}),
                    reward,
                    reward_breakdown: breakdown,
                    calibrated: None,
                    attempts: 1,
                    created_at: String::new(),
                })
                .unwrap();
        }
        let s = summarize(&store, "j", &[], &assets).unwrap();
        assert_eq!((s.reward.n, s.reward.errors), (1, 2));
        assert_eq!(
            s.reward.error_reasons,
            BTreeMap::from([(
                "reward `default`: item `agenda` is not scored".to_string(),
                2
            )])
        );
        assert_eq!(s.reward.mean, Some(0.5));
    }

    #[test]
    fn t_interval() {
        let [lo, hi] = ci95(&[1.0, 2.0, 3.0]).unwrap();
        // mean 2, sd 1, t(2) = 4.303: 2 ± 4.303/√3
        assert!((hi - 2.0 - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!((2.0 - lo - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(ci95(&[1.0]), None);
        assert_eq!(mean(&[]), None);
    }
}
