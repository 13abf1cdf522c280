//! `eval --shard I/N` and `merge` against the real binary, with scripted models: shards are
//! disjoint and cover the plan, merged shards equal the run made in one piece, and merges of
//! shards that do not belong together, or are unfinished, are refused with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{SCRIPTED, bin, run, stderr, stdout, try_count};
use serde_json::Value;

const PLAN: [&str; 6] = [
    "--turns",
    "2",
    "--sessions-per-profile",
    "2",
    "--seed",
    "11",
];

fn eval(out: &Path, cwd: &Path, extra: &[&str]) -> Value {
    eval_with("scripted:echo", out, cwd, extra)
}

fn eval_with(therapist: &str, out: &Path, cwd: &Path, extra: &[&str]) -> Value {
    let o = bin()
        .args(["eval", "--json", "--out", out.to_str().unwrap()])
        .args(["--therapist", therapist])
        .args(&SCRIPTED[2..])
        .args(PLAN)
        .args(extra)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// Export rows without what names the directory they came from.
fn rows(dir: &Path, cwd: &Path) -> Vec<Value> {
    let o = run(&["export", dir.to_str().unwrap()], cwd);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("run_dir");
            v
        })
        .collect()
}

fn merge(args: &[&str], cwd: &Path) -> std::process::Output {
    let mut all = vec!["merge"];
    all.extend(args);
    run(&all, cwd)
}

#[test]
fn merged_shards_equal_the_run_made_in_one_piece() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let whole = eval(&p.join("whole"), p, &[]);
    let mut ids = Vec::new();
    for i in 1..=3 {
        let s = eval(&p.join(format!("s{i}")), p, &["--shard", &format!("{i}/3")]);
        assert!(s["sessions"]["planned"].as_u64().unwrap() >= 5, "{s}");
        ids.extend(
            rows(&p.join(format!("s{i}")), p)
                .into_iter()
                .map(|r| r["session_id"].as_str().unwrap().to_string()),
        );
    }
    // Disjoint, and together the whole plan.
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a session ran in two shards");
    assert_eq!(n as u64, whole["sessions"]["planned"].as_u64().unwrap());

    // Shards given in any order.
    let o = merge(&["s3", "s1", "s2", "--out", "merged", "--json"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("merged 3 shards"), "{}", stderr(&o));
    let merged: Value = serde_json::from_str(&stdout(&o)).unwrap();
    for k in ["sessions", "ctrs", "safety", "reward", "unscored_reasons"] {
        assert_eq!(merged[k], whole[k], "{k}");
    }
    assert_eq!(rows(&p.join("merged"), p), rows(&p.join("whole"), p));
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("merged/manifest.json")).unwrap())
            .unwrap();
    assert!(m["config"].get("shard").is_none(), "{m}");
    assert_eq!(m["merged_from"].as_array().unwrap().len(), 3);
    // The merged run is a run like any other.
    let o = run(&["report", "merged", "--out", "r.html"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["runs", "merged"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    // A shard is resumable on its own (finished: nothing to do).
    let o = run(&["eval", "--resume", "s2"], p);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn shards_that_do_not_make_one_plan_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    eval(&p.join("a1"), p, &["--shard", "1/2"]);
    eval(&p.join("a2"), p, &["--shard", "2/2"]);
    eval(
        &p.join("other2"),
        p,
        &["--shard", "2/2", "--therapist-max-tokens", "99"],
    );
    eval(&p.join("three"), p, &["--shard", "3/3"]);
    eval(&p.join("whole"), p, &[]);
    let cases: [(&[&str], &str); 5] = [
        (&["a1"], "shard(s) 2/2 missing"),
        (&["a1", "a1", "a2"], "shard 1/2 is given twice"),
        (&["a1", "three"], "shards of one plan share N"),
        (&["a1", "whole"], "whole: not a shard"),
        (
            &["a1", "other2"],
            "not shards of one plan: their manifests differ in config.session.therapist_sampling.max_tokens",
        ),
    ];
    for (dirs, want) in cases {
        let mut args = dirs.to_vec();
        args.extend(["--out", "m"]);
        let o = merge(&args, p);
        assert!(!o.status.success(), "{dirs:?} merged");
        assert!(stderr(&o).contains(want), "{dirs:?}: {}", stderr(&o));
        assert!(!p.join("m").exists(), "{dirs:?} left a directory");
    }
    // A shard flag on resume must be the run's own.
    let o = run(&["eval", "--resume", "a1", "--shard", "2/2"], p);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--shard"), "{}", stderr(&o));
    for bad in ["0/2", "3/2", "auto/2"] {
        let o = bin()
            .args(["eval", "--shard", bad])
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .current_dir(p)
            .output()
            .unwrap();
        assert!(!o.status.success(), "--shard {bad} accepted");
        assert!(
            stderr(&o).contains(&format!("`--shard {bad}`")),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn an_unfinished_shard_is_named_and_merges_once_resumed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // Both shards with the slow therapist (shards of one plan share every model).
    eval_with("scripted:slow:150", &p.join("s1"), p, &["--shard", "1/2"]);
    // Shard 2 killed after its first session; the scheduler's index picks it (0-based).
    let mut child = bin()
        .args([
            "eval",
            "--out",
            "s2",
            "--shard",
            "auto/2",
            "--concurrency",
            "1",
        ])
        .args([
            "--therapist",
            "scripted:slow:150",
            "--patient",
            "scripted:echo",
        ])
        .args(["--judge", "scripted:echo"])
        .args(PLAN)
        .env("JOB_COMPLETION_INDEX", "1")
        .current_dir(p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while try_count(
        &p.join("s2"),
        "SELECT COUNT(*) FROM sessions WHERE status = 'completed'",
    )
    .unwrap_or(0)
        < 1
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "no session stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = merge(&["s1", "s2", "--out", "m"], p);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("s2 (shard 2/2)") && e.contains("eval --resume s2"),
        "{e}"
    );
    assert!(!p.join("m").exists());
    let o = run(&["eval", "--resume", "s2"], p);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = merge(&["s1", "s2", "--out", "m"], p);
    assert!(o.status.success(), "{}", stderr(&o));
}
