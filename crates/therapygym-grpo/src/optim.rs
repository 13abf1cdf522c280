//! AdamW over candle [`Var`]s with saveable state, gradient buffers with global-norm clipping,
//! and learning-rate schedules.
//!
//! `candle_nn::AdamW` keeps its moments private, so a checkpoint could not restore it exactly;
//! this implementation uses the same update rule (tested against it) but owns its state as plain
//! `f32` buffers, updated in one fused pass per parameter instead of ~10 tensor ops.

use std::f64::consts::PI;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{GrpoError, Result};

/// AdamW hyper-parameters (defaults as `candle_nn::ParamsAdamW` / PyTorch, weight decay 0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay; applied to matrices only (norm gains are left alone, as in
    /// common LLM fine-tuning practice).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Learning rate as a function of the update index (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate every step.
    Constant {
        /// Learning rate.
        lr: f64,
    },
    /// Linear warm-up from `peak_lr / warmup_steps` to `peak_lr`, then cosine decay to `min_lr`
    /// at `total_steps`.
    WarmupCosine {
        /// Rate reached at the end of warm-up.
        peak_lr: f64,
        /// Warm-up length in updates.
        warmup_steps: u64,
        /// Update index at which the decay reaches `min_lr` (constant afterwards).
        total_steps: u64,
        /// Final rate.
        min_lr: f64,
    },
    /// Linear warm-up, then linear decay to `min_lr` at `total_steps`.
    WarmupLinear {
        /// Rate reached at the end of warm-up.
        peak_lr: f64,
        /// Warm-up length in updates.
        warmup_steps: u64,
        /// Update index at which the decay reaches `min_lr` (constant afterwards).
        total_steps: u64,
        /// Final rate.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// Learning rate for update number `step` (0 = first update).
    pub fn lr_at(&self, step: u64) -> f64 {
        match *self {
            Self::Constant { lr } => lr,
            Self::WarmupCosine {
                peak_lr,
                warmup_steps,
                total_steps,
                min_lr,
            } => warm(step, peak_lr, warmup_steps).unwrap_or_else(|| {
                let p = progress(step, warmup_steps, total_steps);
                min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + (PI * p).cos())
            }),
            Self::WarmupLinear {
                peak_lr,
                warmup_steps,
                total_steps,
                min_lr,
            } => warm(step, peak_lr, warmup_steps).unwrap_or_else(|| {
                let p = progress(step, warmup_steps, total_steps);
                min_lr + (peak_lr - min_lr) * (1.0 - p)
            }),
        }
    }
}

/// Warm-up rate, or `None` once warm-up is over. Step 0 already gets a non-zero rate.
fn warm(step: u64, peak: f64, warmup: u64) -> Option<f64> {
    (step < warmup).then(|| peak * (step + 1) as f64 / warmup as f64)
}

fn progress(step: u64, warmup: u64, total: u64) -> f64 {
    let span = total.saturating_sub(warmup).max(1);
    (step.saturating_sub(warmup) as f64 / span as f64).clamp(0.0, 1.0)
}

/// Dense gradients, one optional `f32` buffer per parameter (in the model's parameter order).
/// Micro-batch gradients are summed into it, then it is clipped and handed to [`AdamW::step`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gradients {
    per_param: Vec<Option<Vec<f32>>>,
}

impl Gradients {
    /// No gradient for any of `n` parameters yet.
    pub fn zeros(n: usize) -> Self {
        Self {
            per_param: vec![None; n],
        }
    }

    /// Adds the gradients of `vars` found in `store` (parameters the loss did not reach are
    /// skipped).
    pub fn accumulate(&mut self, vars: &[&Var], store: &GradStore) -> Result<()> {
        if vars.len() != self.per_param.len() {
            return Err(GrpoError::invalid(format!(
                "{} gradient slots for {} parameters",
                self.per_param.len(),
                vars.len()
            )));
        }
        for (slot, var) in self.per_param.iter_mut().zip(vars) {
            let Some(g) = store.get(var.as_tensor()) else {
                continue;
            };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            match slot {
                Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
                None => *slot = Some(g),
            }
        }
        Ok(())
    }

    /// Buffer of parameter `i`, if it received a gradient.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        self.per_param.get(i).and_then(|g| g.as_deref())
    }

    /// L2 norm over all buffers (accumulated in f64).
    pub fn global_norm(&self) -> f64 {
        self.per_param
            .iter()
            .flatten()
            .flat_map(|g| g.iter())
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    }

    /// Scales every buffer so the global norm is at most `max_norm`; returns the norm before
    /// clipping. Non-finite norms are returned unchanged (the caller must refuse the step).
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        if norm.is_finite() && norm > max_norm {
            // Same 1e-6 guard as torch.nn.utils.clip_grad_norm_.
            let s = (max_norm / (norm + 1e-6)) as f32;
            self.per_param
                .iter_mut()
                .flatten()
                .for_each(|g| g.iter_mut().for_each(|x| *x *= s));
        }
        norm
    }
}

/// Moments of one parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct MomentState {
    /// First moment (same length as the parameter).
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

/// AdamW (decoupled weight decay, bias-corrected moments) with exportable state.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    step: u64,
    vars: Vec<(String, Var)>,
    /// `None` until the parameter first receives a gradient (the moments are zero before).
    moments: Vec<Option<MomentState>>,
}

impl AdamW {
    /// An optimizer for `params` (typically [`crate::model::Llama::params`]).
    pub fn new(params: &[(String, Var)], cfg: AdamWConfig) -> Self {
        Self {
            cfg,
            step: 0,
            vars: params.to_vec(),
            moments: vec![None; params.len()],
        }
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Number of updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The parameters, in update order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Moments of parameter `i` (`None` before its first update).
    pub fn moments(&self, i: usize) -> Option<&MomentState> {
        self.moments.get(i).and_then(Option::as_ref)
    }

    /// Restores state saved from an optimizer over the same parameters.
    pub fn restore(&mut self, step: u64, moments: Vec<Option<MomentState>>) -> Result<()> {
        if moments.len() != self.vars.len() {
            return Err(GrpoError::invalid(format!(
                "optimizer state has {} parameters, model has {}",
                moments.len(),
                self.vars.len()
            )));
        }
        for ((name, var), m) in self.vars.iter().zip(&moments) {
            if let Some(m) = m
                && (m.m.len() != var.elem_count() || m.v.len() != var.elem_count())
            {
                return Err(GrpoError::invalid(format!(
                    "optimizer state for `{name}` has the wrong size"
                )));
            }
        }
        self.step = step;
        self.moments = moments;
        Ok(())
    }

    /// Applies one update with learning rate `lr`. Parameters without a gradient are left
    /// untouched (their moments do not decay), matching `candle_nn::AdamW`.
    pub fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        if grads.per_param.len() != self.vars.len() {
            return Err(GrpoError::invalid(format!(
                "{} gradients for {} parameters",
                grads.per_param.len(),
                self.vars.len()
            )));
        }
        self.step += 1;
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let c = StepConsts {
            lr,
            b1: self.cfg.beta1,
            b2: self.cfg.beta2,
            eps: self.cfg.eps,
            bias1: 1.0 - self.cfg.beta1.powi(t),
            bias2: 1.0 - self.cfg.beta2.powi(t),
        };
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(i) else { continue };
            let mut theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            if g.len() != theta.len() {
                return Err(GrpoError::invalid("gradient size differs from parameter"));
            }
            let st = self.moments[i].get_or_insert_with(|| MomentState {
                m: vec![0.0; theta.len()],
                v: vec![0.0; theta.len()],
            });
            let decay = if var.rank() >= 2 {
                1.0 - lr * self.cfg.weight_decay
            } else {
                1.0
            };
            update_parallel(&mut theta, &mut st.m, &mut st.v, g, decay, &c);
            var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct StepConsts {
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    bias1: f64,
    bias2: f64,
}

/// Splits large parameters across the available cores; the update is elementwise, so chunks
/// are independent and the result does not depend on the split.
fn update_parallel(
    theta: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    decay: f64,
    c: &StepConsts,
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = theta.len().div_ceil(threads).max(1 << 16);
    if threads == 1 || theta.len() <= chunk {
        update(theta, m, v, g, decay, c);
        return;
    }
    std::thread::scope(|s| {
        for (((t, m), v), g) in theta
            .chunks_mut(chunk)
            .zip(m.chunks_mut(chunk))
            .zip(v.chunks_mut(chunk))
            .zip(g.chunks(chunk))
        {
            s.spawn(move || update(t, m, v, g, decay, c));
        }
    });
}

/// The candle_nn::AdamW rule: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// θ ← θ·(1 − lr·λ) − lr·m̂ / (√v̂ + ε).
fn update(theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], decay: f64, c: &StepConsts) {
    // Scalars are formed in f64 and rounded once, and the operation order follows candle's
    // tensor expression, so the result matches candle_nn::AdamW to float rounding.
    let (b1, nb1) = (c.b1 as f32, (1.0 - c.b1) as f32);
    let (b2, nb2) = (c.b2 as f32, (1.0 - c.b2) as f32);
    let (s1, s2) = ((1.0 / c.bias1) as f32, (1.0 / c.bias2) as f32);
    let (lr, eps, decay) = (c.lr as f32, c.eps as f32, decay as f32);
    for i in 0..theta.len() {
        let gi = g[i];
        let mi = m[i] * b1 + gi * nb1;
        let vi = v[i] * b2 + gi * gi * nb2;
        m[i] = mi;
        v[i] = vi;
        theta[i] = theta[i] * decay - (mi * s1) / ((vi * s2).sqrt() + eps) * lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::Optimizer;

    fn quad_loss(x: &Var, target: &Tensor) -> Tensor {
        x.as_tensor()
            .sub(target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    }

    #[test]
    fn matches_candle_adamw() {
        let dev = Device::Cpu;
        let init = Tensor::new(&[[0.5f32, -1.0, 2.0], [0.1, 0.0, -0.3]], &dev).unwrap();
        let target = Tensor::new(&[[1f32, 1.0, 1.0], [-1.0, 2.0, 0.5]], &dev).unwrap();
        let a = Var::from_tensor(&init).unwrap();
        let b = Var::from_tensor(&init).unwrap();
        let params = candle_nn::ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut reference = candle_nn::AdamW::new(vec![a.clone()], params.clone()).unwrap();
        let cfg = AdamWConfig {
            beta1: params.beta1,
            beta2: params.beta2,
            eps: params.eps,
            weight_decay: params.weight_decay,
        };
        let mut ours = AdamW::new(&[("x".to_string(), b.clone())], cfg);
        for _ in 0..5 {
            reference.backward_step(&quad_loss(&a, &target)).unwrap();
            let store = quad_loss(&b, &target).backward().unwrap();
            let mut g = Gradients::zeros(1);
            g.accumulate(&[&b], &store).unwrap();
            ours.step(&g, params.lr).unwrap();
        }
        let d = (a.as_tensor() - b.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(1)
            .unwrap()
            .max(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "max diff {d}");
        assert_eq!(ours.step_count(), 5);
    }

    #[test]
    fn vectors_are_not_weight_decayed_and_missing_grads_skip() {
        let dev = Device::Cpu;
        let v = Var::ones(3, DType::F32, &dev).unwrap();
        let w = Var::ones((2, 2), DType::F32, &dev).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = AdamW::new(&[("v".into(), v.clone()), ("w".into(), w.clone())], cfg);
        let grads = Gradients {
            per_param: vec![Some(vec![0.0; 3]), None],
        };
        opt.step(&grads, 0.1).unwrap();
        // Zero gradient, no decay on a vector: unchanged.
        assert_eq!(v.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0; 3]);
        // No gradient at all: untouched, no state allocated.
        assert_eq!(
            w.as_tensor().to_vec2::<f32>().unwrap(),
            vec![vec![1.0; 2]; 2]
        );
        assert!(opt.moments(1).is_none());
        assert!(opt.moments(0).is_some());
    }

    #[test]
    fn parallel_update_equals_serial() {
        let n = 300_001;
        let g: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect();
        let mut t1: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1).collect();
        let mut t2 = t1.clone();
        let (mut m1, mut v1) = (vec![0.01; n], vec![0.02; n]);
        let (mut m2, mut v2) = (m1.clone(), v1.clone());
        let c = StepConsts {
            lr: 1e-3,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            bias1: 0.1,
            bias2: 0.001,
        };
        update(&mut t1, &mut m1, &mut v1, &g, 0.99, &c);
        update_parallel(&mut t2, &mut m2, &mut v2, &g, 0.99, &c);
        assert_eq!(t1, t2);
        assert_eq!(m1, m2);
        assert_eq!(v1, v2);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = Gradients {
            per_param: vec![Some(vec![3.0, 0.0]), None, Some(vec![4.0])],
        };
        assert!((g.clip_global_norm(1.0) - 5.0).abs() < 1e-12);
        assert!((g.global_norm() - 1.0).abs() < 1e-5);
        let before = g.clone();
        assert!((g.clip_global_norm(10.0) - 1.0).abs() < 1e-5);
        assert_eq!(g, before);
    }

    #[test]
    fn schedules() {
        assert_eq!(LrSchedule::Constant { lr: 0.3 }.lr_at(99), 0.3);
        let cos = LrSchedule::WarmupCosine {
            peak_lr: 1.0,
            warmup_steps: 4,
            total_steps: 14,
            min_lr: 0.0,
        };
        assert!((cos.lr_at(0) - 0.25).abs() < 1e-12);
        assert!((cos.lr_at(3) - 1.0).abs() < 1e-12);
        assert!((cos.lr_at(4) - 1.0).abs() < 1e-12);
        assert!((cos.lr_at(9) - 0.5).abs() < 1e-12);
        assert!(cos.lr_at(14).abs() < 1e-12);
        assert!(cos.lr_at(100).abs() < 1e-12);
        let lin = LrSchedule::WarmupLinear {
            peak_lr: 2.0,
            warmup_steps: 0,
            total_steps: 10,
            min_lr: 1.0,
        };
        assert!((lin.lr_at(0) - 2.0).abs() < 1e-12);
        assert!((lin.lr_at(5) - 1.5).abs() < 1e-12);
        assert!((lin.lr_at(10) - 1.0).abs() < 1e-12);
        let j = serde_json::to_string(&cos).unwrap();
        assert!(j.contains(r#""kind":"warmup_cosine""#), "{j}");
    }
}
