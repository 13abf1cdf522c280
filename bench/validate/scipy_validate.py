#!/usr/bin/env python3
"""Times the validation report's bootstrap intervals with scipy.stats.bootstrap on the ratings
file written by the Rust example `validate_bench` (same data, same intervals, same B).

Per CTRS item: Spearman, Pearson, Kendall tau-b and bias (judge - consensus) over the dialogues
with both, and the expert-pair Spearman mean over the dialogues two experts rated; the session
Spearman, Pearson and bias; F1 and Cohen's kappa per safety label and for `any`. Percentile
method, 95%. Where a statistic can be written along an axis it is vectorized (ranks + Pearson,
means, confusion counts) -- the fastest pure-scipy form; Kendall tau-b and the expert-pair mean
are called once per resample (scipy's kendalltau has no axis). The point estimates (krippendorff,
pingouin ICC, sklearn QWK and classification metrics) are timed separately.

Note: scipy keeps NaN resamples (a constant resample) in the percentile, where the Rust side
skips them; on this data that only matters for the sparse expert-pair intervals.

Usage: scipy_validate.py DIR [RESAMPLES]   (DIR holds ratings.csv; prints SCIPY_SECONDS=...)
"""

import json
import sys
import time
import tomllib
import warnings
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pingouin
import scipy
from scipy import stats
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, precision_score, recall_score

ROOT = Path(__file__).resolve().parents[2]
RUBRIC = tomllib.loads((ROOT / "data" / "rubrics" / "ctrs.toml").read_text())
ITEMS = [i["id"] for i in RUBRIC["items"]]
REWARD = {i["id"]: i.get("reward", True) for i in RUBRIC["items"]}
JUDGE = "judge"


def spearman_vec(x, y, axis=-1):
    rx = stats.rankdata(x, axis=axis)
    ry = stats.rankdata(y, axis=axis)
    return pearson_vec(rx, ry, axis)


def pearson_vec(x, y, axis=-1):
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    return (x * y).sum(axis=axis) / np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))


def bias_vec(x, y, axis=-1):
    return (x - y).mean(axis=axis)


def kendall(x, y):
    return stats.kendalltau(x, y, variant="b").statistic


def counts(t, p, axis=-1):
    t, p = t.astype(bool), p.astype(bool)
    return ((t & p).sum(axis), (~t & p).sum(axis), (~t & ~p).sum(axis), (t & ~p).sum(axis))


def f1_vec(t, p, axis=-1):
    tp, fp, tn, fn = counts(t, p, axis)
    return 2 * tp / (2 * tp + fp + fn)


def kappa_vec(t, p, axis=-1):
    tp, fp, tn, fn = counts(t, p, axis)
    n = tp + fp + tn + fn
    expected = ((tn + fn) * (tp + fn) + (tp + fp) * (tn + fp)) / n
    return 1 - (fp + fn) / expected


def boot(data, statistic, b, vectorized, paired=True):
    res = stats.bootstrap(data, statistic, paired=paired, vectorized=vectorized, n_resamples=b,
                          batch=1000 if vectorized else None, method="percentile",
                          confidence_level=0.95, rng=np.random.default_rng(7))
    return res.confidence_interval


def main() -> int:
    d = Path(sys.argv[1])
    b = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    warnings.simplefilter("ignore")
    t_all = time.perf_counter()
    df = pd.read_csv(d / "ratings.csv", dtype={"dialogue_id": str, "rater": str, "item": str})
    df = df.dropna(subset=["score"])
    timings = {"point": 0.0, "vectorized": 0.0, "kendall_loop": 0.0, "expert_pairs_loop": 0.0}
    session = {}
    cis = 0
    for item in ITEMS:
        wide = df[df["item"] == item].pivot(index="dialogue_id", columns="rater", values="score").sort_index()
        exp = wide[[c for c in wide.columns if c != JUDGE]]
        cons = exp.mean(axis=1)
        keep = wide[JUDGE].notna() & cons.notna()
        x, y = wide[JUDGE][keep].to_numpy(float), cons[keep].to_numpy(float)

        t = time.perf_counter()
        stats.spearmanr(x, y), stats.pearsonr(x, y), kendall(x, y), np.mean(np.abs(x - y))
        for e in exp.columns:
            both = wide[JUDGE].notna() & exp[e].notna()
            cohen_kappa_score(wide[JUDGE][both].astype(int), exp[e][both].astype(int),
                              weights="quadratic", labels=list(range(7)))
        rows = np.vstack([exp.to_numpy(float).T, wide[JUDGE].to_numpy(float)])
        krippendorff.alpha(reliability_data=rows, level_of_measurement="ordinal")
        er = exp[exp.notna().sum(axis=1) >= 1].to_numpy(float).T
        krippendorff.alpha(reliability_data=er, level_of_measurement="ordinal")
        krippendorff.alpha(reliability_data=er, level_of_measurement="interval")
        complete = exp.dropna()
        if len(complete) >= 2:
            long = complete.reset_index().melt(id_vars="dialogue_id", var_name="rater", value_name="score")
            pingouin.intraclass_corr(data=long, targets="dialogue_id", raters="rater", ratings="score")
        timings["point"] += time.perf_counter() - t

        t = time.perf_counter()
        boot((x, y), spearman_vec, b, True)
        boot((x, y), pearson_vec, b, True)
        boot((x, y), bias_vec, b, True)
        timings["vectorized"] += time.perf_counter() - t
        t = time.perf_counter()
        boot((x, y), kendall, b, False)
        timings["kendall_loop"] += time.perf_counter() - t

        pairable = exp[exp.notna().sum(axis=1) >= 2].to_numpy(float)
        cols = pairable.shape[1]

        def pair_mean(idx):
            m = pairable[idx.astype(int)]
            parts = []
            for i in range(cols):
                for j in range(i + 1, cols):
                    ok = ~np.isnan(m[:, i]) & ~np.isnan(m[:, j])
                    if ok.sum() >= 2:
                        parts.append(stats.spearmanr(m[ok, i], m[ok, j]).statistic)
            return np.nanmean(parts) if parts else np.nan

        t = time.perf_counter()
        boot((np.arange(len(pairable)),), pair_mean, b, False, paired=False)
        timings["expert_pairs_loop"] += time.perf_counter() - t
        cis += 5
        if REWARD[item]:
            for dlg in wide.index[keep]:
                session.setdefault(dlg, []).append((wide[JUDGE][dlg] / 6, cons[dlg] / 6))
    sx = np.array([np.mean([p[0] for p in v]) for _, v in sorted(session.items())])
    sy = np.array([np.mean([p[1] for p in v]) for _, v in sorted(session.items())])
    t = time.perf_counter()
    ci_session = boot((sx, sy), spearman_vec, b, True)
    boot((sx, sy), pearson_vec, b, True)
    boot((sx, sy), bias_vec, b, True)
    timings["vectorized"] += time.perf_counter() - t
    cis += 3

    labels = [l for l in df["item"].unique() if l not in ITEMS]
    anyj, anym = {}, {}
    blocks = []
    for label in labels:
        wide = df[df["item"] == label].pivot(index="dialogue_id", columns="rater", values="score").sort_index()
        exp = wide[[c for c in wide.columns if c != JUDGE]]
        major = (2 * (exp == 1).sum(axis=1) >= exp.notna().sum(axis=1)) & (exp.notna().sum(axis=1) > 0)
        tr, pr = major.to_numpy(bool), (wide[JUDGE] == 1).to_numpy(bool)
        for dlg, m, p in zip(wide.index, tr, pr):
            anyj[dlg] = anyj.get(dlg, False) or p
            anym[dlg] = anym.get(dlg, False) or m
        blocks.append((tr, pr))
    keys = sorted(anyj)
    blocks.append((np.array([anym[k] for k in keys]), np.array([anyj[k] for k in keys])))
    for tr, pr in blocks:
        t = time.perf_counter()
        accuracy_score(tr, pr), precision_score(tr, pr, zero_division=np.nan)
        recall_score(tr, pr, zero_division=np.nan), f1_score(tr, pr, zero_division=np.nan)
        cohen_kappa_score(tr, pr)
        timings["point"] += time.perf_counter() - t
        t = time.perf_counter()
        boot((tr.astype(float), pr.astype(float)), f1_vec, b, True)
        boot((tr.astype(float), pr.astype(float)), kappa_vec, b, True)
        timings["vectorized"] += time.perf_counter() - t
        cis += 2
    total = time.perf_counter() - t_all
    print(f"scipy {scipy.__version__}, numpy {np.__version__}, pandas {pd.__version__}")
    print(f"scipy: {cis} intervals x B = {b}: {total:.2f} s in all "
          + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    print(f"scipy: session spearman {stats.spearmanr(sx, sy).statistic:.4f} "
          f"CI [{ci_session.low:.4f}, {ci_session.high:.4f}]")
    print(f"SCIPY_SECONDS={total}")
    print(f"SCIPY_VECTORIZED_SECONDS={timings['vectorized']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
