//! `openledger sim calibrate`: measures the simulator's data-to-quality curve. It fine-tunes
//! the base model with ModelFactory on growing subsets of a datanet's rows (each subset
//! contains the smaller ones), evaluates every adapter on one fixed held-out validation set,
//! (its best validation loss over `--evals` evenly spaced passes, as early stopping would
//! keep), and fits validation loss L(n) = a + b·n^(-c) against the n rows trained on
//! (`openledger_sim::quality::fit`); the base model's loss on the same set is `base_loss`.
//!
//! The validation set is fixed by construction: each job's data file places the held-out rows
//! exactly where ModelFactory's seeded split takes its validation examples, and every job must
//! then report the same loss before training (checked). Writes into `--out`: `quality.toml`
//! (a scenario `[quality]` section, with the command that made it), `calibration.json` (the
//! points, the fit and the settings) and one ModelFactory job directory per size under `jobs/`.

use anyhow::{anyhow, bail, Context, Result};
use openledger_factory::{config::Method, rng::permutation, Job, NoProgress, TrainConfig};
use openledger_sim::{quality, scenario::Quality};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// What `sim calibrate` runs.
#[derive(clap::Args, Clone, Debug)]
pub struct CalibrateArgs {
    /// Rows to train on: JSONL files in the datanet export, alpaca or sharegpt formats, or
    /// directories of them (searched recursively, in name order). Default: the sample's 120
    /// rows the shipped fit was measured on, datanets/sample/alice.jsonl and datanets/sample/qa
    /// (not qa-facts/, the demo's planted-fact questions).
    #[arg(long = "data")]
    pub data: Vec<PathBuf>,
    /// Subset sizes, rows (each subset holds the smaller ones).
    #[arg(long, value_delimiter = ',', default_value = "6,12,24,48,96")]
    pub sizes: Vec<usize>,
    /// Rows held out for validation (the same set for every size).
    #[arg(long, default_value_t = 24)]
    pub val: usize,
    /// Passes over each subset.
    #[arg(long, default_value_t = 2.0)]
    pub epochs: f64,
    /// Optimizer steps per subset instead of --epochs (0: use --epochs).
    #[arg(long, default_value_t = 0)]
    pub steps: u64,
    /// Validation passes per subset, evenly spaced (the last after the last step); a subset's
    /// loss is the best of them, as early stopping would keep.
    #[arg(long, default_value_t = 3)]
    pub evals: u64,
    /// Base model (GGUF or a Hugging Face directory).
    #[arg(long, default_value = openledger_model::DEFAULT_MODEL_PATH)]
    pub base_model: PathBuf,
    /// `qlora` (quantized base, faster on CPU) or `lora`.
    #[arg(long, default_value = "qlora")]
    pub method: String,
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub cutoff: usize,
    /// Seed of the row order, the held-out set and training.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value = "sim-calibration")]
    pub out: PathBuf,
}

/// The JSONL files under `p` (itself when a file), in name order.
fn jsonl_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if p.is_file() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .with_context(|| format!("reading {} (a JSONL file or a directory)", p.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for e in entries {
        if e.is_dir() {
            jsonl_files(&e, out)?;
        } else if e.extension().is_some_and(|x| x == "jsonl") {
            out.push(e);
        }
    }
    Ok(())
}

/// Every non-empty line of the data, in order.
fn rows(paths: &[PathBuf]) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for p in paths {
        jsonl_files(p, &mut files)?;
    }
    if files.is_empty() {
        bail!("no .jsonl files in {paths:?}");
    }
    let mut rows = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            serde_json::from_str::<Value>(line)
                .with_context(|| format!("{} line {}: not JSON", f.display(), i + 1))?;
            rows.push(line.to_string());
        }
    }
    Ok(rows)
}

/// One measured point.
struct Point {
    rows: usize,
    initial_val_loss: f64,
    val_loss: f64,
    steps: u64,
    seconds: f64,
}

/// Runs the calibration; `command` is the command line recorded with the fit.
pub fn run(a: &CalibrateArgs, command: &str) -> Result<Quality> {
    let data = if a.data.is_empty() {
        vec![
            PathBuf::from("datanets/sample/alice.jsonl"),
            PathBuf::from("datanets/sample/qa"),
        ]
    } else {
        a.data.clone()
    };
    let all = rows(&data)?;
    let mut sizes = a.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let largest = *sizes.last().ok_or_else(|| anyhow!("--sizes is empty"))?;
    if sizes[0] == 0 || a.val == 0 || largest + a.val > all.len() {
        bail!(
            "{} rows in {data:?}: need --val ({}) + the largest --sizes ({largest}) of them, sizes >= 1",
            all.len(),
            a.val
        );
    }
    let method = match a.method.as_str() {
        "qlora" => Method::Qlora,
        "lora" => Method::Lora,
        m => bail!("--method is lora or qlora, got {m:?}"),
    };
    // A seeded order of the rows: the first `val` are held out, the rest train in that order.
    let order = permutation(all.len(), a.seed, "calibrate", &[]);
    let (val, pool): (Vec<&String>, Vec<&String>) = {
        let v: Vec<&String> = order[..a.val].iter().map(|&i| &all[i]).collect();
        let p: Vec<&String> = order[a.val..].iter().map(|&i| &all[i]).collect();
        (v, p)
    };
    std::fs::create_dir_all(a.out.join("jobs"))
        .with_context(|| format!("creating {}", a.out.display()))?;
    let mut points = Vec::new();
    for &n in &sizes {
        let dir = a.out.join("jobs").join(format!("n-{n:05}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        // Place the held-out rows where the factory's split takes its validation examples.
        let total = a.val + n;
        let split = permutation(total, a.seed, "split", &[]);
        let mut is_val = vec![false; total];
        for &i in &split[..a.val] {
            is_val[i] = true;
        }
        let (mut vi, mut ti) = (val.iter(), pool[..n].iter());
        let mut text = String::new();
        for v in is_val {
            let row = if v { vi.next() } else { ti.next() };
            text.push_str(row.ok_or_else(|| anyhow!("internal: row placement"))?);
            text.push('\n');
        }
        let file = dir.join("rows.jsonl");
        std::fs::write(&file, text)?;
        let config = TrainConfig {
            method,
            base_model: a.base_model.clone(),
            datasets: vec![openledger_factory::config::DatasetSpec {
                path: file.canonicalize()?,
                format: Default::default(),
                datanet: None,
            }],
            learning_rate: a.learning_rate,
            num_train_epochs: a.epochs,
            max_steps: a.steps,
            per_device_train_batch_size: a.batch,
            gradient_accumulation_steps: 1,
            cutoff_len: a.cutoff,
            val_size: a.val as f64,
            seed: a.seed,
            eval_steps: {
                let steps = if a.steps > 0 {
                    a.steps
                } else {
                    (n.div_ceil(a.batch) as f64 * a.epochs).ceil() as u64
                };
                (steps / a.evals.max(1)).max(1)
            },
            save_steps: 1_000_000,
            save_total_limit: 1,
            logging_steps: 1_000_000,
            sample_prompts: 0,
            ..TrainConfig::default()
        };
        let t = std::time::Instant::now();
        let mut job = Job::prepare(config, &dir.join("job"))
            .map_err(|e| anyhow!("preparing the job for {n} rows: {e}"))?;
        if job.split_sizes() != (n, a.val) || job.rejected_rows() > 0 {
            bail!(
                "the job for {n} rows split {:?} with {} rows rejected; every row must train (check the data)",
                job.split_sizes(),
                job.rejected_rows()
            );
        }
        let out = job
            .run(&NoProgress, &AtomicBool::new(false))
            .map_err(|e| anyhow!("training on {n} rows: {e}"))?;
        let m = out.metrics;
        let (Some(initial), Some(loss)) = (m.initial_val_loss, m.best_val_loss) else {
            bail!("the job for {n} rows reported no validation loss");
        };
        let p = Point {
            rows: n,
            initial_val_loss: initial,
            val_loss: loss,
            steps: m.steps,
            seconds: t.elapsed().as_secs_f64(),
        };
        eprintln!(
            "{n} rows: validation loss {initial:.4} -> {loss:.4} after {} steps ({:.1} s)",
            p.steps, p.seconds
        );
        if let Some(first) = points.first() {
            let f: &Point = first;
            if (f.initial_val_loss - initial).abs() > 1e-4 * initial.abs().max(1.0) {
                bail!(
                    "the validation set moved: the base model's loss was {} with {} rows and {initial} with {n}",
                    f.initial_val_loss,
                    f.rows
                );
            }
        }
        points.push(p);
    }
    let base = points[0].initial_val_loss;
    let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.rows as f64, p.val_loss)).collect();
    let q = quality::fit(&xy, base).map_err(|e| anyhow!("fitting L(n) = a + b·n^(-c): {e}"))?;
    let toml = format!(
        "# The data-to-quality curve measured by `openledger sim calibrate`: validation loss\n\
         # L(n) = a + b * n^(-c) after fine-tuning on n accepted rows; base_loss is the base\n\
         # model's loss on the same held-out rows. Reproduce with:\n\
         #   {command}\n\
         # Points (rows: validation loss): {}\n\
         [quality]\na = {}\nb = {}\nc = {}\nbase_loss = {}\n",
        points
            .iter()
            .map(|p| format!("{}: {:.4}", p.rows, p.val_loss))
            .collect::<Vec<_>>()
            .join(", "),
        q.a,
        q.b,
        q.c,
        q.base_loss
    );
    std::fs::write(a.out.join("quality.toml"), &toml)?;
    let report = json!({
        "form": "L(n) = a + b * n^(-c)",
        "fit": q,
        "command": command,
        "data": data,
        "rows_available": all.len(),
        "validation_rows": a.val,
        "settings": {
            "method": a.method, "epochs": a.epochs, "steps": a.steps, "evals": a.evals, "learning_rate": a.learning_rate,
            "batch": a.batch, "cutoff": a.cutoff, "seed": a.seed, "base_model": a.base_model,
        },
        "points": points.iter().map(|p| json!({
            "rows": p.rows, "val_loss": p.val_loss, "initial_val_loss": p.initial_val_loss,
            "steps": p.steps, "seconds": p.seconds,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        a.out.join("calibration.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    Ok(q)
}
