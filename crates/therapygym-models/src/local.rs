//! Local GGUF models through llama.cpp (`embedded` and `gguf:PATH`).
//!
//! Each model file is loaded once per process into a dedicated worker thread that owns the
//! llama.cpp model and context; callers queue requests on a channel. On a 2-core machine one
//! decode at a time is the fastest schedule anyway, and it keeps the (non-`Sync`) context safe.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use tokio::sync::oneshot;

use crate::backend::{BackendInfo, ChatBackend};
use crate::error::{ErrorKind, ModelError};
use crate::request::{ChatMessage, ChatRequest, ChatResponse, FinishReason};

/// Largest context we allocate, whatever the model was trained with (KV cache memory).
const MAX_CTX: u32 = 8192;
const PROMPT_CHUNK: usize = 512;

struct Job {
    req: ChatRequest,
    reply: oneshot::Sender<Result<ChatResponse, ModelError>>,
}

pub struct LocalBackend {
    tx: Mutex<mpsc::Sender<Job>>,
    info: BackendInfo,
}

fn llama_backend() -> Result<&'static LlamaBackend, ModelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            LlamaBackend::init()
                .map(|mut b| {
                    b.void_logs();
                    b
                })
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::config(format!("cannot initialise llama.cpp: {e}")))
}

impl LocalBackend {
    /// Returns the process-wide worker for this file, loading it on first use.
    pub fn load(
        path: &Path,
        sha256: Option<String>,
        label: &str,
    ) -> Result<Arc<LocalBackend>, ModelError> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<LocalBackend>>>> = OnceLock::new();
        let key = path.canonicalize().map_err(|e| {
            ModelError::config(format!(
                "model file {} cannot be opened: {e}",
                path.display()
            ))
        })?;
        let registry = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = registry
            .lock()
            .map_err(|_| ModelError::config("model registry lock poisoned"))?;
        if let Some(b) = map.get(&key) {
            return Ok(Arc::clone(b));
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ModelError>>();
        let worker_path = key.clone();
        std::thread::Builder::new()
            .name("llama-worker".into())
            .spawn(move || worker(worker_path, rx, ready_tx))
            .map_err(|e| {
                ModelError::config(format!("cannot start the llama.cpp worker thread: {e}"))
            })?;
        ready_rx.recv().map_err(|_| {
            ModelError::config(format!(
                "llama.cpp worker for {} stopped while loading",
                key.display()
            ))
        })??;
        let file_name = key
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let backend = Arc::new(LocalBackend {
            tx: Mutex::new(tx),
            info: BackendInfo {
                backend: label.to_string(),
                model: file_name,
                base_url: None,
                sha256,
            },
        });
        map.insert(key, Arc::clone(&backend));
        Ok(backend)
    }
}

#[async_trait]
impl ChatBackend for LocalBackend {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let (reply, rx) = oneshot::channel();
        {
            let tx = self
                .tx
                .lock()
                .map_err(|_| ModelError::config("llama.cpp worker lock poisoned"))?;
            tx.send(Job {
                req: req.clone(),
                reply,
            })
            .map_err(|_| {
                ModelError::new(ErrorKind::Fatal, "the llama.cpp worker thread has stopped")
            })?;
        }
        rx.await.map_err(|_| {
            ModelError::new(ErrorKind::Fatal, "the llama.cpp worker dropped the request")
        })?
    }

    fn info(&self) -> BackendInfo {
        self.info.clone()
    }
}

fn worker(path: PathBuf, rx: mpsc::Receiver<Job>, ready: mpsc::Sender<Result<(), ModelError>>) {
    let setup = || -> Result<(&'static LlamaBackend, LlamaModel), ModelError> {
        let backend = llama_backend()?;
        let model = LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())
            .map_err(|e| ModelError::config(format!("cannot load GGUF {}: {e}", path.display())))?;
        Ok((backend, model))
    };
    let (backend, model) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let n_ctx = model.n_ctx_train().clamp(512, MAX_CTX);
    let threads = llama_threads();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(PROMPT_CHUNK as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(ModelError::config(format!(
                "cannot create a llama.cpp context: {e}"
            ))));
            return;
        }
    };
    let template = model.chat_template(None).ok();
    let _ = ready.send(Ok(()));
    while let Ok(job) = rx.recv() {
        if job.reply.is_closed() {
            continue; // the caller timed out while queued
        }
        let result = generate(&model, &mut ctx, template.as_ref(), &job);
        let _ = job.reply.send(result);
    }
}

/// Threads for llama.cpp: `THERAPYGYM_LLAMA_THREADS`, else every core. ggml's workers spin at
/// barriers, so on a machine busy with other work fewer threads can be faster.
fn llama_threads() -> i32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let n = std::env::var("THERAPYGYM_LLAMA_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(cores);
    i32::try_from(n).unwrap_or(2)
}

/// Renders with the model's own chat template; falls back to ChatML, which SmolLM2 and Qwen use.
fn render(
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    messages: &[ChatMessage],
) -> Result<String, ModelError> {
    if let Some(t) = template {
        let msgs: Result<Vec<LlamaChatMessage>, _> = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.as_str().to_string(), m.content.clone()))
            .collect();
        if let Ok(msgs) = msgs
            && let Ok(s) = model.apply_chat_template(t, &msgs, true)
        {
            return Ok(s);
        }
    }
    let mut s = String::new();
    for m in messages {
        s.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role.as_str(),
            m.content
        ));
    }
    s.push_str("<|im_start|>assistant\n");
    Ok(s)
}

/// The sampling chain and, for a JSON schema, its grammar kept apart: each step samples from the
/// chain, checks that one token against the grammar, and constrains every candidate only when it
/// is rejected — llama.cpp's own `common_sampler` strategy. Applying a schema grammar to all
/// ~49k candidates at every step costs ~0.15 s per token on 2 cores; checking one costs nothing.
struct Samplers {
    grammar: Option<LlamaSampler>,
    chain: LlamaSampler,
    resampled: u32,
}

impl Samplers {
    fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> Result<LlamaToken, ModelError> {
        let token = self.chain.sample(ctx, idx);
        let Some(grammar) = self.grammar.as_mut() else {
            return Ok(token);
        };
        let token = if allows(grammar, token) {
            token
        } else {
            self.resampled += 1;
            let mut all = ctx.token_data_array_ith(idx);
            grammar.apply(&mut all);
            self.chain.apply(&mut all);
            match all.selected_token() {
                Some(t) if allows(grammar, t) => t,
                // Accepting a token the grammar rejects throws inside llama.cpp (an abort
                // across the FFI boundary): end this reply instead, as a parse failure.
                _ => {
                    return Err(ModelError::new(
                        ErrorKind::InvalidJson,
                        "the JSON-schema grammar allows no next token",
                    ));
                }
            }
        };
        grammar.accept(token);
        Ok(token)
    }
}

/// Whether the grammar, in its current state, allows `token` next.
fn allows(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
    grammar.apply(&mut one);
    one.data.first().is_some_and(|d| d.logit().is_finite())
}

fn sampler(model: &LlamaModel, req: &ChatRequest) -> Result<Samplers, ModelError> {
    // llama.cpp takes a u32 seed; derived seeds are 31-bit already.
    let seed = (req.sampling.seed.unwrap_or(0) & 0x7FFF_FFFF) as u32;
    let grammar = match &req.json_schema {
        Some(schema) => {
            let gbnf = crate::gbnf::schema_to_gbnf(schema).map_err(|e| {
                ModelError::config(format!(
                    "the JSON schema cannot be turned into a grammar: {e}"
                ))
            })?;
            Some(LlamaSampler::grammar(model, &gbnf, "root").map_err(|e| {
                ModelError::config(format!("llama.cpp rejected the schema grammar: {e}"))
            })?)
        }
        None => None,
    };
    let mut chain = Vec::new();
    if req.sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if req.sampling.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(req.sampling.top_p, 1));
        }
        chain.push(LlamaSampler::temp(req.sampling.temperature));
        chain.push(LlamaSampler::dist(seed));
    }
    Ok(Samplers {
        grammar,
        chain: LlamaSampler::chain_simple(chain),
        resampled: 0,
    })
}

fn generate(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    template: Option<&LlamaChatTemplate>,
    job: &Job,
) -> Result<ChatResponse, ModelError> {
    let started = Instant::now();
    let req = &job.req;
    ctx.clear_kv_cache();
    let prompt = render(model, template, &req.messages)?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), false, true);
    let n_ctx = ctx.n_ctx() as usize;
    if tokens.is_empty() {
        return Err(ModelError::new(
            ErrorKind::Fatal,
            "the prompt rendered to zero tokens",
        ));
    }
    if tokens.len() + 1 >= n_ctx {
        return Err(ModelError::new(
            ErrorKind::ContextOverflow,
            format!(
                "the prompt has {} tokens but the context holds {n_ctx}; shorten the session or use a model with a longer context",
                tokens.len()
            ),
        ));
    }
    let max_new = (req.sampling.max_tokens as usize).min(n_ctx - tokens.len() - 1);
    let mut batch = LlamaBatch::new(PROMPT_CHUNK, 1);
    let last_index = tokens.len() - 1;
    for (chunk_no, chunk) in tokens.chunks(PROMPT_CHUNK).enumerate() {
        batch.clear();
        for (j, tok) in chunk.iter().enumerate() {
            let pos = chunk_no * PROMPT_CHUNK + j;
            batch
                .add(*tok, pos as i32, &[0], pos == last_index)
                .map_err(|e| {
                    ModelError::new(ErrorKind::Fatal, format!("llama.cpp batch error: {e}"))
                })?;
        }
        ctx.decode(&mut batch).map_err(|e| {
            ModelError::new(ErrorKind::Fatal, format!("llama.cpp decode failed: {e}"))
        })?;
    }
    let t_init = Instant::now();
    let mut sampler = sampler(model, req)?;
    let init_ms = t_init.elapsed().as_secs_f64() * 1000.0;
    let mut sample_ms = 0.0f64;
    let mut out: Vec<u8> = Vec::new();
    let mut n_out = 0usize;
    let mut pos = tokens.len();
    let mut logits_index = batch.n_tokens() - 1;
    let finish = loop {
        if n_out >= max_new {
            break FinishReason::Length;
        }
        if job.reply.is_closed() {
            return Err(ModelError::new(
                ErrorKind::Transient,
                "cancelled: the caller stopped waiting",
            ));
        }
        // `sample` also accepts the token into stateful samplers (grammar): never accept twice.
        let t_s = Instant::now();
        let token = sampler.sample(ctx, logits_index)?;
        sample_ms += t_s.elapsed().as_secs_f64() * 1000.0;
        if vocab.is_eog(token) {
            break FinishReason::Stop;
        }
        out.extend_from_slice(&vocab.token_to_piece(token, false, None));
        n_out += 1;
        if !req.sampling.stop.is_empty() {
            let text = String::from_utf8_lossy(&out);
            if let Some(cut) = req
                .sampling
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                out.truncate(cut);
                break FinishReason::Stop;
            }
        }
        batch.clear();
        batch.add(token, pos as i32, &[0], true).map_err(|e| {
            ModelError::new(ErrorKind::Fatal, format!("llama.cpp batch error: {e}"))
        })?;
        pos += 1;
        logits_index = 0;
        ctx.decode(&mut batch).map_err(|e| {
            ModelError::new(ErrorKind::Fatal, format!("llama.cpp decode failed: {e}"))
        })?;
    };
    tracing::debug!(
        init_ms,
        sample_ms,
        resampled = sampler.resampled,
        tokens = n_out,
        ms = started.elapsed().as_millis() as u64,
        "local generation"
    );
    Ok(ChatResponse {
        text: String::from_utf8_lossy(&out).into_owned(),
        finish_reason: finish,
        prompt_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
        completion_tokens: u32::try_from(n_out).unwrap_or(u32::MAX),
        latency: started.elapsed(),
        attempts: 1,
        model: String::new(),
    })
}
