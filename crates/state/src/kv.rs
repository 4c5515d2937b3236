//! The key-value view of state: a read trait, an in-memory store, and the write overlay that
//! makes transactions atomic.

use crate::error::StorageError;
use std::collections::BTreeMap;

/// Writes not yet committed: `None` deletes the key.
pub type WriteSet = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Read access to committed state.
pub trait StateRead {
    /// The value at `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
}

impl<T: StateRead + ?Sized> StateRead for &T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(key)
    }
}

impl<T: StateRead + ?Sized> StateRead for std::sync::Arc<T> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(key)
    }
}

/// A plain in-memory key-value store (used for genesis computation and tests).
#[derive(Clone, Debug, Default)]
pub struct MemKv(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl StateRead for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.get(key).cloned())
    }
}

impl MemKv {
    /// Applies a write set.
    pub fn apply(&mut self, writes: WriteSet) {
        for (k, v) in writes {
            match v {
                Some(v) => self.0.insert(k, v),
                None => self.0.remove(&k),
            };
        }
    }
}

/// Pending writes layered over a read-only base. Reads see the writes first.
pub struct Overlay<'a> {
    base: &'a dyn StateRead,
    writes: WriteSet,
}

impl<'a> Overlay<'a> {
    /// An empty overlay over `base`.
    pub fn new(base: &'a dyn StateRead) -> Self {
        Overlay {
            base,
            writes: WriteSet::new(),
        }
    }

    /// An overlay over `base` that already holds `writes`.
    pub fn with_writes(base: &'a dyn StateRead, writes: WriteSet) -> Self {
        Overlay { base, writes }
    }

    /// Records a write.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    /// Records a deletion.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Adds another overlay's writes on top of these.
    pub fn merge(&mut self, writes: WriteSet) {
        self.writes.extend(writes);
    }

    /// The writes, consuming the overlay.
    pub fn into_writes(self) -> WriteSet {
        self.writes
    }

    /// The writes so far.
    pub fn writes(&self) -> &WriteSet {
        &self.writes
    }
}

impl StateRead for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }
}
