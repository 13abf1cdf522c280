//! What a rubric measures beyond its global items: behaviour codes (the judge codes every
//! therapist utterance; a session's count of a code is how many times it was given) and derived
//! scores, formulas of a closed set of kinds over items and counts (`docs/formats.md`,
//! "Rubric"). A derived score whose denominator is 0 has no value and says why — never 0 and
//! never infinity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::judgment::Judgment;

/// One behaviour code the judge may give a therapist utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourCode {
    pub id: String,
    pub name: String,
    /// What counts as this behaviour, in one or two sentences (shown to the judge).
    pub definition: String,
    /// Optional rater note (boundary cases, what it is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// The closed set of formulas a derived score can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DerivedKind {
    /// Mean of the terms in `of`.
    Mean,
    /// Sum of the terms in `of`.
    Sum,
    /// Σ `num` / Σ `den`; no value when Σ `den` = 0.
    Ratio,
    /// 100 · Σ `num` / Σ `den`; no value when Σ `den` = 0.
    Percent,
}

impl DerivedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DerivedKind::Mean => "mean",
            DerivedKind::Sum => "sum",
            DerivedKind::Ratio => "ratio",
            DerivedKind::Percent => "percent",
        }
    }
}

/// A score computed from a session's items and code counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedScore {
    pub id: String,
    pub name: String,
    pub kind: DerivedKind,
    /// Terms of `mean` and `sum`: item ids (their score) or code ids (their count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub of: Vec<String>,
    /// Numerator terms of `ratio` and `percent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub num: Vec<String>,
    /// Denominator terms of `ratio` and `percent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub den: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// The range the score is normalised over when a reward weights it (`[lo, hi]`). Means of
    /// items take the rubric scale and percentages [0, 100] when it is left out; sums and ratios
    /// must state it to be weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
    /// For reports: whether a lower value is the better one (e.g. a count of confrontations).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lower_is_better: bool,
}

impl DerivedScore {
    /// Every term the formula reads, in file order.
    pub fn terms(&self) -> impl Iterator<Item = &String> {
        self.of.iter().chain(&self.num).chain(&self.den)
    }
}

/// A derived score of one session: a number, or no number and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerivedValue {
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DerivedValue {
    fn some(x: f64) -> Self {
        Self {
            value: Some(x),
            reason: None,
        }
    }

    fn none(reason: String) -> Self {
        Self {
            value: None,
            reason: Some(reason),
        }
    }
}

/// How many times each code was given in a judgment (every code of `codes` present, 0 when
/// never given).
pub fn code_counts(codes: &[BehaviourCode], judgment: &Judgment) -> BTreeMap<String, u32> {
    let mut counts: BTreeMap<String, u32> = codes.iter().map(|c| (c.id.clone(), 0)).collect();
    for u in &judgment.codes {
        for c in &u.codes {
            if let Some(n) = counts.get_mut(c) {
                *n += 1;
            }
        }
    }
    counts
}

/// The value of a term: an item's score or a code's count; None when the judgment lacks it.
fn term(judgment: &Judgment, counts: &BTreeMap<String, u32>, id: &str) -> Option<f64> {
    judgment
        .ctrs
        .get(id)
        .map(|s| f64::from(s.score))
        .or_else(|| counts.get(id).map(|n| f64::from(*n)))
}

/// Evaluates one derived score. `counts` are the judgment's code counts ([`code_counts`]).
pub fn evaluate(
    d: &DerivedScore,
    judgment: &Judgment,
    counts: &BTreeMap<String, u32>,
) -> DerivedValue {
    let sum = |ids: &[String]| -> Result<f64, String> {
        ids.iter().try_fold(0.0, |acc, id| {
            term(judgment, counts, id)
                .map(|x| acc + x)
                .ok_or_else(|| format!("`{id}` is not in the judgment"))
        })
    };
    let result = match d.kind {
        DerivedKind::Mean => sum(&d.of).map(|s| Some(s / d.of.len().max(1) as f64)),
        DerivedKind::Sum => sum(&d.of).map(Some),
        DerivedKind::Ratio | DerivedKind::Percent => sum(&d.num).and_then(|n| {
            let den = sum(&d.den)?;
            if den == 0.0 {
                return Ok(None);
            }
            let scale = if d.kind == DerivedKind::Percent {
                100.0
            } else {
                1.0
            };
            Ok(Some(scale * n / den))
        }),
    };
    match result {
        Ok(Some(x)) => DerivedValue::some(x),
        Ok(None) => DerivedValue::none(format!(
            "denominator is 0 (no {} in the session)",
            d.den.join(" or ")
        )),
        Err(e) => DerivedValue::none(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judgment::{ItemScore, UtteranceCodes};

    fn judgment(codes: &[&[&str]]) -> Judgment {
        Judgment {
            ctrs: [("a", 2u8), ("b", 5u8)]
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
            codes: codes
                .iter()
                .enumerate()
                .map(|(i, c)| UtteranceCodes {
                    utterance: i as u32 + 1,
                    codes: c.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            ..Judgment::default()
        }
    }

    fn code(id: &str) -> BehaviourCode {
        BehaviourCode {
            id: id.into(),
            name: id.into(),
            definition: String::new(),
            notes: None,
        }
    }

    fn derived(kind: DerivedKind, of: &[&str], num: &[&str], den: &[&str]) -> DerivedScore {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        DerivedScore {
            id: "d".into(),
            name: "D".into(),
            kind,
            of: v(of),
            num: v(num),
            den: v(den),
            description: String::new(),
            range: None,
            lower_is_better: false,
        }
    }

    #[test]
    fn counts_and_every_formula_kind() {
        let codes = [code("q"), code("sr"), code("cr")];
        let j = judgment(&[&["q", "q"], &["sr"], &[], &["cr", "q"]]);
        let counts = code_counts(&codes, &j);
        assert_eq!(counts["q"], 3);
        assert_eq!(counts["sr"], 1);
        assert_eq!(counts["cr"], 1);
        let value = |d: DerivedScore| evaluate(&d, &j, &counts).value;
        assert_eq!(
            value(derived(DerivedKind::Mean, &["a", "b"], &[], &[])),
            Some(3.5)
        );
        assert_eq!(
            value(derived(DerivedKind::Sum, &["q", "cr"], &[], &[])),
            Some(4.0)
        );
        let ratio = derived(DerivedKind::Ratio, &[], &["sr", "cr"], &["q"]);
        assert!((value(ratio).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            value(derived(DerivedKind::Percent, &[], &["cr"], &["sr", "cr"])),
            Some(50.0)
        );
    }

    #[test]
    fn a_zero_denominator_has_no_value_and_a_reason() {
        let codes = [code("q"), code("sr"), code("cr")];
        let j = judgment(&[&["q"], &[]]);
        let counts = code_counts(&codes, &j);
        for kind in [DerivedKind::Ratio, DerivedKind::Percent] {
            let v = evaluate(&derived(kind, &[], &["cr"], &["sr", "cr"]), &j, &counts);
            assert_eq!(v.value, None, "never 0 or infinity");
            assert_eq!(
                v.reason.as_deref(),
                Some("denominator is 0 (no sr or cr in the session)")
            );
        }
        // 0 / x is a real 0.
        let v = evaluate(
            &derived(DerivedKind::Ratio, &[], &["cr"], &["q"]),
            &j,
            &counts,
        );
        assert_eq!(v.value, Some(0.0));
        let v = evaluate(
            &derived(DerivedKind::Mean, &["a", "zz"], &[], &[]),
            &j,
            &counts,
        );
        assert_eq!(v.value, None);
        assert_eq!(v.reason.as_deref(), Some("`zz` is not in the judgment"));
    }
}
