//! Deterministic randomness: SplitMix64 seeded from SHA-256 of a key, so every random choice
//! of a run (examples shown, list values drawn, job order, holdout) is a function of the run
//! seed and a stable key, independent of concurrency and of resume.

/// SplitMix64 (stable across versions, unlike `StdRng`).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    #[cfg(test)]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for `(run seed, key...)`.
    pub fn for_key(run_seed: u64, parts: &[&str]) -> Self {
        Self(key_seed(run_seed, parts))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// FNV-1a over the run seed and the key parts, then one SplitMix64 round: cheap, stable and
/// well mixed.
fn key_seed(run_seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    };
    for b in run_seed.to_le_bytes() {
        eat(b);
    }
    for p in parts {
        for b in p.bytes() {
            eat(b);
        }
        eat(0xFF);
    }
    Rng(h).next_u64()
}

/// The sampling seed of one model call: 31 bits, as every backend accepts (llama.cpp: u32).
pub fn call_seed(run_seed: u64, parts: &[&str]) -> u64 {
    key_seed(run_seed, parts) & 0x7FFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_generators_are_stable_and_distinct() {
        let a = Rng::for_key(7, &["n0", "sample"]).next_u64();
        assert_eq!(a, Rng::for_key(7, &["n0", "sample"]).next_u64());
        assert_ne!(a, Rng::for_key(7, &["n0", "samples"]).next_u64());
        assert_ne!(a, Rng::for_key(8, &["n0", "sample"]).next_u64());
        assert_ne!(
            Rng::for_key(7, &["ab", "c"]).next_u64(),
            Rng::for_key(7, &["a", "bc"]).next_u64()
        );
        assert!(call_seed(1, &["x"]) <= 0x7FFF_FFFF);
        let mut v: Vec<u32> = (0..50).collect();
        Rng::new(3).shuffle(&mut v);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
