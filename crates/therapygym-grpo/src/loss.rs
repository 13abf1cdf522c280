//! Differentiable (tensor) versions of the per-token GRPO terms in [`crate::grpo`].
//!
//! All inputs are 1-D f32 tensors over the masked-in tokens of a micro-batch; gradients flow
//! through `logp` only (old and reference log-probs and advantages are data).

use candle_core::{D, Tensor};

use crate::error::Result;
use crate::grpo::{ClipConfig, DEFAULT_LOG_RATIO_CLAMP};

/// Per-token clipped surrogate `−min(ρA, clip(ρ)A)` (plus dual clip), see
/// [`crate::grpo::clipped_surrogate`].
pub fn clipped_surrogate(
    logp: &Tensor,
    logp_old: &Tensor,
    advantages: &[f32],
    cfg: &ClipConfig,
) -> Result<Tensor> {
    let adv = Tensor::from_slice(advantages, advantages.len(), logp.device())?;
    let c = cfg.log_ratio_clamp;
    let rho = (logp - logp_old)?.clamp(-c, c)?.exp()?;
    let clipped = rho.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high)?;
    let loss = (rho * &adv)?.neg()?.maximum(&(clipped * &adv)?.neg()?)?;
    Ok(match cfg.dual_clip_c {
        None => loss,
        Some(cap) => {
            // The cap −A·c only applies where A < 0; elsewhere it is +∞ so `minimum` is a no-op.
            let caps: Vec<f32> = advantages
                .iter()
                .map(|&a| {
                    if a < 0.0 {
                        -a * cap as f32
                    } else {
                        f32::INFINITY
                    }
                })
                .collect();
            loss.minimum(&Tensor::from_vec(caps, advantages.len(), logp.device())?)?
        }
    })
}

/// Per-token k3 estimate of KL(π‖π_ref), see [`crate::grpo::k3_kl`].
pub fn k3_kl(logp: &Tensor, ref_logp: &Tensor, kl_clamp: f64) -> Result<Tensor> {
    let d = (ref_logp - logp)?.clamp(-DEFAULT_LOG_RATIO_CLAMP, DEFAULT_LOG_RATIO_CLAMP)?;
    Ok(((d.exp()? - &d)? - 1.0)?.clamp(-kl_clamp, kl_clamp)?)
}

/// `log softmax(logits)[target]` per row of `(n, vocab)` logits, without materialising the
/// full log-softmax (one `(n, vocab)` buffer less).
pub fn target_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    // The max only stabilises exp; detaching it leaves the gradient of logsumexp unchanged.
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?;
    Ok((picked - lse)?.squeeze(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpo;
    use candle_core::{Device, Var};

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn surrogate_matches_scalar_version() {
        let log_rho = [0.3f32, -0.3, 0.1, 0.3, -0.3, 0.1, 2.0, -25.0];
        let adv = [1.5f32, 1.5, 1.5, -1.5, -1.5, -1.5, -1.0, 1.0];
        let old = vec![-1.0f32; log_rho.len()];
        let logp: Vec<f32> = log_rho.iter().map(|r| r - 1.0).collect();
        for cfg in [
            ClipConfig::default(),
            ClipConfig {
                dual_clip_c: Some(3.0),
                eps_high: 0.28,
                ..ClipConfig::default()
            },
        ] {
            let got = clipped_surrogate(&t(&logp), &t(&old), &adv, &cfg)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for i in 0..adv.len() {
                let want = grpo::clipped_surrogate(
                    f64::from(logp[i]),
                    f64::from(old[i]),
                    f64::from(adv[i]),
                    &cfg,
                );
                assert!(
                    (f64::from(got[i]) - want).abs() < 1e-5,
                    "{i}: {} vs {want}",
                    got[i]
                );
            }
        }
    }

    #[test]
    fn surrogate_gradient_is_zero_when_clipped() {
        let logp = Var::new(&[0.3f32, 0.1], &Device::Cpu).unwrap();
        let old = t(&[0.0, 0.0]);
        let loss = clipped_surrogate(logp.as_tensor(), &old, &[1.5, 1.5], &ClipConfig::default())
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        let g = g.get(logp.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g[0], 0.0);
        // d/dlogp of −ρA = −ρA = −1.5·e^0.1.
        assert!((g[1] + 1.5 * 0.1f32.exp()).abs() < 1e-5);
    }

    #[test]
    fn k3_matches_scalar_version_and_spec_vector() {
        let got = k3_kl(&t(&[-1.0, -30.0]), &t(&[-1.2, 0.0]), grpo::DEFAULT_KL_CLAMP)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((f64::from(got[0]) - 0.018730753078).abs() < 1e-6);
        assert_eq!(got[1], 10.0);
    }

    #[test]
    fn target_logprobs_match_log_softmax() {
        let logits = Tensor::new(&[[1f32, 2.0, 3.0], [0.5, -1.0, 100.0]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let got = target_logprobs(&logits, &targets)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let full = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((got[0] - full[0][2]).abs() < 1e-6);
        assert!((got[1] - full[1][0]).abs() < 1e-4);
    }
}
