//! Votes by signature: OpenZeppelin Governor's EIP-712 `Ballot` and `ExtendedBallot`, signed
//! by the voter under the domain {name "OpenLedger Governor", version "1", chainId,
//! verifyingContract 0x…1007}, each carrying the voter's nonce so it counts once.

use crate::{error::ExecResult, ExecError};
use alloy_primitives::{Address, Signature, B256, U256};
use alloy_sol_types::{sol, Eip712Domain, SolStruct};
use openledger_types::modules::GOVERNOR;

/// The governor's EIP-712 name (also `name()`).
pub const NAME: &str = "OpenLedger Governor";
/// The governor's EIP-712 version (also `version()`).
pub const VERSION: &str = "1";

sol! {
    /// OZ Governor's BALLOT_TYPEHASH type.
    struct Ballot {
        uint256 proposalId;
        uint8 support;
        address voter;
        uint256 nonce;
    }

    /// OZ Governor's EXTENDED_BALLOT_TYPEHASH type.
    struct ExtendedBallot {
        uint256 proposalId;
        uint8 support;
        address voter;
        uint256 nonce;
        string reason;
        bytes params;
    }
}

/// Half the order of secp256k1: OZ's ECDSA refuses signatures with a larger `s` (malleable).
const HALF_N: U256 = U256::from_limbs([
    0xdfe92f46681b20a0,
    0x5d576e7357a4501d,
    0xffffffffffffffff,
    0x7fffffffffffffff,
]);

/// The governor's EIP-712 domain on chain `chain_id`.
pub fn domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(
        Some(NAME.into()),
        Some(VERSION.into()),
        Some(U256::from(chain_id)),
        Some(GOVERNOR),
        None,
    )
}

/// The digest a voter signs for `castVoteBySig`.
pub fn ballot_digest(chain_id: u64, id: U256, support: u8, voter: Address, nonce: U256) -> B256 {
    Ballot {
        proposalId: id,
        support,
        voter,
        nonce,
    }
    .eip712_signing_hash(&domain(chain_id))
}

/// The digest a voter signs for `castVoteWithReasonAndParamsBySig`.
pub fn extended_ballot_digest(chain_id: u64, ballot: ExtendedBallot) -> B256 {
    ballot.eip712_signing_hash(&domain(chain_id))
}

/// Checks that `signature` (65 bytes r ‖ s ‖ v, v 27 or 28, low s, as OZ's ECDSA) is `voter`'s
/// over `digest`.
pub fn check(voter: Address, digest: B256, signature: &[u8]) -> ExecResult<()> {
    let invalid = |why: String| {
        ExecError::Unauthorized(format!(
            "invalid vote signature for voter {voter}: {why} (sign the EIP-712 Ballot with the voter's current nonce, IGovernor.nonces)"
        ))
    };
    if signature.len() != 65 {
        return Err(invalid(format!(
            "it is {} bytes, a signature is 65 (r, s, v)",
            signature.len()
        )));
    }
    if !matches!(signature[64], 27 | 28) {
        return Err(invalid(format!(
            "v is {}, expected 27 or 28",
            signature[64]
        )));
    }
    let sig = Signature::from_raw(signature).map_err(|e| invalid(e.to_string()))?;
    if sig.s() > HALF_N {
        return Err(invalid("s is in the upper half of the curve order".into()));
    }
    let signer = sig
        .recover_address_from_prehash(&digest)
        .map_err(|e| invalid(e.to_string()))?;
    if signer != voter {
        return Err(invalid(format!(
            "it was signed by {signer} or over other data"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::keccak256;

    #[test]
    fn type_hashes_are_openzeppelins() {
        let ballot = Ballot {
            proposalId: U256::ZERO,
            support: 0,
            voter: Address::ZERO,
            nonce: U256::ZERO,
        };
        assert_eq!(
            ballot.eip712_type_hash(),
            keccak256("Ballot(uint256 proposalId,uint8 support,address voter,uint256 nonce)")
        );
        let ext = ExtendedBallot {
            proposalId: U256::ZERO,
            support: 0,
            voter: Address::ZERO,
            nonce: U256::ZERO,
            reason: String::new(),
            params: Default::default(),
        };
        assert_eq!(
            ext.eip712_type_hash(),
            keccak256("ExtendedBallot(uint256 proposalId,uint8 support,address voter,uint256 nonce,string reason,bytes params)")
        );
    }

    #[test]
    fn half_n_is_half_the_curve_order() {
        let n = U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .unwrap();
        assert_eq!(HALF_N, n >> 1);
    }
}
