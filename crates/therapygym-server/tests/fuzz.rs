//! Property tests of every JSON body the service reads (`/v1/episodes`, `…/step`, `…/score`,
//! `/v1/score`, `/v1/rollouts`, `/get_reward`) and of the group query: arbitrary bytes and
//! mutations of valid bodies get a response — a success or the error envelope with a 4xx status
//! — never a dropped connection (a panicking handler) or a 5xx; the service answers `/healthz`
//! after every case. `PROPTEST_CASES=N` runs longer (docs/handling-errors.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use therapygym_testkit::fuzz;
use therapygym_testkit::{Behavior, FakeServer};

/// What a case sends.
#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    Json(Value),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Bytes(b) => b.clone(),
            Body::Json(v) => v.to_string().into_bytes(),
        }
    }
}

fn body(valid: Value) -> impl Strategy<Value = Body> {
    prop_oneof![
        1 => fuzz::bytes(512).prop_map(Body::Bytes),
        1 => fuzz::mutated_text(&valid.to_string()).prop_map(|t| Body::Bytes(t.into_bytes())),
        3 => fuzz::mutated_json(valid).prop_map(Body::Json),
    ]
}

/// A response is a success or the error envelope, never a server error.
fn well_formed(route: &str, r: &Resp) -> Result<(), TestCaseError> {
    prop_assert!(r.status < 500, "{route}: HTTP {} {}", r.status, r.body);
    if r.status >= 400 {
        let e = &r.body["error"];
        prop_assert!(e["kind"].is_string(), "{route}: {}", r.body);
        prop_assert!(e["retryable"].is_boolean(), "{route}: {}", r.body);
        prop_assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{route}: {}",
            r.body
        );
    } else {
        prop_assert!(r.body.is_object(), "{route}: {}", r.body);
    }
    Ok(())
}

#[test]
fn every_body_gets_a_response_or_a_typed_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (svc, policy) = rt.block_on(async {
        let policy = FakeServer::start(Behavior::Reply(Some("How are you?".into())))
            .await
            .unwrap();
        let mut cfg = config("scripted:echo", "scripted:echo");
        cfg.policy_url_allow = vec![policy.base_url.clone()];
        (start(cfg, true).await, policy)
    });
    let (p, _) = profiles();
    let messages =
        json!([{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Hello"}]);
    let task = json!({"profile_id": p, "seed": 3});
    let create = json!({"episode_id": "e", "group_id": "g", "task": task,
                        "limits": {"max_therapist_turns": 2, "max_total_tokens": 4096}});
    let step = json!({"assistant": {"role": "assistant", "content": "What brings you here?"},
                      "turn": 1, "finish_reason": "stop"});
    let score = json!({"items": [{"id": "s-1", "messages": messages, "task": task}]});
    let rollout = json!({"policy": {"base_url": policy.base_url, "model": "default",
                                    "sampling": {"temperature": 1.0, "max_tokens": 32, "seed": 7}},
                         "task": task, "limits": {"max_therapist_turns": 1}});
    let label = json!({"profile_id": p, "seed": 3}).to_string();
    let q = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello there.<|im_end|>";
    let reward = json!({"query": [q], "prompts": [""], "labels": [label]});
    let cases = (
        0usize..7,
        body(create),
        (body(step), body(json!({}))),
        body(score),
        body(rollout),
        body(reward),
        fuzz::mutated_text("wait_s=0.01"),
    );
    let n = AtomicU64::new(0);
    let mut runner = TestRunner::new(fuzz::config(48));
    runner
        .run(
            &cases,
            |(route, create, (step, episode_score), score, rollout, reward, query)| {
                let id = format!("fz-{}", n.fetch_add(1, Ordering::Relaxed));
                rt.block_on(async {
                    let (path, r) = match route {
                        0 => ("/v1/episodes".to_string(), {
                            let b = match create {
                                // A fresh id, so a valid body is not a conflict with an earlier case.
                                Body::Json(mut v) => {
                                    if v.get("episode_id") == Some(&json!("e")) {
                                        v["episode_id"] = json!(id);
                                    }
                                    Body::Json(v).bytes()
                                }
                                b => b.bytes(),
                            };
                            svc.post_raw("/v1/episodes", b).await
                        }),
                        1 | 2 => {
                            let c = svc.create(&id, &p, 5).await;
                            prop_assert_eq!(c.status, 201, "{}", c.body);
                            let path = if route == 1 {
                                format!("/v1/episodes/{id}/step")
                            } else {
                                format!("/v1/episodes/{id}/score")
                            };
                            let b = if route == 1 {
                                step.bytes()
                            } else {
                                episode_score.bytes()
                            };
                            let r = svc.post_raw(&path, b).await;
                            (path, r)
                        }
                        3 => (
                            "/v1/score".into(),
                            svc.post_raw("/v1/score", score.bytes()).await,
                        ),
                        4 => (
                            "/v1/rollouts".into(),
                            svc.post_raw("/v1/rollouts", rollout.bytes()).await,
                        ),
                        5 => (
                            "/get_reward".into(),
                            svc.post_raw("/get_reward", reward.bytes()).await,
                        ),
                        _ => {
                            let path = format!("/v1/groups/g?{}", query.replace(['#', ' '], ""));
                            (path.clone(), svc.get(&path).await)
                        }
                    };
                    // /get_reward answers an unscored item with 422 `unscored`; both are envelopes.
                    well_formed(&path, &r)?;
                    prop_assert_eq!(svc.get("/healthz").await.status, 200);
                    Ok(())
                })
            },
        )
        .unwrap();
    drop(policy);
}
