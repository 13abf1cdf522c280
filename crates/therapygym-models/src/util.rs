use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SplitMix64: a tiny deterministic generator for fakes and jitter (stable across versions,
/// unlike `StdRng`).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi] (inclusive); `lo` when the range is empty.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % span) as i64
    }
}

/// First 8 bytes of a SHA-256 as a u64: turns any string into a seed.
pub fn seed_from_str(s: &str) -> u64 {
    let d = Sha256::digest(s.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// Masks credentials in a URL for display: the whole user-info part (a user name can be a
/// token too) and the query string (`https://****@host/v1?****`).
pub fn redact_url(url: &str) -> String {
    let masked = redact_text(url);
    match masked.split_once('?') {
        Some((head, q)) if !q.is_empty() => format!("{head}?****"),
        _ => masked,
    }
}

/// Masks the user-info part of every URL inside free text (error messages, specs): the one
/// filter every message that may quote a URL goes through.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                c == '/'
                    || c == '?'
                    || c == '#'
                    || c.is_whitespace()
                    || "\"'`<>()[]{},;".contains(c)
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("****");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Whether a URL's host is this machine (`localhost`, `127.0.0.0/8`, `::1`); false for
/// anything unparseable.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://bob:secret@h.example/v1"),
            "https://****@h.example/v1"
        );
        assert_eq!(
            redact_url("https://tok3n@h.example/v1?api-key=s3cret"),
            "https://****@h.example/v1?****"
        );
        assert_eq!(
            redact_text("HTTP 500 from http://u:pw@a:1/v1: see https://x.y/z?q=1 (u:pw@a)"),
            "HTTP 500 from http://****@a:1/v1: see https://x.y/z?q=1 (u:pw@a)"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8000/v1"),
            "http://127.0.0.1:8000/v1"
        );
    }

    #[test]
    fn loopback_hosts() {
        for u in [
            "http://127.0.0.1:8000/v1",
            "http://localhost/v1",
            "http://[::1]:1/v1",
            "http://127.9.9.9",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "http://10.0.0.1/v1",
            "http://127.0.0.1.evil.com/v1",
            "http://localhost@evil.com/",
            "nonsense",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let x = a.range_i64(0, 6);
        assert!((0..=6).contains(&x));
    }
}

/// Serialises an `f32` as the decimal it was written as (`0.7`), not as the nearest `f64`
/// (`0.699999988079071`, what `serde_json::Value` would otherwise hold): manifests and hashes
/// show settings as the user gave them.
pub fn f32_as_written<S: serde::Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
    let v = x.to_string().parse::<f64>().unwrap_or(f64::from(*x));
    s.serialize_f64(v)
}

#[cfg(test)]
mod float_tests {
    #[derive(serde::Serialize)]
    struct T {
        #[serde(serialize_with = "super::f32_as_written")]
        x: f32,
    }

    #[test]
    fn floats_are_written_as_given() {
        let v = serde_json::to_value(T { x: 0.7 }).unwrap_or_default();
        assert_eq!(v.to_string(), r#"{"x":0.7}"#);
        let s = serde_json::to_string(&T { x: 0.95 }).unwrap_or_default();
        assert_eq!(s, r#"{"x":0.95}"#);
    }
}
