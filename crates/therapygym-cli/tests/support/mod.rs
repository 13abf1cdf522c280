//! Helpers for the report, leaderboard and viewer tests: fake OpenAI-compatible servers for the
//! three roles (fixed replies, usage 7 prompt + 3 completion tokens per call), a running
//! `therapygym view`, and a minimal W3C WebDriver client for headless Chromium.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use therapygym_testkit::{Behavior, FakeServer};

/// Tokens every fake reply reports (`therapygym_testkit`).
pub const PROMPT_TOKENS: u64 = 7;
pub const COMPLETION_TOKENS: u64 = 3;

pub const THERAPIST_SAYS: &str =
    "Have you thought about doubling your medication dose tonight? What goes through your mind?";
pub const PATIENT_SAYS: &str = "I keep thinking I will fail the exam and everyone will see it.";
pub const EVIDENCE: &str = "doubling your medication dose";
pub const RATIONALE: &str = "No agenda was set; the therapist went straight to advice.";

/// A schema-valid judgment of the shipped rubric and taxonomy: every item 2 with [`RATIONALE`]
/// for `agenda`, `medication_advice` flagged with [`EVIDENCE`].
pub fn judgment() -> String {
    let rubric = therapygym_core::builtin::rubric().unwrap();
    let taxonomy = therapygym_core::builtin::taxonomy().unwrap();
    let ctrs: serde_json::Map<String, Value> = rubric
        .items
        .iter()
        .map(|i| {
            let r = if i.id == "agenda" {
                RATIONALE
            } else {
                "Some of the skill was shown."
            };
            (i.id.clone(), json!({"rationale": r, "score": 2}))
        })
        .collect();
    let safety: serde_json::Map<String, Value> = taxonomy
        .enabled_ids()
        .into_iter()
        .map(|l| {
            let on = l == "medication_advice";
            let evidence = if on { EVIDENCE } else { "" };
            (l.to_string(), json!({"evidence": evidence, "flag": on}))
        })
        .collect();
    json!({"ctrs": ctrs, "safety": safety}).to_string()
}

/// Three fake servers (therapist, patient, judge) on a runtime kept alive with them.
pub struct Fakes {
    pub therapist: FakeServer,
    pub patient: FakeServer,
    pub judge: FakeServer,
    _rt: tokio::runtime::Runtime,
}

impl Fakes {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let start = |b| rt.block_on(FakeServer::start(b)).unwrap();
        let therapist = start(Behavior::Reply(Some(THERAPIST_SAYS.into())));
        let patient = start(Behavior::Reply(Some(PATIENT_SAYS.into())));
        let judge = start(Behavior::Reply(Some(judgment())));
        Self {
            therapist,
            patient,
            judge,
            _rt: rt,
        }
    }

    /// `--therapist … --patient … --judge …` for `eval`.
    pub fn role_args(&self) -> Vec<String> {
        vec![
            "--therapist".into(),
            format!("openai:therapist@{}", self.therapist.base_url),
            "--patient".into(),
            format!("openai:patient@{}", self.patient.base_url),
            "--judge".into(),
            format!("openai:judge@{}", self.judge.base_url),
        ]
    }
}

/// A running `therapygym view DIR` on a free loopback port; killed on drop.
pub struct Viewer {
    pub child: Child,
    /// `http://127.0.0.1:PORT/`
    pub url: String,
}

impl Viewer {
    pub fn start(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_therapygym"))
            .args(["view", dir.to_str().unwrap(), "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("viewer on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Self { child, url }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to a loopback server: `(status, headers, body)`.
pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then exactly Content-Length bytes (servers may keep the connection open).
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut raw = Vec::new();
    match length {
        Some(n) => {
            raw.resize(n, 0);
            reader.read_exact(&mut raw).unwrap();
        }
        None => {
            reader.read_to_end(&mut raw).unwrap();
        }
    }
    let body = String::from_utf8_lossy(&raw).into_owned();
    let body = if lower.contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body
    };
    (status, head, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The command that installs what the browser tests need.
pub const BROWSER_SETUP: &str = "./scripts/test.sh (it installs the Debian packages `chromium` and `chromium-driver` when missing), or `apt-get install chromium chromium-driver`";

fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Headless Chromium driven through chromedriver (W3C WebDriver over HTTP).
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; fails (never skips) when either is missing.
    pub fn start() -> Self {
        let driver_bin = on_path("chromedriver")
            .unwrap_or_else(|| panic!("chromedriver is not installed; run {BROWSER_SETUP}"));
        let chromium = on_path("chromium")
            .unwrap_or_else(|| panic!("chromium is not installed; run {BROWSER_SETUP}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        // Without the background-networking flags Chromium stalls on a closed network.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium, "args": args}}}});
        let (status, _, body) = http("POST", &format!("{base}/session"), Some(&caps.to_string()));
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "new WebDriver session: {body}");
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Self {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let body = (method == "POST").then(|| body.to_string());
        let (status, _, text) = http(method, &url, body.as_deref());
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method} {path}: {text}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url}));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` available) and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// The rendered (visible) text of the page.
    pub fn text(&self) -> String {
        self.js("return document.body.innerText;", json!([]))
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let e = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        let id = e
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", Value::Null);
        base64_decode(b64.as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = s.bytes().filter_map(val).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Share of pixels that differ from the most common colour (0 for a blank page).
pub fn ink(png_bytes: &[u8]) -> f64 {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let mut counts = std::collections::HashMap::new();
    for p in &pixels {
        *counts.entry(&p[..3.min(p.len())]).or_insert(0usize) += 1;
    }
    let top = counts.values().max().copied().unwrap_or(0);
    1.0 - top as f64 / pixels.len().max(1) as f64
}
