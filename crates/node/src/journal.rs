//! The pending-transaction journal: every transaction the sequencer accepts into the pending block
//! is appended here and fsynced before its hash is returned, and the journal is emptied once a
//! seal has committed the pending block. After a crash (SIGKILL, power loss) the node re-submits
//! what the journal holds, so an acknowledged transaction is never lost between its
//! acknowledgement and its block.
//!
//! Format: records of `len: u32 LE`, `blake3(raw): [u8; 32]`, `raw: [u8; len]`. A record cut short
//! or whose hash does not match (a write torn by the crash, never fsynced, so never
//! acknowledged) ends the journal: it and everything after it are truncated on open.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

const HEADER: usize = 4 + 32;

/// An open journal file.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
}

/// What opening a journal found.
pub struct Recovered {
    /// The raw transactions of the complete records, in the order they were accepted.
    pub txs: Vec<Vec<u8>>,
    /// Bytes of a torn or damaged tail that were cut off.
    pub truncated: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and reads its complete records. A
    /// record longer than `max_tx_bytes` is treated as damage, like a torn tail.
    pub fn open(path: &Path, max_tx_bytes: u64) -> io::Result<(Journal, Recovered)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        let mut txs = Vec::new();
        let mut good = 0u64;
        file.seek(SeekFrom::Start(0))?;
        let mut reader = io::BufReader::new(&mut file);
        loop {
            let mut header = [0u8; HEADER];
            if read_full(&mut reader, &mut header)? < HEADER {
                break;
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
            // Bounded before allocating: a damaged length cannot make us allocate more than one
            // transaction's worth, nor more than the file holds.
            if len > max_tx_bytes || len > size.saturating_sub(good + HEADER as u64) {
                break;
            }
            let mut raw = vec![0u8; len as usize];
            if read_full(&mut reader, &mut raw)? < raw.len()
                || blake3::hash(&raw).as_bytes()[..] != header[4..]
            {
                break;
            }
            good += HEADER as u64 + len;
            txs.push(raw);
        }
        drop(reader);
        let truncated = size - good;
        if truncated > 0 {
            file.set_len(good)?;
            file.sync_all()?;
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                len: good,
            },
            Recovered { txs, truncated },
        ))
    }

    /// Appends one accepted transaction and fsyncs it. On failure the partial record is cut off
    /// again (best effort; a torn record is also dropped on the next open).
    pub fn append(&mut self, raw: &[u8]) -> io::Result<()> {
        let len = u32::try_from(raw.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "transaction too large"))?;
        let mut record = Vec::with_capacity(HEADER + raw.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(blake3::hash(raw).as_bytes());
        record.extend_from_slice(raw);
        let written = self
            .file
            .write_all(&record)
            .and_then(|_| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Empties the journal: everything in it has been committed in a block.
    pub fn clear(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.journal");
        let (mut j, r) = Journal::open(&path, 1 << 20).unwrap();
        assert!(r.txs.is_empty());
        j.append(b"first").unwrap();
        j.append(b"second").unwrap();
        drop(j);
        // A crash in the middle of a third append: half a record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (mut j, r) = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(r.txs, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(r.truncated, 7);
        j.append(b"third").unwrap();
        drop(j);
        let (mut j, r) = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(r.txs.len(), 3, "appends after a cut tail are readable");
        j.clear().unwrap();
        drop(j);
        let (_, r) = Journal::open(&path, 1 << 20).unwrap();
        assert!(r.txs.is_empty());
    }

    #[test]
    fn damaged_records_and_huge_lengths_end_the_journal_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.journal");
        let (mut j, _) = Journal::open(&path, 1 << 20).unwrap();
        j.append(b"kept").unwrap();
        j.append(b"damaged").unwrap();
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // the second record's hash no longer matches
        std::fs::write(&path, &bytes).unwrap();
        let (_, r) = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(r.txs, vec![b"kept".to_vec()]);

        // A length of 4 GiB on a tiny file, and one over the transaction limit.
        for len in [u32::MAX, 2_000_000] {
            let mut bad = len.to_le_bytes().to_vec();
            bad.extend_from_slice(&[0u8; 40]);
            std::fs::write(&path, &bad).unwrap();
            let (_, r) = Journal::open(&path, 1 << 20).unwrap();
            assert!(r.txs.is_empty());
            assert_eq!(r.truncated, bad.len() as u64);
        }
    }
}
