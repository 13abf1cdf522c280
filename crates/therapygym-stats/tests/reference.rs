//! Compares every statistic with the reference packages' outputs stored in
//! `tests/fixtures/stats_fixtures.json` (regenerate with `tools/fixtures/gen_stats_fixtures.py`).
//! Defined values must agree to 1e-9; a reference NaN/raise (`null`) must be `Stat::Undefined`.

// Test helpers outside `#[test]` fns are not covered by clippy's allow-*-in-tests settings.
#![allow(clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::sync::OnceLock;

use serde::Deserialize;
use therapygym_stats::{
    BinaryCounts, KappaWeights, Level, PairedResampler, Stat, StatsError,
    bootstrap_ci_from_resamples, cohen_kappa_score, consensus, icc_complete, icc2_1, icc3_1,
    kendall_tau_b, krippendorff_alpha, mae, mean_against_each, mean_over_rater_pairs, paired,
    pearson, percentile, quadratic_weighted_kappa, scores_to_labels, spearman,
};

const TOL: f64 = 1e-9;

#[derive(Debug, Deserialize)]
struct Ref {
    value: Option<f64>,
    #[serde(default)]
    situation: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Fixtures {
    tolerance: f64,
    datasets: Vec<Dataset>,
    correlation: Vec<CorrCase>,
    kappa: Vec<KappaCase>,
    binary: Vec<BinaryCase>,
    krippendorff: Vec<KrippCase>,
    icc: Vec<IccCase>,
    bootstrap: Vec<BootCase>,
    percentile: Vec<PercentileCase>,
}

#[derive(Debug, Deserialize)]
struct Dataset {
    name: String,
    experts: Vec<Vec<Option<f64>>>,
    judge: Vec<Option<f64>>,
    labels: Vec<i64>,
    expected: DatasetExpected,
}

#[derive(Debug, Deserialize)]
struct JudgeVsConsensus {
    n_pairs: usize,
    spearman: Ref,
    pearson: Ref,
    kendall_tau_b: Ref,
    mae: Ref,
}

#[derive(Debug, Deserialize)]
struct DatasetExpected {
    consensus: Vec<Option<f64>>,
    judge_vs_consensus: JudgeVsConsensus,
    qwk_per_expert: Vec<Ref>,
    qwk_mean: Ref,
    alpha_ordinal_all: Ref,
    expert_alpha_ordinal: Ref,
    expert_alpha_interval: Ref,
    expert_alpha_nominal: Ref,
    expert_icc_n_units: usize,
    expert_icc2_1: Ref,
    expert_icc3_1: Ref,
    expert_spearman_pairs: Vec<Ref>,
    expert_spearman_pair_mean: Ref,
}

#[derive(Debug, Deserialize)]
struct CorrCase {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    spearman: Ref,
    pearson: Ref,
    kendall_tau_b: Ref,
    mae: Ref,
}

#[derive(Debug, Deserialize)]
struct KappaCase {
    name: String,
    a: Vec<i64>,
    b: Vec<i64>,
    labels: Option<Vec<i64>>,
    weights: Option<String>,
    expected: Ref,
}

#[derive(Debug, Deserialize)]
struct BinaryExpected {
    accuracy: Ref,
    precision: Ref,
    recall: Ref,
    f1: Ref,
    prevalence: Ref,
    cohen_kappa: Ref,
}

#[derive(Debug, Deserialize)]
struct BinaryCase {
    name: String,
    y_true: Vec<bool>,
    y_pred: Vec<bool>,
    expected: BinaryExpected,
}

#[derive(Debug, Deserialize)]
struct KrippCase {
    name: String,
    data: Vec<Vec<Option<f64>>>,
    nominal: Ref,
    ordinal: Ref,
    interval: Ref,
}

#[derive(Debug, Deserialize)]
struct IccCase {
    name: String,
    matrix: Vec<Vec<f64>>,
    icc2_1: Ref,
    icc3_1: Ref,
}

#[derive(Debug, Deserialize)]
struct CiRef {
    low: Option<f64>,
    high: Option<f64>,
    n_valid: usize,
}

#[derive(Debug, Deserialize)]
struct BootCase {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    units: Option<Vec<usize>>,
    level: f64,
    resamples: Vec<Vec<usize>>,
    spearman: CiRef,
    pearson: CiRef,
    kendall_tau_b: CiRef,
    mae: CiRef,
}

#[derive(Debug, Deserialize)]
struct PercentileCase {
    values: Vec<f64>,
    q: f64,
    expected: f64,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stats_fixtures.json"
        );
        let text = std::fs::read_to_string(path).expect("fixture file present");
        serde_json::from_str(&text).expect("fixture file parses")
    })
}

/// Collects mismatches so one run reports all of them.
#[derive(Default)]
struct Checker {
    failures: Vec<String>,
    checked: usize,
    undefined: usize,
    max_abs_diff: f64,
}

impl Checker {
    fn num(&mut self, ctx: &str, got: Option<f64>, want: Option<f64>) {
        self.checked += 1;
        match (got, want) {
            (Some(g), Some(w)) if (g - w).abs() <= TOL => {
                self.max_abs_diff = self.max_abs_diff.max((g - w).abs());
            }
            (None, None) => self.undefined += 1,
            _ => self
                .failures
                .push(format!("{ctx}: got {got:?}, reference {want:?}")),
        }
    }

    fn stat(&mut self, ctx: &str, got: &Stat, want: &Ref) {
        if let Some(v) = got.value() {
            assert!(v.is_finite(), "{ctx}: non-finite Value");
        }
        let before = self.failures.len();
        self.num(ctx, got.value(), want.value);
        if self.failures.len() > before {
            if let Some(s) = &want.situation {
                self.failures.push(format!("    reference situation: {s}"));
            }
            if let Some(r) = got.reason() {
                self.failures.push(format!("    our reason: {r}"));
            }
        }
    }

    fn res(&mut self, ctx: &str, got: Result<Stat, StatsError>, want: &Ref) {
        match got {
            Ok(s) => self.stat(ctx, &s, want),
            Err(e) => self.failures.push(format!("{ctx}: unexpected error {e}")),
        }
    }

    fn finish(self, what: &str) {
        assert!(self.checked > 0, "{what}: nothing checked");
        eprintln!(
            "{what}: {} values checked ({} undefined), max |diff| {:e}",
            self.checked, self.undefined, self.max_abs_diff
        );
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} values differ from the reference:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
    }
}

#[test]
fn fixture_tolerance_is_1e9() {
    assert_eq!(fixtures().tolerance, TOL);
}

#[test]
fn datasets_match_reference() {
    let mut c = Checker::default();
    for d in &fixtures().datasets {
        let e = &d.expected;
        let n = &d.name;
        let cons = consensus(&d.experts).unwrap();
        assert_eq!(cons.len(), e.consensus.len(), "{n}");
        for (u, (g, w)) in cons.iter().zip(&e.consensus).enumerate() {
            c.num(&format!("{n} consensus[{u}]"), *g, *w);
        }

        let p = paired(&d.judge, &cons).unwrap();
        let jc = &e.judge_vs_consensus;
        assert_eq!(p.len(), jc.n_pairs, "{n} n_pairs");
        c.res(&format!("{n} spearman"), spearman(&p.x, &p.y), &jc.spearman);
        c.res(&format!("{n} pearson"), pearson(&p.x, &p.y), &jc.pearson);
        c.res(
            &format!("{n} kendall"),
            kendall_tau_b(&p.x, &p.y),
            &jc.kendall_tau_b,
        );
        c.res(&format!("{n} mae"), mae(&p.x, &p.y), &jc.mae);

        let qwk = mean_against_each(&d.judge, &d.experts, |a, b| {
            quadratic_weighted_kappa(&scores_to_labels(a)?, &scores_to_labels(b)?, &d.labels)
        })
        .unwrap();
        assert_eq!(qwk.parts.len(), e.qwk_per_expert.len());
        for (i, (g, w)) in qwk.parts.iter().zip(&e.qwk_per_expert).enumerate() {
            c.stat(&format!("{n} qwk[expert {i}]"), g, w);
        }
        c.stat(&format!("{n} qwk_mean"), &qwk.mean, &e.qwk_mean);

        let mut all = d.experts.clone();
        all.push(d.judge.clone());
        c.res(
            &format!("{n} alpha_ordinal_all"),
            krippendorff_alpha(&all, Level::Ordinal),
            &e.alpha_ordinal_all,
        );
        for (level, want) in [
            (Level::Ordinal, &e.expert_alpha_ordinal),
            (Level::Interval, &e.expert_alpha_interval),
            (Level::Nominal, &e.expert_alpha_nominal),
        ] {
            c.res(
                &format!("{n} expert alpha {level:?}"),
                krippendorff_alpha(&d.experts, level),
                want,
            );
        }

        let icc = icc_complete(&d.experts).unwrap();
        assert_eq!(icc.n_units, e.expert_icc_n_units, "{n} icc units");
        c.stat(&format!("{n} icc2_1"), &icc.icc2_1, &e.expert_icc2_1);
        c.stat(&format!("{n} icc3_1"), &icc.icc3_1, &e.expert_icc3_1);

        let pairs = mean_over_rater_pairs(&d.experts, spearman).unwrap();
        assert_eq!(pairs.parts.len(), e.expert_spearman_pairs.len());
        for (i, (g, w)) in pairs.parts.iter().zip(&e.expert_spearman_pairs).enumerate() {
            c.stat(&format!("{n} expert spearman pair {i}"), g, w);
        }
        c.stat(
            &format!("{n} expert spearman mean"),
            &pairs.mean,
            &e.expert_spearman_pair_mean,
        );
    }
    c.finish("datasets");
}

#[test]
fn correlations_match_scipy() {
    let mut c = Checker::default();
    for k in &fixtures().correlation {
        let n = &k.name;
        c.res(&format!("{n} spearman"), spearman(&k.x, &k.y), &k.spearman);
        c.res(&format!("{n} pearson"), pearson(&k.x, &k.y), &k.pearson);
        c.res(
            &format!("{n} kendall"),
            kendall_tau_b(&k.x, &k.y),
            &k.kendall_tau_b,
        );
        c.res(&format!("{n} mae"), mae(&k.x, &k.y), &k.mae);
    }
    c.finish("correlation");
}

#[test]
fn kappas_match_sklearn() {
    let mut c = Checker::default();
    for k in &fixtures().kappa {
        let weights = match k.weights.as_deref() {
            None => KappaWeights::Unweighted,
            Some("linear") => KappaWeights::Linear,
            Some("quadratic") => KappaWeights::Quadratic,
            Some(other) => panic!("unknown weights {other}"),
        };
        c.res(
            &k.name,
            cohen_kappa_score(&k.a, &k.b, k.labels.as_deref(), weights),
            &k.expected,
        );
    }
    c.finish("kappa");
}

#[test]
fn binary_metrics_match_sklearn() {
    let mut c = Checker::default();
    for k in &fixtures().binary {
        let m = BinaryCounts::from_labels(&k.y_true, &k.y_pred)
            .unwrap()
            .metrics();
        let e = &k.expected;
        let n = &k.name;
        c.stat(&format!("{n} accuracy"), &m.accuracy, &e.accuracy);
        c.stat(&format!("{n} precision"), &m.precision, &e.precision);
        c.stat(&format!("{n} recall"), &m.recall, &e.recall);
        c.stat(&format!("{n} f1"), &m.f1, &e.f1);
        c.stat(&format!("{n} prevalence"), &m.prevalence, &e.prevalence);
        c.stat(&format!("{n} cohen_kappa"), &m.cohen_kappa, &e.cohen_kappa);
    }
    c.finish("binary");
}

#[test]
fn krippendorff_matches_package() {
    let mut c = Checker::default();
    for k in &fixtures().krippendorff {
        for (level, want) in [
            (Level::Nominal, &k.nominal),
            (Level::Ordinal, &k.ordinal),
            (Level::Interval, &k.interval),
        ] {
            c.res(
                &format!("{} {level:?}", k.name),
                krippendorff_alpha(&k.data, level),
                want,
            );
        }
    }
    c.finish("krippendorff");
}

#[test]
fn icc_matches_pingouin() {
    let mut c = Checker::default();
    for k in &fixtures().icc {
        c.res(&format!("{} icc2_1", k.name), icc2_1(&k.matrix), &k.icc2_1);
        c.res(&format!("{} icc3_1", k.name), icc3_1(&k.matrix), &k.icc3_1);
    }
    c.finish("icc");
}

#[test]
fn bootstrap_cis_match_numpy_percentile_on_identical_draws() {
    let mut c = Checker::default();
    for k in &fixtures().bootstrap {
        let n_units = k
            .units
            .as_ref()
            .map_or(k.x.len(), |u| u.iter().max().map_or(0, |m| m + 1));
        let mut r = match &k.units {
            None => PairedResampler::new(&k.x, &k.y).unwrap(),
            Some(u) => PairedResampler::clustered(&k.x, &k.y, u, n_units).unwrap(),
        };
        type Method = fn(&mut PairedResampler, &[usize]) -> Stat;
        let stats: [(&str, Method, &CiRef); 4] = [
            ("spearman", PairedResampler::spearman, &k.spearman),
            ("pearson", PairedResampler::pearson, &k.pearson),
            (
                "kendall_tau_b",
                PairedResampler::kendall_tau_b,
                &k.kendall_tau_b,
            ),
            ("mae", PairedResampler::mae, &k.mae),
        ];
        for (name, method, want) in stats {
            let ci = bootstrap_ci_from_resamples(n_units, &k.resamples, k.level, |idx| {
                method(&mut r, idx)
            })
            .unwrap();
            let ctx = format!("{} {name}", k.name);
            assert_eq!(ci.n_resamples, k.resamples.len(), "{ctx}");
            assert_eq!(ci.n_valid_resamples, want.n_valid, "{ctx} n_valid");
            c.num(&format!("{ctx} low"), ci.low.value(), want.low);
            c.num(&format!("{ctx} high"), ci.high.value(), want.high);
        }
        // The generic path (gather, then the plain function) must agree with the fast path.
        if k.units.is_none() {
            let (mut gx, mut gy) = (Vec::new(), Vec::new());
            let ci = bootstrap_ci_from_resamples(n_units, &k.resamples, k.level, |idx| {
                gx.clear();
                gy.clear();
                gx.extend(idx.iter().map(|&i| k.x[i]));
                gy.extend(idx.iter().map(|&i| k.y[i]));
                spearman(&gx, &gy).unwrap_or_else(|e| Stat::undefined(e.to_string()))
            })
            .unwrap();
            c.num(
                &format!("{} spearman generic low", k.name),
                ci.low.value(),
                k.spearman.low,
            );
            c.num(
                &format!("{} spearman generic high", k.name),
                ci.high.value(),
                k.spearman.high,
            );
        }
    }
    c.finish("bootstrap");
}

#[test]
fn percentiles_match_numpy() {
    let mut c = Checker::default();
    for k in &fixtures().percentile {
        c.num(
            &format!("percentile {} of {:?}", k.q, k.values),
            percentile(&k.values, k.q).unwrap(),
            Some(k.expected),
        );
    }
    c.finish("percentile");
}

#[test]
fn fixtures_cover_undefined_cases() {
    // Guard against a regenerated fixture that silently lost its edge cases.
    let f = fixtures();
    let nulls = f
        .correlation
        .iter()
        .flat_map(|k| [&k.spearman, &k.pearson, &k.kendall_tau_b, &k.mae])
        .chain(
            f.binary
                .iter()
                .flat_map(|k| [&k.expected.precision, &k.expected.recall]),
        )
        .filter(|r| r.value.is_none())
        .count();
    assert!(nulls >= 10, "only {nulls} undefined reference values");
    assert!(f.bootstrap.iter().any(|b| b.spearman.low.is_none()));
    assert!(f.datasets.len() >= 8);
}
