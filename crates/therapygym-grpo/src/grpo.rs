//! GRPO math on plain `f64` slices (`docs/design/grpo.md`): group advantages, the clipped
//! surrogate, the k3 KL estimator and the loss aggregation modes.
//!
//! Every function here is pure and mirrors one formula of the spec, so the engines' numbers can be
//! reproduced exactly in unit tests. The tensor versions used by the trainer live in
//! [`crate::loss`] and are tested against these.

use serde::{Deserialize, Serialize};

/// Default clip range of the ratio (ε_low = ε_high = 0.2 in TRL, verl and OpenRLHF).
pub const DEFAULT_CLIP_EPS: f64 = 0.2;
/// verl clamps the log-ratio to ±20 before `exp` so one wild token cannot overflow.
pub const DEFAULT_LOG_RATIO_CLAMP: f64 = 20.0;
/// verl and OpenRLHF clamp the k3 estimate to ±10.
pub const DEFAULT_KL_CLAMP: f64 = 10.0;

/// How a group's rewards are turned into advantages.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AdvantageNorm {
    /// `(r − mean) / (std + eps)` with the unbiased (Bessel) standard deviation.
    GroupStd {
        /// Added to the standard deviation; differs between engines.
        eps: f64,
    },
    /// Dr.GRPO: `r − mean`, no division.
    MeanOnly,
}

/// Engine presets (`docs/design/grpo.md`): advantage epsilon and loss aggregation.
///
/// Serialised with the spec's names: `verl`, `trl-dapo` (alias `trl`), `trl-grpo`, `openrlhf`,
/// `dr-grpo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// verl (the paper's engine; our default): ε 1e-6, token mean.
    Verl,
    /// TRL with its default `loss_type="dapo"`: ε 1e-4, token mean.
    #[serde(alias = "trl")]
    TrlDapo,
    /// TRL with `loss_type="grpo"`: ε 1e-4, mean of per-sequence token means.
    TrlGrpo,
    /// OpenRLHF: ε 1e-9, token mean.
    #[serde(rename = "openrlhf")]
    OpenRlhf,
    /// Dr.GRPO: no std division, Σ/(B·L) aggregation.
    DrGrpo,
}

impl Preset {
    /// Advantage normalisation of this preset.
    pub fn advantage_norm(self) -> AdvantageNorm {
        match self {
            Self::Verl => AdvantageNorm::GroupStd { eps: 1e-6 },
            Self::TrlDapo | Self::TrlGrpo => AdvantageNorm::GroupStd { eps: 1e-4 },
            Self::OpenRlhf => AdvantageNorm::GroupStd { eps: 1e-9 },
            Self::DrGrpo => AdvantageNorm::MeanOnly,
        }
    }

    /// Loss aggregation of this preset.
    pub fn loss_agg(self) -> LossAgg {
        match self {
            Self::Verl | Self::TrlDapo | Self::OpenRlhf => LossAgg::TokenMean,
            Self::TrlGrpo => LossAgg::SeqMeanTokenMean,
            Self::DrGrpo => LossAgg::DrGrpo,
        }
    }
}

/// What happened to one group when its advantages were computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupStatus {
    /// At least two distinct scored rewards: advantages carry signal.
    Informative,
    /// Every scored reward is equal: all advantages are exactly 0 (counted, not dropped).
    Degenerate,
    /// Fewer than two scored members: the whole group is left out of training.
    Dropped,
}

/// Advantages of one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupAdvantages {
    /// One entry per member, in input order; `None` = masked (unscored member or dropped group),
    /// never a silent 0 (`docs/design/unscored.md`).
    pub advantages: Vec<Option<f64>>,
    /// Outcome for the group.
    pub status: GroupStatus,
    /// Number of members with a usable reward.
    pub scored: usize,
}

/// Counts over a batch of groups, for the `reward/*` metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvantageStats {
    /// Groups seen.
    pub groups: usize,
    /// Groups with fewer than two scored members.
    pub dropped_groups: usize,
    /// Groups whose scored rewards were all equal.
    pub degenerate_groups: usize,
    /// Members without a usable reward.
    pub unscored: usize,
    /// Members that received an advantage (including zeros of degenerate groups).
    pub trained: usize,
}

/// Group-relative advantages for one group of rollouts of the same prompt.
///
/// `None` and non-finite rewards are unscored: they are excluded from the mean and the std and
/// get no advantage. A group with fewer than two scored members is [`GroupStatus::Dropped`]; a
/// group whose scored rewards are all equal gets exact zeros and is [`GroupStatus::Degenerate`]
/// (checked exactly, so float noise in the mean cannot turn into ±1e-8/ε advantages).
pub fn group_advantages(rewards: &[Option<f64>], norm: AdvantageNorm) -> GroupAdvantages {
    let scored: Vec<f64> = rewards
        .iter()
        .filter_map(|r| r.filter(|x| x.is_finite()))
        .collect();
    let n = scored.len();
    if n < 2 {
        return GroupAdvantages {
            advantages: vec![None; rewards.len()],
            status: GroupStatus::Dropped,
            scored: n,
        };
    }
    let usable = |r: &Option<f64>| r.filter(|x| x.is_finite());
    if scored.iter().all(|&r| r == scored[0]) {
        return GroupAdvantages {
            advantages: rewards.iter().map(|r| usable(r).map(|_| 0.0)).collect(),
            status: GroupStatus::Degenerate,
            scored: n,
        };
    }
    let mean = scored.iter().sum::<f64>() / n as f64;
    let scale = match norm {
        AdvantageNorm::MeanOnly => 1.0,
        AdvantageNorm::GroupStd { eps } => unbiased_std(&scored, mean) + eps,
    };
    GroupAdvantages {
        advantages: rewards
            .iter()
            .map(|r| usable(r).map(|x| (x - mean) / scale))
            .collect(),
        status: GroupStatus::Informative,
        scored: n,
    }
}

/// Unbiased (n − 1) standard deviation, as `torch.std` computes it.
fn unbiased_std(xs: &[f64], mean: f64) -> f64 {
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    (ss / (xs.len() as f64 - 1.0)).sqrt()
}

/// [`group_advantages`] for every group of a batch, plus the counts the trainer reports.
pub fn batch_advantages(
    groups: &[Vec<Option<f64>>],
    norm: AdvantageNorm,
) -> (Vec<GroupAdvantages>, AdvantageStats) {
    let mut stats = AdvantageStats::default();
    let out: Vec<GroupAdvantages> = groups
        .iter()
        .map(|g| {
            let a = group_advantages(g, norm);
            stats.groups += 1;
            stats.unscored += g.len() - a.scored;
            match a.status {
                GroupStatus::Dropped => stats.dropped_groups += 1,
                GroupStatus::Degenerate => {
                    stats.degenerate_groups += 1;
                    stats.trained += a.scored;
                }
                GroupStatus::Informative => stats.trained += a.scored,
            }
            a
        })
        .collect();
    (out, stats)
}

/// Clipping of the importance ratio (`docs/design/grpo.md`, "Clipped surrogate").
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Lower clip: ρ is clipped at `1 − eps_low`.
    pub eps_low: f64,
    /// Upper clip: ρ is clipped at `1 + eps_high`.
    pub eps_high: f64,
    /// The log-ratio is clamped to ±this before `exp` (verl: 20).
    pub log_ratio_clamp: f64,
    /// verl's dual clip for negative advantages (`clip_ratio_c`, typically 3.0); `None` = off.
    pub dual_clip_c: Option<f64>,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            eps_low: DEFAULT_CLIP_EPS,
            eps_high: DEFAULT_CLIP_EPS,
            log_ratio_clamp: DEFAULT_LOG_RATIO_CLAMP,
            dual_clip_c: None,
        }
    }
}

/// Importance ratio `ρ = exp(clamp(logp − logp_old, ±clamp))`.
pub fn importance_ratio(logp: f64, logp_old: f64, log_ratio_clamp: f64) -> f64 {
    (logp - logp_old)
        .clamp(-log_ratio_clamp, log_ratio_clamp)
        .exp()
}

/// Per-token clipped surrogate `ℓ = −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)·A)`, with verl's dual
/// clip `min(ℓ, −A·c)` for `A < 0` when configured.
pub fn clipped_surrogate(logp: f64, logp_old: f64, advantage: f64, cfg: &ClipConfig) -> f64 {
    let rho = importance_ratio(logp, logp_old, cfg.log_ratio_clamp);
    let clipped = rho.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high);
    let loss = (-rho * advantage).max(-clipped * advantage);
    match cfg.dual_clip_c {
        Some(c) if advantage < 0.0 => loss.min(-advantage * c),
        _ => loss,
    }
}

/// Whether the clipped branch is the active one for this token (TRL's `clip_ratio` metric:
/// ρ below `1 − ε_low` with A < 0, or above `1 + ε_high` with A > 0).
pub fn is_clipped(logp: f64, logp_old: f64, advantage: f64, cfg: &ClipConfig) -> bool {
    let rho = importance_ratio(logp, logp_old, cfg.log_ratio_clamp);
    (rho < 1.0 - cfg.eps_low && advantage < 0.0) || (rho > 1.0 + cfg.eps_high && advantage > 0.0)
}

/// k3 ("low_var_kl") estimate of KL(π‖π_ref) for one token:
/// `exp(ref − logp) − (ref − logp) − 1`, difference clamped to ±20, result clamped to
/// ±`kl_clamp` as verl and OpenRLHF do.
pub fn k3_kl(logp: f64, ref_logp: f64, kl_clamp: f64) -> f64 {
    let d = (ref_logp - logp).clamp(-DEFAULT_LOG_RATIO_CLAMP, DEFAULT_LOG_RATIO_CLAMP);
    (d.exp() - d - 1.0).clamp(-kl_clamp, kl_clamp)
}

/// How per-token losses become one scalar (`docs/design/grpo.md`, "Aggregation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossAgg {
    /// Σ_i Σ_t ℓ / Σ_i |o_i| (TRL `dapo`/`bnpo`, verl `token-mean`).
    TokenMean,
    /// (1/G) Σ_i (Σ_t ℓ / |o_i|) (TRL `grpo`, verl `seq-mean-token-mean`).
    SeqMeanTokenMean,
    /// Σ_i Σ_t ℓ / (B·L), L = normalisation length (TRL `dr_grpo`).
    DrGrpo,
    /// Σ_i Σ_t ℓ / B (verl `seq-mean-token-sum`).
    SeqMeanTokenSum,
    /// Σ_i Σ_t ℓ / L (verl `seq-mean-token-sum-norm`, no division by B).
    SeqMeanTokenSumNorm,
}

/// Per-sequence weight `w_i` such that the aggregated loss is `Σ_i w_i Σ_t ℓ_{i,t}`.
///
/// `lengths[i]` is |o_i|, the number of masked-in tokens of sequence i. `norm_len` is L for
/// [`LossAgg::DrGrpo`] and [`LossAgg::SeqMeanTokenSumNorm`]; `None` takes the longest sequence
/// (the spec's "max completion length"). Sequences with no masked-in token get weight 0 and are
/// not counted in B or G (they carry no loss and would otherwise divide by zero). Every mode is
/// a fixed per-sequence weight, which is what lets the trainer split a batch into micro-batches
/// and still get the same gradient.
pub fn sequence_weights(lengths: &[usize], agg: LossAgg, norm_len: Option<usize>) -> Vec<f64> {
    let active = lengths.iter().filter(|&&n| n > 0).count();
    let total: usize = lengths.iter().sum();
    let l = norm_len
        .unwrap_or_else(|| lengths.iter().copied().max().unwrap_or(0))
        .max(1) as f64;
    lengths
        .iter()
        .map(|&n| {
            if n == 0 {
                return 0.0;
            }
            match agg {
                LossAgg::TokenMean => 1.0 / total as f64,
                LossAgg::SeqMeanTokenMean => 1.0 / (active as f64 * n as f64),
                LossAgg::DrGrpo => 1.0 / (active as f64 * l),
                LossAgg::SeqMeanTokenSum => 1.0 / active as f64,
                LossAgg::SeqMeanTokenSumNorm => 1.0 / l,
            }
        })
        .collect()
}

/// Aggregates per-sequence token losses (masked-in tokens only) into one scalar.
pub fn aggregate(losses: &[Vec<f64>], agg: LossAgg, norm_len: Option<usize>) -> f64 {
    let lengths: Vec<usize> = losses.iter().map(Vec::len).collect();
    sequence_weights(&lengths, agg, norm_len)
        .iter()
        .zip(losses)
        .map(|(w, l)| w * l.iter().sum::<f64>())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 1e-6;

    fn close(a: &[Option<f64>], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            let x = x.expect("scored member must have an advantage");
            assert!((x - y).abs() < TOL, "{x} vs {y} (got {a:?}, want {b:?})");
        }
    }

    fn some(r: &[f64]) -> Vec<Option<f64>> {
        r.iter().copied().map(Some).collect()
    }

    #[test]
    fn advantages_match_spec_vectors_for_every_preset() {
        let r1 = some(&[1.0, 0.0, 0.0, 0.0]);
        let r2 = some(&[0.2, 0.5, 0.9, 0.4]);
        let r3 = some(&[3.5; 4]);
        let trl = Preset::TrlDapo.advantage_norm();
        let verl = Preset::Verl.advantage_norm();
        let orl = Preset::OpenRlhf.advantage_norm();
        let dr = Preset::DrGrpo.advantage_norm();
        assert_eq!(trl, Preset::TrlGrpo.advantage_norm());

        let a = |r: &[Option<f64>], n| group_advantages(r, n).advantages;
        close(
            &a(&r1, trl),
            &[1.4997000600, -0.4999000200, -0.4999000200, -0.4999000200],
        );
        close(
            &a(&r1, verl),
            &[1.4999970000, -0.4999990000, -0.4999990000, -0.4999990000],
        );
        close(
            &a(&r1, orl),
            &[1.4999999970, -0.4999999990, -0.4999999990, -0.4999999990],
        );
        close(&a(&r1, dr), &[0.75, -0.25, -0.25, -0.25]);

        close(
            &a(&r2, trl),
            &[-1.0187032944, 0.0, 1.3582710592, -0.3395677648],
        );
        close(
            &a(&r2, verl),
            &[-1.0190458692, 0.0, 1.3587278256, -0.3396819564],
        );
        close(
            &a(&r2, orl),
            &[-1.0190493273, 0.0, 1.3587324364, -0.3396831091],
        );
        close(&a(&r2, dr), &[-0.3, 0.0, 0.4, -0.1]);

        for n in [trl, verl, orl, dr] {
            let g = group_advantages(&r3, n);
            assert_eq!(g.advantages, some(&[0.0; 4]));
            assert_eq!(g.status, GroupStatus::Degenerate);
        }
        assert_eq!(group_advantages(&r2, verl).status, GroupStatus::Informative);
    }

    #[test]
    fn spec_std_of_second_vector() {
        let r = [0.2, 0.5, 0.9, 0.4];
        assert!((unbiased_std(&r, 0.5) - 0.2943920289).abs() < 1e-9);
    }

    #[test]
    fn unscored_members_are_masked_and_excluded_from_statistics() {
        let norm = Preset::Verl.advantage_norm();
        // Same scored rewards as the spec's first vector, with two unscored members mixed in.
        let r = [
            Some(1.0),
            None,
            Some(0.0),
            Some(f64::NAN),
            Some(0.0),
            Some(0.0),
        ];
        let g = group_advantages(&r, norm);
        assert_eq!(g.scored, 4);
        assert_eq!(g.advantages[1], None);
        assert_eq!(g.advantages[3], None);
        let kept: Vec<Option<f64>> = [0, 2, 4, 5].iter().map(|&i| g.advantages[i]).collect();
        close(
            &kept,
            &[1.4999970000, -0.4999990000, -0.4999990000, -0.4999990000],
        );
    }

    #[test]
    fn groups_with_fewer_than_two_scored_members_are_dropped() {
        let norm = Preset::Verl.advantage_norm();
        for r in [
            vec![],
            vec![Some(1.0)],
            vec![None, Some(2.0), None],
            vec![None; 4],
        ] {
            let g = group_advantages(&r, norm);
            assert_eq!(g.status, GroupStatus::Dropped);
            assert!(g.advantages.iter().all(Option::is_none));
            assert_eq!(g.advantages.len(), r.len());
        }
    }

    #[test]
    fn degenerate_groups_give_exact_zeros_despite_float_noise() {
        // mean(0.1, 0.1, 0.1) is not exactly 0.1 in binary floating point.
        let g = group_advantages(
            &some(&[0.1, 0.1, 0.1]),
            AdvantageNorm::GroupStd { eps: 1e-9 },
        );
        assert_eq!(g.advantages, some(&[0.0; 3]));
        let g = group_advantages(&[Some(2.0), None, Some(2.0)], AdvantageNorm::MeanOnly);
        assert_eq!(g.advantages, vec![Some(0.0), None, Some(0.0)]);
        assert_eq!(g.status, GroupStatus::Degenerate);
    }

    #[test]
    fn batch_counts() {
        let groups = vec![
            some(&[1.0, 0.0]),
            vec![Some(1.0), None],
            some(&[3.0, 3.0, 3.0]),
            vec![Some(0.0), Some(1.0), None],
        ];
        let (out, s) = batch_advantages(&groups, AdvantageNorm::MeanOnly);
        assert_eq!(out.len(), 4);
        assert_eq!(
            s,
            AdvantageStats {
                groups: 4,
                dropped_groups: 1,
                degenerate_groups: 1,
                unscored: 2,
                trained: 7,
            }
        );
    }

    #[test]
    fn clipped_surrogate_matches_spec_table() {
        let cfg = ClipConfig::default();
        let cases = [
            (1.5, 0.3, -1.8),
            (1.5, -0.3, -1.1112273310),
            (1.5, 0.1, -1.6577563771),
            (-1.5, 0.3, 2.0247882114),
            (-1.5, -0.3, 1.2),
            (-1.5, 0.1, 1.6577563771),
        ];
        let dual = ClipConfig {
            dual_clip_c: Some(3.0),
            ..cfg
        };
        for (a, log_rho, want) in cases {
            let got = clipped_surrogate(log_rho, 0.0, a, &cfg);
            assert!(
                (got - want).abs() < TOL,
                "A={a} logρ={log_rho}: {got} vs {want}"
            );
            // verl's dual clip leaves all six unchanged (2.0248 < 3 × 1.5).
            let got = clipped_surrogate(log_rho - 1.0, -1.0, a, &dual);
            assert!((got - want).abs() < TOL, "dual clip A={a} logρ={log_rho}");
        }
        // Clip fraction flags exactly the two clipped cells.
        assert!(is_clipped(0.3, 0.0, 1.5, &cfg));
        assert!(is_clipped(-0.3, 0.0, -1.5, &cfg));
        assert!(!is_clipped(0.3, 0.0, -1.5, &cfg));
        assert!(!is_clipped(-0.3, 0.0, 1.5, &cfg));
        assert!(!is_clipped(0.1, 0.0, 1.5, &cfg));
    }

    #[test]
    fn dual_clip_caps_large_ratios_with_negative_advantage() {
        let cfg = ClipConfig {
            dual_clip_c: Some(3.0),
            ..ClipConfig::default()
        };
        // ρ = e^2 ≈ 7.39, A = −1: unclipped loss 7.39 is capped at c·|A| = 3.
        assert!((clipped_surrogate(2.0, 0.0, -1.0, &cfg) - 3.0).abs() < 1e-12);
        // Positive advantages are never dual-clipped.
        assert!((clipped_surrogate(2.0, 0.0, 1.0, &cfg) + 1.2).abs() < 1e-12);
    }

    #[test]
    fn log_ratio_is_clamped_before_exp() {
        let r = importance_ratio(1000.0, 0.0, DEFAULT_LOG_RATIO_CLAMP);
        assert!((r - 20f64.exp()).abs() < 1e-3);
        assert!(clipped_surrogate(-1000.0, 0.0, -1.0, &ClipConfig::default()).is_finite());
    }

    #[test]
    fn k3_matches_spec_vector_and_is_clamped() {
        assert!((k3_kl(-1.0, -1.2, DEFAULT_KL_CLAMP) - 0.018730753078).abs() < 1e-9);
        assert_eq!(k3_kl(-2.0, -2.0, DEFAULT_KL_CLAMP), 0.0);
        assert_eq!(k3_kl(-30.0, 0.0, DEFAULT_KL_CLAMP), DEFAULT_KL_CLAMP);
    }

    #[test]
    fn aggregation_matches_spec_example() {
        let losses = vec![vec![1.0, 1.0], vec![0.5, 0.5, 0.5, 0.5]];
        let agg = |m| aggregate(&losses, m, None);
        assert!((agg(LossAgg::TokenMean) - 4.0 / 6.0).abs() < TOL);
        assert!((agg(LossAgg::TokenMean) - 0.6667).abs() < 1e-4);
        assert!((agg(LossAgg::SeqMeanTokenMean) - 0.75).abs() < TOL);
        assert!((agg(LossAgg::DrGrpo) - 0.5).abs() < TOL);
        assert!((agg(LossAgg::SeqMeanTokenSum) - 2.0).abs() < TOL);
        assert!((agg(LossAgg::SeqMeanTokenSumNorm) - 1.0).abs() < TOL);
        // An explicit L (TRL's `max_completion_length`) replaces the longest sequence.
        assert!((aggregate(&losses, LossAgg::DrGrpo, Some(8)) - 0.25).abs() < TOL);
    }

    #[test]
    fn empty_sequences_are_ignored_by_every_mode() {
        let with_empty = vec![vec![1.0, 1.0], vec![], vec![0.5, 0.5, 0.5, 0.5]];
        let without = vec![vec![1.0, 1.0], vec![0.5, 0.5, 0.5, 0.5]];
        for m in [
            LossAgg::TokenMean,
            LossAgg::SeqMeanTokenMean,
            LossAgg::DrGrpo,
            LossAgg::SeqMeanTokenSum,
            LossAgg::SeqMeanTokenSumNorm,
        ] {
            assert!((aggregate(&with_empty, m, None) - aggregate(&without, m, None)).abs() < 1e-12);
        }
        assert_eq!(aggregate(&[], LossAgg::TokenMean, None), 0.0);
        assert_eq!(aggregate(&[vec![]], LossAgg::SeqMeanTokenMean, None), 0.0);
    }

    #[test]
    fn presets_pick_spec_aggregation() {
        assert_eq!(Preset::Verl.loss_agg(), LossAgg::TokenMean);
        assert_eq!(Preset::TrlDapo.loss_agg(), LossAgg::TokenMean);
        assert_eq!(Preset::TrlGrpo.loss_agg(), LossAgg::SeqMeanTokenMean);
        assert_eq!(Preset::DrGrpo.loss_agg(), LossAgg::DrGrpo);
    }
}
