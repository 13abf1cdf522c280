//! Tier-1 tests on the embedded SmolLM2-135M-Instruct GGUF (`--features model-tests`).
//!
//! Without the model file these tests FAIL and name the setup command (never a silent pass).
#![cfg(feature = "model-tests")]

// Helpers live in a `cfg(test)` module so clippy treats them as test code (unwrap allowed).
#[cfg(test)]
mod smollm2 {
    use std::fs::File;
    use std::num::NonZeroU32;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use candle_core::quantized::gguf_file;
    use candle_core::{D, Device, Tensor};
    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::LlamaModel;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::token::LlamaToken;
    use therapygym_grpo::gguf::default_model_path;
    use therapygym_grpo::trainer::sequence_logprobs;
    use therapygym_grpo::{
        ChatMessage, ChatTokenizer, ExportType, GrpoConfig, Mode, Policy, Preset, TrainSequence,
        Trainer, checkpoint, optim::AdamW,
    };

    /// KL(quantized ‖ f32) tolerance on the next-token distribution, the quantized side being
    /// llama.cpp itself. The project's first measurement was 0.013, 0.004 on these prompts (the quantized matmul also quantizes
    /// activations to Q8); 0.05 leaves room for prompt variation while still catching a wrong
    /// permutation or RoPE layout (KL ≫ 1).
    const KL_TOL: f64 = 0.05;

    fn model_path() -> PathBuf {
        let path = default_model_path().expect("HOME or THERAPYGYM_HOME must be set");
        assert!(
            path.exists(),
            "model file {} is missing; install it with:\n  {}",
            path.display(),
            therapygym_grpo::MODEL_SETUP_HINT
        );
        path
    }

    fn load_policy() -> Policy {
        Policy::load(model_path()).expect("load policy")
    }

    /// llama.cpp's backend, initialised once per process.
    fn backend() -> &'static LlamaBackend {
        static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
        BACKEND.get_or_init(|| {
            let mut b = LlamaBackend::init().unwrap();
            b.void_logs();
            b
        })
    }

    /// The GGUF as llama.cpp, the runtime that serves it, loads it.
    fn quantized(path: &Path) -> LlamaModel {
        LlamaModel::load_from_file(backend(), path, &LlamaModelParams::default()).unwrap()
    }

    fn system() -> ChatMessage {
        ChatMessage::system("You are a supportive CBT therapist.")
    }

    /// Fixed prompts and their token ids, computed independently with a Python implementation
    /// of llama.cpp's `smollm` pre-tokenizer (`\p{N}` split + GPT-2 regex) and byte-level BPE over
    /// the GGUF merges.
    fn prompts() -> Vec<(Vec<ChatMessage>, Vec<u32>)> {
        vec![
            (
                vec![
                    system(),
                    ChatMessage::user("I've been feeling really anxious about work lately."),
                ],
                vec![
                    1, 9690, 198, 2683, 359, 253, 11625, 27117, 13449, 30, 2, 198, 1, 4093, 198,
                    57, 3543, 719, 4330, 2159, 13724, 563, 746, 24382, 30, 2, 198, 1, 520, 9531,
                    198,
                ],
            ),
            (
                vec![
                    system(),
                    ChatMessage::user("My 3 kids and I moved 1200 miles in 2023; it's been hard!!"),
                ],
                vec![
                    1, 9690, 198, 2683, 359, 253, 11625, 27117, 13449, 30, 2, 198, 1, 4093, 198,
                    5965, 216, 35, 3081, 284, 339, 4935, 216, 33, 34, 32, 32, 4158, 281, 216, 34,
                    32, 34, 35, 43, 357, 506, 719, 1759, 10095, 2, 198, 1, 520, 9531, 198,
                ],
            ),
            (
                vec![ChatMessage::user(
                    "Can you help me?\n\nI can't sleep…  Tabs\tand  spaces.",
                )],
                vec![
                    1, 4093, 198, 7306, 346, 724, 549, 47, 198, 198, 57, 416, 982, 2801, 2829, 216,
                    312, 7366, 197, 397, 216, 5600, 30, 2, 198, 1, 520, 9531, 198,
                ],
            ),
        ]
    }

    fn softmax64(logits: &[f32]) -> Vec<f64> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect()
    }

    fn argmax(v: &[f32]) -> usize {
        v.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
                if x > bv { (i, x) } else { (bi, bv) }
            })
            .0
    }

    fn last_logits_f32(policy: &Policy, ids: &[u32], mode: Mode) -> Vec<f32> {
        let x = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = policy.model().forward(&x, None, mode).unwrap();
        logits
            .narrow(1, ids.len() - 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    /// llama.cpp's logits after the last of `ids`, from a fresh context.
    fn last_logits_q(q: &LlamaModel, ids: &[u32]) -> Vec<f32> {
        let n = u32::try_from(ids.len()).unwrap().max(64);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n))
            .with_n_batch(n);
        let mut ctx = q.new_context(backend(), params).unwrap();
        let mut batch = LlamaBatch::new(ids.len(), 1);
        for (i, &id) in ids.iter().enumerate() {
            let last = i + 1 == ids.len();
            batch
                .add(LlamaToken(i32::try_from(id).unwrap()), i as i32, &[0], last)
                .unwrap();
        }
        ctx.decode(&mut batch).unwrap();
        ctx.get_logits_ith(batch.n_tokens() - 1).to_vec()
    }

    #[test]
    fn tokenizer_matches_reference_ids_and_template() {
        let policy = load_policy();
        let tok: &ChatTokenizer = policy.tokenizer();
        assert_eq!(tok.vocab_size(), 49_152);
        assert_eq!(tok.im_end_id(), 2);
        for (msgs, want) in prompts() {
            let enc = tok.encode_chat(&msgs, true).unwrap();
            assert_eq!(enc.ids, want, "{msgs:?}");
            // Piecewise encoding equals encoding the rendered template in one go.
            let whole = tok
                .encode(&ChatTokenizer::render_chat(&msgs, true))
                .unwrap();
            assert_eq!(enc.ids, whole);
            assert_eq!(enc.assistant_tokens(), 0);
            // Decoding round-trips the rendered text.
            assert_eq!(
                tok.decode(&enc.ids, false).unwrap(),
                ChatTokenizer::render_chat(&msgs, true)
            );
        }
        // The assistant mask covers the therapist's content and its <|im_end|>, nothing else.
        let msgs = vec![
            system(),
            ChatMessage::user("Hi."),
            ChatMessage::assistant("Hello! How are you feeling today?"),
            ChatMessage::user("Tired."),
        ];
        let enc = tok.encode_chat(&msgs, false).unwrap();
        let content = tok.encode("Hello! How are you feeling today?").unwrap();
        let masked: Vec<u32> = enc
            .ids
            .iter()
            .zip(&enc.assistant_mask)
            .filter(|(_, m)| **m)
            .map(|(i, _)| *i)
            .collect();
        let mut want = content.clone();
        want.push(2);
        assert_eq!(masked, want);
        assert_eq!(
            enc.ids,
            tok.encode(&ChatTokenizer::render_chat(&msgs, false))
                .unwrap()
        );
    }

    #[test]
    fn trainable_model_matches_llama_cpp_on_the_quantized_gguf() {
        let path = model_path();
        let policy = load_policy();
        assert_eq!(policy.model().num_parameters(), 134_515_008);
        assert!(policy.model().config().tie_word_embeddings);
        let q = quantized(&path);
        for (msgs, ids) in prompts() {
            let f = last_logits_f32(&policy, &ids, Mode::Infer);
            let ql = last_logits_q(&q, &ids);
            let (pf, pq) = (softmax64(&f), softmax64(&ql));
            let kl: f64 = pq
                .iter()
                .zip(&pf)
                .filter(|(q, _)| **q > 0.0)
                .map(|(q, p)| q * (q / p).ln())
                .sum();
            let max_diff = f
                .iter()
                .zip(&ql)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!(
                "{} tokens: KL(q||f) = {kl:.5}, max |dlogit| = {max_diff:.3}",
                ids.len()
            );
            assert_eq!(argmax(&f), argmax(&ql), "argmax differs for {msgs:?}");
            assert!(kl < KL_TOL, "KL(q||f) = {kl} for {msgs:?}");
            // The differentiable path computes the same function as the fused one.
            let t = last_logits_f32(&policy, &ids, Mode::Train);
            let d = t
                .iter()
                .zip(&f)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-2, "train/infer logits differ by {d}");
        }
    }

    #[test]
    fn grpo_steps_raise_logprob_of_rewarded_response() {
        let policy = load_policy();
        let msgs = vec![
            system(),
            ChatMessage::user("I've been feeling really anxious about work lately."),
            ChatMessage::assistant(
                "That sounds really hard. What thoughts go through your mind when the anxiety starts?",
            ),
        ];
        let enc = policy.encode_chat(&msgs, false).unwrap();
        let old = sequence_logprobs(policy.model(), &[(&enc.ids, &enc.assistant_mask)], 1).unwrap();
        let seq = TrainSequence {
            ids: enc.ids.clone(),
            mask: enc.assistant_mask.clone(),
            advantage: 1.0,
            old_logprobs: old[0].clone(),
            ref_logprobs: Some(old[0].clone()),
        };
        let mut cfg = GrpoConfig::from_preset(Preset::Verl, 1e-5);
        cfg.kl_coef = 0.001;
        let mut trainer = Trainer::new(policy.model().clone(), cfg);
        let logp = |t: &Trainer| -> f32 {
            sequence_logprobs(t.model(), &[(&enc.ids, &enc.assistant_mask)], 1).unwrap()[0]
                .iter()
                .sum()
        };
        let mut last = logp(&trainer);
        let mut trace = vec![last];
        for _ in 0..3 {
            let m = trainer.train_step(std::slice::from_ref(&seq)).unwrap();
            assert!(m.loss.is_finite() && m.grad_norm.is_finite());
            assert_eq!(m.tokens, enc.assistant_tokens());
            let now = logp(&trainer);
            trace.push(now);
            assert!(now > last, "log p did not rise: {trace:?}");
            last = now;
        }
        eprintln!("log p(response) per step: {trace:?}");
    }

    #[test]
    fn checkpoint_round_trip_and_gguf_export() {
        let path = model_path();
        let policy = load_policy();
        let msgs = vec![
            system(),
            ChatMessage::user("I can't stop worrying about my exams."),
        ];
        let prompt = policy.encode_chat(&msgs, true).unwrap().ids;

        // Train one step so the weights differ from the source file.
        let generation = policy.generate(&msgs, 24, 0.8, 0.95, 7).unwrap();
        let generation2 = policy.generate(&msgs, 24, 0.8, 0.95, 7).unwrap();
        assert_eq!(
            generation, generation2,
            "seeded generation must be reproducible"
        );
        assert!(!generation.token_ids.is_empty());
        let mut full = msgs.clone();
        full.push(generation.to_message());
        let enc = policy.encode_chat(&full, false).unwrap();
        let old = sequence_logprobs(policy.model(), &[(&enc.ids, &enc.assistant_mask)], 1).unwrap();
        // Sampling-time log-probs equal teacher-forced scoring of the same ids.
        if generation.finish_reason == therapygym_grpo::FinishReason::Stop {
            for (a, b) in generation.logprobs.iter().zip(&old[0]) {
                assert!((a - b).abs() < 1e-3, "{a} vs {b}");
            }
        }
        let mut trainer = Trainer::new(
            policy.model().clone(),
            GrpoConfig::from_preset(Preset::Verl, 1e-4),
        );
        trainer
            .train_step(&[TrainSequence {
                ids: enc.ids.clone(),
                mask: enc.assistant_mask.clone(),
                advantage: 1.0,
                old_logprobs: old[0].clone(),
                ref_logprobs: None,
            }])
            .unwrap();

        // A 1.6 GB checkpoint: beside `target/`, not in a /tmp that may be a small tmpfs.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        checkpoint::save_checkpoint(
            dir.path(),
            trainer.model(),
            trainer.optimizer(),
            serde_json::json!({}),
        )
        .unwrap();
        let fresh = load_policy();
        let mut opt = AdamW::new(fresh.model().params(), *trainer.optimizer().config());
        checkpoint::load_checkpoint(dir.path(), fresh.model(), &mut opt).unwrap();
        assert_eq!(opt.step_count(), 1);
        for ((n, a), (_, b)) in trainer.model().params().iter().zip(fresh.model().params()) {
            let a = a
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = b
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "weights of {n} differ after reload"
            );
        }
        for i in 0..opt.params().len() {
            assert_eq!(opt.moments(i), trainer.optimizer().moments(i));
        }

        // Export the trained policy and reload it with llama.cpp.
        let trained = fresh.with_model(trainer.model().clone()).unwrap();
        let out = dir.path().join("trained.q8_0.gguf");
        trained.export_gguf(&out, ExportType::Q8_0).unwrap();
        let ct = gguf_file::Content::read(&mut File::open(&out).unwrap()).unwrap();
        let src = gguf_file::Content::read(&mut File::open(&path).unwrap()).unwrap();
        for key in [
            "tokenizer.chat_template",
            "tokenizer.ggml.pre",
            "llama.rope.freq_base",
        ] {
            assert_eq!(
                format!("{:?}", ct.metadata.get(key)),
                format!("{:?}", src.metadata.get(key)),
                "{key}"
            );
        }
        assert_eq!(ct.tensor_infos.len(), src.tensor_infos.len());
        // `source` keeps every tensor's storage type (Q4_1 matrices, Q8_0 embedding, F32 norms).
        let same = dir.path().join("trained.source.gguf");
        trained.export_gguf(&same, ExportType::Source).unwrap();
        let st = gguf_file::Content::read(&mut File::open(&same).unwrap()).unwrap();
        for (name, info) in &src.tensor_infos {
            assert_eq!(st.tensor_infos[name].ggml_dtype, info.ggml_dtype, "{name}");
            assert_eq!(st.tensor_infos[name].shape, info.shape, "{name}");
        }
        let q = quantized(&out);
        let qa = last_logits_q(&q, &prompt);
        let fa = last_logits_f32(&trained, &prompt, Mode::Infer);
        assert_eq!(argmax(&qa), argmax(&fa));
        let pf = softmax64(&fa);
        let kl: f64 = softmax64(&qa)
            .iter()
            .zip(&pf)
            .filter(|(q, _)| **q > 0.0)
            .map(|(q, p)| q * (q / p).ln())
            .sum();
        assert!(kl < KL_TOL, "KL(exported q8 || trained f32) = {kl}");
        let max_logit_diff = Tensor::new(qa.as_slice(), &Device::Cpu)
            .unwrap()
            .sub(&Tensor::new(fa.as_slice(), &Device::Cpu).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("export: KL {kl:.5}, max |Δlogit| {max_logit_diff:.3}");
    }
}
