//! Seeded, stateless randomness: every random choice of a job (the validation split, each epoch's
//! order, each dropout mask) is a pure function of the seed and where it is used, so a resumed run
//! draws exactly what an uninterrupted one would, and the numbers never change with a crate version.

/// SplitMix64: a tiny generator with a 64-bit state (Steele, Lea & Flood, 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one use of the job's seed, named by a domain tag and a few indices.
    pub fn derive(seed: u64, domain: &str, indices: &[u64]) -> Self {
        let mut h = Self(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut s = h.next_u64();
        for b in domain.bytes() {
            s = mix(s ^ b as u64);
        }
        for &i in indices {
            s = mix(s ^ mix(i.wrapping_add(0x632b_e59b_d9b4_e019)));
        }
        h.0 = s;
        h
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)` with 24 random bits (exact in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias worth speaking of for job-sized `n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `0..n` shuffled (Fisher–Yates) by a generator derived from `seed`, `domain` and `indices`.
pub fn permutation(n: usize, seed: u64, domain: &str, indices: &[u64]) -> Vec<usize> {
    let mut rng = SplitMix64::derive(seed, domain, indices);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(100, 7, "epoch", &[0]);
        assert_eq!(a, permutation(100, 7, "epoch", &[0]));
        assert_ne!(a, permutation(100, 7, "epoch", &[1]));
        assert_ne!(a, permutation(100, 8, "epoch", &[0]));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn floats_are_in_range() {
        let mut r = SplitMix64::new(1);
        let xs: Vec<f32> = (0..10_000).map(|_| r.next_f32()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
