//! The OpenAI-compatible backend against a real HTTP server on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use therapygym_models::{
    ChatMessage, ChatRequest, ErrorKind, MAX_REPLY_BYTES, Model, ModelOptions, ModelSpec,
    RetryPolicy, StructuredMode, Timeouts, open_model, structured_mode,
};
use therapygym_testkit::{Behavior, FakeServer, Formats};

fn opts() -> ModelOptions {
    ModelOptions {
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        timeouts: Timeouts {
            attempt: Duration::from_secs(5),
            total: Duration::from_secs(30),
        },
        concurrency: 4,
    }
}

async fn model(server: &FakeServer, o: ModelOptions) -> Arc<Model> {
    let spec: ModelSpec = format!("openai:test-model@{}", server.base_url)
        .parse()
        .unwrap();
    open_model(&spec, o).await.unwrap()
}

fn req(text: &str) -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("be brief"),
        ChatMessage::user(text),
    ])
}

#[tokio::test]
async fn normal_reply_carries_text_usage_and_settings() {
    let s = FakeServer::start(Behavior::Reply(Some("Hello there.".into())))
        .await
        .unwrap();
    let m = model(&s, opts()).await;
    let r = m.chat(&req("hi")).await.unwrap();
    assert_eq!(r.text, "Hello there.");
    assert_eq!(
        (r.prompt_tokens, r.completion_tokens, r.attempts),
        (7, 3, 1)
    );
    let body = s.state.last_body().unwrap();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(body["temperature"].is_number() && body["max_tokens"].is_number());
}

#[tokio::test]
async fn rate_limit_is_retried_after_the_hint() {
    let s = FakeServer::start(Behavior::RateLimit { secs: 1, times: 2 })
        .await
        .unwrap();
    let m = model(&s, opts()).await;
    let started = Instant::now();
    let r = m.chat(&req("hi")).await.unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(s.state.request_count(), 3);
    // Two waits of at least the 1 s Retry-After each.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retry_after_is_capped() {
    let s = FakeServer::start(Behavior::RateLimit {
        secs: 3600,
        times: 1,
    })
    .await
    .unwrap();
    let mut o = opts();
    o.retry.retry_after_cap = Duration::from_millis(50);
    let m = model(&s, o).await;
    let started = Instant::now();
    m.chat(&req("hi")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let s = FakeServer::start(Behavior::Status {
        code: 500,
        times: 2,
    })
    .await
    .unwrap();
    assert_eq!(
        model(&s, opts())
            .await
            .chat(&req("x"))
            .await
            .unwrap()
            .attempts,
        3
    );

    let s = FakeServer::start(Behavior::Status {
        code: 503,
        times: 100,
    })
    .await
    .unwrap();
    let e = model(&s, opts()).await.chat(&req("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert_eq!(s.state.request_count(), 5);
    assert!(
        e.message().contains("HTTP 503") && e.message().contains("after 5 attempts"),
        "{}",
        e.message()
    );

    let s = FakeServer::start(Behavior::Status {
        code: 401,
        times: 100,
    })
    .await
    .unwrap();
    let e = model(&s, opts()).await.chat(&req("x")).await.unwrap_err();
    assert_eq!((e.kind(), s.state.request_count()), (ErrorKind::Fatal, 1));
    assert!(
        e.message().contains("THERAPYGYM_API_KEY"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn a_context_length_rejection_is_context_overflow_and_not_retried() {
    for (code, body) in [
        (
            400,
            r#"{"object":"error","message":"This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.","type":"BadRequestError","code":400}"#,
        ),
        (
            400,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
        ),
        (
            413,
            r#"{"error":{"message":"too many tokens","code":"context_length_exceeded"}}"#,
        ),
    ] {
        let s = FakeServer::start(Behavior::StatusBody {
            code,
            body: body.into(),
            times: 100,
        })
        .await
        .unwrap();
        let e = model(&s, opts()).await.chat(&req("x")).await.unwrap_err();
        assert_eq!(
            (e.kind(), s.state.request_count()),
            (ErrorKind::ContextOverflow, 1),
            "{code}: {}",
            e.message()
        );
        assert!(e.message().contains("longer context"), "{}", e.message());
    }
    // Another 400 stays fatal.
    let s = FakeServer::start(Behavior::StatusBody {
        code: 400,
        body: r#"{"error":{"message":"unknown field `foo`"}}"#.into(),
        times: 100,
    })
    .await
    .unwrap();
    let e = model(&s, opts()).await.chat(&req("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fatal);
}

#[tokio::test]
async fn malformed_bodies_are_an_error_not_a_reply() {
    let s = FakeServer::start(Behavior::Malformed { times: 100 })
        .await
        .unwrap();
    let e = model(&s, opts()).await.chat(&req("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadResponse);
    let s = FakeServer::start(Behavior::Malformed { times: 1 })
        .await
        .unwrap();
    assert_eq!(
        model(&s, opts())
            .await
            .chat(&req("x"))
            .await
            .unwrap()
            .attempts,
        2
    );
}

#[tokio::test]
async fn a_hung_connection_hits_the_timeout() {
    let s = FakeServer::start(Behavior::Hang).await.unwrap();
    let mut o = opts();
    o.timeouts = Timeouts {
        attempt: Duration::from_millis(200),
        total: Duration::from_secs(1),
    };
    o.retry.max_delay = Duration::from_millis(10);
    let started = Instant::now();
    let e = model(&s, o).await.chat(&req("x")).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Timeout(_)), "{:?}", e.kind());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn concurrency_limit_is_respected_on_the_wire() {
    let s = FakeServer::start(Behavior::Delay { ms: 100 })
        .await
        .unwrap();
    let mut o = opts();
    o.concurrency = 3;
    let m = model(&s, o).await;
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let m = Arc::clone(&m);
            tokio::spawn(async move { m.chat(&req(&format!("q{i}"))).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        s.state.max_live.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[tokio::test]
async fn schema_requests_send_response_format_and_check_the_reply() {
    let schema = serde_json::json!({"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}});
    let s = FakeServer::start(Behavior::Reply(Some(r#"{"ok": true}"#.into())))
        .await
        .unwrap();
    let m = model(&s, opts()).await;
    let r = m
        .chat(&req("x").with_schema("check", schema.clone()))
        .await
        .unwrap();
    assert_eq!(r.text, r#"{"ok": true}"#);
    let body = s.state.last_body().unwrap();
    assert_eq!(body["response_format"]["json_schema"]["schema"], schema);
    // A server that ignores response_format: the reply is rejected with its own error kind.
    s.state
        .set(Behavior::Reply(Some("Sure! Here you go: ok".into())));
    let e = m
        .chat(&req("y").with_schema("check", schema))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidJson);
    assert_eq!(e.raw(), Some("Sure! Here you go: ok"));
}

#[tokio::test]
async fn the_api_key_is_sent_as_bearer_and_never_displayed() {
    let s = FakeServer::start(Behavior::Reply(None)).await.unwrap();
    let backend = therapygym_models::OpenAiBackend::new(
        "m",
        &s.base_url,
        Some(therapygym_models::ApiKey::new("sk-test-secret")),
    )
    .unwrap();
    let spec: ModelSpec = format!("openai:m@{}", s.base_url).parse().unwrap();
    let m = Model::from_backend(spec.clone(), Arc::new(backend), opts()).unwrap();
    m.chat(&req("hi")).await.unwrap();
    assert_eq!(
        s.state.auth_headers.lock().unwrap().as_slice(),
        ["Bearer sk-test-secret"]
    );
    let shown = format!(
        "{} {:?} {}",
        spec,
        m,
        serde_json::to_string(&m.info()).unwrap()
    );
    assert!(!shown.contains("sk-test-secret"), "{shown}");
}

fn judge_like_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object", "additionalProperties": false, "required": ["score", "why"],
        "properties": {
            "score": {"type": "integer", "enum": [0, 1, 2, 3, 4, 5, 6]},
            "why": {"type": "string", "maxLength": 40},
        },
    })
}

/// Two structured calls against a fake behaving like one kind of server: the reply is valid
/// each time, and the second call goes straight to the mode the first one found.
async fn negotiate(formats: Formats) -> (Vec<String>, StructuredMode) {
    let s = FakeServer::start(Behavior::Reply(None)).await.unwrap();
    s.state.set_formats(formats);
    let m = model(&s, opts()).await;
    for q in ["first", "second"] {
        let r = m
            .chat(&req(q).with_schema("judgement", judge_like_schema()))
            .await
            .unwrap_or_else(|e| panic!("{formats:?}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
        assert_eq!(v["score"], 0, "{formats:?}: {}", r.text);
    }
    (s.state.formats_asked(), structured_mode(&s.base_url))
}

#[tokio::test]
async fn structured_output_is_negotiated_per_kind_of_server() {
    // OpenAI, vLLM, SGLang, llama-server: json_schema works and stays.
    let (asked, mode) = negotiate(Formats::Honours).await;
    assert_eq!(
        (asked, mode),
        (
            vec!["json_schema".into(), "json_schema".into()],
            StructuredMode::JsonSchema
        )
    );
    // llama-cpp-python 0.3.x: a 500 naming response_format, then json_object with the schema.
    let (asked, mode) = negotiate(Formats::RejectsJsonSchema).await;
    assert_eq!(
        (asked, mode),
        (
            vec![
                "json_schema".into(),
                "json_object".into(),
                "json_object".into()
            ],
            StructuredMode::JsonObject
        )
    );
    // A server that ignores response_format: the schema goes into the prompt.
    let (asked, mode) = negotiate(Formats::Ignores).await;
    assert_eq!(
        (asked, mode),
        (
            vec![
                "json_schema".into(),
                "json_object".into(),
                "none".into(),
                "none".into()
            ],
            StructuredMode::Prompt
        )
    );
}

#[tokio::test]
async fn prompt_mode_still_validates_the_reply() {
    let s = FakeServer::start(Behavior::Reply(Some("no JSON here".into())))
        .await
        .unwrap();
    let m = model(&s, opts()).await;
    let e = m
        .chat(&req("x").with_schema("judgement", judge_like_schema()))
        .await
        .unwrap_err();
    // json_schema and json_object were ignored; the prompt-mode reply is still checked.
    assert_eq!(e.kind(), ErrorKind::InvalidJson);
    assert_eq!(structured_mode(&s.base_url), StructuredMode::Prompt);
    assert_eq!(
        s.state.formats_asked(),
        ["json_schema", "json_object", "none"]
    );
    // A fenced reply in prompt mode is unwrapped before validation.
    s.state.set(Behavior::Reply(Some(
        "```json\n{\"score\": 3, \"why\": \"fine\"}\n```".into(),
    )));
    let r = m
        .chat(&req("y").with_schema("judgement", judge_like_schema()))
        .await
        .unwrap();
    assert_eq!(r.text, r#"{"score": 3, "why": "fine"}"#);
}

#[tokio::test]
async fn an_oversized_reply_is_its_own_error_and_is_not_retried() {
    let s = FakeServer::start(Behavior::Huge {
        bytes: MAX_REPLY_BYTES + 1,
    })
    .await
    .unwrap();
    let e = model(&s, opts()).await.chat(&req("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReplyTooLarge);
    assert_eq!(e.attempts(), 1);
    assert!(e.message().contains("8 MiB"), "{}", e.message());
    // A large but allowed reply is read whole.
    s.state.set(Behavior::Huge { bytes: 1 << 20 });
    let r = model(&s, opts()).await.chat(&req("x")).await.unwrap();
    assert_eq!(r.text, "padded");
}

#[tokio::test]
async fn global_keys_are_not_sent_to_plain_http_servers() {
    // Whatever THERAPYGYM_API_KEY / OPENAI_API_KEY hold, a spec without `#key=` sends no key
    // to an http:// endpoint.
    let s = FakeServer::start(Behavior::Reply(None)).await.unwrap();
    model(&s, opts()).await.chat(&req("hi")).await.unwrap();
    assert!(s.state.auth_headers.lock().unwrap().is_empty());
    // A spec naming an unset variable fails before any request.
    let spec: ModelSpec = format!("openai:m@{}#key=THERAPYGYM_TEST_UNSET_KEY", s.base_url)
        .parse()
        .unwrap();
    let e = open_model(&spec, opts()).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.message().contains("THERAPYGYM_TEST_UNSET_KEY"),
        "{}",
        e.message()
    );
    assert_eq!(s.state.request_count(), 1);
}
