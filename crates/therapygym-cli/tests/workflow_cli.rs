//! The everyday workflow as a user meets it, against the real binary with scripted models:
//! failure reasons everywhere, runs that can be moved and resumed, interrupts, unique names,
//! `runs`, judgment sets by prefix, input checks, and what the commands print.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{SCRIPTED, bin, run, stderr, stdout, try_count};
use serde_json::Value;

fn eval(extra: &[&str], out: &Path, cwd: &Path) -> std::process::Output {
    let mut args = vec!["eval", "--out", out.to_str().unwrap()];
    args.extend(extra);
    run(&args, cwd)
}

fn json_file(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The parts of a summary that must not depend on how the run got finished.
fn results(summary: &Value) -> Value {
    serde_json::json!({
        "sessions": summary["sessions"],
        "ctrs": summary["ctrs"],
        "safety": summary["safety"],
        "reward": summary["reward"],
        "unscored_reasons": summary["unscored_reasons"],
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A slow run (one session at a time) the test will cut short.
const SLOW: [&str; 14] = [
    "--therapist",
    "scripted:slow:150",
    "--patient",
    "scripted:echo",
    "--judge",
    "scripted:echo",
    "--limit",
    "5",
    "--turns",
    "2",
    "--concurrency",
    "1",
    "--seed",
    "7",
];

fn spawn_slow(out: &Path, cwd: &Path) -> Child {
    bin()
        .args(["eval", "--out", out.to_str().unwrap()])
        .args(SLOW)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until at least one session of the run is stored (and the run is not finished).
fn wait_for_a_session(dir: &Path) {
    let t0 = Instant::now();
    while try_count(
        dir,
        "SELECT COUNT(*) FROM sessions WHERE status = 'completed'",
    )
    .unwrap_or(0)
        < 1
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "no session stored");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reference(d: &Path) -> Value {
    let out = d.join("reference");
    let o = eval(&SLOW, &out, d);
    assert!(o.status.success(), "{}", stderr(&o));
    json_file(&out.join("summary.json"))
}

#[test]
fn failure_reasons_show_in_the_text_and_json_summaries_and_every_export_row() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let args = [
        "--therapist",
        "scripted:http_500",
        "--patient",
        "scripted:echo",
        "--judge",
        "scripted:echo",
        "--limit",
        "2",
        "--turns",
        "1",
    ];
    let o = eval(&args, &out, d.path());
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("failed sessions by reason"), "{text}");
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(stderr(&o).contains("HTTP 500"), "{}", stderr(&o));
    // No raw JSON in the text summary.
    for raw in ["{}", "{\"", "(n = 0)"] {
        assert!(!text.contains(raw), "text summary shows {raw}:\n{text}");
    }
    let s = json_file(&out.join("summary.json"));
    let reasons = s["failure_reasons"].as_object().unwrap();
    assert_eq!(
        reasons.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        2
    );
    assert!(
        reasons.keys().all(|k| k.contains("HTTP 500")),
        "{reasons:?}"
    );
    let o = run(&["export", out.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r["status"], "failed");
        assert!(r["error"].as_str().unwrap().contains("HTTP 500"), "{r}");
    }
    let o = run(
        &["export", out.to_str().unwrap(), "--format", "csv"],
        d.path(),
    );
    assert!(stdout(&o).contains("HTTP 500"), "{}", stdout(&o));
}

#[test]
fn a_killed_run_copied_elsewhere_resumes_to_the_same_results() {
    let d = tempfile::tempdir().unwrap();
    let want = reference(d.path());
    let first = d.path().join("first");
    let mut child = spawn_slow(&first, d.path());
    wait_for_a_session(&first);
    child.kill().unwrap();
    child.wait().unwrap();
    // The run names nothing outside itself.
    let manifest = std::fs::read_to_string(first.join("manifest.json")).unwrap();
    let here = d.path().to_str().unwrap();
    assert!(
        !manifest.contains(here),
        "manifest holds a path of this machine:\n{manifest}"
    );
    let moved = d.path().join("elsewhere/moved");
    copy_dir(&first, &moved);
    std::fs::remove_dir_all(&first).unwrap();
    let o = run(&["eval", "--resume", moved.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let got = json_file(&moved.join("summary.json"));
    assert_eq!(results(&got), results(&want));
    assert_eq!(got["sessions"]["completed"], 5);
}

#[cfg(unix)]
#[test]
fn an_interrupt_stops_cleanly_says_how_to_resume_and_the_resume_matches() {
    let d = tempfile::tempdir().unwrap();
    let want = reference(d.path());
    let out = d.path().join("interrupted");
    let child = spawn_slow(&out, d.path());
    wait_for_a_session(&out);
    let k = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("run directory:"), "{err}");
    let resume = format!("therapygym eval --resume {}", out.display());
    assert!(err.contains(&resume), "{err}");
    // Nothing half-written: every stored session is whole, and the rest run on resume.
    let o = run(&["eval", "--resume", out.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        results(&json_file(&out.join("summary.json"))),
        results(&want)
    );
}

#[test]
fn runs_started_in_the_same_second_get_their_own_directories() {
    let d = tempfile::tempdir().unwrap();
    let spawn = || {
        bin()
            .args(["eval", "--limit", "1", "--turns", "1"])
            .args(SCRIPTED)
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let dirs: Vec<_> = std::fs::read_dir(d.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    // `runs` finds both.
    let o = run(&["runs"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for n in &dirs {
        assert!(stdout(&o).contains(n.as_str()), "{}", stdout(&o));
    }
    // `synth` (which writes its run in place) claims its default name the same way.
    let synth = || {
        bin()
            .args(["synth", "--model", "scripted:echo", "--target", "8"])
            .args(["--depth", "1", "--samples-per-node", "8"])
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (synth(), synth());
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let synths = std::fs::read_dir(d.path().join("runs"))
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_name().to_string_lossy().starts_with("synth-")
                && e.path().join("synth.json").is_file()
        })
        .count();
    assert_eq!(synths, 2);
}

#[test]
fn resume_keeps_the_stored_concurrency_and_names_a_refused_flag_and_its_value() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let mut args = vec!["--limit", "1", "--turns", "1", "--concurrency", "1"];
    args.extend(SCRIPTED);
    let o = eval(&args, &out, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let m = json_file(&out.join("manifest.json"));
    assert_eq!(m["concurrency"]["sessions"], 1, "{m}");
    let o = run(&["eval", "--resume", out.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("concurrency: 1 sessions"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &["eval", "--resume", out.to_str().unwrap(), "--turns", "3"],
        d.path(),
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("--turns 3"), "{err}");
    assert!(err.contains("--turns: 1"), "{err}");
    assert!(
        err.contains("Only these flags may change on resume"),
        "{err}"
    );
    // A flag that may change is accepted.
    let o = run(
        &[
            "eval",
            "--resume",
            out.to_str().unwrap(),
            "--concurrency",
            "2",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("concurrency: 2 sessions"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_that_cannot_start_leaves_no_run_directory() {
    let d = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for bad in [addr.as_str(), "not-an-address"] {
        let out = d.path().join("served");
        let o = run(
            &[
                "serve",
                "--addr",
                bad,
                "--out",
                out.to_str().unwrap(),
                "--patient",
                "scripted:echo",
                "--judge",
                "scripted:echo",
            ],
            d.path(),
        );
        assert!(!o.status.success(), "serve started on {bad}");
        assert!(!out.exists(), "serve on {bad} left {}", out.display());
        assert!(!d.path().join("runs").exists());
    }
    // Without `--out`, a start-up failure after the bind (profiles that do not exist) removes
    // the default directory it had claimed.
    let o = run(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--profiles",
            "missing.jsonl",
            "--patient",
            "scripted:echo",
            "--judge",
            "scripted:echo",
        ],
        d.path(),
    );
    assert!(!o.status.success(), "serve started with missing profiles");
    assert!(!d.path().join("runs").exists(), "{}", stderr(&o));
}

#[test]
fn judgment_sets_are_named_by_spec_and_found_by_prefix() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let mut args = vec![
        "--limit",
        "2",
        "--turns",
        "1",
        "--sessions-per-profile",
        "2",
    ];
    args.extend(SCRIPTED);
    assert!(eval(&args, &out, d.path()).status.success());
    let dir = out.to_str().unwrap();
    // `scripted:fixed:TEXT` replies TEXT as given under the judge's schema: unscored, with why.
    let o = run(
        &[
            "judge",
            dir,
            "--judge",
            "scripted:fixed:not a verdict",
            "--json",
        ],
        d.path(),
    );
    let s: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(s["sessions"]["unscored"], 4, "{s}");
    assert!(
        !s["unscored_reasons"].as_object().unwrap().is_empty(),
        "{s}"
    );
    let new_hash = s["judge_hash"].as_str().unwrap().to_string();
    let o = run(&["judge", dir, "--judge", "scripted:fixed:x"], d.path());
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        all.contains("scripted:fixed:x"),
        "judge does not print its spec:\n{all}"
    );
    assert!(
        all.contains("sha256:"),
        "judge does not print its hash:\n{all}"
    );

    let o = run(&["runs", dir], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for want in [
        new_hash.as_str(),
        "scripted:echo",
        "scripted:fixed:not a verdict",
    ] {
        assert!(
            stdout(&o).contains(want),
            "runs lacks {want}:\n{}",
            stdout(&o)
        );
    }
    // A unique prefix picks the set; every row says which set it came from.
    let prefix = &new_hash[..16];
    let o = run(&["export", dir, "--judge-hash", prefix], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["judge_hash"] == new_hash.as_str()));
    // Rows in session-id order, so exports diff cleanly.
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["session_id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    // An unknown hash lists the sets with their judge and date.
    let o = run(&["export", dir, "--judge-hash", "sha256:ffff"], d.path());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("scripted:echo") && err.contains("scripted:fixed:x"),
        "{err}"
    );
    assert!(
        err.contains("2026") || err.contains("20"),
        "no date in:\n{err}"
    );
}

#[test]
fn csv_exports_list_items_in_rubric_order() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let mut args = vec!["--limit", "2", "--turns", "1"];
    args.extend(SCRIPTED);
    assert!(eval(&args, &out, d.path()).status.success());
    let o = run(
        &["export", out.to_str().unwrap(), "--format", "csv"],
        d.path(),
    );
    let header = stdout(&o).lines().next().unwrap().to_string();
    let rubric = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/rubrics/ctrs.toml"),
    )
    .unwrap();
    let items: Vec<&str> = rubric
        .split("[[items]]")
        .skip(1)
        .map(|b| b.split('"').nth(1).unwrap())
        .collect();
    assert_eq!(items.len(), 11);
    let cols: Vec<&str> = header.split(',').collect();
    let at: Vec<usize> = items
        .iter()
        .map(|i| {
            cols.iter()
                .position(|c| c == i)
                .unwrap_or_else(|| panic!("{i} in {header}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{header}");
}

#[test]
fn out_of_range_values_and_missing_runs_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    for (flag, v) in [("--limit", "0"), ("--concurrency", "0")] {
        let mut args = vec!["eval", flag, v];
        args.extend(SCRIPTED);
        let o = run(&args, d.path());
        assert_eq!(o.status.code(), Some(2), "{flag} {v} accepted");
        assert!(stderr(&o).contains(flag), "{}", stderr(&o));
        assert!(!d.path().join("runs").exists());
    }
    let missing = d.path().join("no/such/run");
    for cmd in ["export", "runs", "judge"] {
        let o = run(&[cmd, missing.to_str().unwrap()], d.path());
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("does not exist"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn piped_output_has_no_colour_and_manifests_keep_floats_as_written() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("r");
    let mut args = vec!["--limit", "1", "--turns", "1", "--debug"];
    args.extend(SCRIPTED);
    let o = eval(&args, &out, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains('\u{1b}'), "ANSI codes in a pipe");
    assert!(!stdout(&o).contains('\u{1b}'), "ANSI codes in a pipe");
    let m = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(
        m.contains("0.7") || m.contains("0.0") || m.contains("1.0"),
        "{m}"
    );
    for noise in ["99999", "00000001"] {
        assert!(!m.contains(noise), "float noise {noise} in manifest:\n{m}");
    }
}

#[test]
fn models_fails_when_the_embedded_model_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let o = bin()
        .arg("models")
        .env("THERAPYGYM_HOME", d.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("not installed"), "{}", stdout(&o));
}

#[test]
fn calibrated_scores_appear_beside_raw_ones() {
    let d = tempfile::tempdir().unwrap();
    let mut csv = String::from("dialogue_id,rater,item,score\n");
    for k in 0..8 {
        for (rater, shift) in [("judge", 1), ("e1", 0)] {
            let s = ((k * 5 + shift) % 7).to_string();
            csv.push_str(&format!("d{k},{rater},agenda,{s}\n"));
        }
    }
    std::fs::write(d.path().join("ratings.csv"), csv).unwrap();
    let o = run(
        &[
            "validate",
            "ratings.csv",
            "--bootstrap",
            "100",
            "--fit-calibration",
            "cal.toml",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.path().join("r");
    let mut args = vec!["--limit", "2", "--turns", "1", "--calibration", "cal.toml"];
    args.extend(SCRIPTED);
    let o = eval(&args, &out, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("calibrated"), "{}", stdout(&o));
    let dir = out.to_str().unwrap();
    let o = run(&["export", dir], d.path());
    let row: Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert!(
        row["judgment"]["calibrated"]["agenda"].is_number(),
        "no calibrated score in {row}"
    );
    let o = run(&["export", dir, "--format", "csv"], d.path());
    assert!(
        stdout(&o)
            .lines()
            .next()
            .unwrap()
            .contains("agenda_calibrated"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn every_resume_refuses_a_changed_setting_in_one_wording() {
    let d = tempfile::tempdir().unwrap();
    for cmd in ["synth", "train"] {
        let o = run(&[cmd, "--resume", "somewhere", "--seed", "3"], d.path());
        assert!(!o.status.success(), "{cmd} took --seed on resume");
        let err = stderr(&o);
        assert!(err.contains("`--seed`"), "{cmd}: {err}");
        assert!(
            err.contains("Only these flags may change on resume"),
            "{cmd}: {err}"
        );
    }
}
