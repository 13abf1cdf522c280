//! Starts the real service in-process on 127.0.0.1:0 with scripted (or fake-server) models.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use therapygym_models::RetryPolicy;
use therapygym_server::{Server, ServerConfig};

pub struct Svc {
    pub base: String,
    pub client: reqwest::Client,
    pub run_dir: Option<PathBuf>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Svc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Scripted models, no retries, a fast sweeper, a run store in a temporary directory.
pub fn config(patient: &str, judge: &str) -> ServerConfig {
    ServerConfig {
        patient: patient.into(),
        judge: judge.into(),
        retry: RetryPolicy::none(),
        sweep_interval: Duration::from_millis(100),
        ..ServerConfig::default()
    }
}

pub async fn start(mut cfg: ServerConfig, store: bool) -> Svc {
    let dir = tempfile::tempdir().unwrap();
    if store {
        cfg.out = Some(dir.path().join("run"));
    }
    let server = Server::new(cfg).await.unwrap();
    let run_dir = server.run_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Svc {
        base: format!("http://{addr}"),
        client: therapygym_models::http_client().unwrap(),
        run_dir,
        _dir: dir,
        task,
    }
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Svc {
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        into(r).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Resp {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        into(r).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        into(r).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        let r = self
            .client
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        into(r).await
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates an episode with a therapist opening.
    pub async fn create(&self, id: &str, profile: &str, seed: u64) -> Resp {
        self.post(
            "/v1/episodes",
            json!({"episode_id": id, "task": {"profile_id": profile, "seed": seed}}),
        )
        .await
    }

    pub async fn step(&self, id: &str, turn: u32, content: &str) -> Resp {
        self.post(
            &format!("/v1/episodes/{id}/step"),
            json!({"assistant": {"role": "assistant", "content": content}, "turn": turn, "finish_reason": "stop"}),
        )
        .await
    }

    /// Plays an episode to its end with `turns(t)` as the therapist's turn t; returns the
    /// final step response.
    pub async fn play(&self, id: &str, turns: u32, content: impl Fn(u32) -> String) -> Resp {
        for t in 1..=turns {
            let r = self.step(id, t, &content(t)).await;
            assert_eq!(r.status, 200, "{}", r.body);
            if r.body["done"] == true {
                return r;
            }
        }
        panic!("episode {id} did not end within {turns} turns");
    }
}

async fn into(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        body,
        headers,
    }
}

/// Asserts the error envelope (`docs/serve.md`, "Conventions").
pub fn assert_error(r: &Resp, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let e = &r.body["error"];
    assert_eq!(e["kind"], kind, "{}", r.body);
    assert!(e["retryable"].is_boolean(), "{}", r.body);
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
}

pub fn sqlite(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("run.sqlite")).unwrap()
}

pub fn count(dir: &Path, sql: &str) -> i64 {
    sqlite(dir).query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The first training profile and the first held-out one.
pub fn profiles() -> (String, String) {
    let train = therapygym_core::builtin::example_profiles()
        .unwrap()
        .profiles[0]
        .id
        .clone();
    let held = therapygym_core::builtin::holdout_profiles()
        .unwrap()
        .profiles[0]
        .id
        .clone();
    (train, held)
}
