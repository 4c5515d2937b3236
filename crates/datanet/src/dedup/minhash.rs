//! MinHash signatures over word 5-shingles, deterministic on every machine: words are lower-cased
//! runs of letters and digits hashed with FNV-1a, shingles combine five word hashes through the
//! SplitMix64 finaliser, and the 128 permutations are multiply-shift hashes whose constants come
//! from a fixed SplitMix64 seed. Equal components / 128 estimates the Jaccard similarity.

/// Number of hash permutations in a signature.
pub const PERMUTATIONS: usize = 128;
/// Words per shingle.
pub const SHINGLE_WORDS: usize = 5;

/// A MinHash signature.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature(pub [u32; PERMUTATIONS]);

impl Signature {
    /// Estimated Jaccard similarity of the two shingle sets (0.0..=1.0).
    pub fn similarity(&self, other: &Signature) -> f64 {
        let equal = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        equal as f64 / PERMUTATIONS as f64
    }
}

const fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Per-permutation (multiplier, xor) constants.
const PARAMS: [(u64, u64); PERMUTATIONS] = {
    let mut p = [(0u64, 0u64); PERMUTATIONS];
    let mut state = 0x0DA7_A5E7_u64;
    let mut i = 0;
    while i < PERMUTATIONS {
        state = state.wrapping_add(GOLDEN);
        let a = splitmix64(state) | 1;
        state = state.wrapping_add(GOLDEN);
        let b = splitmix64(state);
        p[i] = (a, b);
        i += 1;
    }
    p
};

fn word_hash(word: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = [0u8; 4];
    for c in word.chars().flat_map(char::to_lowercase) {
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The shingle hashes of a text: every run of [`SHINGLE_WORDS`] consecutive words (the whole
/// word sequence when shorter). Empty when the text has no letters or digits.
pub fn shingles(text: &str) -> Vec<u64> {
    let words: Vec<u64> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(word_hash)
        .collect();
    if words.is_empty() {
        return Vec::new();
    }
    let width = SHINGLE_WORDS.min(words.len());
    words
        .windows(width)
        .map(|w| {
            w.iter()
                .fold(GOLDEN, |h, &x| splitmix64(h.rotate_left(17) ^ x))
        })
        .collect()
}

/// The MinHash signature of a text, `None` when it has no words.
pub fn signature(text: &str) -> Option<Signature> {
    let shingles = shingles(text);
    if shingles.is_empty() {
        return None;
    }
    let mut sig = [u32::MAX; PERMUTATIONS];
    for x in shingles {
        for (s, &(a, b)) in sig.iter_mut().zip(PARAMS.iter()) {
            let v = ((x ^ b).wrapping_mul(a) >> 32) as u32;
            *s = (*s).min(v);
        }
    }
    Some(Signature(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_fixed_across_machines() {
        // A pinned value: a change here changes every stored signature.
        let s = signature("the quick brown fox jumps over the lazy dog").unwrap();
        let again = signature("The quick, brown fox jumps over the LAZY dog!").unwrap();
        assert_eq!(s, again, "case and punctuation do not matter");
        assert_eq!(shingles("a b c d e f").len(), 2);
        assert_eq!(shingles("a b").len(), 1);
        assert!(signature("... !!! ").is_none());
        assert_eq!(s.similarity(&s), 1.0);
        assert_eq!(s.0[..4], [761987252, 693966268, 108031640, 1250225500]);
    }
}
