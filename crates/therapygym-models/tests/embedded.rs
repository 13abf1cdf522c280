//! The embedded GGUF through llama.cpp (feature `model-tests`; the README's test command
//! installs the model first). Without the model these tests fail and name the setup command.
#![cfg(feature = "model-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use therapygym_models::{
    ChatMessage, ChatRequest, FinishReason, ModelOptions, ModelSpec, Sampling, home, open_model,
};

fn require_model() {
    let p = home::embedded_model_path();
    assert!(
        p.is_file(),
        "the embedded model is missing at {}; run scripts/setup-model.sh",
        p.display()
    );
}

fn opts() -> ModelOptions {
    ModelOptions {
        concurrency: 4,
        ..ModelOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_model_answers_and_is_deterministic_per_seed() {
    require_model();
    let m = open_model(&ModelSpec::Embedded, opts()).await.unwrap();
    let req = ChatRequest::new(vec![
        ChatMessage::system("You are a supportive CBT therapist."),
        ChatMessage::user("I can't sleep before exams."),
    ])
    .with_sampling(Sampling {
        temperature: 0.7,
        top_p: 0.95,
        max_tokens: 40,
        seed: Some(7),
        stop: vec![],
    });
    let a = m.chat(&req).await.unwrap();
    assert!(!a.text.trim().is_empty());
    assert!(a.prompt_tokens > 10 && a.completion_tokens > 0 && a.completion_tokens <= 40);
    assert_eq!(a.model, home::EMBEDDED_FILE);
    let b = m.chat(&req).await.unwrap();
    assert_eq!(a.text, b.text, "same seed and settings give the same text");
    let mut other = req.clone();
    other.sampling.seed = Some(8);
    // Another seed usually differs; at least it must answer.
    assert!(!m.chat(&other).await.unwrap().text.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_requests_return_valid_json_even_when_long() {
    require_model();
    let m = open_model(&ModelSpec::Embedded, opts()).await.unwrap();
    let item = serde_json::json!({"type": "object", "additionalProperties": false, "required": ["rationale", "score"],
        "properties": {"rationale": {"type": "string", "maxLength": 120}, "score": {"type": "integer", "enum": [0,1,2,3,4,5,6]}}});
    let schema = serde_json::json!({"type": "object", "additionalProperties": false, "required": ["a", "b", "c", "d"],
        "properties": {"a": item, "b": item, "c": item, "d": item}});
    let req = ChatRequest::new(vec![ChatMessage::user(
        "Rate four aspects of a therapy session from 0 to 6 with a rationale each.",
    )])
    .with_sampling(Sampling {
        temperature: 0.0,
        top_p: 1.0,
        max_tokens: 600,
        seed: Some(1),
        stop: vec![],
    })
    .with_schema("ratings", schema.clone());
    let r = m.chat(&req).await.unwrap();
    // A grammar-constrained generation of this size exercises the sampler accept path
    // (`sample` already accepts; a second accept would abort llama.cpp).
    assert!(
        r.completion_tokens >= 60,
        "{} tokens: {}",
        r.completion_tokens,
        r.text
    );
    assert_eq!(r.finish_reason, FinishReason::Stop);
    let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
    assert!(
        jsonschema::validator_for(&schema).unwrap().is_valid(&v),
        "{v}"
    );
}

/// Every construct of our schema → grammar converter, sampled (not greedy) under a few seeds:
/// llama.cpp must accept the grammar and every reply must validate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_replies_follow_every_grammar_construct() {
    require_model();
    let m = open_model(&ModelSpec::Embedded, opts()).await.unwrap();
    let schema = serde_json::json!({
        "type": "object", "required": ["names", "mood", "level"],
        "properties": {
            "note": {"type": "string", "minLength": 3, "maxLength": 20},
            "names": {"type": "array", "minItems": 2, "maxItems": 3,
                      "items": {"type": "string", "minLength": 1, "maxLength": 12}},
            "mood": {"enum": ["calm", "sad", "angry"]},
            "level": {"type": "integer", "minimum": 1, "maximum": 10},
            "score": {"type": ["number", "null"]},
            "done": {"type": "boolean"}
        }
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    for seed in 1..=3 {
        let req = ChatRequest::new(vec![ChatMessage::user(
            "Describe two friends, their mood and an energy level, as JSON.",
        )])
        .with_sampling(Sampling {
            temperature: 0.9,
            top_p: 0.95,
            max_tokens: 200,
            seed: Some(seed),
            stop: vec![],
        })
        .with_schema("friends", schema.clone());
        let r = m.chat(&req).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
        assert!(validator.is_valid(&v), "seed {seed}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_loaded_model_serves_concurrent_callers() {
    require_model();
    let m = open_model(&ModelSpec::Embedded, opts()).await.unwrap();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let m = Arc::clone(&m);
            tokio::spawn(async move {
                let req =
                    ChatRequest::new(vec![ChatMessage::user(format!("Say hello number {i}."))])
                        .with_sampling(Sampling {
                            temperature: 0.0,
                            top_p: 1.0,
                            max_tokens: 12,
                            seed: Some(i),
                            stop: vec![],
                        });
                m.chat(&req).await
            })
        })
        .collect();
    for c in calls {
        assert!(!c.await.unwrap().unwrap().text.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_gguf_is_a_config_error() {
    let e = open_model(&ModelSpec::Gguf("/nonexistent/x.gguf".into()), opts())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), therapygym_models::ErrorKind::Config);
    assert!(e.to_string().contains("/nonexistent/x.gguf"));
}
