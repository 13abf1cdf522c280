//! TreeSynth with fake models: tree growth, dimension picking and its retries, infinite
//! dimensions, the depth limit, validation and rejection counting, deduplication, the holdout
//! split, stopping rules and resume.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use serde_json::json;
use therapygym_models::{ErrorKind, ModelError};
use therapygym_synth::SynthConfig;

#[tokio::test]
async fn grows_breadth_first_to_the_depth_limit() {
    let d = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::new(binary_tree));
    let s = run(fake.clone(), config(), d.path()).await.unwrap();
    // 1 + 2 + 4 nodes; the 4 at depth 2 are leaves with 3 profiles each.
    let tree = json(d.path(), "tree.json");
    assert_eq!(tree["nodes_per_depth"], json!({"0": 1, "1": 2, "2": 4}));
    assert_eq!(tree["leaf_reasons"], json!({"max_depth": 4}));
    assert_eq!(
        tree["dimensions"],
        json!({"dimension 0": 1, "dimension 1": 2})
    );
    let leaves: Vec<&serde_json::Value> = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["status"] == "leaf")
        .collect();
    for l in &leaves {
        let dims: Vec<&str> = l["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["dimension"].as_str().unwrap())
            .collect();
        assert_eq!(
            dims,
            vec!["dimension 0", "dimension 1"],
            "every path has distinct dimensions"
        );
        assert_eq!(l["counts"]["planned"], 3);
        assert_eq!(l["counts"]["kept"], 3);
    }
    assert_eq!(tree["nodes"][0]["kept"], 12, "counts roll up to the root");
    assert_eq!((s.profiles, s.train, s.holdout), (12, 10, 2));
    assert_eq!(s.stop_reason, "plan_exhausted");
    assert_eq!(s.tree.expanded, 3);
    assert_eq!(
        std::fs::read_dir(d.path().join("nodes")).unwrap().count(),
        3,
        "one file per expanded node"
    );
    // Each expansion: sketches, dimension, assignment, one expansion reply.
    assert_eq!(fake.requests("node_samples").len(), 3);
    assert_eq!(fake.requests("node_values").len(), 3);
    assert_eq!(fake.requests("patient_profile").len(), 12);
    assert_eq!(s.this_attempt.model_calls, 3 * 4 + 12);
    // Leaf prompts carry every attribute on the path.
    let p = user(&fake.requests("patient_profile")[0]).to_string();
    assert!(
        p.contains("- dimension 0: ") && p.contains("- dimension 1: "),
        "{p}"
    );
    // The set loads with eval's loader.
    assert_eq!(load(d.path(), "profiles.jsonl").profiles.len(), 10);
}

#[tokio::test]
async fn a_used_dimension_is_rejected_and_retried() {
    let d = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::new(|req, f| {
        if schema_name(req) == "node_dimension" {
            let used = used_dimensions(req);
            // Below the root: propose the parent's dimension twice before a new one.
            if !used.is_empty() && f.times_seen(req) < 2 {
                return ok(json!({"dimension": used[0].to_uppercase(), "values": ["x", "y"]}));
            }
        }
        binary_tree(req, f)
    }));
    run(fake.clone(), config(), d.path()).await.unwrap();
    let node = json(d.path(), "nodes/n0.0.json");
    let failures: Vec<&str> = node["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("`DIMENSION 0` is already used on this path"),
        "{failures:?}"
    );
    assert_eq!(node["outcome"]["kind"], "split");
    assert_eq!(node["outcome"]["dimension"], "dimension 1");
}

#[tokio::test]
async fn a_node_without_a_valid_dimension_becomes_a_leaf_after_the_attempts() {
    let d = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::new(|req, f| match schema_name(req) {
        // Only catch-all and combined values: never two usable values.
        "node_dimension" => {
            ok(json!({"dimension": "kind", "values": ["Other", "mixed", "other kinds"]}))
        }
        "node_samples" => ok(
            json!({"samples": ["Ana, a nurse who failed an exam", "Bo, a retired miner alone at home", "Cy, a student who lost a friend"]}),
        ),
        _ => binary_tree(req, f),
    }));
    let cfg = SynthConfig {
        dimension_attempts: 3,
        ..config()
    };
    let s = run(fake.clone(), cfg, d.path()).await.unwrap();
    assert_eq!(
        fake.requests("node_dimension").len(),
        3,
        "bounded by dimension_attempts"
    );
    assert!(fake.requests("node_assignments").is_empty());
    let node = json(d.path(), "nodes/n0.json");
    assert_eq!(
        node["outcome"],
        json!({"kind": "leaf", "reason": "no_dimension"})
    );
    assert_eq!(node["failures"].as_array().unwrap().len(), 3);
    assert_eq!(s.tree.leaf_reasons["no_dimension"], 1);
    // The leaf's own samples are emitted: each seeds one profile prompt.
    let prompts: Vec<String> = fake
        .requests("patient_profile")
        .iter()
        .map(|r| user(r).to_string())
        .collect();
    assert_eq!(prompts.len(), 3);
    assert!(
        prompts[0].contains("Idea to build on: Ana, a nurse")
            || prompts.iter().any(|p| p.contains("Idea to build on: Ana"))
    );
    assert!(
        prompts
            .iter()
            .any(|p| p.contains("Idea to build on: Cy, a student"))
    );
}

#[tokio::test]
async fn an_infinite_dimension_gets_one_list_child_and_leaves_draw_values() {
    let d = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::new(|req, f| match schema_name(req) {
        "node_values" => {
            let round = f.requests("node_values").len();
            let vals: Vec<String> = (0..10).map(|i| format!("town {round}-{i}")).collect();
            ok(json!({"missing_values": vals, "status": "infinite"}))
        }
        _ => binary_tree(req, f),
    }));
    let cfg = SynthConfig {
        depth: 1,
        samples_per_node: 2,
        max_values: 15,
        infinite_threshold: 15,
        infinite_path_samples: 3,
        ..config()
    };
    let s = run(fake.clone(), cfg, d.path()).await.unwrap();
    let node = json(d.path(), "nodes/n0.json");
    let o = &node["outcome"];
    assert_eq!(o["list_child"], true);
    assert_eq!(o["expansion"]["infinite"], true);
    assert_eq!(
        o["expansion"]["statuses"],
        json!(["infinite", "infinite"]),
        "asked again until the list exceeded 15"
    );
    assert_eq!(o["values"].as_array().unwrap().len(), 22);
    let tree = json(d.path(), "tree.json");
    assert_eq!(tree["nodes_per_depth"], json!({"0": 1, "1": 1}));
    let leaf = &tree["nodes"][1];
    assert_eq!(
        leaf["constraints"][0]["values"].as_array().unwrap().len(),
        22
    );
    // k = 1 list-valued node: 2 × 3^1 planned profiles.
    assert_eq!(leaf["counts"]["planned"], 6);
    assert_eq!(s.profiles, 6);
    let drawn: HashSet<String> = fake
        .requests("patient_profile")
        .iter()
        .filter_map(|r| {
            user(r)
                .lines()
                .find(|l| l.starts_with("- dimension 0: "))
                .map(str::to_string)
        })
        .collect();
    assert!(
        drawn.len() >= 2,
        "each prompt draws a value from the list: {drawn:?}"
    );
}

#[tokio::test]
async fn expansion_replies_are_bounded_even_when_malformed() {
    let d = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::new(|req, f| match schema_name(req) {
        "node_values" => Some(Err(ModelError::new(
            ErrorKind::SchemaViolation,
            "scripted bad expansion",
        ))),
        _ => binary_tree(req, f),
    }));
    let cfg = SynthConfig {
        depth: 1,
        max_expand_rounds: 3,
        ..config()
    };
    run(fake.clone(), cfg, d.path()).await.unwrap();
    assert_eq!(fake.requests("node_values").len(), 3);
    let node = json(d.path(), "nodes/n0.json");
    assert_eq!(
        node["outcome"]["expansion"]["statuses"],
        json!([
            "error:schema_violation",
            "error:schema_violation",
            "error:schema_violation"
        ])
    );
    assert_eq!(
        node["outcome"]["values"],
        json!(["a0", "b0"]),
        "the proposed values stand"
    );
}

#[tokio::test]
async fn invalid_profiles_are_repaired_by_a_re_ask() {
    let d = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::new(|req, f| {
        if schema_name(req) == "patient_profile" && req.messages.len() == 2 {
            // Schema-valid, but the loader rejects a blank history.
            let mut v = therapygym_synth::profile_check::reply_shape(&seeds()[1]);
            v["history"] = json!(" ".repeat(60));
            return ok(v);
        }
        binary_tree(req, f)
    }));
    let s = run(fake.clone(), config(), d.path()).await.unwrap();
    assert_eq!(s.profiles, 12);
    assert_eq!(s.repaired, 12, "every profile needed one re-ask");
    assert_eq!(s.rejected, 0);
    let repair = fake
        .requests("patient_profile")
        .into_iter()
        .find(|r| r.messages.len() == 4)
        .unwrap();
    assert!(
        repair.messages[3].content.contains("field `history`"),
        "{}",
        repair.messages[3].content
    );
}

#[tokio::test]
async fn rejections_are_counted_by_reason_and_the_run_gives_up() {
    let d = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::new(|req, f| match schema_name(req) {
        "patient_profile" => {
            let mut v = therapygym_synth::profile_check::reply_shape(&seeds()[1]);
            v["auto_thought"] =
                json!("I am useless I am useless I am useless I am useless I am useless");
            ok(v)
        }
        _ => binary_tree(req, f),
    }));
    let cfg = SynthConfig {
        target: Some(50),
        give_up_after: 10,
        repair_attempts: 1,
        ..config()
    };
    let s = run(fake.clone(), cfg, d.path()).await.unwrap();
    assert_eq!(s.stop_reason, "gave_up");
    assert!(!s.target_reached());
    assert_eq!(s.profiles, 0);
    assert_eq!(s.rejections["repetitive:auto_thought"], 10);
    assert_eq!(s.candidates, 10);
    let rejected: Vec<serde_json::Value> = read(d.path(), "rejected.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejected.len(), 10);
    assert_eq!(rejected[0]["reason"], "repetitive:auto_thought");
    assert_eq!(rejected[0]["detail"]["repairs"], 1);
    assert!(
        rejected[0]["detail"]["raw"]
            .as_str()
            .unwrap()
            .contains("I am useless")
    );
}

#[tokio::test]
async fn model_failures_are_rejections_with_their_kind() {
    for (mode, reason) in [
        ("malformed_json", "invalid_json"),
        ("truncated", "truncated"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let m: therapygym_models::ModelSpec = format!("scripted:{mode}").parse().unwrap();
        let model = therapygym_models::open_model(&m, therapygym_models::ModelOptions::default())
            .await
            .unwrap();
        let cfg = SynthConfig {
            target: Some(20),
            give_up_after: 6,
            depth: 1,
            ..config()
        };
        let run = therapygym_synth::RunDir::create(
            d.path(),
            cfg,
            therapygym_synth::SynthPrompts::default(),
            seeds(),
            "<test>",
        )
        .unwrap();
        let s = therapygym_synth::run_synth(run, model, 2, Arc::new(therapygym_synth::Silent))
            .await
            .unwrap();
        assert_eq!(
            s.tree.leaf_reasons["no_samples"], 1,
            "{mode}: the sketches failed, bounded"
        );
        assert_eq!(s.rejections[reason], 6, "{mode}: {:?}", s.rejections);
        assert_eq!(s.stop_reason, "gave_up");
    }
}

#[tokio::test]
async fn duplicates_exact_near_and_seed_copies_are_removed() {
    let d = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicU32::new(0);
    let fake = Arc::new(Fake::new(move |req, f| {
        if schema_name(req) == "patient_profile" {
            // By call order (the counts do not depend on it): a copy of a seed, the same
            // story under another name, a near copy of that story, or a fresh scripted profile.
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut story = json!({"name": format!("Person {n}"), "history": "Grace ran a small bakery in Leeds for twenty years until a new supermarket opened across the road and her takings fell by half.",
                "core_beliefs": ["failure"], "intermediate_belief": "If the shop fails, then I have wasted my whole life and let my family down.",
                "coping_strategies": "Works longer hours and hides the accounts from her husband.", "situation": "The bank refused to extend her overdraft on Monday morning.",
                "auto_thought": "It is all my fault and everyone will know.", "emotion": ["ashamed", "anxious"], "behavior": "Closed the shop early and sat alone in the back room.", "style": "plain"});
            return match n % 4 {
                0 => ok(therapygym_synth::profile_check::reply_shape(&seeds()[2])),
                1 => ok(story),
                2 => {
                    story["behavior"] =
                        json!("Closed the shop early and sat alone in the back room crying.");
                    ok(story)
                }
                _ => None,
            };
        }
        binary_tree(req, f)
    }));
    let s = run(fake.clone(), config(), d.path()).await.unwrap();
    let kinds = &s.duplicate_kinds;
    assert_eq!(kinds.get("seed_copy"), Some(&3), "{kinds:?}");
    // Six tellings of one story: one kept, the exact repeats and the near ones removed.
    assert_eq!(
        kinds.get("exact_duplicate").unwrap() + kinds.get("near_duplicate").unwrap(),
        5,
        "{kinds:?}"
    );
    assert!(kinds.get("near_duplicate").unwrap() >= &1, "{kinds:?}");
    assert_eq!(s.profiles, 1 + 3);
    assert_eq!(s.duplicates, 8);
    assert_eq!(s.candidates, 12);
    let div = json(d.path(), "diversity.json");
    assert_eq!(div["removed"]["near_threshold"], 0.7);
    assert_eq!(
        div["removed"]["duplicates"],
        serde_json::to_value(kinds).unwrap()
    );
    assert!(
        div["similarity"]["max"].as_f64().unwrap() < 0.7,
        "kept profiles are not near duplicates"
    );
}

#[tokio::test]
async fn the_target_ids_holdout_and_outputs() {
    let d = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::echo());
    let cfg = SynthConfig {
        target: Some(60),
        holdout: 20,
        ..config()
    };
    let s = run(fake, cfg, d.path()).await.unwrap();
    assert_eq!(s.stop_reason, "target_reached");
    assert_eq!(
        (s.profiles, s.train, s.holdout),
        (60, 48, 12),
        "holdout capped at a fifth"
    );
    let train = load(d.path(), "profiles.jsonl");
    let holdout = load(d.path(), "holdout.jsonl");
    let mut ids: HashSet<String> = HashSet::new();
    for p in train.profiles.iter().chain(&holdout.profiles) {
        assert!(therapygym_core::profile::valid_id(&p.id), "{}", p.id);
        assert!(p.id.starts_with("syn-") && p.id.len() == 10, "{}", p.id);
        assert!(ids.insert(p.id.clone()), "unique ids");
    }
    assert_eq!(ids.len(), 60);
    let prov: Vec<serde_json::Value> = read(d.path(), "provenance.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(prov.len(), 60);
    assert_eq!(prov.iter().filter(|p| p["split"] == "holdout").count(), 12);
    let leaves: HashSet<&str> = prov
        .iter()
        .filter(|p| p["split"] == "holdout")
        .map(|p| p["leaf"].as_str().unwrap())
        .collect();
    assert!(leaves.len() >= 4, "the holdout spreads over leaves");
    let div = json(d.path(), "diversity.json");
    for k in [
        "helpless_belief",
        "unlovable_belief",
        "worthless_belief",
        "emotion",
        "style",
    ] {
        assert!(div["coverage"][k]["used"].as_u64().unwrap() >= 1, "{k}");
    }
    assert_eq!(div["profiles"], 60);
    let m = json(d.path(), "synth.json");
    assert_eq!(m["status"], "finished");
    assert_eq!(m["summary"]["profiles"], 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_redoes_nothing_and_matches_an_uninterrupted_one() {
    let whole = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        depth: 2,
        samples_per_node: 3,
        ..config()
    };
    let full = Arc::new(Fake::new(binary_tree));
    let s_full = run(full.clone(), cfg.clone(), whole.path()).await.unwrap();
    let total_calls = full.calls.load(std::sync::atomic::Ordering::SeqCst);

    for crash_after in [2u64, 9, 15, 20] {
        let d = tempfile::tempdir().unwrap();
        let mut crashing = Fake::new(binary_tree);
        crashing.crash_after = Some(crash_after);
        let e = run(Arc::new(crashing), cfg.clone(), d.path())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("simulated crash"), "{e}");
        // What the first attempt finished and stored.
        let nodes_before: Vec<(String, String)> = std::fs::read_dir(d.path().join("nodes"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        let stored_calls: u64 = nodes_before
            .iter()
            .map(|(_, t)| {
                serde_json::from_str::<serde_json::Value>(t).unwrap()["calls"]
                    .as_u64()
                    .unwrap()
            })
            .sum::<u64>()
            + std::fs::read_dir(d.path().join("leaves"))
                .unwrap()
                .map(|e| {
                    serde_json::from_str::<serde_json::Value>(
                        &std::fs::read_to_string(e.unwrap().path()).unwrap(),
                    )
                    .unwrap()
                })
                .flat_map(|b| b["jobs"].as_array().unwrap().clone())
                .flat_map(|j| j["candidates"].as_array().unwrap().clone())
                .map(|c| c["calls"].as_u64().unwrap())
                .sum::<u64>();

        let again = Arc::new(Fake::new(binary_tree));
        let s = resume(again.clone(), d.path()).await.unwrap();
        assert_eq!(s.this_attempt.attempt, 2);
        assert_eq!(
            s.this_attempt.nodes_resumed,
            nodes_before.len(),
            "crash after {crash_after}"
        );
        assert_eq!(
            again.calls.load(std::sync::atomic::Ordering::SeqCst),
            total_calls - stored_calls,
            "crash after {crash_after}: the resume asks only for unfinished work"
        );
        for (name, text) in &nodes_before {
            assert_eq!(
                &std::fs::read_to_string(d.path().join("nodes").join(name)).unwrap(),
                text,
                "{name} untouched"
            );
        }
        for f in ["profiles.jsonl", "holdout.jsonl"] {
            assert_eq!(
                read(d.path(), f),
                read(whole.path(), f),
                "crash after {crash_after}: {f} as in an uninterrupted run"
            );
        }
        assert_eq!(s.profiles, s_full.profiles);
        // A finished run resumes without any call.
        let idle = Arc::new(Fake::new(binary_tree));
        let s2 = resume(idle.clone(), d.path()).await.unwrap();
        assert_eq!(idle.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(s2.profiles, s.profiles);
        assert_eq!(
            json(d.path(), "synth.json")["attempts"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }
}

#[tokio::test]
async fn a_new_run_refuses_a_used_directory_and_bad_settings() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("x"), "y").unwrap();
    let e = run(Arc::new(Fake::echo()), config(), d.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let e = run(
        Arc::new(Fake::echo()),
        SynthConfig {
            samples_per_node: 1,
            ..config()
        },
        &d.path().join("new"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("`samples_per_node`"), "{e}");
    let e = resume(Arc::new(Fake::echo()), d.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a synthesis run directory"), "{e}");
}
