//! The key-value view of state: a read trait, an in-memory store, and the write overlay that
//! makes transactions atomic.

use crate::error::StorageError;
use alloy_primitives::map::HashMap;
use std::{borrow::Cow, collections::BTreeMap, fmt, hash::BuildHasher};

/// Writes not yet committed, in key order: `None` deletes the key.
pub type WriteSet = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One transaction's writes, each key once, in no particular order (`None` deletes the key):
/// what [`Overlay::into_writes`] hands over without sorting. Whoever needs an order (a block's
/// writes on their way into the state tree) puts them into a [`WriteSet`]; an in-memory store
/// applies them as they come. Nothing may depend on their iteration order, which differs from
/// process to process.
pub type Writes = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// Read access to committed state.
pub trait StateRead {
    /// The value at `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// The value at `key`, borrowed where the store holds it in memory (no copy), owned
    /// otherwise. The default calls [`StateRead::get`].
    fn get_ref(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StorageError> {
        Ok(self.get(key)?.map(Cow::Owned))
    }
}

impl<T: StateRead + ?Sized> StateRead for &T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(key)
    }

    fn get_ref(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StorageError> {
        (**self).get_ref(key)
    }
}

impl<T: StateRead + ?Sized> StateRead for std::sync::Arc<T> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(key)
    }

    fn get_ref(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StorageError> {
        (**self).get_ref(key)
    }
}

/// A plain in-memory key-value store (genesis computation, the simulator, tests).
///
/// Entries live in a hash table, so lookups cost no key comparisons along a tree path, and
/// each entry is one allocation holding its key and value side by side (see [`Entry`]): a
/// lookup follows one pointer from the table to both, and the table holds two words per entry.
/// Nothing observable depends on the table's (randomly seeded) iteration order: whoever needs
/// order uses [`MemKv::sorted`] or [`MemKv::prefix`], which sort, and `Debug` prints in key
/// order.
#[derive(Clone, Default)]
pub struct MemKv {
    table: hashbrown::HashTable<Entry>,
    hasher: alloy_primitives::map::DefaultHashBuilder,
}

/// One entry: the key's length, the key, the value. The length is one byte below [`LONG`]
/// (keys are a short tag and ids, addresses or hashes; only a key holding a long name is
/// longer), else [`LONG`] and eight little-endian bytes: a settled receipt's entry stays within
/// the allocator's 256-byte size class, where a word-wide length tipped it into the 320-byte one.
#[derive(Clone)]
struct Entry(Box<[u8]>);

/// The length byte that announces an eight-byte key length.
const LONG: u8 = u8::MAX;

impl Entry {
    fn new(key: &[u8], value: &[u8]) -> Entry {
        let short = u8::try_from(key.len()).ok().filter(|&n| n < LONG);
        let header = if short.is_some() { 1 } else { 9 };
        let mut b = Vec::with_capacity(header + key.len() + value.len());
        match short {
            Some(n) => b.push(n),
            None => {
                b.push(LONG);
                b.extend_from_slice(&(key.len() as u64).to_le_bytes());
            }
        }
        b.extend_from_slice(key);
        b.extend_from_slice(value);
        Entry(b.into_boxed_slice())
    }

    /// The key and the value.
    fn split(&self) -> (&[u8], &[u8]) {
        let (len, rest) = match self.0.split_first() {
            Some((&n, rest)) if n < LONG => (usize::from(n), rest),
            Some((_, rest)) => {
                let (len, rest) = rest.split_at(8.min(rest.len()));
                let len = u64::from_le_bytes(len.try_into().unwrap_or_default());
                (usize::try_from(len).unwrap_or(usize::MAX), rest)
            }
            None => (0, &[][..]),
        };
        // `new` wrote the length of the key that follows, so the split is in bounds.
        rest.split_at(len.min(rest.len()))
    }

    fn key(&self) -> &[u8] {
        self.split().0
    }

    fn value(&self) -> &[u8] {
        self.split().1
    }

    /// Sets the value in place when it keeps its length (an account's balance, a credit, a
    /// counter); otherwise builds the entry anew.
    fn set_value(&mut self, value: &[u8]) {
        let (key, old) = self.split();
        if old.len() == value.len() {
            let at = self.0.len() - value.len();
            self.0[at..].copy_from_slice(value);
        } else {
            *self = Entry::new(key, value);
        }
    }
}

impl StateRead for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.value(key).map(<[u8]>::to_vec))
    }

    fn get_ref(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StorageError> {
        Ok(self.value(key).map(Cow::Borrowed))
    }
}

impl MemKv {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The value at `key`, borrowed (the infallible form of [`StateRead::get_ref`]).
    pub fn value(&self, key: &[u8]) -> Option<&[u8]> {
        self.table
            .find(self.hash(key), |e| e.key() == key)
            .map(Entry::value)
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        let mut old = None;
        self.put(&key, &value, |v| old = Some(v.to_vec()));
        old
    }

    /// Sets `key` to `value`, first showing `old` the previous value, if any.
    fn put(&mut self, key: &[u8], value: &[u8], old: impl FnOnce(&[u8])) {
        let hash = self.hash(key);
        let hasher = &self.hasher;
        match self
            .table
            .entry(hash, |e| e.key() == key, |e| hasher.hash_one(e.key()))
        {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                old(e.get().value());
                e.get_mut().set_value(value);
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(Entry::new(key, value));
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let hash = self.hash(key);
        let (e, _) = self
            .table
            .find_entry(hash, |e| e.key() == key)
            .ok()?
            .remove();
        Some(e.value().to_vec())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The total size of every key and value, in bytes.
    pub fn size_bytes(&self) -> usize {
        self.entries().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Every entry, in no particular order.
    fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.table.iter().map(Entry::split)
    }

    /// Every entry in ascending key order.
    pub fn sorted(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        sort_entries(self.entries())
    }

    /// The entries whose key starts with `prefix`, in ascending key order (a scan of the whole
    /// store: meant for checks, not for the executor's hot path).
    pub fn prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + 'a {
        sort_entries(self.entries().filter(|(k, _)| k.starts_with(prefix)))
    }

    /// Applies writes (each key at most once, so their order does not matter: a [`WriteSet`]
    /// or a transaction's [`Writes`]).
    pub fn apply(&mut self, writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>) {
        for (k, v) in writes {
            match v {
                Some(v) => self.put(&k, &v, |_| {}),
                None => {
                    self.remove(&k);
                }
            }
        }
    }
}

impl PartialEq for MemKv {
    /// The same entries, whatever order they were inserted in.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.entries().all(|(k, v)| other.value(k) == Some(v))
    }
}

impl Eq for MemKv {}

/// The entries as slices, sorted by key (keys are unique, so an unstable sort is deterministic).
/// The sort moves small records holding 32 bytes of each key and the entry's index, so most
/// comparisons need not reach the keys scattered over the heap (several times faster on a
/// million-entry state than sorting the slices themselves).
fn sort_entries<'a>(
    entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> {
    let all: Vec<(&[u8], &[u8])> = entries.collect();
    let mut order: Vec<Block> = (0..all.len()).map(|i| (0, 0, i)).collect();
    sort_from(&mut order, &all, 0);
    order.into_iter().map(move |(_, _, i)| all[i])
}

/// 32 bytes of a key as two big-endian numbers, and the entry's index.
type Block = (u128, u128, usize);

/// Keys longer than this, sharing this many bytes, are ordered by whole-key comparisons (the
/// block-by-block sort below recurses once per 32 bytes).
const BLOCKS_UP_TO: usize = 256;

/// Sorts `order`, whose keys all share their first `from` bytes (zero-padded), by the keys:
/// by their next 32 bytes, then each run of keys that share those too (an agent's many records,
/// say) by the 32 after, and so on.
fn sort_from(order: &mut [Block], all: &[(&[u8], &[u8])], from: usize) {
    let key = |e: &Block| all[e.2].0;
    if from >= BLOCKS_UP_TO || order.iter().all(|e| key(e).len() <= from) {
        // Keys that tie here are equal up to zero padding (or very long): compare them whole.
        order.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        return;
    }
    for e in order.iter_mut() {
        let k = key(e);
        (e.0, e.1) = block(&k[from.min(k.len())..]);
    }
    order.sort_unstable_by_key(|&(hi, lo, _)| (hi, lo));
    for run in order.chunk_by_mut(|a, b| (a.0, a.1) == (b.0, b.1)) {
        if run.len() > 1 {
            sort_from(run, all, from + 32);
        }
    }
}

/// The first 32 bytes of `bytes`, zero-padded, as two big-endian numbers: ordering these
/// orders keys sharing what comes before, except that ties (including a key and its
/// zero-padded extension) need the following bytes.
fn block(bytes: &[u8]) -> (u128, u128) {
    let mut b = [0u8; 32];
    let n = bytes.len().min(32);
    b[..n].copy_from_slice(&bytes[..n]);
    let (hi, lo) = b.split_at(16);
    (
        u128::from_be_bytes(hi.try_into().unwrap_or_default()),
        u128::from_be_bytes(lo.try_into().unwrap_or_default()),
    )
}

impl fmt::Debug for MemKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.sorted()).finish()
    }
}

impl FromIterator<(Vec<u8>, Vec<u8>)> for MemKv {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>>(iter: I) -> Self {
        let mut kv = MemKv::default();
        for (k, v) in iter {
            kv.insert(k, v);
        }
        kv
    }
}

/// Pending writes layered over a read-only base. Reads see the writes first.
///
/// The writes are held in a hash map (a call reads through its own writes at every step, and a
/// batch of inferences writes hundreds of keys) and handed over as they are by
/// [`Overlay::into_writes`]: the simulator's in-memory state needs no order, and the node orders
/// a block's writes once as it merges them.
pub struct Overlay<'a> {
    base: &'a dyn StateRead,
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Writes an overlay makes room for at once: a transfer or a stake writes fewer.
const SMALL_WRITES: usize = 8;

impl<'a> Overlay<'a> {
    /// An empty overlay over `base`.
    pub fn new(base: &'a dyn StateRead) -> Self {
        Overlay {
            base,
            writes: HashMap::with_capacity_and_hasher(SMALL_WRITES, Default::default()),
        }
    }

    /// Records a write.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    /// Records a deletion.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// The writes, consuming the overlay (unordered: see [`Writes`]).
    pub fn into_writes(self) -> Writes {
        self.writes
    }
}

impl StateRead for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }

    fn get_ref(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StorageError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.as_deref().map(Cow::Borrowed)),
            None => self.base.get_ref(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(entries: &[(&[u8], &[u8])]) -> MemKv {
        entries
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn sorted_and_prefix_are_in_key_order() {
        let s = kv(&[
            (b"b1", b"x"),
            (b"a2", b"y"),
            (b"a1", b"z"),
            (b"ab", b"w"),
            (b"c", b""),
        ]);
        let keys: Vec<&[u8]> = s.sorted().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"a1"[..], b"a2", b"ab", b"b1", b"c"]);
        let a: Vec<(&[u8], &[u8])> = s.prefix(b"a").collect();
        assert_eq!(a, [(&b"a1"[..], &b"z"[..]), (b"a2", b"y"), (b"ab", b"w")]);
        assert_eq!(s.prefix(b"d").len(), 0);
        // Keys that tie on their first 32 bytes (zero padding included) still sort by key.
        let long = kv(&[
            (&[7; 33], b""),
            (&[7; 32], b""),
            (&[7, 0], b""),
            (&[7], b""),
            (&[7; 34], b""),
            (&[7; 17], b""),
            (&[8], b""),
        ]);
        let keys: Vec<&[u8]> = long.sorted().map(|(k, _)| k).collect();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(keys[..3], [&[7][..], &[7, 0], &[7; 17]]);
        // Long shared prefixes, zero bytes and keys past the block-by-block depth.
        let mut entries = Vec::new();
        for (n, len) in [
            (40usize, 3usize),
            (40, 35),
            (40, 70),
            (300, 2),
            (300, 1),
            (0, 2),
        ] {
            for x in 0..3u8 {
                let mut k = vec![5; n];
                k.extend((0..len).map(|i| if i % 2 == 0 { x } else { 0 }));
                entries.push((k, vec![x]));
            }
        }
        let many: MemKv = entries.iter().cloned().collect();
        let keys: Vec<&[u8]> = many.sorted().map(|(k, _)| k).collect();
        let mut want: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
        want.sort();
        want.dedup();
        assert_eq!(keys, want);
        assert_eq!(
            format!("{s:?}"),
            format!("{:?}", s.sorted().collect::<BTreeMap<_, _>>())
        );
    }

    #[test]
    fn equality_ignores_insertion_order() {
        let a = kv(&[(b"k1", b"1"), (b"k2", b"2")]);
        let mut b = kv(&[(b"k2", b"2")]);
        assert_ne!(a, b);
        b.insert(b"k1".to_vec(), b"1".to_vec());
        assert_eq!(a, b);
        b.insert(b"k1".to_vec(), b"one".to_vec());
        assert_ne!(a, b);
    }

    /// Keys and values of every length (empty ones too): replacing, reading, removing and
    /// counting see each entry whole.
    #[test]
    fn entries_keep_their_keys_and_values_apart() {
        let mut s = MemKv::default();
        let long = [7u8; 300];
        let keys: [&[u8]; 7] = [
            b"",
            b"a",
            b"ab",
            &[0; 40],
            &[0; 41],
            &[1; 254],
            &long[..255],
        ];
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(s.insert(k.to_vec(), vec![i as u8; i]), None);
        }
        assert_eq!(s.len(), 7);
        assert_eq!(s.value(b""), Some(&[][..]));
        assert_eq!(s.value(&[1; 254]), Some(&[5; 5][..]));
        assert_eq!(s.value(&long[..255]), Some(&[6; 6][..]));
        assert_eq!(s.value(&long[..254]), None);
        assert_eq!(s.value(&[0; 41]), Some(&[4; 4][..]));
        assert_eq!(s.value(b"abc"), None);
        assert_eq!(s.insert(b"ab".to_vec(), b"new".to_vec()), Some(vec![2, 2]));
        assert_eq!(s.value(b"ab"), Some(&b"new"[..]));
        // The same length: set in place.
        assert_eq!(
            s.insert(b"ab".to_vec(), b"NEW".to_vec()),
            Some(b"new".to_vec())
        );
        assert_eq!(s.insert(long[..255].to_vec(), vec![8; 6]), Some(vec![6; 6]));
        assert_eq!(s.value(&long[..255]), Some(&[8; 6][..]));
        assert_eq!(s.value(b"ab"), Some(&b"NEW"[..]));
        assert_eq!(
            s.size_bytes(),
            (1 + 2 + 40 + 41 + 254 + 255) + (1 + 3 + 3 + 4 + 5 + 6)
        );
        assert_eq!(s.remove(&[0; 40]), Some(vec![3; 3]));
        assert_eq!(s.remove(&[0; 40]), None);
        assert_eq!(s.len(), 6);
        let t: MemKv = s.sorted().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(s, t);
        assert_eq!(s.get(b"a").unwrap(), Some(vec![1]));
    }

    #[test]
    fn overlay_reads_its_writes_first_and_borrows() {
        let mut base = kv(&[(b"k", b"base"), (b"gone", b"old")]);
        let mut o = Overlay::new(&base);
        o.put(b"new".to_vec(), b"v".to_vec());
        o.delete(b"gone".to_vec());
        assert_eq!(o.get_ref(b"k").unwrap().as_deref(), Some(&b"base"[..]));
        assert!(matches!(o.get_ref(b"k").unwrap(), Some(Cow::Borrowed(_))));
        assert_eq!(o.get_ref(b"new").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(o.get_ref(b"gone").unwrap(), None);
        assert_eq!(o.get(b"gone").unwrap(), None);
        let w = o.into_writes();
        base.apply(w);
        assert_eq!(base, kv(&[(b"k", b"base"), (b"new", b"v")]));
        assert_eq!(base.size_bytes(), 1 + 4 + 3 + 1);
    }
}
