//! How a receipt is stored: a compact, fixed-layout, versioned binary record instead of its
//! ABI encoding (about a quarter of the size; receipts are most of the state). The
//! `getReceipt` view re-encodes the decoded receipt, so clients still read the ABI encoding.
//!
//! Version 1, all integers big-endian:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | version (1) |
//! | 1 | 8 | id |
//! | 9 | 8 | adapterId |
//! | 17 | 20 | caller |
//! | 37 | 20 | operator |
//! | 57 | 4 | promptTokens |
//! | 61 | 4 | completionTokens |
//! | 65 | 32 | fee |
//! | 97 | 32 | attributionRoot |
//! | 129 | 1 | settled (0 or 1) |
//! | 130 | 8 | recordedAt |
//! | 138 | 4 | k, the number of top attributions |
//! | 142 | 12·k | k × (contributionId: 8, weightPpm: 4) |
//!
//! The value is exactly 142 + 12·k bytes; anything else is refused when read.

use alloy_primitives::{Address, B256, U256};
use openledger_types::abi::IInference::{Attribution, Receipt};

/// The layout version written by [`encode`].
pub const VERSION: u8 = 1;
/// Bytes before the attribution list.
const HEAD: usize = 142;
/// Bytes per attribution.
const PAIR: usize = 12;

/// The stored form of `r`.
pub fn encode(r: &Receipt) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEAD + PAIR * r.top.len());
    v.push(VERSION);
    v.extend_from_slice(&r.id.to_be_bytes());
    v.extend_from_slice(&r.adapterId.to_be_bytes());
    v.extend_from_slice(r.caller.as_slice());
    v.extend_from_slice(r.operator.as_slice());
    v.extend_from_slice(&r.promptTokens.to_be_bytes());
    v.extend_from_slice(&r.completionTokens.to_be_bytes());
    v.extend_from_slice(&r.fee.to_be_bytes::<32>());
    v.extend_from_slice(r.attributionRoot.as_slice());
    v.push(r.settled as u8);
    v.extend_from_slice(&r.recordedAt.to_be_bytes());
    // A receipt lists at most the governed `max_attributions` (a u32), so the count fits.
    v.extend_from_slice(&(r.top.len() as u32).to_be_bytes());
    for a in &r.top {
        v.extend_from_slice(&a.contributionId.to_be_bytes());
        v.extend_from_slice(&a.weightPpm.to_be_bytes());
    }
    v
}

/// Reads fixed-width fields off the front of a slice whose length was checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split_at gave N bytes")
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    fn address(&mut self) -> Address {
        Address::from(self.take::<20>())
    }
    fn word(&mut self) -> [u8; 32] {
        self.take()
    }
}

/// Decodes a stored receipt; the error says what is wrong with the value.
pub fn decode(v: &[u8]) -> Result<Receipt, String> {
    match v.first() {
        None => return Err("the value is empty".into()),
        Some(&VERSION) => {}
        Some(other) => {
            return Err(format!(
                "unknown receipt layout version {other} (this build reads version {VERSION})"
            ))
        }
    }
    if v.len() < HEAD {
        return Err(format!(
            "{} bytes, shorter than the {HEAD}-byte head of a version {VERSION} receipt",
            v.len()
        ));
    }
    let k = u32::from_be_bytes(v[HEAD - 4..HEAD].try_into().expect("4 bytes")) as usize;
    let want = k
        .checked_mul(PAIR)
        .and_then(|n| n.checked_add(HEAD))
        .ok_or_else(|| format!("an attribution count of {k} overflows"))?;
    if v.len() != want {
        return Err(format!(
            "{} bytes, but a receipt with {k} attributions takes {want}",
            v.len()
        ));
    }
    let mut r = Reader(&v[1..]);
    let id = r.u64();
    let adapter_id = r.u64();
    let caller = r.address();
    let operator = r.address();
    let prompt = r.u32();
    let completion = r.u32();
    let fee = U256::from_be_bytes(r.word());
    let root = B256::from(r.word());
    let settled = match r.take::<1>()[0] {
        0 => false,
        1 => true,
        b => return Err(format!("settled flag {b}, neither 0 nor 1")),
    };
    let recorded_at = r.u64();
    let _k = r.u32();
    let top = (0..k)
        .map(|_| Attribution {
            contributionId: r.u64(),
            weightPpm: r.u32(),
        })
        .collect();
    Ok(Receipt {
        id,
        adapterId: adapter_id,
        caller,
        operator,
        promptTokens: prompt,
        completionTokens: completion,
        fee,
        attributionRoot: root,
        top,
        settled,
        recordedAt: recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn receipt() -> impl Strategy<Value = Receipt> {
        (
            (
                any::<u64>(),
                any::<u64>(),
                any::<[u8; 20]>(),
                any::<[u8; 20]>(),
            ),
            (
                any::<u32>(),
                any::<u32>(),
                any::<[u8; 32]>(),
                any::<[u8; 32]>(),
            ),
            (any::<bool>(), any::<u64>()),
            proptest::collection::vec((any::<u64>(), any::<u32>()), 0..=32),
        )
            .prop_map(
                |((id, adapter, caller, operator), (p, c, fee, root), (settled, at), top)| {
                    Receipt {
                        id,
                        adapterId: adapter,
                        caller: caller.into(),
                        operator: operator.into(),
                        promptTokens: p,
                        completionTokens: c,
                        fee: U256::from_be_bytes(fee),
                        attributionRoot: root.into(),
                        top: top
                            .into_iter()
                            .map(|(id, ppm)| Attribution {
                                contributionId: id,
                                weightPpm: ppm,
                            })
                            .collect(),
                        settled,
                        recordedAt: at,
                    }
                },
            )
    }

    fn same(a: &Receipt, b: &Receipt) -> bool {
        use alloy_sol_types::SolValue;
        a.abi_encode() == b.abi_encode()
    }

    proptest! {
        #[test]
        fn round_trips(r in receipt()) {
            let v = encode(&r);
            prop_assert_eq!(v.len(), HEAD + PAIR * r.top.len());
            prop_assert!(same(&decode(&v).unwrap(), &r));
        }

        #[test]
        fn every_truncation_is_refused(r in receipt()) {
            let v = encode(&r);
            for n in 0..v.len() {
                prop_assert!(decode(&v[..n]).is_err(), "{} of {} bytes accepted", n, v.len());
            }
        }

        #[test]
        fn garbage_is_refused_or_decodes_without_panicking(v in proptest::collection::vec(any::<u8>(), 0..600)) {
            // Whatever decodes must be exactly what re-encodes to the same bytes.
            if let Ok(r) = decode(&v) {
                prop_assert_eq!(encode(&r), v);
            }
        }
    }

    #[test]
    fn trailing_bytes_unknown_versions_and_bad_flags_are_refused() {
        let r = Receipt {
            id: 7,
            top: vec![Attribution {
                contributionId: 3,
                weightPpm: 10,
            }],
            ..Default::default()
        };
        let v = encode(&r);
        let mut longer = v.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("takes 154"));
        let mut old = v.clone();
        old[0] = 0; // an ABI-encoded receipt starts with a zero byte
        assert!(decode(&old).unwrap_err().contains("version 0"));
        let mut flag = v.clone();
        flag[129] = 2;
        assert!(decode(&flag).unwrap_err().contains("settled flag 2"));
        let mut count = v;
        count[138..142].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&count).is_err());
    }
}
