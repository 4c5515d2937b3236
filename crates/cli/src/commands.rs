//! The subcommands and what each does.

use crate::{
    home::{self, Home, InitOptions},
    wallet::{self, Rpc},
    Cli,
};
use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEventInterface};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use openledger_types::{
    abi::{IBank, IDatanet, IInference, IModel, IParams, IStaking},
    modules,
    units::{format_open, parse_open},
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum Command {
    /// Write a new chain home: config.toml, genesis.json (whole supply allocated), keystore.
    Init {
        /// Development chain: 10 funded dev keys (printed), instant blocks, 10 s unstake cooldown,
        /// governance in seconds.
        #[arg(long)]
        dev: bool,
        #[arg(long, default_value_t = home::DEFAULT_CHAIN_ID)]
        chain_id: u64,
        /// Fund this address at genesis (repeatable); the rest of the supply goes to the treasury.
        #[arg(long = "account")]
        accounts: Vec<Address>,
        /// OPEN given to each --account (and each dev key), e.g. 1000 or 0.5.
        #[arg(long, value_parser = parse_open, default_value = "0")]
        balance: U256,
        /// Replace an existing chain home (deletes its data, keeps its keystore).
        #[arg(long)]
        force: bool,
    },
    /// Run the node: sequencer + JSON-RPC on 127.0.0.1.
    Node {
        /// Seal a block right after each request that sends transactions.
        #[arg(long)]
        dev: bool,
        /// Override the JSON-RPC listen address.
        #[arg(long)]
        rpc_addr: Option<std::net::SocketAddr>,
        /// Override the block time in milliseconds.
        #[arg(long)]
        block_time_ms: Option<u64>,
        /// Serve this base model (GGUF file or Hugging Face directory) through the OpenAI API
        /// at /v1 (OpenLoRA); default: `[serve] model` in config.toml.
        #[arg(long, env = "OPENLEDGER_MODEL")]
        model: Option<std::path::PathBuf>,
        /// Device for the served model (default: cuda when built with it and a GPU is present).
        #[arg(long, env = "OPENLEDGER_DEVICE", value_enum)]
        device: Option<crate::ai::DeviceArg>,
        /// Load these adapters (on-chain names or adapter-<id>) into RAM at start, ahead of
        /// traffic; adds to `[serve] preload`.
        #[arg(long, value_delimiter = ',')]
        preload: Vec<String>,
    },
    /// Replay every block from genesis and check every state, transactions and receipts root.
    Verify,
    /// Generate text with a local model (streams to stdout; stats on stderr).
    Generate {
        #[command(flatten)]
        model: crate::ai::ModelArgs,
        #[command(flatten)]
        sampling: crate::ai::SamplingArgs,
        /// Prompt text (read from stdin when omitted).
        prompt: Option<String>,
        /// Send the prompt as a user turn through the model's chat template.
        #[arg(long)]
        chat: bool,
        /// System message for --chat.
        #[arg(long, requires = "chat")]
        system: Option<String>,
    },
    /// Chat with a local model in the terminal.
    Chat {
        #[command(flatten)]
        model: crate::ai::ModelArgs,
        #[command(flatten)]
        sampling: crate::ai::SamplingArgs,
        /// System message.
        #[arg(long)]
        system: Option<String>,
    },
    /// Manage keys (Ethereum keystore v3 files in <home>/keystore).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Send OPEN.
    Send {
        to: Address,
        /// Amount of OPEN, e.g. 1.5 (or 1000wei).
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Show the OPEN balance and nonce of an address or key name.
    Balance { who: String },
    /// Show a transaction and its receipt.
    Tx { hash: B256 },
    /// Show a block ("latest" or a number).
    Block {
        #[arg(default_value = "latest")]
        number: String,
    },
    /// Datanets: create, contribute files, approve/reject, access, versions, rows, export, proofs.
    #[command(subcommand)]
    Datanet(crate::datanet_cmd::DatanetCmd),
    /// Attribution indexes of datanet versions: build, count, next tokens, rows, info.
    #[command(subcommand)]
    Index(crate::index_cmd::IndexCmd),
    /// Attribute a response to the datanet contributions it draws on (spans, rows, weights).
    Attribute(crate::index_cmd::AttributeArgs),
    /// Attribution commitments of inference receipts: verify.
    #[command(subcommand)]
    Attribution(crate::index_cmd::AttributionCmd),
    /// Models: base models and adapters with provenance.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Adapters: merge on-chain adapters into a new one; initialise a fresh one for a base model.
    #[command(subcommand)]
    Adapter(crate::adapter_cmd::AdapterCmd),
    /// Inference: credit, operator allowances, receipts, settlement.
    #[command(subcommand)]
    Inference(InferenceCmd),
    /// Staking: stake, unstake, withdraw, claim rewards, delegate votes, show stake and votes.
    #[command(subcommand)]
    Stake(crate::stake_cmd::StakeCmd),
    /// Governance (OpenZeppelin Governor at 0x…1007): propose, vote, queue, execute, cancel,
    /// show, list.
    #[command(subcommand)]
    Gov(crate::gov_cmd::GovCmd),
    /// RLHF validators: join, open rounds on receipts, commit and reveal ratings, finalize,
    /// show, export the preference dataset.
    #[command(subcommand)]
    Rlhf(crate::rlhf_cmd::RlhfCmd),
    /// AI agent staking: register, stake past the free daily volume, unstake, withdraw, show.
    #[command(subcommand)]
    Agent(crate::agent_cmd::AgentCmd),
    /// The flywheel simulator: agent populations driving the real state machine in process
    /// (no node or keys): run a scenario, sweep a parameter, find the take-off threshold.
    #[command(subcommand)]
    Sim(crate::sim_cmd::SimCommand),
    /// API keys for the node's OpenAI API, bound to your account: new, revoke.
    #[command(subcommand)]
    ApiKey(crate::openlora_cmd::ApiKeyCmd),
    /// What an address earned as contributor, model owner, staker and platform.
    Rewards(crate::openlora_cmd::RewardsArgs),
    /// ModelFactory: fine-tune LoRA adapters on datanet versions and local files.
    #[command(subcommand)]
    Factory(crate::factory_cmd::FactoryCmd),
    /// Show the governed parameters.
    Params,
    /// The whole flywheel on a fresh dev chain in one command: an embedded node with SmolLM2,
    /// a datanet from datanets/sample (with a rejected and a duplicate contribution), a LoRA
    /// adapter fine-tuned by ModelFactory until it answers the planted-fact questions, served
    /// through OpenLoRA, paid, attributed and settled; a governance vote that raises the
    /// contributors' share and a second round; a flywheel simulation; report.html + report.json.
    Demo(crate::demo::DemoArgs),
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a new random key.
    New { name: String },
    /// List keys and their addresses.
    List,
    /// Import a private key (hex, read from standard input unless --private-key is given).
    Import {
        name: String,
        #[arg(long)]
        private_key: Option<B256>,
    },
    /// Print a key's keystore JSON, or with --private-key its raw private key.
    Export {
        name: String,
        #[arg(long)]
        private_key: bool,
    },
}

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Register a base model by content hash.
    RegisterBase {
        name: String,
        #[arg(long)]
        hash: B256,
    },
    /// Register an adapter with provenance: datanet versions as ID@VERSION (repeatable).
    RegisterAdapter {
        name: String,
        #[arg(long)]
        base: u64,
        #[arg(long = "datanet", value_parser = parse_datanet_version, required = true)]
        datanets: Vec<(u64, u64)>,
        #[arg(long)]
        config_hash: B256,
        #[arg(long)]
        adapter_hash: B256,
        #[arg(long, default_value_t = B256::ZERO)]
        index_root: B256,
    },
    /// Show a base model.
    Show { id: u64 },
    /// Show an adapter.
    Adapter { id: u64 },
    /// Pack a PEFT adapter directory, upload it (and its attribution index) to the node and
    /// register it on chain; prints the adapter id.
    PublishAdapter(crate::publish_adapter::PublishAdapterArgs),
    #[command(flatten)]
    Proposals(crate::proposal_cmd::ProposalCmd),
}

#[derive(Subcommand)]
pub enum InferenceCmd {
    /// Prepay inference credit.
    Deposit {
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Withdraw unused credit.
    Withdraw {
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Allow a serving operator to spend up to this much of your credit.
    ApproveOperator {
        operator: Address,
        #[arg(value_parser = parse_open)]
        allowance: U256,
    },
    /// Record an inference receipt (as the serving operator).
    Record {
        #[arg(long)]
        caller: Address,
        #[arg(long)]
        adapter: u64,
        #[arg(long)]
        prompt_tokens: u32,
        #[arg(long)]
        completion_tokens: u32,
        /// CONTRIBUTION:WEIGHT_PPM (repeatable).
        #[arg(long = "attribution", value_parser = parse_attribution)]
        attributions: Vec<(u64, u32)>,
        #[arg(long, default_value_t = B256::ZERO)]
        attribution_root: B256,
        /// Record the commitment (top list and root) of this `openledger attribute --json
        /// --commit-top K` output instead of --attribution/--attribution-root.
        #[arg(long, conflicts_with_all = ["attributions", "attribution_root"])]
        attribution_file: Option<PathBuf>,
    },
    /// Settle receipts: split their fees by the governed split.
    Settle { receipts: Vec<u64> },
    /// Show a receipt.
    Receipt { id: u64 },
    /// Show your (or an address's) credit.
    Credit { who: Option<String> },
}

pub(crate) fn parse_datanet_version(s: &str) -> Result<(u64, u64), String> {
    let (d, v) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: expected DATANET@VERSION, e.g. 1@3"))?;
    Ok((
        d.parse().map_err(|e| format!("{s:?}: {e}"))?,
        v.parse().map_err(|e| format!("{s:?}: {e}"))?,
    ))
}

fn parse_attribution(s: &str) -> Result<(u64, u32), String> {
    let (c, w) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected CONTRIBUTION:WEIGHT_PPM, e.g. 7:250000"))?;
    Ok((
        c.parse().map_err(|e| format!("{s:?}: {e}"))?,
        w.parse().map_err(|e| format!("{s:?}: {e}"))?,
    ))
}

pub(crate) struct Session {
    pub(crate) cli_home: Home,
    rpc: Option<String>,
    from: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    /// The --from key once unlocked, so a command asks for its password once.
    unlocked: std::cell::OnceCell<PrivateKeySigner>,
}

impl Session {
    /// A session on chain home `home` talking to the node at `rpc` (None: the home's config),
    /// with no --from key.
    pub(crate) fn new(home: PathBuf, rpc: Option<String>) -> Session {
        Session {
            cli_home: Home(home),
            rpc,
            from: None,
            password: None,
            password_file: None,
            unlocked: Default::default(),
        }
    }

    pub(crate) fn rpc(&self) -> Result<Rpc> {
        let url = match &self.rpc {
            Some(u) => u.clone(),
            None => match self.cli_home.load_config() {
                Ok(c) => format!("http://{}", c.rpc_addr),
                Err(_) => "http://127.0.0.1:8545".to_string(),
            },
        };
        Ok(Rpc { url })
    }

    fn password(&self, confirm_new: bool) -> Result<String> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        if let Some(f) = &self.password_file {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            return Ok(text.lines().next().unwrap_or_default().to_string());
        }
        let p = rpassword::prompt_password("keystore password: ")
            .context("reading the password (set OPENLEDGER_PASSWORD to skip the prompt)")?;
        if confirm_new && rpassword::prompt_password("again: ")? != p {
            bail!("the passwords differ");
        }
        Ok(p)
    }

    pub(crate) fn signer(&self) -> Result<PrivateKeySigner> {
        if let Some(k) = self.unlocked.get() {
            return Ok(k.clone());
        }
        let k = self.unlock()?;
        Ok(self.unlocked.get_or_init(|| k).clone())
    }

    fn unlock(&self) -> Result<PrivateKeySigner> {
        let name = self
            .from
            .as_deref()
            .ok_or_else(|| anyhow!("this command signs a transaction: pass --from <key name>"))?;
        self.unlock_named(name)
    }

    /// Unlocks the keystore key `name` (dev keys with their empty password, others with the
    /// password from --password, --password-file, OPENLEDGER_PASSWORD or a prompt).
    pub(crate) fn unlock_named(&self, name: &str) -> Result<PrivateKeySigner> {
        let dir = self.cli_home.keystore();
        // Dev keys carry an empty password; try it first so dev flows need no prompt.
        if self.password.is_none() && self.password_file.is_none() {
            if let Ok(s) = wallet::load_key(&dir, name, "") {
                return Ok(s);
            }
        }
        wallet::load_key(&dir, name, &self.password(false)?)
    }

    pub(crate) fn address_of(&self, who: &str) -> Result<Address> {
        if let Ok(a) = who.parse::<Address>() {
            return Ok(a);
        }
        wallet::key_address(&self.cli_home.keystore().join(who))
            .with_context(|| format!("{who:?} is neither an address nor a key name"))
    }

    pub(crate) fn me_or(&self, who: &Option<String>) -> Result<Address> {
        match who.as_deref().or(self.from.as_deref()) {
            Some(w) => self.address_of(w),
            None => bail!("name an address or pass --from"),
        }
    }

    /// A client of the node's REST routes; with `sign`, requests are signed by the --from key
    /// when one is given (permissioned datanets need that).
    pub(crate) fn rest(&self, sign: bool) -> Result<crate::rest::Rest> {
        let rpc = self.rpc()?;
        let (chain_id, signer) = if sign && self.from.is_some() {
            let id = rpc.call("eth_chainId", json!([]))?;
            (q(&id), Some(self.signer()?))
        } else {
            (0, None)
        };
        Ok(crate::rest::Rest::new(&rpc.url, chain_id, signer))
    }

    /// Sends a module call and prints the outcome with decoded events.
    pub(crate) fn call(&self, to: Address, value: U256, data: Vec<u8>) -> Result<()> {
        let signer = self.signer()?;
        let receipt = self.rpc()?.send(&signer, to, value, data)?;
        print_receipt(&receipt);
        Ok(())
    }
}

fn q(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_default()
}

fn describe_log(log: &Value) -> String {
    let address: Address = serde_json::from_value(log["address"].clone()).unwrap_or_default();
    let topics: Vec<B256> = serde_json::from_value(log["topics"].clone()).unwrap_or_default();
    let data: alloy_primitives::Bytes =
        serde_json::from_value(log["data"].clone()).unwrap_or_default();
    let decoded = match address {
        modules::BANK => {
            IBank::IBankEvents::decode_raw_log(&topics, &data).map(|e| format!("{e:?}"))
        }
        modules::STAKING => {
            IStaking::IStakingEvents::decode_raw_log(&topics, &data).map(|e| format!("{e:?}"))
        }
        modules::DATANET => {
            IDatanet::IDatanetEvents::decode_raw_log(&topics, &data).map(|e| format!("{e:?}"))
        }
        modules::MODEL => {
            IModel::IModelEvents::decode_raw_log(&topics, &data).map(|e| format!("{e:?}"))
        }
        modules::INFERENCE => {
            IInference::IInferenceEvents::decode_raw_log(&topics, &data).map(|e| format!("{e:?}"))
        }
        modules::RLHF => openledger_types::abi::IRlhf::IRlhfEvents::decode_raw_log(&topics, &data)
            .map(|e| format!("{e:?}")),
        modules::AGENT => {
            openledger_types::abi::IAgent::IAgentEvents::decode_raw_log(&topics, &data)
                .map(|e| format!("{e:?}"))
        }
        _ => Ok(format!("log from {address}")),
    };
    let module = modules::name_of(&address).unwrap_or("?");
    format!(
        "{module}: {}",
        decoded.unwrap_or_else(|e| format!("undecodable log: {e}"))
    )
}

fn print_receipt(r: &Value) {
    println!(
        "transaction {}",
        r["transactionHash"].as_str().unwrap_or("?")
    );
    println!("  block     {}", q(&r["blockNumber"]));
    println!(
        "  status    {}",
        if q(&r["status"]) == 1 {
            "success"
        } else {
            "failed"
        }
    );
    println!("  gas used  {}", q(&r["gasUsed"]));
    for log in r["logs"].as_array().into_iter().flatten() {
        println!("  event     {}", describe_log(log));
    }
}

pub(crate) fn show<T: std::fmt::Debug>(v: T) {
    println!("{v:#?}");
}

/// The top list and root of the commitment in an `openledger attribute --json --commit-top K`
/// output.
fn committed_attribution(path: &Path) -> Result<(Vec<(u64, u32)>, B256)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let c: openledger_attribution::Commitment = v
        .get("commitment")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .with_context(|| format!("reading the commitment in {}", path.display()))?
        .with_context(|| {
            format!(
                "{} has no commitment: write it with `openledger attribute … --json --commit-top K`",
                path.display()
            )
        })?;
    Ok((
        c.top
            .iter()
            .map(|w| (w.contribution_id, w.weight_ppm))
            .collect(),
        c.root,
    ))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let s = Session {
        cli_home: Home(cli.home.clone()),
        rpc: cli.rpc,
        from: cli.from,
        password: cli.password,
        password_file: cli.password_file,
        unlocked: Default::default(),
    };
    let home = &s.cli_home;
    match cli.command {
        Command::Generate {
            model,
            sampling,
            prompt,
            chat,
            system,
        } => crate::ai::run_generate(&model, &sampling, prompt, chat, system)?,
        Command::Chat {
            model,
            sampling,
            system,
        } => crate::ai::run_chat(&model, &sampling, system)?,
        Command::Init {
            dev,
            chain_id,
            accounts,
            balance,
            force,
        } => {
            let dev_keys = home::init(
                home,
                &InitOptions {
                    dev,
                    chain_id,
                    force,
                    accounts,
                    balance,
                },
            )?;
            println!("initialised chain {chain_id} in {}", home.0.display());
            if let Some(m) = home.load_config()?.serve.model {
                println!(
                    "the node will serve {} through the OpenAI API at /v1",
                    m.display()
                );
            }
            if dev {
                println!("\ndev keys (public test keys: never use them on a real network), each funded with 1,000,000 OPEN,");
                println!("stored in the keystore as dev0..dev9 with an empty password:");
                for (i, (addr, key)) in dev_keys.iter().enumerate() {
                    println!("  dev{i}  {addr}  {key}");
                }
            }
            println!(
                "\nstart it with: openledger node --home {}",
                home.0.display()
            );
        }
        Command::Node {
            dev,
            rpc_addr,
            block_time_ms,
            model,
            device,
            preload,
        } => run_node(
            &s,
            dev,
            rpc_addr,
            block_time_ms,
            model,
            device,
            preload,
            shutdown_signal(),
        )?,
        Command::Verify => {
            let genesis = home.load_genesis()?;
            let started = std::time::Instant::now();
            let mut last = std::time::Instant::now();
            let n = openledger_node::chain::verify(&home.db(), &genesis, |b, head| {
                if last.elapsed().as_secs() >= 2 {
                    eprintln!("  replayed block {b} of {head}");
                    last = std::time::Instant::now();
                }
            })?;
            println!("verified {n} blocks from genesis: every state, transactions and receipts root and block hash matches ({:.1} s)", started.elapsed().as_secs_f64());
        }
        Command::Keys(k) => keys(&s, k)?,
        Command::Send { to, amount } => s.call(to, amount, vec![])?,
        Command::Balance { who } => {
            let a = s.address_of(&who)?;
            let rpc = s.rpc()?;
            let bal: U256 =
                serde_json::from_value(rpc.call("eth_getBalance", json!([a, "latest"]))?)?;
            let nonce = q(&rpc.call("eth_getTransactionCount", json!([a, "latest"]))?);
            println!(
                "{a}\n  balance {} OPEN\n  nonce   {nonce}",
                format_open(bal)
            );
        }
        Command::Tx { hash } => {
            let rpc = s.rpc()?;
            let tx = rpc.call("eth_getTransactionByHash", json!([hash]))?;
            if tx.is_null() {
                bail!("no transaction {hash} on this chain");
            }
            println!("{}", serde_json::to_string_pretty(&tx)?);
            let r = rpc.call("eth_getTransactionReceipt", json!([hash]))?;
            if r.is_null() {
                println!("pending: not sealed into a block yet");
            } else {
                print_receipt(&r);
            }
        }
        Command::Block { number } => {
            let tag = if number == "latest" {
                json!("latest")
            } else {
                json!(format!(
                    "{:#x}",
                    number.parse::<u64>().context("block number")?
                ))
            };
            let b = s.rpc()?.call("eth_getBlockByNumber", json!([tag, false]))?;
            if b.is_null() {
                bail!("no block {number}");
            }
            println!("{}", serde_json::to_string_pretty(&b)?);
        }
        Command::Datanet(c) => crate::datanet_cmd::run(&s, c)?,
        Command::Index(c) => crate::index_cmd::run(&s, c)?,
        Command::Attribute(a) => crate::index_cmd::run_attribute(&a)?,
        Command::Attribution(c) => crate::index_cmd::run_attribution(&s, c)?,
        Command::Model(c) => model(&s, c)?,
        Command::Adapter(c) => crate::adapter_cmd::run(&s, c)?,
        Command::Factory(c) => crate::factory_cmd::run(&s, c)?,
        Command::Inference(c) => inference(&s, c)?,
        Command::Rlhf(c) => crate::rlhf_cmd::run(&s, c)?,
        Command::Agent(c) => crate::agent_cmd::run(&s, c)?,
        Command::Stake(c) => crate::stake_cmd::run(&s, c)?,
        Command::Gov(c) => crate::gov_cmd::run(&s, c)?,
        Command::Sim(c) => crate::sim_cmd::run(&s, c)?,
        Command::ApiKey(c) => crate::openlora_cmd::api_key(&s, c)?,
        Command::Rewards(a) => crate::openlora_cmd::rewards(&s, a)?,
        Command::Demo(a) => {
            // The demo makes a fresh chain home unless --home names one.
            let home = (cli.home != crate::default_home()).then(|| cli.home.clone());
            crate::demo::run(home, a)?
        }
        Command::Params => {
            let out = s
                .rpc()?
                .view(modules::PARAMS, IParams::paramsJsonCall {}.abi_encode())?;
            let json = IParams::paramsJsonCall::abi_decode_returns(&out)?;
            let v: Value = serde_json::from_str(&json)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

/// Runs the node until `stop` completes (`openledger node`: Ctrl-C or SIGTERM; the demo: its
/// own signal), then seals what is pending and shuts down.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_node(
    s: &Session,
    dev: bool,
    rpc_addr: Option<std::net::SocketAddr>,
    block_time_ms: Option<u64>,
    model: Option<std::path::PathBuf>,
    device: Option<crate::ai::DeviceArg>,
    preload: Vec<String>,
    stop_when: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let home = &s.cli_home;
    let mut config = home.load_config()?;
    if model.is_some() {
        config.serve.model = model;
    }
    config.serve.preload.extend(preload);
    // The operator account that records paid calls, unlocked before anything listens.
    let operator = match &config.serve.operator {
        Some(name) => Some(s.unlock_named(name).with_context(|| {
            format!(
                "unlocking the OpenLoRA operator key {name:?} ([serve] operator in config.toml)"
            )
        })?),
        None => None,
    };
    // Loaded before anything listens, so a bad model file stops the node with its reason.
    let serve = open_serve(&config.serve, device)?;
    config.dev |= dev;
    if let Some(a) = rpc_addr {
        config.rpc_addr = a;
    }
    if let Some(b) = block_time_ms {
        config.block_time_ms = b;
    }
    let genesis = home.load_genesis()?;
    let chain = openledger_node::Chain::open(&home.db(), &genesis, true)?;
    let head = chain.head()?;
    let node = openledger_node::sequencer::Node::new(chain, config.clone(), &home.blobs())?;
    // Transactions acknowledged before a crash and not yet in a block go back into the pending
    // block; from here on each accepted transaction is journaled before it is acknowledged.
    let recovered = node.open_journal(&home.journal())?;
    if recovered > 0 {
        println!("recovered {recovered} acknowledged transactions from the journal");
    }
    // OpenLoRA's chain side: artifacts, adapters from the chain, API keys, receipts. Charged
    // calls journaled before a crash are recorded by the recorder below.
    let model_hash = match &config.serve.model {
        Some(p) if serve.is_some() => Some(crate::openlora_glue::model_hash(p)?),
        _ => None,
    };
    let openlora = openledger_node::openlora::OpenLora::open(
        node.clone(),
        &home.0.join("data").join("openlora"),
        operator,
        model_hash,
    )
    .map_err(anyhow::Error::msg)
    .context("opening OpenLoRA's state")?;
    if let Some(s) = &serve {
        s.set_ledger(std::sync::Arc::new(crate::openlora_glue::ChainLedger(
            openlora.clone(),
        )));
    }
    // ModelFactory jobs: the training thread resumes the job a stopped node was running.
    let factory = crate::factory_jobs::FactoryJobs::start(
        node.clone(),
        &config,
        &home.0.join("data").join("factory"),
    )
    .map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.rpc_addr)
            .await
            .with_context(|| {
                format!(
                    "binding JSON-RPC to {} (is another node running?)",
                    config.rpc_addr
                )
            })?;
        tracing::info!(
            chain_id = genesis.chain_id,
            head = head.header.number,
            rpc = %listener.local_addr()?,
            mode = if config.dev { "dev (block per request)" } else { "sequencer" },
            "openledger node started"
        );
        println!("listening on http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let seq = tokio::spawn(node.clone().run_sequencer(stop(rx.clone())));
        // Deletes staged uploads that no contribution references, after their TTL.
        let gc = tokio::spawn(openledger_node::datanets::run_gc(
            node.clone(),
            stop(rx.clone()),
        ));
        let extra = match &serve {
            Some(s) => {
                println!(
                    "serving {} through the OpenAI API at http://{}/v1{}",
                    s.model_id,
                    listener.local_addr()?,
                    match openlora.operator() {
                        Some(op) => format!(" (paid calls recorded by operator {op})"),
                        None => String::new(),
                    }
                );
                openledger_serve::router(s.clone())
            }
            None => axum_router(),
        }
        .merge(openledger_node::openlora::router(openlora.clone()))
        .merge(crate::factory_jobs::router(factory.clone()))
        .merge(crate::sim_routes::router(home.0.join("data").join("sim")))
        .merge(crate::factory_publish_route::router(
            node.clone(),
            openlora.clone(),
            home.0.join("data").join("factory").join("jobs"),
        ));
        let recorder = tokio::spawn(openlora.clone().run_recorder(stop(rx.clone())));
        if let Some(s) = &serve {
            let names = config.serve.preload.clone();
            let s = s.clone();
            tokio::spawn(async move {
                match s.preload(&names).await {
                    Ok(()) if !names.is_empty() => {
                        tracing::info!(adapters = ?names, "adapters preloaded")
                    }
                    Ok(()) => {}
                    Err(e) => tracing::error!(error = %e, "preloading adapters failed"),
                }
            });
        }
        let server = tokio::spawn(openledger_node::rpc::serve_with(
            node.clone(),
            listener,
            extra,
            stop(rx),
        ));
        stop_when.await;
        factory.stop();
        tracing::info!("shutting down: sealing pending transactions");
        let _ = tx.send(true);
        // The sequencer closes the node to new transactions before its final seal, so a
        // request still in flight is refused rather than acknowledged and dropped.
        let sealed = seq.await.context("the sequencer task failed")?;
        let _ = gc.await;
        let _ = server.await;
        let _ = recorder.await;
        factory.wait_stopped().await;
        sealed.context("stopping the node")?;
        anyhow::Ok(())
    })
}

/// An empty router (no inference API).
fn axum_router() -> openledger_node::rpc::Router {
    openledger_node::rpc::Router::new()
}

/// OpenLoRA for `[serve]`, when a model is configured.
fn open_serve(
    settings: &openledger_node::config::ServeSettings,
    device: Option<crate::ai::DeviceArg>,
) -> Result<Option<std::sync::Arc<openledger_serve::Serve>>> {
    let Some(path) = &settings.model else {
        return Ok(None);
    };
    let device = openledger_model::device::open(device.map(Into::into))?;
    let config = openledger_serve::ServeConfig {
        engine: openledger_serve::EngineConfig {
            max_batch: settings.max_batch.max(1),
            max_waiting: settings.max_waiting.max(1),
            max_active_adapters: settings.max_active_adapters.max(1),
            max_active_adapter_bytes: settings.max_active_adapter_mib.saturating_mul(1 << 20),
        },
        adapter_cache_bytes: settings.adapter_cache_mib.saturating_mul(1 << 20),
        allow_runtime_lora: settings.allow_runtime_lora,
        dlora: openledger_serve::dlora::DloraConfig {
            enabled: settings.dlora,
            merge_share: settings.dlora_merge_share,
            unmerge_share: settings.dlora_unmerge_share,
            ..Default::default()
        },
        ..openledger_serve::ServeConfig::default()
    };
    let shares = (settings.dlora_unmerge_share, settings.dlora_merge_share);
    if !(0.0 < shares.0 && shares.0 < shares.1 && shares.1 <= 1.0) {
        anyhow::bail!(
            "[serve] dlora_unmerge_share ({}) must be above 0 and below dlora_merge_share ({}), which must be at most 1",
            shares.0,
            shares.1
        );
    }
    let serve = openledger_serve::Serve::open(path, device, config)
        .with_context(|| format!("loading the model to serve, {}", path.display()))?;
    Ok(Some(serve))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn keys(s: &Session, k: KeysCmd) -> Result<()> {
    let dir = s.cli_home.keystore();
    match k {
        KeysCmd::New { name } => {
            let key = B256::from(rand::random::<[u8; 32]>());
            let pw = s.password(true)?;
            let a = wallet::store_key(&dir, &name, &key, &pw)?;
            println!("{name}  {a}");
        }
        KeysCmd::List => {
            for (name, path) in wallet::key_names(&dir)? {
                match wallet::key_address(&path) {
                    Ok(a) => println!("{name:<16} {a}"),
                    Err(e) => println!("{name:<16} unreadable: {e}"),
                }
            }
        }
        KeysCmd::Import { name, private_key } => {
            let key = match private_key {
                Some(k) => k,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim()
                        .parse::<B256>()
                        .context("expected a 32-byte hex private key on standard input")?
                }
            };
            let pw = s.password(true)?;
            let a = wallet::store_key(&dir, &name, &key, &pw)?;
            println!("{name}  {a}");
        }
        KeysCmd::Export { name, private_key } => {
            if private_key {
                let signer = if s.password.is_none() && s.password_file.is_none() {
                    wallet::load_key(&dir, &name, "")
                        .or_else(|_| wallet::load_key(&dir, &name, &s.password(false)?))?
                } else {
                    wallet::load_key(&dir, &name, &s.password(false)?)?
                };
                println!("{}", B256::from_slice(&signer.to_bytes()[..]));
            } else {
                let path = dir.join(&name);
                print!(
                    "{}",
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("no key named {name:?}"))?
                );
                println!();
            }
        }
    }
    Ok(())
}

pub(crate) fn text_arg(s: &str) -> Result<String> {
    match s.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
        None => Ok(s.to_string()),
    }
}

fn model(s: &Session, c: ModelCmd) -> Result<()> {
    let call = |data: Vec<u8>| s.call(modules::MODEL, U256::ZERO, data);
    match c {
        ModelCmd::RegisterBase { name, hash } => call(
            IModel::registerBaseModelCall {
                modelHash: hash,
                name,
            }
            .abi_encode(),
        ),
        ModelCmd::RegisterAdapter {
            name,
            base,
            datanets,
            config_hash,
            adapter_hash,
            index_root,
        } => call(
            IModel::registerAdapterCall {
                baseModelId: base,
                name,
                datanetIds: datanets.iter().map(|d| d.0).collect(),
                datanetVersions: datanets.iter().map(|d| d.1).collect(),
                trainingConfigHash: config_hash,
                adapterHash: adapter_hash,
                attributionIndexRoot: index_root,
            }
            .abi_encode(),
        ),
        ModelCmd::Show { id } => {
            let out = s.rpc()?.view(
                modules::MODEL,
                IModel::getBaseModelCall { modelId: id }.abi_encode(),
            )?;
            show(IModel::getBaseModelCall::abi_decode_returns(&out)?);
            Ok(())
        }
        ModelCmd::PublishAdapter(a) => crate::publish_adapter::run(s, a),
        ModelCmd::Proposals(c) => crate::proposal_cmd::run(s, c),
        ModelCmd::Adapter { id } => {
            let out = s.rpc()?.view(
                modules::MODEL,
                IModel::getAdapterCall { adapterId: id }.abi_encode(),
            )?;
            show(IModel::getAdapterCall::abi_decode_returns(&out)?);
            Ok(())
        }
    }
}

fn inference(s: &Session, c: InferenceCmd) -> Result<()> {
    let m = modules::INFERENCE;
    match c {
        InferenceCmd::Deposit { amount } => {
            s.call(m, amount, IInference::depositCall {}.abi_encode())
        }
        InferenceCmd::Withdraw { amount } => s.call(
            m,
            U256::ZERO,
            IInference::withdrawCall { amount }.abi_encode(),
        ),
        InferenceCmd::ApproveOperator {
            operator,
            allowance,
        } => s.call(
            m,
            U256::ZERO,
            IInference::approveOperatorCall {
                operator,
                allowance,
            }
            .abi_encode(),
        ),
        InferenceCmd::Record {
            caller,
            adapter,
            prompt_tokens,
            completion_tokens,
            attributions,
            attribution_root,
            attribution_file,
        } => {
            let (attributions, attribution_root) = match attribution_file {
                Some(path) => committed_attribution(&path)?,
                None => (attributions, attribution_root),
            };
            s.call(
                m,
                U256::ZERO,
                IInference::recordInferenceCall {
                    caller,
                    adapterId: adapter,
                    promptTokens: prompt_tokens,
                    completionTokens: completion_tokens,
                    top: attributions
                        .into_iter()
                        .map(|(c, w)| IInference::Attribution {
                            contributionId: c,
                            weightPpm: w,
                        })
                        .collect(),
                    attributionRoot: attribution_root,
                }
                .abi_encode(),
            )
        }
        InferenceCmd::Settle { receipts } => {
            if receipts.is_empty() {
                bail!("name at least one receipt id");
            }
            s.call(
                m,
                U256::ZERO,
                IInference::settleCall {
                    receiptIds: receipts,
                }
                .abi_encode(),
            )
        }
        InferenceCmd::Receipt { id } => {
            let out = s
                .rpc()?
                .view(m, IInference::getReceiptCall { receiptId: id }.abi_encode())?;
            show(IInference::getReceiptCall::abi_decode_returns(&out)?);
            Ok(())
        }
        InferenceCmd::Credit { who } => {
            let a = s.me_or(&who)?;
            let out = s
                .rpc()?
                .view(m, IInference::creditOfCall { account: a }.abi_encode())?;
            println!(
                "{a}: {} OPEN of inference credit",
                format_open(IInference::creditOfCall::abi_decode_returns(&out)?)
            );
            Ok(())
        }
    }
}
