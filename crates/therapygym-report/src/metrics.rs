//! The rows every table and chart is made of, derived from a judgment set's definitions: the
//! normalised CTRS mean, one row per rubric item (on the rubric's own scale), the any-violation
//! rate, one row per safety label, and the reward. A new kind of score is one more [`Kind`] and
//! one more arm in [`Metric::value`].

use serde::Serialize;
use therapygym_core::{Judgment, Verdict};
use therapygym_store::{JudgmentRow, SessionRecord, SessionStatus};

use crate::run::{Definitions, RunData, SetData};

/// What a row measures, which fixes its scale and how it is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// An integer rating on `min..=max` (a rubric item), or a normalised mean in 0..=1.
    Score { min: f64, max: f64 },
    /// A 0/1 flag per session: its mean is a rate.
    Rate,
    /// An unbounded value per session (the reward).
    Value,
}

/// Which section of a report a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Overall,
    Item,
    /// Behaviour counts and derived scores of rubrics that have them.
    Measure,
    Safety,
    Reward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    NormalizedMean,
    Item,
    Count,
    Derived,
    AnyViolation,
    Label,
    Reward,
}

/// One row: an id, a name people read, its group and kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub id: String,
    pub name: String,
    pub group: Group,
    #[serde(flatten)]
    pub kind: Kind,
    /// For items: whether the item enters the reward.
    pub reward: bool,
    /// Lower is better (violation rates).
    pub lower_is_better: bool,
    #[serde(skip)]
    source: Source,
}

/// Id of the normalised CTRS mean row.
pub const NORMALIZED_MEAN: &str = "ctrs_normalized_mean";
/// Id of the any-violation row.
pub const ANY_VIOLATION: &str = "any_violation";
/// Id of the reward row.
pub const REWARD: &str = "reward";

/// Every row of a judgment set, in report order.
pub fn metrics(defs: &Definitions) -> Vec<Metric> {
    let row = |id: &str, name: &str, group, kind, source| Metric {
        id: id.to_string(),
        name: name.to_string(),
        group,
        kind,
        reward: false,
        lower_is_better: matches!(kind, Kind::Rate),
        source,
    };
    let mut out = vec![row(
        NORMALIZED_MEAN,
        "Normalised mean (reward items)",
        Group::Overall,
        Kind::Score { min: 0.0, max: 1.0 },
        Source::NormalizedMean,
    )];
    for i in &defs.items {
        let mut m = row(
            &i.id,
            &i.name,
            Group::Item,
            Kind::Score {
                min: i.min,
                max: i.max,
            },
            Source::Item,
        );
        m.reward = i.reward;
        out.push(m);
    }
    if let Some(r) = &defs.rubric_def {
        for c in &r.codes {
            out.push(row(
                &c.id,
                &c.name,
                Group::Measure,
                Kind::Value,
                Source::Count,
            ));
        }
        for d in &r.derived {
            let mut m = row(&d.id, &d.name, Group::Measure, Kind::Value, Source::Derived);
            m.lower_is_better = d.lower_is_better;
            out.push(m);
        }
    }
    out.push(row(
        ANY_VIOLATION,
        "Any safety violation",
        Group::Overall,
        Kind::Rate,
        Source::AnyViolation,
    ));
    for l in &defs.labels {
        out.push(row(
            &l.id,
            &l.name,
            Group::Safety,
            Kind::Rate,
            Source::Label,
        ));
    }
    out.push(row(
        REWARD,
        "Reward",
        Group::Reward,
        Kind::Value,
        Source::Reward,
    ));
    out
}

impl Metric {
    /// This row's value for one judged session; `None` when unscored or not scored on it.
    pub fn value(&self, defs: &Definitions, row: &JudgmentRow) -> Option<f64> {
        let Verdict::Scored { judgment } = &row.verdict else {
            return None;
        };
        match self.source {
            Source::NormalizedMean => normalized_mean(defs, judgment),
            Source::Item => judgment.ctrs.get(&self.id).map(|s| f64::from(s.score)),
            Source::Count => defs
                .rubric_def
                .as_ref()
                .and_then(|r| r.code_counts(judgment).get(&self.id).map(|n| f64::from(*n))),
            // A derived score without a value (a 0 denominator) leaves the session out.
            Source::Derived => defs.rubric_def.as_ref().and_then(|r| {
                r.derive(judgment)
                    .into_iter()
                    .find(|(k, _)| *k == self.id)
                    .and_then(|(_, v)| v.value)
            }),
            Source::AnyViolation => {
                let flags: Vec<bool> = defs
                    .labels
                    .iter()
                    .filter_map(|l| judgment.safety.get(&l.id).map(|f| f.flag))
                    .collect();
                (!flags.is_empty()).then(|| f64::from(u8::from(flags.iter().any(|f| *f))))
            }
            Source::Label => judgment
                .safety
                .get(&self.id)
                .map(|f| f64::from(u8::from(f.flag))),
            Source::Reward => row.reward,
        }
    }

    /// `(value - min) / (max - min)` for scores; rates and values as they are.
    pub fn normalize(&self, v: f64) -> f64 {
        match self.kind {
            Kind::Score { min, max } if max > min => (v - min) / (max - min),
            _ => v,
        }
    }
}

/// Mean of `(score - min) / (max - min)` over the reward items the judgment scored.
fn normalized_mean(defs: &Definitions, j: &Judgment) -> Option<f64> {
    let norms: Vec<f64> = defs
        .items
        .iter()
        .filter(|i| i.reward && i.max > i.min)
        .filter_map(|i| {
            j.ctrs
                .get(&i.id)
                .map(|s| (f64::from(s.score) - i.min) / (i.max - i.min))
        })
        .collect();
    (!norms.is_empty()).then(|| norms.iter().sum::<f64>() / norms.len() as f64)
}

/// A session's identity across runs: the same profile, epoch and patient seed is the same
/// simulated patient, so two runs' sessions with one key are a pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SessionKey {
    pub profile_id: String,
    pub epoch: u32,
    pub seed: u64,
}

impl SessionKey {
    pub fn of(s: &SessionRecord) -> Self {
        Self {
            profile_id: s.profile_id.clone(),
            epoch: s.epoch,
            seed: s.seed,
        }
    }
}

/// `(session, value)` of one row over a run's completed sessions judged by `set`.
pub fn values<'a>(
    run: &'a RunData,
    set: &SetData,
    metric: &Metric,
) -> Vec<(&'a SessionRecord, f64)> {
    run.sessions
        .iter()
        .filter(|s| s.status == SessionStatus::Completed)
        .filter_map(|s| {
            let row = set.judgments.get(&s.id)?;
            metric.value(&set.definitions, row).map(|v| (s, v))
        })
        .collect()
}
