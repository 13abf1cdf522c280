//! Training core of TherapyGym: GRPO math and a CPU trainer for the embedded SmolLM2 policy on
//! candle.
//!
//! - [`grpo`]: pure `f64` GRPO math (group advantages, clipped surrogate, k3 KL, aggregation)
//!   reproducing the test vectors of `docs/design/grpo.md`.
//! - [`gguf`], [`model`], [`tokenizer`]: GGUF → trainable f32 Llama (Q/K un-permuted, tied
//!   head), byte-level BPE tokenizer from GGUF metadata, ChatML with an assistant mask.
//! - [`trainer`], [`loss`], [`optim`]: the GRPO update (micro-batched backward, global-norm
//!   clipping, AdamW with saveable state, LR schedules) and π_old log-probs.
//! - [`ops`]: fused CPU kernels (causal softmax, RMSNorm, RoPE) with backward passes.
//! - [`generate`]: KV-cached seeded sampling for rollouts in candle.
//! - [`checkpoint`], [`export`]: safetensors checkpoints (bit-exact resume) and GGUF export.
//! - [`Policy`]: model + tokenizer + source GGUF, the usual entry point.
//!
//! A typical update:
//!
//! ```no_run
//! use therapygym_grpo::{ChatMessage, GrpoConfig, Policy, Preset, TrainSequence, Trainer};
//! use therapygym_grpo::grpo::group_advantages;
//! use therapygym_grpo::trainer::sequence_logprobs;
//!
//! # fn main() -> therapygym_grpo::Result<()> {
//! let policy = Policy::load_default()?;
//! let prompt = vec![ChatMessage::system("You are a supportive CBT therapist."),
//!                   ChatMessage::user("I feel anxious all the time.")];
//! // Sample a group of therapist turns.
//! let group: Vec<_> = (0..4)
//!     .map(|seed| policy.generate(&prompt, 64, 0.7, 1.0, seed))
//!     .collect::<Result<_, _>>()?;
//! let rewards = [Some(3.0), Some(4.5), None, Some(2.0)]; // None = unscored, masked
//! let adv = group_advantages(&rewards, Preset::Verl.advantage_norm());
//! let mut batch = Vec::new();
//! for (g, a) in group.iter().zip(&adv.advantages) {
//!     let Some(a) = a else { continue };
//!     let mut msgs = prompt.clone();
//!     msgs.push(g.to_message());
//!     let enc = policy.encode_chat(&msgs, false)?;
//!     let old = sequence_logprobs(policy.model(), &[(&enc.ids, &enc.assistant_mask)], 1)?;
//!     batch.push(TrainSequence { ids: enc.ids, mask: enc.assistant_mask, advantage: *a,
//!                                old_logprobs: old[0].clone(), ref_logprobs: None });
//! }
//! let mut trainer = Trainer::new(policy.model().clone(), GrpoConfig::from_preset(Preset::Verl, 1e-6));
//! let metrics = trainer.train_step(&batch)?;
//! # let _ = metrics; Ok(()) }
//! ```

pub mod checkpoint;
pub mod error;
pub mod export;
pub mod generate;
pub mod gguf;
pub mod grpo;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod policy;
pub mod tokenizer;
pub mod trainer;

pub use error::{GrpoError, MODEL_SETUP_HINT, Result};
pub use export::ExportType;
pub use generate::{FinishReason, Generation, SamplingParams};
pub use grpo::{AdvantageNorm, ClipConfig, GroupStatus, LossAgg, Preset};
pub use model::{Llama, LlamaConfig, Mode};
pub use optim::{AdamW, AdamWConfig, LrSchedule};
pub use policy::Policy;
pub use tokenizer::{ChatMessage, ChatTokenizer, EncodedChat, Role};
pub use trainer::{GrpoConfig, StepMetrics, StepTimings, TrainSequence, Trainer};
