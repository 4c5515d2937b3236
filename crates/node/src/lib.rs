//! The OpenLedger node: the [`chain`] (pending block, sealing, genesis and replay
//! verification over the store), the [`sequencer`] that seals blocks on a timer (or at once in
//! dev mode), the Ethereum JSON-RPC server in [`rpc`], and beside it the REST routes in
//! [`rest`] over the off-chain datanet rows in [`datanets`], both behind the HTTP guards of
//! [`guard`] (Host check, Origin allow-list, concurrency, time and body-size limits).

pub mod chain;
pub mod config;
pub mod dashboard;
pub mod datanets;
pub mod guard;
pub mod journal;
pub mod openlora;
pub mod rest;
pub mod rpc;
pub mod sequencer;

pub use chain::{Chain, ChainError};
pub use config::NodeConfig;
