//! Genesis application: the allocations, the fixed supply and the parameters written into an
//! empty state.

use crate::{
    codec,
    kv::{MemKv, Overlay, WriteSet},
    modules::{bank, params},
};
use openledger_types::{genesis::total_supply, Genesis};

/// The writes that turn empty state into the genesis state. Fails on an invalid genesis.
pub fn genesis_writes(genesis: &Genesis) -> Result<WriteSet, String> {
    genesis.validate()?;
    let empty = MemKv::default();
    let mut o = Overlay::new(&empty);
    for a in &genesis.allocations {
        bank::put_account(
            &mut o,
            &a.address,
            bank::Account {
                nonce: 0,
                balance: a.balance,
            },
        );
    }
    codec::put_u256(&mut o, bank::SUPPLY_KEY.to_vec(), total_supply());
    o.put(params::KEY.to_vec(), params::encode(&genesis.params));
    Ok(o.into_writes().into_iter().collect())
}
