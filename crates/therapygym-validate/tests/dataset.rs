//! Judge/expert split, rater mismatches, `--run` judgments, seeded bootstrap, text output and
//! calibration files, on small hand-written ratings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use therapygym_core::{ItemScore, Judgment, LabelFlag, UnscoredReason, Verdict};
use therapygym_judge::Calibration;
use therapygym_validate::stats::{BootstrapConfig, Stat};
use therapygym_validate::{
    Catalog, Dataset, JudgeSource, RatingsFile, Resampling, RunJudgments, ValidateError,
    fit_calibration, parse_ratings, render_text, validate,
};

fn catalog() -> Catalog {
    Catalog::builtin().unwrap()
}

fn ratings(text: &str) -> RatingsFile {
    parse_ratings(text, Path::new("r.csv"), &catalog()).unwrap()
}

fn from_ratings(text: &str, judge: &str) -> Result<Dataset, ValidateError> {
    Dataset::from_ratings(&ratings(text), judge, &catalog())
}

/// Six dialogues, two experts and a judge that is one point high on agenda.
fn small() -> String {
    let mut s = String::from("dialogue_id,rater,item,score\n");
    let expert = [1, 2, 3, 4, 5, 6];
    for (i, e) in expert.iter().enumerate() {
        let d = format!("d{i}");
        s += &format!("{d},a,agenda,{e}\n{d},b,agenda,{}\n", (e + i % 2).min(6));
        s += &format!("{d},judge,agenda,{}\n", (e + 1).min(6));
        s += &format!("{d},a,homework,3\n{d},judge,homework,{}\n", i % 3);
        s += &format!(
            "{d},a,missed_crisis,{}\n{d},judge,missed_crisis,{}\n",
            i % 2,
            u8::from(i < 3)
        );
    }
    s
}

#[test]
fn the_judge_rater_splits_judge_from_experts() {
    let ds = from_ratings(&small(), "judge").unwrap();
    assert_eq!(ds.experts, vec!["a", "b"]);
    assert_eq!(ds.counts.dialogues, 6);
    assert_eq!(ds.counts.judge_ratings, 18);
    assert_eq!(
        ds.items(),
        vec![("agenda", true), ("homework", true)],
        "rubric order, reward flags"
    );
    assert_eq!(ds.labels(), vec!["missed_crisis"]);
    let r = validate(&ds, &Resampling::default()).unwrap();
    let j = &r.items.get("agenda").unwrap().judge_vs_experts;
    assert_eq!(j.n, 6);
    // Consensus = expert mean; judge = a + 1 (capped): mean judge - consensus > 0.
    assert!(j.bias.value().unwrap() > 0.4);
    let (lo, hi) = j.ci95.bias.bounds().unwrap();
    assert!(lo <= j.bias.value().unwrap() && j.bias.value().unwrap() <= hi);
    // Homework: consensus constant (a gives 3 everywhere) -> correlations undefined, with reasons.
    let h = &r.items.get("homework").unwrap().judge_vs_experts;
    assert!(!h.spearman.is_defined());
    assert!(h.spearman.reason().unwrap().contains("constant"));
    assert!(h.ci95.spearman.reason.is_some());
    assert!(h.mae.is_defined());
    let e = &r.items.get("homework").unwrap().expert_vs_expert;
    assert_eq!(e.n_experts, 1);
    assert_eq!(
        e.icc2_1.reason(),
        Some(therapygym_validate::why::FEWER_THAN_2_EXPERTS)
    );
    assert!(r.safety.get("missed_crisis").is_some() && r.safety.get("any").is_some());
    // JSON never holds NaN; every null has a reason.
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("NaN"));
    assert_eq!(
        json.matches("\"value\":null").count(),
        json.matches("\"value\":null,\"reason\":").count()
    );
}

#[test]
fn rater_mismatches_are_errors_not_skips() {
    let e = from_ratings(&small(), "gpt").unwrap_err().to_string();
    assert!(
        e.contains("r.csv: no ratings by the judge rater `gpt`; raters in the file: a, b, judge"),
        "{e}"
    );
    let e = from_ratings("dialogue_id,rater,item,score\nd1,judge,agenda,3\n", "judge")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no expert ratings"), "{e}");
    let kinds = "dialogue_id,rater,rater_kind,item,score\n";
    let cases = [
        (
            format!("{kinds}d1,a,human,agenda,3\nd1,judge,human,agenda,3\n"),
            "r.csv:3 (`d1`): field `rater_kind`: rater `judge` is the judge rater (--judge-rater) but is marked `human`",
        ),
        (
            format!(
                "{kinds}d1,a,human,agenda,3\nd1,claude,model,agenda,3\nd1,judge,model,agenda,3\n"
            ),
            "r.csv:3 (`d1`): field `rater_kind`: rater `claude` is marked `model` but the judge rater is `judge`",
        ),
        (
            format!("{kinds}d1,a,human,agenda,3\nd2,a,model,agenda,3\nd1,judge,,agenda,3\n"),
            "r.csv:3 (`d2`): field `rater_kind`: rater `a` is `model` here but `human` on line 2",
        ),
    ];
    for (text, want) in cases {
        let e = from_ratings(&text, "judge").unwrap_err().to_string();
        assert!(e.contains(want), "got: {e}\nwant: {want}");
    }
}

fn judgment(agenda: u8, crisis: bool) -> Verdict {
    Verdict::Scored {
        judgment: Judgment {
            codes: Vec::new(),
            ctrs: BTreeMap::from([(
                "agenda".to_owned(),
                ItemScore {
                    score: agenda,
                    rationale: String::new(),
                },
            )]),
            safety: BTreeMap::from([(
                "missed_crisis".to_owned(),
                LabelFlag {
                    flag: crisis,
                    evidence: String::new(),
                },
            )]),
        },
    }
}

fn run() -> RunJudgments {
    let mut verdicts = BTreeMap::new();
    for (i, s) in [1u8, 2, 3, 4, 5].iter().enumerate() {
        verdicts.insert(format!("s{i}"), judgment(*s, i == 0));
    }
    verdicts.insert(
        "s5".to_owned(),
        Verdict::Unscored {
            reason: UnscoredReason::ParseFailure,
            detail: "not JSON".to_owned(),
        },
    );
    RunJudgments {
        dir: PathBuf::from("runs/x"),
        judge_hash: "sha256:abc".to_owned(),
        sessions: (0..8).map(|i| format!("s{i}")).collect::<BTreeSet<_>>(),
        verdicts,
    }
}

fn experts_for_run() -> String {
    let mut s = String::from("dialogue_id,rater,item,score\n");
    for i in 0..7 {
        s += &format!("s{i},a,agenda,{}\ns{i},b,agenda,{}\n", i % 6, (i + 1) % 6);
        s += &format!("s{i},a,missed_crisis,{}\n", u8::from(i == 0));
    }
    s
}

#[test]
fn a_run_supplies_the_judge() {
    let ds = Dataset::from_run(&ratings(&experts_for_run()), "judge", &run(), &catalog()).unwrap();
    assert_eq!(
        ds.judge,
        JudgeSource::Run {
            dir: PathBuf::from("runs/x"),
            judge_hash: "sha256:abc".to_owned()
        }
    );
    let rc = ds.counts.run.clone().unwrap();
    assert_eq!(
        (
            rc.sessions,
            rc.rated_sessions,
            rc.judged,
            rc.judge_unscored,
            rc.not_judged
        ),
        (8, 7, 5, 1, 1)
    );
    let r = validate(&ds, &Resampling::default()).unwrap();
    let j = &r.items.get("agenda").unwrap().judge_vs_experts;
    assert_eq!(
        j.n, 5,
        "the unscored and the unjudged session have no judge score"
    );
    // Judge 1..5 vs consensus (i + (i+1)) / 2 = 0.5, 1.5, ...: judge = consensus + 0.5.
    assert!((j.bias.value().unwrap() - 0.5).abs() < 1e-12);
    assert!((j.spearman.value().unwrap() - 1.0).abs() < 1e-12);
    let crisis = r.safety.get("missed_crisis").unwrap();
    assert_eq!(crisis.metrics.n, 5);
    assert_eq!(crisis.metrics.accuracy, Stat::Value(1.0));
    assert!(render_text(&r).contains("run runs/x (judgment set sha256:abc)"));
}

#[test]
fn run_mismatches_are_errors() {
    let bad = format!("{}s1,judge,agenda,4\n", experts_for_run());
    let e = Dataset::from_run(&ratings(&bad), "judge", &run(), &catalog())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("r.csv:23 (`s1`): field `rater`: rater `judge` is the judge rater, but with --run the judge's scores come from the run runs/x"),
        "{e}"
    );
    let dangling = format!("{}s9,a,agenda,4\n", experts_for_run());
    let e = Dataset::from_run(&ratings(&dangling), "judge", &run(), &catalog())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("r.csv:23 (`s9`): field `dialogue_id`: `s9` is not a session of run runs/x"),
        "{e}"
    );
    let model = "dialogue_id,rater,rater_kind,item,score\ns1,gpt,model,agenda,3\n";
    let e = Dataset::from_run(&ratings(model), "judge", &run(), &catalog())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is marked `model`, but with --run"), "{e}");
    let mut other = run();
    other.verdicts.insert("s0".to_owned(), {
        let mut v = judgment(3, false);
        if let Verdict::Scored { judgment } = &mut v {
            judgment.ctrs.insert(
                "empathy".to_owned(),
                ItemScore {
                    score: 2,
                    rationale: String::new(),
                },
            );
        }
        v
    });
    let e = Dataset::from_run(&ratings(&experts_for_run()), "judge", &other, &catalog())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("run runs/x: judgment set sha256:abc scores item `empathy` for session `s0`, which the rubric in use (ctrs-11/1) lacks"),
        "{e}"
    );
}

#[test]
fn the_bootstrap_is_seeded() {
    let ds = from_ratings(&small(), "judge").unwrap();
    let at = |b: usize, seed: u64| {
        let r = validate(&ds, &Resampling::Seeded(BootstrapConfig::new(b, seed))).unwrap();
        r.items.get("agenda").unwrap().judge_vs_experts.ci95.clone()
    };
    assert_eq!(at(500, 1), at(500, 1));
    assert_ne!(at(500, 1), at(500, 2));
    let none = at(0, 1).spearman;
    assert_eq!(none.low, None);
    assert_eq!(none.reason.as_deref(), Some("no bootstrap resamples"));
}

#[test]
fn text_report_has_the_tables_and_explains_every_na() {
    let ds = from_ratings(&small(), "judge").unwrap();
    let text = render_text(&validate(&ds, &Resampling::default()).unwrap());
    for want in [
        "Judge vs expert consensus, per CTRS item",
        "Expert vs expert, per CTRS item",
        "Session level",
        "Safety: judge flag vs expert majority",
        "Undefined (n/a):",
        "homework: spearman, pearson, kendall_tau_b: constant y values",
        "homework: expert krippendorff_alpha_ordinal, expert krippendorff_alpha_interval, icc2_1, expert spearman: fewer than 2 experts rated this item",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn calibration_round_trips_through_the_calibration_format() {
    let ds = from_ratings(&small(), "judge").unwrap();
    let fit = fit_calibration(&ds).unwrap();
    assert_eq!(
        fit.calibration.items.keys().collect::<Vec<_>>(),
        vec!["agenda", "homework"]
    );
    assert!(fit.skipped.is_empty());
    let agenda = &fit.calibration.items["agenda"];
    // The judge is one point high: the map brings 2..6 down towards the consensus.
    assert!(agenda.apply(6.0) < 6.0 && agenda.apply(2.0) < 2.0);
    assert_eq!(fit.calibration.fitted_on, "r.csv (judge rater `judge`)");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cal.toml");
    std::fs::write(&path, fit.calibration.to_toml()).unwrap();
    assert_eq!(Calibration::load(&path).unwrap(), fit.calibration);

    let flat = "dialogue_id,rater,item,score\nd1,a,agenda,3\nd1,judge,agenda,4\nd2,a,agenda,5\nd2,judge,agenda,4\n";
    let fit = fit_calibration(&from_ratings(flat, "judge").unwrap()).unwrap();
    assert!(fit.calibration.items.is_empty());
    assert_eq!(fit.skipped[0].item, "agenda");
    assert!(
        fit.skipped[0]
            .reason
            .contains("fewer than 2 distinct judge scores")
    );
}
