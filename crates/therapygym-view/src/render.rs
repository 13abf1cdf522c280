//! The viewer's pages, the same for the server and the static export: `index.html` (the session
//! list; filtering and sorting run in the page's one inline script, over data embedded as JSON)
//! and `sessions/<slug>.html` (one session, every judgment set side by side). Links are relative,
//! so the pages work from a web server and from disk alike.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde::Serialize;
use therapygym_core::Verdict;
use therapygym_report::html::{json_for_script, render, ser};
use therapygym_report::metrics::{NORMALIZED_MEAN, metrics};
use therapygym_report::transcript::{session_view, slug};
use therapygym_report::{ReportError, RunData, SetData};
use therapygym_store::SessionStatus;

/// The list page's script (filters, sorting, the chosen judgment set in the URL's `#`).
pub const SCRIPT: &str = include_str!("../templates/viewer.js");

const TEMPLATES: [(&str, &str); 2] = [
    (
        "view_index.html",
        include_str!("../templates/view_index.html"),
    ),
    (
        "view_session.html",
        include_str!("../templates/view_session.html"),
    ),
];

/// One session under one judgment set, as the list's script filters it.
#[derive(Debug, Clone, Serialize)]
struct SetRow {
    status: &'static str,
    reward: Option<f64>,
    norm: Option<f64>,
    items: BTreeMap<String, u8>,
    flags: Vec<String>,
    reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    id: String,
    href: String,
    profile: String,
    epoch: u32,
    style: String,
    status: &'static str,
    turns: usize,
    /// Per judgment set hash.
    sets: BTreeMap<String, SetRow>,
}

#[derive(Debug, Clone, Serialize)]
struct SetOption {
    hash: String,
    short: String,
    judge: String,
    created_at: String,
    scored: usize,
}

#[derive(Debug, Clone, Serialize)]
struct ItemOption {
    id: String,
    name: String,
    min: f64,
    max: f64,
}

/// Renders a run's pages.
pub struct Pages {
    run: RunData,
    env: Environment<'static>,
    /// slug → index into `run.sessions`.
    slugs: BTreeMap<String, usize>,
}

fn status_of(s: SessionStatus) -> &'static str {
    match s {
        SessionStatus::Completed => "completed",
        SessionStatus::Failed => "failed",
        SessionStatus::Expired => "expired",
    }
}

fn set_row(set: &SetData, id: &str) -> Option<SetRow> {
    let row = set.judgments.get(id)?;
    let norm = metrics(&set.definitions)
        .into_iter()
        .find(|m| m.id == NORMALIZED_MEAN)
        .and_then(|m| m.value(&set.definitions, row));
    Some(match &row.verdict {
        Verdict::Scored { judgment } => SetRow {
            status: "scored",
            reward: row.reward,
            norm,
            items: judgment
                .ctrs
                .iter()
                .map(|(k, v)| (k.clone(), v.score))
                .collect(),
            flags: judgment
                .safety
                .iter()
                .filter(|(_, f)| f.flag)
                .map(|(k, _)| k.clone())
                .collect(),
            reason: None,
        },
        Verdict::Unscored { reason, .. } => SetRow {
            status: "unscored",
            reward: None,
            norm: None,
            items: BTreeMap::new(),
            flags: Vec::new(),
            reason: Some(reason.as_str().to_string()),
        },
    })
}

impl Pages {
    pub fn new(run: RunData) -> Result<Self, ReportError> {
        let mut env = therapygym_report::html::environment()?;
        therapygym_report::html::add_templates(&mut env, &TEMPLATES)?;
        let slugs = run
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (slug(&s.id), i))
            .collect();
        Ok(Self { run, env, slugs })
    }

    pub fn run(&self) -> &RunData {
        &self.run
    }

    /// Every session page's slug, in session order.
    pub fn slugs(&self) -> Vec<String> {
        self.run.sessions.iter().map(|s| slug(&s.id)).collect()
    }

    fn rows(&self) -> Vec<Row> {
        self.run
            .sessions
            .iter()
            .map(|s| Row {
                id: s.id.clone(),
                href: format!("sessions/{}.html", slug(&s.id)),
                profile: s.profile_id.clone(),
                epoch: s.epoch,
                style: s.style.clone(),
                status: status_of(s.status),
                turns: s.transcript.turns.len(),
                sets: self
                    .run
                    .sets
                    .iter()
                    .filter_map(|set| Some((set.set.hash.clone(), set_row(set, &s.id)?)))
                    .collect(),
            })
            .collect()
    }

    /// The session list.
    pub fn index(&self) -> Result<String, ReportError> {
        let rows = self.rows();
        let mut profiles: Vec<&str> = rows.iter().map(|r| r.profile.as_str()).collect();
        profiles.sort_unstable();
        profiles.dedup();
        let mut styles: Vec<&str> = rows.iter().map(|r| r.style.as_str()).collect();
        styles.sort_unstable();
        styles.dedup();
        let sets: Vec<SetOption> = self
            .run
            .sets
            .iter()
            .rev()
            .map(|s| SetOption {
                hash: s.set.hash.clone(),
                short: s.short_hash(),
                judge: s.judge.clone(),
                created_at: s.set.created_at.clone(),
                scored: s
                    .judgments
                    .values()
                    .filter(|j| j.verdict.judgment().is_some())
                    .count(),
            })
            .collect();
        let latest = self.run.sets.last();
        let items: Vec<ItemOption> = latest
            .map(|s| {
                s.definitions
                    .items
                    .iter()
                    .map(|i| ItemOption {
                        id: i.id.clone(),
                        name: i.name.clone(),
                        min: i.min,
                        max: i.max,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let labels = latest
            .map(|s| s.definitions.labels.clone())
            .unwrap_or_default();
        let data = json_for_script(&serde_json::json!({
            "sessions": rows.iter().map(|r| (r.id.clone(), r)).collect::<BTreeMap<_, _>>(),
        }));
        let ctx = minijinja::context! {
            title => format!("{} — TherapyGym viewer", self.run.name),
            version => env!("CARGO_PKG_VERSION"),
            run => self.run.name.clone(),
            therapist => self.run.role_spec("therapist"),
            patient => self.run.role_spec("patient"),
            created_at => self.run.manifest["created_at"].as_str().unwrap_or("—").to_string(),
            rows => ser(&rows),
            latest => latest.map(|s| s.set.hash.clone()),
            sets => ser(&sets),
            profiles => ser(&profiles),
            styles => ser(&styles),
            items => ser(&items),
            labels => ser(&labels),
            data => data,
        };
        render(&self.env, "view_index.html", ctx, Some(SCRIPT))
    }

    /// The page of the session whose slug is `slug`, if there is one.
    pub fn session(&self, slug_: &str) -> Result<Option<String>, ReportError> {
        let Some(&i) = self.slugs.get(slug_) else {
            return Ok(None);
        };
        let s = &self.run.sessions[i];
        let sets: Vec<&SetData> = self.run.sets.iter().rev().collect();
        let view = session_view(&self.run, s, &sets);
        let neighbour = |j: Option<usize>| {
            j.and_then(|j| self.run.sessions.get(j))
                .map(|s| (s.id.clone(), format!("{}.html", slug(&s.id))))
        };
        let ctx = minijinja::context! {
            title => format!("{} — {}", s.id, self.run.name),
            version => env!("CARGO_PKG_VERSION"),
            run => self.run.name.clone(),
            s => ser(&view),
            prev => neighbour(i.checked_sub(1)),
            next => neighbour(Some(i + 1)),
        };
        render(&self.env, "view_session.html", ctx, None).map(Some)
    }
}
