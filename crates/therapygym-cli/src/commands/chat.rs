use std::process::ExitCode;

use anyhow::Context;
use therapygym_models::{ChatMessage, ChatRequest, ModelOptions, ModelSpec, Sampling, open_model};

use crate::cli::ChatArgs;
use crate::ui;

pub async fn run(a: ChatArgs) -> anyhow::Result<ExitCode> {
    let spec: ModelSpec = a.model.parse()?;
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::system(s.clone()));
    }
    messages.push(ChatMessage::user(a.prompt.clone()));
    let mut req = ChatRequest::new(messages).with_sampling(Sampling {
        temperature: a.temperature,
        top_p: 1.0,
        max_tokens: a.max_tokens,
        seed: Some(a.seed),
        stop: Vec::new(),
    });
    if let Some(path) = &a.json_schema {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the JSON schema {}", path.display()))?;
        let schema: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "response".into());
        req = req.with_schema(sanitize_name(&name), schema);
        // Structured output is most reliable greedy; an explicit --temperature still applies.
    }
    let model = open_model(
        &spec,
        ModelOptions {
            concurrency: 1,
            ..ModelOptions::default()
        },
    )
    .await?;
    let resp = model
        .chat(&req)
        .await
        .with_context(|| format!("the model {spec} did not answer"))?;
    if a.json {
        ui::json(&resp);
    } else if a.json_schema.is_some() {
        // One JSON value, compact, so it pipes into jq.
        let v: serde_json::Value = serde_json::from_str(resp.text.trim())?;
        ui::out(&v.to_string());
    } else {
        ui::out(resp.text.trim());
    }
    Ok(ExitCode::SUCCESS)
}

/// Servers accept schema names of `[A-Za-z0-9_-]` only.
fn sanitize_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if n.is_empty() { "response".into() } else { n }
}
