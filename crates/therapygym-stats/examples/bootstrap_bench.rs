//! Bootstrap benchmark (not a test): Spearman of judge vs expert consensus with 10,000 percentile
//! bootstrap resamples on 1,270 ratings (116 dialogues x 11 items, 6 judge ratings missing,
//! 3 experts). Writes the data and the timings as JSON so `bench/stats/scipy_bootstrap.py` can
//! time `scipy.stats.bootstrap` on the same pairs; `bench/stats/run.sh` runs both.
//!
//! `cargo run --release -p therapygym-stats --example bootstrap_bench -- [OUT.json] [RESAMPLES]`

use std::error::Error;
use std::io::Write;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use therapygym_stats::{
    BootstrapConfig, Ci, PairedResampler, Stat, bootstrap_ci, for_each_resample, spearman,
};

const DIALOGUES: usize = 116;
const ITEMS: usize = 11;
const EXPERTS: usize = 3;
const MISSING_JUDGE: usize = 6;
const REPEATS: usize = 3;

struct Data {
    judge: Vec<f64>,
    consensus: Vec<f64>,
    dialogue: Vec<usize>,
}

fn score(rng: &mut ChaCha8Rng, latent: f64, sd: f64) -> f64 {
    // Sum of uniforms: a cheap, deterministic, roughly normal noise term.
    let noise: f64 = (0..4).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>() * sd / 1.15;
    (latent + noise).round().clamp(0.0, 6.0)
}

fn build() -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let mut slots = Vec::new();
    for d in 0..DIALOGUES {
        let quality = rng.random_range(0.5..5.5);
        for _ in 0..ITEMS {
            let latent = quality + rng.random_range(-0.8..0.8);
            let experts: f64 = (0..EXPERTS).map(|_| score(&mut rng, latent, 0.8)).sum();
            let judge = score(&mut rng, latent + 0.3, 1.0);
            slots.push((d, judge, experts / EXPERTS as f64));
        }
    }
    // Drop a few judge ratings (parse failures), spread over the table: 1,276 -> 1,270.
    let step = slots.len() / MISSING_JUDGE;
    let slots: Vec<_> = slots
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % step != step / 2 || i / step >= MISSING_JUDGE)
        .map(|(_, s)| s)
        .collect();
    Data {
        dialogue: slots.iter().map(|s| s.0).collect(),
        judge: slots.iter().map(|s| s.1).collect(),
        consensus: slots.iter().map(|s| s.2).collect(),
    }
}

/// Best-of-`REPEATS` wall time of `f`, with its last result.
fn time<T>(mut f: impl FnMut() -> Result<T, Box<dyn Error>>) -> Result<(f64, T), Box<dyn Error>> {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..REPEATS {
        let t = Instant::now();
        let r = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    Ok((best, out.ok_or("no repeat ran")?))
}

fn ci_json(seconds: f64, ci: &Ci) -> serde_json::Value {
    serde_json::json!({ "seconds": seconds, "ci": ci })
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let out_path = args
        .next()
        .unwrap_or_else(|| "/tmp/therapygym-stats-bench/data.json".to_owned());
    let resamples: usize = match args.next() {
        Some(s) => s.parse()?,
        None => 10_000,
    };
    let data = build();
    let n = data.judge.len();
    let config = BootstrapConfig::new(resamples, 7);
    let point = spearman(&data.judge, &data.consensus)?;

    // Fast path: weighted ranks from counts, no sort or allocation per resample.
    let mut fast = PairedResampler::new(&data.judge, &data.consensus)?;
    let (t_fast, ci_fast) = time(|| Ok(bootstrap_ci(n, &config, |idx| fast.spearman(idx))?))?;

    // Floor: drawing the resample indices alone.
    let (t_draws, _) = time(|| {
        let mut sink = 0usize;
        for_each_resample(n, resamples, 7, |idx| sink = sink.wrapping_add(idx[0]));
        Ok(std::hint::black_box(sink))
    })?;

    // Generic path: gather the resample, then the plain spearman (sorts every resample).
    let (mut gx, mut gy) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (t_generic, ci_generic) = time(|| {
        Ok(bootstrap_ci(n, &config, |idx| {
            gx.clear();
            gy.clear();
            gx.extend(idx.iter().map(|&i| data.judge[i]));
            gy.extend(idx.iter().map(|&i| data.consensus[i]));
            spearman(&gx, &gy).unwrap_or_else(|e| Stat::undefined(e.to_string()))
        })?)
    })?;

    // What the validation report does: resample whole dialogues (their 11 items move together).
    let mut clustered =
        PairedResampler::clustered(&data.judge, &data.consensus, &data.dialogue, DIALOGUES)?;
    let (t_clustered, ci_clustered) = time(|| {
        Ok(bootstrap_ci(DIALOGUES, &config, |idx| {
            clustered.spearman(idx)
        })?)
    })?;

    let report = serde_json::json!({
        "n_ratings": n,
        "n_dialogues": DIALOGUES,
        "items": ITEMS,
        "experts": EXPERTS,
        "resamples": resamples,
        "judge": data.judge,
        "consensus": data.consensus,
        "dialogue": data.dialogue,
        "spearman": point,
        "rust": {
            "fast_rows": ci_json(t_fast, &ci_fast),
            "draws_only_seconds": t_draws,
            "generic_rows": ci_json(t_generic, &ci_generic),
            "clustered_dialogues": ci_json(t_clustered, &ci_clustered),
        },
    });
    if let Some(dir) = std::path::Path::new(&out_path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out_path, serde_json::to_string(&report)?)?;

    let bounds = |ci: &Ci| {
        ci.bounds()
            .map_or("undefined".to_owned(), |(l, h)| format!("[{l:.4}, {h:.4}]"))
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "data: {n} ratings ({DIALOGUES} dialogues x {ITEMS} items, {MISSING_JUDGE} missing), \
         {EXPERTS} experts; spearman = {:.4}; B = {resamples}; best of {REPEATS}",
        point.value().unwrap_or(f64::NAN)
    )?;
    writeln!(
        out,
        "rust fast path (paired rows):     {t_fast:.4} s  CI {}",
        bounds(&ci_fast)
    )?;
    writeln!(out, "rust index draws only (floor):    {t_draws:.4} s")?;
    writeln!(
        out,
        "rust generic path (paired rows):  {t_generic:.4} s  CI {}",
        bounds(&ci_generic)
    )?;
    writeln!(
        out,
        "rust clustered (116 dialogues):   {t_clustered:.4} s  CI {}",
        bounds(&ci_clustered)
    )?;
    writeln!(out, "RUST_SECONDS={t_fast}")?;
    writeln!(out, "wrote {out_path}")?;
    Ok(())
}
