//! The demo's named accounts: keys derived from their names (the same addresses on every run),
//! stored in the chain home's keystore with an empty password like the dev keys, and funded
//! by dev0; plus the node's operator (dev9) and the treasury, whose balances the demo also shows.

use super::Ctx;
use alloy_primitives::{keccak256, Address, U256};
use anyhow::{Context, Result};
use openledger_types::units::{format_open, one_open};

/// What an account does in the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    DatanetOwner,
    /// Contributes a sample file the owner approves.
    Contributor,
    /// Uploads a file the ingest refuses.
    RefusedContributor,
    /// Uploads rows the datanet already holds.
    DuplicateContributor,
    /// Contributes a valid file the owner rejects.
    RejectedContributor,
    ModelBuilder,
    AppUser,
    Staker,
    RlhfValidator,
    /// The node's OpenLoRA operator (records receipts, earns the platform share).
    Operator,
    Treasury,
}

/// One named account.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Account {
    pub name: String,
    pub address: Address,
    pub role: Role,
}

/// Every account the demo shows, in display order.
#[derive(Default)]
pub struct Accounts(pub Vec<Account>);

impl Accounts {
    /// The account named `name`.
    pub fn get(&self, name: &str) -> Result<&Account> {
        self.0
            .iter()
            .find(|a| a.name == name)
            .with_context(|| format!("internal: no demo account {name:?}"))
    }

    /// The address of `name`.
    pub fn addr(&self, name: &str) -> Result<Address> {
        Ok(self.get(name)?.address)
    }

    /// The name of `address`, if it is one of the demo's.
    pub fn name_of(&self, address: Address) -> Option<&str> {
        self.0
            .iter()
            .find(|a| a.address == address)
            .map(|a| a.name.as_str())
    }
}

/// The demo's accounts with their roles and the OPEN dev0 sends each.
const NAMED: &[(&str, Role, u64)] = &[
    ("owner", Role::DatanetOwner, 1_000),
    ("alice", Role::Contributor, 10),
    ("bob", Role::Contributor, 10),
    ("carol", Role::Contributor, 10),
    ("dave", Role::Contributor, 10),
    ("erin", Role::RefusedContributor, 10),
    ("frank", Role::DuplicateContributor, 10),
    ("mallory", Role::RejectedContributor, 10),
    ("builder", Role::ModelBuilder, 100),
    ("app", Role::AppUser, 100),
    ("staker1", Role::Staker, 20_000),
    ("staker2", Role::Staker, 10_000),
    ("validator1", Role::RlhfValidator, 2_000),
    ("validator2", Role::RlhfValidator, 2_000),
    ("validator3", Role::RlhfValidator, 2_000),
];

/// The dev key that funds the demo's accounts, and the node's operator key (`init --dev`).
pub const FUNDER: &str = "dev0";
pub const OPERATOR: &str = "dev9";

/// Creates and funds the named accounts.
pub fn create(ctx: &mut Ctx) -> Result<()> {
    let keystore = ctx.home.join("keystore");
    let mut all = Vec::new();
    for &(name, role, open) in NAMED {
        let key = keccak256(format!("openledger demo account {name}"));
        let address = crate::wallet::store_key(&keystore, name, &key, "")
            .with_context(|| format!("storing the key of {name}"))?;
        ctx.send(FUNDER, address, U256::from(open) * one_open(), Vec::new())
            .with_context(|| format!("funding {name}"))?;
        println!("  {name:<11} {address}  {open:>6} OPEN from {FUNDER}  ({role:?})");
        all.push(Account {
            name: name.into(),
            address,
            role,
        });
    }
    let operator = crate::wallet::key_address(&keystore.join(OPERATOR))?;
    println!("  {OPERATOR:<11} {operator}  the node's OpenLoRA operator");
    all.push(Account {
        name: format!("operator ({OPERATOR})"),
        address: operator,
        role: Role::Operator,
    });
    all.push(Account {
        name: "treasury".into(),
        address: openledger_types::modules::TREASURY,
        role: Role::Treasury,
    });
    ctx.accounts = Accounts(all);
    Ok(())
}

/// Every account's balance, in display order.
pub fn balances(ctx: &Ctx) -> Result<Vec<U256>> {
    ctx.accounts
        .0
        .iter()
        .map(|a| ctx.balance(a.address))
        .collect()
}

/// Prints the OPEN of every account at two moments and the change.
pub fn print_table(ctx: &Ctx, labels: [&str; 2], before: &[U256], after: &[U256]) {
    println!(
        "  {:<18} {:<24} {:>22} {:>22} {:>22}",
        "account", "role", labels[0], labels[1], "change"
    );
    for ((a, b), c) in ctx.accounts.0.iter().zip(before).zip(after) {
        let change = if c >= b {
            format!("+{}", format_open(*c - *b))
        } else {
            format!("-{}", format_open(*b - *c))
        };
        println!(
            "  {:<18} {:<24} {:>22} {:>22} {:>22}",
            a.name,
            format!("{:?}", a.role),
            format_open(*b),
            format_open(*c),
            change
        );
    }
}
