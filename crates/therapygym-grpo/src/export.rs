//! Export of the trained policy back to GGUF for llama.cpp (fast inference: `eval --therapist
//! gguf:PATH`, llama-server, Ollama).
//!
//! Q/K get llama.cpp's rotary permutation back, matrices are quantized to the chosen type, norm
//! gains stay f32 (llama.cpp requires it), and every metadata key of the source GGUF (tokenizer,
//! chat template, hyper-parameters) is copied so the file is a drop-in replacement.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::atomic_write;
use crate::error::{GrpoError, Result};
use crate::gguf::{GgufFile, permute_qk};
use crate::model::{Llama, gguf_name};

/// Storage type of exported matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportType {
    /// 8-bit blocks: near-lossless, about half of F16's size (default).
    Q8_0,
    /// Half precision.
    F16,
    /// Full precision (large; for debugging).
    F32,
    /// Each tensor in the type it had in the source GGUF (Q4_1 / Q8_0 for SmolLM2): same size
    /// as the original, but re-quantizing small updates loses most of them.
    Source,
}

impl ExportType {
    /// llama.cpp `general.file_type` (LLAMA_FTYPE) for a uniform export.
    fn file_type(self) -> Option<u32> {
        match self {
            Self::F32 => Some(0),
            Self::F16 => Some(1),
            Self::Q8_0 => Some(7),
            Self::Source => None,
        }
    }
}

/// Writes `model` as a GGUF file at `out`, with the metadata of `source`.
pub fn export_gguf(
    model: &Llama,
    source: &GgufFile,
    out: impl AsRef<Path>,
    ty: ExportType,
) -> Result<()> {
    let cfg = model.config();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (hf, var) in model.params() {
        let (name, perm) = gguf_name(cfg, hf)
            .ok_or_else(|| GrpoError::Unsupported(format!("no GGUF name for `{hf}`")))?;
        let mut w = var.as_tensor().detach();
        if let Some(n_head) = perm {
            w = permute_qk(&w, n_head)?;
        }
        let dtype = if w.rank() < 2 {
            GgmlDType::F32
        } else {
            match ty {
                ExportType::Q8_0 => GgmlDType::Q8_0,
                ExportType::F16 => GgmlDType::F16,
                ExportType::F32 => GgmlDType::F32,
                ExportType::Source => source.tensor_dtype(&name).unwrap_or(GgmlDType::Q8_0),
            }
        };
        let q = QTensor::quantize(&w.contiguous()?, dtype)?;
        tensors.push((name, q));
    }
    // llama.cpp's conventional order: embedding, blocks in order, final norm, head.
    tensors.sort_by_key(|(n, _)| tensor_rank(n));

    let mut meta: Vec<(String, Value)> = source
        .metadata()
        .iter()
        // candle's writer always aligns to 32 bytes; a copied different alignment would lie.
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(ft) = ty.file_type() {
        meta.retain(|(k, _)| k != "general.file_type");
        meta.push(("general.file_type".into(), Value::U32(ft)));
    }
    meta.sort_by(|a, b| a.0.cmp(&b.0));

    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let out = out.as_ref();
    atomic_write(out, |tmp| {
        let file = File::create(tmp).map_err(|e| GrpoError::io("create", tmp, e))?;
        let mut w = BufWriter::new(file);
        gguf_file::write(&mut w, &meta_refs, &tensor_refs)?;
        std::io::Write::flush(&mut w).map_err(|e| GrpoError::io("write", tmp, e))
    })
}

/// Sort key giving token_embd, blk.0.*, blk.1.*, …, output_norm, output.
fn tensor_rank(name: &str) -> (u8, usize, String) {
    if name.starts_with("token_embd") {
        return (0, 0, name.to_string());
    }
    if let Some(rest) = name.strip_prefix("blk.") {
        let idx = rest
            .split('.')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(usize::MAX);
        return (1, idx, name.to_string());
    }
    (2, 0, name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_order() {
        let mut names = vec![
            "output_norm.weight",
            "blk.10.attn_q.weight",
            "blk.2.ffn_up.weight",
            "token_embd.weight",
            "blk.2.attn_k.weight",
        ];
        names.sort_by_key(|n| tensor_rank(n));
        assert_eq!(
            names,
            vec![
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_q.weight",
                "output_norm.weight"
            ]
        );
    }
}
