//! Trainable f32 Llama decoder (SmolLM2) with every weight a candle [`Var`].
//!
//! Own forward rather than `candle_transformers::models::qwen2`: in candle 0.11.1 the fused
//! kernels that model uses (`rotary_emb::rope`, `ops::softmax_last_dim`, `ops::rms_norm`) are
//! applied with `apply_op*_no_bwd`, i.e. they silently cut the autograd graph. Through qwen2 the
//! Q/K projections and the norm weights would never receive a gradient. [`Mode::Train`]
//! therefore uses this crate's fused kernels with hand-written backward passes
//! ([`crate::ops`]); [`Mode::Infer`] uses candle's kernels on detached weights (sampling, π_old
//! log-probs), which also cross-checks the two implementations in the tests.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{GrpoError, Result};
use crate::gguf::{GgufFile, unpermute_qk};
use crate::ops;

/// Hyper-parameters of a Llama-architecture decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width (d_model).
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_kv_heads: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Maximum context length.
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the token embedding (SmolLM2: yes, no `output.weight`).
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// Reads the `llama.*` hyper-parameters of a GGUF file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(GrpoError::Unsupported(format!(
                "architecture `{arch}` (only `llama` is implemented)"
            )));
        }
        if gguf.get_usize("llama.expert_count").is_ok_and(|n| n > 1) {
            return Err(GrpoError::Unsupported("mixture-of-experts llama".into()));
        }
        let hidden_size = gguf.get_usize("llama.embedding_length")?;
        let num_heads = gguf.get_usize("llama.attention.head_count")?;
        let vocab_size = match gguf.get_usize("llama.vocab_size") {
            Ok(v) => v,
            Err(_) => gguf.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let cfg = Self {
            vocab_size,
            hidden_size,
            intermediate_size: gguf.get_usize("llama.feed_forward_length")?,
            num_layers: gguf.get_usize("llama.block_count")?,
            num_heads,
            num_kv_heads: gguf.get_usize("llama.attention.head_count_kv")?,
            rope_theta: gguf.get_f64("llama.rope.freq_base").unwrap_or(10_000.0),
            rms_norm_eps: gguf.get_f64("llama.attention.layer_norm_rms_epsilon")?,
            max_position_embeddings: gguf.get_usize("llama.context_length")?,
            tie_word_embeddings: gguf.tensor_dtype("output.weight").is_none(),
        };
        let head_dim = cfg.head_dim();
        if let Ok(rope_dim) = gguf.get_usize("llama.rope.dimension_count")
            && rope_dim != head_dim
        {
            return Err(GrpoError::Unsupported(format!(
                "partial rotary embedding ({rope_dim} of {head_dim} dims)"
            )));
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    fn check(&self) -> Result<()> {
        let ok = self.num_heads > 0
            && self.num_kv_heads > 0
            && self.hidden_size.is_multiple_of(self.num_heads)
            && self.num_heads.is_multiple_of(self.num_kv_heads)
            && self.head_dim().is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(GrpoError::Unsupported(format!(
                "head layout: hidden {} / heads {} / kv heads {}",
                self.hidden_size, self.num_heads, self.num_kv_heads
            )))
        }
    }

    /// HF-style parameter names and shapes, in a fixed order (embedding, blocks, final norm,
    /// untied head). Checkpoints and the optimizer state use this order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, f, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let kv = self.num_kv_heads * hd;
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, d],
        )];
        for i in 0..self.num_layers {
            let p = format!("model.layers.{i}");
            out.extend([
                (format!("{p}.input_layernorm.weight"), vec![d]),
                (format!("{p}.self_attn.q_proj.weight"), vec![d, d]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, d]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, d]),
                (format!("{p}.self_attn.o_proj.weight"), vec![d, d]),
                (format!("{p}.post_attention_layernorm.weight"), vec![d]),
                (format!("{p}.mlp.gate_proj.weight"), vec![f, d]),
                (format!("{p}.mlp.up_proj.weight"), vec![f, d]),
                (format!("{p}.mlp.down_proj.weight"), vec![d, f]),
            ]);
        }
        out.push(("model.norm.weight".to_string(), vec![d]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, d]));
        }
        out
    }
}

/// Maps an HF parameter name to its GGUF tensor name and whether it carries the Q/K rotary
/// permutation (`Some(n_heads)`).
pub fn gguf_name(cfg: &LlamaConfig, hf: &str) -> Option<(String, Option<usize>)> {
    match hf {
        "model.embed_tokens.weight" => return Some(("token_embd.weight".into(), None)),
        "model.norm.weight" => return Some(("output_norm.weight".into(), None)),
        "lm_head.weight" => return Some(("output.weight".into(), None)),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (idx, leaf) = rest.split_once('.')?;
    let (g, perm) = match leaf {
        "input_layernorm.weight" => ("attn_norm", None),
        "self_attn.q_proj.weight" => ("attn_q", Some(cfg.num_heads)),
        "self_attn.k_proj.weight" => ("attn_k", Some(cfg.num_kv_heads)),
        "self_attn.v_proj.weight" => ("attn_v", None),
        "self_attn.o_proj.weight" => ("attn_output", None),
        "post_attention_layernorm.weight" => ("ffn_norm", None),
        "mlp.gate_proj.weight" => ("ffn_gate", None),
        "mlp.up_proj.weight" => ("ffn_up", None),
        "mlp.down_proj.weight" => ("ffn_down", None),
        _ => return None,
    };
    Some((format!("blk.{idx}.{g}.weight"), perm))
}

/// Which kernels the forward pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Differentiable kernels on the tracked weights (needed for `backward`).
    Train,
    /// No autograd graph at all (sampling and scoring).
    Infer,
}

#[derive(Clone, Debug)]
struct Block {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// Per-layer key/value cache for incremental decoding.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Block {
    fn detached(&self) -> Self {
        Self {
            input_norm: self.input_norm.detach(),
            q: self.q.detach(),
            k: self.k.detach(),
            v: self.v.detach(),
            o: self.o.detach(),
            post_norm: self.post_norm.detach(),
            gate: self.gate.detach(),
            up: self.up.detach(),
            down: self.down.detach(),
        }
    }
}

/// Handles on the weights. Two sets exist: the Var tensors themselves (tracked by autograd) and
/// detached views of the same storage, so inference builds no backprop graph (a KV cache would
/// otherwise keep every earlier step's graph alive) yet still sees optimizer updates.
#[derive(Clone, Debug)]
struct Weights {
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Option<Tensor>,
}

impl Weights {
    fn detached(&self) -> Self {
        Self {
            embed: self.embed.detach(),
            blocks: self.blocks.iter().map(Block::detached).collect(),
            norm: self.norm.detach(),
            lm_head: self.lm_head.as_ref().map(Tensor::detach),
        }
    }

    fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// Trainable Llama decoder. Cloning is cheap and shares the weights.
#[derive(Clone, Debug)]
pub struct Llama {
    cfg: LlamaConfig,
    params: Vec<(String, Var)>,
    tracked: Weights,
    frozen: Weights,
    /// RoPE tables `(max_pos, head_dim / 2)`.
    cos: Tensor,
    sin: Tensor,
}

impl Llama {
    /// Loads a GGUF llama model as f32 trainable weights: every tensor is dequantized and Q/K
    /// are un-permuted back to the HF (half-split RoPE) layout.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(gguf)?;
        let mut weights = HashMap::new();
        for (hf, shape) in cfg.parameter_shapes() {
            let (name, perm) = gguf_name(&cfg, &hf)
                .ok_or_else(|| GrpoError::Unsupported(format!("no GGUF name for `{hf}`")))?;
            let mut t = gguf.tensor_f32(&name)?;
            if let Some(n_head) = perm {
                t = unpermute_qk(&t, n_head)?;
            }
            if t.dims() != shape.as_slice() {
                return Err(GrpoError::Unsupported(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            weights.insert(hf, t);
        }
        Self::from_tensors(cfg, weights)
    }

    /// Builds the model from HF-named f32 tensors (see [`LlamaConfig::parameter_shapes`]).
    /// Each tensor is copied into a fresh [`Var`].
    pub fn from_tensors(cfg: LlamaConfig, mut weights: HashMap<String, Tensor>) -> Result<Self> {
        cfg.check()?;
        let mut params = Vec::new();
        for (name, shape) in cfg.parameter_shapes() {
            let t = weights
                .remove(&name)
                .ok_or_else(|| GrpoError::invalid(format!("missing weight `{name}`")))?;
            if t.dims() != shape.as_slice() {
                return Err(GrpoError::invalid(format!(
                    "weight `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            let var = Var::from_tensor(&t.to_dtype(DType::F32)?.contiguous()?)?;
            params.push((name, var));
        }
        Self::assemble(cfg, params)
    }

    fn weights_for(&self, mode: Mode) -> &Weights {
        match mode {
            Mode::Train => &self.tracked,
            Mode::Infer => &self.frozen,
        }
    }

    fn assemble(cfg: LlamaConfig, params: Vec<(String, Var)>) -> Result<Self> {
        let get = |n: &str| -> Result<Tensor> {
            params
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_tensor().clone())
                .ok_or_else(|| GrpoError::invalid(format!("missing weight `{n}`")))
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = |s: &str| get(&format!("model.layers.{i}.{s}.weight"));
            blocks.push(Block {
                input_norm: p("input_layernorm")?,
                q: p("self_attn.q_proj")?,
                k: p("self_attn.k_proj")?,
                v: p("self_attn.v_proj")?,
                o: p("self_attn.o_proj")?,
                post_norm: p("post_attention_layernorm")?,
                gate: p("mlp.gate_proj")?,
                up: p("mlp.up_proj")?,
                down: p("mlp.down_proj")?,
            });
        }
        let (cos, sin) = rope_tables(&cfg)?;
        let tracked = Weights {
            embed: get("model.embed_tokens.weight")?,
            norm: get("model.norm.weight")?,
            lm_head: if cfg.tie_word_embeddings {
                None
            } else {
                Some(get("lm_head.weight")?)
            },
            blocks,
        };
        Ok(Self {
            frozen: tracked.detached(),
            tracked,
            cos,
            sin,
            params,
            cfg,
        })
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Trainable parameters in [`LlamaConfig::parameter_shapes`] order. With tied embeddings the
    /// LM head is the embedding Var, so it appears (and is updated) once.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Total number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// A [`VarMap`] sharing this model's Vars, for candle-nn optimizers and `VarMap::save`.
    pub fn var_map(&self) -> Result<VarMap> {
        let map = VarMap::new();
        {
            let mut data = map
                .data()
                .lock()
                .map_err(|_| GrpoError::invalid("VarMap mutex poisoned"))?;
            for (name, var) in &self.params {
                data.insert(name.clone(), var.clone());
            }
        }
        Ok(map)
    }

    /// Copies of the current weights, by HF name.
    pub fn weights(&self) -> Result<Vec<(String, Tensor)>> {
        self.params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect()
    }

    /// Runs the decoder on `ids` (`(batch, seq)` u32), returning final-norm hidden states
    /// `(batch, seq, hidden)`. Positions start at the cache length (0 without a cache).
    ///
    /// Attention is causal within the input and sees everything already in `cache`; with a
    /// cache, the new keys/values are appended to it. Batches must be right-padded: padding
    /// only ever follows the real tokens, so the causal mask keeps it invisible to them.
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let pos = cache.as_ref().map_or(0, |c| c.len);
        if pos + t > self.cfg.max_position_embeddings {
            return Err(GrpoError::invalid(format!(
                "{} positions exceed the context length {}",
                pos + t,
                self.cfg.max_position_embeddings
            )));
        }
        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() != self.cfg.num_layers
        {
            c.layers = vec![None; self.cfg.num_layers];
        }
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        let rope = Rope { mode, cos, sin };
        let w = self.weights_for(mode);

        let mut x = w.embed.index_select(&ids.flatten_all()?, 0)?;
        for (i, blk) in w.blocks.iter().enumerate() {
            let h = rms_norm(&x, &blk.input_norm, self.cfg.rms_norm_eps, mode)?;
            let layer_cache = cache.as_deref_mut().and_then(|c| c.layers.get_mut(i));
            let a = self.attention(blk, &h, (b, t, pos), &rope, layer_cache)?;
            x = (x + a)?;
            let h = rms_norm(&x, &blk.post_norm, self.cfg.rms_norm_eps, mode)?;
            let m = linear(
                &(linear(&h, &blk.gate)?.silu()? * linear(&h, &blk.up)?)?,
                &blk.down,
            )?;
            x = (x + m)?;
        }
        if let Some(c) = cache {
            c.len += t;
        }
        let x = rms_norm(&x, &w.norm, self.cfg.rms_norm_eps, mode)?;
        Ok(x.reshape((b, t, self.cfg.hidden_size))?)
    }

    /// LM-head logits for hidden states of any leading shape `(…, hidden)` → `(…, vocab)`.
    /// `mode` must match the one that produced `hidden` ([`Mode::Train`] to backpropagate).
    pub fn logits(&self, hidden: &Tensor, mode: Mode) -> Result<Tensor> {
        let head = self.weights_for(mode).head();
        let dims = hidden.dims().to_vec();
        let (lead, last) = dims.split_at(dims.len().saturating_sub(1));
        let n: usize = lead.iter().product();
        let flat = hidden.reshape((n, last.iter().product::<usize>()))?;
        let logits = flat.matmul(&head.t()?)?;
        let mut out_shape = lead.to_vec();
        out_shape.push(self.cfg.vocab_size);
        Ok(logits.reshape(out_shape)?)
    }

    /// Logits for every position: `(batch, seq, vocab)`.
    pub fn forward(&self, ids: &Tensor, cache: Option<&mut KvCache>, mode: Mode) -> Result<Tensor> {
        let h = self.forward_hidden(ids, cache, mode)?;
        self.logits(&h, mode)
    }

    /// Self-attention of one block; `(b, t, pos)` = batch, new positions, cached positions.
    fn attention(
        &self,
        blk: &Block,
        h: &Tensor,
        (b, t, pos): (usize, usize, usize),
        rope: &Rope,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (nh, nkv, hd) = (
            self.cfg.num_heads,
            self.cfg.num_kv_heads,
            self.cfg.head_dim(),
        );
        let rep = nh / nkv;
        let heads = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = rope.apply(&heads(linear(h, &blk.q)?, nh)?)?;
        let mut k = rope.apply(&heads(linear(h, &blk.k)?, nkv)?)?;
        let mut v = heads(linear(h, &blk.v)?, nkv)?;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let tk = k.dim(2)?;
        // Grouped-query attention without repeating K/V: the `rep` query heads that share a
        // KV head are consecutive, so folding them into the sequence axis gives one matmul per
        // KV head.
        let q = q.reshape((b, nkv, rep * t, hd))?;
        let scores = q.matmul(&k.t()?)?.reshape((b, nkv, rep, t, tk))?;
        // Scale, causal mask (offset by the cache) and softmax in one fused, differentiable op.
        let att = ops::causal_softmax(&scores, 1.0 / (hd as f64).sqrt(), pos)?;
        let y = att.reshape((b, nkv, rep * t, tk))?.matmul(&v)?;
        let y = y
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b * t, nh * hd))?;
        linear(&y, &blk.o)
    }
}

/// `x (n, in) · wᵀ` for an `(out, in)` weight.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&w.t()?)?)
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Infer => Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?),
        Mode::Train => ops::rms_norm(x, w, eps),
    }
}

/// RoPE tables in f64 then cast, so long positions keep full precision.
fn rope_tables(cfg: &LlamaConfig) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim() / 2;
    let n = cfg.max_position_embeddings;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for i in 0..half {
            let inv = 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim() as f64);
            let a = p as f64 * inv;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (n, half), &Device::Cpu)?,
    ))
}

/// Half-split ("neox") rotary embedding for a window of positions; tables `(t, head_dim / 2)`.
struct Rope {
    mode: Mode,
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// `x` is `(batch, heads, seq, head_dim)`, contiguous.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self.mode {
            Mode::Infer => Ok(candle_nn::rotary_emb::rope(
                x,
                &self.cos.contiguous()?,
                &self.sin.contiguous()?,
            )?),
            Mode::Train => ops::rope(x, &self.cos, &self.sin),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{D, Device};

    /// A tiny random model with the SmolLM2 head layout (3 query heads per KV head).
    pub(crate) fn tiny(seed: u64, tied: bool) -> Llama {
        let cfg = LlamaConfig {
            vocab_size: 40,
            hidden_size: 24,
            intermediate_size: 32,
            num_layers: 2,
            num_heads: 6,
            num_kv_heads: 2,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 64,
            tie_word_embeddings: tied,
        };
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
        };
        let weights = cfg
            .parameter_shapes()
            .into_iter()
            .map(|(n, s)| {
                let count: usize = s.iter().product();
                let data: Vec<f32> = if n.ends_with("norm.weight") {
                    (0..count).map(|_| 1.0 + 0.2 * next()).collect()
                } else {
                    (0..count).map(|_| 0.5 * next()).collect()
                };
                (n, Tensor::from_vec(data, s, &Device::Cpu).unwrap())
            })
            .collect();
        Llama::from_tensors(cfg, weights).unwrap()
    }

    fn ids(v: &[u32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn train_and_infer_kernels_agree() {
        let m = tiny(1, true);
        let x = ids(&[3, 7, 1, 9, 22, 5, 5, 0]);
        let a = m.forward(&x, None, Mode::Train).unwrap();
        let b = m.forward(&x, None, Mode::Infer).unwrap();
        assert_eq!(a.dims(), &[1, 8, 40]);
        assert!(max_abs_diff(&a, &b) < 1e-4);
    }

    #[test]
    fn kv_cache_matches_full_forward() {
        let m = tiny(2, false);
        let seq = [3u32, 7, 1, 9, 22, 5, 5, 0, 11];
        let full = m.forward(&ids(&seq), None, Mode::Infer).unwrap();
        let mut cache = KvCache::new();
        let first = m
            .forward(&ids(&seq[..5]), Some(&mut cache), Mode::Infer)
            .unwrap();
        let mut parts = vec![first];
        for &tok in &seq[5..] {
            parts.push(
                m.forward(&ids(&[tok]), Some(&mut cache), Mode::Infer)
                    .unwrap(),
            );
        }
        assert_eq!(cache.len(), seq.len());
        let inc = Tensor::cat(&parts, 1).unwrap();
        assert!(max_abs_diff(&full, &inc) < 1e-4);
        // A multi-token chunk on top of a cache needs the rectangular mask.
        let mut cache = KvCache::new();
        m.forward(&ids(&seq[..4]), Some(&mut cache), Mode::Train)
            .unwrap();
        let rest = m
            .forward(&ids(&seq[4..]), Some(&mut cache), Mode::Train)
            .unwrap();
        assert!(max_abs_diff(&full.narrow(1, 4, 5).unwrap(), &rest) < 1e-4);
    }

    #[test]
    fn right_padding_does_not_change_real_positions() {
        let m = tiny(3, true);
        let a = m.forward(&ids(&[4, 8, 15]), None, Mode::Train).unwrap();
        let batch = Tensor::new(
            &[[4u32, 8, 15, 0, 0], [16, 23, 42 % 40, 1, 2]],
            &Device::Cpu,
        )
        .unwrap();
        let b = m.forward(&batch, None, Mode::Train).unwrap();
        let b0 = b.narrow(0, 0, 1).unwrap().narrow(1, 0, 3).unwrap();
        assert!(max_abs_diff(&a, &b0) < 1e-5);
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        // Guards against fused no-backward kernels sneaking into the training path.
        let m = tiny(4, true);
        let logits = m
            .forward(&ids(&[1, 2, 3, 4, 5, 6]), None, Mode::Train)
            .unwrap();
        let loss = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in m.params() {
            let g = grads.get(var.as_tensor());
            assert!(g.is_some(), "no gradient for {name}");
            let norm = g
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "zero gradient for {name}");
        }
    }

    #[test]
    fn gradient_matches_finite_difference() {
        let m = tiny(5, true);
        let x = ids(&[1, 2, 3, 4, 5]);
        let f = |m: &Llama| -> f32 {
            let l = m.forward(&x, None, Mode::Train).unwrap();
            candle_nn::ops::log_softmax(&l, D::Minus1)
                .unwrap()
                .narrow(2, 7, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let logits = m.forward(&x, None, Mode::Train).unwrap();
        let loss = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .unwrap()
            .narrow(2, 7, 1)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        // Probe one element of a Q projection and of a norm weight: the parts qwen2 would miss.
        for name in [
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.1.input_layernorm.weight",
        ] {
            let var = &m.params().iter().find(|(n, _)| n == name).unwrap().1;
            let g = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[3];
            let orig = var.as_tensor().copy().unwrap();
            let mut data = orig.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let h = 1e-2f32;
            data[3] += h;
            var.set(&Tensor::from_vec(data.clone(), orig.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let up = f(&m);
            data[3] -= 2.0 * h;
            var.set(&Tensor::from_vec(data, orig.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let down = f(&m);
            var.set(&orig).unwrap();
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - g).abs() < 2e-2 * (1.0 + g.abs()),
                "{name}: fd {fd} vs grad {g}"
            );
        }
    }

    #[test]
    fn fused_candle_kernels_cut_autograd() {
        // Why Mode::Train composes its own ops (and why candle's qwen2 model is not trained
        // here): in candle 0.11.1 these fused kernels silently return gradient-less tensors.
        let x = Var::new(&[[[[1f32, 2.0, 3.0, 4.0]]]], &Device::Cpu).unwrap();
        let w = Var::new(&[1f32, 1.0, 1.0, 1.0], &Device::Cpu).unwrap();
        let cs = Tensor::new(&[[0.5f32, 0.5]], &Device::Cpu).unwrap();
        let outs = [
            candle_nn::ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap(),
            candle_nn::ops::softmax_last_dim(x.as_tensor()).unwrap(),
            candle_nn::rotary_emb::rope(x.as_tensor(), &cs, &cs).unwrap(),
        ];
        for y in outs {
            let g = y.sum_all().unwrap().backward().unwrap();
            assert!(g.get(x.as_tensor()).is_none());
            assert!(g.get(w.as_tensor()).is_none());
        }
    }

    #[test]
    fn gguf_names_cover_all_parameters() {
        let cfg = tiny(0, false).config().clone();
        for (n, _) in cfg.parameter_shapes() {
            assert!(gguf_name(&cfg, &n).is_some(), "{n}");
        }
        assert_eq!(
            gguf_name(&cfg, "model.layers.1.self_attn.k_proj.weight"),
            Some(("blk.1.attn_k.weight".into(), Some(2)))
        );
    }

    #[test]
    fn var_map_shares_storage() {
        let m = tiny(6, true);
        let map = m.var_map().unwrap();
        assert_eq!(map.all_vars().len(), m.params().len());
        let var = &m.params()[0].1;
        var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
        let logits = m.forward(&ids(&[1, 2]), None, Mode::Infer).unwrap();
        // Tied head and embedding are both zero now.
        assert_eq!(
            logits
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }
}
