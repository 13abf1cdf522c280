//! The GRPO update: per-token log-probs, loss, backward, global-norm clipping and AdamW.

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{GrpoError, Result};
use crate::grpo::{self, ClipConfig, LossAgg, Preset};
use crate::loss;
use crate::model::{Llama, Mode};
use crate::optim::{AdamW, AdamWConfig, Gradients, LrSchedule};

/// Settings of one GRPO update (`docs/design/grpo.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrpoConfig {
    /// Ratio clipping.
    pub clip: ClipConfig,
    /// Loss aggregation.
    pub loss_agg: LossAgg,
    /// L for [`LossAgg::DrGrpo`] / [`LossAgg::SeqMeanTokenSumNorm`] (TRL's
    /// `max_completion_length`); `None` = longest sequence of the batch, in masked tokens.
    pub norm_len: Option<usize>,
    /// Weight β of the k3 KL term; 0 disables it (reference log-probs are then ignored).
    pub kl_coef: f64,
    /// Clamp of the k3 estimate.
    pub kl_clamp: f64,
    /// Clip the global gradient norm to this value; `None` = no clipping.
    pub max_grad_norm: Option<f64>,
    /// Sequences per forward/backward pass. Gradients of micro-batches are summed, and the
    /// aggregation weights are computed over the whole batch, so the update does not depend on
    /// this value (only memory and speed do).
    pub micro_batch_size: usize,
    /// Optimizer hyper-parameters.
    pub adamw: AdamWConfig,
    /// Learning-rate schedule, indexed by the optimizer's step count.
    pub schedule: LrSchedule,
}

impl GrpoConfig {
    /// The spec defaults for an engine preset, with a constant learning rate.
    pub fn from_preset(preset: Preset, lr: f64) -> Self {
        Self {
            clip: ClipConfig::default(),
            loss_agg: preset.loss_agg(),
            norm_len: None,
            kl_coef: 0.0,
            kl_clamp: grpo::DEFAULT_KL_CLAMP,
            max_grad_norm: Some(1.0),
            micro_batch_size: 4,
            adamw: AdamWConfig::default(),
            schedule: LrSchedule::Constant { lr },
        }
    }
}

impl Default for GrpoConfig {
    /// verl preset, lr 1e-6 (spec default).
    fn default() -> Self {
        Self::from_preset(Preset::Verl, 1e-6)
    }
}

/// One rollout prepared for training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSequence {
    /// Full token ids (prompt and completion, all turns).
    pub ids: Vec<u32>,
    /// `true` where the token was produced by the policy and is trained (see
    /// [`crate::tokenizer::EncodedChat::assistant_mask`]). Position 0 cannot be trained: it has
    /// no context to be predicted from.
    pub mask: Vec<bool>,
    /// Advantage of this rollout, broadcast to all its masked tokens.
    pub advantage: f64,
    /// log π_old per masked token, in order (length = number of `true` in `mask`); compute with
    /// [`sequence_logprobs`] before the first update on this batch.
    pub old_logprobs: Vec<f32>,
    /// log π_ref per masked token, needed when `kl_coef > 0`.
    pub ref_logprobs: Option<Vec<f32>>,
}

impl TrainSequence {
    fn masked_count(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    fn check(&self, idx: usize, need_ref: bool) -> Result<()> {
        let n = self.masked_count();
        let err = |m: String| Err(GrpoError::invalid(format!("sequence {idx}: {m}")));
        if self.mask.len() != self.ids.len() {
            return err(format!(
                "{} mask entries for {} ids",
                self.mask.len(),
                self.ids.len()
            ));
        }
        if self.mask.first() == Some(&true) {
            return err("position 0 is masked in but has no context".into());
        }
        if self.old_logprobs.len() != n {
            return err(format!(
                "{} old log-probs for {n} masked tokens",
                self.old_logprobs.len()
            ));
        }
        if !self.advantage.is_finite() {
            return err(format!("advantage {} is not finite", self.advantage));
        }
        match (&self.ref_logprobs, need_ref) {
            (Some(r), _) if r.len() != n => err(format!(
                "{} reference log-probs for {n} masked tokens",
                r.len()
            )),
            (None, true) => err("`kl_coef` > 0 but no reference log-probs".into()),
            _ => Ok(()),
        }
    }
}

/// Wall-clock split of one update, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimings {
    /// Forward passes, log-probs and loss.
    pub forward_s: f64,
    /// Backward passes and gradient accumulation.
    pub backward_s: f64,
    /// Clipping and the AdamW update.
    pub optimizer_s: f64,
}

/// Metrics of one update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer step count after this update.
    pub step: u64,
    /// Total loss (policy + β·KL), aggregated as configured.
    pub loss: f64,
    /// Policy (clipped surrogate) part of the loss.
    pub policy_loss: f64,
    /// Mean k3 KL per masked token; `None` when no reference log-probs were given.
    pub kl_mean: Option<f64>,
    /// Fraction of masked tokens whose clipped branch is active.
    pub clip_frac: f64,
    /// Mean importance ratio over masked tokens (≈ 1 on the first update of a batch).
    pub ratio_mean: f64,
    /// Masked (trained) tokens.
    pub tokens: usize,
    /// Sequences with at least one masked token.
    pub sequences: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Time split.
    pub timings: StepTimings,
}

/// Policy model plus optimizer: one [`Trainer::train_step`] per GRPO update.
#[derive(Debug)]
pub struct Trainer {
    model: Llama,
    opt: AdamW,
    cfg: GrpoConfig,
}

impl Trainer {
    /// A trainer with fresh optimizer state.
    pub fn new(model: Llama, cfg: GrpoConfig) -> Self {
        let opt = AdamW::new(model.params(), cfg.adamw);
        Self { model, opt, cfg }
    }

    /// The policy being trained (shares weights with the trainer).
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The optimizer (for checkpoints).
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// Mutable optimizer (to restore a checkpoint).
    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.opt
    }

    /// Settings.
    pub fn config(&self) -> &GrpoConfig {
        &self.cfg
    }

    /// Replaces the settings (the optimizer state is kept).
    pub fn set_config(&mut self, cfg: GrpoConfig) {
        self.cfg = cfg;
    }

    /// One GRPO update on `batch`: loss, backward, clip, AdamW step.
    ///
    /// Fails without touching the weights if the inputs are inconsistent, or if the loss or the
    /// gradient norm is not finite.
    pub fn train_step(&mut self, batch: &[TrainSequence]) -> Result<StepMetrics> {
        let need_ref = self.cfg.kl_coef != 0.0;
        if batch.is_empty() {
            return Err(GrpoError::invalid("empty batch"));
        }
        for (i, s) in batch.iter().enumerate() {
            s.check(i, need_ref)?;
        }
        let lengths: Vec<usize> = batch.iter().map(TrainSequence::masked_count).collect();
        let tokens: usize = lengths.iter().sum();
        if tokens == 0 {
            return Err(GrpoError::invalid("no masked-in token in the batch"));
        }
        let weights = grpo::sequence_weights(&lengths, self.cfg.loss_agg, self.cfg.norm_len);
        let vars: Vec<_> = self.model.params().iter().map(|(_, v)| v).collect();
        let mut grads = Gradients::zeros(vars.len());
        let mut timings = StepTimings::default();
        let mut acc = ChunkStats::default();

        let mb = self.cfg.micro_batch_size.max(1);
        for (chunk_idx, chunk) in batch.chunks(mb).enumerate() {
            let t0 = Instant::now();
            let seq_refs: Vec<(&[u32], &[bool])> = chunk
                .iter()
                .map(|s| (s.ids.as_slice(), s.mask.as_slice()))
                .collect();
            let logp = masked_logprobs(&self.model, &seq_refs, Mode::Train)?;
            let w = &weights[chunk_idx * mb..chunk_idx * mb + chunk.len()];
            let (mb_loss, stats) = self.chunk_loss(chunk, w, &logp)?;
            acc.add(&stats);
            timings.forward_s += t0.elapsed().as_secs_f64();

            let t1 = Instant::now();
            let store = mb_loss.backward()?;
            grads.accumulate(&vars, &store)?;
            timings.backward_s += t1.elapsed().as_secs_f64();
        }
        if !acc.loss.is_finite() {
            return Err(GrpoError::NonFinite(format!(
                "loss is {}; no update applied",
                acc.loss
            )));
        }

        let t2 = Instant::now();
        let grad_norm = match self.cfg.max_grad_norm {
            Some(max) => grads.clip_global_norm(max),
            None => grads.global_norm(),
        };
        if !grad_norm.is_finite() {
            return Err(GrpoError::NonFinite(format!(
                "gradient norm is {grad_norm}; no update applied"
            )));
        }
        let lr = self.cfg.schedule.lr_at(self.opt.step_count());
        self.opt.step(&grads, lr)?;
        timings.optimizer_s = t2.elapsed().as_secs_f64();

        let n = tokens as f64;
        Ok(StepMetrics {
            step: self.opt.step_count(),
            loss: acc.loss,
            policy_loss: acc.policy_loss,
            kl_mean: acc.has_kl.then_some(acc.kl_sum / n),
            clip_frac: acc.clipped as f64 / n,
            ratio_mean: acc.ratio_sum / n,
            tokens,
            sequences: lengths.iter().filter(|&&l| l > 0).count(),
            grad_norm,
            lr,
            timings,
        })
    }

    /// Loss tensor of one micro-batch (already weighted for the whole batch) and host-side
    /// statistics.
    fn chunk_loss(
        &self,
        chunk: &[TrainSequence],
        seq_weights: &[f64],
        logp: &Tensor,
    ) -> Result<(Tensor, ChunkStats)> {
        let dev = logp.device();
        let mut old = Vec::new();
        let mut refs = Vec::new();
        let mut adv = Vec::new();
        let mut w = Vec::new();
        for (s, &sw) in chunk.iter().zip(seq_weights) {
            let n = s.old_logprobs.len();
            old.extend_from_slice(&s.old_logprobs);
            if let Some(r) = &s.ref_logprobs {
                refs.extend_from_slice(r);
            }
            adv.extend(std::iter::repeat_n(s.advantage as f32, n));
            w.extend(std::iter::repeat_n(sw as f32, n));
        }
        let n = old.len();
        let old_t = Tensor::from_vec(old.clone(), n, dev)?;
        let w_t = Tensor::from_vec(w, n, dev)?;
        let pg = loss::clipped_surrogate(logp, &old_t, &adv, &self.cfg.clip)?;
        let policy = (&pg * &w_t)?.sum_all()?;
        let use_kl = self.cfg.kl_coef != 0.0 && refs.len() == n;
        let (total, kl_vals) = if use_kl {
            let ref_t = Tensor::from_vec(refs, n, dev)?;
            let kl = loss::k3_kl(logp, &ref_t, self.cfg.kl_clamp)?;
            let kl_loss = (&kl * &w_t)?.sum_all()?;
            let kl_vals = kl.to_vec1::<f32>()?;
            ((&policy + (kl_loss * self.cfg.kl_coef)?)?, Some(kl_vals))
        } else if chunk.iter().all(|s| s.ref_logprobs.is_some()) && refs.len() == n {
            // KL is reported (not trained) when reference log-probs are given with β = 0.
            let ref_t = Tensor::from_vec(refs, n, dev)?;
            let kl_vals = loss::k3_kl(logp, &ref_t, self.cfg.kl_clamp)?.to_vec1::<f32>()?;
            (policy.clone(), Some(kl_vals))
        } else {
            (policy.clone(), None)
        };

        let lp = logp.to_vec1::<f32>()?;
        let mut stats = ChunkStats {
            loss: f64::from(total.to_scalar::<f32>()?),
            policy_loss: f64::from(policy.to_scalar::<f32>()?),
            has_kl: kl_vals.is_some(),
            kl_sum: kl_vals.iter().flatten().map(|&k| f64::from(k)).sum(),
            ..ChunkStats::default()
        };
        for i in 0..n {
            let (l, o, a) = (f64::from(lp[i]), f64::from(old[i]), f64::from(adv[i]));
            stats.ratio_sum += grpo::importance_ratio(l, o, self.cfg.clip.log_ratio_clamp);
            stats.clipped += usize::from(grpo::is_clipped(l, o, a, &self.cfg.clip));
        }
        Ok((total, stats))
    }
}

/// Host-side sums over the masked tokens of one micro-batch or of the whole batch.
#[derive(Default)]
struct ChunkStats {
    loss: f64,
    policy_loss: f64,
    has_kl: bool,
    kl_sum: f64,
    ratio_sum: f64,
    clipped: usize,
}

impl ChunkStats {
    fn add(&mut self, s: &ChunkStats) {
        self.loss += s.loss;
        self.policy_loss += s.policy_loss;
        self.has_kl |= s.has_kl;
        self.kl_sum += s.kl_sum;
        self.ratio_sum += s.ratio_sum;
        self.clipped += s.clipped;
    }
}

/// log π(token) for every masked-in token of each sequence (no gradient; fused kernels).
///
/// Use it to recompute π_old with the training model before an update (rollouts sampled from
/// the quantized llama.cpp model disagree slightly, `docs/design/trainable-policy.md`) and to get π_ref from a frozen
/// copy. Sequences are processed `micro_batch` at a time.
pub fn sequence_logprobs(
    model: &Llama,
    seqs: &[(&[u32], &[bool])],
    micro_batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(micro_batch.max(1)) {
        for (ids, mask) in chunk {
            if ids.len() != mask.len() {
                return Err(GrpoError::invalid(format!(
                    "{} mask entries for {} ids",
                    mask.len(),
                    ids.len()
                )));
            }
            if mask.first() == Some(&true) {
                return Err(GrpoError::invalid(
                    "position 0 is masked in but has no context",
                ));
            }
        }
        let flat = masked_logprobs(model, chunk, Mode::Infer)?.to_vec1::<f32>()?;
        let mut rest = flat.as_slice();
        for (_, mask) in chunk {
            let n = mask.iter().filter(|&&m| m).count();
            let (mine, tail) = rest.split_at(n);
            out.push(mine.to_vec());
            rest = tail;
        }
    }
    Ok(out)
}

/// Log-probs of the masked-in tokens of a right-padded micro-batch, flattened in order.
///
/// Only the hidden states that predict a masked token go through the LM head: with a 49k
/// vocabulary the head dominates memory, and prompt positions need no logits.
fn masked_logprobs(model: &Llama, seqs: &[(&[u32], &[bool])], mode: Mode) -> Result<Tensor> {
    let b = seqs.len();
    let t = seqs.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    if b == 0 || t == 0 {
        return Ok(Tensor::zeros(0, candle_core::DType::F32, &Device::Cpu)?);
    }
    let mut ids = vec![0u32; b * t];
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, (seq, mask)) in seqs.iter().enumerate() {
        ids[i * t..i * t + seq.len()].copy_from_slice(seq);
        for (pos, (&tok, &m)) in seq.iter().zip(mask.iter()).enumerate() {
            if m && pos > 0 {
                rows.push((i * t + pos - 1) as u32);
                targets.push(tok);
            }
        }
    }
    let dev = Device::Cpu;
    let ids = Tensor::from_vec(ids, (b, t), &dev)?;
    let hidden = model.forward_hidden(&ids, None, mode)?;
    let hidden = hidden.reshape((b * t, model.config().hidden_size))?;
    let n = rows.len();
    let picked = hidden.index_select(&Tensor::from_vec(rows, n, &dev)?, 0)?;
    let logits = model.logits(&picked, mode)?;
    loss::target_logprobs(&logits, &Tensor::from_vec(targets, n, &dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny;

    fn seq(ids: &[u32], first_masked: usize, adv: f64, model: &Llama) -> TrainSequence {
        let mask: Vec<bool> = (0..ids.len()).map(|i| i >= first_masked).collect();
        let old = sequence_logprobs(model, &[(ids, &mask)], 1)
            .unwrap()
            .remove(0);
        TrainSequence {
            ids: ids.to_vec(),
            mask,
            advantage: adv,
            old_logprobs: old,
            ref_logprobs: None,
        }
    }

    fn masked_sum(model: &Llama, s: &TrainSequence) -> f32 {
        sequence_logprobs(model, &[(&s.ids, &s.mask)], 1).unwrap()[0]
            .iter()
            .sum()
    }

    #[test]
    fn logprobs_are_batch_and_mode_invariant() {
        let m = tiny(7, true);
        let a: (&[u32], &[bool]) = (&[1, 2, 3, 4], &[false, true, false, true]);
        let b: (&[u32], &[bool]) = (
            &[5, 6, 7, 8, 9, 10],
            &[false, false, true, true, true, true],
        );
        let single = [
            sequence_logprobs(&m, &[a], 1).unwrap().remove(0),
            sequence_logprobs(&m, &[b], 1).unwrap().remove(0),
        ];
        let batched = sequence_logprobs(&m, &[a, b], 2).unwrap();
        assert_eq!(batched[0].len(), 2);
        assert_eq!(batched[1].len(), 4);
        let train = masked_logprobs(&m, &[a, b], Mode::Train)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let flat: Vec<f32> = batched.concat();
        for (x, y) in single.concat().iter().zip(&flat) {
            assert!((x - y).abs() < 1e-4);
        }
        for (x, y) in train.iter().zip(&flat) {
            assert!((x - y).abs() < 1e-4);
        }
        assert!(flat.iter().all(|&l| l < 0.0));
    }

    #[test]
    fn positive_advantage_raises_logprob_and_negative_lowers_it() {
        for (adv, up) in [(1.0, true), (-1.0, false)] {
            let m = tiny(8, true);
            let mut cfg = GrpoConfig::from_preset(Preset::Verl, 1e-3);
            cfg.max_grad_norm = None;
            let mut tr = Trainer::new(m, cfg);
            let s = seq(&[3, 9, 4, 17, 2, 30], 2, adv, tr.model());
            let before = masked_sum(tr.model(), &s);
            let mut last = before;
            for k in 0..3 {
                let metrics = tr.train_step(std::slice::from_ref(&s)).unwrap();
                assert!(metrics.loss.is_finite());
                assert_eq!(metrics.tokens, 4);
                assert_eq!(metrics.step, k + 1);
                if k == 0 {
                    // On-policy first step: ρ = 1, loss = −A.
                    assert!((metrics.loss + adv).abs() < 1e-5, "{}", metrics.loss);
                    assert!((metrics.ratio_mean - 1.0).abs() < 1e-5);
                    assert_eq!(metrics.clip_frac, 0.0);
                }
                let now = masked_sum(tr.model(), &s);
                assert_eq!(now > last, up, "step {k}: {last} -> {now}");
                last = now;
            }
            assert_ne!(before, last);
        }
    }

    #[test]
    fn micro_batching_does_not_change_the_update() {
        let run = |mb: usize| {
            let m = tiny(9, false);
            let mut cfg = GrpoConfig::from_preset(Preset::TrlGrpo, 1e-2);
            cfg.micro_batch_size = mb;
            cfg.kl_coef = 0.1;
            let mut tr = Trainer::new(m, cfg);
            let mut batch = vec![
                seq(&[1, 2, 3, 4, 5], 2, 1.0, tr.model()),
                seq(&[6, 7, 8], 1, -0.5, tr.model()),
                seq(&[9, 10, 11, 12, 13, 14, 15], 4, 0.25, tr.model()),
            ];
            for s in &mut batch {
                s.ref_logprobs = Some(s.old_logprobs.iter().map(|x| x - 0.1).collect());
            }
            let metrics = tr.train_step(&batch).unwrap();
            (metrics, tr.model().weights().unwrap())
        };
        let (m1, w1) = run(1);
        let (m3, w3) = run(3);
        assert!((m1.loss - m3.loss).abs() < 1e-5);
        assert!((m1.grad_norm - m3.grad_norm).abs() < 1e-4 * m1.grad_norm);
        assert!(m1.kl_mean.unwrap() > 0.0);
        for ((n, a), (_, b)) in w1.iter().zip(&w3) {
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "{n}");
        }
    }

    #[test]
    fn invalid_batches_are_rejected_without_update() {
        let m = tiny(10, true);
        let mut tr = Trainer::new(m, GrpoConfig::default());
        let good = seq(&[1, 2, 3, 4], 2, 1.0, tr.model());
        let mut bad = good.clone();
        bad.old_logprobs.pop();
        assert!(tr.train_step(&[bad]).is_err());
        let mut bad = good.clone();
        bad.mask[0] = true;
        bad.old_logprobs.insert(0, -1.0);
        assert!(tr.train_step(&[bad]).is_err());
        let mut bad = good.clone();
        bad.advantage = f64::NAN;
        assert!(tr.train_step(&[bad]).is_err());
        assert!(tr.train_step(&[]).is_err());
        tr.set_config(GrpoConfig {
            kl_coef: 0.1,
            ..GrpoConfig::default()
        });
        assert!(tr.train_step(std::slice::from_ref(&good)).is_err());
        assert_eq!(tr.optimizer().step_count(), 0);
    }

    #[test]
    fn loss_matches_scalar_aggregation_off_policy() {
        // Stale old log-probs (ρ ≠ 1): the trainer's loss equals the f64 reference pipeline.
        let m = tiny(11, true);
        let mut cfg = GrpoConfig::from_preset(Preset::DrGrpo, 0.0);
        cfg.micro_batch_size = 1;
        let mut tr = Trainer::new(m, cfg.clone());
        let mut batch = vec![
            seq(&[1, 2, 3, 4, 5], 1, 0.7, tr.model()),
            seq(&[6, 7, 8], 2, -1.3, tr.model()),
        ];
        let shifts = [0.25f32, -0.3, 0.05, 0.5];
        for s in &mut batch {
            for (k, x) in s.old_logprobs.iter_mut().enumerate() {
                *x += shifts[k % shifts.len()];
            }
        }
        let current: Vec<Vec<f32>> = batch
            .iter()
            .map(|s| {
                sequence_logprobs(tr.model(), &[(&s.ids, &s.mask)], 1)
                    .unwrap()
                    .remove(0)
            })
            .collect();
        let per_token: Vec<Vec<f64>> = batch
            .iter()
            .zip(&current)
            .map(|(s, cur)| {
                cur.iter()
                    .zip(&s.old_logprobs)
                    .map(|(&l, &o)| {
                        grpo::clipped_surrogate(f64::from(l), f64::from(o), s.advantage, &cfg.clip)
                    })
                    .collect()
            })
            .collect();
        let want = grpo::aggregate(&per_token, cfg.loss_agg, cfg.norm_len);
        let got = tr.train_step(&batch).unwrap();
        assert!((got.loss - want).abs() < 1e-4, "{} vs {want}", got.loss);
        assert!(got.clip_frac > 0.0);
    }
}
