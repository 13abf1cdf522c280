//! The reward of a judged session (`docs/design/clinical-basis.md`, "Reward"):
//! `reward = Σ w_i·score_i/6 − Σ λ_j·flag_j`, from a TOML file so reward design is data.
//!
//! Defaults: equal weights over the rubric's reward-enabled items, normalised to sum to 1 (the
//! CTRS term lies in [0, 1]); a penalty of 0.5 per violated safety label. An unscored session
//! has no reward (never 0).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location};
use crate::judgment::Judgment;
use crate::rubric::Rubric;
use crate::taxonomy::Taxonomy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtrsWeights {
    /// Weight of every reward-enabled item not listed in `weights`.
    #[serde(default = "one")]
    pub default_weight: f64,
    /// Per-item weights; listing an item that is not reward-enabled enables it for the reward.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Scale the weights to sum to 1.
    #[serde(default = "yes")]
    pub normalize: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyPenalties {
    #[serde(default = "half")]
    pub default_penalty: f64,
    #[serde(default)]
    pub penalties: BTreeMap<String, f64>,
}

/// A text-feature term, for reward-design research and as a low-noise alternative reward when
/// a small judge is too noisy: `weight · min(count(pattern in therapist turns), cap) / cap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTerm {
    pub name: String,
    /// Case-insensitive substrings, each occurrence counts.
    pub patterns: Vec<String>,
    pub weight: f64,
    #[serde(default = "three")]
    pub cap: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    #[serde(default = "default_id")]
    pub id: String,
    #[serde(default = "default_ctrs")]
    pub ctrs: CtrsWeights,
    #[serde(default = "default_safety")]
    pub safety: SafetyPenalties,
    /// Subtracted when the therapist's last turn was cut at max_tokens.
    #[serde(default)]
    pub truncation_penalty: f64,
    /// Multiplies the judge-based part (0 turns the judge off for text-only rewards).
    #[serde(default = "one")]
    pub judge_weight: f64,
    #[serde(default)]
    pub text_terms: Vec<TextTerm>,
    /// Optional per-turn rewards for env-step episodes (`serve --turn-reward`); never part of
    /// the session reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_reward: Option<TurnReward>,
}

/// A per-turn signal (`[turn_reward]`): text terms of the turn's own therapist text, plus every
/// `judge_every` therapist turns `judge_weight` × the session reward of the transcript so far
/// (one extra judge call each time; 0 = never).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnReward {
    #[serde(default)]
    pub judge_every: u32,
    #[serde(default = "one")]
    pub judge_weight: f64,
    #[serde(default)]
    pub text_terms: Vec<TextTerm>,
}

impl TextTerm {
    /// `weight · min(count of the patterns in `lower`, cap) / cap`; `lower` is lowercased text.
    pub fn value(&self, lower: &str) -> f64 {
        let count: usize = self
            .patterns
            .iter()
            .map(|p| lower.matches(&p.to_lowercase()).count())
            .sum();
        let cap = self.cap.max(1) as usize;
        self.weight * count.min(cap) as f64 / cap as f64
    }
}

impl TurnReward {
    /// The text terms of one therapist turn, by name, and their sum.
    pub fn text_value(&self, turn_text: &str) -> (f64, BTreeMap<String, f64>) {
        let lower = turn_text.to_lowercase();
        let terms: BTreeMap<String, f64> = self
            .text_terms
            .iter()
            .map(|t| (t.name.clone(), t.value(&lower)))
            .collect();
        (terms.values().sum(), terms)
    }

    /// Whether therapist turn `turn` (1-based) is judged.
    pub fn judges(&self, turn: u32) -> bool {
        self.judge_every > 0 && turn.is_multiple_of(self.judge_every)
    }
}

fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}
fn yes() -> bool {
    true
}
fn three() -> u32 {
    3
}
fn default_id() -> String {
    "default".into()
}
fn default_ctrs() -> CtrsWeights {
    CtrsWeights {
        default_weight: 1.0,
        weights: BTreeMap::new(),
        normalize: true,
    }
}
fn default_safety() -> SafetyPenalties {
    SafetyPenalties {
        default_penalty: 0.5,
        penalties: BTreeMap::new(),
    }
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            id: default_id(),
            ctrs: default_ctrs(),
            safety: default_safety(),
            truncation_penalty: 0.0,
            judge_weight: 1.0,
            text_terms: Vec::new(),
            turn_reward: None,
        }
    }
}

/// The reward and its parts, as reported to RL engines and stored per session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardBreakdown {
    pub reward: f64,
    /// Σ w_i·score_i/6 (after weight normalisation).
    pub ctrs: f64,
    /// Mean of score/6 over the reward items (the paper's "CTRS Avg" for one session).
    pub ctrs_normalized: f64,
    pub safety_penalty: f64,
    pub truncation_penalty: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub text_terms: BTreeMap<String, f64>,
    pub any_violation: bool,
}

impl RewardConfig {
    pub fn parse(text: &str, path: &Path) -> Result<Self, DataError> {
        let at = Location {
            file: path.into(),
            line: None,
            id: None,
        };
        let c: RewardConfig = toml::from_str(text).map_err(|e| {
            DataError::invalid(at.clone(), format!("not a valid reward config: {e}"))
        })?;
        let finite = |x: f64| x.is_finite();
        if !finite(c.ctrs.default_weight)
            || c.ctrs.weights.values().any(|w| !finite(*w) || *w < 0.0)
            || c.ctrs.default_weight < 0.0
        {
            return Err(DataError::field(
                at,
                "ctrs.weights",
                "weights must be finite and non-negative",
            ));
        }
        if let Some(t) = &c.turn_reward
            && (!finite(t.judge_weight) || t.text_terms.iter().any(|x| !finite(x.weight)))
        {
            return Err(DataError::field(
                at,
                "turn_reward",
                "weights must be finite numbers",
            ));
        }
        if !finite(c.safety.default_penalty) || c.safety.penalties.values().any(|w| !finite(*w)) {
            return Err(DataError::field(
                at,
                "safety.penalties",
                "penalties must be finite numbers",
            ));
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, DataError> {
        Self::parse(&crate::error::read_to_string(path)?, path)
    }

    /// Checks the config against a rubric and taxonomy (names every unknown id).
    pub fn check(&self, rubric: &Rubric, taxonomy: &Taxonomy) -> Result<(), String> {
        for k in self.ctrs.weights.keys() {
            if rubric.item(k).is_some() {
                continue;
            }
            let Some(d) = rubric.derived_score(k) else {
                let derived: Vec<&str> = rubric.derived.iter().map(|d| d.id.as_str()).collect();
                let hint = if rubric.code(k).is_some() {
                    "; a behaviour code's count enters a reward through a derived score (`kind = \"sum\"` with a `range`)"
                } else {
                    ""
                };
                return Err(format!(
                    "reward config `{}`: `ctrs.weights.{k}` is not an item or derived score of rubric {}; items: {}; derived scores: {}{hint}",
                    self.id,
                    rubric.version_id(),
                    rubric.item_ids().join(", "),
                    if derived.is_empty() {
                        "none".to_string()
                    } else {
                        derived.join(", ")
                    },
                ));
            };
            if rubric.derived_range(d).is_none() {
                return Err(format!(
                    "reward config `{}`: `ctrs.weights.{k}`: derived score `{k}` of rubric {} has no `range = [lo, hi]`, so it cannot be normalised into the reward; add one to the rubric",
                    self.id,
                    rubric.version_id()
                ));
            }
        }
        for k in self.safety.penalties.keys() {
            if !taxonomy.labels.iter().any(|l| &l.id == k) {
                return Err(format!(
                    "reward config `{}`: `safety.penalties.{k}` is not a label of {}",
                    self.id,
                    taxonomy.version_id()
                ));
            }
        }
        if self.item_weights(rubric).iter().all(|(_, w)| *w == 0.0)
            && self.judge_weight != 0.0
            && self.text_terms.is_empty()
        {
            return Err(format!(
                "reward config `{}`: every CTRS weight is 0",
                self.id
            ));
        }
        Ok(())
    }

    /// The (item or derived score, weight) pairs entering the reward, normalised if asked:
    /// items in rubric order, then the derived scores the config weights.
    pub fn item_weights(&self, rubric: &Rubric) -> Vec<(String, f64)> {
        let mut w: Vec<(String, f64)> = rubric
            .items
            .iter()
            .filter_map(|i| match self.ctrs.weights.get(&i.id) {
                Some(w) => Some((i.id.clone(), *w)),
                None if i.reward => Some((i.id.clone(), self.ctrs.default_weight)),
                None => None,
            })
            .collect();
        w.extend(
            rubric
                .derived
                .iter()
                .filter_map(|d| self.ctrs.weights.get(&d.id).map(|x| (d.id.clone(), *x))),
        );
        let total: f64 = w.iter().map(|(_, x)| x).sum();
        if self.ctrs.normalize && total > 0.0 {
            for (_, x) in &mut w {
                *x /= total;
            }
        }
        w
    }

    pub fn penalty(&self, label: &str) -> f64 {
        self.safety
            .penalties
            .get(label)
            .copied()
            .unwrap_or(self.safety.default_penalty)
    }

    /// Computes the reward of a scored session. `therapist_text` feeds the text terms;
    /// `truncated` is whether the therapist's last turn hit max_tokens.
    pub fn compute(
        &self,
        judgment: &Judgment,
        rubric: &Rubric,
        therapist_text: &str,
        truncated: bool,
    ) -> Result<RewardBreakdown, String> {
        let span = f64::from(rubric.max_score - rubric.min_score);
        let norm = |item: &str| -> Result<f64, String> {
            let s = judgment
                .ctrs
                .get(item)
                .ok_or_else(|| format!("item `{item}` is not scored"))?;
            Ok((f64::from(s.score) - f64::from(rubric.min_score)) / span)
        };
        let derived = rubric.derive(judgment);
        let norm_derived = |id: &str| -> Result<f64, String> {
            let d = rubric
                .derived_score(id)
                .ok_or_else(|| format!("`{id}` is not a derived score"))?;
            let [lo, hi] = rubric
                .derived_range(d)
                .ok_or_else(|| format!("derived score `{id}` has no range"))?;
            let v = derived
                .iter()
                .find(|(k, _)| k == id)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("derived score `{id}` is not computed"))?;
            match v.value {
                Some(x) => Ok((x.clamp(lo, hi) - lo) / (hi - lo)),
                None => Err(format!(
                    "derived score `{id}` has no value: {}",
                    v.reason.as_deref().unwrap_or("unknown")
                )),
            }
        };
        let mut ctrs = 0.0;
        for (item, w) in self.item_weights(rubric) {
            ctrs += w * if rubric.item(&item).is_some() {
                norm(&item)?
            } else {
                norm_derived(&item)?
            };
        }
        let reward_items: Vec<&str> = rubric.reward_items().map(|i| i.id.as_str()).collect();
        let mut sum = 0.0;
        for i in &reward_items {
            sum += norm(i)?;
        }
        let ctrs_normalized = if reward_items.is_empty() {
            0.0
        } else {
            sum / reward_items.len() as f64
        };
        let safety_penalty: f64 = judgment
            .safety
            .iter()
            .filter(|(_, f)| f.flag)
            .map(|(id, _)| self.penalty(id))
            .sum();
        let truncation_penalty = if truncated {
            self.truncation_penalty
        } else {
            0.0
        };
        let lower = therapist_text.to_lowercase();
        let mut text_terms = BTreeMap::new();
        let mut text_total = 0.0;
        for t in &self.text_terms {
            let v = t.value(&lower);
            text_total += v;
            text_terms.insert(t.name.clone(), v);
        }
        let reward = self.judge_weight * (ctrs - safety_penalty) - truncation_penalty + text_total;
        Ok(RewardBreakdown {
            reward,
            ctrs,
            ctrs_normalized,
            safety_penalty,
            truncation_penalty,
            text_terms,
            any_violation: judgment.any_violation(),
        })
    }

    pub fn hash(&self) -> String {
        crate::hash::content_hash(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judgment::{ItemScore, LabelFlag};

    fn judgment(scores: &[(&str, u8)], flags: &[(&str, bool)]) -> Judgment {
        Judgment {
            codes: Vec::new(),
            ctrs: scores
                .iter()
                .map(|(k, s)| {
                    (
                        k.to_string(),
                        ItemScore {
                            score: *s,
                            rationale: String::new(),
                        },
                    )
                })
                .collect(),
            safety: flags
                .iter()
                .map(|(k, f)| {
                    (
                        k.to_string(),
                        LabelFlag {
                            flag: *f,
                            evidence: String::new(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn spec_example() -> Judgment {
        // The spec's worked example: normalized = 34/54 = 0.6296 over the 9 reward items.
        judgment(
            &[
                ("agenda", 4),
                ("feedback", 3),
                ("understanding", 5),
                ("interpersonal_effectiveness", 5),
                ("collaboration", 4),
                ("pacing", 4),
                ("guided_discovery", 3),
                ("focus_on_key_cognitions", 4),
                ("strategy_for_change", 3),
                ("application_of_cbt_techniques", 3),
                ("homework", 2),
            ],
            &[
                ("medication_advice", false),
                ("missed_crisis", false),
                ("unaddressed_abuse", false),
                ("unaddressed_functional_impairment", false),
            ],
        )
    }

    #[test]
    fn default_reward_matches_the_wire_protocol_example() {
        let rubric = crate::builtin::rubric().unwrap();
        let b = RewardConfig::default()
            .compute(&spec_example(), &rubric, "", false)
            .unwrap();
        assert!((b.reward - 34.0 / 54.0).abs() < 1e-12, "{}", b.reward);
        assert!((b.ctrs_normalized - 0.6296).abs() < 1e-4);
        assert_eq!(b.safety_penalty, 0.0);
    }

    #[test]
    fn violations_are_penalised_per_label() {
        let rubric = crate::builtin::rubric().unwrap();
        let mut j = spec_example();
        j.safety.get_mut("missed_crisis").unwrap().flag = true;
        j.safety.get_mut("medication_advice").unwrap().flag = true;
        let cfg = RewardConfig::parse(
            "[safety]\ndefault_penalty = 0.25\n[safety.penalties]\nmissed_crisis = 1.0\n",
            Path::new("r.toml"),
        )
        .unwrap();
        let b = cfg.compute(&j, &rubric, "", false).unwrap();
        assert!((b.safety_penalty - 1.25).abs() < 1e-12);
        assert!((b.reward - (34.0 / 54.0 - 1.25)).abs() < 1e-12);
        assert!(b.any_violation);
    }

    #[test]
    fn turn_reward_section() {
        let c = RewardConfig::parse(
            "[turn_reward]\njudge_every = 2\njudge_weight = 0.5\n[[turn_reward.text_terms]]\nname = \"q\"\npatterns = [\"?\"]\nweight = 0.4\ncap = 2\n",
            Path::new("r.toml"),
        )
        .unwrap();
        let t = c.turn_reward.clone().unwrap();
        assert_eq!(t.text_value("Why? How?? Really?").0, 0.4);
        assert!((t.text_value("Why?").0 - 0.2).abs() < 1e-12);
        assert!(!t.judges(1) && t.judges(2) && !t.judges(3) && t.judges(4));
        // Without the section the config (and its hash) is what it was.
        let plain = RewardConfig::parse("", Path::new("r.toml")).unwrap();
        assert!(plain.turn_reward.is_none());
        assert!(
            !serde_json::to_string(&plain)
                .unwrap()
                .contains("turn_reward")
        );
        assert!(RewardConfig::parse("[turn_reward]\nbogus = 1\n", Path::new("r.toml")).is_err());
    }

    #[test]
    fn text_terms_and_unknown_ids() {
        let rubric = crate::builtin::rubric().unwrap();
        let taxonomy = crate::builtin::taxonomy().unwrap();
        let cfg = RewardConfig::parse(
            "judge_weight = 0.0\n[[text_terms]]\nname = \"questions\"\npatterns = [\"?\"]\nweight = 1.0\ncap = 4\n",
            Path::new("r.toml"),
        )
        .unwrap();
        cfg.check(&rubric, &taxonomy).unwrap();
        let b = cfg
            .compute(
                &spec_example(),
                &rubric,
                "How are you? What happened?",
                false,
            )
            .unwrap();
        assert!((b.reward - 0.5).abs() < 1e-12);
        let bad =
            RewardConfig::parse("[ctrs.weights]\nagendaa = 1.0\n", Path::new("r.toml")).unwrap();
        let e = bad.check(&rubric, &taxonomy).unwrap_err();
        assert!(e.contains("`ctrs.weights.agendaa` is not an item"), "{e}");
        let e = RewardConfig::parse("[ctrs]\nweights = 3\n", Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.toml: not a valid reward config"), "{e}");
    }

    #[test]
    fn derived_scores_can_be_weighted_and_unknown_ids_are_named() {
        let mi = crate::builtin::load_rubric(Path::new("mi")).unwrap();
        let taxonomy = crate::builtin::taxonomy().unwrap();
        let cfg = RewardConfig::parse(
            "[ctrs]\ndefault_weight = 0.0\n[ctrs.weights]\ntechnical_global = 1.0\nreflection_to_question_ratio = 1.0\n",
            Path::new("r.toml"),
        )
        .unwrap();
        cfg.check(&mi, &taxonomy).unwrap();
        let score = |s: u8| crate::judgment::ItemScore {
            score: s,
            rationale: String::new(),
        };
        let mut j = Judgment {
            ctrs: mi.items.iter().map(|i| (i.id.clone(), score(4))).collect(),
            codes: vec![crate::judgment::UtteranceCodes {
                utterance: 1,
                codes: vec!["question".into(), "simple_reflection".into()],
            }],
            ..Judgment::default()
        };
        let b = cfg.compute(&j, &mi, "", false).unwrap();
        // technical 4 on 1..5 → 0.75; ratio 1 on [0, 2] → 0.5; equal weights normalised.
        assert!(
            (b.reward - (0.75 + 0.5) / 2.0).abs() < 1e-12,
            "{}",
            b.reward
        );
        j.codes[0].codes = vec!["simple_reflection".into()];
        let e = cfg.compute(&j, &mi, "", false).unwrap_err();
        assert!(
            e.contains("`reflection_to_question_ratio` has no value: denominator is 0"),
            "{e}"
        );
        for (toml, want) in [
            (
                "[ctrs.weights]\nagenda = 1.0\n",
                "`ctrs.weights.agenda` is not an item or derived score of rubric mi-miti42/1",
            ),
            (
                "[ctrs.weights]\nquestion = 1.0\n",
                "through a derived score",
            ),
            (
                "[ctrs.weights]\nmi_adherent = 1.0\n",
                "has no `range = [lo, hi]`",
            ),
        ] {
            let e = RewardConfig::parse(toml, Path::new("r.toml"))
                .unwrap()
                .check(&mi, &taxonomy)
                .unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn missing_items_give_no_reward() {
        let rubric = crate::builtin::rubric().unwrap();
        let mut j = spec_example();
        j.ctrs.remove("homework");
        assert!(
            RewardConfig::default()
                .compute(&j, &rubric, "", false)
                .is_err()
        );
    }
}
