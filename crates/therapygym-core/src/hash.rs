use serde::Serialize;
use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256:<hex>` of a value's canonical JSON. Maps are `BTreeMap`s or structs in declaration
/// order, so equal values hash equally across runs.
pub fn content_hash<T: Serialize + ?Sized>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    format!("sha256:{}", sha256_hex(&bytes))
}

/// `sha256:<hex>` of raw text (templates, data files as written).
pub fn text_hash(text: &str) -> String {
    format!("sha256:{}", sha256_hex(text.as_bytes()))
}
