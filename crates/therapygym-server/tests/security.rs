//! The service is safe to expose: bearer-token authentication, no start beyond loopback
//! without it, an operator allow-list for the policy endpoints the rollout driver calls, no
//! upstream body echoed to a client, and `/metrics` labels a client cannot grow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use therapygym_server::{AuthToken, Server};
use therapygym_testkit::{Behavior, FakeServer};

const ECHO: &str = "scripted:echo";
const TOKEN: &str = "test-token-0123456789abcdef";

async fn get_with(svc: &Svc, path: &str, auth: Option<&str>) -> (u16, serde_json::Value) {
    let mut r = svc.client.get(format!("{}{path}", svc.base));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let www = r.headers().get("www-authenticate").cloned();
    let text = r.text().await.unwrap();
    if status == 401 {
        assert_eq!(www.unwrap(), "Bearer");
    }
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

#[tokio::test]
async fn every_route_but_healthz_needs_the_token() {
    let mut cfg = config(ECHO, ECHO);
    cfg.auth_token = Some(AuthToken::new(TOKEN).unwrap());
    let svc = start(cfg, false).await;
    assert_eq!(get_with(&svc, "/healthz", None).await.0, 200);
    for path in ["/v1/info", "/metrics", "/v1/groups/g", "/no/such/route"] {
        let (status, body) = get_with(&svc, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["kind"], "unauthorized", "{path}");
        let (status, _) = get_with(&svc, path, Some("Bearer wrong-token-0123456789abcdef")).await;
        assert_eq!(status, 401, "{path}");
        let (status, _) = get_with(&svc, path, Some(&format!("Basic {TOKEN}"))).await;
        assert_eq!(status, 401, "{path}");
    }
    let ok = format!("Bearer {TOKEN}");
    assert_eq!(get_with(&svc, "/v1/info", Some(&ok)).await.0, 200);
    let (status, metrics) = get_with(&svc, "/metrics", Some(&ok)).await;
    assert_eq!(status, 200);
    // Refused requests are counted, and the token is nowhere in what the service says.
    let text = metrics.as_str().unwrap();
    assert!(text.contains("status=\"401\""), "{text}");
    assert!(!text.contains(TOKEN));
    let posted = svc
        .client
        .post(format!("{}/v1/score", svc.base))
        .json(&json!({"items": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 401);
}

#[tokio::test]
async fn the_service_will_not_listen_beyond_loopback_without_a_token() {
    let server = Server::new(config(ECHO, ECHO)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let e = server
        .serve(listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("without authentication")
            && e.contains("--auth-token-file")
            && e.contains("THERAPYGYM_SERVE_TOKEN"),
        "{e}"
    );
    // With a token it serves (stopped at once here).
    let mut cfg = config(ECHO, ECHO);
    cfg.auth_token = Some(AuthToken::new(TOKEN).unwrap());
    let server = Server::new(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    server.serve(listener, async {}).await.unwrap();
}

#[tokio::test]
async fn rollouts_call_only_allowed_policy_endpoints_and_never_echo_them() {
    let policy = FakeServer::start(Behavior::Reply(Some("Hello.".into())))
        .await
        .unwrap();
    let (p, _) = profiles();
    let body = |id: &str, url: &str| {
        json!({"episode_id": id, "policy": {"base_url": url}, "task": {"profile_id": p, "seed": 1},
               "limits": {"max_therapist_turns": 1}})
    };
    // No allow-list: the route is off.
    let svc = start(config(ECHO, ECHO), false).await;
    let r = svc.post("/v1/rollouts", body("a", &policy.base_url)).await;
    assert_error(&r, 403, "rollouts_disabled");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--policy-url-allow")
    );
    assert_eq!(policy.state.request_count(), 0);

    let mut cfg = config(ECHO, ECHO);
    cfg.policy_url_allow = vec![policy.base_url.clone()];
    let svc = start(cfg, false).await;
    let port = policy
        .base_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/v1");
    for (i, bad) in [
        format!("http://127.0.0.1:{port}0/v1"),
        format!("http://127.0.0.1:{port}@169.254.169.254/v1"),
        format!("http://localhost:{port}/v1"),
        format!("{}0", policy.base_url),
    ]
    .iter()
    .enumerate()
    {
        let r = svc
            .post("/v1/rollouts", body(&format!("bad-{i}"), bad))
            .await;
        assert_error(&r, 403, "policy_url_not_allowed");
    }
    assert_eq!(
        policy.state.request_count(),
        0,
        "nothing outside the list was called"
    );
    let r = svc.post("/v1/rollouts", body("ok", &policy.base_url)).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The policy's error body stays out of the reply.
    policy.state.set(Behavior::Status {
        code: 400,
        times: usize::MAX,
    });
    let r = svc
        .post("/v1/rollouts", body("err", &policy.base_url))
        .await;
    assert_error(&r, 502, "policy_error");
    let msg = r.body.to_string();
    assert!(!msg.contains("injected failure"), "{msg}");
    assert!(msg.contains("HTTP 400"), "{msg}");
    // A key over plain http to another machine is refused before any call.
    let mut cfg = config(ECHO, ECHO);
    cfg.policy_url_allow = vec!["http://10.255.255.1:8000/v1".into()];
    let svc = start(cfg, false).await;
    let r = svc
        .post(
            "/v1/rollouts",
            json!({"policy": {"base_url": "http://10.255.255.1:8000/v1", "api_key": "sk-x"},
                   "task": {"profile_id": p, "seed": 1}}),
        )
        .await;
    assert_error(&r, 400, "bad_request");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("plain http")
    );
}

#[tokio::test]
async fn bad_allow_list_entries_stop_the_start() {
    let mut cfg = config(ECHO, ECHO);
    cfg.policy_url_allow = vec!["10.0.0.5:8000".into()];
    let e = Server::new(cfg).await.err().unwrap().to_string();
    assert!(e.contains("--policy-url-allow 10.0.0.5:8000"), "{e}");
}

#[tokio::test]
async fn client_chosen_methods_do_not_grow_the_metrics() {
    let svc = start(config(ECHO, ECHO), false).await;
    for i in 0..200 {
        let m = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        let r = svc
            .client
            .request(m, format!("{}/v1/info", svc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405);
    }
    let text = svc.metrics().await;
    assert!(!text.contains("M17"), "{text}");
    assert!(text.contains(
        "therapygym_http_requests_total{route=\"/v1/info\",method=\"other\",status=\"405\"} 200"
    ));
    let series = text
        .lines()
        .filter(|l| l.starts_with("therapygym_http_requests_total{"))
        .count();
    assert!(series <= 3, "{series} series");
}
