//! MinHash signatures over word 5-shingles, deterministic on every machine.
//!
//! Words are lower-cased runs of letters and digits; each word is hashed once, and a shingle's
//! hash combines its five word hashes (a multiply-add per word, then the SplitMix64 finaliser).
//! ASCII text is tokenised byte by byte; other characters go through `char`'s Unicode tables.
//!
//! The signature is one-permutation hashing (OPH) with optimal densification (Shrivastava, ICML
//! 2017) rather than 128 independent permutations: each shingle hash is used once, its top 7 bits
//! pick one of the 128 bins and its low 32 bits are the value kept when smaller than the bin's.
//! That is one hash per shingle instead of 128.
//!
//! Short texts leave bins empty. Each empty bin `i` borrows the value of the first non-empty bin
//! in a fixed pseudo-random probe order of its own ([`PROBES`]`[i]`, the same on every machine
//! and for every text). Two texts agree at bin `i` exactly when the smallest shingle of their
//! union in the bin they both end up reading is shared, so every component still matches with
//! probability equal to the Jaccard similarity, and equal components / 128 estimates it.

/// Number of components (OPH bins) in a signature.
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

/// Odd multipliers, one per position in a shingle, from a fixed SplitMix64 seed.
const POSITION_KEYS: [u64; SHINGLE_WORDS] = {
    let mut keys = [0u64; SHINGLE_WORDS];
    let mut i = 0;
    while i < SHINGLE_WORDS {
        keys[i] = splitmix64(0x5E1F_0000u64.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN))) | 1;
        i += 1;
    }
    keys
};

/// For each bin, a pseudo-random order of all 128 bins (a Fisher–Yates shuffle from a fixed
/// seed): an empty bin copies the first non-empty bin in its order.
const PROBES: [[u8; PERMUTATIONS]; PERMUTATIONS] = {
    let mut table = [[0u8; PERMUTATIONS]; PERMUTATIONS];
    let mut state = 0x0DA7_A5E7_u64;
    let mut bin = 0;
    while bin < PERMUTATIONS {
        let mut order = [0u8; PERMUTATIONS];
        let mut i = 0;
        while i < PERMUTATIONS {
            order[i] = i as u8;
            i += 1;
        }
        let mut i = PERMUTATIONS - 1;
        while i > 0 {
            state = state.wrapping_add(GOLDEN);
            let j = (splitmix64(state) % (i as u64 + 1)) as usize;
            let t = order[i];
            order[i] = order[j];
            order[j] = t;
            i -= 1;
        }
        table[bin] = order;
        bin += 1;
    }
    table
};

/// Hashes one lower-cased word's UTF-8 bytes, eight at a time (little-endian chunks).
#[derive(Clone, Copy)]
struct WordHasher {
    state: u64,
    chunk: u64,
    len: u32,
}

/// `0x20` in every byte: OR-ing it in lower-cases an ASCII letter and leaves a digit as it is.
const ASCII_LOWER: u64 = 0x2020_2020_2020_2020;

impl WordHasher {
    const fn new() -> Self {
        Self {
            state: 0xcbf2_9ce4_8422_2325,
            chunk: 0,
            len: 0,
        }
    }

    fn mix(&mut self, chunk: u64) {
        self.state = (self.state ^ chunk).wrapping_mul(GOLDEN).rotate_left(29);
    }

    #[inline]
    fn push(&mut self, b: u8) {
        self.chunk |= (b as u64) << (8 * (self.len % 8));
        self.len += 1;
        if self.len.is_multiple_of(8) {
            self.mix(self.chunk);
            self.chunk = 0;
        }
    }

    fn finish(self) -> u64 {
        splitmix64(self.state ^ self.chunk ^ ((self.len as u64) << 56))
    }

    /// The hash of the ASCII word of letters and digits `text[start..end]`, the same as pushing
    /// its lower-cased bytes one by one, but a whole chunk at a time. The last partial chunk is
    /// read as 8 bytes of `text` when there are that many (then masked), to avoid a copy.
    fn ascii_word(text: &[u8], start: usize, end: usize) -> u64 {
        let mut h = WordHasher::new();
        let mut chunks = text[start..end].chunks_exact(8);
        for c in &mut chunks {
            h.mix(u64::from_le_bytes(c.try_into().expect("8 bytes")) | ASCII_LOWER);
        }
        let rest = chunks.remainder().len();
        if rest > 0 {
            let at = end - rest;
            let last: [u8; 8] = match text.get(at..at + 8) {
                Some(eight) => eight.try_into().expect("8 bytes"),
                None => {
                    let mut last = [0u8; 8];
                    last[..rest].copy_from_slice(&text[at..end]);
                    last
                }
            };
            let keep = u64::MAX >> (8 * (8 - rest));
            h.chunk = (u64::from_le_bytes(last) | ASCII_LOWER) & keep;
        }
        h.len = (end - start) as u32;
        h.finish()
    }
}

/// The hash of a window of word hashes (`SHINGLE_WORDS` of them, or fewer for a short text).
#[inline]
fn shingle_hash(window: &[u64]) -> u64 {
    let sum = window
        .iter()
        .zip(POSITION_KEYS)
        .fold(window.len() as u64, |h, (&w, k)| {
            h.wrapping_add(w.wrapping_mul(k))
        });
    splitmix64(sum)
}

/// Feeds the shingle hashes of the concatenated `parts` to `emit`: parts never share a word, and
/// shingles run across them as if they were joined by a newline. Returns the number of words.
fn for_each_shingle(parts: &[&str], mut emit: impl FnMut(u64)) -> usize {
    let mut window = [0u64; SHINGLE_WORDS];
    let mut words = 0usize;
    let mut add_word = |w: u64| {
        if words < SHINGLE_WORDS {
            window[words] = w;
        } else {
            window.copy_within(1.., 0);
            window[SHINGLE_WORDS - 1] = w;
        }
        words += 1;
        if words >= SHINGLE_WORDS {
            emit(shingle_hash(&window));
        }
    };
    for part in parts {
        for_each_word(part, &mut add_word);
    }
    if (1..SHINGLE_WORDS).contains(&words) {
        emit(shingle_hash(&window[..words]));
    }
    words
}

/// Feeds the hash of every word (lower-cased run of letters and digits) of `text` to `emit`.
/// Words of ASCII letters and digits (nearly all, in most text) are hashed a chunk at a time;
/// a word with any other letter goes through [`unicode_word`].
fn for_each_word(text: &str, emit: &mut impl FnMut(u64)) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if i < bytes.len() && !bytes[i].is_ascii() {
                i = unicode_word(text, start, emit);
            } else {
                emit(WordHasher::ascii_word(bytes, start, i));
            }
        } else if b.is_ascii() {
            i += 1;
        } else {
            let c = text[i..].chars().next().expect("i is on a char boundary");
            if c.is_alphanumeric() {
                i = unicode_word(text, i, emit);
            } else {
                i += c.len_utf8();
            }
        }
    }
}

/// Hashes the word starting at byte `start` character by character, with Unicode lower-casing,
/// feeds it to `emit` and returns the byte offset where it ends.
fn unicode_word(text: &str, start: usize, emit: &mut impl FnMut(u64)) -> usize {
    let mut h = WordHasher::new();
    let mut end = text.len();
    for (at, c) in text[start..].char_indices() {
        if !c.is_alphanumeric() {
            end = start + at;
            break;
        }
        let mut buf = [0u8; 4];
        for lower in c.to_lowercase() {
            lower.encode_utf8(&mut buf).bytes().for_each(|b| h.push(b));
        }
    }
    emit(h.finish());
    end
}

/// The shingle hashes of a text: every run of [`SHINGLE_WORDS`] consecutive words (the whole
/// word sequence when shorter). Empty when the text has no letters or digits.
pub fn shingles(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for_each_shingle(&[text], |h| out.push(h));
    out
}

/// The MinHash signature of a text, `None` when it has no words.
pub fn signature(text: &str) -> Option<Signature> {
    signature_of_parts(&[text])
}

/// The signature of `parts` joined by newlines (a row's fields), without joining them.
pub fn signature_of_parts(parts: &[&str]) -> Option<Signature> {
    let mut bins = [u32::MAX; PERMUTATIONS];
    let mut filled = [false; PERMUTATIONS];
    let words = for_each_shingle(parts, |h| {
        let bin = (h >> 57) as usize;
        bins[bin] = bins[bin].min(h as u32);
        filled[bin] = true;
    });
    if words == 0 {
        return None;
    }
    densify(&mut bins, &filled);
    Some(Signature(bins))
}

/// Fills each empty bin from the first bin of its probe order that a shingle filled (see the
/// module doc). Reads only originally filled bins, so the order of filling does not matter.
fn densify(bins: &mut [u32; PERMUTATIONS], filled: &[bool; PERMUTATIONS]) {
    for (i, probes) in PROBES.iter().enumerate() {
        if !filled[i] {
            let from = probes
                .iter()
                .find(|&&j| filled[j as usize])
                .expect("at least one bin is filled");
            bins[i] = bins[*from as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
        assert_eq!(s.0[..4], [2543656617, 3580326308, 144083679, 3580326308]);
    }

    #[test]
    fn parts_are_joined_by_a_word_break() {
        let joined = signature("Why is the sky blue?\nRayleigh scattering, mostly.");
        let parts = signature_of_parts(&["Why is the sky blue?", "Rayleigh scattering, mostly."]);
        assert_eq!(joined, parts);
        assert_ne!(signature("ab"), signature_of_parts(&["a", "b"]));
    }

    #[test]
    fn ascii_words_hash_as_their_lower_cased_bytes() {
        let text = b"AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        for start in 0..4 {
            for end in start + 1..=text.len() {
                let mut one_by_one = WordHasher::new();
                text[start..end]
                    .iter()
                    .for_each(|b| one_by_one.push(b.to_ascii_lowercase()));
                let chunked = WordHasher::ascii_word(text, start, end);
                assert_eq!(chunked, one_by_one.finish(), "{start}..{end}");
            }
        }
        // A word that turns non-ASCII part way is hashed whole by the Unicode path.
        assert_eq!(signature("ABCDEFGHIJé x"), signature("abcdefghijÉ X"));
        assert_ne!(signature("ABCDEFGHIJé x"), signature("abcdefghij é x"));
    }

    #[test]
    fn unicode_words_are_lower_cased() {
        assert_eq!(
            signature("ÉCOLE Straße ΣΟΦΊΑ"),
            signature("école straße σοφία")
        );
        assert_ne!(signature("école"), signature("ecole"));
    }

    /// Word `i` of a synthetic vocabulary.
    fn word(i: usize) -> String {
        format!("w{i}x")
    }

    /// True Jaccard similarity of two texts' shingle sets.
    fn jaccard(a: &str, b: &str) -> f64 {
        let a: HashSet<u64> = shingles(a).into_iter().collect();
        let b: HashSet<u64> = shingles(b).into_iter().collect();
        a.intersection(&b).count() as f64 / a.union(&b).count() as f64
    }

    #[test]
    fn estimates_track_the_true_jaccard_similarity() {
        // Pairs of texts sharing a prefix of words and differing in the rest, at sizes from a few
        // shingles (mostly densified bins) to many more shingles than bins.
        let mut errors = Vec::new();
        for (len, shared) in [
            (12, 10),
            (30, 25),
            (60, 30),
            (100, 90),
            (150, 75),
            (300, 270),
            (600, 150),
            (1000, 900),
        ] {
            let a: Vec<String> = (0..len).map(word).collect();
            let mut b = a.clone();
            for (k, w) in b.iter_mut().enumerate().skip(shared) {
                *w = word(100_000 + len * 10 + k);
            }
            let (a, b) = (a.join(" "), b.join(" "));
            let truth = jaccard(&a, &b);
            let estimate = signature(&a).unwrap().similarity(&signature(&b).unwrap());
            errors.push((len, shared, truth, estimate));
            assert!(
                (estimate - truth).abs() <= 0.15,
                "{len} words, {shared} shared: true {truth:.3}, estimated {estimate:.3}"
            );
        }
        let mean_error: f64 =
            errors.iter().map(|e| (e.2 - e.3).abs()).sum::<f64>() / errors.len() as f64;
        assert!(mean_error < 0.06, "{errors:?}");
    }

    #[test]
    fn disjoint_texts_share_almost_nothing() {
        let a: Vec<String> = (0..200).map(word).collect();
        let b: Vec<String> = (200..400).map(word).collect();
        let s = signature(&a.join(" "))
            .unwrap()
            .similarity(&signature(&b.join(" ")).unwrap());
        assert!(s < 0.05, "{s}");
        let short = signature("one two three four five six")
            .unwrap()
            .similarity(&signature("seven eight nine ten eleven twelve").unwrap());
        assert_eq!(short, 0.0);
    }
}
