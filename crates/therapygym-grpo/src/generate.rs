//! Sampling from the trainable model (KV-cached, temperature / top-p, seeded), so rollouts can
//! run in candle with exactly the weights being trained.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{GrpoError, Result};
use crate::model::{KvCache, Llama, Mode};
use crate::tokenizer::{ChatMessage, ChatTokenizer};

/// Sampling settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Maximum number of generated tokens (including the stop token).
    pub max_new_tokens: usize,
    /// Softmax temperature; `<= 0` means greedy (argmax).
    pub temperature: f64,
    /// Nucleus mass in `(0, 1]`; 1 disables top-p.
    pub top_p: f64,
    /// RNG seed: the same seed, prompt and weights give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.7,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token (`<|im_end|>`, EOS) was sampled.
    Stop,
    /// `max_new_tokens` or the context length was reached.
    Length,
}

/// Result of one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Decoded text, without the stop token or other special tokens.
    pub text: String,
    /// Sampled ids, including the final stop token when `finish_reason` is `Stop` (it is part
    /// of the therapist turn and is trained, see [`crate::tokenizer::EncodedChat`]).
    pub token_ids: Vec<u32>,
    /// log π(token) of each sampled id under the untempered policy (temperature 1, no top-p),
    /// i.e. the quantity GRPO's ratio uses.
    pub logprobs: Vec<f32>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Number of prompt tokens.
    pub prompt_tokens: usize,
}

impl Generation {
    /// The sampled content ids without the trailing stop token, for
    /// [`ChatMessage::token_ids`].
    pub fn content_ids(&self) -> &[u32] {
        match self.finish_reason {
            FinishReason::Stop => self
                .token_ids
                .split_last()
                .map_or(&[][..], |(_, rest)| rest),
            FinishReason::Length => &self.token_ids,
        }
    }

    /// The assistant message to append to the conversation (content ids kept verbatim).
    pub fn to_message(&self) -> ChatMessage {
        ChatMessage {
            token_ids: Some(self.content_ids().to_vec()),
            ..ChatMessage::assistant(self.text.clone())
        }
    }
}

/// Renders `messages` with the generation prompt and samples an assistant turn.
pub fn generate(
    model: &Llama,
    tokenizer: &ChatTokenizer,
    messages: &[ChatMessage],
    params: &SamplingParams,
) -> Result<Generation> {
    let prompt = tokenizer.encode_chat(messages, true)?.ids;
    let mut stops = vec![tokenizer.im_end_id(), tokenizer.eos_id()];
    if let Some(id) = tokenizer.inner().token_to_id("<|endoftext|>") {
        stops.push(id);
    }
    let out = generate_ids(model, &prompt, &stops, params)?;
    let content = match out.finish_reason {
        FinishReason::Stop => out.token_ids.split_last().map_or(&[][..], |(_, r)| r),
        FinishReason::Length => &out.token_ids,
    };
    Ok(Generation {
        text: tokenizer.decode(content, true)?,
        prompt_tokens: prompt.len(),
        ..out
    })
}

/// Samples a continuation of raw `prompt` ids until one of `stops` or the length limit.
/// `text` of the result is empty (no tokenizer here).
pub fn generate_ids(
    model: &Llama,
    prompt: &[u32],
    stops: &[u32],
    params: &SamplingParams,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(GrpoError::invalid("empty prompt"));
    }
    if !(params.top_p > 0.0 && params.top_p <= 1.0) {
        return Err(GrpoError::invalid(format!(
            "top_p {} is outside (0, 1]",
            params.top_p
        )));
    }
    let ctx = model.config().max_position_embeddings;
    let budget = params.max_new_tokens.min(ctx.saturating_sub(prompt.len()));
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut cache = KvCache::new();
    let mut ids = Vec::new();
    let mut logprobs = Vec::new();
    let mut input = prompt.to_vec();
    let mut finish = FinishReason::Length;
    for _ in 0..budget {
        let x = Tensor::new(input.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let h = model.forward_hidden(&x, Some(&mut cache), Mode::Infer)?;
        let last = h.narrow(1, input.len() - 1, 1)?.flatten_all()?;
        let logits = model
            .logits(&last.unsqueeze(0)?, Mode::Infer)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let tok = sample(&logits, params.temperature, params.top_p, &mut rng);
        logprobs.push(log_softmax_at(&logits, tok));
        ids.push(tok);
        if stops.contains(&tok) {
            finish = FinishReason::Stop;
            break;
        }
        input = vec![tok];
    }
    Ok(Generation {
        text: String::new(),
        token_ids: ids,
        logprobs,
        finish_reason: finish,
        prompt_tokens: prompt.len(),
    })
}

/// `log softmax(logits)[idx]`, computed in f64.
fn log_softmax_at(logits: &[f32], idx: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = f64::from(max)
        + logits
            .iter()
            .map(|&l| f64::from(l - max).exp())
            .sum::<f64>()
            .ln();
    logits
        .get(idx as usize)
        .map_or(f32::NEG_INFINITY, |&l| (f64::from(l) - lse) as f32)
}

/// Draws one token: argmax when `temperature <= 0`, otherwise from softmax(logits / T)
/// truncated to the smallest set of top tokens whose mass reaches `top_p`.
fn sample(logits: &[f32], temperature: f64, top_p: f64, rng: &mut ChaCha8Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv { (i, v) } else { (bi, bv) }
            })
            .0 as u32
    };
    if temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, (f64::from(l - max) / temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    if !(total.is_finite() && total > 0.0) {
        return argmax();
    }
    // Descending probability, ties by id, so the draw is deterministic for a given seed.
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut keep = probs.len();
    if top_p < 1.0 {
        let mut cum = 0.0;
        for (i, p) in probs.iter().enumerate() {
            cum += p.1 / total;
            if cum >= top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let kept = &probs[..keep];
    let mass: f64 = kept.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f64>() * mass;
    for p in kept {
        if u < p.1 {
            return p.0;
        }
        u -= p.1;
    }
    kept.last().map_or_else(argmax, |p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny;

    #[test]
    fn greedy_is_argmax_and_top_p_truncates() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let logits = [0.0f32, 3.0, 1.0, 2.9];
        assert_eq!(sample(&logits, 0.0, 1.0, &mut rng), 1);
        // With a tiny nucleus only the top token survives.
        for _ in 0..50 {
            assert_eq!(sample(&logits, 1.0, 0.01, &mut rng), 1);
        }
        // top_p 0.9 keeps tokens 1 and 3 (≈ 0.49 + 0.44 mass) and drops 0 and 2.
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[sample(&logits, 1.0, 0.9, &mut rng) as usize] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0, "{seen:?}");
        assert!(seen[1] > 100 && seen[3] > 100, "{seen:?}");
    }

    #[test]
    fn seeded_generation_is_reproducible_and_logprobs_match_scoring() {
        let m = tiny(12, true);
        let p = SamplingParams {
            max_new_tokens: 12,
            temperature: 1.0,
            top_p: 0.95,
            seed: 42,
        };
        let a = generate_ids(&m, &[1, 2, 3], &[39], &p).unwrap();
        let b = generate_ids(&m, &[1, 2, 3], &[39], &p).unwrap();
        assert_eq!(a, b);
        let c = generate_ids(&m, &[1, 2, 3], &[39], &SamplingParams { seed: 7, ..p }).unwrap();
        assert_ne!(a.token_ids, c.token_ids);
        // Log-probs reported while sampling equal a fresh teacher-forced scoring.
        let mut ids = vec![1u32, 2, 3];
        ids.extend(&a.token_ids);
        let mask: Vec<bool> = (0..ids.len()).map(|i| i >= 3).collect();
        let scored = crate::trainer::sequence_logprobs(&m, &[(&ids, &mask)], 1).unwrap();
        for (x, y) in a.logprobs.iter().zip(&scored[0]) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    #[test]
    fn stops_on_stop_token_and_respects_length() {
        let m = tiny(13, true);
        let greedy = SamplingParams {
            max_new_tokens: 5,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        };
        let g = generate_ids(&m, &[1, 2], &[], &greedy).unwrap();
        assert_eq!(g.token_ids.len(), 5);
        assert_eq!(g.finish_reason, FinishReason::Length);
        let first = g.token_ids[0];
        let s = generate_ids(&m, &[1, 2], &[first], &greedy).unwrap();
        assert_eq!(s.token_ids, vec![first]);
        assert_eq!(s.finish_reason, FinishReason::Stop);
        assert!(s.content_ids().is_empty());
        assert!(
            generate_ids(
                &m,
                &[1],
                &[],
                &SamplingParams {
                    top_p: 0.0,
                    ..greedy
                }
            )
            .is_err()
        );
    }
}
