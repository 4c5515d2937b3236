//! The fields of a stored contribution that paying for an inference needs (datanet,
//! contributor, status, version), kept beside the full record in a compact entry of their own:
//! `d/a`++cid → datanet (8 bytes BE) ++ contributor (20) ++ status (1) ++ version (8 BE). A
//! `recordInferences` batch reads thousands of contributions; one 37-byte value is one cache
//! line, where the record's ABI encoding (eleven head words, its metadata URI and its reason)
//! spans ten or more, and needs its strings' layout checked before its head can be trusted.
//!
//! [`put_contribution`] is the only writer of either entry, so the two always agree and a
//! contribution exists exactly when its head does. (A state from before the compact entry has
//! another [`crate::STATE_FORMAT`], which a node refuses to open.)

use super::k;
use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::{Overlay, StateRead},
    ExecError,
};
use alloy_primitives::Address;
use openledger_types::abi::IDatanet::ContributionInfo;

/// What recording and settling an inference read of a contribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContributionHead {
    pub datanet: u64,
    pub contributor: Address,
    pub status: u8,
    pub version: u64,
}

/// Bytes of a stored head: datanet, contributor, status, version.
const HEAD_LEN: usize = 8 + 20 + 1 + 8;

impl ContributionHead {
    fn of(c: &ContributionInfo) -> Self {
        Self {
            datanet: c.datanetId,
            contributor: c.contributor,
            status: c.status,
            version: c.version,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEAD_LEN);
        v.extend_from_slice(&self.datanet.to_be_bytes());
        v.extend_from_slice(self.contributor.as_slice());
        v.push(self.status);
        v.extend_from_slice(&self.version.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<Self> {
        let v: &[u8; HEAD_LEN] = v.try_into().ok()?;
        let (datanet, rest) = v.split_at(8);
        let (contributor, rest) = rest.split_at(20);
        let (status, version) = rest.split_at(1);
        Some(Self {
            datanet: u64::from_be_bytes(datanet.try_into().ok()?),
            contributor: Address::from_slice(contributor),
            status: status[0],
            version: u64::from_be_bytes(version.try_into().ok()?),
        })
    }
}

/// Stores contribution `c`: its full record and its compact head.
pub fn put_contribution(state: &mut Overlay, c: &ContributionInfo) {
    state.put(k(b"d/a", c.id, &[]), ContributionHead::of(c).encode());
    codec::put_sol(state, k(b"d/k", c.id, &[]), c);
}

/// Contribution `id`'s head, read from its compact entry alone (refused when there is none, and
/// as corrupt state when it is malformed; the full record is not read, so a corrupt record beside
/// a sound head goes unnoticed here, as both are written together by [`put_contribution`]).
pub fn contribution_head(state: &dyn StateRead, id: u64) -> ExecResult<ContributionHead> {
    let v = state
        .get_ref(&k(b"d/a", id, &[]))?
        .ok_or_else(|| ExecError::NotFound(format!("contribution {id}")))?;
    ContributionHead::decode(&v).ok_or_else(|| {
        StorageError(format!(
            "contribution {id}'s stored head is {} bytes, not {HEAD_LEN}: state corrupt",
            v.len()
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kv::MemKv, modules::datanet::contribution};
    use alloy_primitives::B256;
    use proptest::prelude::*;

    fn info(id: u64, datanet: u64, who: [u8; 20], status: u8, version: u64) -> ContributionInfo {
        ContributionInfo {
            id,
            datanetId: datanet,
            contributor: Address::from(who),
            rowsRoot: B256::repeat_byte(7),
            rowCount: 3,
            byteSize: 99,
            score: 5,
            metadataUri: "ipfs://x".into(),
            status,
            reason: "r".into(),
            version,
        }
    }

    fn stored(c: &ContributionInfo) -> MemKv {
        let base = MemKv::default();
        let mut o = Overlay::new(&base);
        put_contribution(&mut o, c);
        let writes = o.into_writes();
        let mut kv = MemKv::default();
        kv.apply(writes);
        kv
    }

    proptest! {
        /// The compact head equals the full record's fields, whatever they hold.
        #[test]
        fn the_head_matches_the_full_record(
            id in any::<u64>(), datanet in any::<u64>(), who in any::<[u8; 20]>(),
            status in any::<u8>(), version in any::<u64>(),
        ) {
            let c = info(id, datanet, who, status, version);
            let kv = stored(&c);
            prop_assert_eq!(contribution_head(&kv, id).unwrap(), ContributionHead::of(&c));
            prop_assert_eq!(contribution(&kv, id).unwrap(), c);
        }
    }

    #[test]
    fn a_contribution_without_a_head_is_not_found() {
        let c = info(4, 2, [9; 20], 1, 3);
        let mut kv = stored(&c);
        assert!(matches!(
            contribution_head(&kv, 5),
            Err(ExecError::NotFound(_))
        ));
        kv.remove(&k(b"d/a", 4, &[]));
        let e = contribution_head(&kv, 4).unwrap_err();
        assert!(matches!(e, ExecError::NotFound(_)), "{e}");
    }

    #[test]
    fn a_malformed_compact_head_is_refused_as_corrupt_state() {
        let c = info(4, 2, [9; 20], 1, 3);
        let mut kv = stored(&c);
        let good = kv.value(&k(b"d/a", 4, &[])).unwrap().to_vec();
        for bad in [
            Vec::new(),
            good[..HEAD_LEN - 1].to_vec(),
            [&good[..], &[0]].concat(),
        ] {
            kv.insert(k(b"d/a", 4, &[]), bad);
            let e = contribution_head(&kv, 4).unwrap_err();
            assert!(e.to_string().contains("contribution 4"), "{e}");
            assert!(matches!(e, ExecError::Storage(_)), "{e}");
        }
    }
}
