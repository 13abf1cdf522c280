//! Tokenizer built from GGUF metadata, and ChatML rendering with an assistant-token mask.
//!
//! candle reads no tokenizer from GGUF, so the BPE model is rebuilt from the
//! `tokenizer.ggml.*` keys with the `tokenizers` crate (`docs/design/trainable-policy.md`).

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{GrpoError, Result};
use crate::gguf::GgufFile;

use candle_core::quantized::gguf_file::Value;

/// ChatML turn opener.
pub const IM_START: &str = "<|im_start|>";
/// ChatML turn terminator; generation stops on it.
pub const IM_END: &str = "<|im_end|>";

/// GGUF token types that are special (3 = control, 4 = user-defined), i.e. matched verbatim in
/// text and never split by BPE.
const SPECIAL_TOKEN_TYPES: [i32; 2] = [3, 4];

/// Speaker of a chat message. The assistant is the therapist: only its tokens are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System prompt.
    System,
    /// The patient (simulated user).
    User,
    /// The therapist (the policy being trained).
    Assistant,
}

impl Role {
    /// Name used in the ChatML header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Role,
    /// Text of the message (without template tokens).
    pub content: String,
    /// Exact token ids of `content` when they are known (a sampled therapist turn). Training on
    /// the sampled ids avoids re-tokenisation drift; `None` tokenises `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
}

impl ChatMessage {
    /// A message whose content is tokenised from text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            token_ids: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user (patient) message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant (therapist) message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// Token ids of a rendered chat with a per-token training mask.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedChat {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `true` on assistant (therapist) content tokens and their closing `<|im_end|>`: the
    /// tokens the policy produced. Headers, the newline after `<|im_end|>` and other roles are
    /// `false`.
    pub assistant_mask: Vec<bool>,
}

impl EncodedChat {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of masked-in (assistant) tokens.
    pub fn assistant_tokens(&self) -> usize {
        self.assistant_mask.iter().filter(|&&m| m).count()
    }

    fn push(&mut self, ids: &[u32], mask: bool) {
        self.ids.extend_from_slice(ids);
        self.assistant_mask
            .extend(std::iter::repeat_n(mask, ids.len()));
    }
}

/// Byte-level BPE tokenizer of a GGUF model plus its ChatML special tokens.
#[derive(Clone)]
pub struct ChatTokenizer {
    inner: Tokenizer,
    im_start: u32,
    im_end: u32,
    eos: u32,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("im_start", &self.im_start)
            .field("im_end", &self.im_end)
            .field("eos", &self.eos)
            .finish()
    }
}

impl ChatTokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.{model,pre,tokens,merges,token_type}`.
    ///
    /// Supported: `model = "gpt2"` with `pre = "smollm"` (individual digits, then byte-level
    /// with the GPT-2 regex, no prefix space), which is what SmolLM2 uses.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(GrpoError::Unsupported(format!(
                "tokenizer model `{model}` (only byte-level BPE `gpt2` is implemented)"
            )));
        }
        let pre = gguf.get_str("tokenizer.ggml.pre")?;
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "smollm" => Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            other => {
                return Err(GrpoError::Unsupported(format!(
                    "tokenizer pre-tokenizer `{other}` (only `smollm` is implemented)"
                )));
            }
        };

        let tokens = strings(gguf, "tokenizer.ggml.tokens")?;
        let merges = strings(gguf, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                // A merge is "left right"; tokens never contain a raw space (byte-level maps it
                // to 'Ġ'), so splitting on the first space is unambiguous.
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| GrpoError::Tokenizer(format!("malformed merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let types: Vec<i32> = gguf
            .get_array("tokenizer.ggml.token_type")?
            .iter()
            .map(|v| match v {
                Value::I32(t) => Ok(*t),
                Value::U32(t) => i32::try_from(*t).map_err(|_| bad_type(v)),
                other => Err(bad_type(other)),
            })
            .collect::<Result<_>>()?;
        if types.len() != tokens.len() {
            return Err(GrpoError::Tokenizer(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }

        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| SPECIAL_TOKEN_TYPES.contains(t))
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(specials).map_err(tok_err)?;

        let id = |s: &str| {
            inner
                .token_to_id(s)
                .ok_or_else(|| GrpoError::Tokenizer(format!("vocabulary has no `{s}` token")))
        };
        let im_start = id(IM_START)?;
        let im_end = id(IM_END)?;
        let eos = gguf
            .get_usize("tokenizer.ggml.eos_token_id")
            .ok()
            .and_then(|e| u32::try_from(e).ok())
            .unwrap_or(im_end);
        Ok(Self {
            inner,
            im_start,
            im_end,
            eos,
        })
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Vocabulary size including special tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of `<|im_end|>`.
    pub fn im_end_id(&self) -> u32 {
        self.im_end
    }

    /// Id of `<|im_start|>`.
    pub fn im_start_id(&self) -> u32 {
        self.im_start
    }

    /// End-of-sequence id from the GGUF (`<|im_end|>` for SmolLM2-Instruct).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Tokenises text; special-token strings in it (e.g. `<|im_end|>`) become their ids, as with
    /// llama.cpp's `parse_special`. No BOS is added (`add_bos_token = false`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Decodes ids to text; `skip_special` drops special tokens such as `<|im_end|>`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// Renders messages with the ChatML template: `<|im_start|>role\ncontent<|im_end|>\n` per
    /// message, plus `<|im_start|>assistant\n` when `add_generation_prompt`.
    ///
    /// Unlike the Jinja template in SmolLM2's GGUF, no default system prompt is injected when the
    /// first message is not a system message: llama.cpp's built-in ChatML renderer (what the
    /// inference backend uses) does not inject it either.
    pub fn render_chat(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut s = String::new();
        for m in messages {
            s.push_str(IM_START);
            s.push_str(m.role.as_str());
            s.push('\n');
            s.push_str(&m.content);
            s.push_str(IM_END);
            s.push('\n');
        }
        if add_generation_prompt {
            s.push_str(IM_START);
            s.push_str(Role::Assistant.as_str());
            s.push('\n');
        }
        s
    }

    /// Encodes a chat into token ids with the assistant mask (see [`EncodedChat`]).
    ///
    /// Each template piece is tokenised separately; every piece boundary is a special token or a
    /// newline, where the byte-level pre-tokenizer splits anyway, so the ids equal those of
    /// tokenising [`Self::render_chat`]'s output (checked in the model tests). Messages with
    /// `token_ids` use them verbatim.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<EncodedChat> {
        let newline = self.encode("\n")?;
        let mut out = EncodedChat::default();
        for m in messages {
            self.push_header(&mut out, m.role)?;
            let trained = m.role == Role::Assistant;
            match &m.token_ids {
                Some(ids) => out.push(ids, trained),
                None => out.push(&self.encode(&m.content)?, trained),
            }
            out.push(&[self.im_end], trained);
            out.push(&newline, false);
        }
        if add_generation_prompt {
            self.push_header(&mut out, Role::Assistant)?;
        }
        Ok(out)
    }

    fn push_header(&self, out: &mut EncodedChat, role: Role) -> Result<()> {
        out.push(&[self.im_start], false);
        out.push(&self.encode(&format!("{}\n", role.as_str()))?, false);
        Ok(())
    }
}

fn strings(gguf: &GgufFile, key: &str) -> Result<Vec<String>> {
    gguf.get_array(key)?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(GrpoError::Metadata {
                key: key.to_string(),
                reason: format!("expected strings, found {other:?}"),
            }),
        })
        .collect()
}

fn bad_type(v: &Value) -> GrpoError {
    GrpoError::Metadata {
        key: "tokenizer.ggml.token_type".into(),
        reason: format!("expected an integer, found {v:?}"),
    }
}

fn tok_err(e: tokenizers::Error) -> GrpoError {
    GrpoError::Tokenizer(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml() {
        let msgs = [
            ChatMessage::system("Be kind."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello."),
        ];
        assert_eq!(
            ChatTokenizer::render_chat(&msgs, true),
            "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTokenizer::render_chat(&msgs[..1], false),
            "<|im_start|>system\nBe kind.<|im_end|>\n"
        );
    }

    #[test]
    fn roles_serialise_lowercase() {
        let m = ChatMessage::assistant("x");
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, r#"{"role":"assistant","content":"x"}"#);
    }
}
