//! The report, the viewer and its static export in headless Chromium, as a person uses them:
//! open the page, read an item name, a rationale and the highlighted safety evidence, click into
//! a session, filter the list, and check that what the screen shows is not blank. Model text
//! with `<script>` and `<img onerror>` must show as text and run nothing.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`./scripts/test.sh` installs
//! them); without them this test fails and says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::path::Path;

use common::*;
use serde_json::json;
use support::*;

fn file_url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

/// A page a person can read: text on it, and pixels that are not all one colour.
fn assert_visible(b: &Browser, what: &str) {
    let shot = b.screenshot();
    let ink = ink(&shot);
    assert!(ink > 0.02, "{what}: the screenshot is blank (ink {ink:.4})");
}

fn assert_session_page(b: &Browser, what: &str) {
    let text = b.text();
    for want in [
        "Agenda",
        RATIONALE,
        "Medication or medical advice",
        "violation",
    ] {
        assert!(
            text.contains(want),
            "{what}: no `{want}` in the page:\n{text}"
        );
    }
    let marked = b.js(
        "return Array.from(document.querySelectorAll('mark.ev')).map(m => m.innerText);",
        json!([]),
    );
    assert!(
        marked
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str() == Some(EVIDENCE)),
        "{what}: evidence not highlighted: {marked}"
    );
    assert_visible(b, what);
}

fn assert_nothing_ran(b: &Browser, what: &str) {
    let pwned = b.js("return window.__tg_pwned === undefined;", json!([]));
    assert_eq!(pwned, json!(true), "{what}: model text ran as script");
    let text = b.text();
    assert!(
        text.contains("<script>window.__tg_pwned = 1</script>Hello")
            && text.contains("<img src=x onerror="),
        "{what}: the markup is not shown as text:\n{text}"
    );
}

#[test]
fn report_viewer_and_export_in_headless_chromium() {
    let browser = Browser::start();
    let fakes = Fakes::start();
    let d = tempfile::tempdir().unwrap();
    let roles = fakes.role_args();
    let run_dir = d.path().join("run");
    let mut args: Vec<&str> = vec!["eval", "--out", run_dir.to_str().unwrap()];
    args.extend(roles.iter().map(String::as_str));
    args.extend(["--limit", "3", "--turns", "1", "--max-unscored-rate", "1"]);
    let o = run(&args, d.path());
    assert!(o.status.success(), "{}", stderr(&o));

    // The report: item names, the rationale and the highlighted evidence of an example session.
    let o = run(&["report", "run", "--out", "report.html"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    browser.goto(&file_url(&d.path().join("report.html")));
    let text = browser.text();
    for want in [
        "TherapyGym report",
        "Agenda",
        "Homework",
        "Example sessions",
        "Tokens and time per role",
    ] {
        assert!(text.contains(want), "report: no `{want}`");
    }
    assert_visible(&browser, "report");
    // A table link jumps to its example session in the same file.
    browser.click("a[href^='#ex-0-']");
    assert!(browser.url().contains("#ex-0-"), "{}", browser.url());
    assert_session_page(&browser, "report example");

    // The viewer: the list, a filter, then a click into a session.
    let viewer = Viewer::start(&run_dir);
    browser.goto(&viewer.url);
    assert!(
        browser.text().contains("3 of 3 sessions"),
        "{}",
        browser.text()
    );
    assert_visible(&browser, "viewer list");
    browser.js(
        "const s = document.querySelector('select[name=status]'); s.value = 'unscored'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    );
    assert!(
        browser.text().contains("0 of 3 sessions"),
        "{}",
        browser.text()
    );
    assert!(
        browser.url().contains("status=unscored"),
        "filters live in the URL"
    );
    browser.js(
        "const s = document.querySelector('select[name=status]'); s.value = ''; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    );
    browser.click("a.c-link");
    assert!(browser.url().contains("/sessions/"), "{}", browser.url());
    assert_session_page(&browser, "viewer session");

    // The export opens from disk, with the same pages.
    let o = run(&["view", "run", "--export", "site"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    browser.goto(&file_url(&d.path().join("site/index.html")));
    assert!(
        browser.text().contains("3 of 3 sessions"),
        "export: the list script runs from disk"
    );
    browser.click("a.c-link");
    assert_session_page(&browser, "exported session");

    // Hostile model text is inert everywhere.
    let file = d.path().join("hostile.jsonl");
    let rec = json!({"session_id": "evil:0", "messages": [
        {"role": "therapist", "content": "<script>window.__tg_pwned = 1</script>Hello"},
        {"role": "patient", "content": "<img src=x onerror=\"window.__tg_pwned = 2\"> hi"}]});
    std::fs::write(&file, format!("{rec}\n")).unwrap();
    let o = run(
        &[
            "import-transcripts",
            "hostile.jsonl",
            "--out",
            "hostile",
            "--judge",
            "scripted:echo",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["judge", "hostile"], d.path());
    assert!(o.status.code().is_some_and(|c| c < 2), "{}", stderr(&o));
    let o = run(&["report", "hostile", "--out", "hostile.html"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    browser.goto(&file_url(&d.path().join("hostile.html")));
    assert_nothing_ran(&browser, "report");
    let o = run(&["view", "hostile", "--export", "hostile-site"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    browser.goto(&file_url(&d.path().join("hostile-site/index.html")));
    browser.click("a.c-link");
    assert_nothing_ran(&browser, "export");
    let hostile_viewer = Viewer::start(&d.path().join("hostile"));
    browser.goto(&hostile_viewer.url);
    browser.click("a.c-link");
    assert_nothing_ran(&browser, "viewer");
}
