//! `therapygym validate` as a user runs it: a ratings file with `--json` and as tables, malformed
//! input, `--fit-calibration` feeding `judge --calibration`, and `--run` auditing a run made with
//! `import-transcripts` + `judge`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../therapygym-validate/tests/fixtures")
        .join(name)
}

fn json_of(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn has(v: &Value, path: &str) -> bool {
    path.split('.').try_fold(v, |v, k| v.get(k)).is_some()
}

/// A statistic is `{"value": number}` or `{"value": null, "reason": "..."}`.
fn is_stat(v: &Value) -> bool {
    v["value"].is_number() || (v["value"].is_null() && v["reason"].is_string())
}

#[test]
fn json_report_has_every_documented_key_and_the_reference_values() {
    let d = tempfile::tempdir().unwrap();
    let file = fixture("three_experts.csv");
    let o = run(
        &[
            "validate",
            "--ratings",
            file.to_str().unwrap(),
            "--json",
            "--bootstrap",
            "300",
            "--seed",
            "7",
        ],
        d.path(),
    );
    let r = json_of(&o);
    assert!(!stdout(&o).contains("NaN"));
    let items = r["items"].as_object().unwrap();
    assert_eq!(items.len(), 11);
    for (id, it) in items {
        let j = &it["judge_vs_experts"];
        assert!(j["n"].is_u64(), "{id}");
        for k in [
            "spearman",
            "pearson",
            "kendall_tau_b",
            "mae",
            "qwk",
            "krippendorff_alpha_ordinal",
            "bias",
        ] {
            assert!(is_stat(&j[k]), "items.{id}.judge_vs_experts.{k}: {}", j[k]);
        }
        for k in ["spearman", "pearson", "kendall_tau_b", "bias"] {
            let ci = &j["ci95"][k];
            assert!(
                (ci["low"].is_number() && ci["high"].is_number())
                    || (ci["low"].is_null() && ci["reason"].is_string()),
                "items.{id}.judge_vs_experts.ci95.{k}: {ci}"
            );
        }
        let e = &it["expert_vs_expert"];
        assert!(e["n"].is_u64());
        for k in [
            "krippendorff_alpha_ordinal",
            "krippendorff_alpha_interval",
            "icc2_1",
            "spearman",
        ] {
            assert!(is_stat(&e[k]), "items.{id}.expert_vs_expert.{k}");
        }
    }
    for k in [
        "session.n",
        "session.spearman",
        "session.pearson",
        "session.ci95.spearman",
    ] {
        assert!(has(&r, k), "{k}");
    }
    let safety = r["safety"].as_object().unwrap();
    for label in [
        "medication_advice",
        "missed_crisis",
        "unaddressed_abuse",
        "unaddressed_functional_impairment",
        "any",
    ] {
        let l = &safety[label];
        assert!(l["n"].is_u64(), "{label}");
        for k in [
            "prevalence",
            "accuracy",
            "precision",
            "recall",
            "f1",
            "cohen_kappa",
        ] {
            assert!(is_stat(&l[k]), "safety.{label}.{k}");
        }
    }
    assert_eq!(r["bootstrap"]["resamples"], 300);
    assert_eq!(r["bootstrap"]["seed"], 7);

    // Point estimates are the reference implementations' (the CIs depend on the draws).
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("three_experts.expected.json")).unwrap(),
    )
    .unwrap();
    let want = &doc["expected"];
    for (id, k) in [
        ("understanding", "spearman"),
        ("pacing", "qwk"),
        ("collaboration", "krippendorff_alpha_ordinal"),
    ] {
        let (w, g) = (
            want["items"][id]["judge_vs_experts"][k]["value"]
                .as_f64()
                .unwrap(),
            r["items"][id]["judge_vs_experts"][k]["value"]
                .as_f64()
                .unwrap(),
        );
        assert!((w - g).abs() < 1e-9, "{id}.{k}: {w} vs {g}");
    }
    let (w, g) = (
        want["session"]["spearman"]["value"].as_f64().unwrap(),
        r["session"]["spearman"]["value"].as_f64().unwrap(),
    );
    assert!((w - g).abs() < 1e-9);
    // Undefined is null with a reason, never 0.
    assert!(r["items"]["homework"]["judge_vs_experts"]["spearman"]["value"].is_null());
    assert!(r["safety"]["unaddressed_abuse"]["precision"]["reason"].is_string());

    // Same seed, same intervals; the positional form and the table output.
    let again = json_of(&run(
        &[
            "validate",
            file.to_str().unwrap(),
            "--json",
            "--bootstrap",
            "300",
            "--seed",
            "7",
        ],
        d.path(),
    ));
    assert_eq!(again["items"], r["items"]);
    let o = run(
        &[
            "validate",
            "--ratings",
            file.to_str().unwrap(),
            "--bootstrap",
            "200",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "Judge vs expert consensus, per CTRS item",
        "Expert vs expert, per CTRS item",
        "Session level",
        "Safety: judge flag vs expert majority",
        "Undefined (n/a):",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }

    // Other layouts and a named judge rater.
    let r = json_of(&run(
        &[
            "validate",
            "--ratings",
            fixture("two_experts_double20.csv").to_str().unwrap(),
            "--judge-rater",
            "gpt-judge",
            "--json",
            "--bootstrap",
            "100",
        ],
        d.path(),
    ));
    assert_eq!(
        r["judge"],
        serde_json::json!({"kind": "rater", "name": "gpt-judge"})
    );
    let r = json_of(&run(
        &[
            "validate",
            fixture("four_experts.jsonl").to_str().unwrap(),
            "--json",
            "--bootstrap",
            "100",
        ],
        d.path(),
    ));
    assert_eq!(r["counts"]["experts"].as_array().unwrap().len(), 4);
}

#[test]
fn malformed_ratings_exit_2_naming_file_line_and_problem() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        (
            "dialogue_id,rater,item,score\nd1,a,agenda,3\nd1,judge,agenda,9\n",
            "bad.csv:3 (`d1`): field `score`: `9` is out of range; expected an integer 0–6",
        ),
        (
            "dialogue_id,rater,item,score\nd1,a,agenda,3\nd1,judge,agendum,3\n",
            "bad.csv:3 (`d1`): field `item`: unknown item `agendum`",
        ),
        (
            "dialogue_id,rater,item,score\nd1,a,agenda,3\nd1,judge,agenda,3\nd1,a,agenda,4\n",
            "bad.csv:4 (`d1`): duplicate rating of item `agenda` by rater `a` for dialogue `d1`: already given on line 2",
        ),
        (
            "dialogue_id,rater,item,score\nd1,a,agenda,3\nd1,gpt,agenda,3\n",
            "bad.csv: no ratings by the judge rater `judge`; raters in the file: a, gpt",
        ),
    ];
    for (text, want) in cases {
        let file = d.path().join("bad.csv");
        std::fs::write(&file, text).unwrap();
        let o = run(&["validate", "--ratings", "bad.csv"], d.path());
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(stderr(&o).contains(want), "{}\nwant: {want}", stderr(&o));
    }
    let o = run(&["validate", "--ratings", "missing.csv"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read missing.csv"),
        "{}",
        stderr(&o)
    );
}

fn transcripts(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            serde_json::json!({
                "session_id": id,
                "messages": [
                    {"role": "therapist", "content": format!("What would you like to work on today ({id})?")},
                    {"role": "patient", "content": "I keep thinking I will fail my exams."},
                    {"role": "therapist", "content": "What is the evidence for and against that thought?"},
                    {"role": "patient", "content": "I passed the last two."},
                ]
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn run_mode_audits_a_judged_run_and_calibration_feeds_judge() {
    let d = tempfile::tempdir().unwrap();
    let ids = [
        "tjb-01", "tjb-02", "tjb-03", "tjb-04", "tjb-05", "tjb-06", "tjb-07",
    ];
    std::fs::write(d.path().join("dialogues.jsonl"), transcripts(&ids)).unwrap();
    let o = run(
        &[
            "import-transcripts",
            "dialogues.jsonl",
            "--out",
            "run",
            "--judge",
            "scripted:echo",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let judged = json_of(&run(
        &["judge", "run", "--judge", "scripted:echo", "--json"],
        d.path(),
    ));
    let hash = judged["judge_hash"].as_str().unwrap().to_owned();

    // The judge's agenda scores, as `export` shows them.
    let o = run(&["export", "run"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let judge_agenda: Vec<(String, f64)> = stdout(&o)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["session_id"].as_str().unwrap().to_owned(),
                v["judgment"]["ctrs"]["agenda"]["score"].as_f64().unwrap(),
            )
        })
        .collect();

    // Two experts rate six of the seven sessions (tjb-07 is left unrated).
    let mut csv = String::from("dialogue_id,rater,rater_kind,item,score,rationale\n");
    for (i, id) in ids.iter().take(6).enumerate() {
        for (e, shift) in [("ann", 0), ("ben", 1)] {
            for (k, item) in ["agenda", "feedback", "collaboration"].iter().enumerate() {
                csv += &format!(
                    "{id},{e},human,{item},{},\"seen, noted\"\n",
                    (i + k + shift) % 7
                );
            }
            csv += &format!("{id},{e},human,missed_crisis,{},\n", u8::from(i == 2));
        }
    }
    std::fs::write(d.path().join("experts.csv"), &csv).unwrap();
    let prefix = &hash.trim_start_matches("sha256:")[..12];
    let r = json_of(&run(
        &[
            "validate",
            "--run",
            "run",
            "--judge-hash",
            prefix,
            "--ratings",
            "experts.csv",
            "--json",
            "--bootstrap",
            "200",
            "--fit-calibration",
            "cal.toml",
        ],
        d.path(),
    ));
    assert_eq!(r["judge"]["kind"], "run");
    assert_eq!(r["judge"]["judge_hash"], hash.as_str());
    assert_eq!(
        r["counts"]["run"],
        serde_json::json!({"sessions": 7, "rated_sessions": 6, "judged": 6, "judge_unscored": 0, "not_judged": 0})
    );
    assert_eq!(r["counts"]["experts"], serde_json::json!(["ann", "ben"]));
    let agenda = &r["items"]["agenda"]["judge_vs_experts"];
    assert_eq!(agenda["n"], 6);
    let rated: Vec<f64> = judge_agenda
        .iter()
        .filter(|(id, _)| id != "tjb-07")
        .map(|(_, s)| *s)
        .collect();
    let mean = rated.iter().sum::<f64>() / rated.len() as f64;
    assert!((agenda["judge_mean"]["value"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert_eq!(r["session"]["n"], 6);
    assert_eq!(r["safety"]["missed_crisis"]["n"], 6);
    assert_eq!(r["calibration"]["file"], "cal.toml");

    // The calibration map is what `judge --calibration` takes: calibrated scores are stored.
    let cal = std::fs::read_to_string(d.path().join("cal.toml")).unwrap();
    assert!(
        cal.contains("fitted_on = \"experts.csv (judgment set sha256:"),
        "{cal}"
    );
    let o = run(
        &[
            "import-transcripts",
            "dialogues.jsonl",
            "--out",
            "run2",
            "--judge",
            "scripted:echo",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &[
            "judge",
            "run2",
            "--judge",
            "scripted:echo",
            "--calibration",
            "cal.toml",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        count(
            &d.path().join("run2"),
            "SELECT COUNT(*) FROM judgments WHERE calibrated IS NOT NULL"
        ),
        7
    );

    // With --run the file holds experts only; every dialogue must be a session of the run.
    let line = csv.lines().count() + 1;
    let errors = [
        (
            format!("{csv}tjb-01,judge,,agenda,3,\n"),
            format!(
                "experts.csv:{line} (`tjb-01`): field `rater`: rater `judge` is the judge rater, but with --run"
            ),
        ),
        (
            format!("{csv}tjb-99,ann,human,agenda,3,\n"),
            format!(
                "experts.csv:{line} (`tjb-99`): field `dialogue_id`: `tjb-99` is not a session of run run"
            ),
        ),
    ];
    for (text, want) in errors {
        std::fs::write(d.path().join("experts.csv"), text).unwrap();
        let o = run(
            &["validate", "--run", "run", "--ratings", "experts.csv"],
            d.path(),
        );
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(&want), "{}\nwant: {want}", stderr(&o));
    }
    let o = run(
        &[
            "validate",
            "--run",
            "run",
            "--judge-hash",
            "ffff",
            "--ratings",
            "experts.csv",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no judgment set `ffff`"),
        "{}",
        stderr(&o)
    );
}
