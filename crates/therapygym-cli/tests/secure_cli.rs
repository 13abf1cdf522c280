//! Secrets reach their own endpoint and nothing else (`docs/serve.md`, "Security";
//! `docs/handling-errors.md`, "Keys and credentials"), and structured output is negotiated
//! with each kind of server, as a user runs the binary.
//!
//! Every role gets its own secret — keys named with `#key=VAR`, credentials inside a URL, the
//! global key variables, the service token — then `eval`, `judge`, `export`, `serve` and `chat`
//! run with `--debug`, and every file of the run directories, every line they print and
//! `/metrics` are searched for each secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use therapygym_testkit::{Behavior, FakeServer, Formats};

const THERAPIST_KEY: &str = "sk-therapist-7f3a9c1e55";
const JUDGE_KEY: &str = "sk-judge-0c44e1d2aa";
const REJUDGE_KEY: &str = "sk-rejudge-2d9f81b3cc";
const GLOBAL_KEY: &str = "sk-global-b8a6f3e9dd";
const URL_USER: &str = "patient-user-9e2c";
const URL_PASSWORD: &str = "pw-patient-51d0b7ee";
const SERVE_TOKEN: &str = "serve-token-4be1a9d07c3f5e68";

fn with_secrets(c: &mut Command) -> &mut Command {
    c.env("THERAPIST_KEY", THERAPIST_KEY)
        .env("JUDGE_KEY", JUDGE_KEY)
        .env("REJUDGE_KEY", REJUDGE_KEY)
        .env("THERAPYGYM_API_KEY", GLOBAL_KEY)
        .env("OPENAI_API_KEY", GLOBAL_KEY)
        .env("THERAPYGYM_SERVE_TOKEN", SERVE_TOKEN)
}

fn base64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn secrets() -> Vec<String> {
    let mut v: Vec<String> = [
        THERAPIST_KEY,
        JUDGE_KEY,
        REJUDGE_KEY,
        GLOBAL_KEY,
        URL_USER,
        URL_PASSWORD,
        SERVE_TOKEN,
    ]
    .map(String::from)
    .to_vec();
    v.push(base64(&format!("{URL_USER}:{URL_PASSWORD}")));
    v
}

/// Fails naming the secret and where it was found.
fn assert_clean(what: &str, bytes: &[u8]) {
    for s in secrets() {
        let hit = bytes.windows(s.len()).position(|w| w == s.as_bytes());
        if let Some(at) = hit {
            let from = at.saturating_sub(120);
            let ctx = String::from_utf8_lossy(&bytes[from..(at + s.len() + 40).min(bytes.len())]);
            panic!("secret `{s}` found in {what}: …{ctx}…");
        }
    }
}

fn assert_dir_clean(dir: &Path) -> usize {
    let mut files = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files += assert_dir_clean(&p);
        } else {
            assert_clean(&p.display().to_string(), &std::fs::read(&p).unwrap());
            files += 1;
        }
    }
    files
}

async fn output(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

fn checked(what: &str, o: &Output, codes: &[i32]) {
    assert_clean(&format!("{what} stdout"), &o.stdout);
    assert_clean(&format!("{what} stderr"), &o.stderr);
    assert!(
        codes.contains(&o.status.code().unwrap_or(-1)),
        "{what}: {}\n{}",
        o.status,
        stderr(o)
    );
}

/// `serve` with the secrets, one episode over HTTP, `/metrics`; returns the run directory.
async fn serve_an_episode(dir: &Path, patient: &str, judge: &str) -> PathBuf {
    let out = dir.join("served");
    let mut c = bin();
    with_secrets(&mut c)
        .args(["--debug", "serve", "--addr", "127.0.0.1:0", "--turns", "1"])
        .args(["--patient", patient, "--judge", judge, "--out"])
        .arg(&out)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let out_thread = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening on http://") {
                let _ = tx.send(a.trim().to_string());
            }
            all.push(line);
        }
        all.join("\n")
    });
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("`listening on` from serve");
    let http = therapygym_models::http_client().unwrap();
    let base = format!("http://{addr}");
    let profile = therapygym_core::builtin::example_profiles()
        .unwrap()
        .profiles[0]
        .id
        .clone();
    let call = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(SERVE_TOKEN)
            .json(&body)
            .send()
    };
    let r = call(
        "/v1/episodes",
        json!({"episode_id": "e1", "task": {"profile_id": profile, "seed": 3}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let r = call(
        "/v1/episodes/e1/step",
        json!({"assistant": {"role": "assistant", "content": "What brings you here?"}, "turn": 1}),
    )
    .await
    .unwrap();
    let step: Value = r.json().await.unwrap();
    assert_eq!(step["done"], true, "{step}");
    assert_clean("a step reply", step.to_string().as_bytes());
    let get = |path: &str| {
        let req = http.get(format!("{base}{path}")).bearer_auth(SERVE_TOKEN);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let metrics = get("/metrics").await;
    assert!(metrics.contains("therapygym_scored_total 1"), "{metrics}");
    assert_clean("/metrics", metrics.as_bytes());
    let info = get("/v1/info").await;
    assert_clean("/v1/info", info.as_bytes());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "serve: {status}");
    assert_clean("serve stdout", out_thread.join().unwrap().as_bytes());
    let err = err_thread.join().unwrap();
    assert!(
        String::from_utf8_lossy(&err).contains("DEBUG"),
        "serve ran with --debug"
    );
    assert_clean("serve stderr", &err);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_only_their_own_endpoint_and_no_file_log_or_metric() {
    let therapist = FakeServer::start(Behavior::Reply(Some("How have you been sleeping?".into())))
        .await
        .unwrap();
    let patient = FakeServer::start(Behavior::Reply(Some("Badly. Exams scare me.".into())))
        .await
        .unwrap();
    let judge = FakeServer::start(Behavior::Reply(None)).await.unwrap();
    judge.state.set_formats(Formats::Honours);
    let t_spec = format!("openai:t@{}#key=THERAPIST_KEY", therapist.base_url);
    let p_spec = format!(
        "openai:p@{}",
        patient
            .base_url
            .replace("http://", &format!("http://{URL_USER}:{URL_PASSWORD}@"))
    );
    let j_spec = format!("openai:j@{}#key=JUDGE_KEY", judge.base_url);
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");

    let mut c = bin();
    with_secrets(&mut c)
        .args([
            "--debug",
            "eval",
            "--limit",
            "1",
            "--turns",
            "1",
            "--concurrency",
            "1",
        ])
        .args([
            "--therapist",
            &t_spec,
            "--patient",
            &p_spec,
            "--judge",
            &j_spec,
            "--out",
        ])
        .arg(&run)
        .current_dir(d.path());
    let o = output(c).await;
    checked("eval", &o, &[0]);
    assert!(
        stdout(&o).contains("unscored rate: 0.000"),
        "{}",
        stdout(&o)
    );

    let mut c = bin();
    let rejudge = format!("openai:j2@{}#key=REJUDGE_KEY", judge.base_url);
    with_secrets(&mut c)
        .args(["--debug", "judge"])
        .arg(&run)
        .args(["--judge", &rejudge])
        .current_dir(d.path());
    checked("judge", &output(c).await, &[0]);

    for (format, file) in [("jsonl", "export.jsonl"), ("csv", "export.csv")] {
        let mut c = bin();
        with_secrets(&mut c)
            .args(["--debug", "export"])
            .arg(&run)
            .args(["--format", format, "--out"])
            .arg(run.join(file))
            .current_dir(d.path());
        checked("export", &output(c).await, &[0]);
    }

    // Errors that quote a spec or refuse to send credentials mask them too.
    for bad in [
        format!("openai:@http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:9/v1"),
        format!("openai:m@http://{URL_USER}:{URL_PASSWORD}@10.255.255.1/v1"),
        "openai:m@http://10.255.255.1/v1#key=THERAPIST_KEY".to_string(),
    ] {
        let mut c = bin();
        with_secrets(&mut c)
            .args(["--debug", "chat", "--model", &bad, "hi"])
            .current_dir(d.path());
        let o = output(c).await;
        checked("chat with a refused spec", &o, &[2]);
    }

    let served = serve_an_episode(d.path(), &p_spec, &j_spec).await;

    // Nothing written anywhere holds a secret: run stores (SQLite, WAL), manifests, exports.
    let files = assert_dir_clean(d.path());
    assert!(files >= 6, "{files} files searched");
    assert!(served.join("manifest.json").is_file() && run.join("export.csv").is_file());

    // Each endpoint got its own credential and nothing else; the global key went nowhere.
    let headers = |f: &FakeServer| f.state.auth_headers.lock().unwrap().clone();
    let t = headers(&therapist);
    assert!(
        !t.is_empty() && t.iter().all(|h| h == &format!("Bearer {THERAPIST_KEY}")),
        "{t:?}"
    );
    let basic = format!("Basic {}", base64(&format!("{URL_USER}:{URL_PASSWORD}")));
    let p = headers(&patient);
    assert!(!p.is_empty() && p.iter().all(|h| h == &basic), "{p:?}");
    let j = headers(&judge);
    let own = [
        format!("Bearer {JUDGE_KEY}"),
        format!("Bearer {REJUDGE_KEY}"),
    ];
    assert!(j.iter().all(|h| own.contains(h)), "{j:?}");
    assert!(j.contains(&own[0]) && j.contains(&own[1]), "{j:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_negotiates_structured_output_and_says_which_mode_in_debug() {
    let d = tempfile::tempdir().unwrap();
    let schema = d.path().join("mood.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "required": ["mood"], "additionalProperties": false,
            "properties": {"mood": {"type": "integer", "minimum": 3, "maximum": 10}}}"#,
    )
    .unwrap();
    for (formats, mode) in [
        (Formats::Honours, "json_schema"),
        (Formats::RejectsJsonSchema, "json_object"),
        (Formats::Ignores, "prompt"),
    ] {
        let s = FakeServer::start(Behavior::Reply(None)).await.unwrap();
        s.state.set_formats(formats);
        let mut c = bin();
        c.args([
            "--debug",
            "chat",
            "--model",
            &format!("openai:m@{}", s.base_url),
        ])
        .arg("--json-schema")
        .arg(&schema)
        .arg("Rate your mood.")
        .current_dir(d.path());
        let o = output(c).await;
        assert!(o.status.success(), "{formats:?}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), r#"{"mood":3}"#, "{formats:?}");
        let log = stderr(&o);
        let said = log
            .lines()
            .rfind(|l| l.contains("structured output"))
            .unwrap_or_default();
        assert!(
            said.contains(&format!("mode=\"{mode}\"")),
            "{formats:?}: {log}"
        );
    }
}
