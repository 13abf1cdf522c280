//! `therapygym train` as a user runs it. The tests that train need the embedded GGUF (feature
//! `model-tests`); patient and judge are scripted so the steps stay small.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn a_served_policy_is_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = run(
        &[
            "train",
            "--policy",
            "openai:m@http://127.0.0.1:9/v1",
            "--out",
            out.to_str().unwrap(),
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("therapygym serve"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = run(
        &["train", "--group-size", "1", "--out", out.to_str().unwrap()],
        d.path(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--group-size"), "{}", stderr(&o));
}

#[cfg(feature = "model-tests")]
mod with_model {
    use std::path::Path;
    use std::process::Stdio;
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use super::*;

    /// One training run at a time: each holds the model, its reference copy and 1.6 GB
    /// checkpoints; two at once only thrash two cores and double the peak disk use.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn exclusive() -> MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checkpoints are 1.6 GB each: keep them beside `target/` (cargo's scratch directory for
    /// integration tests), not in a /tmp that may be a small tmpfs.
    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
    }

    /// A text-feature reward (docs/train.md): counts that differ between samples, so every
    /// group has signal even with a scripted judge.
    const REWARD: &str = r#"
id = "test-text"
judge_weight = 0.0
[[text_terms]]
name = "letter_e"
patterns = ["e"]
weight = 1.0
cap = 40
"#;

    fn args<'a>(out: &'a str, reward: &'a str, steps: &'a str) -> Vec<&'a str> {
        vec![
            "train",
            "--patient",
            "scripted:fixed:I keep worrying that I will fail at work.",
            "--judge",
            "scripted:echo",
            "--reward-config",
            reward,
            "--steps",
            steps,
            "--group-size",
            "4",
            "--turns",
            "1",
            // The short generic prompt: each step trains on ~100 tokens per session instead of
            // the CBT prompt's ~430, which made these tests minutes long.
            "--therapist-prompt",
            "baseline",
            "--therapist-max-tokens",
            "12",
            "--lr",
            "1e-4",
            "--export-type",
            "f16",
            "--keep-checkpoints",
            "1",
            "--out",
            out,
        ]
    }

    fn metrics(run: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn steps(m: &[serde_json::Value]) -> Vec<u64> {
        m.iter().map(|r| r["step"].as_u64().unwrap()).collect()
    }

    #[test]
    fn two_steps_change_the_weights_and_the_export_generates() {
        let _one = exclusive();
        let d = scratch();
        let reward = d.path().join("reward.toml");
        std::fs::write(&reward, REWARD).unwrap();
        let run_dir = d.path().join("run");
        let holdout = d.path().join("holdout.jsonl");
        let two: Vec<&str> = include_str!("../../../data/profiles/holdout.jsonl")
            .lines()
            .take(2)
            .collect();
        std::fs::write(&holdout, two.join("\n") + "\n").unwrap();
        let mut a = args(run_dir.to_str().unwrap(), reward.to_str().unwrap(), "2");
        a.extend(["--eval-every", "2", "--holdout", holdout.to_str().unwrap()]);
        let o = run(&a, d.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let m = metrics(&run_dir);
        assert_eq!(steps(&m), [1, 2]);
        assert!(m.iter().any(|r| r["updated"] == true), "{m:?}");
        for r in m.iter().filter(|r| r["updated"] == true) {
            assert!(r["loss"].as_f64().unwrap().is_finite());
            assert!(r["grad_norm"].as_f64().unwrap() > 0.0);
            assert_eq!(r["scored"], 4);
        }
        assert!(stderr(&o).contains("step 2/2"), "{}", stderr(&o));
        // The held-out evaluation ran on step 2 only.
        assert!(m[0].get("holdout").is_none());
        assert_eq!(m[1]["holdout"]["sessions"], 2, "{}", m[1]);
        assert!(m[1]["holdout"]["mean_reward"].is_number());
        // Eight training and two held-out sessions in the run store, in eval's format, each
        // judged once.
        assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM sessions"), 10);
        assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM judgments"), 10);

        // The checkpoint reloads and differs from the starting weights.
        let ckpt = run_dir.join("checkpoints/step-000002");
        let trained = therapygym_grpo::checkpoint::load_model(&ckpt).unwrap();
        let base = therapygym_grpo::Policy::load_default().unwrap();
        let (a, b) = (trained.weights().unwrap(), base.model().weights().unwrap());
        let changed = a.iter().zip(&b).any(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            let diff = (ta - tb).unwrap().abs().unwrap().sum_all().unwrap();
            diff.to_scalar::<f32>().unwrap() > 0.0
        });
        assert!(changed, "no weight changed");

        // Resuming a finished run runs no step and re-exports.
        let o = run(&["train", "--resume", run_dir.to_str().unwrap()], d.path());
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(steps(&metrics(&run_dir)), [1, 2]);

        // llama.cpp loads the exported policy and generates with it.
        let gguf = run_dir.join("policy.gguf");
        let spec = format!("gguf:{}", gguf.display());
        let o = run(
            &[
                "chat",
                "--model",
                &spec,
                "--max-tokens",
                "8",
                "--json",
                "Hello",
            ],
            d.path(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert!(v["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    }

    #[test]
    fn a_run_killed_mid_step_resumes_without_repeating_a_step() {
        let _one = exclusive();
        let d = scratch();
        let reward = d.path().join("reward.toml");
        std::fs::write(&reward, REWARD).unwrap();
        let run_dir = d.path().join("run");
        let mut child = bin()
            .args(args(
                run_dir.to_str().unwrap(),
                reward.to_str().unwrap(),
                "3",
            ))
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once step 1 is checkpointed and step 2 has sessions in the store.
        let started = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if run_dir.join("checkpoints/latest").is_file()
                && count(
                    &run_dir,
                    "SELECT COUNT(*) FROM sessions WHERE id LIKE '%:s2g%'",
                ) >= 1
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the run made no progress"
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = sessions(&run_dir);
        let o = run(&["train", "--resume", run_dir.to_str().unwrap()], d.path());
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("resumed from"), "{}", stderr(&o));
        assert_eq!(steps(&metrics(&run_dir)), [1, 2, 3]);
        let after = sessions(&run_dir);
        assert_eq!(after.len(), 12, "every session exactly once");
        for row in &before {
            assert!(after.contains(row), "{row:?} was redone on resume");
        }
        assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM judgments"), 12);
    }
}
