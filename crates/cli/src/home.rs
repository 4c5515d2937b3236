//! The chain home: `config.toml`, `genesis.json`, `data/chain.redb` and `keystore/`.
//! `openledger init` writes it; `--dev` also creates funded development keys.

use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use anyhow::{bail, Context, Result};
use openledger_node::NodeConfig;
use openledger_types::{units::one_open, Genesis};
use std::path::{Path, PathBuf};

/// Chain id of `init` unless told otherwise ("OPEN" on a phone keypad is 6736).
pub const DEFAULT_CHAIN_ID: u64 = 6736;
/// How many dev keys `init --dev` makes.
pub const DEV_ACCOUNTS: usize = 10;

/// Paths inside a chain home.
pub struct Home(pub PathBuf);

impl Home {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn genesis(&self) -> PathBuf {
        self.0.join("genesis.json")
    }
    pub fn db(&self) -> PathBuf {
        self.0.join("data").join("chain.redb")
    }
    /// The pending-transaction journal (accepted, not yet sealed transactions).
    pub fn journal(&self) -> PathBuf {
        self.0.join("data").join("pending.journal")
    }
    /// The content-addressed blob store (datanet rows).
    pub fn blobs(&self) -> PathBuf {
        self.0.join("data").join("blobs")
    }
    pub fn keystore(&self) -> PathBuf {
        self.0.join("keystore")
    }

    /// Reads `config.toml`.
    pub fn load_config(&self) -> Result<NodeConfig> {
        let path = self.config();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (run `openledger init` first, or pass --home)",
                path.display()
            )
        })?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Reads and validates `genesis.json`.
    pub fn load_genesis(&self) -> Result<Genesis> {
        let path = self.genesis();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (run `openledger init` first, or pass --home)",
                path.display()
            )
        })?;
        let g: Genesis =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        g.validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(g)
    }
}

/// The deterministic development key `i` (like anvil's, these are public: never use on a real
/// network); the node's dashboard hands the same keys to the browser on a dev chain.
pub use openledger_node::dashboard::dev_key;

/// Options of `openledger init`.
pub struct InitOptions {
    pub dev: bool,
    pub chain_id: u64,
    pub force: bool,
    pub accounts: Vec<Address>,
    pub balance: U256,
}

/// Writes a new chain home. Refuses to overwrite an existing one without `force`.
pub fn init(home: &Home, opts: &InitOptions) -> Result<Vec<(Address, B256)>> {
    if home.genesis().exists() && !opts.force {
        bail!(
            "{} already holds a chain (pass --force to replace it, which deletes its data)",
            home.0.display()
        );
    }
    if opts.force && home.0.join("data").exists() {
        std::fs::remove_dir_all(home.0.join("data")).context("removing old chain data")?;
    }
    std::fs::create_dir_all(home.0.join("data"))
        .with_context(|| format!("creating {}", home.0.display()))?;
    std::fs::create_dir_all(home.keystore())?;
    let mut dev = Vec::new();
    let mut accounts = opts.accounts.clone();
    if opts.dev {
        for i in 0..DEV_ACCOUNTS {
            let key = dev_key(i);
            let signer = PrivateKeySigner::from_bytes(&key)?;
            accounts.push(signer.address());
            dev.push((signer.address(), key));
            crate::wallet::store_key(&home.keystore(), &format!("dev{i}"), &key, "")?;
        }
    }
    let per = if opts.dev && opts.balance.is_zero() {
        U256::from(1_000_000u64) * one_open()
    } else {
        opts.balance
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut genesis =
        Genesis::with_accounts(opts.chain_id, now, &accounts, per).map_err(anyhow::Error::msg)?;
    if opts.dev {
        genesis.params.unstake_cooldown_secs = 10;
        // Governance in seconds: 2 s voting delay, 20 s of voting, a 2 s timelock.
        genesis.params.governance = openledger_types::params::GovernanceParams::dev();
        // RLHF rounds in seconds: 10 s to commit, 10 s to reveal.
        genesis.params.rlhf = openledger_types::params::RlhfParams::dev();
    }
    write_atomically(&home.genesis(), &serde_json::to_string_pretty(&genesis)?)?;
    let mut config = NodeConfig {
        dev: opts.dev,
        ..NodeConfig::default()
    };
    // A dev chain serves the default model through the OpenAI API when it is installed
    // (scripts/fetch-model puts it in models/ under the directory `init` runs from).
    let default_model = Path::new(openledger_model::DEFAULT_MODEL_PATH);
    if opts.dev && default_model.is_file() {
        config.serve.model = Some(default_model.canonicalize()?);
    }
    // dev9 records the receipts of paid calls on a dev chain (and pays their gas).
    if opts.dev {
        config.serve.operator = Some(format!("dev{}", DEV_ACCOUNTS - 1));
    }
    // A dev chain accepts ModelFactory jobs from the dev accounts; dev9 may cancel any.
    if opts.dev {
        config.factory.enabled = true;
        config.factory.allow = dev.iter().map(|(a, _)| *a).collect();
        config.factory.operators = dev.last().map(|(a, _)| *a).into_iter().collect();
    }
    write_atomically(&home.config(), &toml::to_string_pretty(&config)?)?;
    Ok(dev)
}

/// Writes a file via a temporary sibling and a rename, so a crash never leaves half a file.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
