//! One GRPO update on the embedded SmolLM2-135M: G = 4 sequences × 256 therapist tokens.
//!
//! `cargo run --release -p therapygym-grpo --example step_bench [-- MICRO_BATCH]`
//!
//! MICRO_BATCH (default 4 = the whole group in one pass) trades speed for peak memory.
//! Prints the forward / backward / optimizer split of two consecutive steps (the first pays for
//! first-touch allocations and the optimizer-state allocation), π_old scoring time, KV-cached
//! decode speed, and peak RSS (VmHWM).
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::time::Instant;

use therapygym_grpo::trainer::sequence_logprobs;
use therapygym_grpo::{ChatMessage, GrpoConfig, Policy, Preset, TrainSequence, Trainer};

const GROUP: usize = 4;
const THERAPIST_TOKENS: usize = 256;

const REPLY: &str = "It sounds like work has been weighing on you a lot lately, and that anxiety \
    can be exhausting. Let's slow down for a moment. When you notice the anxiety rising, what \
    thoughts tend to go through your mind? Sometimes our minds jump to the worst outcome, like \
    assuming a small mistake means we will lose our job. In CBT we call that catastrophizing. \
    Could we look at the evidence for and against that thought together? What has actually \
    happened at work when you made mistakes before, and how did people respond? ";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let policy = Policy::load_default()?;
    let load_s = t.elapsed().as_secs_f64();
    let tok = policy.tokenizer();
    let prompt = vec![
        ChatMessage::system("You are a supportive CBT therapist."),
        ChatMessage::user("I've been feeling really anxious about work lately."),
    ];

    // G sequences with exactly THERAPIST_TOKENS masked tokens (content + <|im_end|>).
    let reply_ids = tok.encode(&REPLY.repeat(4))?;
    let mut batch = Vec::new();
    for g in 0..GROUP {
        let content = reply_ids[g * 7..g * 7 + THERAPIST_TOKENS - 1].to_vec();
        let mut msgs = prompt.clone();
        msgs.push(ChatMessage {
            token_ids: Some(content),
            ..ChatMessage::assistant("")
        });
        let enc = policy.encode_chat(&msgs, false)?;
        batch.push((enc, [1.0, -1.0, 0.5, -0.5][g]));
    }
    let total_tokens: usize = batch.iter().map(|(e, _)| e.len()).sum();

    let (t, cpu0) = (Instant::now(), cpu_seconds());
    let refs: Vec<(&[u32], &[bool])> = batch
        .iter()
        .map(|(e, _)| (e.ids.as_slice(), e.assistant_mask.as_slice()))
        .collect();
    let old = sequence_logprobs(policy.model(), &refs, GROUP)?;
    let score_s = t.elapsed().as_secs_f64();
    let score_cpu = cpu_seconds() - cpu0;
    let seqs: Vec<TrainSequence> = batch
        .iter()
        .zip(old)
        .map(|((e, a), o)| TrainSequence {
            ids: e.ids.clone(),
            mask: e.assistant_mask.clone(),
            advantage: *a,
            old_logprobs: o,
            ref_logprobs: None,
        })
        .collect();

    let micro_batch = std::env::args()
        .nth(1)
        .map(|a| a.parse::<usize>())
        .transpose()?
        .unwrap_or(GROUP);
    let mut cfg = GrpoConfig::from_preset(Preset::Verl, 1e-6);
    cfg.micro_batch_size = micro_batch;
    let mut trainer = Trainer::new(policy.model().clone(), cfg);
    println!(
        "model: {} parameters, load {load_s:.2} s; batch: G={GROUP}, {THERAPIST_TOKENS} therapist tokens each, {total_tokens} tokens in total",
        trainer.model().num_parameters()
    );
    println!(
        "pi_old scoring (no grad): {score_s:.2} s ({score_cpu:.1} CPU-s); micro-batch {micro_batch}"
    );
    for step in 1..=2 {
        let (t, cpu0) = (Instant::now(), cpu_seconds());
        let m = trainer.train_step(&seqs)?;
        let total = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        println!(
            "step {step}: {total:.2} s total ({cpu:.1} CPU-s) = forward {:.2} s + backward {:.2} s + optimizer {:.2} s | loss {:.5}, grad norm {:.3}, clip frac {:.3}, tokens {}",
            m.timings.forward_s,
            m.timings.backward_s,
            m.timings.optimizer_s,
            m.loss,
            m.grad_norm,
            m.clip_frac,
            m.tokens
        );
    }

    let t = Instant::now();
    let generation = policy.generate(&prompt, 64, 0.0, 1.0, 0)?;
    let gen_s = t.elapsed().as_secs_f64();
    println!(
        "greedy generation: {} tokens in {gen_s:.2} s ({:.1} tok/s incl. {}-token prefill)",
        generation.token_ids.len(),
        generation.token_ids.len() as f64 / gen_s,
        generation.prompt_tokens
    );
    println!("peak RSS (VmHWM): {}", peak_rss());
    Ok(())
}

/// User + system CPU time of this process (all threads), from /proc/self/stat. On a busy
/// shared machine this is a steadier measure than wall time; on an idle 2-core machine wall time
/// is at least half of it.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0) // USER_HZ is 100 on Linux
        })
        .unwrap_or(f64::NAN)
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unavailable".into())
}
