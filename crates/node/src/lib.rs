//! The OpenLedger node: the [`chain`] (pending block, sealing, genesis and replay
//! verification over the store), the [`sequencer`] that seals blocks on a timer (or at once in
//! dev mode), and the Ethereum JSON-RPC server in [`rpc`].

pub mod chain;
pub mod config;
pub mod rpc;
pub mod sequencer;

pub use chain::{Chain, ChainError};
pub use config::NodeConfig;
