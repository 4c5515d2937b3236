//! `openledger factory train`: fine-tunes a LoRA adapter (`openledger_factory`) on datanet versions,
//! exported from the node (which checks the access grant of a permissioned datanet before any row
//! is read), and on local files (datanet rows, LLaMA-Factory alpaca or sharegpt). Every knob has a
//! flag, or comes from a TOML `--config` (flags win); the job writes its complete config back out.
//! Ctrl-C stops at the end of the current step with a checkpoint; `--resume JOB_DIR` continues.
//! `openledger factory publish` registers a finished job's adapter on chain ([`publish`]);
//! `openledger factory chat` talks to it in the terminal. `openledger factory submit | jobs |
//! cancel` queue, watch and cancel training jobs on the node ([`jobs`]).

mod jobs;
pub(crate) mod publish;

use crate::commands::Session;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use openledger_factory::config::{DatasetSpec, Format, Method, Scheduler, TrainConfig};
use openledger_factory::{Job, TerminalProgress};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Subcommand)]
pub enum FactoryCmd {
    /// Fine-tune a LoRA adapter on datanet versions and local files.
    Train(Box<TrainArgs>),
    /// Register a finished job's adapter on chain, with the attribution index of the datanet
    /// versions it trained on and its config and metrics as the training config; prints its id.
    Publish(publish::PublishArgs),
    /// Chat in the terminal with a job's adapter (or any PEFT adapter directory) on its base model.
    Chat(Box<ChatArgs>),
    /// Queue a training job on the node (signed by --from; the node trains on datanets only).
    Submit(jobs::SubmitArgs),
    /// The node's training jobs; with an id, one job's details or (--follow) its progress.
    Jobs(jobs::JobsArgs),
    /// Cancel a job on the node (its submitter or a node operator).
    Cancel(jobs::CancelArgs),
}

#[derive(Args)]
pub struct ChatArgs {
    /// A job directory (its final adapter on its base model) or a PEFT adapter directory.
    adapter: PathBuf,
    /// The base model (default: the job's; for a PEFT directory, the default model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// With a job directory: the adapter at the best validation loss (adapter-best/).
    #[arg(long)]
    best: bool,
    /// Worker threads for the matrix kernels (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, env = "OPENLEDGER_DEVICE", value_enum)]
    device: Option<crate::ai::DeviceArg>,
    #[command(flatten)]
    sampling: crate::ai::SamplingArgs,
    /// System message.
    #[arg(long)]
    system: Option<String>,
}

impl ChatArgs {
    /// The model and adapter to load: a job directory's adapter on the job's base model, or a
    /// PEFT directory on --model.
    fn model_args(&self) -> Result<crate::ai::ModelArgs> {
        let config = self.adapter.join(openledger_factory::CONFIG_FILE);
        let (model, adapter) = if config.is_file() {
            let c = TrainConfig::from_toml_file(&config)?;
            let name = if self.best {
                openledger_factory::BEST_ADAPTER_DIR
            } else {
                openledger_factory::ADAPTER_DIR
            };
            let adapter = self.adapter.join(name);
            if !adapter.is_dir() {
                bail!(
                    "{} has no {name}/: the job has not finished{} (`openledger factory train --resume {}`)",
                    self.adapter.display(),
                    if self.best { " or had no validation set" } else { "" },
                    self.adapter.display()
                );
            }
            (self.model.clone().unwrap_or(c.base_model), adapter)
        } else if self.best {
            bail!(
                "--best needs a job directory; {} is not one (no {})",
                self.adapter.display(),
                openledger_factory::CONFIG_FILE
            );
        } else {
            let model = self.model.clone().unwrap_or_else(|| {
                std::env::var_os("OPENLEDGER_MODEL")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| openledger_model::DEFAULT_MODEL_PATH.into())
            });
            (model, self.adapter.clone())
        };
        Ok(crate::ai::ModelArgs {
            model,
            adapter: Some(adapter),
            threads: self.threads,
            device: self.device,
        })
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Continue the job in this directory from its last checkpoint (other flags are ignored).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// All settings as TOML (LLaMA-Factory names: lora_rank, learning_rate, …); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Base model: a GGUF file or a Hugging Face model directory.
    #[arg(long, env = "OPENLEDGER_MODEL")]
    base: Option<PathBuf>,
    /// A datanet version to train on, ID@VERSION (ID alone: the latest); repeatable.
    #[arg(long = "datanet")]
    datanets: Vec<String>,
    /// A local data file (JSONL or a JSON array: datanet rows, alpaca or sharegpt); repeatable.
    #[arg(long = "data")]
    data: Vec<PathBuf>,
    /// lora, or qlora (quantized base).
    #[arg(long, value_parser = parse_method)]
    method: Option<Method>,
    /// Job directory (default: <home>/factory/job-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    lora_rank: Option<usize>,
    #[arg(long)]
    lora_alpha: Option<f64>,
    #[arg(long)]
    lora_dropout: Option<f64>,
    /// all, or projections: q,k,v,o,gate,up,down.
    #[arg(long)]
    lora_target: Option<String>,
    #[arg(long)]
    use_rslora: bool,
    #[arg(long)]
    lr: Option<f64>,
    /// cosine, linear or constant.
    #[arg(long, value_parser = parse_scheduler)]
    lr_scheduler: Option<Scheduler>,
    #[arg(long)]
    warmup_steps: Option<u64>,
    #[arg(long)]
    epochs: Option<f64>,
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    cutoff_len: Option<usize>,
    /// Held out for validation: a fraction in [0, 1) or a number of examples.
    #[arg(long)]
    val_size: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    max_grad_norm: Option<f64>,
    #[arg(long)]
    packing: bool,
    #[arg(long)]
    save_steps: Option<u64>,
    #[arg(long)]
    eval_steps: Option<u64>,
    #[arg(long)]
    early_stopping_patience: Option<u64>,
}

fn parse_method(s: &str) -> Result<Method, String> {
    match s {
        "lora" => Ok(Method::Lora),
        "qlora" => Ok(Method::Qlora),
        _ => Err(format!("{s:?}: use lora or qlora")),
    }
}

fn parse_scheduler(s: &str) -> Result<Scheduler, String> {
    match s {
        "cosine" => Ok(Scheduler::Cosine),
        "linear" => Ok(Scheduler::Linear),
        "constant" => Ok(Scheduler::Constant),
        _ => Err(format!("{s:?}: use cosine, linear or constant")),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

/// First Ctrl-C: stop after the current step (with a checkpoint); second: exit at once.
fn stop_on_ctrl_c() {
    #[cfg(unix)]
    {
        extern "C" fn on_sigint(_: libc::c_int) {
            if STOP.swap(true, Ordering::SeqCst) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(130) };
            }
        }
        // SAFETY: the handler only touches an atomic and calls _exit.
        unsafe {
            libc::signal(
                libc::SIGINT,
                on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

impl TrainArgs {
    /// The config: `--config` (or the defaults), then each flag given.
    fn config(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_toml_file(p)?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($flag:ident => $field:ident),*) => {$(if let Some(v) = self.$flag.clone() { c.$field = v; })*};
        }
        set!(base => base_model, method => method, lora_rank => lora_rank, lora_alpha => lora_alpha,
            lora_dropout => lora_dropout, lora_target => lora_target, lr => learning_rate,
            lr_scheduler => lr_scheduler_type, warmup_steps => warmup_steps, epochs => num_train_epochs,
            max_steps => max_steps, batch_size => per_device_train_batch_size,
            grad_accum => gradient_accumulation_steps, cutoff_len => cutoff_len, val_size => val_size,
            seed => seed, max_grad_norm => max_grad_norm, save_steps => save_steps,
            eval_steps => eval_steps, early_stopping_patience => early_stopping_patience);
        c.use_rslora |= self.use_rslora;
        c.packing |= self.packing;
        for p in &self.data {
            c.datasets.push(DatasetSpec {
                path: p.clone(),
                format: Format::Auto,
                datanet: None,
            });
        }
        Ok(c)
    }
}

/// `ID@VERSION` (or `ID`, version 0 = the latest) as numbers.
fn parse_datanet(s: &str) -> Result<(u64, u64)> {
    let (id, v) = s.split_once('@').unwrap_or((s, "0"));
    let id = id
        .trim()
        .parse()
        .with_context(|| format!("--datanet {s}: expected ID@VERSION"))?;
    let v = v
        .trim()
        .parse()
        .with_context(|| format!("--datanet {s}: expected ID@VERSION"))?;
    Ok((id, v))
}

/// The latest version of datanet `id`, so that the job records the version it trained on.
fn latest_version(rest: &crate::rest::Rest, id: u64) -> Result<u64> {
    let d: openledger_node::datanets::views::DatanetView = rest
        .get(&format!("/v1/datanets/{id}"))
        .with_context(|| format!("datanet {id}"))?;
    if d.version_count == 0 {
        bail!("datanet {id} has no version yet: approve a contribution first");
    }
    Ok(d.version_count)
}

/// Exports each datanet version from the node into `dir` (the node refuses a version the --from
/// key may not read, before sending any row).
fn download(s: &Session, datanets: &[(u64, u64)], dir: &Path) -> Result<Vec<DatasetSpec>> {
    if datanets.is_empty() {
        return Ok(Vec::new());
    }
    let rest = s.rest(true)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut specs = Vec::new();
    for &(id, version) in datanets {
        let version = match version {
            0 => latest_version(&rest, id)?,
            v => v,
        };
        let path = dir.join(format!("{id}@{version}.jsonl"));
        let tmp = path.with_extension("partial");
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?,
        );
        rest.get_to(
            &format!("/v1/datanets/{id}/export?version={version}"),
            &mut file,
        )
        .with_context(|| format!("exporting datanet {id} version {version}"))?;
        drop(file);
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        specs.push(DatasetSpec {
            path,
            format: Format::Datanet,
            datanet: Some(format!("{id}@{version}")),
        });
    }
    Ok(specs)
}

pub fn run(s: &Session, c: FactoryCmd) -> Result<()> {
    let args = match c {
        FactoryCmd::Train(args) => args,
        FactoryCmd::Publish(a) => return publish::run(s, a),
        FactoryCmd::Chat(a) => {
            return crate::ai::run_chat(&a.model_args()?, &a.sampling, a.system.clone())
        }
        FactoryCmd::Submit(a) => return jobs::submit(s, &a),
        FactoryCmd::Jobs(a) => return jobs::jobs(s, &a),
        FactoryCmd::Cancel(a) => return jobs::cancel(s, &a),
    };
    stop_on_ctrl_c();
    let mut job = match &args.resume {
        Some(dir) => Job::resume(dir)?,
        None => {
            let mut config = args.config()?;
            let datanets: Vec<(u64, u64)> = args
                .datanets
                .iter()
                .map(|d| parse_datanet(d))
                .collect::<Result<_>>()?;
            if config.datasets.is_empty() && datanets.is_empty() {
                bail!("nothing to train on: pass --datanet ID@VERSION or --data FILE (or datasets in --config)");
            }
            // Settings are checked before anything is downloaded (a placeholder stands in for the data).
            let mut probe = config.clone();
            probe.datasets.push(DatasetSpec {
                path: "-".into(),
                format: Format::Auto,
                datanet: None,
            });
            probe.check()?;
            let out = match &args.out {
                Some(o) => o.clone(),
                None => {
                    let secs = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    s.cli_home.0.join("factory").join(format!("job-{secs}"))
                }
            };
            let existed = out.exists();
            let prepared = download(s, &datanets, &out.join("datanets")).and_then(|specs| {
                config.datasets.extend(specs);
                Ok(Job::prepare(config, &out)?)
            });
            match prepared {
                Ok(job) => job,
                Err(e) => {
                    // A refused job leaves nothing behind.
                    if existed {
                        let _ = std::fs::remove_dir_all(out.join("datanets"));
                    } else {
                        let _ = std::fs::remove_dir_all(&out);
                    }
                    return Err(e);
                }
            }
        }
    };
    eprintln!("job directory: {}", job.dir().display());
    let outcome = job.run(&TerminalProgress::new(), &STOP)?;
    let m = &outcome.metrics;
    match &outcome.adapter_dir {
        Some(a) => println!("adapter: {}", a.display()),
        None => println!(
            "stopped at step {}: resume with `openledger factory train --resume {}`",
            m.steps,
            job.dir().display()
        ),
    }
    println!("{}", serde_json::to_string_pretty(m)?);
    Ok(())
}
