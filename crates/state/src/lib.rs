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

/// The layout of the state this build reads and writes. Bumped whenever a module stores something
/// differently (a new key, another encoding), because the same blocks then end in other state
/// roots: a node records the format it wrote a database in and refuses to open one written in
/// another (`openledger_node::Chain::open`), instead of failing a replay halfway.
///
/// 1: the first recorded format (compact receipts, staking checkpoints, contributions' compact
/// heads `d/a`); databases from before it carry no format.
pub const STATE_FORMAT: u64 = 1;

pub use ctx::{Ctx, Env};
pub use error::{ExecError, StorageError};
pub use executor::{apply_tx, simulate_call, Outcome};
pub use kv::{MemKv, Overlay, StateRead, WriteSet, Writes};
pub use tx::{verify_raw, VerifiedTx};
