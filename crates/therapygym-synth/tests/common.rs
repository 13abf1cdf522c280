//! Shared helpers: a fake backend that answers some steps by rule and falls back to the
//! scripted fake (schema-valid values derived from the request) for the rest.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use therapygym_models::{
    BackendInfo, ChatBackend, ChatRequest, ChatResponse, FinishReason, Model, ModelError,
    ModelOptions, ModelSpec, ScriptedBackend, ScriptedMode,
};
use therapygym_synth::{RunDir, Silent, SynthConfig, SynthPrompts, SynthSummary, run_synth};

pub type Rule = dyn Fn(&ChatRequest, &Fake) -> Option<Result<String, ModelError>> + Send + Sync;

pub struct Fake {
    scripted: ScriptedBackend,
    rule: Box<Rule>,
    pub log: Mutex<Vec<ChatRequest>>,
    pub calls: AtomicU64,
    /// Times each user prompt was seen (attempt counting by prompt text).
    pub seen: Mutex<HashMap<String, u32>>,
    /// Fail every call after this many (a simulated crash).
    pub crash_after: Option<u64>,
}

impl Fake {
    pub fn new(
        rule: impl Fn(&ChatRequest, &Fake) -> Option<Result<String, ModelError>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            scripted: ScriptedBackend::new(ScriptedMode::Echo),
            rule: Box::new(rule),
            log: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
            crash_after: None,
        }
    }

    pub fn echo() -> Self {
        Self::new(|_, _| None)
    }

    /// How many times this prompt was asked before (0 the first time).
    pub fn times_seen(&self, req: &ChatRequest) -> u32 {
        let mut m = self.seen.lock().unwrap();
        let n = m.entry(user(req).to_string()).or_insert(0);
        *n += 1;
        *n - 1
    }

    pub fn requests(&self, schema: &str) -> Vec<ChatRequest> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.schema_name.as_deref() == Some(schema))
            .cloned()
            .collect()
    }
}

pub fn user(req: &ChatRequest) -> &str {
    req.messages
        .get(1)
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

pub fn schema_name(req: &ChatRequest) -> &str {
    req.schema_name.as_deref().unwrap_or("")
}

/// The dimensions a dimension prompt says are used already.
pub fn used_dimensions(req: &ChatRequest) -> Vec<String> {
    let text = user(req);
    let marker = "Do not use these dimensions again, or a synonym of them: ";
    match text.find(marker) {
        Some(i) => {
            let rest = &text[i + marker.len()..];
            let line = rest.lines().next().unwrap_or("").trim_end_matches('.');
            line.split(", ").map(str::to_string).collect()
        }
        None => Vec::new(),
    }
}

/// The enum of the assignment schema (the allowed values).
pub fn assignment_values(req: &ChatRequest) -> Vec<String> {
    req.json_schema.as_ref().unwrap()["properties"]["assignments"]["items"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

pub fn assignment_count(req: &ChatRequest) -> usize {
    req.json_schema.as_ref().unwrap()["properties"]["assignments"]["minItems"]
        .as_u64()
        .unwrap() as usize
}

pub fn ok(v: Value) -> Option<Result<String, ModelError>> {
    Some(Ok(v.to_string()))
}

#[async_trait]
impl ChatBackend for Fake {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.log.lock().unwrap().push(req.clone());
        if self.crash_after.is_some_and(|k| n >= k) {
            return Err(ModelError::config("simulated crash"));
        }
        match (self.rule)(req, self) {
            Some(Ok(text)) => Ok(ChatResponse {
                text,
                finish_reason: FinishReason::Stop,
                prompt_tokens: 1,
                completion_tokens: 1,
                latency: Duration::ZERO,
                attempts: 1,
                model: "fake".into(),
            }),
            Some(Err(e)) => Err(e),
            None => self.scripted.complete(req).await,
        }
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "fake".into(),
            model: "fake".into(),
            base_url: None,
            sha256: None,
        }
    }
}

pub fn model(fake: Arc<Fake>) -> Arc<Model> {
    let options = ModelOptions {
        concurrency: 4,
        ..ModelOptions::default()
    };
    Arc::new(Model::from_backend(ModelSpec::Scripted(ScriptedMode::Echo), fake, options).unwrap())
}

pub fn config() -> SynthConfig {
    SynthConfig {
        model: "scripted:echo".into(),
        depth: 2,
        samples_per_node: 3,
        holdout: 2,
        ..SynthConfig::default()
    }
}

pub fn seeds() -> Vec<therapygym_core::Profile> {
    therapygym_core::builtin::example_profiles()
        .unwrap()
        .profiles
}

pub async fn run(
    fake: Arc<Fake>,
    cfg: SynthConfig,
    dir: &Path,
) -> Result<SynthSummary, therapygym_synth::SynthError> {
    let run = RunDir::create(dir, cfg, SynthPrompts::default(), seeds(), "<test>")?;
    run_synth(run, model(fake), 4, Arc::new(Silent)).await
}

pub async fn resume(
    fake: Arc<Fake>,
    dir: &Path,
) -> Result<SynthSummary, therapygym_synth::SynthError> {
    let run = RunDir::open(dir)?;
    run_synth(run, model(fake), 4, Arc::new(Silent)).await
}

/// A two-valued dimension per level and a complete list: a small, predictable tree.
pub fn binary_tree(req: &ChatRequest, _: &Fake) -> Option<Result<String, ModelError>> {
    match schema_name(req) {
        "node_dimension" => {
            let k = used_dimensions(req).len();
            ok(
                serde_json::json!({"dimension": format!("dimension {k}"), "values": [format!("a{k}"), format!("b{k}")]}),
            )
        }
        "node_assignments" => {
            let values = assignment_values(req);
            let n = assignment_count(req);
            ok(
                serde_json::json!({"assignments": (0..n).map(|i| values[i % values.len()].clone()).collect::<Vec<_>>()}),
            )
        }
        "node_values" => ok(serde_json::json!({"missing_values": [], "status": "null"})),
        _ => None,
    }
}

pub fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

pub fn json(dir: &Path, file: &str) -> Value {
    serde_json::from_str(&read(dir, file)).unwrap()
}

pub fn load(dir: &Path, file: &str) -> therapygym_core::ProfileSet {
    let vocab = therapygym_core::builtin::vocabulary().unwrap();
    therapygym_core::load_profiles(&dir.join(file), &vocab).unwrap()
}
