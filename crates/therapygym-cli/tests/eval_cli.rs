//! `therapygym eval`, `judge`, `export`, `import-transcripts`, `chat` and `models` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn chat_prints_the_reply_and_valid_json_under_a_schema() {
    let d = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "chat",
            "--model",
            "scripted:fixed:Try a wind-down routine.",
            "I can't sleep before exams.",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "Try a wind-down routine.");
    let schema = d.path().join("s.json");
    std::fs::write(&schema, r#"{"type":"object","required":["mood"],"additionalProperties":false,"properties":{"mood":{"type":"integer","minimum":0,"maximum":10}}}"#).unwrap();
    let o = run(
        &[
            "chat",
            "--model",
            "scripted:echo",
            "--json-schema",
            schema.to_str().unwrap(),
            "mood?",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v["mood"].as_i64().unwrap() <= 10);
    let o = run(&["chat", "--model", "llama3", "hi"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid model spec `llama3`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn eval_summarises_exports_and_rescoring_adds_a_judgment_set() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("run");
    let mut args = vec![
        "eval",
        "--limit",
        "3",
        "--turns",
        "2",
        "--json",
        "--out",
        run_dir.to_str().unwrap(),
    ];
    args.extend(SCRIPTED);
    let o = run(&args, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        s["sessions"],
        serde_json::json!({"planned": 3, "completed": 3, "failed": 0, "unscored": 0, "unjudged": 0})
    );
    assert_eq!(s["ctrs"]["items"].as_object().unwrap().len(), 11);
    assert_eq!(s["ctrs"]["items"]["agenda"]["n"], 3);
    assert!(s["ctrs"]["normalized_mean"].as_f64().is_some());
    assert!(
        s["safety"]["labels"]["missed_crisis"]["rate"]
            .as_f64()
            .is_some()
    );
    assert!(s["safety"]["any_violation_rate"].as_f64().is_some());
    assert_eq!(s["reward"]["n"], 3);
    for f in ["manifest.json", "summary.json", "run.sqlite"] {
        assert!(run_dir.join(f).is_file(), "{f}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    for k in [
        "config_hash",
        "rubric",
        "safety_taxonomy",
        "prompts",
        "profiles",
        "seeds",
        "roles",
    ] {
        assert!(!manifest[k].is_null(), "manifest.{k}");
    }
    assert!(
        manifest["rubric"]["sha256"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // Export: one JSONL record per session with the documented keys.
    let o = run(
        &["export", run_dir.to_str().unwrap(), "--format", "jsonl"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for r in &lines {
        for k in [
            "session_id",
            "profile_id",
            "epoch",
            "messages",
            "judgment",
            "reward",
        ] {
            assert!(r.get(k).is_some(), "{k}");
        }
        assert_eq!(
            r["messages"].as_array().unwrap().len(),
            4,
            "2 therapist turns + 2 patient replies"
        );
        assert_eq!(r["messages"][0]["role"], "therapist");
        assert!(r["judgment"]["ctrs"]["homework"]["score"].is_u64());
        assert!(r["judgment"]["safety"]["missed_crisis"]["flag"].is_boolean());
        assert!(r["judgment"]["unscored_reason"].is_null());
    }
    let o = run(
        &["export", run_dir.to_str().unwrap(), "--format", "csv"],
        d.path(),
    );
    assert!(stdout(&o).starts_with("session_id,profile_id,epoch,status,unscored_reason,reward,"));
    assert_eq!(stdout(&o).lines().count(), 4);

    // Re-score under another judge: a new judgment set, transcripts untouched.
    let before = count(&run_dir, "SELECT COUNT(*) FROM messages");
    let o = run(
        &[
            "judge",
            run_dir.to_str().unwrap(),
            "--judge",
            "scripted:malformed_json",
            "--judge-retries",
            "1",
            "--json",
        ],
        d.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "all unscored fails the unscored-rate gate: {}",
        stderr(&o)
    );
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["sessions"]["unscored"], 3);
    assert_eq!(s["unscored_reasons"]["parse_failure"], 3);
    assert!(
        s["ctrs"]["normalized_mean"].is_null(),
        "unscored is never 0"
    );
    assert!(s["reward"]["mean"].is_null());
    assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM messages"), before);
    assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM judge_sets"), 2);
    assert_eq!(
        count(
            &run_dir,
            "SELECT COUNT(*) FROM judgments WHERE status = 'unscored' AND reason = 'parse_failure'"
        ),
        3
    );
    let o = run(&["export", run_dir.to_str().unwrap()], d.path());
    let r: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(r["judgment"]["unscored_reason"], "parse_failure");
    assert!(r["reward"].is_null());

    // Import the export into a new run and judge it.
    let export_file = d.path().join("e.jsonl");
    std::fs::write(&export_file, stdout(&o)).unwrap();
    let imported = d.path().join("imported");
    let o = run(
        &[
            "import-transcripts",
            export_file.to_str().unwrap(),
            "--out",
            imported.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &[
            "judge",
            imported.to_str().unwrap(),
            "--judge",
            "scripted:echo",
            "--json",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["sessions"]["completed"], 3);
    assert_eq!(s["ctrs"]["n"], 3);
}

#[test]
fn a_bad_profile_file_is_rejected_with_file_line_field_and_allowed_values() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p.jsonl");
    std::fs::write(
        &f,
        r#"{"id":"x-1","name":"A","history":"h","helpless_belief":["incompetent"],"unlovable_belief":[],"worthless_belief":[],"intermediate_belief":"i","coping_strategies":"c","situation":"s","auto_thought":"a","emotion":["glum"],"behavior":"b","style":"plain"}"#,
    )
    .unwrap();
    let mut args = vec!["eval", "--profiles", f.to_str().unwrap(), "--out", "r"];
    args.extend(SCRIPTED);
    let o = run(&args, d.path());
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains(
            "p.jsonl:1 (`x-1`): field `emotion`: \"glum\" is not an emotion; allowed: anxious, sad"
        ),
        "{e}"
    );
    assert!(
        !d.path().join("r").exists(),
        "no run directory for a rejected input"
    );
}

#[test]
fn resume_after_sigkill_loses_nothing_and_runs_nothing_twice() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("run");
    let slow = [
        "--therapist",
        "scripted:slow:40",
        "--patient",
        "scripted:slow:40",
        "--judge",
        "scripted:slow:40",
    ];
    let mut args = vec![
        "eval",
        "--limit",
        "8",
        "--sessions-per-profile",
        "2",
        "--turns",
        "2",
        "--concurrency",
        "2",
        "--out",
        run_dir.to_str().unwrap(),
    ];
    args.extend(slow);
    let mut child = bin()
        .args(&args)
        .current_dir(d.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a few sessions are committed (and others are in flight).
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if try_count(&run_dir, "SELECT COUNT(*) FROM sessions").is_some_and(|n| n >= 3) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run made no progress"
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = sessions(&run_dir);
    assert!(before.len() < 16, "killed mid-run");

    let o = run(
        &["eval", "--resume", run_dir.to_str().unwrap(), "--json"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["sessions"]["planned"], 16);
    assert_eq!(s["sessions"]["completed"], 16);
    assert_eq!(s["sessions"]["unjudged"], 0);
    assert_eq!(s["attempts"], 2);
    let after = sessions(&run_dir);
    assert_eq!(after.len(), 16, "every planned session exactly once");
    // Sessions finished before the kill were neither redone nor rewritten.
    for row in &before {
        assert!(after.contains(row), "{row:?} changed on resume");
    }
    assert!(after.iter().any(|r| r.2 == 2), "the resume ran the rest");
    assert_eq!(
        count(&run_dir, "SELECT COUNT(*) FROM judgments"),
        16,
        "one judgment per session"
    );
    let c = rusqlite::Connection::open(run_dir.join("run.sqlite")).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // Resuming a finished run does nothing.
    let o = run(&["eval", "--resume", run_dir.to_str().unwrap()], d.path());
    assert!(o.status.success());
    assert_eq!(sessions(&run_dir), after);
    // Resume refuses to change the run's settings.
    let o = run(
        &[
            "eval",
            "--resume",
            run_dir.to_str().unwrap(),
            "--turns",
            "3",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn models_reports_the_embedded_model() {
    let d = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["models", "--json"])
        .env("THERAPYGYM_HOME", d.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "not installed is not success");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["installed"], false);
    assert!(
        v["install_hint"]
            .as_str()
            .unwrap()
            .contains("setup-model.sh")
    );
    let o = bin()
        .args(["models"])
        .env("THERAPYGYM_HOME", d.path())
        .output()
        .unwrap();
    assert!(stdout(&o).contains("not installed"));
}

#[cfg(feature = "model-tests")]
#[test]
fn an_evaluation_on_the_embedded_model_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("run");
    let o = run(
        &[
            "eval",
            "--limit",
            "1",
            "--turns",
            "1",
            "--therapist-max-tokens",
            "48",
            "--patient-max-tokens",
            "48",
            "--judge-rationale-chars",
            "60",
            "--max-unscored-rate",
            "1",
            "--json",
            "--out",
            run_dir.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["sessions"]["planned"], 1);
    assert_eq!(s["sessions"]["completed"], 1);
    let scored = s["ctrs"]["n"].as_u64().unwrap();
    let unscored = s["sessions"]["unscored"].as_u64().unwrap();
    assert_eq!(
        scored + unscored,
        1,
        "the session is either scored or unscored with a reason"
    );
    if scored == 1 {
        assert!(s["ctrs"]["items"]["agenda"]["mean"].as_f64().is_some());
        assert!(s["reward"]["mean"].as_f64().is_some());
    } else {
        assert!(!s["unscored_reasons"].as_object().unwrap().is_empty());
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["roles"]["judge"]["backend"]["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    let o = run(
        &["chat", "--max-tokens", "24", "I can't sleep before exams."],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).trim().is_empty());
}

/// Patient and judge fail transiently and permanently in one run, each fault pinned to a
/// profile by its text (`when:`): Daniel's patient fails for good (HTTP 400), Amara's session
/// carries a marker the judge answers with garbage (unscored after one re-ask), and every other
/// patient and judge call fails once and succeeds on retry. The summary's counts of failed,
/// unscored and retried sessions are exact, and a resume re-runs only the failed session.
#[test]
fn eval_counts_retried_failed_and_unscored_sessions_exactly_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("faults");
    let args = [
        "eval",
        "--limit",
        "4",
        "--turns",
        "2",
        "--json",
        "--therapist",
        "scripted:echo",
        "--patient",
        "scripted:when:Daniel=fatal;Amara=fixed:FAULTMARK I keep losing sleep.;*=flaky:1",
        "--judge",
        "scripted:when:FAULTMARK=malformed_json;*=flaky:1",
        "--judge-retries",
        "1",
        "--max-unscored-rate",
        "1.0",
        "--out",
        run_dir.to_str().unwrap(),
    ];
    let o = run(&args, d.path());
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failed session fails the run's gate"
    );
    assert!(stderr(&o).contains("1 session(s) failed"), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        s["sessions"],
        serde_json::json!({"planned": 4, "completed": 3, "failed": 1, "unscored": 1, "unjudged": 0})
    );
    assert_eq!(
        s["failure_reasons"],
        serde_json::json!({"patient: scripted permanent error (HTTP 400)": 1})
    );
    assert_eq!(
        s["unscored_reasons"],
        serde_json::json!({"parse_failure": 1})
    );
    // Every patient reply of Hiroshi's and Lucía's sessions came on its second attempt; the
    // permanent error is not retried; the judge re-asked Amara's once and retried the other two.
    let flaky_patient_calls = count(
        &run_dir,
        "SELECT COUNT(*) FROM messages m JOIN sessions s ON s.id = m.session_id
         WHERE m.speaker = 'patient' AND s.profile_id IN ('tg-003', 'tg-004')",
    );
    assert!(flaky_patient_calls >= 2, "{flaky_patient_calls}");
    let want = serde_json::json!({"therapist": 0, "patient": flaky_patient_calls, "judge": 3, "retried_sessions": 3});
    assert_eq!(s["retries"], want);

    // The resume runs the failed session again (it fails again, for good) and nothing else.
    let before = sessions(&run_dir);
    let o = run(
        &["eval", "--resume", run_dir.to_str().unwrap(), "--json"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["sessions"], s["sessions"]);
    assert_eq!(r["retries"], want, "counts are exact after the resume");
    assert_eq!(r["attempts"], 2);
    let after = sessions(&run_dir);
    assert_eq!(after.len(), 4, "every planned session exactly once");
    for row in before.iter().filter(|r| r.1 == "completed") {
        assert!(after.contains(row), "{row:?} was redone");
    }
    let daniel: Vec<_> = after.iter().filter(|r| r.1 == "failed").collect();
    assert_eq!(daniel.len(), 1);
    assert!(daniel[0].0.starts_with("tg-001"), "{daniel:?}");
    assert_eq!(daniel[0].2, 2, "run again by the resume");
    assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM judgments"), 3);
    // The text summary says the same.
    let o = run(&["eval", "--resume", run_dir.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "retries: 3 session(s) retried · therapist 0 · patient {flaky_patient_calls} · judge 3"
        )),
        "{}",
        stdout(&o)
    );
}
