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
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    http_raw(addr, method, path, payload.as_bytes())
}

/// [`http`] with any bytes as the body (malformed requests).
fn http_raw(addr: &str, method: &str, path: &str, payload: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(900))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )
    .unwrap();
    s.write_all(payload).unwrap();
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

/// Waits for a fault-injection pause point to be reached (its ready file appears).
#[cfg(feature = "fault-injection")]
fn wait_for(ready: &Path, child: &mut Child) {
    let start = std::time::Instant::now();
    while !ready.is_file() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process ended before its pause point"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "pause point not reached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process SIGKILLed between the store's tables and its manifest (the pause point in
/// `RunStore::create`, feature `fault-injection`) leaves a directory that `--resume` explains
/// and that the same `--out` creates again: `serve` creates its store in place, `eval` in a
/// staging directory beside the target.
#[cfg(feature = "fault-injection")]
#[test]
fn a_run_killed_while_its_store_is_created_can_be_created_again() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("served");
    let out = run_dir.to_str().unwrap();
    let killed = |args: &[&str], name: &str| {
        let ready = d.path().join(name);
        let mut child = bin()
            .args(args)
            .env("THERAPYGYM_FAULT_PAUSE", "store-create-before-manifest")
            .env("THERAPYGYM_FAULT_READY", &ready)
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&ready, &mut child);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    };
    let roles = ["--patient", "scripted:echo", "--judge", "scripted:echo"];
    let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--out", out];
    args.extend(roles);
    killed(&args, "serve-ready");
    assert!(run_dir.join("run.sqlite").is_file());
    let o = run(&["eval", "--resume", out], d.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("creation was interrupted") && stderr(&o).contains("same `--out`"),
        "{}",
        stderr(&o)
    );
    let mut again = roles.to_vec();
    again.extend(["--out", out]);
    let svc = serve(&again, d.path(), Duration::from_secs(60));
    assert_eq!(http(&svc.addr, "GET", "/healthz", None).0, 200);
    drop(svc);
    assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM manifest"), 1);
    assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM attempts"), 1);

    let eval_dir = d.path().join("evaluated");
    let eval_out = eval_dir.to_str().unwrap();
    let mut args = vec!["eval", "--limit", "1", "--turns", "1", "--out", eval_out];
    args.extend(SCRIPTED);
    killed(&args, "eval-ready");
    let o = run(&args, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        count(
            &eval_dir,
            "SELECT COUNT(*) FROM sessions WHERE status = 'completed'"
        ),
        1
    );
}

/// The service's resident set size (`VmRSS` of /proc/PID/status), in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The RSS bound of the load test: measured near 40 MB on the 2-core machine (release and
/// debug builds alike), so 256 MB leaves room for allocator noise and catches a leak or an
/// unbounded buffer under this load.
const LOAD_RSS_BOUND_KB: u64 = 256 * 1024;

/// `therapygym_http_requests_total` and the outcome counters of a `/metrics` page.
fn metric_lines(page: &str) -> std::collections::BTreeMap<String, u64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// What the clients saw: requests by (route, method, status) and how every scoring ended.
#[derive(Default)]
struct Seen {
    requests: std::collections::BTreeMap<(String, &'static str, u16), u64>,
    scored: u64,
    unscored: std::collections::BTreeMap<String, u64>,
    episodes_finished: u64,
}

impl Seen {
    fn request(&mut self, route: &str, method: &'static str, status: u16) {
        *self
            .requests
            .entry((route.to_string(), method, status))
            .or_default() += 1;
    }

    /// One scoring outcome (a final step or a `/v1/score` result): scored with a reward, or
    /// unscored with a reason and a null reward.
    fn outcome(&mut self, status: &Value, reward: &Value, reason: &Value) {
        match status.as_str() {
            Some("scored") => {
                assert!(reward.is_number(), "scored without a reward");
                self.scored += 1;
            }
            Some("unscored") => {
                assert!(reward.is_null(), "an unscored reward must be null");
                let reason = reason.as_str().expect("an unscored reason");
                *self.unscored.entry(reason.to_string()).or_default() += 1;
            }
            other => panic!("neither scored nor unscored: {other:?}"),
        }
    }
}

/// Asserts the error envelope of a refused request.
fn refused(status: u16, body: &Value, want: u16) {
    assert_eq!(status, want, "{body}");
    assert!(body["error"]["kind"].is_string(), "{body}");
}

/// Several clients send a bounded mix of valid and malformed requests while the judge answers
/// 429s, 500s, garbage, refusals, out-of-range scores, slow replies and hangs in turn: the service
/// stays up, its RSS stays under [`LOAD_RSS_BOUND_KB`], every valid episode ends scored or
/// explicitly unscored, and `/metrics` and the run store count exactly what the clients saw.
#[test]
fn serve_under_load_and_a_faulty_judge_stays_up_and_counts_what_clients_saw() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 12;
    // Two unusable replies in a row (malformed, then a refusal to the re-ask) make some sample
    // unscored however the clients' calls interleave.
    let judge = "scripted:cycle:rate_limit:0,echo,http_500,malformed_json,refusal,slow:30,echo,hang,echo,out_of_range";
    let d = tempfile::tempdir().unwrap();
    let run_dir = d.path().join("load");
    let svc = serve(
        &[
            "--patient",
            "scripted:echo",
            "--judge",
            judge,
            "--judge-retries",
            "1",
            // A hung judge call is abandoned after a second and retried (`hang` in the cycle).
            "--judge-timeout-s",
            "1",
            "--out",
            run_dir.to_str().unwrap(),
        ],
        d.path(),
        Duration::from_secs(60),
    );
    let pid = svc.child.id();
    let profiles: Vec<String> = therapygym_core::builtin::example_profiles()
        .unwrap()
        .profiles
        .iter()
        .take(4)
        .map(|p| p.id.clone())
        .collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, seen, profiles) = (svc.addr.clone(), Arc::clone(&seen), profiles.clone());
            std::thread::spawn(move || {
                let record = |route: &str, method, status| {
                    seen.lock().unwrap().request(route, method, status);
                };
                for i in 0..ROUNDS {
                    let profile = &profiles[(c + i) % profiles.len()];
                    // A distinct seed per episode, so judge calls are not cache hits.
                    let seed = (c * 1000 + i) as u64;
                    match (c + i) % 4 {
                        0 | 1 => {
                            let id = format!("load-{c}-{i}");
                            let (status, body) = http(
                                &addr,
                                "POST",
                                "/v1/episodes",
                                Some(&json!({"episode_id": id, "task": {"profile_id": profile, "seed": seed},
                                             "limits": {"max_therapist_turns": 2}})),
                            );
                            record("/v1/episodes", "POST", status);
                            if status != 201 {
                                // Refused while the judge's circuit is open: said so, not lost.
                                refused(status, &body, 503);
                                continue;
                            }
                            let mut last = Value::Null;
                            for turn in 1..=2 {
                                let (status, body) = http(
                                    &addr,
                                    "POST",
                                    &format!("/v1/episodes/{id}/step"),
                                    Some(&json!({"assistant": {"role": "assistant", "content": format!("Turn {turn}: what went through your mind?")}, "turn": turn})),
                                );
                                record("/v1/episodes/{id}/step", "POST", status);
                                assert_eq!(status, 200, "{body}");
                                last = body;
                                if last["done"] == true {
                                    break;
                                }
                            }
                            assert_eq!(last["done"], true, "{last}");
                            let mut s = seen.lock().unwrap();
                            s.outcome(&last["status"], &last["reward"], &last["info"]["unscored_reason"]);
                            s.episodes_finished += 1;
                        }
                        2 => {
                            let item = |n: u64| json!({"id": format!("s-{c}-{i}-{n}"), "task": {"profile_id": profile, "seed": seed + n},
                                "messages": [{"role": "assistant", "content": "Hi, what brings you here?"}, {"role": "user", "content": "I can't sleep."}]});
                            let (status, body) = http(
                                &addr,
                                "POST",
                                "/v1/score",
                                Some(&json!({"items": [item(0), item(1)]})),
                            );
                            record("/v1/score", "POST", status);
                            if status != 200 {
                                refused(status, &body, 503);
                                continue;
                            }
                            let mut s = seen.lock().unwrap();
                            for r in body["results"].as_array().unwrap() {
                                s.outcome(&r["status"], &r["reward"], &r["unscored_reason"]);
                            }
                        }
                        _ => {
                            let (route, method, path, payload, want): (&str, &'static str, String, &[u8], u16) = match i % 5 {
                                0 => ("/v1/episodes", "POST", "/v1/episodes".into(), b"{\"episode_id\": ", 400),
                                1 => ("/v1/episodes/{id}/step", "POST", format!("/v1/episodes/none-{c}-{i}/step"), b"{\"assistant\": {\"content\": \"x\"}, \"turn\": 1}", 404),
                                2 => ("/v1/score", "POST", "/v1/score".into(), b"[1, 2]", 400),
                                3 => ("/v1/groups/{group_id}", "GET", "/v1/groups/g?wait_s=-1".into(), b"", 400),
                                _ => ("unmatched", "GET", "/nope".into(), b"", 404),
                            };
                            let (status, body) = http_raw(&addr, method, &path, payload);
                            record(route, method, status);
                            refused(status, &body, want);
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = started.elapsed();
    let page = {
        let mut s = TcpStream::connect(&svc.addr).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    };
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let mut child = svc;
    assert!(
        child.child.try_wait().unwrap().is_none(),
        "the service exited"
    );
    assert_eq!(http(&child.addr, "GET", "/healthz", None).0, 200);
    let peak_kb = peak.load(Ordering::SeqCst);
    eprintln!(
        "load test: {} requests in {elapsed:?}, peak RSS {} kB",
        seen.lock().unwrap().requests.values().sum::<u64>(),
        peak_kb
    );
    assert!(
        peak_kb > 0 && peak_kb < LOAD_RSS_BOUND_KB,
        "peak RSS {peak_kb} kB"
    );

    let m = metric_lines(&page);
    let seen = seen.lock().unwrap();
    for ((route, method, status), n) in &seen.requests {
        let key = format!(
            "therapygym_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
        );
        assert_eq!(m.get(&key), Some(n), "{key}\n{page}");
    }
    let served: u64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("therapygym_http_requests_total{"))
        .filter(|(k, _)| !k.contains("route=\"/metrics\""))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(served, seen.requests.values().sum::<u64>(), "{page}");
    assert_eq!(
        m.get("therapygym_scored_total"),
        Some(&seen.scored),
        "{page}"
    );
    for (reason, n) in &seen.unscored {
        let key = format!("therapygym_unscored_total{{reason=\"{reason}\"}}");
        assert_eq!(m.get(&key), Some(n), "{key}\n{page}");
    }
    assert_eq!(
        m.get("therapygym_episodes_total{event=\"finished\"}"),
        Some(&seen.episodes_finished),
        "{page}"
    );
    // The faults were exercised: some scorings went through, some were explicitly unscored.
    assert!(seen.scored > 0 && !seen.unscored.is_empty(), "{page}");
    // Every finished episode is in the run store with its judgment.
    let finished = i64::try_from(seen.episodes_finished).unwrap();
    assert_eq!(
        count(
            &run_dir,
            "SELECT COUNT(*) FROM sessions WHERE status = 'completed'"
        ),
        finished
    );
    assert_eq!(count(&run_dir, "SELECT COUNT(*) FROM judgments"), finished);
    child.child.kill().unwrap();
}
