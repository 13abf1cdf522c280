//! Judge calibration: a monotone (isotonic) map per item from the judge's raw score to the
//! expert consensus scale, fitted by `validate --fit-calibration` and applied by `eval` and
//! `judge --calibration`. Raw scores are always kept beside the calibrated ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use therapygym_core::Judgment;
use therapygym_core::error::{DataError, Location, read_to_string};

/// One item's map: `x` raw judge scores (ascending), `y` calibrated values (non-decreasing).
/// Between knots the map interpolates linearly; outside, it is clamped to the end values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemMap {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    /// Dialogues the map was fitted on.
    pub n: usize,
}

impl ItemMap {
    pub fn apply(&self, raw: f64) -> f64 {
        match (self.x.first(), self.x.last()) {
            (Some(&lo), Some(&hi)) => {
                if raw <= lo {
                    return self.y[0];
                }
                if raw >= hi {
                    return self.y[self.y.len() - 1];
                }
                for i in 1..self.x.len() {
                    if raw <= self.x[i] {
                        let (x0, x1, y0, y1) = (self.x[i - 1], self.x[i], self.y[i - 1], self.y[i]);
                        return if x1 > x0 {
                            y0 + (y1 - y0) * (raw - x0) / (x1 - x0)
                        } else {
                            y1
                        };
                    }
                }
                self.y[self.y.len() - 1]
            }
            _ => raw,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub version: u32,
    /// Where the maps were fitted (ratings file, judge rater name).
    #[serde(default)]
    pub fitted_on: String,
    pub items: BTreeMap<String, ItemMap>,
}

impl Calibration {
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let text = read_to_string(path)?;
        let at = Location {
            file: path.into(),
            line: None,
            id: None,
        };
        let c: Calibration = toml::from_str(&text)
            .map_err(|e| DataError::invalid(at.clone(), format!("not a calibration file: {e}")))?;
        for (item, m) in &c.items {
            let bad = m.x.is_empty()
                || m.x.len() != m.y.len()
                || m.x.windows(2).any(|w| w[0] >= w[1])
                || m.y.windows(2).any(|w| w[0] > w[1])
                || m.x.iter().chain(&m.y).any(|v| !v.is_finite());
            if bad {
                return Err(DataError::field(
                    Location {
                        id: Some(item.clone()),
                        ..at
                    },
                    "x/y",
                    "x must be strictly increasing, y non-decreasing, same length, finite",
                ));
            }
        }
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Calibrated score per item (items without a map keep their raw score).
    pub fn apply(&self, j: &Judgment) -> Value {
        let items: serde_json::Map<String, Value> = j
            .ctrs
            .iter()
            .map(|(k, s)| {
                let raw = f64::from(s.score);
                let v = self.items.get(k).map(|m| m.apply(raw)).unwrap_or(raw);
                (k.clone(), json!(v))
            })
            .collect();
        Value::Object(items)
    }

    pub fn hash(&self) -> String {
        therapygym_core::hash::content_hash(self)
    }
}

/// Pool-adjacent-violators isotonic regression of `y` on `x` (non-decreasing), returned as knots
/// at the distinct x values. Matches scikit-learn's `IsotonicRegression` on distinct x with ties
/// averaged.
pub fn fit_isotonic(pairs: &[(f64, f64)]) -> ItemMap {
    let mut by_x: BTreeMap<i64, (f64, f64, usize)> = BTreeMap::new();
    for &(x, y) in pairs {
        // Scores are integers or halves: key on a fixed-point grid to group ties exactly.
        let e = by_x.entry((x * 1e6).round() as i64).or_insert((x, 0.0, 0));
        e.1 += y;
        e.2 += 1;
    }
    // Blocks of (sum_y, weight, first_index).
    let xs: Vec<f64> = by_x.values().map(|v| v.0).collect();
    let mut blocks: Vec<(f64, f64, usize, usize)> = Vec::new(); // (mean, weight, start, end)
    for (i, (_, sum, w)) in by_x.values().enumerate() {
        blocks.push((sum / *w as f64, *w as f64, i, i));
        while blocks.len() > 1 {
            let n = blocks.len();
            if blocks[n - 2].0 <= blocks[n - 1].0 {
                break;
            }
            let b = blocks.pop().unwrap_or((0.0, 0.0, 0, 0));
            let a = blocks.pop().unwrap_or((0.0, 0.0, 0, 0));
            let w = a.1 + b.1;
            blocks.push(((a.0 * a.1 + b.0 * b.1) / w, w, a.2, b.3));
        }
    }
    let mut y = vec![0.0; xs.len()];
    for (mean, _, s, e) in blocks {
        for v in &mut y[s..=e] {
            *v = mean;
        }
    }
    ItemMap {
        x: xs,
        y,
        n: pairs.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pav_pools_violators() {
        let m = fit_isotonic(&[(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (4.0, 4.0)]);
        assert_eq!(m.x, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.y, vec![1.0, 2.5, 2.5, 4.0]);
        let m = fit_isotonic(&[(2.0, 1.0), (2.0, 3.0), (5.0, 6.0)]);
        assert_eq!((m.x.clone(), m.y.clone()), (vec![2.0, 5.0], vec![2.0, 6.0]));
        assert_eq!(m.apply(0.0), 2.0);
        assert_eq!(m.apply(3.5), 4.0);
        assert_eq!(m.apply(9.0), 6.0);
    }

    #[test]
    fn toml_round_trip_and_validation() {
        let c = Calibration {
            version: 1,
            fitted_on: "r.csv".into(),
            items: [(
                "agenda".to_string(),
                fit_isotonic(&[(0.0, 1.0), (6.0, 4.0)]),
            )]
            .into(),
        };
        let d = tempfile_path("c.toml");
        std::fs::write(&d, c.to_toml()).unwrap();
        assert_eq!(Calibration::load(&d).unwrap(), c);
        std::fs::write(
            &d,
            "version = 1\n[items.agenda]\nx = [1.0, 0.0]\ny = [0.0, 1.0]\nn = 2\n",
        )
        .unwrap();
        assert!(
            Calibration::load(&d)
                .unwrap_err()
                .to_string()
                .contains("strictly increasing")
        );
    }

    fn tempfile_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tg-cal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }
}
