//! The fields of a stored contribution that paying for an inference needs (datanet,
//! contributor, status, version), read at their fixed places in the record's ABI encoding
//! without decoding its two strings: a `recordInferences` batch reads thousands of
//! contributions, and decoding (and allocating) their metadata URIs and reasons was most of
//! that cost.
//!
//! A `ContributionInfo` is stored as one ABI value: word 0 is the offset of the tuple (32), then
//! its eleven head words in declaration order — id, datanetId, contributor, rowsRoot, rowCount,
//! byteSize, score, offset of metadataUri, status, offset of reason, version — then the strings.
//! A value whose head is not a clean encoding of those fields, or whose strings are not laid out
//! canonically up to its exact end, is decoded in full instead, so it is refused exactly as
//! [`super::contribution`] refuses it.

use super::{contribution, k};
use crate::{error::ExecResult, kv::StateRead, ExecError};
use alloy_primitives::Address;

/// What recording and settling an inference read of a contribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContributionHead {
    pub datanet: u64,
    pub contributor: Address,
    pub status: u8,
    pub version: u64,
}

/// Contribution `id`'s head (refused, as [`contribution`] refuses, when it does not exist or
/// its record is corrupt).
pub fn contribution_head(state: &dyn StateRead, id: u64) -> ExecResult<ContributionHead> {
    let value = state
        .get_ref(&k(b"d/k", id, &[]))?
        .ok_or_else(|| ExecError::NotFound(format!("contribution {id}")))?;
    if let Some(head) = head_of(&value, id) {
        return Ok(head);
    }
    let c = contribution(state, id)?;
    Ok(ContributionHead {
        datanet: c.datanetId,
        contributor: c.contributor,
        status: c.status,
        version: c.version,
    })
}

/// Words before the strings: the tuple's offset and its eleven head words.
const HEAD_WORDS: usize = 12;

/// The head of contribution `id`'s stored value, when it is a clean encoding of it.
fn head_of(v: &[u8], id: u64) -> Option<ContributionHead> {
    if v.len() < HEAD_WORDS * 32 {
        return None;
    }
    let word = |i: usize| &v[32 * i..32 * (i + 1)];
    let uint = |i: usize, bytes: usize| word_uint(word(i), bytes);
    let contributor = word(3);
    if uint(0, 8)? != 32 || uint(1, 8)? != id || contributor[..12].iter().any(|&b| b != 0) {
        return None;
    }
    // The strings are not decoded, but their layout must be the canonical one, so that the full
    // decode would accept the record too: a head read alone would take a record whose strings run
    // past its end (which `contribution` refuses) as a sound one.
    let uri_at = uint(8, 8)?;
    if uri_at != 11 * 32 {
        return None;
    }
    let reason_at = string_end(v, 32 + 11 * 32)?.checked_sub(32)?;
    if uint(10, 8)? != u64::try_from(reason_at).ok()? || string_end(v, 32 + reason_at)? != v.len() {
        return None;
    }
    Some(ContributionHead {
        datanet: uint(2, 8)?,
        contributor: Address::from_slice(&contributor[12..]),
        status: u8::try_from(uint(9, 1)?).ok()?,
        version: uint(11, 8)?,
    })
}

/// The unsigned integer of `bytes` (at most 8) bytes in the 32-byte word `w`, when the rest of
/// the word is zero.
fn word_uint(w: &[u8], bytes: usize) -> Option<u64> {
    let (high, low) = w.split_at(24);
    (high.iter().chain(&low[..8 - bytes]).all(|&b| b == 0))
        .then(|| u64::from_be_bytes(low.try_into().unwrap_or_default()))
}

/// Where the canonical encoding of a string whose length word sits at `at` ends (its bytes padded
/// to whole words, the padding zero); `None` when it runs past `v` or is not canonical.
fn string_end(v: &[u8], at: usize) -> Option<usize> {
    let len = usize::try_from(word_uint(v.get(at..at.checked_add(32)?)?, 8)?).ok()?;
    let start = at + 32;
    let end = start.checked_add(len.checked_next_multiple_of(32)?)?;
    let padding = v.get(start.checked_add(len)?..end)?;
    padding.iter().all(|&b| b == 0).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::B256;
    use alloy_sol_types::SolValue;
    use openledger_types::abi::IDatanet::ContributionInfo;
    use proptest::prelude::*;

    fn info(
        id: u64,
        datanet: u64,
        who: [u8; 20],
        status: u8,
        version: u64,
        uri: String,
        reason: String,
    ) -> ContributionInfo {
        ContributionInfo {
            id,
            datanetId: datanet,
            contributor: Address::from(who),
            rowsRoot: B256::repeat_byte(7),
            rowCount: 3,
            byteSize: 99,
            score: 5,
            metadataUri: uri,
            status,
            reason,
            version,
        }
    }

    proptest! {
        /// The head read at fixed places equals the full decode's fields, whatever the strings.
        #[test]
        fn the_head_matches_the_full_decode(
            id in any::<u64>(), datanet in any::<u64>(), who in any::<[u8; 20]>(),
            status in 0u8..3, version in any::<u64>(), uri in ".{0,80}", reason in ".{0,80}",
        ) {
            let c = info(id, datanet, who, status, version, uri, reason);
            let head = head_of(&c.abi_encode(), id).expect("a clean record");
            prop_assert_eq!(head, ContributionHead {
                datanet, contributor: c.contributor, status, version,
            });
        }
    }

    proptest! {
        /// Whatever a stored value holds, the head reader accepts it only when the full decode
        /// does, with the same fields.
        #[test]
        fn the_head_reader_never_accepts_what_the_full_decode_refuses(
            uri in ".{0,70}", reason in ".{0,70}", cut in any::<usize>(),
            at in any::<usize>(), byte in any::<u8>(),
        ) {
            let good = info(4, 2, [9; 20], 1, 3, uri, reason).abi_encode();
            let mut v = good[..cut % (good.len() + 1)].to_vec();
            if !v.is_empty() {
                let i = at % v.len();
                v[i] = byte;
            }
            if let Some(h) = head_of(&v, 4) {
                let c = ContributionInfo::abi_decode(&v);
                prop_assert!(c.is_ok(), "the head reader took a value the decode refuses");
                let c = c.unwrap();
                prop_assert_eq!(h, ContributionHead {
                    datanet: c.datanetId, contributor: c.contributor, status: c.status,
                    version: c.version,
                });
            }
        }
    }

    #[test]
    fn an_unclean_head_is_left_to_the_full_decode() {
        let c = info(4, 2, [9; 20], 1, 3, "ipfs://x".into(), String::new());
        let good = c.abi_encode();
        assert!(head_of(&good, 4).is_some());
        assert!(head_of(&good, 5).is_none(), "another contribution's id");
        assert!(
            head_of(&good[..HEAD_WORDS * 32 - 1], 4).is_none(),
            "truncated head"
        );
        for (word, byte) in [(0, 31), (2, 0), (3, 0), (9, 30), (11, 0)] {
            let mut bad = good.clone();
            bad[32 * word + byte] ^= 0x40;
            assert!(
                head_of(&bad, 4).is_none(),
                "word {word} byte {byte} changed"
            );
        }
    }

    /// A record whose head is clean but whose strings do not decode is refused as the full
    /// decode refuses it (a head read alone would have paid on it).
    #[test]
    fn a_corrupt_tail_behind_a_clean_head_is_refused_as_the_full_decode_refuses_it() {
        use crate::kv::MemKv;
        let c = info(4, 2, [9; 20], 1, 3, "ipfs://x".into(), "r".into());
        let good = c.abi_encode();
        let mut cases = vec![
            ("truncated strings", good[..HEAD_WORDS * 32].to_vec()),
            ("cut reason", good[..good.len() - 32].to_vec()),
        ];
        let mut huge = good.clone();
        huge[32 * HEAD_WORDS..32 * HEAD_WORDS + 32].copy_from_slice(&[0xff; 32]);
        cases.push(("uri length past the end", huge));
        let mut far = good.clone();
        far[32 * 8 + 24..32 * 9].copy_from_slice(&(1u64 << 40).to_be_bytes());
        cases.push(("uri offset past the end", far));
        for (what, v) in cases {
            let mut kv = MemKv::default();
            kv.insert(k(b"d/k", 4, &[]), v);
            assert!(
                contribution(&kv, 4).is_err(),
                "{what}: the full decode refuses it"
            );
            assert!(
                contribution_head(&kv, 4).is_err(),
                "{what}: accepted by the head reader"
            );
        }
        let mut kv = MemKv::default();
        kv.insert(k(b"d/k", 4, &[]), good);
        assert_eq!(contribution_head(&kv, 4).unwrap().version, 3);
    }
}
