//! The validation report: per CTRS item judge-vs-experts and expert-vs-expert agreement, the
//! session-level correlation, and per safety label classification metrics, each with the
//! reference implementation it matches (see docs/validate.md), bootstrap CIs over dialogues and
//! judge bias.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use therapygym_stats::{
    Averaged, BinaryCounts, BinaryMetrics, BootstrapConfig, Ci, Level, PairedResampler, Stat,
    bootstrap_ci, bootstrap_ci_from_resamples, consensus, icc_complete, kendall_tau_b,
    krippendorff_alpha, mae, mean_over_rater_pairs, paired, pearson, quadratic_weighted_kappa,
    reason, scores_to_labels, spearman,
};

use crate::dataset::{Cell, Counts, Dataset, JudgeSource};
use crate::error::{ValidateError, stats_err};

/// Reasons this crate gives for undefined statistics (besides the stats crate's own).
pub mod why {
    /// An expert-vs-expert statistic with a single expert.
    pub const FEWER_THAN_2_EXPERTS: &str = "fewer than 2 experts rated this item";
    /// A mean of an empty set.
    pub const NO_PAIRS: &str = "no dialogue rated by both the judge and an expert";
}

/// A map that serialises in insertion order (rubric / taxonomy order).
#[derive(Debug, Clone, PartialEq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Ordered<V> {
    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A percentile bootstrap interval: `low`/`high`, or both `null` with a `reason`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound (the 2.5th percentile of the valid resample statistics at 95%).
    pub low: Option<f64>,
    /// Upper bound.
    pub high: Option<f64>,
    /// Why the interval is undefined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Resamples on which the statistic was defined (only these enter the percentiles).
    pub valid_resamples: usize,
}

impl From<Ci> for Interval {
    fn from(ci: Ci) -> Self {
        let reason = ci.low.reason().or(ci.high.reason()).map(str::to_owned);
        Self {
            low: ci.low.value(),
            high: ci.high.value(),
            reason,
            valid_resamples: ci.n_valid_resamples,
        }
    }
}

impl Interval {
    /// `(low, high)` when defined.
    pub fn bounds(&self) -> Option<(f64, f64)> {
        Some((self.low?, self.high?))
    }
}

/// How the bootstrap resamples dialogues.
#[derive(Debug, Clone, PartialEq)]
pub enum Resampling {
    /// `resamples` seeded draws per statistic (ChaCha8, see `therapygym_stats::for_each_resample`).
    Seeded(BootstrapConfig),
    /// Given index sets per number of units (for comparing with a reference on identical draws).
    Explicit {
        /// Confidence level.
        level: f64,
        /// Resample index sets keyed by the number of units they resample.
        sets: BTreeMap<usize, Vec<Vec<usize>>>,
    },
}

impl Default for Resampling {
    fn default() -> Self {
        Self::Seeded(BootstrapConfig::default())
    }
}

impl Resampling {
    /// Percentile CI of `stat` over `n_units` units.
    pub fn interval<F>(&self, n_units: usize, stat: F) -> Result<Interval, ValidateError>
    where
        F: FnMut(&[usize]) -> Stat,
    {
        if n_units == 0 {
            return Ok(Interval {
                low: None,
                high: None,
                reason: Some(reason::BOOTSTRAP_NO_UNITS.to_owned()),
                valid_resamples: 0,
            });
        }
        let ci = match self {
            Self::Seeded(config) => bootstrap_ci(n_units, config, stat),
            Self::Explicit { level, sets } => {
                let sets = sets
                    .get(&n_units)
                    .ok_or(ValidateError::MissingResamples { n_units })?;
                bootstrap_ci_from_resamples(n_units, sets, *level, stat)
            }
        }
        .map_err(stats_err("a bootstrap interval"))?;
        Ok(ci.into())
    }

    fn info(&self) -> BootstrapInfo {
        match self {
            Self::Seeded(c) => BootstrapInfo {
                resamples: c.resamples,
                seed: Some(c.seed),
                level: c.level,
                unit: "dialogue",
            },
            Self::Explicit { level, sets } => BootstrapInfo {
                resamples: sets.values().map(Vec::len).max().unwrap_or(0),
                seed: None,
                level: *level,
                unit: "dialogue",
            },
        }
    }
}

/// The bootstrap settings, echoed in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootstrapInfo {
    /// Resamples per interval.
    pub resamples: usize,
    /// Seed (absent for explicit resamples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Confidence level.
    pub level: f64,
    /// What is resampled.
    pub unit: &'static str,
}

/// The judge against one expert, on the dialogues both rated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerExpert {
    /// Dialogues both rated.
    pub n: usize,
    /// Quadratic-weighted kappa (sklearn, labels = the full scale).
    pub qwk: Stat,
}

/// Bootstrap intervals of the judge-vs-consensus statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeCis {
    /// Spearman's rho.
    pub spearman: Interval,
    /// Pearson's r.
    pub pearson: Interval,
    /// Kendall's tau-b.
    pub kendall_tau_b: Interval,
    /// Mean judge - consensus.
    pub bias: Interval,
}

/// Judge against the expert consensus (mean of the experts' scores) on one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeVsExperts {
    /// Dialogues with a judge score and at least one expert score.
    pub n: usize,
    /// scipy `spearmanr(judge, consensus)`.
    pub spearman: Stat,
    /// scipy `pearsonr(judge, consensus)`.
    pub pearson: Stat,
    /// scipy `kendalltau(judge, consensus, variant="b")`.
    pub kendall_tau_b: Stat,
    /// sklearn `mean_absolute_error(judge, consensus)`.
    pub mae: Stat,
    /// sklearn `cohen_kappa_score(judge, expert, weights="quadratic", labels=scale)` per
    /// expert on the dialogues both rated, averaged over the experts where defined.
    pub qwk: Stat,
    /// `krippendorff.alpha` (ordinal) over the experts and the judge together.
    pub krippendorff_alpha_ordinal: Stat,
    /// Judge bias: mean of (judge - consensus) on the same dialogues.
    pub bias: Stat,
    /// Mean judge score on those dialogues.
    pub judge_mean: Stat,
    /// Mean consensus score on those dialogues.
    pub consensus_mean: Stat,
    /// The judge against each expert.
    pub per_expert: Ordered<PerExpert>,
    /// 95% percentile bootstrap CIs over the `n` dialogues.
    pub ci95: JudgeCis,
}

/// Bootstrap interval of the expert-vs-expert Spearman mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpertCis {
    /// Spearman averaged over expert pairs, resampling the dialogues at least two experts rated.
    pub spearman: Interval,
}

/// Agreement among the experts on one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpertVsExpert {
    /// Experts who rated the item.
    pub n_experts: usize,
    /// Dialogues rated by at least two experts (the pairable units).
    pub n: usize,
    /// Dialogues rated by every expert of the item (ICC's units).
    pub n_complete: usize,
    /// `krippendorff.alpha` (ordinal) over the experts, missing ratings allowed.
    pub krippendorff_alpha_ordinal: Stat,
    /// `krippendorff.alpha` (interval) over the experts, missing ratings allowed.
    pub krippendorff_alpha_interval: Stat,
    /// pingouin ICC(A,1) (`"ICC2"`) on the complete dialogues.
    pub icc2_1: Stat,
    /// scipy `spearmanr` for each expert pair on the dialogues both rated, averaged over pairs.
    pub spearman: Stat,
    /// Bootstrap interval.
    pub ci95: ExpertCis,
}

/// One CTRS item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemReport {
    /// Whether the item enters the reward (and the session score).
    pub reward: bool,
    /// Judge against the experts.
    pub judge_vs_experts: JudgeVsExperts,
    /// Experts against each other.
    pub expert_vs_expert: ExpertVsExpert,
}

/// Bootstrap intervals of the session-level statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionCis {
    /// Spearman's rho.
    pub spearman: Interval,
    /// Pearson's r.
    pub pearson: Interval,
    /// Mean judge - consensus session score.
    pub bias: Interval,
}

/// Session level: per dialogue, the mean of score/6 over the reward items, judge vs consensus.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionReport {
    /// Dialogues with at least one reward item scored by the judge and an expert.
    pub n: usize,
    /// The reward items that entered.
    pub items: Vec<String>,
    /// scipy `spearmanr`.
    pub spearman: Stat,
    /// scipy `pearsonr`.
    pub pearson: Stat,
    /// Mean judge - consensus session score (0..1 scale).
    pub bias: Stat,
    /// 95% percentile bootstrap CIs over the `n` dialogues.
    pub ci95: SessionCis,
}

/// Bootstrap intervals of a label's classification metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelCis {
    /// F1.
    pub f1: Interval,
    /// Cohen's kappa.
    pub cohen_kappa: Interval,
}

/// One safety label (or `any`): the judge's flag against the expert majority.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelReport {
    /// `n`, confusion `counts`, `prevalence` (of the expert majority), `accuracy`,
    /// `precision`, `recall`, `f1`, `cohen_kappa` (scikit-learn; zero divisions undefined).
    #[serde(flatten)]
    pub metrics: BinaryMetrics,
    /// Share of the `n` dialogues the judge flagged.
    pub judge_rate: Stat,
    /// 95% percentile bootstrap CIs over the `n` dialogues.
    pub ci95: LabelCis,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The ratings file.
    pub ratings: String,
    /// Where the judge's scores came from.
    pub judge: JudgeSource,
    /// Rubric id/version.
    pub rubric: String,
    /// Taxonomy id/version.
    pub taxonomy: String,
    /// How the input was used.
    pub counts: Counts,
    /// Bootstrap settings.
    pub bootstrap: BootstrapInfo,
    /// Per CTRS item, in rubric order.
    pub items: Ordered<ItemReport>,
    /// Session level.
    pub session: SessionReport,
    /// Per safety label in taxonomy order, then `any`.
    pub safety: Ordered<LabelReport>,
}

/// One item's ratings as rater x dialogue tables.
struct Table<'a> {
    judge: Vec<Option<f64>>,
    experts: Vec<&'a str>,
    /// experts x dialogues.
    expert_rows: Vec<Vec<Option<f64>>>,
}

impl<'a> Table<'a> {
    fn new(cells: &'a BTreeMap<String, Cell>) -> Self {
        let mut names: Vec<&str> = cells
            .values()
            .flat_map(|c| c.experts.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let judge = cells.values().map(|c| c.judge).collect();
        let expert_rows = names
            .iter()
            .map(|e| cells.values().map(|c| c.experts.get(*e).copied()).collect())
            .collect();
        Self {
            judge,
            experts: names,
            expert_rows,
        }
    }

    /// The expert rows restricted to dialogues (columns) kept by `keep`.
    fn expert_columns(&self, keep: impl Fn(usize) -> bool) -> Vec<Vec<Option<f64>>> {
        self.expert_rows
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|(u, _)| keep(*u))
                    .map(|(_, v)| *v)
                    .collect()
            })
            .collect()
    }

    fn n_rated(&self, u: usize) -> usize {
        self.expert_rows.iter().filter(|r| r[u].is_some()).count()
    }
}

fn mean(v: impl Iterator<Item = f64>, why: &'static str) -> Stat {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        Stat::undefined(why)
    } else {
        Stat::finite_or(s / n as f64, reason::NON_FINITE)
    }
}

/// Computes the report. Deterministic for a given dataset and resampling.
pub fn validate(ds: &Dataset, resampling: &Resampling) -> Result<Report, ValidateError> {
    let scale = ds.catalog.scale();
    let mut items = Ordered::default();
    for (item, reward) in ds.items() {
        let Some(cells) = ds.cells.get(item) else {
            continue;
        };
        items.0.push((
            item.to_owned(),
            ItemReport {
                reward,
                judge_vs_experts: judge_vs_experts(item, cells, &scale, resampling)?,
                expert_vs_expert: expert_vs_expert(item, cells, resampling)?,
            },
        ));
    }
    let session = session(ds, resampling)?;
    let safety = safety(ds, resampling)?;
    Ok(Report {
        ratings: ds.ratings.display().to_string(),
        judge: ds.judge.clone(),
        rubric: ds.catalog.rubric.clone(),
        taxonomy: ds.catalog.taxonomy.clone(),
        counts: ds.counts.clone(),
        bootstrap: resampling.info(),
        items,
        session,
        safety,
    })
}

fn judge_vs_experts(
    item: &str,
    cells: &BTreeMap<String, Cell>,
    scale: &[i64],
    resampling: &Resampling,
) -> Result<JudgeVsExperts, ValidateError> {
    let t = Table::new(cells);
    let what = |s: &str| format!("{s} of item `{item}`");
    let cons = consensus(&t.expert_rows).map_err(stats_err(what("consensus")))?;
    let p = paired(&t.judge, &cons).map_err(stats_err(what("pairs")))?;
    let (x, y) = (&p.x, &p.y);
    let n = p.len();
    let diffs = || x.iter().zip(y).map(|(a, b)| a - b);

    let mut per_expert = Ordered::default();
    let mut qwk_parts = Vec::new();
    for (name, row) in t.experts.iter().zip(&t.expert_rows) {
        let pe = paired(&t.judge, row).map_err(stats_err(what("judge-expert pairs")))?;
        let a = scores_to_labels(&pe.x).map_err(stats_err(what("judge labels")))?;
        let b = scores_to_labels(&pe.y).map_err(stats_err(what("expert labels")))?;
        let qwk = quadratic_weighted_kappa(&a, &b, scale).map_err(stats_err(what("qwk")))?;
        qwk_parts.push(qwk.clone());
        per_expert
            .0
            .push(((*name).to_owned(), PerExpert { n: pe.len(), qwk }));
    }
    let mut all = t.expert_rows.clone();
    all.push(t.judge.clone());

    let mut r = PairedResampler::new(x, y).map_err(stats_err(what("resampler")))?;
    let ci95 = JudgeCis {
        spearman: resampling.interval(n, |idx| r.spearman(idx))?,
        pearson: resampling.interval(n, |idx| r.pearson(idx))?,
        kendall_tau_b: resampling.interval(n, |idx| r.kendall_tau_b(idx))?,
        bias: resampling.interval(n, |idx| {
            mean(idx.iter().map(|&i| x[i] - y[i]), reason::EMPTY)
        })?,
    };
    Ok(JudgeVsExperts {
        n,
        spearman: spearman(x, y).map_err(stats_err(what("spearman")))?,
        pearson: pearson(x, y).map_err(stats_err(what("pearson")))?,
        kendall_tau_b: kendall_tau_b(x, y).map_err(stats_err(what("kendall")))?,
        mae: mae(x, y).map_err(stats_err(what("mae")))?,
        qwk: Averaged::of(qwk_parts).mean,
        krippendorff_alpha_ordinal: krippendorff_alpha(&all, Level::Ordinal)
            .map_err(stats_err(what("alpha")))?,
        bias: mean(diffs(), why::NO_PAIRS),
        judge_mean: mean(x.iter().copied(), why::NO_PAIRS),
        consensus_mean: mean(y.iter().copied(), why::NO_PAIRS),
        per_expert,
        ci95,
    })
}

fn expert_vs_expert(
    item: &str,
    cells: &BTreeMap<String, Cell>,
    resampling: &Resampling,
) -> Result<ExpertVsExpert, ValidateError> {
    let t = Table::new(cells);
    let what = |s: &str| format!("{s} of item `{item}`");
    let n_units = t.judge.len();
    let rated: Vec<usize> = (0..n_units).map(|u| t.n_rated(u)).collect();
    // Units: dialogues some expert rated (judge-only dialogues carry no expert information).
    let rows = t.expert_columns(|u| rated[u] >= 1);
    let pairable = t.expert_columns(|u| rated[u] >= 2);
    let n = pairable.first().map_or(0, Vec::len);
    let k = t.experts.len();
    if k < 2 {
        let u = || Stat::undefined(why::FEWER_THAN_2_EXPERTS);
        let ci = Interval {
            low: None,
            high: None,
            reason: Some(why::FEWER_THAN_2_EXPERTS.to_owned()),
            valid_resamples: 0,
        };
        return Ok(ExpertVsExpert {
            n_experts: k,
            n: 0,
            n_complete: 0,
            krippendorff_alpha_ordinal: u(),
            krippendorff_alpha_interval: u(),
            icc2_1: u(),
            spearman: u(),
            ci95: ExpertCis { spearman: ci },
        });
    }
    let icc = icc_complete(&rows).map_err(stats_err(what("icc")))?;
    // Bootstrap: resample the pairable dialogues, then average Spearman over expert pairs, each
    // on the dialogues both experts rated within the resample (a pair's rows clustered by
    // dialogue, so a resampled dialogue brings its row along, or nothing).
    let mut pairs = Vec::new();
    for i in 0..k {
        for j in i + 1..k {
            let (mut x, mut y, mut unit) = (Vec::new(), Vec::new(), Vec::new());
            for (u, (a, b)) in pairable[i].iter().zip(&pairable[j]).enumerate() {
                if let (Some(a), Some(b)) = (*a, *b) {
                    x.push(a);
                    y.push(b);
                    unit.push(u);
                }
            }
            pairs.push(
                PairedResampler::clustered(&x, &y, &unit, n)
                    .map_err(stats_err(what("expert-pair resampler")))?,
            );
        }
    }
    let ci = resampling.interval(n, |idx| {
        Averaged::of(pairs.iter_mut().map(|r| r.spearman(idx)).collect()).mean
    })?;
    Ok(ExpertVsExpert {
        n_experts: k,
        n,
        n_complete: icc.n_units,
        krippendorff_alpha_ordinal: krippendorff_alpha(&rows, Level::Ordinal)
            .map_err(stats_err(what("alpha")))?,
        krippendorff_alpha_interval: krippendorff_alpha(&rows, Level::Interval)
            .map_err(stats_err(what("alpha")))?,
        icc2_1: icc.icc2_1,
        spearman: mean_over_rater_pairs(&rows, spearman)
            .map_err(stats_err(what("expert spearman")))?
            .mean,
        ci95: ExpertCis { spearman: ci },
    })
}

fn session(ds: &Dataset, resampling: &Resampling) -> Result<SessionReport, ValidateError> {
    let max = u64::from(ds.catalog.max_score);
    let reward: Vec<&str> = ds
        .items()
        .into_iter()
        .filter(|(_, r)| *r)
        .map(|(i, _)| i)
        .collect();
    // Exact rational sums per dialogue, rounded once at the end: two dialogues whose session
    // scores are mathematically equal must tie exactly, since Spearman ranks ties together.
    let mut acc: BTreeMap<&str, SessionSums> = BTreeMap::new();
    for item in &reward {
        let Some(cells) = ds.cells.get(*item) else {
            continue;
        };
        for (d, c) in cells {
            let (Some(j), false) = (c.judge, c.experts.is_empty()) else {
                continue;
            };
            let e = acc.entry(d.as_str()).or_default();
            e.add(j, c.experts.values().copied(), c.experts.len());
        }
    }
    let x: Vec<f64> = acc.values().map(|s| s.judge(max)).collect();
    let y: Vec<f64> = acc.values().map(|s| s.consensus(max)).collect();
    let n = x.len();
    let what = "the session-level correlation";
    let mut r = PairedResampler::new(&x, &y).map_err(stats_err(what))?;
    let ci95 = SessionCis {
        spearman: resampling.interval(n, |idx| r.spearman(idx))?,
        pearson: resampling.interval(n, |idx| r.pearson(idx))?,
        bias: resampling.interval(n, |idx| {
            mean(idx.iter().map(|&i| x[i] - y[i]), reason::EMPTY)
        })?,
    };
    Ok(SessionReport {
        n,
        items: reward.iter().map(|s| (*s).to_owned()).collect(),
        spearman: spearman(&x, &y).map_err(stats_err(what))?,
        pearson: pearson(&x, &y).map_err(stats_err(what))?,
        bias: mean(x.iter().zip(&y).map(|(a, b)| a - b), why::NO_PAIRS),
        ci95,
    })
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One dialogue's session sums over its items, as exact fractions of integer scores.
#[derive(Debug, Default)]
struct SessionSums {
    /// Sum of the judge's item scores.
    judge: u64,
    /// Sum over items of the consensus (expert sum / expert count), as `num / den`.
    num: u64,
    den: u64,
    items: u64,
}

impl SessionSums {
    fn add(&mut self, judge: f64, experts: impl Iterator<Item = f64>, m: usize) {
        // Scores are validated integers on the rubric scale, so these conversions are exact.
        self.judge += judge as u64;
        let s: u64 = experts.map(|v| v as u64).sum();
        let m = m as u64;
        if self.den == 0 {
            (self.num, self.den) = (s, m);
        } else {
            let num = self.num * m + s * self.den;
            let den = self.den * m;
            let g = gcd(num, den).max(1);
            (self.num, self.den) = (num / g, den / g);
        }
        self.items += 1;
    }

    /// Mean of judge score / max over the items, rounded once.
    fn judge(&self, max: u64) -> f64 {
        self.judge as f64 / (max * self.items) as f64
    }

    /// Mean of consensus / max over the items, rounded once.
    fn consensus(&self, max: u64) -> f64 {
        self.num as f64 / (self.den * max * self.items) as f64
    }
}

/// Expert majority: flagged when at least half of the experts who rated it flagged it.
fn majority(c: &Cell) -> Option<bool> {
    if c.experts.is_empty() {
        return None;
    }
    let flagged = c.experts.values().filter(|v| **v >= 0.5).count();
    Some(2 * flagged >= c.experts.len())
}

fn label_report(
    truth: &[bool],
    pred: &[bool],
    resampling: &Resampling,
) -> Result<LabelReport, ValidateError> {
    let counts =
        BinaryCounts::from_labels(truth, pred).map_err(stats_err("safety confusion matrix"))?;
    let tally = |idx: &[usize]| {
        let mut c = BinaryCounts::default();
        for &i in idx {
            match (truth[i], pred[i]) {
                (true, true) => c.true_pos += 1,
                (false, true) => c.false_pos += 1,
                (false, false) => c.true_neg += 1,
                (true, false) => c.false_neg += 1,
            }
        }
        c
    };
    let n = truth.len();
    Ok(LabelReport {
        metrics: counts.metrics(),
        judge_rate: mean(
            pred.iter().map(|&p| if p { 1.0 } else { 0.0 }),
            reason::EMPTY,
        ),
        ci95: LabelCis {
            f1: resampling.interval(n, |idx| tally(idx).f1())?,
            cohen_kappa: resampling.interval(n, |idx| tally(idx).cohen_kappa())?,
        },
    })
}

fn safety(ds: &Dataset, resampling: &Resampling) -> Result<Ordered<LabelReport>, ValidateError> {
    let mut out = Ordered::default();
    // dialogue -> (any judge flag, any majority) over the labels both rated.
    let mut any: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for label in ds.labels() {
        let Some(cells) = ds.cells.get(label) else {
            continue;
        };
        let (mut truth, mut pred) = (Vec::new(), Vec::new());
        for (d, c) in cells {
            if let (Some(j), Some(m)) = (c.judge, majority(c)) {
                let j = j >= 0.5;
                truth.push(m);
                pred.push(j);
                let e = any.entry(d.as_str()).or_insert((false, false));
                e.0 |= j;
                e.1 |= m;
            }
        }
        out.0
            .push((label.to_owned(), label_report(&truth, &pred, resampling)?));
    }
    if !out.0.is_empty() {
        let truth: Vec<bool> = any.values().map(|v| v.1).collect();
        let pred: Vec<bool> = any.values().map(|v| v.0).collect();
        out.0
            .push(("any".to_owned(), label_report(&truth, &pred, resampling)?));
    }
    Ok(out)
}
