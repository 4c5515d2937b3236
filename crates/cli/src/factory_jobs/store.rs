//! What the node keeps of each training job on disk, under `<home>/data/factory/jobs/<id>/`:
//!
//! ```text
//! status.json       the job's record (status, submitter, progress), rewritten atomically
//! submission.json   what was accepted: the config (datasets left out) and the datanet versions
//! datanets/         the versions' rows, exported from the node's own store when the job starts
//! train/            the trainer's job directory (config.toml, log.jsonl, checkpoints/, adapter/ …)
//! ```
//!
//! `status.json` is written last when a job is created, so a directory without one was never
//! acknowledged and is ignored. A node restart reads every record back: queued jobs queue
//! again in id order, and a job that was running resumes from its last checkpoint.

use alloy_primitives::Address;
use openledger_factory::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATUS_FILE: &str = "status.json";
pub const SUBMISSION_FILE: &str = "submission.json";
pub const EXPORTS_DIR: &str = "datanets";
pub const TRAIN_DIR: &str = "train";

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended (nothing more will happen to it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// A datanet version a job trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatanetVersion {
    pub id: u64,
    pub version: u64,
}

impl std::fmt::Display for DatanetVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

/// A job's record (`status.json`); also what `GET /v1/factory/jobs` lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub status: JobStatus,
    /// The account whose signed request submitted the job (its datanet grants are checked).
    pub submitter: Address,
    /// Unix seconds.
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<u64>,
    /// Optimizer steps done (live while running; the last checkpoint's after a restart).
    pub step: u64,
    /// Known once the job's data is prepared.
    pub total_steps: Option<u64>,
    /// The latest training loss.
    pub loss: Option<f64>,
    pub datanets: Vec<DatanetVersion>,
    /// The base model's file (or directory) name.
    pub base_model: String,
    /// The checkpoint step a restarted node resumed the job from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
    /// `finished` or `early_stopped`, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A cancel was asked for while it runs (it stops at the end of the current step).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelling: bool,
}

/// What was accepted (`submission.json`): the checked config with the base model resolved to
/// its path on this node, and the datanet versions (datasets are filled in from the exports).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submission {
    pub config: TrainConfig,
    pub datanets: Vec<DatanetVersion>,
}

/// The jobs directory.
pub struct Store {
    dir: PathBuf,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// The directory of a job's file, for messages.
fn e_dir(file: &Path) -> String {
    file.parent().unwrap_or(file).display().to_string()
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("writing", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("writing", path, e))
}

impl Store {
    /// Opens (creating) the jobs directory.
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn job_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    pub fn train_dir(&self, id: u64) -> PathBuf {
        self.job_dir(id).join(TRAIN_DIR)
    }

    pub fn exports_dir(&self, id: u64) -> PathBuf {
        self.job_dir(id).join(EXPORTS_DIR)
    }

    /// Every job acknowledged so far, by id, and the next free id.
    pub fn load(&self) -> Result<(Vec<JobRecord>, u64), String> {
        let mut records = Vec::new();
        let mut max_id = 0;
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io("reading", &self.dir, e))?;
        for e in entries.flatten() {
            let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            max_id = max_id.max(id);
            let path = e.path().join(STATUS_FILE);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // Created but never acknowledged (the node stopped before answering).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("reading", &path, e)),
            };
            let r: JobRecord = serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{}: not a job record: {e} (remove {} to drop the job)",
                    path.display(),
                    e_dir(&path)
                )
            })?;
            if r.id != id {
                return Err(format!(
                    "{} holds the record of job {}, not {id}",
                    path.display(),
                    r.id
                ));
            }
            records.push(r);
        }
        records.sort_by_key(|r| r.id);
        Ok((records, max_id + 1))
    }

    /// Creates job `record.id` with its submission; the record is written last.
    pub fn create(&self, record: &JobRecord, submission: &Submission) -> Result<(), String> {
        let dir = self.job_dir(record.id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io("clearing", &dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let sub = serde_json::to_vec_pretty(submission).map_err(|e| e.to_string())?;
        write_atomic(&dir.join(SUBMISSION_FILE), &sub)?;
        self.save(record)
    }

    /// Rewrites a job's record.
    pub fn save(&self, record: &JobRecord) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
        write_atomic(&self.job_dir(record.id).join(STATUS_FILE), &bytes)
    }

    pub fn submission(&self, id: u64) -> Result<Submission, String> {
        let path = self.job_dir(id).join(SUBMISSION_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| io("reading", &path, e))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, status: JobStatus) -> JobRecord {
        JobRecord {
            id,
            status,
            submitter: Address::repeat_byte(1),
            created: 1,
            started: None,
            finished: None,
            step: 0,
            total_steps: None,
            loss: None,
            datanets: vec![DatanetVersion { id: 1, version: 2 }],
            base_model: "m.gguf".into(),
            resumed_from: None,
            outcome: None,
            error: None,
            cancelling: false,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_unacknowledged_jobs_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sub = Submission {
            config: TrainConfig::default(),
            datanets: vec![DatanetVersion { id: 1, version: 2 }],
        };
        store.create(&record(2, JobStatus::Queued), &sub).unwrap();
        let mut r = record(1, JobStatus::Running);
        store.create(&r, &sub).unwrap();
        r.step = 7;
        store.save(&r).unwrap();
        // A job whose record was never written (the node died while creating it).
        std::fs::create_dir_all(dir.path().join("3")).unwrap();
        let (records, next) = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(records, vec![r, record(2, JobStatus::Queued)]);
        assert_eq!(next, 4, "an id is never reused");
        assert_eq!(store.submission(2).unwrap().datanets, sub.datanets);
    }
}
