//! Issue 13 part B as a user runs it: a labelled, annotated utterance-per-row CSV corpus
//! (`data/corpora/mi-sample.csv`) imported with a column mapping, its labels and annotations in
//! `export`, known-groups validation (`validate --known-groups`), and long dialogues unscored
//! with `context_overflow` instead of a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/corpora/mi-sample.csv")
}

/// The column flags of the sample corpus.
const MAPPING: [&str; 14] = [
    "--format",
    "csv",
    "--dialogue-col",
    "transcript_id",
    "--order-col",
    "utterance_id",
    "--speaker-col",
    "interlocutor",
    "--text-col",
    "utterance_text",
    "--speaker-map",
    "therapist=therapist,client=patient",
    "--label-col",
    "mi_quality",
];

/// The corpus's behaviour values mapped to the MI rubric's codes.
const CODES: [&str; 16] = [
    "--annotation-map",
    "behaviour:Q=question",
    "--annotation-map",
    "behaviour:SR=simple_reflection",
    "--annotation-map",
    "behaviour:CR=complex_reflection",
    "--annotation-map",
    "behaviour:RQ=simple_reflection+question",
    "--annotation-map",
    "behaviour:AF=affirm",
    "--annotation-map",
    "behaviour:GI=giving_information",
    "--annotation-map",
    "behaviour:PER=persuade",
    "--annotation-map",
    "behaviour:CON=confront",
];

fn import(file: &Path, out: &str, extra: &[&str], cwd: &Path) -> std::process::Output {
    let mut args = vec![
        "import-transcripts",
        file.to_str().unwrap(),
        "--out",
        out,
        "--judge",
        "scripted:echo",
    ];
    args.extend(MAPPING);
    args.extend(extra);
    run(&args, cwd)
}

/// `validate --run corpus --known-groups SPEC EXTRA…` (with the corpus's code map if `codes`).
fn validate(cwd: &Path, spec: &str, extra: &[&str], codes: bool) -> std::process::Output {
    let mut args = vec!["validate", "--run", "corpus", "--known-groups", spec];
    args.extend(extra);
    if codes {
        args.extend(CODES);
    }
    run(&args, cwd)
}

/// The sample corpus with its annotations, imported as run `corpus`.
fn import_sample(cwd: &Path) {
    let o = import(&corpus(), "corpus", &["--annotation-col", "behaviour"], cwd);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("imported 8 dialogues"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_labelled_csv_corpus_imports_exports_and_validates_by_known_groups() {
    let d = tempfile::tempdir().unwrap();
    import_sample(d.path());

    // Labels and annotations travel with the transcripts, before any judging.
    let o = run(&["export", "corpus"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let recs: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 8);
    let h1 = recs.iter().find(|r| r["session_id"] == "mi-h1").unwrap();
    assert_eq!(h1["labels"], serde_json::json!({"mi_quality": "high"}));
    assert_eq!(h1["messages"].as_array().unwrap().len(), 7);
    assert_eq!(h1["messages"][1]["role"], "patient");
    assert_eq!(h1["annotations"]["behaviour"][0], "Q");
    assert!(h1["annotations"]["behaviour"][1].is_null());
    let o = run(&["export", "corpus", "--format", "csv"], d.path());
    let csv = stdout(&o);
    let header = csv.lines().next().unwrap();
    assert!(
        header.ends_with(",label:mi_quality,annotations,messages"),
        "{header}"
    );
    assert!(csv.contains("mi-l1,external,0,completed"), "{csv}");

    // Judge under the MI rubric (behaviour codes), then validate by known groups.
    let o = run(&["judge", "corpus", "--rubric", "mi", "--json"], d.path());
    assert!(o.status.code().is_some_and(|c| c < 2), "{}", stderr(&o));
    let o = validate(
        d.path(),
        "mi_quality=high>low",
        &["--bootstrap", "200", "--json"],
        true,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let kg = &v["known_groups"];
    assert_eq!(
        (kg["n_high"].as_u64(), kg["n_low"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(kg["label"], "mi_quality");
    let rows = kg["rows"].as_array().unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    for k in ["item", "code", "annotated_code", "derived"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    for r in rows.iter().filter(|r| r["kind"] == "item") {
        for key in ["auc", "cliffs_delta"] {
            let x = r[key]["value"].as_f64().unwrap();
            assert!(x.is_finite(), "{key} of {}: {x}", r["id"]);
        }
        assert!(r["auc_ci"]["low"]["value"].as_f64().is_some(), "{r}");
        let p = r["mann_whitney"]["p_greater"]["value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{p}");
    }
    // The corpus's own annotations separate the groups: reflections only in HIGH dialogues.
    let reflections = rows
        .iter()
        .find(|r| r["kind"] == "annotated_code" && r["id"] == "complex_reflection")
        .unwrap();
    assert_eq!(reflections["auc"]["value"], 1.0);
    let behaviour = kg["behaviour"].as_array().unwrap();
    let q = behaviour.iter().find(|b| b["code"] == "question").unwrap();
    assert_eq!(q["n_dialogues"], 8);
    // Q ×8 and RQ ×1 in the corpus.
    assert_eq!(q["annotated_count"], 9);
    assert!(q["judge_count"].as_u64().is_some());
    assert!(
        q["spearman"].get("value").is_some() && q["icc2_1"].get("ci").is_some(),
        "{q}"
    );

    // The text table.
    let o = validate(
        d.path(),
        "mi_quality=high>low",
        &["--bootstrap", "50"],
        true,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with("Known groups: mi_quality=high (4 dialogues) > mi_quality=low (4)"),
        "{text}"
    );
    assert!(
        text.contains("Behaviour counts, judge vs annotated"),
        "{text}"
    );
}

#[test]
fn unknown_labels_values_and_codes_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    import_sample(d.path());
    let o = run(&["judge", "corpus", "--rubric", "mi"], d.path());
    assert!(o.status.code().is_some_and(|c| c < 2), "{}", stderr(&o));
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "quality=high>low",
            &[],
            "no dialogue label `quality`; the run's labels: mi_quality",
        ),
        (
            "mi_quality=good>low",
            &[],
            "label `mi_quality` never has the value `good`; its values: high, low",
        ),
        ("mi_quality", &[], "expected LABEL=HIGH>LOW"),
        (
            "mi_quality=high>low",
            &["--annotation-map", "behaviour:Q=questions"],
            "`questions` is not a code of `mi-miti42`",
        ),
        (
            "mi_quality=high>low",
            &["--annotation-map", "talk:Q=question"],
            "names the column `talk`, but the import kept annotations of behaviour",
        ),
    ];
    for (spec, extra, want) in cases {
        let mut args = vec!["--bootstrap", "0"];
        args.extend(extra);
        let o = validate(d.path(), spec, &args, false);
        assert_eq!(o.status.code(), Some(2), "{spec} {extra:?}");
        assert!(stderr(&o).contains(want), "want {want:?}: {}", stderr(&o));
    }
    // The expert-rating outputs need a ratings file.
    let o = validate(
        d.path(),
        "mi_quality=high>low",
        &["--html", "kg.html"],
        false,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("add `--ratings FILE`"),
        "{}",
        stderr(&o)
    );
    // --known-groups needs a run.
    let o = run(
        &["validate", "--known-groups", "mi_quality=high>low"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--run"), "{}", stderr(&o));
}

#[test]
fn bad_rows_are_all_reported_with_their_lines_and_nothing_is_imported() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("bad.csv");
    std::fs::write(
        &file,
        "transcript_id,utterance_id,interlocutor,utterance_text,mi_quality\n\
a,1,therapist,Hello,high\n\
a,1,client,Hi,high\n\
a,2,,Who am I,high\n\
a,3,narrator,Meanwhile,high\n\
a,4,client,,high\n\
a,5,client,Bye,low\n",
    )
    .unwrap();
    let o = import(&file, "bad-run", &[], d.path());
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("5 problems:"), "{e}");
    for want in [
        "bad.csv:3 (`a`): field `utterance_id`: duplicate order 1",
        "bad.csv:4 (`a`): field `interlocutor`: missing",
        "bad.csv:5 (`a`): field `interlocutor`: `narrator` is not in --speaker-map",
        "bad.csv:6 (`a`): field `utterance_text`: empty",
        "bad.csv:7 (`a`): field `mi_quality`: `low` here but `high` on line 2",
    ] {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
    assert!(
        !d.path().join("bad-run").exists(),
        "nothing is half-imported"
    );

    // A missing column is named with its flag; missing flags are named too.
    let o = import(&corpus(), "x", &["--annotation-col", "code"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the header has no column `code` (--annotation-col)"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &[
            "import-transcripts",
            corpus().to_str().unwrap(),
            "--out",
            "y",
            "--dialogue-col",
            "transcript_id",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .contains("a CSV import needs --order-col, --speaker-col, --text-col, --speaker-map"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_dialogue_too_long_for_the_judge_is_unscored_context_overflow() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("long.csv");
    std::fs::write(&file, long_corpus(true, 50, 300)).unwrap();
    let o = import(&file, "long", &[], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    // A scripted judge with an 8,000-word context: the short dialogue is scored, the long one
    // (15,000 words) unscored at once (one attempt, no re-ask).
    let o = run(
        &[
            "judge",
            "long",
            "--judge",
            "scripted:context:8000",
            "--max-unscored-rate",
            "1",
            "--json",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["unscored_reasons"]["context_overflow"], 1, "{s}");
    assert_eq!(s["sessions"]["unscored"], 1, "{s}");
    let o = run(&["export", "long"], d.path());
    let long = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["session_id"] == "long")
        .unwrap();
    assert_eq!(long["judgment"]["unscored_reason"], "context_overflow");
    assert_eq!(
        count(
            &d.path().join("long"),
            "SELECT attempts FROM judgments WHERE session_id = 'long'"
        ),
        1
    );
}

/// A dialogue of `turns` utterances of `words` words each, after a short one if `short`.
fn long_corpus(short: bool, turns: usize, words: usize) -> String {
    let mut s = String::from("transcript_id,utterance_id,interlocutor,utterance_text,mi_quality\n");
    if short {
        s.push_str("short,1,therapist,How are you?,high\nshort,2,client,Fine.,high\n");
    }
    let sentence = "I keep going over the same worries again and again at night ";
    for t in 0..turns {
        let who = if t % 2 == 0 { "therapist" } else { "client" };
        let text: String = sentence
            .split_whitespace()
            .cycle()
            .take(words)
            .collect::<Vec<_>>()
            .join(" ");
        s.push_str(&format!("long,{},{who},{text},low\n", t + 1));
    }
    s
}

/// Tier 1: the embedded model (8k context) on a dialogue of ~15k tokens is unscored
/// `context_overflow` quickly: the prompt is counted, never decoded, truncated or retried.
#[cfg(feature = "model-tests")]
#[test]
fn the_embedded_judge_marks_an_overlong_dialogue_context_overflow_quickly() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("long.csv");
    std::fs::write(&file, long_corpus(false, 50, 300)).unwrap();
    let o = import(&file, "long", &[], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let started = std::time::Instant::now();
    let o = run(
        &[
            "judge",
            "long",
            "--judge",
            "embedded",
            "--max-unscored-rate",
            "1",
            "--judge-rationale-chars",
            "60",
            "--json",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["unscored_reasons"]["context_overflow"], 1, "{s}");
    assert_eq!(
        count(
            &d.path().join("long"),
            "SELECT attempts FROM judgments WHERE session_id = 'long'"
        ),
        1
    );
    // Loading the model and tokenising the prompt, nothing more.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
