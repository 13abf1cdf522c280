//! A second rubric as data: `--rubric mi` (Motivational Interviewing, MITI 4.2 structure) in
//! `eval`, `judge`, `export` and the reward check, with scripted models only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const MI_GLOBALS: [&str; 4] = [
    "cultivating_change_talk",
    "softening_sustain_talk",
    "partnership",
    "empathy",
];

fn eval(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "eval",
        "--limit",
        "3",
        "--turns",
        "2",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(SCRIPTED);
    args.extend(extra);
    run(&args, dir)
}

fn measure<'a>(s: &'a Value, id: &str) -> &'a Value {
    s["measures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no measure {id} in {s}"))
}

#[test]
fn eval_under_mi_scores_globals_counts_codes_and_derives_scores() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("mi");
    let o = eval(d.path(), &run_dir, &["--rubric", "mi"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["rubric"], "mi-miti42/1");
    assert_eq!(s["sessions"]["unscored"], 0, "{s}");
    let items = s["ctrs"]["items"].as_object().unwrap();
    assert_eq!(s["ctrs"]["item_order"], serde_json::json!(MI_GLOBALS));
    assert_eq!(items.len(), 4);
    for g in MI_GLOBALS {
        let m = items[g]["mean"].as_f64().unwrap();
        assert!((1.0..=5.0).contains(&m), "{g}: {m}");
    }
    // Every code is counted over the 3 sessions; 2 therapist utterances each, at most 6 codes
    // per utterance.
    let q = measure(&s, "question");
    assert_eq!(
        (q["kind"].as_str(), q["n"].as_u64()),
        (Some("count"), Some(3))
    );
    let total: f64 = s["measures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "count")
        .map(|m| m["total"].as_f64().unwrap())
        .sum();
    assert!(total <= 3.0 * 2.0 * 6.0, "{total}");
    let tech = measure(&s, "technical_global");
    assert_eq!(tech["n"], 3);
    // Each session's technical global is the mean of its two change-talk globals, so the mean
    // over sessions equals the mean of the two item means.
    let want = (items["cultivating_change_talk"]["mean"].as_f64().unwrap()
        + items["softening_sustain_talk"]["mean"].as_f64().unwrap())
        / 2.0;
    assert!((tech["mean"].as_f64().unwrap() - want).abs() < 1e-9);
    // Ratios either have a value or say why not, per session.
    let rq = measure(&s, "reflection_to_question_ratio");
    assert_eq!(
        rq["n"].as_u64().unwrap() + rq["no_value"].as_u64().unwrap(),
        3
    );
    // The rubric is stored in the run and hashed into the manifest.
    let stored = std::fs::read_to_string(run_dir.join("inputs/rubric.toml")).unwrap();
    assert_eq!(stored, include_str!("../../../data/rubrics/mi.toml"));
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["rubric"]["id"], "mi-miti42/1");
    assert!(
        m["rubric"]["sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(m["prompts"]["judge_system"]["name"], "judge_system_mi");
    // The text summary names the rubric and lists counts and derived scores.
    let o = run(&["judge", run_dir.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("mi-miti42/1 item"), "{text}");
    assert!(text.contains("percent_complex_reflections"), "{text}");
    assert!(!text.contains("CTRS item"), "{text}");
}

#[test]
fn judge_rescores_a_cbt_run_under_mi_as_a_new_set_and_export_follows_the_rubric() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("cbt");
    let o = eval(d.path(), &run_dir, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cbt: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(cbt["ctrs"]["items"].as_object().unwrap().len(), 11);
    assert!(
        cbt.get("measures").is_none(),
        "CTRS summaries are unchanged"
    );
    let o = run(
        &[
            "judge",
            run_dir.to_str().unwrap(),
            "--rubric",
            "mi",
            "--judge",
            "scripted:echo",
            "--json",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mi: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(mi["rubric"], "mi-miti42/1");
    assert_eq!(mi["ctrs"]["n"], 3);
    assert_ne!(mi["judge_hash"], cbt["judge_hash"]);
    assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM judge_sets"), 2);

    // CSV columns: ids, the MI globals, one count per code, the derived scores, the labels.
    let o = run(
        &["export", run_dir.to_str().unwrap(), "--format", "csv"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = stdout(&o);
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let at = |c: &str| {
        header
            .iter()
            .position(|h| *h == c)
            .unwrap_or_else(|| panic!("no column {c}: {header:?}"))
    };
    assert!(at("cultivating_change_talk") < at("question"));
    assert!(at("confront") < at("technical_global"));
    assert!(at("mi_non_adherent") < at("missed_crisis"));
    assert!(
        !header.contains(&"agenda"),
        "the MI set has no CTRS columns"
    );
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let empathy: u8 = row[at("empathy")].parse().unwrap();
    assert!((1..=5).contains(&empathy));
    let tech: f64 = row[at("technical_global")].parse().unwrap();
    let g = |c: &str| row[at(c)].parse::<f64>().unwrap();
    assert!(
        (tech - (g("cultivating_change_talk") + g("softening_sustain_talk")) / 2.0).abs() < 1e-9
    );

    // JSONL: the codes of every therapist utterance, counts and derived scores.
    let o = run(&["export", run_dir.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for line in stdout(&o).lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let j = &r["judgment"];
        let therapist = r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "therapist")
            .count();
        let codes = j["codes"].as_array().unwrap();
        assert_eq!(codes.len(), therapist);
        for (k, c) in codes.iter().enumerate() {
            assert_eq!(c["utterance"], k + 1);
        }
        assert_eq!(j["counts"].as_object().unwrap().len(), 10);
        let derived = j["derived"].as_object().unwrap();
        assert_eq!(derived.len(), 6);
        for (id, v) in derived {
            assert!(
                v.is_number() || j["derived_reasons"][id].is_string(),
                "{id}: null without a reason"
            );
        }
    }
    // The CBT set still exports its own columns.
    let o = run(
        &[
            "export",
            run_dir.to_str().unwrap(),
            "--format",
            "csv",
            "--judge-hash",
            cbt["judge_hash"].as_str().unwrap(),
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let head = stdout(&o).lines().next().unwrap().to_string();
    assert!(
        head.contains(",agenda,") && !head.contains("question"),
        "{head}"
    );
}

#[test]
fn a_reward_config_naming_an_item_the_rubric_lacks_fails_at_start_up() {
    let d = tempfile::tempdir().unwrap();
    let reward = d.path().join("r.toml");
    std::fs::write(&reward, "id = \"cbt\"\n[ctrs.weights]\nagenda = 2.0\n").unwrap();
    let run_dir = d.path().join("run");
    let o = eval(
        d.path(),
        &run_dir,
        &[
            "--rubric",
            "mi",
            "--reward-config",
            reward.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("`ctrs.weights.agenda` is not an item or derived score of rubric mi-miti42/1")
            && e.contains("technical_global"),
        "{e}"
    );
    assert!(!run_dir.join("run.sqlite").exists(), "nothing ran");
    // A derived score can be weighted.
    std::fs::write(
        &reward,
        "id = \"mi\"\n[ctrs]\ndefault_weight = 0.0\n[ctrs.weights]\nrelational_global = 1.0\n[safety]\ndefault_penalty = 0.0\n",
    )
    .unwrap();
    let o = eval(
        d.path(),
        &run_dir,
        &[
            "--rubric",
            "mi",
            "--reward-config",
            reward.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rel = measure(&s, "relational_global")["mean"].as_f64().unwrap();
    // reward = (relational − 1) / 4 per session, so its mean follows the relational mean.
    let r = s["reward"]["mean"].as_f64().unwrap();
    assert!((r - (rel - 1.0) / 4.0).abs() < 1e-9, "{r} vs {rel}");
    // An unknown rubric name says what exists.
    let o = eval(d.path(), &d.path().join("x"), &["--rubric", "miti"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("built-in name (ctrs, mi)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_report_adapts_its_rows_to_the_mi_rubric() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("mi");
    let o = eval(d.path(), &run_dir, &["--rubric", "mi"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["report", run_dir.to_str().unwrap(), "--json"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = r["runs"][0]["rows"].as_array().unwrap();
    let group = |g: &str| -> Vec<&str> {
        rows.iter()
            .filter(|x| x["group"] == g)
            .map(|x| x["id"].as_str().unwrap())
            .collect()
    };
    assert_eq!(group("item"), MI_GLOBALS);
    let measures = group("measure");
    assert_eq!(
        measures.len(),
        16,
        "10 codes and 6 derived scores: {measures:?}"
    );
    assert!(measures.contains(&"reflection_to_question_ratio"));
    let item = rows.iter().find(|x| x["id"] == "empathy").unwrap();
    assert_eq!(
        (item["min"].as_f64(), item["max"].as_f64()),
        (Some(1.0), Some(5.0))
    );
    let non = rows.iter().find(|x| x["id"] == "mi_non_adherent").unwrap();
    assert_eq!(non["lower_is_better"], true);
    let page = d.path().join("r.html");
    let o = run(
        &[
            "report",
            run_dir.to_str().unwrap(),
            "--out",
            page.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Behaviour counts and derived scores"));
    assert!(html.contains("% complex reflections"));
}

#[test]
fn train_refuses_a_reward_config_for_another_rubric_before_loading_anything() {
    let d = tempfile::tempdir().unwrap();
    // Any existing file passes the policy check that comes first; the reward check then
    // fails before the policy is read.
    let policy = d.path().join("p.gguf");
    std::fs::write(&policy, b"not a model").unwrap();
    let reward = d.path().join("r.toml");
    std::fs::write(&reward, "[ctrs.weights]\nhomework = 1.0\n").unwrap();
    let spec = format!("gguf:{}", policy.display());
    let out = d.path().join("t");
    let o = run(
        &[
            "train",
            "--policy",
            &spec,
            "--patient",
            "scripted:echo",
            "--judge",
            "scripted:echo",
            "--rubric",
            "mi",
            "--reward-config",
            reward.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        d.path(),
    );
    assert_ne!(o.status.code(), Some(0));
    let e = stderr(&o);
    assert!(
        e.contains("`ctrs.weights.homework` is not an item or derived score of rubric mi-miti42/1"),
        "{e}"
    );
    assert!(!out.exists(), "no run directory is left behind");
}
