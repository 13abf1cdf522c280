//! Benchmark (not a test): the whole `validate` report with 10,000 bootstrap resamples per
//! interval on a TherapyJudgeBench-sized ratings file, timed; `bench/validate/run.sh` times
//! `scipy.stats.bootstrap` on the same file for the same intervals.
//!
//! Data: 116 dialogues x 11 CTRS items + 4 safety labels. Each dialogue is rated by one of three
//! experts, and 24 dialogues (~20%) by a second one; 6 expert item ratings are left empty, so
//! the single-expert item ratings number 1,270 (116 x 11 - 6); the judge rates everything.
//!
//! `cargo run --release -p therapygym-validate --example validate_bench -- [OUT_DIR] [RESAMPLES]`

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use therapygym_validate::stats::BootstrapConfig;
use therapygym_validate::{Catalog, Dataset, Resampling, read_ratings, validate};

const DIALOGUES: usize = 116;
const DOUBLE_EVERY: usize = 5; // dialogues 0, 5, ..., 115 get a second expert: 24 of 116
const EMPTY: usize = 6;
const REPEATS: usize = 3;
const SEED: u64 = 7;

/// splitmix64: a tiny deterministic generator, so the data needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal noise (sum of four uniforms), standard deviation `sd`.
    fn noise(&mut self, sd: f64) -> f64 {
        let s: f64 = (0..4).map(|_| self.unit() * 2.0 - 1.0).sum();
        s * sd / 1.1547
    }
}

fn score(latent: f64) -> i64 {
    latent.round().clamp(0.0, 6.0) as i64
}

fn ratings_csv(catalog: &Catalog) -> String {
    let mut rng = Rng(2026);
    let experts = ["e1", "e2", "e3"];
    let mut out = String::from("dialogue_id,rater,item,score\n");
    let mut single = 0usize;
    for d in 0..DIALOGUES {
        let id = format!("tjb-{d:03}");
        let quality = 0.5 + 5.0 * rng.unit();
        let mut raters = vec![experts[d % 3]];
        if d % DOUBLE_EVERY == 0 {
            raters.push(experts[(d + 1) % 3]);
        }
        for item in &catalog.items {
            let latent = quality + rng.noise(0.8);
            for (k, r) in raters.iter().enumerate() {
                let s = score(latent + rng.noise(0.8));
                let empty = k == 0 && single % (DIALOGUES * 11 / EMPTY) == 7;
                if k == 0 {
                    single += 1;
                }
                let cell = if empty { String::new() } else { s.to_string() };
                out.push_str(&format!("{id},{r},{},{cell}\n", item.id));
            }
            let j = score(latent + 0.4 + rng.noise(1.0));
            out.push_str(&format!("{id},judge,{},{j}\n", item.id));
        }
        for label in catalog.labels.iter().take(4) {
            let risk = rng.unit() < 0.15;
            for r in &raters {
                let flag = if rng.unit() < 0.9 { risk } else { !risk };
                out.push_str(&format!("{id},{r},{label},{}\n", u8::from(flag)));
            }
            let flag = if rng.unit() < 0.85 { risk } else { !risk };
            out.push_str(&format!("{id},judge,{label},{}\n", u8::from(flag)));
        }
    }
    out
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/therapygym-validate-bench".to_owned()),
    );
    let resamples: usize = match args.next() {
        Some(s) => s.parse()?,
        None => 10_000,
    };
    std::fs::create_dir_all(&dir)?;
    let catalog = Catalog::builtin()?;
    let path = dir.join("ratings.csv");
    std::fs::write(&path, ratings_csv(&catalog))?;

    let run = |b: usize| -> Result<(f64, therapygym_validate::Report), Box<dyn Error>> {
        let mut best = f64::INFINITY;
        let mut last = None;
        for _ in 0..REPEATS {
            let t = Instant::now();
            let file = read_ratings(&path, &catalog)?;
            let ds = Dataset::from_ratings(&file, "judge", &catalog)?;
            let r = validate(&ds, &Resampling::Seeded(BootstrapConfig::new(b, SEED)))?;
            best = best.min(t.elapsed().as_secs_f64());
            last = Some(r);
        }
        Ok((best, last.ok_or("no repeat ran")?))
    };
    let (t_point, _) = run(0)?;
    let (t_full, report) = run(resamples)?;
    std::fs::write(
        dir.join("rust_report.json"),
        serde_json::to_string(&report)?,
    )?;

    let c = &report.counts;
    let intervals = report.items.0.len() * 5 + 3 + report.safety.0.len() * 2;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "data: {} dialogues, {} expert ratings ({} unscored rows), {} judge ratings, experts {:?}",
        c.dialogues, c.expert_ratings, c.unscored_rows, c.judge_ratings, c.experts
    )?;
    writeln!(
        out,
        "rust: whole report, {intervals} intervals x B = {resamples}: {t_full:.4} s (best of {REPEATS}); without intervals: {t_point:.4} s"
    )?;
    let s = &report.session;
    if let (Some(v), Some((lo, hi))) = (s.spearman.value(), s.ci95.spearman.bounds()) {
        writeln!(out, "rust: session spearman {v:.4} CI [{lo:.4}, {hi:.4}]")?;
    }
    writeln!(out, "RUST_SECONDS={t_full}")?;
    writeln!(out, "RUST_POINT_SECONDS={t_point}")?;
    writeln!(out, "wrote {}", path.display())?;
    Ok(())
}
