//! The receipt journal and the recorder. Every served, charged inference is appended to
//! `<dir>/receipts.journal` and fsynced before [`OpenLora::charge`](super::OpenLora::charge)
//! returns (charges that arrive together share one fsync: group commit); the recorder sends the
//! unrecorded ones to the chain as `recordInferences(records, settleNow=true)` transactions
//! signed by the operator, waits until they are sealed and marks them recorded. After a crash
//! the journal is read again and every unmarked entry is resubmitted: the chain skips request
//! ids it has already recorded, so nobody is charged twice and no charged receipt is lost.
//!
//! Format: JSON lines. A served inference:
//! `{"request_id":"0x…","caller":"0x…","adapter_id":1,"prompt_tokens":5,"completion_tokens":7,"top":[[3,500000]],"attribution_root":"0x…"}`;
//! recorded: `{"recorded":"0x<request id>","receipt":12}`; dropped because the chain refused
//! it: `{"rejected":"0x<request id>","reason":"…"}` (the entry and the reason are also appended
//! to `<dir>/receipts.rejected` for the operator). A torn last line (a crash mid-write, never
//! acknowledged) is ignored. Opening compacts the journal: it is rewritten atomically with only
//! the unrecorded entries; the recorder compacts it again once marks dominate it.

use super::billing::Holds;
use crate::sequencer::now;
use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    fs::{File, OpenOptions},
    io::{self, BufRead, Write},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
};

/// The journal's file name under the OpenLoRA directory.
pub const JOURNAL_FILE: &str = "receipts.journal";
/// Where dropped records go, for the operator.
pub const REJECTED_FILE: &str = "receipts.rejected";
/// Longest journal line read back (a damaged line longer than this is skipped).
const MAX_LINE_BYTES: usize = 1 << 20;

/// One served inference, as charged and journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServedInference {
    /// keccak-256 of the response id (`chatcmpl-…`): unique per request, never zero.
    pub request_id: B256,
    pub caller: Address,
    pub adapter_id: u64,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// The committed top attributions: (contribution id, weight in ppm).
    pub top: Vec<(u64, u32)>,
    pub attribution_root: B256,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Served(ServedInference),
    Recorded {
        recorded: B256,
        receipt: u64,
    },
    Rejected {
        rejected: B256,
        #[serde(default)]
        reason: String,
    },
}

/// An unrecorded entry and the fee it holds against its caller.
#[derive(Clone, Debug)]
pub(crate) struct Unrecorded {
    pub(crate) served: ServedInference,
    pub(crate) fee: U256,
}

struct Writer {
    file: Arc<File>,
    /// Bytes of whole lines in the file.
    len: u64,
    /// Lines written so far (a sequence number for group commit).
    written: u64,
    /// Lines in the file (entries and marks), for deciding when to compact.
    lines: u64,
    /// Set once an fsync failed: nothing more is acknowledged as durable.
    poisoned: Option<String>,
}

#[derive(Default)]
struct SyncState {
    synced: u64,
    syncing: bool,
}

#[derive(Default)]
struct Entries {
    next: u64,
    by_seq: BTreeMap<u64, Unrecorded>,
    seq_of: HashMap<B256, u64>,
    /// Entries whose line is not known to be on disk yet: not handed to the recorder.
    writing: std::collections::HashSet<B256>,
}

/// The open journal.
pub struct ReceiptJournal {
    path: PathBuf,
    rejected_path: PathBuf,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    entries: Mutex<Entries>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What reading a journal found.
pub(crate) struct Found {
    pub(crate) unrecorded: Vec<ServedInference>,
    pub(crate) torn_bytes: u64,
}

impl ReceiptJournal {
    /// Opens the journal in `dir`, reads it and compacts it (atomically: only the unrecorded
    /// entries are kept). `fee` prices each unrecorded entry for the caller's hold.
    pub(crate) fn open(
        dir: &Path,
        fee: impl Fn(&ServedInference) -> U256,
    ) -> Result<(ReceiptJournal, Found), String> {
        let path = dir.join(JOURNAL_FILE);
        let rejected_path = dir.join(REJECTED_FILE);
        let found = read(&path, &rejected_path)
            .map_err(|e| format!("reading the receipt journal {}: {e}", path.display()))?;
        let mut entries = Entries::default();
        for s in &found.unrecorded {
            entries.insert(Unrecorded {
                fee: fee(s),
                served: s.clone(),
            });
        }
        let bytes = encode_all(entries.by_seq.values().map(|u| &u.served))
            .map_err(|e| format!("encoding the receipt journal: {e}"))?;
        super::api_keys::write_atomic(&path, &bytes)
            .map_err(|e| format!("compacting the receipt journal {}: {e}", path.display()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("opening the receipt journal {}: {e}", path.display()))?;
        let lines = entries.by_seq.len() as u64;
        Ok((
            ReceiptJournal {
                path,
                rejected_path,
                writer: Mutex::new(Writer {
                    file: Arc::new(file),
                    len: bytes.len() as u64,
                    written: 0,
                    lines,
                    poisoned: None,
                }),
                sync: Mutex::new(SyncState::default()),
                synced: Condvar::new(),
                entries: Mutex::new(entries),
            },
            found,
        ))
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many entries are not recorded yet.
    pub fn unrecorded(&self) -> usize {
        lock(&self.entries).by_seq.len()
    }

    /// Whether `request_id` is journaled and not recorded yet.
    pub fn is_unrecorded(&self, request_id: &B256) -> bool {
        lock(&self.entries).seq_of.contains_key(request_id)
    }

    /// The oldest `n` unrecorded entries whose lines are on disk.
    pub(crate) fn oldest(&self, n: usize) -> Vec<Unrecorded> {
        let e = lock(&self.entries);
        e.by_seq
            .values()
            .filter(|u| !e.writing.contains(&u.served.request_id))
            .take(n)
            .cloned()
            .collect()
    }

    /// Appends a served inference and returns once it is durable. Refused when its request id
    /// is already waiting to be recorded.
    pub(crate) fn append(&self, u: Unrecorded) -> Result<(), String> {
        let id = u.served.request_id;
        let line = encode(&Line::Served(u.served.clone()))?;
        {
            let mut e = lock(&self.entries);
            if e.seq_of.contains_key(&id) {
                return Err(format!("request {id} was charged already"));
            }
            // Listed before it is written (so that a concurrent charge of the same id is
            // refused, and a compaction meanwhile keeps it), but not handed to the recorder
            // before it is durable; taken out again if writing fails.
            e.insert(u);
            e.writing.insert(id);
        }
        let written = self.write_durably(&line);
        let mut e = lock(&self.entries);
        e.writing.remove(&id);
        if written.is_err() {
            e.remove(&id);
        }
        written
    }

    /// Marks entries recorded (with their receipt ids) or rejected (with the reason, also
    /// written to the rejected file), durably; returns the marked entries.
    pub(crate) fn mark(
        &self,
        recorded: &[(B256, u64)],
        rejected: &[(B256, String)],
    ) -> Result<Vec<Unrecorded>, String> {
        if recorded.is_empty() && rejected.is_empty() {
            return Ok(Vec::new());
        }
        if !rejected.is_empty() {
            let mut out = Vec::new();
            let e = lock(&self.entries);
            for (id, reason) in rejected {
                if let Some(u) = e.get(id) {
                    let v =
                        serde_json::json!({"inference": u.served, "reason": reason, "at": now()});
                    out.extend_from_slice(v.to_string().as_bytes());
                    out.push(b'\n');
                }
            }
            drop(e);
            let written = (|| {
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.rejected_path)?;
                f.write_all(&out)?;
                f.sync_data()
            })();
            written.map_err(|e| format!("writing {}: {e}", self.rejected_path.display()))?;
        }
        let mut lines = Vec::new();
        for (id, receipt) in recorded {
            lines.extend(encode(&Line::Recorded {
                recorded: *id,
                receipt: *receipt,
            })?);
        }
        for (id, reason) in rejected {
            lines.extend(encode(&Line::Rejected {
                rejected: *id,
                reason: reason.clone(),
            })?);
        }
        self.write_durably(&lines)?;
        let mut e = lock(&self.entries);
        Ok(recorded
            .iter()
            .map(|(id, _)| id)
            .chain(rejected.iter().map(|(id, _)| id))
            .filter_map(|id| e.remove(id))
            .collect())
    }

    /// Rewrites the journal with only the unrecorded entries when marks and recorded entries
    /// make up most of it (so it stays bounded while the node runs).
    pub(crate) fn compact_if_worthwhile(&self) -> Result<bool, String> {
        let mut w = lock(&self.writer);
        let live = self.unrecorded() as u64;
        if w.lines < 1024 || w.lines < 4 * live.max(1) {
            return Ok(false);
        }
        let bytes = {
            let e = lock(&self.entries);
            encode_all(e.by_seq.values().map(|u| &u.served)).map_err(|e| e.to_string())?
        };
        super::api_keys::write_atomic(&self.path, &bytes)
            .map_err(|e| format!("compacting {}: {e}", self.path.display()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("reopening {}: {e}", self.path.display()))?;
        w.file = Arc::new(file);
        w.len = bytes.len() as u64;
        w.lines = live;
        // Everything written so far is in the synced new file.
        let mut s = lock(&self.sync);
        s.synced = s.synced.max(w.written);
        drop(s);
        self.synced.notify_all();
        Ok(true)
    }

    /// Appends `bytes` (whole lines) and waits until they are on disk. Writers that arrive
    /// while an fsync runs share the next one.
    fn write_durably(&self, bytes: &[u8]) -> Result<(), String> {
        let seq = {
            let mut w = lock(&self.writer);
            if let Some(p) = &w.poisoned {
                return Err(p.clone());
            }
            if let Err(e) = (&*w.file).write_all(bytes) {
                let _ = w.file.set_len(w.len);
                return Err(format!("writing {}: {e}", self.path.display()));
            }
            w.len += bytes.len() as u64;
            w.written += 1;
            w.lines += bytes.iter().filter(|b| **b == b'\n').count() as u64;
            w.written
        };
        let mut s = lock(&self.sync);
        loop {
            if s.synced >= seq {
                return Ok(());
            }
            if !s.syncing {
                break;
            }
            s = self.synced.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.syncing = true;
        drop(s);
        let (target, file) = {
            let w = lock(&self.writer);
            if let Some(p) = &w.poisoned {
                let p = p.clone();
                drop(w);
                lock(&self.sync).syncing = false;
                self.synced.notify_all();
                return Err(p);
            }
            (w.written, w.file.clone())
        };
        let r = file.sync_data();
        if let Err(e) = &r {
            lock(&self.writer).poisoned = Some(format!(
                "the receipt journal {} could not be synced to disk ({e}); no more inferences \
                 are charged: check the disk and restart the node",
                self.path.display()
            ));
        }
        let mut s = lock(&self.sync);
        s.syncing = false;
        if r.is_ok() {
            s.synced = s.synced.max(target);
        }
        drop(s);
        self.synced.notify_all();
        r.map_err(|e| format!("syncing {}: {e}", self.path.display()))
    }
}

impl Entries {
    fn insert(&mut self, u: Unrecorded) {
        let seq = self.next;
        self.next += 1;
        self.seq_of.insert(u.served.request_id, seq);
        self.by_seq.insert(seq, u);
    }

    fn get(&self, id: &B256) -> Option<&Unrecorded> {
        self.seq_of.get(id).and_then(|s| self.by_seq.get(s))
    }

    fn remove(&mut self, id: &B256) -> Option<Unrecorded> {
        let seq = self.seq_of.remove(id)?;
        self.by_seq.remove(&seq)
    }
}

fn encode(line: &Line) -> Result<Vec<u8>, String> {
    let mut v = serde_json::to_vec(line).map_err(|e| format!("encoding a journal line: {e}"))?;
    v.push(b'\n');
    Ok(v)
}

fn encode_all<'a>(entries: impl Iterator<Item = &'a ServedInference>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for s in entries {
        out.extend(encode(&Line::Served(s.clone()))?);
    }
    Ok(out)
}

/// Reads the journal at `path` (absent: empty). Damaged lines in the middle are skipped with a
/// warning and copied to `rejected`; a torn last line is ignored.
fn read(path: &Path, rejected: &Path) -> io::Result<Found> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Found {
                unrecorded: Vec::new(),
                torn_bytes: 0,
            })
        }
        Err(e) => return Err(e),
    };
    let mut reader = io::BufReader::new(file);
    let mut order: Vec<B256> = Vec::new();
    let mut served: HashMap<B256, ServedInference> = HashMap::new();
    let mut damaged: Vec<Vec<u8>> = Vec::new();
    let mut torn_bytes = 0u64;
    loop {
        let (line, complete) = read_line(&mut reader)?;
        if line.is_empty() && !complete {
            break;
        }
        if !complete {
            // The last line, cut short by a crash: it was never acknowledged.
            torn_bytes = line.len() as u64;
            break;
        }
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Served(s)) => {
                if !served.contains_key(&s.request_id) {
                    order.push(s.request_id);
                }
                served.insert(s.request_id, s);
            }
            Ok(Line::Recorded { recorded: id, .. }) | Ok(Line::Rejected { rejected: id, .. }) => {
                served.remove(&id);
            }
            Err(_) if line.iter().all(|b| b.is_ascii_whitespace()) => {}
            Err(_) => damaged.push(line),
        }
    }
    if !damaged.is_empty() {
        tracing::warn!(
            lines = damaged.len(),
            "the receipt journal holds damaged lines; they are skipped and copied to {}",
            rejected.display()
        );
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(rejected)?;
        for d in &damaged {
            let v = serde_json::json!({"damaged": String::from_utf8_lossy(d), "at": now()});
            writeln!(f, "{v}")?;
        }
        f.sync_data()?;
    }
    let unrecorded = order.iter().filter_map(|id| served.remove(id)).collect();
    Ok(Found {
        unrecorded,
        torn_bytes,
    })
}

/// One line without its `\n`, and whether it ended with one. A line longer than
/// [`MAX_LINE_BYTES`] is returned cut (and fails to parse).
fn read_line(r: &mut impl BufRead) -> io::Result<(Vec<u8>, bool)> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((line, false));
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                if line.len() < MAX_LINE_BYTES {
                    line.extend_from_slice(&buf[..i.min(MAX_LINE_BYTES - line.len())]);
                }
                r.consume(i + 1);
                return Ok((line, true));
            }
            None => {
                let n = buf.len();
                if line.len() < MAX_LINE_BYTES {
                    line.extend_from_slice(&buf[..n.min(MAX_LINE_BYTES - line.len())]);
                }
                r.consume(n);
            }
        }
    }
}

/// Releases journaled fees from their callers' holds once recorded or dropped.
pub(crate) fn release_marked(holds: &Holds, marked: &[Unrecorded]) {
    for u in marked {
        holds.unjournal(u.served.caller, u.fee);
    }
}
