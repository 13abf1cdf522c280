//! Whole validation reports against the reference implementations (scipy, scikit-learn,
//! krippendorff, pingouin): `tools/fixtures/gen_validate_fixtures.py` wrote each ratings file in
//! `tests/fixtures/` and the report it expects; every number must agree to 1e-9, bootstrap CIs
//! included (both sides resample the same splitmix64 index sets), and every number the library
//! reports must be in the reference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use therapygym_validate::{Catalog, Dataset, Resampling, fit_calibration, read_ratings, validate};

const TOL: f64 = 1e-9;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The generator's resamples: splitmix64 from state `seed + n`, index = z % n.
fn resample_sets(n: usize, count: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut state = seed.wrapping_add(n as u64);
    (0..count)
        .map(|_| {
            (0..n)
                .map(|_| {
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    (z % n as u64) as usize
                })
                .collect()
        })
        .collect()
}

/// Walks `want`; every leaf must match `got` at the same path ("situation" keys, the
/// reference's free-text reasons, are skipped). Numbers to `TOL`; `null` must be `null`.
fn compare(want: &Value, got: &Value, path: &str, errors: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                if k == "situation" {
                    continue;
                }
                match g.get(k) {
                    Some(gv) => compare(wv, gv, &format!("{path}.{k}"), errors),
                    None => errors.push(format!("{path}.{k}: missing in the Rust report")),
                }
            }
            if w.get("value").is_some_and(Value::is_null) && !g.contains_key("reason") {
                errors.push(format!("{path}: undefined without a reason"));
            }
            if w.contains_key("low") && w["low"].is_null() && !g.contains_key("reason") {
                errors.push(format!("{path}: undefined interval without a reason"));
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                compare(wv, gv, &format!("{path}[{i}]"), errors);
            }
        }
        (Value::Number(w), Value::Number(g)) => {
            let (w, g) = (w.as_f64().unwrap(), g.as_f64().unwrap());
            if (w - g).abs() > TOL || !g.is_finite() {
                errors.push(format!(
                    "{path}: want {w}, got {g} (diff {:e})",
                    (w - g).abs()
                ));
            }
        }
        (w, g) if w == g => {}
        (w, g) => errors.push(format!("{path}: want {w}, got {g}")),
    }
}

/// Paths of every non-string leaf of `v` (reasons are strings).
fn leaves(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                leaves(x, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(_) => {}
        _ => out.push(path.to_owned()),
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.trim_start_matches('.').split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, Some(i.trim_end_matches(']').parse::<usize>().ok()?)),
            None => (part, None),
        };
        cur = cur.get(key)?;
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

struct Fixture {
    file: String,
    judge_rater: String,
    doc: Value,
}

fn load_fixtures() -> Vec<Fixture> {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("index.json")).unwrap())
            .unwrap();
    index["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let expected = fixture_dir().join(f["expected"].as_str().unwrap());
            Fixture {
                file: f["file"].as_str().unwrap().to_owned(),
                judge_rater: f["judge_rater"].as_str().unwrap().to_owned(),
                doc: serde_json::from_str(&std::fs::read_to_string(expected).unwrap()).unwrap(),
            }
        })
        .collect()
}

fn explicit(doc: &Value, max_units: usize) -> Resampling {
    let r = &doc["resamples"];
    let (count, seed) = (
        r["count"].as_u64().unwrap() as usize,
        r["seed"].as_u64().unwrap(),
    );
    let sets: BTreeMap<usize, Vec<Vec<usize>>> = (1..=max_units)
        .map(|n| (n, resample_sets(n, count, seed)))
        .collect();
    Resampling::Explicit {
        level: r["level"].as_f64().unwrap(),
        sets,
    }
}

#[test]
fn splitmix_matches_the_generator() {
    // Printed by the Python generator's `resample_sets(10, 1)` and `resample_sets(7, 2)`.
    assert_eq!(
        resample_sets(10, 1, 0x7E57),
        vec![vec![5, 9, 9, 7, 7, 8, 6, 6, 6, 7]]
    );
    assert_eq!(
        resample_sets(7, 2, 0x7E57),
        vec![vec![2, 1, 5, 3, 2, 3, 1], vec![0, 1, 5, 5, 1, 4, 2]]
    );
}

#[test]
fn reports_match_the_reference_implementations() {
    let catalog = Catalog::builtin().unwrap();
    let fixtures = load_fixtures();
    assert!(fixtures.len() >= 3, "at least three rating sets");
    let mut failures = Vec::new();
    for f in &fixtures {
        let file = read_ratings(&fixture_dir().join(&f.file), &catalog).unwrap();
        let ds = Dataset::from_ratings(&file, &f.judge_rater, &catalog).unwrap();
        let resampling = explicit(&f.doc, ds.counts.dialogues);
        let report = validate(&ds, &resampling).unwrap();
        let got = serde_json::to_value(&report).unwrap();
        let mut want = f.doc["expected"].clone();
        let calibration = want.as_object_mut().unwrap().remove("calibration").unwrap();

        let mut errors = Vec::new();
        compare(&want, &got, "", &mut errors);
        // The reverse: every number or null the library reports is in the reference, except the
        // echo of the inputs and settings.
        let mut ours = Vec::new();
        for key in ["counts", "items", "session", "safety"] {
            leaves(&got[key], &format!(".{key}"), &mut ours);
        }
        for path in ours {
            if lookup(&want, &path).is_none() {
                errors.push(format!("{path}: reported but not in the reference"));
            }
        }

        // Calibration: the isotonic map at every scale point equals sklearn's predict.
        let fit = fit_calibration(&ds).unwrap();
        for (item, c) in calibration.as_object().unwrap() {
            if c.get("skipped").is_some() {
                if !fit.skipped.iter().any(|s| &s.item == item) {
                    errors.push(format!("calibration.{item}: should be skipped"));
                }
                continue;
            }
            let Some(map) = fit.calibration.items.get(item) else {
                errors.push(format!("calibration.{item}: not fitted"));
                continue;
            };
            if map.n as u64 != c["n"].as_u64().unwrap() {
                errors.push(format!("calibration.{item}.n: {} vs {}", map.n, c["n"]));
            }
            for (s, want) in c["predict"].as_array().unwrap().iter().enumerate() {
                let got = map.apply(s as f64);
                let want = want.as_f64().unwrap();
                if (got - want).abs() > TOL {
                    errors.push(format!("calibration.{item}({s}): want {want}, got {got}"));
                }
            }
        }
        if !errors.is_empty() {
            failures.push(format!(
                "{} ({} mismatches):\n  {}",
                f.file,
                errors.len(),
                errors.into_iter().take(40).collect::<Vec<_>>().join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixtures_exercise_the_edge_cases() {
    // Guard against a regenerated fixture set that quietly lost its hard cases.
    let fixtures = load_fixtures();
    let get = |file: &str| {
        &fixtures
            .iter()
            .find(|f| f.file == file)
            .unwrap_or_else(|| panic!("fixture {file}"))
            .doc["expected"]
    };
    let three = get("three_experts.csv");
    assert!(three["items"]["homework"]["judge_vs_experts"]["spearman"]["value"].is_null());
    assert!(three["items"]["agenda"]["judge_vs_experts"]["spearman"]["value"].is_null());
    assert!(three["safety"]["unaddressed_abuse"]["f1"]["value"].is_null());
    assert!(three["counts"]["unscored_rows"].as_u64().unwrap() > 0);
    let two = get("two_experts_double20.csv");
    assert_eq!(two["counts"]["experts"].as_array().unwrap().len(), 2);
    assert_eq!(two["items"]["agenda"]["expert_vs_expert"]["n"], 8);
    assert!(two["items"]["agenda"]["expert_vs_expert"]["icc2_1"]["value"].is_number());
    let tiny = get("tiny.csv");
    assert!(tiny["items"]["feedback"]["judge_vs_experts"]["ci95"]["spearman"]["low"].is_null());
    assert!(tiny["items"]["guided_discovery"]["expert_vs_expert"]["icc2_1"]["value"].is_null());
    assert_eq!(tiny["counts"]["judge_ratings_without_experts"], 2);
    assert!(
        get("four_experts.jsonl")["counts"]["experts"]
            .as_array()
            .unwrap()
            .len()
            == 4
    );
    assert!(get("wide.csv")["items"].as_object().unwrap().len() == 11);
}
