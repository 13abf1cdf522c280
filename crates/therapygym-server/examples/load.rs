//! Load generator (a benchmark, not a test): throughput and latency percentiles of
//! `POST /v1/score` and of episode steps, against the real service with scripted (instant)
//! patient and judge, so the figures are the service's own overhead plus the loopback HTTP.
//!
//! ```text
//! cargo run --release -p therapygym-server --example load -- [--seconds S] [--concurrency C]
//!     [--low-concurrency C] [--url http://HOST:PORT] [--store]
//! ```
//! Without `--url` the service runs in this process on its own runtime (2 worker threads) and
//! the load generator on another (2 threads), sharing the machine's cores as two processes
//! would. `--store` also writes finished episodes to a run directory (a temporary one).
//! Throughput is measured at `--concurrency` (32) clients, where latency is mostly queueing;
//! latency below saturation at `--low-concurrency` (4) clients.

use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use therapygym_models::RetryPolicy;
use therapygym_server::{Server, ServerConfig};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

struct Opts {
    seconds: f64,
    concurrency: usize,
    url: Option<String>,
    store: bool,
    /// Clients of the below-saturation latency phases.
    low_concurrency: usize,
}

fn opts() -> Res<Opts> {
    let mut o = Opts {
        seconds: 10.0,
        concurrency: 32,
        url: None,
        store: false,
        low_concurrency: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => o.seconds = args.next().ok_or("--seconds S")?.parse()?,
            "--concurrency" => o.concurrency = args.next().ok_or("--concurrency C")?.parse()?,
            "--url" => o.url = Some(args.next().ok_or("--url URL")?),
            "--store" => o.store = true,
            "--low-concurrency" => {
                o.low_concurrency = args.next().ok_or("--low-concurrency C")?.parse()?
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(o)
}

#[derive(Default)]
struct Sample {
    ok: Vec<Duration>,
    errors: u64,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn report(out: &mut impl Write, name: &str, mut s: Sample, wall: Duration) -> Res<Value> {
    s.ok.sort();
    let n = s.ok.len();
    let rate = n as f64 / wall.as_secs_f64();
    let v = json!({
        "name": name, "requests": n, "errors": s.errors, "seconds": wall.as_secs_f64(),
        "per_s": rate, "p50_ms": pct(&s.ok, 0.50), "p90_ms": pct(&s.ok, 0.90),
        "p99_ms": pct(&s.ok, 0.99), "max_ms": pct(&s.ok, 1.0),
    });
    writeln!(
        out,
        "{name:<34} {n:>7} req  {rate:>8.0}/s  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  errors {}",
        pct(&s.ok, 0.50),
        pct(&s.ok, 0.90),
        pct(&s.ok, 0.99),
        pct(&s.ok, 1.0),
        s.errors
    )?;
    Ok(v)
}

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> Res<(u16, Value)> {
    let r = c.post(url).json(body).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

/// C workers posting one-item `/v1/score` requests for `seconds`; `unique` transcripts defeat
/// the judgment cache (every request is a judge call).
async fn score_load(base: &str, o: &Opts, unique: bool, profile: &str) -> Sample {
    let client = therapygym_models::http_client().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let mut tasks = Vec::new();
    for w in 0..o.concurrency {
        let (client, url, profile) = (
            client.clone(),
            format!("{base}/v1/score"),
            profile.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut s = Sample::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let text = if unique {
                    format!("Worker {w}, request {i}: what would you like to focus on today?")
                } else {
                    "What would you like to focus on today?".to_string()
                };
                let body = json!({"items": [{"id": format!("w{w}-{i}"), "task": {"profile_id": profile, "seed": i % 7},
                    "messages": [{"role": "assistant", "content": text}, {"role": "user", "content": "My exams."}]}]});
                let t = Instant::now();
                match post(&client, &url, &body).await {
                    Ok((200, v)) if v["results"][0]["status"] == "scored" => s.ok.push(t.elapsed()),
                    _ => s.errors += 1,
                }
            }
            s
        }));
    }
    let mut all = Sample::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.ok.extend(s.ok);
            all.errors += s.errors;
        }
    }
    all
}

/// C workers playing 5-turn episodes; intermediate steps (one patient call each) and final
/// steps (closing reply + judge + run-store commit) are timed apart.
async fn episode_load(base: &str, o: &Opts, profile: &str) -> (Sample, Sample, Sample) {
    let client = therapygym_models::http_client().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let mut tasks = Vec::new();
    for w in 0..o.concurrency {
        let (client, base, profile) = (client.clone(), base.to_string(), profile.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut create, mut mid, mut fin) = (Sample::default(), Sample::default(), Sample::default());
            let mut e = 0u64;
            'episodes: while Instant::now() < deadline {
                e += 1;
                let id = format!("bench-{w}-{e}");
                let t = Instant::now();
                match post(&client, &format!("{base}/v1/episodes"), &json!({"episode_id": id, "task": {"profile_id": profile, "seed": e}})).await {
                    Ok((201, _)) => create.ok.push(t.elapsed()),
                    _ => {
                        create.errors += 1;
                        continue;
                    }
                }
                for turn in 1..=5u32 {
                    let body = json!({"assistant": {"role": "assistant", "content": format!("Worker {w}, episode {e}, turn {turn}: tell me more.")}, "turn": turn});
                    let t = Instant::now();
                    match post(&client, &format!("{base}/v1/episodes/{id}/step"), &body).await {
                        Ok((200, v)) if v["done"] == true => {
                            fin.ok.push(t.elapsed());
                            let _ = client.delete(format!("{base}/v1/episodes/{id}")).send().await;
                            continue 'episodes;
                        }
                        Ok((200, _)) => mid.ok.push(t.elapsed()),
                        _ => {
                            mid.errors += 1;
                            continue 'episodes;
                        }
                    }
                }
            }
            (create, mid, fin)
        }));
    }
    let (mut c, mut m, mut f) = (Sample::default(), Sample::default(), Sample::default());
    for t in tasks {
        if let Ok((a, b, d)) = t.await {
            c.ok.extend(a.ok);
            c.errors += a.errors;
            m.ok.extend(b.ok);
            m.errors += b.errors;
            f.ok.extend(d.ok);
            f.errors += d.errors;
        }
    }
    (c, m, f)
}

async fn health_load(base: &str, o: &Opts) -> Sample {
    let client = therapygym_models::http_client().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds.min(5.0));
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency {
        let (client, url) = (client.clone(), format!("{base}/healthz"));
        tasks.push(tokio::spawn(async move {
            let mut s = Sample::default();
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        s.ok.push(t.elapsed());
                    }
                    _ => s.errors += 1,
                }
            }
            s
        }));
    }
    let mut all = Sample::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.ok.extend(s.ok);
            all.errors += s.errors;
        }
    }
    all
}

fn main() -> Res<()> {
    let o = Arc::new(opts()?);
    let dir = tempfile::tempdir()?;
    // The service on its own runtime, as a separate process would be.
    let (base, _server_rt) = match &o.url {
        Some(u) => (u.trim_end_matches('/').to_string(), None),
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let cfg = ServerConfig {
                patient: "scripted:echo".into(),
                judge: "scripted:echo".into(),
                retry: RetryPolicy::none(),
                out: o.store.then(|| dir.path().join("run")),
                max_live_episodes: 1 << 20,
                patient_concurrency: 1024,
                judge_concurrency: 1024,
                ..ServerConfig::default()
            };
            let addr = rt.block_on(async {
                let server = Server::new(cfg).await?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let router = server.router();
                tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                });
                Ok::<_, Box<dyn Error + Send + Sync>>(addr)
            })?;
            (format!("http://{addr}"), Some(rt))
        }
    };
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let profile = therapygym_core::builtin::example_profiles()?.profiles[0]
        .id
        .clone();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "therapygym-server load: {} workers, {:.0} s per phase, {} cores, service {}",
        o.concurrency,
        o.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if o.url.is_some() {
            base.as_str()
        } else {
            "in-process (scripted patient and judge)"
        }
    )?;
    let mut results = Vec::new();
    client_rt.block_on(async {
        // Warm-up (connections, allocator, caches).
        let _ = score_load(
            &base,
            &Opts {
                seconds: 1.0,
                ..opts_clone(&o)
            },
            true,
            &profile,
        )
        .await;
        let s = health_load(&base, &o).await;
        results.push(report(
            &mut out,
            "GET /healthz (floor)",
            s,
            Duration::from_secs_f64(o.seconds.min(5.0)),
        )?);
        let t = Instant::now();
        let s = score_load(&base, &o, true, &profile).await;
        results.push(report(
            &mut out,
            "POST /v1/score (judge call)",
            s,
            t.elapsed(),
        )?);
        let t = Instant::now();
        let s = score_load(&base, &o, false, &profile).await;
        results.push(report(
            &mut out,
            "POST /v1/score (cache hit)",
            s,
            t.elapsed(),
        )?);
        // Latency below saturation: few clients, so queueing does not dominate.
        let low = Opts {
            concurrency: o.low_concurrency,
            ..opts_clone(&o)
        };
        let t = Instant::now();
        let s = score_load(&base, &low, true, &profile).await;
        let name = format!("POST /v1/score (judge call, C={})", o.low_concurrency);
        results.push(report(&mut out, &name, s, t.elapsed())?);
        let t = Instant::now();
        let (_, m, _) = episode_load(&base, &low, &profile).await;
        let name = format!("POST …/step (patient reply, C={})", o.low_concurrency);
        results.push(report(&mut out, &name, m, t.elapsed())?);
        let t = Instant::now();
        let (c, m, f) = episode_load(&base, &o, &profile).await;
        let wall = t.elapsed();
        results.push(report(&mut out, "POST /v1/episodes", c, wall)?);
        results.push(report(&mut out, "POST …/step (patient reply)", m, wall)?);
        results.push(report(
            &mut out,
            "POST …/step (final: judge+store)",
            f,
            wall,
        )?);
        Ok::<_, Box<dyn Error + Send + Sync>>(())
    })?;
    writeln!(out, "JSON={}", Value::Array(results))?;
    Ok(())
}

fn opts_clone(o: &Opts) -> Opts {
    Opts {
        seconds: o.seconds,
        concurrency: o.concurrency,
        url: o.url.clone(),
        store: o.store,
        low_concurrency: o.low_concurrency,
    }
}
