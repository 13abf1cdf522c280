#!/usr/bin/env python3
"""Times scipy.stats.bootstrap on the data written by the Rust example `bootstrap_bench`.

Same pairs (1,270 judge vs expert-consensus ratings), same statistic (Spearman), same method
(paired percentile bootstrap, 10,000 resamples, 95%). Two scipy variants are timed:

* `spearmanr` per resample (vectorized=False): the straightforward way to call it;
* a vectorized statistic (rankdata along the resample axis + Pearson on the ranks, batched),
  the fastest pure-scipy formulation.

Usage: scipy_bootstrap.py DATA.json   (prints SCIPY_SECONDS=... for run.sh)
"""

import json
import sys
import time

import numpy as np
import scipy
from scipy import stats


def spearman_loop(x, y):
    return stats.spearmanr(x, y).statistic


def spearman_vectorized(x, y, axis=-1):
    rx = stats.rankdata(x, axis=axis)
    ry = stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    return (rx * ry).sum(axis=axis) / np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))


def run(x, y, statistic, vectorized, resamples, batch=None):
    t = time.perf_counter()
    res = stats.bootstrap(
        (x, y), statistic, paired=True, vectorized=vectorized, n_resamples=resamples,
        batch=batch, method="percentile", confidence_level=0.95, rng=np.random.default_rng(7),
    )
    return time.perf_counter() - t, res.confidence_interval


def main() -> int:
    data = json.load(open(sys.argv[1]))
    x, y = np.array(data["judge"], float), np.array(data["consensus"], float)
    b = data["resamples"]
    point = stats.spearmanr(x, y).statistic
    assert abs(point - data["spearman"]["value"]) < 1e-9, (point, data["spearman"])
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '')} x{i['num_threads']}" for i in threadpool_info())
    except Exception:  # threadpoolctl is optional
        blas = "unknown"
    t_loop, ci_loop = run(x, y, spearman_loop, False, b)
    t_vec, ci_vec = run(x, y, spearman_vectorized, True, b, batch=500)
    print(f"scipy {scipy.__version__}, numpy {np.__version__}; BLAS: {blas}")
    print(f"scipy bootstrap, spearmanr per resample:  {t_loop:.4f} s  CI [{ci_loop.low:.4f}, {ci_loop.high:.4f}]")
    print(f"scipy bootstrap, vectorized ranks:        {t_vec:.4f} s  CI [{ci_vec.low:.4f}, {ci_vec.high:.4f}]")
    print(f"SCIPY_SECONDS={t_loop}")
    print(f"SCIPY_VECTORIZED_SECONDS={t_vec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
