//! `therapygym serve` as a user (or a Python adapter) runs it: spawn the real binary on port 0,
//! read the bound address from stdout, play one episode over HTTP, stop it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The service as a child process; killed on drop.
struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str], cwd: &Path, startup: Duration) -> Serve {
    let mut child = bin()
        .arg("serve")
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn therapygym serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(startup)
        .expect("`listening on http://…` on stdout");
    Serve { child, addr }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for JSON routes.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(900))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn serve_plays_an_episode_and_stores_it_in_the_run() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("served");
    let svc = serve(
        &[
            "--patient",
            "scripted:echo",
            "--judge",
            "scripted:echo",
            "--out",
            run_dir.to_str().unwrap(),
        ],
        d.path(),
        Duration::from_secs(60),
    );
    let (status, h) = http(&svc.addr, "GET", "/healthz", None);
    assert_eq!((status, h["status"].as_str()), (200, Some("ok")));
    let (_, info) = http(&svc.addr, "GET", "/v1/info", None);
    assert_eq!(info["protocol"], 1);
    let profile = therapygym_core::builtin::example_profiles()
        .unwrap()
        .profiles[0]
        .id
        .clone();
    let (status, c) = http(
        &svc.addr,
        "POST",
        "/v1/episodes",
        Some(
            &json!({"episode_id": "cli-1", "task": {"profile_id": profile, "seed": 11}, "limits": {"max_therapist_turns": 2}}),
        ),
    );
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["messages"][0]["role"], "system");
    let mut last = Value::Null;
    for turn in 1..=2 {
        let (status, r) = http(
            &svc.addr,
            "POST",
            "/v1/episodes/cli-1/step",
            Some(
                &json!({"assistant": {"role": "assistant", "content": format!("Therapist turn {turn}.")}, "turn": turn}),
            ),
        );
        assert_eq!(status, 200, "{r}");
        last = r;
    }
    assert_eq!(last["done"], true);
    assert_eq!(last["status"], "scored");
    assert!(last["reward"].is_number());
    let (status, e) = http(
        &svc.addr,
        "POST",
        "/v1/episodes/nope/step",
        Some(&json!({"assistant": {"content": "x"}, "turn": 1})),
    );
    assert_eq!(
        (status, e["error"]["kind"].as_str()),
        (404, Some("episode_not_found"))
    );
    drop(svc);

    // The run is an `eval`-format run: export reads it.
    assert_eq!(
        count(
            &run_dir,
            "SELECT COUNT(*) FROM sessions WHERE id = 'cli-1' AND status = 'completed'"
        ),
        1
    );
    let o = run(
        &["export", run_dir.to_str().unwrap(), "--format", "jsonl"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("cli-1"));
}

#[test]
fn serve_refuses_bad_settings_with_exit_code_2() {
    let d = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "serve",
            "--patient",
            "llama3",
            "--judge",
            "scripted:echo",
            "--addr",
            "127.0.0.1:0",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid model spec `llama3`"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &[
            "serve",
            "--reward-unscored",
            "neutral",
            "--reward-neutral-value",
            "half",
            "--addr",
            "127.0.0.1:0",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// One 1-turn episode with the embedded model as patient and judge. Token budgets are tiny so it
/// takes about a minute on an idle 2-core machine: the judge's reply is then usually cut at
/// max tokens, which exercises the unscored path (reward null, reason `truncated`) end to end.
#[cfg(feature = "model-tests")]
#[test]
fn serve_with_the_embedded_model() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("embedded");
    let svc = serve(
        &[
            "--patient",
            "embedded",
            "--judge",
            "embedded",
            "--patient-max-tokens",
            "16",
            "--judge-max-tokens",
            "48",
            "--judge-rationale-chars",
            "8",
            "--safety-labels",
            "missed_crisis",
            "--judge-retries",
            "0",
            "--out",
            run_dir.to_str().unwrap(),
        ],
        d.path(),
        Duration::from_secs(180),
    );
    let started = std::time::Instant::now();
    let profile = therapygym_core::builtin::example_profiles()
        .unwrap()
        .profiles[0]
        .id
        .clone();
    let (status, c) = http(
        &svc.addr,
        "POST",
        "/v1/episodes",
        Some(
            &json!({"episode_id": "emb-1", "task": {"profile_id": profile, "seed": 3}, "limits": {"max_therapist_turns": 1}}),
        ),
    );
    assert_eq!(status, 201, "{c}");
    let (status, r) = http(
        &svc.addr,
        "POST",
        "/v1/episodes/emb-1/step",
        Some(
            &json!({"assistant": {"role": "assistant", "content": "Hello, what would you like to focus on today?"}, "turn": 1}),
        ),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["done"], true);
    assert!(
        r["info"]["closing_patient_reply"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{r}"
    );
    // The 135M judge may or may not produce a valid judgment; either way no reward is invented.
    match r["status"].as_str() {
        Some("scored") => assert!(r["reward"].is_number()),
        Some("unscored") => {
            assert!(r["reward"].is_null());
            assert!(r["info"]["unscored_reason"].is_string());
        }
        other => panic!("status {other:?}: {r}"),
    }
    drop(svc);
    assert_eq!(
        count(
            &run_dir,
            "SELECT COUNT(*) FROM judgments WHERE session_id = 'emb-1'"
        ),
        1
    );
    eprintln!(
        "embedded episode: {} in {:.0} s",
        r["status"],
        started.elapsed().as_secs_f64()
    );
}
