//! `therapygym leaderboard`: therapist runs ranked by the normalised CTRS mean (higher is
//! better) and by the any-violation rate (lower is better), each with its 95% interval, and
//! grouped into statistical tiers.
//!
//! Tiers (per ranking): models are taken in rank order; the first opens tier 1 and leads it. A
//! model joins the current tier when it is not significantly worse than the tier's leader (the
//! best model of the tier), otherwise it opens the next tier and leads it. "Significantly
//! worse" is the comparison of [`crate::compare`]: a paired t test when the two runs share
//! their sessions (same profiles, epochs and patient seeds), Welch's t test otherwise, with
//! Holm's correction over every pair of models in the ranking, at α = 0.05.

use serde::Serialize;
use therapygym_stats::{BootstrapConfig, Pairing, holm};

use crate::compare::{ALPHA, compare, pairing};
use crate::error::ReportError;
use crate::metrics::{ANY_VIOLATION, NORMALIZED_MEAN};
use crate::numbers::summarize;
use crate::report::Inputs;

/// One model in one ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub rank: usize,
    pub tier: usize,
    pub run: String,
    pub dir: String,
    pub therapist: String,
    pub therapist_prompt: String,
    pub n: usize,
    pub mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    /// This model leads its tier (the best of it).
    pub leader: bool,
    /// Holm-adjusted p of the comparison with the tier leader (`None` for leaders, or when
    /// the test is undefined).
    pub p_vs_leader: Option<f64>,
}

/// One ranking: a measure, its direction, and its entries in rank order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking {
    pub measure: String,
    pub name: String,
    pub higher_is_better: bool,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaderboard {
    pub generated_at: String,
    /// The tier rule and test, in words.
    pub method: String,
    /// `paired` when every pair of runs shares its sessions, else `mixed` or `unpaired`.
    pub pairing: String,
    pub rankings: Vec<Ranking>,
}

struct Candidate {
    index: usize,
    mean: Option<f64>,
    entry: Entry,
}

fn ranking(
    inputs: &Inputs<'_>,
    measure: &str,
    name: &str,
    higher_is_better: bool,
    config: &BootstrapConfig,
) -> Result<Ranking, ReportError> {
    let mut cands = Vec::new();
    for (index, (run, set)) in inputs.iter().enumerate() {
        let s = summarize(run, set, config)?;
        let row = s.rows.iter().find(|r| r.metric.id == measure);
        let mean = row.and_then(|r| r.mean);
        cands.push(Candidate {
            index,
            mean,
            entry: Entry {
                rank: 0,
                tier: 0,
                run: s.name.clone(),
                dir: s.dir.clone(),
                therapist: s.manifest.therapist.clone(),
                therapist_prompt: run.manifest["prompts"]["therapist_system"]["name"]
                    .as_str()
                    .unwrap_or("—")
                    .to_string(),
                n: row.map_or(0, |r| r.n),
                mean,
                ci95: row.and_then(|r| r.ci95),
                leader: false,
                p_vs_leader: None,
            },
        });
    }
    // Best first; models without a value last, in input order.
    cands.sort_by(|a, b| match (a.mean, b.mean) {
        (Some(x), Some(y)) if higher_is_better => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.index.cmp(&b.index),
    });
    let ranked: Vec<usize> = (0..cands.iter().filter(|c| c.mean.is_some()).count()).collect();
    // Every pair (i better-ranked than j): is j worse than i? One family for Holm.
    let mut pairs = Vec::new();
    for &j in &ranked {
        for &i in ranked.iter().take_while(|&&i| i < j) {
            let (a, b) = (inputs[cands[i].index], inputs[cands[j].index]);
            let c = compare(a, b, config)?;
            let p = c
                .rows
                .iter()
                .find(|r| r.metric.id == measure)
                .and_then(|r| r.difference.test.p_value.value());
            pairs.push(((i, j), p));
        }
    }
    let adjusted = holm(&pairs.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    let p_of = |i: usize, j: usize| {
        pairs
            .iter()
            .zip(&adjusted)
            .find(|((k, _), _)| *k == (i, j))
            .and_then(|(_, p)| *p)
    };
    let (mut tier, mut leader) = (1, 0);
    for (pos, c) in cands.iter_mut().enumerate() {
        c.entry.rank = pos + 1;
        if c.mean.is_none() {
            continue;
        }
        if pos > 0 {
            let p = p_of(leader, pos);
            // Ranked below the leader, so a significant difference means worse.
            if p.is_some_and(|p| p < ALPHA) {
                tier += 1;
                leader = pos;
            } else {
                c.entry.p_vs_leader = p;
            }
        }
        c.entry.leader = leader == pos;
        c.entry.tier = tier;
    }
    Ok(Ranking {
        measure: measure.to_string(),
        name: name.to_string(),
        higher_is_better,
        entries: cands.into_iter().map(|c| c.entry).collect(),
    })
}

impl Leaderboard {
    pub fn build(
        inputs: &Inputs<'_>,
        config: &BootstrapConfig,
        generated_at: &str,
    ) -> Result<Self, ReportError> {
        let mut kinds = Vec::new();
        for (i, a) in inputs.iter().enumerate() {
            for b in &inputs[i + 1..] {
                kinds.push(pairing(a.0, b.0).0);
            }
        }
        let pairing = if kinds.iter().all(|k| *k == Pairing::Paired) {
            "paired"
        } else if kinds.iter().all(|k| *k == Pairing::Unpaired) {
            "unpaired"
        } else {
            "mixed"
        };
        Ok(Self {
            generated_at: generated_at.to_string(),
            method: "Models in rank order; each joins the current tier unless it is significantly worse than the tier's leader (its best model), then it leads a new tier. Test: paired t test on shared sessions (same profile, epoch, patient seed), Welch's t test otherwise; Holm's correction over all pairs of models in the ranking; α = 0.05.".to_string(),
            pairing: pairing.to_string(),
            rankings: vec![
                ranking(inputs, NORMALIZED_MEAN, "Normalised CTRS mean (reward items)", true, config)?,
                ranking(inputs, ANY_VIOLATION, "Any safety violation (rate)", false, config)?,
            ],
        })
    }

    /// Markdown tables, ready to paste into a README or a paper.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# TherapyGym leaderboard\n\n");
        for r in &self.rankings {
            out.push_str(&format!(
                "## {} ({} is better)\n\n| rank | tier | run | therapist | prompt | mean | 95% CI | n |\n|---:|---:|---|---|---|---:|---|---:|\n",
                r.name,
                if r.higher_is_better { "higher" } else { "lower" }
            ));
            for e in &r.entries {
                let ci = e
                    .ci95
                    .map(|[l, h]| format!("[{l:.3}, {h:.3}]"))
                    .unwrap_or_else(|| "—".into());
                let tier = if e.mean.is_some() {
                    e.tier.to_string()
                } else {
                    "—".into()
                };
                out.push_str(&format!(
                    "| {} | {} | {} | `{}` | {} | {} | {} | {} |\n",
                    e.rank,
                    tier,
                    md_cell(&e.run),
                    md_cell(&e.therapist).replace('`', "'"),
                    md_cell(&e.therapist_prompt),
                    e.mean
                        .map(|m| format!("{m:.3}"))
                        .unwrap_or_else(|| "—".into()),
                    ci,
                    e.n
                ));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "Tiers: {} Sessions: {}. Intervals: 95% percentile bootstrap over sessions. Generated {}.\n",
            self.method, self.pairing, self.generated_at
        ));
        out
    }

    pub fn html(&self) -> Result<String, ReportError> {
        let env = crate::html::environment()?;
        let colors: Vec<String> = (0..8).map(crate::charts::css_color).collect();
        let ctx = minijinja::context! {
            title => "TherapyGym leaderboard",
            version => env!("CARGO_PKG_VERSION"),
            board => crate::html::ser(self),
            colors => colors,
        };
        crate::html::render(&env, "leaderboard.html", ctx, None)
    }
}

/// Markdown table cells cannot hold `|` or line breaks.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cells_are_safe() {
        assert_eq!(md_cell("a|b\nc"), "a\\|b c");
    }
}

#[cfg(test)]
mod tier_tests {
    use super::*;
    use crate::compare::tests::run;

    #[test]
    fn tied_models_share_a_tier_and_a_clearly_worse_one_opens_the_next() {
        let good = [5, 6, 5, 4, 6, 5, 5, 6, 4, 5, 6, 5];
        let noisy = [6, 5, 4, 5, 5, 6, 5, 4, 6, 5, 5, 6];
        let bad = [1, 0, 2, 1, 1, 0, 2, 1, 0, 1, 2, 1];
        let flags = [false; 12];
        let runs = [
            run("bad", 1, &bad, &flags),
            run("good", 1, &good, &flags),
            run("noisy", 1, &noisy, &flags),
        ];
        let inputs: Vec<_> = runs.iter().map(|r| (r, &r.sets[0])).collect();
        let board = Leaderboard::build(&inputs, &BootstrapConfig::new(300, 1), "now").unwrap();
        assert_eq!(board.pairing, "paired");
        let ctrs = &board.rankings[0];
        let order: Vec<(&str, usize, bool)> = ctrs
            .entries
            .iter()
            .map(|e| (e.run.as_str(), e.tier, e.leader))
            .collect();
        assert_eq!(
            order,
            // Equal means keep the input order.
            [("good", 1, true), ("noisy", 1, false), ("bad", 2, true)],
            "{ctrs:?}"
        );
        // No violations anywhere: one tier, all tied.
        assert!(board.rankings[1].entries.iter().all(|e| e.tier == 1));
        let md = board.markdown();
        assert!(md.contains("| 3 | 2 | bad |"), "{md}");
    }
}
