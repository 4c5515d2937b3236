//! Fixed addresses of the native system contracts and of the treasury.

use alloy_primitives::{address, Address};

/// The protocol treasury: receives the platform share of fees and datanet approval fees.
pub const TREASURY: Address = address!("0000000000000000000000000000000000001000");
/// Native OPEN transfers ([`crate::abi::IBank`]).
pub const BANK: Address = address!("0000000000000000000000000000000000001001");
/// Staking and the stakers reward pool ([`crate::abi::IStaking`]).
pub const STAKING: Address = address!("0000000000000000000000000000000000001002");
/// Datanets, contributions and versions ([`crate::abi::IDatanet`]).
pub const DATANET: Address = address!("0000000000000000000000000000000000001003");
/// Base models and adapters ([`crate::abi::IModel`]).
pub const MODEL: Address = address!("0000000000000000000000000000000000001004");
/// Inference receipts, escrow and settlement ([`crate::abi::IInference`]).
pub const INFERENCE: Address = address!("0000000000000000000000000000000000001005");
/// Governed parameters ([`crate::abi::IParams`]); only the governor changes them.
pub const PARAMS: Address = address!("0000000000000000000000000000000000001006");
/// The OpenZeppelin-compatible governor with its built-in timelock ([`crate::abi::IGovernor`]);
/// the only sender allowed to call governed setters.
pub const GOVERNOR: Address = address!("0000000000000000000000000000000000001007");
/// RLHF validators: commit-reveal ratings of served outputs.
pub const RLHF: Address = address!("0000000000000000000000000000000000001008");
/// AI agent staking: stake to call models above a governed daily volume.
pub const AGENT: Address = address!("0000000000000000000000000000000000001009");

/// Every callable module with its short name, as used in the CLI and in errors.
pub const ALL: [(Address, &str); 9] = [
    (BANK, "bank"),
    (STAKING, "staking"),
    (DATANET, "datanet"),
    (MODEL, "model"),
    (INFERENCE, "inference"),
    (PARAMS, "params"),
    (GOVERNOR, "governor"),
    (RLHF, "rlhf"),
    (AGENT, "agent"),
];

/// The module name of `address`, if it is a module.
pub fn name_of(address: &Address) -> Option<&'static str> {
    ALL.iter().find(|(a, _)| a == address).map(|(_, n)| *n)
}
