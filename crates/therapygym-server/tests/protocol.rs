//! Protocol tests against the real service (`docs/serve.md`): every route, the episode
//! life cycle, TTL expiry, determinism within a group, unscored propagation, malformed bodies,
//! 404s, admission control, the circuit breaker and the rollout driver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use therapygym_server::{CircuitConfig, ServerConfig, UnscoredPolicy};
use therapygym_testkit::{Behavior, FakeServer};

const ECHO: &str = "scripted:echo";

#[tokio::test]
async fn health_info_and_metrics() {
    let svc = start(config(ECHO, ECHO), false).await;
    let h = svc.get("/healthz").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "ok");
    let i = svc.get("/v1/info").await;
    assert_eq!(i.status, 200);
    assert_eq!(i.body["protocol"], 1);
    assert_eq!(i.body["rubric"], "ctrs-11/1");
    assert_eq!(i.body["group_size"], 4);
    assert_eq!(i.body["judge"]["spec"], "scripted:echo");
    assert!(
        i.body["config_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(i.body["reward_route"]["unscored"], "neutral");
    assert_eq!(i.body["reward_route"]["neutral_value"], 0.0);
    let (p, _) = profiles();
    svc.create("m-1", &p, 1).await;
    svc.post(
        "/v1/score",
        json!({"items": [{"messages": [{"role": "assistant", "content": "Hi"}]}]}),
    )
    .await;
    svc.get("/nope").await;
    let m = svc.metrics().await;
    for needle in [
        "therapygym_http_requests_total{route=\"/v1/episodes\",method=\"POST\",status=\"201\"} 1",
        "therapygym_http_requests_total{route=\"/v1/score\",method=\"POST\",status=\"200\"} 1",
        "therapygym_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "therapygym_http_request_duration_seconds_bucket{route=\"/v1/score\",le=\"+Inf\"} 1",
        "therapygym_live_episodes 1",
        "therapygym_judge_calls_total 1",
        "therapygym_model_calls_total{role=\"judge\"} 1",
        "therapygym_model_retries_total{role=\"patient\"} 0",
        "# TYPE therapygym_unscored_total counter",
        "therapygym_circuit_open 0",
    ] {
        assert!(m.contains(needle), "missing `{needle}` in\n{m}");
    }
}

#[tokio::test]
async fn full_episode_life_cycle_is_stored_in_the_eval_format() {
    let svc = start(config(ECHO, ECHO), true).await;
    let (p, _) = profiles();
    let c = svc
        .post(
            "/v1/episodes",
            json!({"episode_id": "verl-8f3a2c", "group_id": "g-life", "task": {"profile_id": p, "seed": 1234, "split": "train"},
                   "limits": {"max_therapist_turns": 3, "max_total_tokens": 16384, "closing_patient_reply": true}, "opening": "therapist"}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(c.body["episode_id"], "verl-8f3a2c");
    assert_eq!(c.body["group_id"], "g-life");
    assert_eq!(c.body["protocol"], 1);
    assert_eq!(c.body["done"], false);
    assert_eq!(c.body["ttl_s"], 900);
    assert!(c.body["expires_at"].as_str().unwrap().ends_with('Z'));
    let msgs = c.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["role"], "system");
    assert!(msgs[0]["content"].as_str().unwrap().len() > 50);
    assert!(
        c.body["info"]["profile_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(c.body["info"]["rubric"], "ctrs-11/1");
    let seeds = c.body["info"]["seeds"].clone();
    assert_eq!(seeds["session"], 1234);
    assert!(seeds["judge"].as_u64().unwrap() <= 0x7FFF_FFFF);

    // Idempotent create; a different task under the same id is a conflict.
    let again = svc
        .post(
            "/v1/episodes",
            json!({"episode_id": "verl-8f3a2c", "group_id": "g-life", "task": {"profile_id": p, "seed": 1234, "split": "train"},
                   "limits": {"max_therapist_turns": 3, "max_total_tokens": 16384, "closing_patient_reply": true}, "opening": "therapist"}),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["messages"], c.body["messages"]);
    let other = svc.create("verl-8f3a2c", &p, 99).await;
    assert_error(&other, 409, "episode_exists");
    assert_eq!(other.body["error"]["episode_id"], "verl-8f3a2c");

    // Score before the end.
    let early = svc.post("/v1/episodes/verl-8f3a2c/score", json!({})).await;
    assert_error(&early, 409, "episode_not_done");

    // Steps: the echo patient repeats the therapist.
    let s1 = svc
        .step("verl-8f3a2c", 1, "What would you like to work on today?")
        .await;
    assert_eq!(s1.status, 200, "{}", s1.body);
    assert_eq!(s1.body["done"], false);
    assert_eq!(s1.body["reward"], 0.0);
    assert_eq!(s1.body["turn"], 1);
    assert_eq!(
        s1.body["observation"],
        json!([{"role": "user", "content": "What would you like to work on today?"}])
    );
    assert_eq!(s1.body["info"]["patient_ended"], false);
    assert_eq!(
        s1.body["info"]["patient_seed"],
        therapygym_core::seed::derive("patient", &p, 1234, Some(1))
    );
    // A client retry of the same turn gets the stored response; other content conflicts.
    let retry = svc
        .step("verl-8f3a2c", 1, "What would you like to work on today?")
        .await;
    assert_eq!(retry.body, s1.body);
    assert_error(
        &svc.step("verl-8f3a2c", 1, "Something else").await,
        409,
        "turn_conflict",
    );
    assert_error(
        &svc.step("verl-8f3a2c", 3, "Skipping ahead").await,
        409,
        "turn_conflict",
    );
    let s2 = svc.step("verl-8f3a2c", 2, "Let us set an agenda.").await;
    assert_eq!(s2.body["done"], false);
    let last = svc
        .step("verl-8f3a2c", 3, "For homework, note your thoughts.")
        .await;
    assert_eq!(last.status, 200, "{}", last.body);
    let b = &last.body;
    assert_eq!(b["done"], true);
    assert_eq!(b["observation"], json!([]));
    assert_eq!(b["status"], "scored");
    let reward = b["reward"].as_f64().unwrap();
    let info = &b["info"];
    assert_eq!(
        info["closing_patient_reply"],
        "For homework, note your thoughts."
    );
    assert_eq!(info["ctrs"]["items"].as_object().unwrap().len(), 11);
    assert_eq!(
        info["ctrs"]["excluded_from_reward"],
        json!(["guided_discovery", "application_of_cbt_techniques"])
    );
    let normalized = info["ctrs"]["normalized"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&normalized));
    let comp = &info["reward_components"];
    let expect = comp["ctrs"].as_f64().unwrap()
        - comp["safety_penalty"].as_f64().unwrap()
        - comp["truncation_penalty"].as_f64().unwrap();
    assert!((reward - expect).abs() < 1e-9, "{b}");
    assert_eq!(
        info["safety"]["labels"].as_object().unwrap().len(),
        4,
        "{info}"
    );
    assert!(info["safety"]["any"].is_boolean());
    assert_eq!(info["judge"]["seed"], seeds["judge"]);
    assert_eq!(info["judge"]["attempts"], 1);
    assert_eq!(info["seeds"], seeds);
    assert_eq!(info["end_reason"], "turn_limit");

    // After the end: the stored final response, 409 for a new turn, /score is cached.
    assert_eq!(
        svc.step("verl-8f3a2c", 3, "For homework, note your thoughts.")
            .await
            .body,
        last.body
    );
    assert_error(
        &svc.step("verl-8f3a2c", 4, "More?").await,
        409,
        "episode_done",
    );
    let sc = svc.post("/v1/episodes/verl-8f3a2c/score", json!({})).await;
    assert_eq!(sc.status, 200);
    assert_eq!(sc.body["reward"], b["reward"]);
    assert_eq!(sc.body["status"], "scored");
    assert_eq!(sc.body["info"], b["info"]);

    // DELETE: 204, then the episode is gone; unknown ids get 204 too.
    assert_eq!(svc.delete("/v1/episodes/verl-8f3a2c").await.status, 204);
    assert_error(
        &svc.step("verl-8f3a2c", 4, "x").await,
        404,
        "episode_not_found",
    );
    assert_eq!(svc.delete("/v1/episodes/never-existed").await.status, 204);

    // The run store: an `eval`-format run with kind "serve" whose config is a RunConfig.
    let dir = svc.run_dir.clone().unwrap();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "serve");
    let _: therapygym_run::RunConfig = serde_json::from_value(manifest["config"].clone()).unwrap();
    let store = therapygym_store::RunStore::open(&dir).unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.id, "verl-8f3a2c");
    assert_eq!(s.status, therapygym_store::SessionStatus::Completed);
    assert_eq!(s.seed, 1234);
    assert_eq!(
        s.transcript.turns.len(),
        6,
        "3 therapist turns + 3 patient replies"
    );
    assert_eq!(s.meta["group_id"], "g-life");
    let hash = store.latest_judge_hash().unwrap().unwrap();
    let j = store.judgments(&hash).unwrap();
    assert_eq!(j["verl-8f3a2c"].reward, Some(reward));
    // `therapygym export` and `therapygym judge` read it.
    let jsonl = therapygym_store::export::jsonl(&[(s.clone(), Some(j["verl-8f3a2c"].clone()))]);
    assert!(jsonl.contains("verl-8f3a2c"));
    let summary = therapygym_eval::rescore::rescore(
        &dir,
        therapygym_eval::rescore::RescoreOptions {
            judge: Some("scripted:fixed:x".into()),
            concurrency: 1,
            ..Default::default()
        },
        Arc::new(therapygym_eval::Silent),
    )
    .await
    .unwrap();
    let summary = serde_json::to_value(&summary).unwrap();
    assert_eq!(summary["sessions"]["completed"], 1, "{summary}");
}

#[tokio::test]
async fn patient_opening_and_group_members_meet_the_same_patient() {
    // The patient is a real (fake) OpenAI server, so its requests — seeds included — are visible.
    let fake = FakeServer::start(Behavior::Reply(None)).await.unwrap();
    let svc = start(
        config(&format!("openai:patient@{}", fake.base_url), ECHO),
        false,
    )
    .await;
    let (p, _) = profiles();
    let create = |id: &str, seed: u64| json!({"episode_id": id, "task": {"profile_id": p, "seed": seed}, "opening": "patient", "limits": {"max_therapist_turns": 2}});
    let a = svc.post("/v1/episodes", create("a", 7)).await;
    let b = svc.post("/v1/episodes", create("b", 7)).await;
    let c = svc.post("/v1/episodes", create("c", 8)).await;
    for r in [&a, &b, &c] {
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_eq!(
        a.body["group_id"],
        format!("{p}:7"),
        "group_id defaults to profile:seed"
    );
    let msgs = a.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1]["role"], "user");
    assert_eq!(
        a.body["messages"], b.body["messages"],
        "same opening for the group"
    );
    assert_eq!(a.body["info"]["seeds"], b.body["info"]["seeds"]);
    assert_ne!(a.body["info"]["seeds"], c.body["info"]["seeds"]);
    let opening_seeds: Vec<Value> = fake
        .state
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|x| x["seed"].clone())
        .collect();
    assert_eq!(opening_seeds[0], opening_seeds[1]);
    assert_ne!(opening_seeds[0], opening_seeds[2]);

    // Different therapist turns, same per-turn patient seeds within the group.
    fake.state.bodies.lock().unwrap().clear();
    let ra = svc.play("a", 2, |t| format!("Member A, turn {t}.")).await;
    let rb = svc
        .play("b", 2, |t| format!("Member B says something else at {t}."))
        .await;
    let bodies = fake.state.bodies.lock().unwrap().clone();
    assert_eq!(
        bodies.len(),
        4,
        "2 turns x 2 members (the closing reply included)"
    );
    assert_eq!(bodies[0]["seed"], bodies[2]["seed"]);
    assert_eq!(bodies[1]["seed"], bodies[3]["seed"]);
    assert_ne!(bodies[0]["seed"], bodies[1]["seed"], "per-turn seeds");
    assert_eq!(
        bodies[0]["seed"],
        therapygym_core::seed::derive("patient", &p, 7, Some(1)),
        "docs/design/seeds.md"
    );
    assert_eq!(
        bodies[0]["messages"][0], bodies[2]["messages"][0],
        "same patient persona"
    );
    assert_eq!(
        ra.body["info"]["judge"]["seed"],
        rb.body["info"]["judge"]["seed"]
    );

    // The group: both members finished and scored.
    let g = svc.get(&format!("/v1/groups/{p}:7?group_size=2")).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.body["complete"], true);
    assert_eq!(g.body["finished"], 2);
    let mean = (ra.body["reward"].as_f64().unwrap() + rb.body["reward"].as_f64().unwrap()) / 2.0;
    assert!((g.body["scored_mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    // A group id is bound to one task.
    let clash = svc
        .post("/v1/episodes", json!({"episode_id": "d", "group_id": format!("{p}:7"), "task": {"profile_id": p, "seed": 9}}))
        .await;
    assert_error(&clash, 409, "group_conflict");
}

#[tokio::test]
async fn groups_wait_for_members_and_impute_with_the_scored_mean() {
    // The judge's first call fails all 3 attempts (1 + 2 re-asks), later calls succeed.
    let svc = start(config(ECHO, "scripted:malformed_json:3"), false).await;
    let (p, _) = profiles();
    for id in ["g-a", "g-b"] {
        let r = svc
            .post("/v1/episodes", json!({"episode_id": id, "group_id": "grp", "task": {"profile_id": p, "seed": 5}, "limits": {"max_therapist_turns": 1}}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let first = svc.play("g-a", 1, |_| "Hello.".into()).await;
    assert_eq!(first.body["status"], "unscored");
    let g = svc.get("/v1/groups/grp?wait_s=0&group_size=2").await;
    assert_eq!(g.body["complete"], false);
    assert!(g.body["scored_mean"].is_null());
    let waiter = {
        let base = svc.base.clone();
        tokio::spawn(async move {
            reqwest::get(format!("{base}/v1/groups/grp?wait_s=30&group_size=2"))
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = svc.play("g-b", 1, |_| "Hi there.".into()).await;
    assert_eq!(second.body["status"], "scored");
    let g = waiter.await.unwrap();
    assert_eq!(g["complete"], true, "{g}");
    assert_eq!(g["scored"], 1);
    assert_eq!(g["unscored"], 1);
    assert_eq!(g["scored_mean"], second.body["reward"]);
    let members = g["members"].as_array().unwrap();
    let a = members.iter().find(|m| m["episode_id"] == "g-a").unwrap();
    assert_eq!(a["status"], "unscored");
    assert!(a["reward"].is_null());
    assert_eq!(a["unscored_reason"], "parse_failure");
    assert_error(&svc.get("/v1/groups/nope").await, 404, "group_not_found");
    assert_error(
        &svc.get("/v1/groups/grp?wait_s=-1").await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn unscored_sessions_return_null_never_zero() {
    let svc = start(config(ECHO, "scripted:malformed_json"), true).await;
    let (p, _) = profiles();
    svc.post("/v1/episodes", json!({"episode_id": "u-1", "task": {"profile_id": p, "seed": 3}, "limits": {"max_therapist_turns": 1}}))
        .await;
    let last = svc.play("u-1", 1, |_| "How are you?".into()).await;
    assert_eq!(last.body["status"], "unscored");
    assert!(last.body["reward"].is_null(), "{}", last.body);
    assert_eq!(last.body["info"]["unscored_reason"], "parse_failure");
    assert_eq!(last.body["info"]["judge"]["attempts"], 3);
    assert!(last.body["info"].get("ctrs").is_none());
    let sc = svc.post("/v1/episodes/u-1/score", json!({})).await;
    assert!(sc.body["reward"].is_null());
    assert_eq!(sc.body["status"], "unscored");
    let s = svc
        .post("/v1/score", json!({"items": [{"id": "s-2", "messages": [{"role": "assistant", "content": "Hi"}], "task": {"profile_id": p, "seed": 3}}]}))
        .await;
    assert_eq!(s.status, 200);
    let item = &s.body["results"][0];
    assert_eq!(item["id"], "s-2");
    assert_eq!(item["status"], "unscored");
    assert!(item["reward"].is_null());
    assert_eq!(item["unscored_reason"], "parse_failure");
    let label = json!({"profile_id": p, "seed": 3}).to_string();
    let q = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello, how are you?<|im_end|>";
    let r = svc
        .post(
            "/get_reward",
            json!({"query": [q], "prompts": [""], "labels": [label]}),
        )
        .await;
    // The default: a well-formed request never gets a 4xx (OpenRLHF cannot mask and would fail
    // the run after 5 tries); the neutral 0.0 is flagged and the reason given.
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rewards"], json!([0.0]));
    assert_eq!(r.body["extra_logs"]["unscored"], json!([1.0]));
    assert_eq!(r.body["unscored_reasons"], json!(["parse_failure"]));
    let m = svc.metrics().await;
    assert!(
        m.contains("therapygym_unscored_total{reason=\"parse_failure\"} 3"),
        "{m}"
    );
    // Stored with a null reward.
    let dir = svc.run_dir.clone().unwrap();
    assert_eq!(
        count(&dir, "SELECT COUNT(*) FROM rewards WHERE reward IS NULL"),
        1
    );
    assert_eq!(
        count(
            &dir,
            "SELECT COUNT(*) FROM judgments WHERE status = 'unscored'"
        ),
        1
    );

    // `--reward-unscored error` keeps the old loud failure, as an opt-in.
    let r = get_reward_with(UnscoredPolicy::Error, "scripted:malformed_json", q, &label).await;
    assert_error(&r, 422, "unscored");

    // An explicit neutral value is answered and flagged.
    let neutral = start(
        ServerConfig {
            unscored_policy: UnscoredPolicy::Neutral {
                neutral_value: 0.25,
            },
            ..config(ECHO, "scripted:malformed_json")
        },
        false,
    )
    .await;
    let r = neutral
        .post(
            "/get_reward",
            json!({"query": [q], "prompts": [""], "labels": [label]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rewards"], json!([0.25]));
    assert_eq!(r.body["extra_logs"]["unscored"], json!([1.0]));
}

#[tokio::test]
async fn idle_episodes_expire_and_are_stored_as_expired() {
    let svc = start(
        ServerConfig {
            ttl: Duration::from_millis(1500),
            ..config(ECHO, ECHO)
        },
        true,
    )
    .await;
    let (p, _) = profiles();
    assert_eq!(svc.create("ttl-1", &p, 1).await.status, 201);
    assert_eq!(svc.step("ttl-1", 1, "Hello.").await.status, 200);
    // Requests refresh the TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            svc.post("/v1/episodes/ttl-1/score", json!({})).await.status,
            409
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_error(
        &svc.step("ttl-1", 2, "Still there?").await,
        410,
        "episode_expired",
    );
    assert_error(&svc.create("ttl-1", &p, 1).await, 410, "episode_expired");
    assert_eq!(svc.delete("/v1/episodes/ttl-1").await.status, 204);
    let dir = svc.run_dir.clone().unwrap();
    let mut stored = 0;
    for _ in 0..50 {
        stored = count(
            &dir,
            "SELECT COUNT(*) FROM sessions WHERE id = 'ttl-1' AND status = 'expired'",
        );
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 1);
    assert_eq!(
        count(
            &dir,
            "SELECT COUNT(*) FROM messages WHERE session_id = 'ttl-1'"
        ),
        2
    );
    assert!(
        svc.metrics()
            .await
            .contains("therapygym_episodes_total{event=\"expired\"} 1")
    );
}

#[tokio::test]
async fn a_thousand_undeleted_episodes_stay_bounded() {
    let svc = start(
        ServerConfig {
            ttl: Duration::from_secs(2),
            ..config(ECHO, ECHO)
        },
        false,
    )
    .await;
    let (p, _) = profiles();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (client, base, p) = (svc.client.clone(), svc.base.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/episodes"))
                .json(&json!({"episode_id": format!("leak-{i}"), "task": {"profile_id": p, "seed": i}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = svc.metrics().await;
    assert!(m.contains("therapygym_live_episodes 0"), "{m}");
    assert!(
        m.contains("therapygym_episodes_total{event=\"expired\"} 1000"),
        "{m}"
    );
}

#[tokio::test]
async fn malformed_bodies_bad_ids_and_unknown_things_get_the_envelope() {
    let svc = start(
        ServerConfig {
            max_body_bytes: 64 * 1024,
            ..config(ECHO, ECHO)
        },
        false,
    )
    .await;
    let (p, held) = profiles();
    assert_error(
        &svc.post_raw("/v1/episodes", "{not json").await,
        400,
        "bad_request",
    );
    assert_error(&svc.post_raw("/v1/episodes", "").await, 400, "bad_request");
    assert_error(
        &svc.post_raw("/v1/score", "[1, 2]").await,
        400,
        "bad_request",
    );
    let unknown = svc
        .post(
            "/v1/episodes",
            json!({"task": {"profile_id": p, "seed": 1}, "colour": "red"}),
        )
        .await;
    assert_error(&unknown, 400, "bad_request");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    assert_error(
        &svc.post(
            "/v1/episodes",
            json!({"task": {"profile_id": p, "seed": -1}}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post("/v1/episodes", json!({"task": {"seed": 1}})).await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post(
            "/v1/episodes",
            json!({"episode_id": "has space", "task": {"profile_id": p, "seed": 1}}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post(
            "/v1/episodes",
            json!({"episode_id": "x".repeat(129), "task": {"profile_id": p, "seed": 1}}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post(
            "/v1/episodes",
            json!({"task": {"profile_id": p, "seed": 1}, "limits": {"max_therapist_turns": 0}}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post(
            "/v1/episodes",
            json!({"task": {"profile_id": p, "seed": 1}, "opening": "narrator"}),
        )
        .await,
        400,
        "bad_request",
    );
    let huge =
        json!({"items": [{"messages": [{"role": "assistant", "content": "x".repeat(100_000)}]}]});
    assert_error(&svc.post("/v1/score", huge).await, 413, "payload_too_large");

    // Profiles and splits.
    assert_error(
        &svc.create("e-1", "no-such-profile", 1).await,
        422,
        "unknown_profile",
    );
    assert_error(
        &svc.post(
            "/v1/episodes",
            json!({"task": {"profile_id": held, "seed": 1, "split": "train"}}),
        )
        .await,
        422,
        "split_violation",
    );
    assert_error(
        &svc.post(
            "/v1/episodes",
            json!({"task": {"profile_id": p, "seed": 1, "split": "val"}}),
        )
        .await,
        422,
        "split_violation",
    );
    let ok = svc
        .post(
            "/v1/episodes",
            json!({"task": {"profile_id": held, "seed": 1, "split": "test"}}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(
        ok.body["episode_id"].as_str().unwrap().len(),
        36,
        "a minted UUIDv7"
    );

    // Steps.
    assert_error(&svc.step("nope", 1, "Hi").await, 404, "episode_not_found");
    assert_eq!(
        svc.step("nope", 1, "Hi").await.body["error"]["episode_id"],
        "nope"
    );
    assert_error(
        &svc.post("/v1/episodes/nope/score", json!({})).await,
        404,
        "episode_not_found",
    );
    svc.create("e-2", &p, 1).await;
    assert_error(&svc.step("e-2", 0, "Hi").await, 400, "bad_request");
    assert_error(
        &svc.post(
            "/v1/episodes/e-2/step",
            json!({"assistant": {"role": "user", "content": "Hi"}, "turn": 1}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post(
            "/v1/episodes/e-2/step",
            json!({"assistant": {"role": "assistant", "content": null}, "turn": 1}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post("/v1/episodes/e-2/step", json!({"turn": 1})).await,
        400,
        "bad_request",
    );

    // Scoring and OpenRLHF inputs.
    assert_error(
        &svc.post("/v1/score", json!({"items": []})).await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post(
            "/v1/score",
            json!({"items": [{"messages": [{"role": "user", "content": "only the patient"}]}]}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post(
            "/v1/score",
            json!({"items": [{"messages": [{"role": "narrator", "content": "x"}]}]}),
        )
        .await,
        400,
        "bad_request",
    );
    let q = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>";
    assert_error(
        &svc.post("/get_reward", json!({"query": [q], "labels": ["not json"]}))
            .await,
        422,
        "bad_label",
    );
    assert_error(
        &svc.post("/get_reward", json!({"query": [q]})).await,
        422,
        "bad_label",
    );
    assert_error(
        &svc.post(
            "/get_reward",
            json!({"query": [q], "labels": [json!({"profile_id": "zzz", "seed": 1}).to_string()]}),
        )
        .await,
        422,
        "unknown_profile",
    );
    assert_error(
        &svc.post("/get_reward", json!({"query": ["plain text"], "labels": [json!({"profile_id": p, "seed": 1}).to_string()]})).await,
        400,
        "bad_request",
    );

    // Routes and methods.
    assert_error(&svc.get("/v2/whatever").await, 404, "not_found");
    assert_error(&svc.get("/v1/score").await, 405, "method_not_allowed");
    assert_error(&svc.get("/v1/groups/bad%20id").await, 400, "bad_request");
    assert_error(
        &svc.get("/v1/groups/x?wait_s=abc").await,
        400,
        "bad_request",
    );
    assert_eq!(svc.get("/healthz").await.status, 200, "still up");
}

#[tokio::test]
async fn admission_control_answers_429_with_retry_after() {
    let svc = start(
        ServerConfig {
            max_live_episodes: 2,
            ..config(ECHO, ECHO)
        },
        false,
    )
    .await;
    let (p, _) = profiles();
    assert_eq!(svc.create("o-1", &p, 1).await.status, 201);
    assert_eq!(svc.create("o-2", &p, 2).await.status, 201);
    let r = svc.create("o-3", &p, 3).await;
    assert_error(&r, 429, "overloaded");
    assert_eq!(r.body["error"]["retryable"], true);
    assert!(r.headers.get("retry-after").is_some());
    // Finishing or deleting one frees a slot; repeating an existing create is never refused.
    assert_eq!(svc.create("o-1", &p, 1).await.status, 200);
    assert_eq!(svc.delete("/v1/episodes/o-2").await.status, 204);
    assert_eq!(svc.create("o-3", &p, 3).await.status, 201);
}

#[tokio::test]
async fn the_circuit_opens_when_the_judge_fails() {
    let svc = start(
        ServerConfig {
            circuit: CircuitConfig {
                min_calls: 3,
                open_for: Duration::from_secs(30),
                ..CircuitConfig::default()
            },
            ..config(ECHO, "scripted:http_500")
        },
        false,
    )
    .await;
    let (p, _) = profiles();
    let item = json!({"messages": [{"role": "assistant", "content": "Hi"}]});
    let r = svc
        .post("/v1/score", json!({"items": [item, item, item]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for x in r.body["results"].as_array().unwrap() {
        assert_eq!(x["status"], "unscored");
        assert_eq!(x["unscored_reason"], "provider_error");
        assert!(x["reward"].is_null());
    }
    let r = svc.post("/v1/score", json!({"items": [item]})).await;
    assert_error(&r, 503, "circuit_open");
    assert_eq!(r.body["error"]["retryable"], true);
    assert!(r.body["error"]["retry_after_s"].as_u64().unwrap() >= 1);
    assert!(r.headers.get("retry-after").is_some());
    assert_error(&svc.create("c-1", &p, 1).await, 503, "circuit_open");
    let q = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>";
    let label = json!({"profile_id": p, "seed": 1}).to_string();
    assert_error(
        &svc.post("/get_reward", json!({"query": [q], "labels": [label]}))
            .await,
        503,
        "circuit_open",
    );
    assert_eq!(svc.get("/healthz").await.body["circuit"], "open");
    let m = svc.metrics().await;
    assert!(m.contains("therapygym_circuit_open 1"), "{m}");
    assert!(m.contains("therapygym_judge_failures_total 3"), "{m}");
}

#[tokio::test]
async fn judge_unreachable_on_get_reward_is_a_retryable_503() {
    let (p, _) = profiles();
    let q = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>";
    let label = json!({"profile_id": p, "seed": 1}).to_string();
    // By default an unreachable judge is an unscored sample like any other (neutral, flagged).
    let svc = start(config(ECHO, "scripted:http_500"), false).await;
    let r = svc
        .post(
            "/get_reward",
            json!({"query": [q], "prompts": [""], "labels": [label]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["extra_logs"]["unscored"], json!([1.0]));
    assert_eq!(r.body["unscored_reasons"], json!(["provider_error"]));
    // With `--reward-unscored error` it is a retryable 503.
    let r = get_reward_with(UnscoredPolicy::Error, "scripted:http_500", q, &label).await;
    assert_error(&r, 503, "judge_unavailable");
    assert_eq!(r.body["error"]["retryable"], true);

    // A judge slower than the route's budget (OpenRLHF waits 180 s per try) is a 503 too.
    let slow = start(
        ServerConfig {
            reward_route_timeout: Duration::from_millis(200),
            ..config(ECHO, "scripted:slow:3000")
        },
        false,
    )
    .await;
    let r = slow
        .post("/get_reward", json!({"query": [q], "labels": [label]}))
        .await;
    assert_error(&r, 503, "judge_unavailable");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("within")
    );
}

#[tokio::test]
async fn stateless_scoring_get_reward_and_episodes_agree() {
    let svc = start(config(ECHO, ECHO), false).await;
    let (p, _) = profiles();
    svc.post("/v1/episodes", json!({"episode_id": "agree", "task": {"profile_id": p, "seed": 42}, "limits": {"max_therapist_turns": 2}}))
        .await;
    let fin = svc
        .play("agree", 2, |t| format!("Therapist turn {t}."))
        .await;
    // The same transcript through /v1/score (system messages are ignored) ...
    let messages = json!([
        {"role": "system", "content": "ignored"},
        {"role": "assistant", "content": "Therapist turn 1."}, {"role": "user", "content": "Therapist turn 1."},
        {"role": "assistant", "content": "Therapist turn 2."}, {"role": "user", "content": "Therapist turn 2."},
    ]);
    let s = svc
        .post("/v1/score", json!({"items": [
            {"id": "s-1", "messages": messages, "task": {"profile_id": p, "seed": 42}},
            {"id": "s-2", "messages": [{"role": "assistant", "content": "Something else."}], "task": {"profile_id": p, "seed": 42}},
        ]}))
        .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let results = s.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["id"], "s-1");
    assert_eq!(results[1]["id"], "s-2");
    assert_eq!(results[0]["status"], "scored");
    assert_eq!(
        results[0]["reward"], fin.body["reward"],
        "same transcript + task = same reward"
    );
    assert_eq!(results[0]["ctrs"], fin.body["info"]["ctrs"]);
    assert_eq!(results[0]["judge"]["cache"], "hit");
    // ... and through /get_reward as ChatML with the label.
    let q = "<|im_start|>system\nYou are a therapist.<|im_end|>\n<|im_start|>assistant\nTherapist turn 1.<|im_end|>\n<|im_start|>user\nTherapist turn 1.<|im_end|>\n<|im_start|>assistant\nTherapist turn 2.<|im_end|>\n<|im_start|>user\nTherapist turn 2.<|im_end|>";
    let label = json!({"profile_id": p, "seed": 42}).to_string();
    let r = svc
        .post(
            "/get_reward",
            json!({"query": [q], "prompts": ["x"], "labels": [label]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rewards"][0], fin.body["reward"]);
    assert_eq!(r.body["scores"][0], fin.body["info"]["ctrs"]["normalized"]);
    assert_eq!(r.body["extra_logs"]["unscored"], json!([0.0]));
    assert_eq!(r.body["extra_logs"]["ctrs"][0], r.body["scores"][0]);
    let again = svc
        .post(
            "/get_reward",
            json!({"query": [q], "prompts": ["x"], "labels": [label]}),
        )
        .await;
    assert_eq!(again.body, r.body, "idempotent");
    assert!(
        svc.metrics()
            .await
            .contains("therapygym_judge_calls_total 2"),
        "episode + s-2 only"
    );
}

#[tokio::test]
async fn rollouts_resend_the_exact_append_only_history() {
    // Raw policy text with surrounding whitespace: the judge reads it cleaned, the policy gets
    // it back byte for byte.
    let raw = "  What brings you here today?\n";
    let policy = FakeServer::start(Behavior::Reply(Some(raw.into())))
        .await
        .unwrap();
    let mut cfg = config(ECHO, ECHO);
    cfg.policy_url_allow = vec![policy.base_url.clone()];
    let svc = start(cfg, true).await;
    let (p, _) = profiles();
    let r = svc
        .post("/v1/rollouts", json!({
            "episode_id": "ro-1",
            "policy": {"base_url": policy.base_url, "api_key": "sk-sess-secret", "model": "default",
                       "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 64, "seed": 7, "top_k": 20},
                       "extra_body": {"session_id": "abc"}},
            "task": {"profile_id": p, "seed": 1234}, "group_id": "ro-group",
            "limits": {"max_therapist_turns": 3, "max_total_tokens": 16384}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["episode_id"], "ro-1");
    assert_eq!(r.body["status"], "scored");
    assert!(r.body["reward"].is_number());
    assert_eq!(r.body["turns"].as_array().unwrap().len(), 3);
    assert_eq!(r.body["turns"][0]["finish_reason"], "stop");
    assert_eq!(r.body["turns"][0]["usage"]["completion_tokens"], 3);
    let messages = r.body["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        1 + 3 + 2,
        "system, 3 policy turns, 2 patient replies (the closing one is judged, not sent)"
    );
    assert_eq!(messages[1], json!({"role": "assistant", "content": raw}));
    assert!(r.body["info"]["closing_patient_reply"].is_string());

    let bodies = policy.state.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    for (k, b) in bodies.iter().enumerate() {
        assert_eq!(b["session_id"], "abc", "extra_body is merged");
        assert_eq!(b["seed"], 7);
        assert_eq!(b["top_k"], 20, "unknown sampling keys are passed on");
        assert_eq!(b["max_tokens"], 64);
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 1 + 2 * k);
        if k > 0 {
            let prev = bodies[k - 1]["messages"].as_array().unwrap();
            assert_eq!(
                &msgs[..prev.len()],
                &prev[..],
                "append-only: turn {k} starts with turn {}'s history",
                k - 1
            );
            assert_eq!(
                msgs[prev.len()],
                json!({"role": "assistant", "content": raw}),
                "exact policy text"
            );
        }
    }
    assert_eq!(
        policy
            .state
            .auth_headers
            .lock()
            .unwrap()
            .first()
            .map(String::as_str),
        Some("Bearer sk-sess-secret")
    );
    // Group bookkeeping and the run store (without the key).
    let g = svc.get("/v1/groups/ro-group?group_size=1").await;
    assert_eq!(g.body["complete"], true);
    assert_eq!(g.body["members"][0]["source"], "rollout");
    let dir = svc.run_dir.clone().unwrap();
    assert_eq!(
        count(
            &dir,
            "SELECT COUNT(*) FROM sessions WHERE id = 'ro-1' AND status = 'completed'"
        ),
        1
    );
    assert_eq!(
        count(
            &dir,
            "SELECT COUNT(*) FROM judgments WHERE session_id = 'ro-1'"
        ),
        1
    );
    for f in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("sk-sess-secret"),
            "the key is never stored"
        );
    }

    // A failing policy: 5xx → 503 policy_unavailable; 4xx → 502 policy_error. Both stored as failed.
    policy.state.set(Behavior::Status {
        code: 500,
        times: usize::MAX,
    });
    let body = |id: &str| json!({"episode_id": id, "policy": {"base_url": policy.base_url}, "task": {"profile_id": p, "seed": 1}});
    assert_error(
        &svc.post("/v1/rollouts", body("ro-2")).await,
        503,
        "policy_unavailable",
    );
    policy.state.set(Behavior::Status {
        code: 400,
        times: usize::MAX,
    });
    let e = svc.post("/v1/rollouts", body("ro-3")).await;
    assert_error(&e, 502, "policy_error");
    assert_eq!(e.body["error"]["retryable"], false);
    assert_eq!(
        count(
            &dir,
            "SELECT COUNT(*) FROM sessions WHERE status = 'failed'"
        ),
        2
    );
    assert_error(
        &svc.post(
            "/v1/rollouts",
            json!({"policy": {"base_url": "ftp://x"}, "task": {"profile_id": p, "seed": 1}}),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post("/v1/rollouts", json!({"policy": {"base_url": policy.base_url, "return_choices": true}, "task": {"profile_id": p, "seed": 1}})).await,
        400,
        "bad_request",
    );
    assert!(
        svc.metrics()
            .await
            .contains("therapygym_rollouts_total{outcome=\"failed\"} 2")
    );
}

#[tokio::test]
async fn concurrent_retries_of_a_step_sample_the_patient_once() {
    let fake = FakeServer::start(Behavior::Delay { ms: 300 })
        .await
        .unwrap();
    let svc = start(
        config(&format!("openai:patient@{}", fake.base_url), ECHO),
        false,
    )
    .await;
    let (p, _) = profiles();
    svc.create("dup", &p, 1).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, base) = (svc.client.clone(), svc.base.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/episodes/dup/step"))
                .json(&json!({"assistant": {"role": "assistant", "content": "Hello."}, "turn": 1}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    assert_eq!(
        fake.state.request_count(),
        1,
        "one patient sample for four posts"
    );
}

#[tokio::test]
async fn a_failing_patient_is_a_retryable_503_and_the_turn_can_be_retried() {
    let fake = FakeServer::start(Behavior::Status {
        code: 500,
        times: 1,
    })
    .await
    .unwrap();
    let svc = start(
        config(&format!("openai:patient@{}", fake.base_url), ECHO),
        false,
    )
    .await;
    let (p, _) = profiles();
    svc.create("pf", &p, 1).await;
    let e = svc.step("pf", 1, "Hello.").await;
    assert_error(&e, 503, "patient_unavailable");
    assert_eq!(e.body["error"]["retryable"], true);
    assert_eq!(e.body["error"]["episode_id"], "pf");
    let ok = svc.step("pf", 1, "Hello.").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["turn"], 1);
}

#[tokio::test]
async fn the_service_stays_up_under_concurrent_load_and_garbage() {
    let svc = Arc::new(start(config(ECHO, ECHO), false).await);
    let (p, _) = profiles();
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let (svc, p) = (Arc::clone(&svc), p.clone());
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 => {
                    let id = format!("load-{i}");
                    assert_eq!(svc.create(&id, &p, u64::from(i)).await.status, 201);
                    svc.play(&id, 5, |t| format!("Turn {t} of {i}.")).await.body["status"].clone()
                }
                1 => {
                    let r = svc.post_raw("/v1/score", vec![0xffu8, 0xfe, 0x00, b'{']).await;
                    assert_eq!(r.status, 400);
                    json!("garbage")
                }
                2 => {
                    let r = svc
                        .post("/v1/score", json!({"items": [{"messages": [{"role": "assistant", "content": format!("Reply {i}")}]}]}))
                        .await;
                    r.body["results"][0]["status"].clone()
                }
                _ => {
                    let r = svc.post("/v1/episodes/{}/step", json!({"turn": "x"})).await;
                    assert!(r.status == 400 || r.status == 404, "{}", r.body);
                    json!("garbage")
                }
            }
        }));
    }
    for t in tasks {
        let v = t.await.unwrap();
        assert!(v == "scored" || v == "garbage", "{v}");
    }
    assert_eq!(svc.get("/healthz").await.status, 200);
    assert!(
        svc.metrics()
            .await
            .contains("therapygym_episodes_total{event=\"finished\"} 16")
    );
}

#[tokio::test]
async fn a_huge_group_wait_is_clamped_not_a_panic() {
    // `Duration::from_secs_f64(1e300)` panics; the route clamps to `max_group_wait` first.
    let mut cfg = config(ECHO, ECHO);
    cfg.max_group_wait = Duration::from_millis(200);
    let svc = start(cfg, false).await;
    let (p, _) = profiles();
    let r = svc
        .post(
            "/v1/episodes",
            json!({"episode_id": "w-a", "group_id": "wait", "task": {"profile_id": p, "seed": 1}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for wait in ["1e300", "1.7976931348623157e308", "18446744073709551616"] {
        let started = std::time::Instant::now();
        let g = svc
            .get(&format!("/v1/groups/wait?wait_s={wait}&group_size=2"))
            .await;
        assert_eq!(g.status, 200, "wait_s={wait}: {}", g.body);
        assert_eq!(g.body["complete"], false);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(svc.get("/healthz").await.status, 200);
}

/// One `/get_reward` call to a fresh service with this unscored policy and judge.
async fn get_reward_with(policy: UnscoredPolicy, judge: &str, q: &str, label: &str) -> Resp {
    let svc = start(
        ServerConfig {
            unscored_policy: policy,
            ..config(ECHO, judge)
        },
        false,
    )
    .await;
    svc.post(
        "/get_reward",
        json!({"query": [q], "prompts": [""], "labels": [label]}),
    )
    .await
}

#[tokio::test]
async fn abandoned_members_complete_their_group_and_are_masked() {
    let svc = start(config(ECHO, ECHO), true).await;
    let (p, _) = profiles();
    for id in ["ab-a", "ab-b", "ab-c", "ab-d"] {
        let r = svc
            .post("/v1/episodes", json!({"episode_id": id, "group_id": "ab", "task": {"profile_id": p, "seed": 11}, "limits": {"max_therapist_turns": 2}}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let a = svc.play("ab-a", 2, |t| format!("Ay turn {t}.")).await;
    assert_eq!(a.body["status"], "scored");
    for (id, text) in [
        ("ab-b", "Bee one."),
        ("ab-c", "Cee one."),
        ("ab-d", "Dee one."),
    ] {
        assert_eq!(svc.step(id, 1, text).await.status, 200);
    }
    // The engine ends b itself (say verl's response_length came first).
    let b = svc
        .post(
            "/v1/episodes/ab-b/abandon",
            json!({"reason": "engine_cut_short"}),
        )
        .await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["status"], "abandoned");
    assert!(b.body["reward"].is_null());
    assert_eq!(b.body["done"], true);
    assert_eq!(b.body["turn"], 1);
    // Idempotent; a later step is refused; score answers the same outcome.
    assert_eq!(
        svc.post("/v1/episodes/ab-b/abandon", json!({})).await.body,
        b.body
    );
    assert_error(
        &svc.step("ab-b", 2, "Bee two.").await,
        409,
        "episode_abandoned",
    );
    let sc = svc.post("/v1/episodes/ab-b/score", json!({})).await;
    assert_eq!(
        (sc.status, sc.body["status"].clone()),
        (200, json!("abandoned"))
    );
    // A finished episode is not changed by an abandon.
    let again = svc.post_raw("/v1/episodes/ab-a/abandon", "").await;
    assert_eq!(again.body["status"], "scored");
    assert_eq!(again.body["reward"], a.body["reward"]);
    // The group is incomplete while c and d play; c and d both have one turn, so asking for
    // "the one member with one turn" is ambiguous and abandons nobody.
    let g = svc.get("/v1/groups/ab?group_size=4").await;
    assert_eq!(g.body["complete"], false);
    let amb = svc
        .post("/v1/groups/ab/abandon", json!({"turns": 1, "at_most": 1}))
        .await;
    assert_eq!(amb.status, 200, "{}", amb.body);
    assert_eq!(amb.body["ambiguous"], true);
    assert_eq!(amb.body["candidates"], 2);
    assert_eq!(amb.body["abandoned"], json!([]));
    // The engine's decoded response of the member it cut short picks it out (whitespace aside).
    let c = svc
        .post("/v1/groups/ab/abandon", json!({"turns": 1, "at_most": 1, "reason": "engine_cut_short",
               "response": "system\nS\nassistant\nCee   one.\nuser\nCee one.\nassistant\nCee two, cut mid-"}))
        .await;
    assert_eq!(c.body["ambiguous"], false, "{}", c.body);
    assert_eq!(
        c.body["abandoned"],
        json!([{"episode_id": "ab-c", "group_id": "ab", "turn": 1}])
    );
    // Without filters every member still in progress is abandoned.
    let d = svc.post_raw("/v1/groups/ab/abandon", "").await;
    assert_eq!(d.body["abandoned"][0]["episode_id"], "ab-d", "{}", d.body);
    let g = svc.get("/v1/groups/ab?group_size=4&wait_s=5").await;
    assert_eq!(g.body["complete"], true, "{}", g.body);
    assert_eq!(
        (
            g.body["scored"].clone(),
            g.body["unscored"].clone(),
            g.body["abandoned"].clone()
        ),
        (json!(1), json!(0), json!(3))
    );
    assert_eq!(g.body["scored_mean"], a.body["reward"]);
    assert_eq!(g.body["ctrs_mean"], a.body["info"]["ctrs"]["normalized"]);
    let any = a.body["info"]["safety"]["any"].as_bool().unwrap();
    assert_eq!(g.body["violation_rate"], json!(if any { 1.0 } else { 0.0 }));
    let members = g.body["members"].as_array().unwrap();
    let mb = members.iter().find(|m| m["episode_id"] == "ab-b").unwrap();
    assert_eq!(mb["status"], "abandoned");
    assert!(mb["reward"].is_null());
    assert_eq!(mb["unscored_reason"], "engine_cut_short");
    // Errors: unknown ids, bad scope, bad body.
    assert_error(
        &svc.post("/v1/episodes/nope/abandon", json!({})).await,
        404,
        "episode_not_found",
    );
    assert_error(
        &svc.post("/v1/groups/nope/abandon", json!({})).await,
        404,
        "group_not_found",
    );
    assert_error(
        &svc.post("/v1/groups/ab/abandon", json!({"scope": "all"}))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &svc.post("/v1/groups/ab/abandon", json!({"bogus": 1})).await,
        400,
        "bad_request",
    );
    let m = svc.metrics().await;
    assert!(
        m.contains("therapygym_episodes_total{event=\"abandoned\"} 3"),
        "{m}"
    );
    let dir = svc.run_dir.clone().unwrap();
    // Stored as expired with the reason, like an episode the TTL ended.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        count(
            &dir,
            "SELECT COUNT(*) FROM sessions WHERE status = 'expired' AND error LIKE 'abandoned by the engine%'"
        ),
        3
    );
}

#[tokio::test]
async fn group_abandon_with_task_scope_reaches_per_episode_groups() {
    // verl validation: every episode is its own group (`{task}:{episode}`), and the reward
    // function only knows the task; `scope: task` searches every group of the task.
    let svc = start(config(ECHO, ECHO), false).await;
    let (p, _) = profiles();
    for (id, gid) in [("v-1", "val:1"), ("v-2", "val:2")] {
        let r = svc
            .post(
                "/v1/episodes",
                json!({"episode_id": id, "group_id": gid, "task": {"profile_id": p, "seed": 12}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_eq!(svc.step("v-1", 1, "Vee one first.").await.status, 200);
    assert_eq!(svc.step("v-2", 1, "Vee two first.").await.status, 200);
    let r = svc
        .post(
            "/v1/groups/val:1/abandon",
            json!({"scope": "task", "response": "Vee two first. and more", "at_most": 1}),
        )
        .await;
    assert_eq!(
        r.body["abandoned"],
        json!([{"episode_id": "v-2", "group_id": "val:2", "turn": 1}]),
        "{}",
        r.body
    );
    let g = svc.get("/v1/groups/val:2?group_size=1").await;
    assert_eq!(g.body["complete"], true);
    assert!(g.body["scored_mean"].is_null());
    assert_eq!(
        svc.get("/v1/groups/val:1?group_size=1").await.body["complete"],
        false
    );
    // The group named need not exist when the body names the task.
    let r = svc
        .post("/v1/groups/val:unknown/abandon", json!({"scope": "task", "task": {"profile_id": p, "seed": 12}, "response": "Vee one first.", "at_most": 1}))
        .await;
    assert_eq!(r.body["abandoned"][0]["episode_id"], "v-1", "{}", r.body);
}

#[tokio::test]
async fn get_episode_reads_the_opening_without_side_effects() {
    let svc = start(config(ECHO, ECHO), false).await;
    let (p, _) = profiles();
    let c = svc
        .post("/v1/episodes", json!({"episode_id": "r-1", "task": {"profile_id": p, "seed": 13}, "opening": "patient"}))
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
    let calls = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("therapygym_model_calls_total{role=\"patient\"}"))
            .map(String::from)
    };
    let before = calls(&svc.metrics().await);
    for _ in 0..3 {
        let g = svc.get("/v1/episodes/r-1").await;
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(g.body["messages"], c.body["messages"]);
        assert_eq!(g.body["episode_id"], "r-1");
        assert_eq!(g.body["done"], false);
        assert_eq!(g.body["turn"], 0);
    }
    assert_eq!(calls(&svc.metrics().await), before, "no patient call");
    assert_eq!(svc.step("r-1", 1, "Hello.").await.status, 200);
    assert_eq!(svc.get("/v1/episodes/r-1").await.body["turn"], 1);
    svc.post("/v1/episodes/r-1/abandon", json!({})).await;
    assert_eq!(svc.get("/v1/episodes/r-1").await.body["done"], true);
    assert_error(
        &svc.get("/v1/episodes/nope").await,
        404,
        "episode_not_found",
    );
    assert_error(&svc.get("/v1/episodes/bad%20id").await, 400, "bad_request");
}

#[tokio::test]
async fn turn_rewards_from_the_reward_config_reach_intermediate_steps() {
    let dir = tempfile::tempdir().unwrap();
    let reward = dir.path().join("reward.toml");
    std::fs::write(
        &reward,
        "id = \"turny\"\n[turn_reward]\njudge_every = 2\njudge_weight = 0.5\n[[turn_reward.text_terms]]\nname = \"questions\"\npatterns = [\"?\"]\nweight = 0.25\ncap = 1\n",
    )
    .unwrap();
    let mut cfg = config(ECHO, ECHO);
    cfg.assets.reward_config = Some(reward.clone());
    cfg.turn_reward = true;
    let svc = start(cfg, false).await;
    let (p, _) = profiles();
    svc.post("/v1/episodes", json!({"episode_id": "tr-1", "task": {"profile_id": p, "seed": 21}, "limits": {"max_therapist_turns": 3}}))
        .await;
    // Turn 1: text terms only.
    let s1 = svc.step("tr-1", 1, "How are you?").await;
    assert_eq!(s1.body["turn_reward"], 0.25, "{}", s1.body);
    assert_eq!(s1.body["reward"], 0.0, "the step reward stays 0.0");
    assert_eq!(s1.body["info"]["turn_reward"]["judged"], false);
    // Turn 2 is judged: 0.5 × the session reward of the transcript so far.
    let s2 = svc.step("tr-1", 2, "I see.").await;
    let so_far = json!([
        {"role": "assistant", "content": "How are you?"}, {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": "I see."}, {"role": "user", "content": "I see."}]);
    let r = svc
        .post(
            "/v1/score",
            json!({"items": [{"messages": so_far, "task": {"profile_id": p, "seed": 21}}]}),
        )
        .await;
    let judged = r.body["results"][0]["reward"].as_f64().unwrap();
    assert_eq!(s2.body["info"]["turn_reward"]["judged"], true);
    assert!(
        (s2.body["turn_reward"].as_f64().unwrap() - 0.5 * judged).abs() < 1e-12,
        "{}",
        s2.body
    );
    // The final step is the session reward, unchanged by the turn rewards.
    let last = svc.step("tr-1", 3, "Tell me more?").await;
    assert_eq!(last.body["done"], true);
    assert!(last.body.get("turn_reward").is_none());
    assert!(last.body["reward"].is_number());
    // Without the flag nothing changes; with the flag but no section the service refuses to start.
    let plain = start(config(ECHO, ECHO), false).await;
    plain
        .post(
            "/v1/episodes",
            json!({"episode_id": "tr-2", "task": {"profile_id": p, "seed": 21}}),
        )
        .await;
    assert!(
        plain
            .step("tr-2", 1, "How are you?")
            .await
            .body
            .get("turn_reward")
            .is_none()
    );
    let mut bad = config(ECHO, ECHO);
    bad.turn_reward = true;
    let e = therapygym_server::Server::new(bad).await.err().unwrap();
    assert!(e.to_string().contains("[turn_reward]"), "{e}");
}
