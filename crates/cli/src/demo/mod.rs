//! `openledger demo`: the whole flywheel on a fresh dev chain, in one process. An embedded node
//! (the same code as `openledger node`, serving SmolLM2 through OpenLoRA) runs on 127.0.0.1; named
//! accounts build a datanet from `datanets/sample` (with a refused file, a duplicate upload and a
//! contribution the owner rejects), a model builder fine-tunes a LoRA adapter with ModelFactory
//! until it answers the planted-fact questions and publishes it with its provenance, an app asks
//! those questions over the OpenAI API (each generated answer attributed, receipted and settled),
//! stakers vote to raise the contributors' share and a second round shows the change, RLHF
//! validators rate an answer, and a flywheel simulation starts from the chain's state. It
//! writes `report.json` and a self-contained `report.html`, and fails (non-zero exit, naming the
//! step) as soon as a step does not do what it should.
//!
//! Steps live in their own files: [`accounts`], [`datanet`], [`train`] (with the learning check
//! in [`learning`]), [`serve`], [`governance`], [`checks`], [`sim`]; the report in [`report`] and
//! [`html`]; the node in [`node`]; Ctrl-C in [`interrupt`].

mod accounts;
mod checks;
mod datanet;
mod governance;
mod html;
mod interrupt;
mod learning;
mod node;
mod report;
mod serve;
mod sim;
mod train;

use crate::wallet::{self, Rpc};
use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `openledger demo` options.
#[derive(clap::Args)]
#[command(after_help = "\
The demo runs in a fresh temporary chain home, removed at the end or on Ctrl-C (pass the global \
--home, or set OPENLEDGER_HOME, to keep it; it must not hold a chain yet). It needs SmolLM2 in models/ (./scripts/fetch-model) and the sample datanet \
in datanets/sample (run it from the repository root, or pass --sample and --model). \
It exits non-zero, naming the step, when training did not teach the adapter to answer a planted-fact \
question (its greedy answer does not state the fact, or the fact is not at least 0.5 nats/token more \
likely as the answer than under the base model), when an answer is not attributed to the contributor whose \
fact it states, when a refused or duplicate contributor earns anything, when an accepted \
contributor whose data answered earns nothing, or when round two's contributor share did not rise.")]
pub struct DemoArgs {
    /// Port of the embedded node's JSON-RPC and OpenAI API on 127.0.0.1 (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Where report.html, report.json and the simulation's report are written.
    #[arg(long, default_value = "demo-report")]
    out: PathBuf,
    /// The base model to fine-tune and serve (GGUF).
    #[arg(long, env = "OPENLEDGER_MODEL", default_value = openledger_model::DEFAULT_MODEL_PATH)]
    model: PathBuf,
    /// The sample datanet folder (alice.jsonl, bob.txt, carol.md, dave.csv, qa/erin.jsonl,
    /// qa-facts/NAME.jsonl).
    #[arg(long, default_value = "datanets/sample")]
    sample: PathBuf,
    /// The flywheel scenario simulated from the chain's state at the end.
    #[arg(long, default_value = "scenarios/quick.toml")]
    scenario: PathBuf,
    /// Days simulated (default: the scenario's).
    #[arg(long)]
    sim_days: Option<u64>,
    /// Training steps in the first round (each further round trains twice as long, from the start).
    #[arg(long, default_value_t = 32)]
    round_steps: u64,
    /// Most training steps in all rounds together; the demo fails if the adapter still has not
    /// learned every asked planted fact by then.
    #[arg(long, default_value_t = 96)]
    max_train_steps: u64,
}

/// What every step works with: the chain home, the node's URL, the named accounts, the report.
pub(crate) struct Ctx {
    pub home: PathBuf,
    pub url: String,
    pub args: DemoArgs,
    pub started: Instant,
    pub accounts: accounts::Accounts,
    pub report: report::Report,
    step: usize,
}

/// Number of steps printed as `[n/STEPS]`.
const STEPS: usize = 9;

impl Ctx {
    /// Prints a step's header line with the time since the start.
    pub fn step(&mut self, name: &str) -> Result<()> {
        interrupt::check()?;
        self.step += 1;
        println!(
            "\n\x1b[1m== [{}/{STEPS}] {name}\x1b[0m  (t = {:.1} s)",
            self.step,
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Runs an `openledger` command line in this process against the demo's node, signed by
    /// `from` when given (what the user would type; its output is part of the demo's).
    pub fn ol(&self, from: Option<&str>, args: &[&str]) -> Result<()> {
        interrupt::check()?;
        let mut argv: Vec<String> = vec![
            "openledger".into(),
            "--home".into(),
            self.home.display().to_string(),
            "--rpc".into(),
            self.url.clone(),
            "--password".into(),
            String::new(),
        ];
        if let Some(f) = from {
            argv.push("--from".into());
            argv.push(f.into());
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        let cli = <crate::Cli as clap::Parser>::try_parse_from(&argv)
            .map_err(|e| anyhow!("internal: `{}` does not parse: {e}", argv[7..].join(" ")))?;
        crate::commands::run(cli).with_context(|| {
            format!(
                "`openledger{} {}`",
                from.map(|f| format!(" --from {f}")).unwrap_or_default(),
                args.join(" ")
            )
        })
    }

    /// A JSON-RPC client of the node.
    pub fn rpc(&self) -> Rpc {
        Rpc {
            url: self.url.clone(),
        }
    }

    /// The key of a named account (dev keys and the demo's keys have an empty password).
    pub fn signer(&self, name: &str) -> Result<PrivateKeySigner> {
        wallet::load_key(&self.home.join("keystore"), name, "")
    }

    /// Signs and sends a module call (or a plain transfer) from a named account.
    pub fn send(&self, from: &str, to: Address, value: U256, data: Vec<u8>) -> Result<()> {
        interrupt::check()?;
        self.rpc().send(&self.signer(from)?, to, value, data)?;
        Ok(())
    }

    /// A module view, decoded.
    pub fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return> {
        let out = self.rpc().view(to, call.abi_encode())?;
        C::abi_decode_returns(&out).with_context(|| format!("decoding the answer of {to}"))
    }

    /// An account's OPEN balance in wei.
    pub fn balance(&self, who: Address) -> Result<U256> {
        let v = self
            .rpc()
            .call("eth_getBalance", serde_json::json!([who, "latest"]))?;
        serde_json::from_value(v).context("reading a balance")
    }

    /// A session of the node for the CLI's library functions.
    pub fn session(&self) -> crate::commands::Session {
        crate::commands::Session::new(self.home.clone(), Some(self.url.clone()))
    }
}

/// The chain home given on the command line (`--home`, even when it equals the default) or
/// in OPENLEDGER_HOME, read from `argv` with clap's value source; None when it is the default.
fn given_home<I, T>(argv: I) -> Option<PathBuf>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = <crate::Cli as clap::CommandFactory>::command()
        .try_get_matches_from(argv)
        .ok()?;
    match m.value_source("home")? {
        clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable => {
            m.get_one::<PathBuf>("home").cloned()
        }
        _ => None,
    }
}

/// Runs `openledger demo`: `home` is the --home given, if any (the caller cannot tell one equal
/// to the default from none: this process's command line says).
pub fn run(home: Option<PathBuf>, args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    check_inputs(&args)?;
    let home = home.or_else(|| given_home(std::env::args_os()));
    let (home, temp) = match home {
        Some(h) => (h, None),
        None => {
            let t = TempHome::new()?;
            (t.0.clone(), Some(t))
        }
    };
    interrupt::install(temp.as_ref().map(|t| t.0.clone()))?;
    println!(
        "openledger demo: chain home {}{}",
        home.display(),
        if temp.is_some() {
            " (temporary, removed at the end)"
        } else {
            ""
        }
    );
    let outcome = run_in(home, args, started);
    if interrupt::interrupted() {
        interrupt::remove_temp_home();
        drop(temp);
        match &outcome {
            Err(e) => eprintln!("openledger demo: stopped: {e:#}"),
            Ok(()) => eprintln!("openledger demo: interrupted after its last step"),
        }
        std::process::exit(interrupt::EXIT_STATUS);
    }
    drop(temp);
    outcome
}

/// The demo in chain home `home`: the node, every step, the report.
fn run_in(home: PathBuf, args: DemoArgs, started: Instant) -> Result<()> {
    let model = args
        .model
        .canonicalize()
        .with_context(|| format!("resolving {}", args.model.display()))?;
    let node = node::EmbeddedNode::start(&home, &model, args.port)?;
    let mut ctx = Ctx {
        home,
        url: node.url.clone(),
        args,
        started,
        accounts: accounts::Accounts::default(),
        report: report::Report::default(),
        step: 0,
    };
    let outcome = steps(&mut ctx, &model);
    // The node stops (sealing what is pending) whatever happened.
    let stopped = node.stop();
    if interrupt::interrupted() {
        match &stopped {
            Ok(()) => eprintln!("openledger demo: the embedded node stopped"),
            Err(e) => eprintln!("openledger demo: stopping the embedded node: {e:#}"),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    ctx.report.wall_seconds = wall;
    ctx.report.ok = outcome.is_ok();
    if let Err(e) = &outcome {
        ctx.report.failure = Some(format!("{e:#}"));
    }
    // The report is written even when a step failed, so the failure can be read in it.
    let written = report::write(&ctx.args.out, &ctx.report);
    outcome?;
    stopped?;
    written?;
    println!(
        "\ndemo finished in {wall:.1} s: {} and {}",
        ctx.args.out.join("report.html").display(),
        ctx.args.out.join("report.json").display()
    );
    Ok(())
}

/// Refuses to start when an input is missing, saying how to get it.
fn check_inputs(args: &DemoArgs) -> Result<()> {
    if !args.model.is_file() {
        anyhow::bail!(
            "the demo needs the base model {} (SmolLM2-135M-Instruct): run ./scripts/fetch-model \
             from the repository root, or pass --model FILE.gguf",
            args.model.display()
        );
    }
    for f in datanet::SAMPLE_FILES {
        let p = args.sample.join(f);
        if !p.is_file() {
            anyhow::bail!(
                "the demo needs the sample datanet file {} (run it from the repository root, or \
                 pass --sample DIR)",
                p.display()
            );
        }
    }
    if args.round_steps == 0 || args.max_train_steps < args.round_steps {
        anyhow::bail!("--round-steps must be at least 1 and at most --max-train-steps");
    }
    Ok(())
}

/// Every step in order; the first failure ends the demo with the step's name.
fn steps(ctx: &mut Ctx, model: &Path) -> Result<()> {
    ctx.step("accounts: a datanet owner, contributors, a model builder, an app, stakers, RLHF validators")?;
    accounts::create(ctx).context("step accounts")?;
    ctx.step("datanets: contributions from the sample, a refused file, a duplicate, a rejection; the facts' questions")?;
    datanet::build(ctx).context("step datanet")?;
    ctx.step("ModelFactory: LoRA fine-tune in rounds until the adapter answers the planted-fact questions")?;
    let job = train::train(ctx, model).context("step train")?;
    ctx.step("publish the adapter with its provenance; stake; an app gets an API key")?;
    serve::publish_and_prepare(ctx, &job, model).context("step publish")?;
    ctx.step(
        "round one: the app asks over the OpenAI API; answers attributed, receipted, settled",
    )?;
    serve::round(ctx, 1).context("step round one")?;
    ctx.step("governance: raise the contributors' share (and an RLHF round on an answer)")?;
    governance::run(ctx).context("step governance")?;
    ctx.step("round two: the same questions under the new split")?;
    serve::round(ctx, 2).context("step round two")?;
    ctx.step("checks: who earned what")?;
    checks::check_rewards(ctx).context("step checks")?;
    ctx.step("flywheel simulation from the chain's state")?;
    sim::run(ctx).context("step simulation")?;
    Ok(())
}

/// A temporary chain home, deleted when dropped.
struct TempHome(PathBuf);

impl TempHome {
    fn new() -> Result<TempHome> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let p = base.join(format!("openledger-demo-{:016x}", rand::random::<u64>()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempHome(p));
            }
        }
        Err(anyhow!(
            "cannot create a temporary chain home in {}",
            base.display()
        ))
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_given_on_the_command_line_is_used_even_when_it_is_the_default() {
        let default = crate::default_home();
        let argv = [
            "openledger".into(),
            "--home".into(),
            default.clone().into_os_string(),
            "demo".into(),
        ];
        assert_eq!(given_home(argv.iter().cloned()), Some(default));
        let argv: [std::ffi::OsString; 3] =
            ["openledger".into(), "demo".into(), "--home=/tmp/x".into()];
        assert_eq!(given_home(argv), Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn no_home_flag_means_a_temporary_home() {
        // Unless OPENLEDGER_HOME names one (then that is given).
        let env = std::env::var_os("OPENLEDGER_HOME").map(PathBuf::from);
        assert_eq!(given_home(["openledger", "demo"]), env);
    }
}
