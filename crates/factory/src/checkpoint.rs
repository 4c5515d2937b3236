//! Checkpoints: `checkpoints/step-NNNNNNNN/` holds the adapter (PEFT files), the optimizer state
//! (`optimizer.safetensors`) and `state.json` (step, epoch, the epoch's data order, the dropout
//! stream's position, early-stopping counters, the open logging window). A checkpoint is written to a
//! temporary directory and renamed, then `checkpoints/LATEST` names it, so a crash at any moment
//! leaves the previous checkpoint intact.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DIR: &str = "checkpoints";
pub const LATEST: &str = "LATEST";
pub const STATE_FILE: &str = "state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Where training stands: everything besides the weights and moments that a resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// The current epoch (0-based) and the steps of it done.
    pub epoch: u64,
    pub step_in_epoch: u64,
    /// The current epoch's order of the training examples (positions in the train split).
    pub epoch_order: Vec<usize>,
    /// Micro-batches run so far: the position of the dropout stream (masks derive from the seed
    /// and this counter).
    pub micro_batches: u64,
    pub seed: u64,
    pub best_val_loss: Option<f64>,
    pub best_step: Option<u64>,
    pub initial_val_loss: Option<f64>,
    pub last_val_loss: Option<f64>,
    pub evals_without_improvement: u64,
    /// Training loss summed over the steps since the last log line, and their count.
    pub window_loss: f64,
    pub window_steps: u64,
    pub last_train_loss: Option<f64>,
    pub tokens_seen: u64,
    /// Seconds spent training so far (across resumes).
    pub train_seconds: f64,
    /// Threads the run computed with (results are bit-identical only on the same count).
    pub threads: usize,
    /// Set once training ended (finished or stopped early).
    pub done: Option<String>,
}

/// The directory of the checkpoint at `step`.
pub fn step_dir(job: &Path, step: u64) -> PathBuf {
    job.join(DIR).join(format!("step-{step:08}"))
}

/// The newest complete checkpoint, if any.
pub fn latest(job: &Path) -> Result<Option<PathBuf>> {
    let f = job.join(DIR).join(LATEST);
    match std::fs::read_to_string(&f) {
        Ok(name) => {
            let dir = job.join(DIR).join(name.trim());
            if !dir.join(STATE_FILE).is_file() {
                return Err(Error::Checkpoint(format!(
                    "{} names {}, which is not a complete checkpoint",
                    f.display(),
                    dir.display()
                )));
            }
            Ok(Some(dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&f, e)),
    }
}

/// Writes a file through a temporary and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Publishes a filled temporary directory as the checkpoint of `step`, points `LATEST` at it and
/// removes the oldest beyond `keep`.
pub fn commit(job: &Path, tmp: &Path, step: u64, keep: usize) -> Result<PathBuf> {
    let dst = step_dir(job, step);
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
    }
    std::fs::rename(tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    let name = dst
        .file_name()
        .expect("a step dir has a name")
        .to_string_lossy()
        .into_owned();
    write_atomic(&job.join(DIR).join(LATEST), name.as_bytes())?;
    let mut steps: Vec<PathBuf> = std::fs::read_dir(job.join(DIR))
        .map_err(|e| Error::io(job.join(DIR), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    steps.sort();
    while steps.len() > keep {
        let old = steps.remove(0);
        if old != dst {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
    }
    Ok(dst)
}

/// A fresh temporary directory to fill with a checkpoint.
pub fn scratch(job: &Path, step: u64) -> Result<PathBuf> {
    let tmp = job.join(DIR).join(format!(".tmp-step-{step:08}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(tmp)
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let f = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint(format!("{}: not a training state: {e}", f.display())))
}
