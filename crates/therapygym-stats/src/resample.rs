//! Fast paired statistics on bootstrap resamples.
//!
//! A resample repeats units; instead of gathering and re-sorting the repeated values, we count
//! how often each distinct (x, y) pair was drawn and rank the distinct values, sorted once up
//! front, by cumulative multiplicity. Spearman then costs O(draws + distinct pairs) per resample
//! with no allocation. The results equal the plain functions applied to the gathered resample
//! (up to rounding; checked by the tests below and the reference fixtures).

use crate::correlation::{KendallScratch, check_pair, cmp_f64, kendall_core, pearson_core};
use crate::error::StatsError;
use crate::stat::{Stat, reason};

/// Paired observations (x = judge, y = reference) grouped into resampling units.
///
/// Built once per statistic; each method takes the resampled unit indices (as passed to the
/// closure of [`crate::bootstrap_ci`]) and evaluates on the rows of those units, with
/// multiplicity. With [`PairedResampler::new`] each row is its own unit; with
/// [`PairedResampler::clustered`] several rows (e.g. the items of one dialogue) move together.
///
/// Internally rows are collapsed into *cells* of identical (x, y) pairs, and cells index into the
/// sorted distinct x and y values. A resample is then just a weight per cell, from which average
/// ranks follow by one pass over the distinct values: on a 0..=6 rating scale that is a few
/// dozen cells however many rows there are.
#[derive(Debug, Clone)]
pub struct PairedResampler {
    n_units: usize,
    /// CSR layout of the cells of each unit's rows: `unit_cells[unit_start[u]..unit_start[u + 1]]`.
    unit_start: Vec<usize>,
    unit_cells: Vec<u32>,
    /// Every unit has exactly one row (plain paired bootstrap): skip the CSR indirection.
    one_row_per_unit: bool,
    /// Sorted distinct values.
    x_values: Vec<f64>,
    y_values: Vec<f64>,
    /// Index into `x_values` / `y_values` of each cell.
    cell_x: Vec<u32>,
    cell_y: Vec<u32>,
    // Scratch, reused across resamples.
    cell_w: Vec<u32>,
    group_x_w: Vec<u64>,
    group_y_w: Vec<u64>,
    rank_x: Vec<f64>,
    rank_y: Vec<f64>,
    gx: Vec<f64>,
    gy: Vec<f64>,
    kendall: KendallScratch,
}

fn distinct_sorted(v: &[f64]) -> Vec<f64> {
    let mut d = v.to_vec();
    d.sort_unstable_by(|a, b| cmp_f64(*a, *b));
    d.dedup_by(|a, b| a == b);
    d
}

fn position(sorted: &[f64], v: f64) -> u32 {
    sorted
        .binary_search_by(|p| cmp_f64(*p, v))
        .unwrap_or_else(|i| i) as u32
}

/// Outcome of a weighted average-rank pass over the distinct values.
enum RankPass {
    /// Fewer than two distinct values carry weight.
    Constant,
    /// Sum over tie groups of `W^3 - W`, for the rank variance.
    Ties(f64),
}

/// Average ranks (1-based, ties averaged) of each distinct value given its total weight.
fn rank_groups(weights: &[u64], ranks: &mut [f64]) -> RankPass {
    let mut position = 0u64;
    let mut groups = 0usize;
    let mut ties = 0.0;
    for (&w, rank) in weights.iter().zip(ranks.iter_mut()) {
        if w > 0 {
            groups += 1;
            let wf = w as f64;
            *rank = position as f64 + (wf + 1.0) / 2.0;
            position += w;
            ties += wf * wf * wf - wf;
        }
    }
    if groups < 2 {
        RankPass::Constant
    } else {
        RankPass::Ties(ties)
    }
}

impl PairedResampler {
    /// One row per unit: the bootstrap resamples (x_i, y_i) pairs.
    pub fn new(x: &[f64], y: &[f64]) -> Result<Self, StatsError> {
        let units: Vec<usize> = (0..x.len()).collect();
        Self::clustered(x, y, &units, x.len())
    }

    /// Rows grouped into `n_units` units by `unit_of_row[row]`: the bootstrap resamples whole
    /// units (e.g. dialogues), keeping all of a unit's rows (e.g. its items) together.
    pub fn clustered(
        x: &[f64],
        y: &[f64],
        unit_of_row: &[usize],
        n_units: usize,
    ) -> Result<Self, StatsError> {
        check_pair(x, y)?;
        if unit_of_row.len() != x.len() {
            return Err(StatsError::LengthMismatch {
                left: x.len(),
                right: unit_of_row.len(),
            });
        }
        if let Some(&index) = unit_of_row.iter().find(|&&u| u >= n_units) {
            return Err(StatsError::IndexOutOfRange { index, n_units });
        }
        let x_values = distinct_sorted(x);
        let y_values = distinct_sorted(y);
        let n_y = y_values.len() as u64;
        let key_of_row: Vec<u64> = x
            .iter()
            .zip(y)
            .map(|(&a, &b)| {
                u64::from(position(&x_values, a)) * n_y + u64::from(position(&y_values, b))
            })
            .collect();
        let mut keys = key_of_row.clone();
        keys.sort_unstable();
        keys.dedup();
        let cell_x = keys.iter().map(|k| (k / n_y.max(1)) as u32).collect();
        let cell_y = keys.iter().map(|k| (k % n_y.max(1)) as u32).collect();

        let mut unit_start = vec![0usize; n_units + 1];
        for &u in unit_of_row {
            unit_start[u + 1] += 1;
        }
        for u in 0..n_units {
            unit_start[u + 1] += unit_start[u];
        }
        let mut fill = unit_start.clone();
        let mut unit_cells = vec![0u32; x.len()];
        for (row, &u) in unit_of_row.iter().enumerate() {
            let cell = keys.binary_search(&key_of_row[row]).unwrap_or(0) as u32;
            unit_cells[fill[u]] = cell;
            fill[u] += 1;
        }
        let one_row_per_unit = unit_start.windows(2).all(|w| w[1] - w[0] == 1);
        Ok(Self {
            n_units,
            unit_start,
            unit_cells,
            one_row_per_unit,
            cell_w: vec![0; keys.len()],
            group_x_w: vec![0; x_values.len()],
            group_y_w: vec![0; y_values.len()],
            rank_x: vec![0.0; x_values.len()],
            rank_y: vec![0.0; y_values.len()],
            x_values,
            y_values,
            cell_x,
            cell_y,
            gx: Vec::with_capacity(x.len()),
            gy: Vec::with_capacity(x.len()),
            kendall: KendallScratch::default(),
        })
    }

    /// Number of resampling units (pass this to [`crate::bootstrap_ci`]).
    pub fn n_units(&self) -> usize {
        self.n_units
    }

    /// Cell weights of the resample; returns the number of rows, or `None` for a bad index.
    fn set_weights(&mut self, idx: &[usize]) -> Option<u64> {
        self.cell_w.fill(0);
        if self.one_row_per_unit {
            for &u in idx {
                let cell = *self.unit_cells.get(u)?;
                self.cell_w[cell as usize] += 1;
            }
            return Some(idx.len() as u64);
        }
        let mut rows = 0u64;
        for &u in idx {
            let (start, end) = (*self.unit_start.get(u)?, *self.unit_start.get(u + 1)?);
            for &cell in &self.unit_cells[start..end] {
                self.cell_w[cell as usize] += 1;
            }
            rows += (end - start) as u64;
        }
        Some(rows)
    }

    /// Per distinct x (and y) value, its total weight in the resample.
    fn group_weights(&mut self) {
        self.group_x_w.fill(0);
        self.group_y_w.fill(0);
        for ((&w, &cx), &cy) in self.cell_w.iter().zip(&self.cell_x).zip(&self.cell_y) {
            self.group_x_w[cx as usize] += u64::from(w);
            self.group_y_w[cy as usize] += u64::from(w);
        }
    }

    /// Iterates `(weight, x, y)` over the cells present in the resample.
    fn cells(&self) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        self.cell_w
            .iter()
            .zip(&self.cell_x)
            .zip(&self.cell_y)
            .filter(|((w, _), _)| **w > 0)
            .map(|((&w, &cx), &cy)| {
                (
                    f64::from(w),
                    self.x_values[cx as usize],
                    self.y_values[cy as usize],
                )
            })
    }

    /// Spearman's rho of the resample, as `scipy.stats.spearmanr` on the gathered rows.
    pub fn spearman(&mut self, idx: &[usize]) -> Stat {
        let Some(n) = self.set_weights(idx) else {
            return Stat::undefined(reason::INDEX_OUT_OF_RANGE);
        };
        if n < 2 {
            return Stat::undefined(reason::FEWER_THAN_2_PAIRS);
        }
        self.group_weights();
        let tx = match rank_groups(&self.group_x_w, &mut self.rank_x) {
            RankPass::Constant => return Stat::undefined(reason::CONSTANT_X),
            RankPass::Ties(t) => t,
        };
        let ty = match rank_groups(&self.group_y_w, &mut self.rank_y) {
            RankPass::Constant => return Stat::undefined(reason::CONSTANT_Y),
            RankPass::Ties(t) => t,
        };
        // Ranks 1..=n average (n + 1) / 2 whatever the ties; their sum of squared deviations is
        // (n^3 - n - sum(W^3 - W)) / 12.
        let nf = n as f64;
        let mean = (nf + 1.0) / 2.0;
        let mut sxy = 0.0;
        for ((&w, &cx), &cy) in self.cell_w.iter().zip(&self.cell_x).zip(&self.cell_y) {
            if w > 0 {
                sxy += f64::from(w)
                    * (self.rank_x[cx as usize] - mean)
                    * (self.rank_y[cy as usize] - mean);
            }
        }
        let base = nf * nf * nf - nf;
        let sxx = (base - tx) / 12.0;
        let syy = (base - ty) / 12.0;
        let r = (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0);
        Stat::finite_or(r, reason::NON_FINITE)
    }

    /// Pearson's r of the resample, as `scipy.stats.pearsonr` on the gathered rows.
    pub fn pearson(&mut self, idx: &[usize]) -> Stat {
        let Some(n) = self.set_weights(idx) else {
            return Stat::undefined(reason::INDEX_OUT_OF_RANGE);
        };
        if n < 2 {
            return Stat::undefined(reason::FEWER_THAN_2_PAIRS);
        }
        self.group_weights();
        if self.group_x_w.iter().filter(|&&w| w > 0).count() < 2 {
            return Stat::undefined(reason::CONSTANT_X);
        }
        if self.group_y_w.iter().filter(|&&w| w > 0).count() < 2 {
            return Stat::undefined(reason::CONSTANT_Y);
        }
        let nf = n as f64;
        let (sx, sy) = self
            .cells()
            .fold((0.0, 0.0), |(sx, sy), (w, a, b)| (sx + w * a, sy + w * b));
        let (mx, my) = (sx / nf, sy / nf);
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (w, a, b) in self.cells() {
            let (da, db) = (a - mx, b - my);
            sxy += w * da * db;
            sxx += w * da * da;
            syy += w * db * db;
        }
        let mut r = (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0);
        if n == 2 {
            r = r.round();
        }
        Stat::finite_or(r, reason::NON_FINITE)
    }

    /// Gathers the resampled rows (grouped by cell) into the scratch buffers.
    fn gather(&mut self, idx: &[usize]) -> bool {
        if self.set_weights(idx).is_none() {
            return false;
        }
        self.gx.clear();
        self.gy.clear();
        for ((&w, &cx), &cy) in self.cell_w.iter().zip(&self.cell_x).zip(&self.cell_y) {
            let (a, b) = (self.x_values[cx as usize], self.y_values[cy as usize]);
            for _ in 0..w {
                self.gx.push(a);
                self.gy.push(b);
            }
        }
        true
    }

    /// Kendall's tau-b of the resample (gathers into reused buffers; O(n log n)).
    pub fn kendall_tau_b(&mut self, idx: &[usize]) -> Stat {
        if !self.gather(idx) {
            return Stat::undefined(reason::INDEX_OUT_OF_RANGE);
        }
        kendall_core(&self.gx, &self.gy, &mut self.kendall)
    }

    /// Mean absolute error of the resample.
    pub fn mae(&mut self, idx: &[usize]) -> Stat {
        let Some(n) = self.set_weights(idx) else {
            return Stat::undefined(reason::INDEX_OUT_OF_RANGE);
        };
        if n == 0 {
            return Stat::undefined(reason::EMPTY);
        }
        let sum: f64 = self.cells().map(|(w, a, b)| w * (a - b).abs()).sum();
        Stat::finite_or(sum / n as f64, reason::NON_FINITE)
    }

    /// Pearson's r via the generic gather path; for cross-checking the weighted fast path.
    pub fn pearson_gathered(&mut self, idx: &[usize]) -> Stat {
        if !self.gather(idx) {
            return Stat::undefined(reason::INDEX_OUT_OF_RANGE);
        }
        pearson_core(&self.gx, &self.gy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlation::{kendall_tau_b, mae, pearson, spearman};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn close(a: &Stat, b: &Stat) -> bool {
        match (a.value(), b.value()) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-12,
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn fast_paths_equal_plain_functions_on_gathered_rows() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        for n in [1usize, 2, 3, 5, 12, 40] {
            let x: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(0..5u8)))
                .collect();
            let y: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(0..4u8)) * 0.5)
                .collect();
            let mut r = PairedResampler::new(&x, &y).unwrap();
            for _ in 0..200 {
                let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
                let gx: Vec<f64> = idx.iter().map(|&i| x[i]).collect();
                let gy: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
                let pairs = [
                    (r.spearman(&idx), spearman(&gx, &gy).unwrap()),
                    (r.pearson(&idx), pearson(&gx, &gy).unwrap()),
                    (r.pearson_gathered(&idx), pearson(&gx, &gy).unwrap()),
                    (r.kendall_tau_b(&idx), kendall_tau_b(&gx, &gy).unwrap()),
                    (r.mae(&idx), mae(&gx, &gy).unwrap()),
                ];
                for (k, (fast, plain)) in pairs.iter().enumerate() {
                    assert!(close(fast, plain), "stat {k} n={n}: {fast:?} vs {plain:?}");
                    assert_eq!(fast.reason(), plain.reason(), "stat {k}");
                }
            }
        }
    }

    #[test]
    fn clustered_units_move_together() {
        // Two units of three rows each.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0];
        let y = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0];
        let units = [0, 0, 0, 1, 1, 1];
        let mut r = PairedResampler::clustered(&x, &y, &units, 2).unwrap();
        assert_eq!(r.n_units(), 2);
        let idx = [1, 1];
        let gx = [4.0, 5.0, 7.0, 4.0, 5.0, 7.0];
        let gy = [5.0, 4.0, 6.0, 5.0, 4.0, 6.0];
        assert!(close(&r.spearman(&idx), &spearman(&gx, &gy).unwrap()));
        assert!(close(
            &r.kendall_tau_b(&idx),
            &kendall_tau_b(&gx, &gy).unwrap()
        ));
        assert!(close(&r.spearman(&[0, 1]), &spearman(&x, &y).unwrap()));
        assert!(PairedResampler::clustered(&x, &y, &units, 1).is_err());
    }

    #[test]
    fn out_of_range_index_is_undefined() {
        let mut r = PairedResampler::new(&[1.0, 2.0], &[2.0, 1.0]).unwrap();
        assert_eq!(
            r.spearman(&[0, 2]),
            Stat::undefined(reason::INDEX_OUT_OF_RANGE)
        );
    }
}
