//! OpenLedger primitives shared by every crate: module addresses, the Solidity interfaces of
//! the native modules, genesis and governed parameters, OPEN amounts and the incremental Merkle
//! tree used for datanet version roots. Pure data and pure functions: no I/O.

pub mod abi;
pub mod genesis;
pub mod merkle;
pub mod modules;
pub mod params;
pub mod request_auth;
pub mod units;

pub use alloy_primitives::{Address, Bytes, B256, U256};
pub use genesis::Genesis;
pub use params::Params;
