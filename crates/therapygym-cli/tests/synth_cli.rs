//! `therapygym synth` as a user runs it: outputs `eval` accepts, `kill -9` and `--resume`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn files(dir: &Path) -> BTreeMap<String, String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn summary(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

#[test]
fn synth_writes_a_validated_set_that_eval_accepts() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("synth");
    let o = run(
        &[
            "synth",
            "--model",
            "scripted:echo",
            "--target",
            "40",
            "--depth",
            "2",
            "--samples-per-node",
            "4",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["profiles"], 40);
    assert_eq!(s["stop_reason"], "target_reached");
    assert_eq!(
        (s["train"].as_u64(), s["holdout"].as_u64()),
        (Some(32), Some(8))
    );
    for f in [
        "profiles.jsonl",
        "holdout.jsonl",
        "tree.json",
        "diversity.json",
        "provenance.jsonl",
        "rejected.jsonl",
        "synth.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let div: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("diversity.json")).unwrap())
            .unwrap();
    assert!(div["coverage"]["emotion"]["total"] == 9 && div["similarity"]["pairs"] == 780);
    let eval_dir = d.path().join("eval");
    let o = run(
        &[
            "eval",
            "--profiles",
            out.join("profiles.jsonl").to_str().unwrap(),
            "--therapist",
            "scripted:echo",
            "--patient",
            "scripted:echo",
            "--judge",
            "scripted:echo",
            "--limit",
            "3",
            "--turns",
            "1",
            "--json",
            "--out",
            eval_dir.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e = summary(&o);
    assert_eq!(e["sessions"]["completed"], 3);
    let o = run(
        &[
            "eval",
            "--profiles",
            out.join("holdout.jsonl").to_str().unwrap(),
            "--therapist",
            "scripted:echo",
            "--patient",
            "scripted:echo",
            "--judge",
            "scripted:echo",
            "--turns",
            "1",
            "--json",
            "--out",
            d.path().join("eval-holdout").to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary(&o)["sessions"]["completed"], 8);
    // The human summary names the figures.
    let o = run(&["synth", "--resume", out.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for k in [
        "profiles: 40 (train 32, holdout 8)",
        "rejections:",
        "coverage:",
        "pairwise similarity",
        "this attempt (2): 0 model calls",
    ] {
        assert!(text.contains(k), "{k}: {text}");
    }
}

#[test]
fn synth_resume_refuses_new_settings_and_a_used_out() {
    let d = tempfile::tempdir().unwrap();
    let o = run(&["synth", "--resume", "nowhere", "--target", "5"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("Only these flags may change on resume"),
        "{}",
        stderr(&o)
    );
    std::fs::create_dir(d.path().join("used")).unwrap();
    std::fs::write(d.path().join("used/x"), "x").unwrap();
    let o = run(
        &[
            "synth",
            "--model",
            "scripted:echo",
            "--target",
            "5",
            "--out",
            "used",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--resume used"), "{}", stderr(&o));
    let o = run(&["synth", "--resume", "nowhere"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a synthesis run directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn synth_gives_exit_code_1_when_the_target_is_not_reached() {
    let d = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "synth",
            "--model",
            "scripted:malformed_json",
            "--target",
            "10",
            "--depth",
            "1",
            "--give-up-after",
            "5",
            "--json",
            "--out",
            "x",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["stop_reason"], "gave_up");
    assert_eq!(s["rejections"]["invalid_json"], 5);
    assert!(
        stderr(&o).contains("target of 10 profiles was not reached"),
        "{}",
        stderr(&o)
    );
}

/// Starts the run in the background and kills it with SIGKILL once `ready` holds.
fn kill_when(args: &[&str], cwd: &Path, ready: impl Fn() -> bool) {
    let mut child = bin()
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting to kill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn job_seqs(dir: &Path) -> Vec<u64> {
    files(&dir.join("leaves"))
        .values()
        .flat_map(|t| {
            let b: serde_json::Value = serde_json::from_str(t).unwrap();
            b["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["seq"].as_u64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn synth_survives_kill_9_and_resumes_without_redoing_work() {
    let d = tempfile::tempdir().unwrap();
    let settings = [
        "--target",
        "300",
        "--depth",
        "2",
        "--samples-per-node",
        "4",
        "--concurrency",
        "2",
    ];
    // The reference: an uninterrupted run (`slow` replies exactly like `echo`, only later).
    let whole = d.path().join("whole");
    let mut args = vec![
        "synth",
        "--model",
        "scripted:echo",
        "--json",
        "--out",
        whole.to_str().unwrap(),
    ];
    args.extend(settings);
    let o = run(&args, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = summary(&o);
    let total_calls = reference["this_attempt"]["model_calls"].as_u64().unwrap();

    let dir = d.path().join("killed");
    let mut args = vec![
        "synth",
        "--model",
        "scripted:slow:20",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend(settings);
    // Kill 1: in the middle of the tree.
    kill_when(&args, d.path(), || files(&dir.join("nodes")).len() >= 3);
    let nodes_1 = files(&dir.join("nodes"));
    assert!(!dir.join("profiles.jsonl").exists());
    // Kill 2: resumed, then killed again in the leaf phase.
    let resume = [
        "synth",
        "--resume",
        dir.to_str().unwrap(),
        "--concurrency",
        "2",
    ];
    kill_when(&resume, d.path(), || !files(&dir.join("leaves")).is_empty());
    let nodes_2 = files(&dir.join("nodes"));
    let batches_2 = files(&dir.join("leaves"));
    for (name, text) in &nodes_1 {
        assert_eq!(
            nodes_2.get(name),
            Some(text),
            "node {name} was rewritten by the resume"
        );
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["attempt"], 1);
    }
    // Finish.
    let mut args = resume.to_vec();
    args.push("--json");
    let o = run(&args, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["this_attempt"]["attempt"], 3);
    assert_eq!(
        s["this_attempt"]["nodes_resumed"].as_u64().unwrap() as usize,
        nodes_2.len()
    );
    assert_eq!(
        s["this_attempt"]["nodes_expanded"], 0,
        "the tree was finished before the second kill"
    );
    assert!(s["this_attempt"]["leaf_jobs_resumed"].as_u64().unwrap() >= 1);
    assert!(s["this_attempt"]["model_calls"].as_u64().unwrap() < total_calls);
    for (name, text) in nodes_2.iter() {
        assert_eq!(
            std::fs::read_to_string(dir.join("nodes").join(name)).unwrap(),
            *text,
            "node {name} untouched"
        );
    }
    for (name, text) in batches_2.iter() {
        assert_eq!(
            std::fs::read_to_string(dir.join("leaves").join(name)).unwrap(),
            *text,
            "batch {name} untouched"
        );
    }
    // No leaf job ran twice: stored job numbers are unique and gap-free.
    let seqs = job_seqs(&dir);
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "a leaf job was stored twice");
    assert_eq!(
        unique.iter().copied().collect::<Vec<_>>(),
        (0..seqs.len() as u64).collect::<Vec<_>>()
    );
    // Complete and deduplicated: exactly the uninterrupted run's profiles.
    for f in ["profiles.jsonl", "holdout.jsonl", "tree.json"] {
        assert_eq!(
            std::fs::read_to_string(dir.join(f)).unwrap(),
            std::fs::read_to_string(whole.join(f)).unwrap(),
            "{f} differs from the uninterrupted run"
        );
    }
    assert_eq!(s["profiles"], 300);
    assert_eq!(s["duplicates"], reference["duplicates"]);
    let ids: BTreeSet<String> = std::fs::read_to_string(dir.join("profiles.jsonl"))
        .unwrap()
        .lines()
        .chain(
            std::fs::read_to_string(dir.join("holdout.jsonl"))
                .unwrap()
                .lines(),
        )
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 300);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("synth.json")).unwrap()).unwrap();
    assert_eq!(m["attempts"].as_array().unwrap().len(), 3);
}

#[cfg(feature = "model-tests")]
#[test]
fn synth_on_the_embedded_model_gives_profiles_eval_accepts() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("synth");
    let o = run(
        &[
            "synth",
            "--target",
            "2",
            "--depth",
            "1",
            "--samples-per-node",
            "2",
            "--give-up-after",
            "8",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
        d.path(),
    );
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{}",
        stderr(&o)
    );
    let s = summary(&o);
    let candidates = s["candidates"].as_u64().unwrap();
    let rejected: u64 = s["rejections"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        s["profiles"].as_u64().unwrap() + rejected + s["duplicates"].as_u64().unwrap(),
        candidates,
        "every candidate is accounted for"
    );
    if s["train"].as_u64().unwrap() > 0 {
        let o = run(
            &[
                "eval",
                "--profiles",
                out.join("profiles.jsonl").to_str().unwrap(),
                "--therapist",
                "scripted:echo",
                "--patient",
                "scripted:echo",
                "--judge",
                "scripted:echo",
                "--limit",
                "1",
                "--turns",
                "1",
                "--json",
                "--out",
                d.path().join("eval").to_str().unwrap(),
            ],
            d.path(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
}
