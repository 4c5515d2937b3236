//! The content-addressed blob store: immutable byte strings (datanet row sets, later adapters and
//! attribution indexes) in files named by their BLAKE3 hash, `<dir>/ab/cdef…`.
//!
//! A blob is written to a temporary file, synced, renamed into place and its directory synced, so
//! after a crash a blob is either whole or absent. Reads re-hash the bytes, so a damaged file is
//! reported, never served.

use alloy_primitives::B256;
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

/// The scheme of blob URIs: `blake3:<64 hex digits>`.
pub const URI_SCHEME: &str = "blake3:";

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {id} is damaged on disk ({path} hashes to {actual}); restore it from a backup or another node")]
    Damaged {
        id: B256,
        path: PathBuf,
        actual: B256,
    },
    #[error("{0:?} is not a blob URI (expected blake3:<64 hex digits>)")]
    BadUri(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The BLAKE3 hash that names `bytes`.
pub fn blob_id(bytes: &[u8]) -> B256 {
    B256::from(*blake3::hash(bytes).as_bytes())
}

/// The URI of a blob, as stored on chain (`metadataUri`).
pub fn blob_uri(id: &B256) -> String {
    format!("{URI_SCHEME}{}", hex_digits(id))
}

/// The blob id in a `blake3:` URI.
pub fn parse_blob_uri(uri: &str) -> Result<B256, BlobError> {
    uri.strip_prefix(URI_SCHEME)
        .filter(|h| h.len() == 64)
        .and_then(|h| h.parse::<B256>().ok())
        .ok_or_else(|| BlobError::BadUri(uri.to_string()))
}

fn hex_digits(id: &B256) -> String {
    let s = format!("{id:x}");
    s.trim_start_matches("0x").to_string()
}

/// A directory of blobs.
#[derive(Clone, Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob store in `dir`.
    pub fn open(dir: &Path) -> Result<BlobStore, BlobError> {
        fs::create_dir_all(dir.join("tmp")).map_err(io(dir))?;
        Ok(BlobStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &B256) -> PathBuf {
        let h = hex_digits(id);
        self.dir.join(&h[..2]).join(&h[2..])
    }

    /// Whether the blob is present (not checked for damage).
    pub fn contains(&self, id: &B256) -> bool {
        self.path(id).is_file()
    }

    /// Stores `bytes` durably and returns their id; storing existing bytes again is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<B256, BlobError> {
        let id = blob_id(bytes);
        let path = self.path(&id);
        if path.is_file() {
            return Ok(id);
        }
        let parent = path.parent().expect("a blob path has a parent");
        fs::create_dir_all(parent).map_err(io(parent))?;
        let tmp = self.dir.join("tmp").join(format!(
            "{}.{}.{:x}",
            hex_digits(&id),
            std::process::id(),
            rand_suffix()
        ));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(parent)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io(&path)(e));
        }
        Ok(id)
    }

    /// Deletes a blob (garbage collection of unreferenced ones); an absent blob is no error.
    pub fn remove(&self, id: &B256) -> Result<(), BlobError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Reads a blob, checking its hash; `None` when absent.
    pub fn get(&self, id: &B256) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let actual = blob_id(&bytes);
        if actual != *id {
            return Err(BlobError::Damaged {
                id: *id,
                path,
                actual,
            });
        }
        Ok(Some(bytes))
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_dedupe_and_report_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let id = store.put(b"hello rows").unwrap();
        assert_eq!(id, blob_id(b"hello rows"));
        assert_eq!(store.put(b"hello rows").unwrap(), id);
        assert_eq!(store.get(&id).unwrap().unwrap(), b"hello rows");
        assert!(store.get(&blob_id(b"other")).unwrap().is_none());
        assert_eq!(parse_blob_uri(&blob_uri(&id)).unwrap(), id);
        assert!(parse_blob_uri("ipfs://x").is_err());
        // Reopening finds it; a damaged file is reported, not served.
        let store = BlobStore::open(dir.path()).unwrap();
        let other = store.put(b"other rows").unwrap();
        store.remove(&other).unwrap();
        assert!(!store.contains(&other) && store.get(&other).unwrap().is_none());
        store.remove(&other).unwrap();
        fs::write(store.path(&id), b"hello rowz").unwrap();
        let err = store.get(&id).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
