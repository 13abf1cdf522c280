//! Text normalisation and word shingles: the basis of exact and near-duplicate detection and of
//! the similarity figures of the diversity report.
//!
//! - **Normalised text**: lower case; every run of characters that are not letters or digits
//!   becomes one space; trimmed.
//! - **Shingles**: the set of word 3-grams of the normalised text (a text of fewer than three
//!   words is one shingle), each hashed to 64 bits.
//! - **Similarity**: the Jaccard index of two shingle sets.

/// Lower-case, non-alphanumerics to single spaces, trimmed.
pub fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.extend(c.to_lowercase());
        } else {
            space = true;
        }
    }
    out
}

/// FNV-1a, 64-bit: stable across runs and platforms.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    h
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Word n-gram size of the shingles.
pub const SHINGLE_WORDS: usize = 3;

/// Sorted, distinct 64-bit hashes of the word 3-grams of already normalised text.
pub fn shingles(normalised: &str) -> Vec<u64> {
    let words: Vec<u64> = normalised
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| fnv1a(w.as_bytes()))
        .collect();
    let mut out: Vec<u64> = if words.is_empty() {
        Vec::new()
    } else if words.len() < SHINGLE_WORDS {
        vec![words.iter().fold(0x5151_u64, |h, w| mix(h ^ w))]
    } else {
        words
            .windows(SHINGLE_WORDS)
            .map(|win| {
                win.iter()
                    .fold(0x5151_u64, |h, w| mix(h.rotate_left(7) ^ w))
            })
            .collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Jaccard index of two sorted, distinct hash sets (1.0 for two empty sets).
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    inter as f64 / union as f64
}

/// MinHash signature length; LSH uses `BANDS` bands of `ROWS` rows.
pub const MINHASH: usize = 64;
pub const BANDS: usize = 16;
pub const ROWS: usize = MINHASH / BANDS;

/// The MinHash signature of a shingle set (one salted mix per position).
pub fn minhash(shingles: &[u64]) -> [u64; MINHASH] {
    let mut sig = [u64::MAX; MINHASH];
    for &s in shingles {
        for (k, slot) in sig.iter_mut().enumerate() {
            let h = mix(s ^ SALTS[k]);
            if h < *slot {
                *slot = h;
            }
        }
    }
    sig
}

const SALTS: [u64; MINHASH] = {
    let mut salts = [0u64; MINHASH];
    let mut x: u64 = 0x1234_5678_9ABC_DEF0;
    let mut k = 0;
    while k < MINHASH {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        salts[k] = z ^ (z >> 31);
        k += 1;
    }
    salts
};

/// The LSH band keys of a signature.
pub fn band_keys(sig: &[u64; MINHASH]) -> [u64; BANDS] {
    let mut keys = [0u64; BANDS];
    for (b, key) in keys.iter_mut().enumerate() {
        let mut h = 0x9E37_u64 ^ (b as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        for r in 0..ROWS {
            h = mix(h.rotate_left(11) ^ sig[b * ROWS + r]);
        }
        *key = h;
    }
    keys
}

/// Whether a text is degenerate repetition (a small model looping on one phrase): at least 12
/// words and fewer than half of its word 3-grams distinct.
pub fn is_repetitive(text: &str) -> bool {
    let n = normalise(text);
    let words: Vec<&str> = n.split(' ').filter(|w| !w.is_empty()).collect();
    if words.len() < 12 {
        return false;
    }
    let total = words.len() - 2;
    let distinct: std::collections::HashSet<&[&str]> = words.windows(3).collect();
    distinct.len() * 2 < total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_shingles() {
        assert_eq!(
            normalise("  Hello,  World! It's 5pm."),
            "hello world it s 5pm"
        );
        assert_eq!(normalise("Ünïcode — ok"), "ünïcode ok");
        let a = shingles(&normalise("the cat sat on the mat"));
        assert_eq!(a.len(), 4);
        assert_eq!(jaccard(&a, &a), 1.0);
        let b = shingles(&normalise("the cat sat on the rug"));
        let j = jaccard(&a, &b);
        assert!((j - 3.0 / 5.0).abs() < 1e-9, "{j}");
        assert_eq!(shingles("hi there").len(), 1);
        assert!(shingles("").is_empty());
    }

    #[test]
    fn minhash_estimates_jaccard() {
        let base: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let a = shingles(&base.join(" "));
        let mut other = base.clone();
        for w in other.iter_mut().skip(150) {
            w.push('x');
        }
        let b = shingles(&other.join(" "));
        let truth = jaccard(&a, &b);
        let (sa, sb) = (minhash(&a), minhash(&b));
        let est = sa.iter().zip(&sb).filter(|(x, y)| x == y).count() as f64 / MINHASH as f64;
        assert!((truth - est).abs() < 0.2, "truth {truth} estimate {est}");
        assert_eq!(band_keys(&sa), band_keys(&minhash(&a)));
    }

    #[test]
    fn detects_looping_text() {
        assert!(is_repetitive(
            "I'm trying to be competent. I'm trying to be competent. I'm trying to be competent."
        ));
        assert!(!is_repetitive(
            "She moved to the city for a nursing job and has struggled to make friends since her divorce last year."
        ));
        assert!(!is_repetitive("short short short short"));
    }
}
