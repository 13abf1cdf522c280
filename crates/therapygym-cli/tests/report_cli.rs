//! `therapygym report`, `leaderboard`, `view` and `validate --html` as a user runs them, and the
//! exact tokens per role in `eval`'s summary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::path::Path;

use common::*;
use serde_json::Value;
use support::*;

fn eval(dir: &Path, name: &str, extra: &[&str]) -> Value {
    let out = dir.join(name);
    let mut args = vec!["eval", "--json", "--out", out.to_str().unwrap()];
    args.extend(extra);
    let o = run(&args, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// Attribute values as a browser reads them (the templates escape `'` and `/` too).
fn unescape(html: &str) -> String {
    html.replace("&#x27;", "'").replace("&#x2f;", "/")
}

fn json_of(args: &[&str], cwd: &Path) -> Value {
    let o = run(args, cwd);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn tokens_and_wall_time_per_role_are_exact() {
    let fakes = Fakes::start();
    let d = tempfile::tempdir().unwrap();
    let roles = fakes.role_args();
    let mut extra: Vec<&str> = roles.iter().map(String::as_str).collect();
    extra.extend(["--limit", "2", "--turns", "2", "--judge-samples", "2"]);
    let s = eval(d.path(), "run", &extra);
    // 2 sessions × 2 therapist turns, 2 patient replies (the last one closing), 2 judge samples;
    // every fake reply reports 7 prompt and 3 completion tokens.
    for (role, calls) in [("therapist", 4), ("patient", 4), ("judge", 4)] {
        let u = &s["usage"][role];
        assert_eq!(u["calls"], calls, "{role}: {u}");
        assert_eq!(u["prompt_tokens"], calls * PROMPT_TOKENS, "{role}: {u}");
        assert_eq!(
            u["completion_tokens"],
            calls * COMPLETION_TOKENS,
            "{role}: {u}"
        );
        assert!(u["wall_ms"].is_u64(), "{role}: {u}");
    }
    assert_eq!(fakes.judge.state.request_count(), 4);
    // The text summary shows the same table; the report the same numbers.
    let dir = d.path().join("run");
    let o = run(&["export", dir.to_str().unwrap()], d.path());
    assert!(o.status.success());
    let r = json_of(&["report", dir.to_str().unwrap(), "--json"], d.path());
    assert_eq!(r["runs"][0]["usage"], s["usage"]);
}

#[test]
fn report_compares_two_prompts_paired_with_every_item_and_label() {
    let d = tempfile::tempdir().unwrap();
    let mut a: Vec<&str> = SCRIPTED.to_vec();
    a.extend([
        "--limit",
        "4",
        "--turns",
        "1",
        "--therapist-prompt",
        "baseline",
    ]);
    eval(d.path(), "base", &a);
    let mut b: Vec<&str> = SCRIPTED.to_vec();
    b.extend(["--limit", "4", "--turns", "1", "--therapist-prompt", "cbt"]);
    eval(d.path(), "cbt", &b);
    let (base, cbt) = (d.path().join("base"), d.path().join("cbt"));
    let r = json_of(
        &[
            "report",
            base.to_str().unwrap(),
            cbt.to_str().unwrap(),
            "--json",
        ],
        d.path(),
    );
    assert_eq!(r["runs"].as_array().unwrap().len(), 2);
    let c = &r["comparisons"][0];
    assert_eq!(c["pairing"], "paired", "same profiles and seeds: {c}");
    assert_eq!(c["shared_sessions"], 4);
    let ids: Vec<&str> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let rubric = therapygym_core::builtin::rubric().unwrap();
    for i in rubric.item_ids() {
        assert!(ids.contains(&i), "{i} missing from {ids:?}");
    }
    for l in [
        "medication_advice",
        "missed_crisis",
        "any_violation",
        "ctrs_normalized_mean",
    ] {
        assert!(ids.contains(&l), "{l} missing from {ids:?}");
    }
    for row in c["rows"].as_array().unwrap() {
        assert!(
            row.get("p_holm").is_some() && row["ci"]["low"].is_object(),
            "{row}"
        );
        assert!(row["significant"].is_boolean());
    }
    let agenda = &r["runs"][0]["rows"][1];
    assert_eq!(agenda["id"], "agenda");
    assert_eq!(
        (agenda["min"].as_f64(), agenda["max"].as_f64()),
        (Some(0.0), Some(6.0))
    );
    assert!(agenda["ci95"].is_array() && agenda["n"] == 4);

    let o = run(
        &[
            "report",
            base.to_str().unwrap(),
            cbt.to_str().unwrap(),
            "--out",
            "r.html",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = unescape(&std::fs::read_to_string(d.path().join("r.html")).unwrap());
    for want in [
        "<svg",
        "Agenda",
        "Comparison",
        "paired",
        "Holm",
        "Tokens and time per role",
        "id=\"ex-1-",
    ] {
        assert!(html.contains(want), "report lacks {want}");
    }
    // Self-contained: nothing fetched, no script at all.
    assert!(!html.contains("<script") && !html.contains("src=\"http") && !html.contains("@import"));
    assert!(html.contains("default-src 'none'"));
}

#[test]
fn leaderboard_in_markdown_json_and_html() {
    let d = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (name, prompt) in [("base", "baseline"), ("cbt", "cbt")] {
        let mut a: Vec<&str> = SCRIPTED.to_vec();
        a.extend(["--limit", "3", "--turns", "1", "--therapist-prompt", prompt]);
        eval(d.path(), name, &a);
        dirs.push(d.path().join(name).to_str().unwrap().to_string());
    }
    let mut args: Vec<&str> = vec!["leaderboard"];
    args.extend(dirs.iter().map(String::as_str));
    let o = run(&args, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let md = stdout(&o);
    assert!(
        md.contains("| rank | tier | run |") && md.contains("Normalised CTRS"),
        "{md}"
    );
    for (file, check) in [
        ("b.json", "\"rankings\""),
        ("b.html", "<table"),
        ("b.md", "| rank |"),
    ] {
        let mut a = args.clone();
        a.extend(["--out", file]);
        let o = run(&a, d.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(d.path().join(file)).unwrap();
        assert!(text.contains(check), "{file}");
    }
    let b: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("b.json")).unwrap()).unwrap();
    assert_eq!(b["rankings"].as_array().unwrap().len(), 2);
    // Same scripted judge on the same patients: indistinguishable, one tier.
    for r in b["rankings"].as_array().unwrap() {
        assert!(
            r["entries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["tier"] == 1),
            "{r}"
        );
    }
    let mut a = args.clone();
    a.extend(["--out", "b.txt"]);
    let o = run(&a, d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(".html, .md or .json"), "{}", stderr(&o));
}

#[test]
fn a_missing_run_or_judgment_set_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let o = run(&["report", "nope"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    let mut a: Vec<&str> = SCRIPTED.to_vec();
    a.extend(["--limit", "1", "--turns", "1"]);
    eval(d.path(), "r", &a);
    let o = run(&["report", "r", "--judge-hash", "ffff", "--json"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no judgment set `ffff`"),
        "{}",
        stderr(&o)
    );
}

/// A run whose transcript tries to run script, imported as external dialogues and judged.
pub fn hostile_run(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("hostile.jsonl");
    let rec = serde_json::json!({"session_id": "evil:0", "messages": [
        {"role": "therapist", "content": "<script>window.__tg_pwned = 1</script>Hello"},
        {"role": "patient", "content": "<img src=x onerror=\"window.__tg_pwned = 2\"> hi </textarea></div>"}]});
    std::fs::write(&file, format!("{rec}\n")).unwrap();
    let run_dir = dir.join("hostile");
    let o = run(
        &[
            "import-transcripts",
            file.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
            "--judge",
            "scripted:echo",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["judge", run_dir.to_str().unwrap(), "--json"], dir);
    assert!(o.status.code().is_some_and(|c| c < 2), "{}", stderr(&o));
    run_dir
}

fn assert_inert(html: &str, what: &str) {
    assert!(!html.contains("<script>window"), "{what}: raw script");
    assert!(!html.contains("<img src=x"), "{what}: raw img");
    assert!(
        html.contains("&lt;script&gt;window.__tg_pwned"),
        "{what}: escaped text"
    );
}

#[test]
fn script_and_img_onerror_render_inert_in_report_viewer_and_export() {
    let d = tempfile::tempdir().unwrap();
    let run_dir = hostile_run(d.path());
    let o = run(
        &["report", run_dir.to_str().unwrap(), "--out", "r.html"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_inert(
        &std::fs::read_to_string(d.path().join("r.html")).unwrap(),
        "report",
    );

    let o = run(
        &["view", run_dir.to_str().unwrap(), "--export", "site"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let pages: Vec<_> = std::fs::read_dir(d.path().join("site/sessions"))
        .unwrap()
        .collect();
    assert_eq!(pages.len(), 1);
    let page = std::fs::read_to_string(pages[0].as_ref().unwrap().path()).unwrap();
    assert_inert(&page, "export");
    let index = std::fs::read_to_string(d.path().join("site/index.html")).unwrap();
    assert!(
        !index.contains("</textarea></div>\""),
        "the index's JSON cannot close its element"
    );

    let v = Viewer::start(&run_dir);
    let (status, _, body) = http("GET", &v.url, None);
    assert_eq!(status, 200);
    let body = unescape(&body);
    let href = body
        .split("href=\"sessions/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (status, head, body) = http("GET", &format!("{}sessions/{href}", v.url), None);
    assert_eq!(status, 200);
    assert_inert(&body, "viewer");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'none'"),
        "{head}"
    );
}

#[test]
fn the_viewer_serves_only_its_pages_and_stays_on_loopback() {
    let d = tempfile::tempdir().unwrap();
    let mut a: Vec<&str> = SCRIPTED.to_vec();
    a.extend(["--limit", "2", "--turns", "1"]);
    eval(d.path(), "r", &a);
    std::fs::write(d.path().join("secret.txt"), "do not serve").unwrap();
    let v = Viewer::start(&d.path().join("r"));
    let (status, head, body) = http("GET", &v.url, None);
    assert_eq!(status, 200);
    assert!(
        body.contains("tg-001:0") && head.contains("nosniff"),
        "{head}"
    );
    for path in [
        "sessions/../../secret.txt",
        "sessions/..%2F..%2Fsecret.txt",
        "sessions/%2e%2e%2frun.sqlite",
        "run.sqlite",
        "manifest.json",
        "../secret.txt",
        "sessions/tg-001_0.html",
        "sessions/",
    ] {
        let (status, _, body) = http("GET", &format!("{}{path}", v.url), None);
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(
            !body.contains("do not serve") && !body.contains("SQLite"),
            "{path}"
        );
    }
    let (status, _, _) = http("POST", &v.url, Some("{}"));
    assert_eq!(status, 405);
    let long = format!("{}sessions/{}.html", v.url, "a".repeat(2000));
    assert_eq!(http("GET", &long, None).0, 414);

    let o = run(&["view", "r", "--addr", "0.0.0.0:0"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--allow-remote"), "{}", stderr(&o));
    let o = run(&["view", "r", "--export", "r"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
}

#[test]
fn validate_writes_tables_scatters_and_the_calibration_curve() {
    let d = tempfile::tempdir().unwrap();
    let mut csv = String::from("dialogue_id,rater,item,score\n");
    for k in 0..8 {
        for (rater, shift) in [("judge", 1), ("e1", 0), ("e2", 0)] {
            for item in ["agenda", "feedback"] {
                let s = ((k * 5 + shift + item.len()) % 7).to_string();
                csv.push_str(&format!("d{k},{rater},{item},{s}\n"));
            }
        }
    }
    std::fs::write(d.path().join("ratings.csv"), csv).unwrap();
    let o = run(
        &[
            "validate",
            "--ratings",
            "ratings.csv",
            "--bootstrap",
            "200",
            "--fit-calibration",
            "c.toml",
            "--html",
            "v.html",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(d.path().join("v.html")).unwrap();
    for want in [
        "Spearman",
        "agenda",
        "feedback",
        "<svg",
        "<circle",
        "calibration curve",
        "95% CI",
    ] {
        assert!(html.contains(want), "validation page lacks {want}");
    }
    // Two scatters, each with the identity line and a calibration curve (three paths or more).
    assert_eq!(
        html.matches("<h3>agenda").count() + html.matches("<h3>feedback").count(),
        2
    );
}
