//! The deterministic OpenLedger state machine.
//!
//! State is a flat key-value space read through [`StateRead`] and written through an
//! [`Overlay`], so a transaction either commits all its writes or none. Each native module
//! (bank, staking, datanet, model, inference, params) owns its keys, calls, views and events
//! under [`modules`]. [`executor`] turns a verified Ethereum transaction into state changes,
//! gas and logs; [`tx`] decodes and sender-recovers raw transactions. The same blocks applied
//! to the same genesis give the same state on every machine.

pub mod codec;
pub mod ctx;
pub mod error;
pub mod executor;
pub mod genesis;
pub mod kv;
pub mod math;
pub mod modules;
pub mod tx;

pub use ctx::{Ctx, Env};
pub use error::{ExecError, StorageError};
pub use executor::{apply_tx, simulate_call, Outcome};
pub use kv::{MemKv, Overlay, StateRead, WriteSet, Writes};
pub use tx::{verify_raw, VerifiedTx};
