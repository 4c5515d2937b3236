//! Genesis: chain id, start time, the allocation of the whole fixed OPEN supply, and the
//! initial parameters. Written as JSON by `openledger init`.

use crate::{
    modules::TREASURY,
    params::Params,
    units::{one_open, serde_open},
};
use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

/// The fixed supply: 1,000,000,000 OPEN.
pub fn total_supply() -> U256 {
    U256::from(1_000_000_000u64) * one_open()
}

/// One genesis balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub address: Address,
    #[serde(with = "serde_open")]
    pub balance: U256,
}

/// The genesis file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: u64,
    /// Unix seconds of block 0.
    pub timestamp: u64,
    /// Balances at genesis; they must add up to exactly [`total_supply`]. The treasury
    /// (0x…1000) should be among them.
    pub allocations: Vec<Allocation>,
    pub params: Params,
}

impl Genesis {
    /// A genesis giving `per_account` to each listed account and the rest to the treasury.
    pub fn with_accounts(
        chain_id: u64,
        timestamp: u64,
        accounts: &[Address],
        per_account: U256,
    ) -> Result<Self, String> {
        let given = per_account
            .checked_mul(U256::from(accounts.len()))
            .filter(|g| *g <= total_supply())
            .ok_or("the accounts' allocations exceed the total supply")?;
        let mut allocations = vec![Allocation {
            address: TREASURY,
            balance: total_supply() - given,
        }];
        allocations.extend(accounts.iter().map(|a| Allocation {
            address: *a,
            balance: per_account,
        }));
        let g = Genesis {
            chain_id,
            timestamp,
            allocations,
            params: Params::default(),
        };
        g.validate()?;
        Ok(g)
    }

    /// Checks the supply, duplicate accounts and the parameters.
    pub fn validate(&self) -> Result<(), String> {
        if self.chain_id == 0 {
            return Err("chain_id must be non-zero (EIP-155)".into());
        }
        let mut sum = U256::ZERO;
        let mut seen = std::collections::HashSet::new();
        for a in &self.allocations {
            if !seen.insert(a.address) {
                return Err(format!("address {} is allocated twice", a.address));
            }
            if crate::modules::name_of(&a.address).is_some() {
                return Err(format!(
                    "address {} is a module and cannot hold a genesis allocation",
                    a.address
                ));
            }
            sum = sum.checked_add(a.balance).ok_or("allocations overflow")?;
        }
        if sum != total_supply() {
            return Err(format!(
                "allocations add up to {} OPEN but the fixed supply is {} OPEN",
                crate::units::format_open(sum),
                crate::units::format_open(total_supply())
            ));
        }
        self.params.validate().map_err(|e| format!("params: {e}"))
    }
}
