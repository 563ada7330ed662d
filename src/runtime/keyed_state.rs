//! One owned partition's keyed state, as both services keep it in memory: values by key, the
//! keys changed since the last checkpoint, and the input position. It turns a restore into
//! state and the state into the next checkpoint ([`PartitionCheckpoint`]) for
//! [`Changelog::commit`](crate::runtime::changelog::Changelog::commit).

use crate::partition::UserStore;
use crate::runtime::changelog::{
    entry_hash, Checkpoint, PartitionCheckpoint, Restored, StateDigest,
};
use crate::state::UserState;
use hashbrown::HashTable;
use leadscore_engine::engine::prefetch;
use leadscore_engine::hash::SeededState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

/// The state of one owned partition.
#[derive(Debug, Default)]
pub struct KeyedState<V> {
    /// Keyed by input ids (user ids), hashed with a seeded hasher, fast and flood-resistant
    /// ([`leadscore_engine::hash`]). A bucket is one pointer to an [`Entry`] holding the key, the
    /// value and its changelog hash together (docs/scale.md).
    entries: HashTable<Box<Entry<V>>>,
    hasher: SeededState,
    /// Keys changed since the last checkpoint, each once, in the order they changed: a key
    /// is added when its entry's changed-flag is set, or, when it has no entry, as it joins
    /// `gone`. A list, not a set: the flags already keep a key from coming twice, and
    /// appending costs no hash and no probe of a table as large as the span's changed users
    /// (a set's insert was about a twentieth of the scorer's path per event at 1M users). The
    /// keys are held as entries hold them, inline when short (no block of their own).
    dirty: Vec<Key>,
    /// The keys in `dirty` that have no entry (removed since the last checkpoint, or a
    /// restore's unconfirmed key the state lacks): what a flag says for the others. A key
    /// re-created before the checkpoint leaves it, with its flag set.
    gone: HashSet<String, SeededState>,
    /// Removed keys that the changelog still holds, with the [`entry_hash`] of what it holds:
    /// the next checkpoint's tombstone takes that hash out of `digest`, or a key re-created
    /// before then takes it over as its `logged` hash. Bounded by `dirty`: every key here is
    /// in it, and both are emptied by each checkpoint.
    removed: HashMap<String, u64>,
    /// Of what the changelog holds for this partition as of the last checkpoint built: every
    /// entry's `logged` hash summed. Each checkpoint record carries it, so that a warm restart
    /// can verify its local copy; kept up to date per written key, so a checkpoint costs no
    /// scan of the partition.
    digest: StateDigest,
    /// The next input offset to process; `None` until the first record (or a checkpoint).
    next_offset: Option<i64>,
    /// The input position and metadata of the last checkpoint, to skip one that would repeat
    /// it.
    checkpointed: Option<(i64, Vec<u8>)>,
    /// Where the table's control bytes start, as of the last [`KeyedState::slot`] (0 before
    /// any): only for the lookahead hints' addresses, which tolerate it being stale (the
    /// table is only ever grown by `slot`, which sets it again).
    ctrl: usize,
}

/// One key, its value and the [`entry_hash`] of the bytes the changelog holds for it (8 bytes
/// per key buy a checkpoint that updates the digest from the changed keys alone), in one heap
/// block.
///
/// The map's table holds a pointer per bucket, and a table of a million keys has about two
/// million buckets (hashbrown keeps it at most 7/8 full and doubles it): with the key, a boxed
/// value and the hash in the bucket it was 32 bytes, so about 64 per user at 1M users, half of
/// them in empty buckets; now 8. A key of up to [`INLINE_KEY`] bytes (most user ids) lives in
/// the entry itself, so finding a user loads two blocks (the bucket's group and the entry),
/// not three (bucket, key, value), and costs no block of its own.
#[derive(Debug)]
struct Entry<V> {
    key: Key,
    /// 0: the changelog has no record of this key (it was only ever read, never changed).
    logged: u64,
    value: V,
}

/// The longest key kept inline in its [`Entry`].
const INLINE_KEY: usize = 21;

/// A key, inline when short, else boxed (24 bytes either way), and the entry's changed-flag:
/// whether the key is in `dirty`, so an update of a key changed already in this checkpoint's
/// span adds nothing to the list. The flag sits in the key's spare byte, not in a field of
/// its own that padding would make 8 bytes: with the 96-byte `UserState`, an entry is 128
/// bytes, an allocator size class, instead of 136 (issue 14, memory per user).
#[derive(Debug)]
enum Key {
    Inline {
        len: u8,
        dirty: bool,
        bytes: [u8; INLINE_KEY],
    },
    Boxed {
        dirty: bool,
        key: Box<str>,
    },
}

impl Key {
    fn new(key: &str, dirty: bool) -> Key {
        let b = key.as_bytes();
        if b.len() <= INLINE_KEY {
            let mut bytes = [0u8; INLINE_KEY];
            bytes[..b.len()].copy_from_slice(b);
            Key::Inline {
                len: b.len() as u8,
                dirty,
                bytes,
            }
        } else {
            Key::Boxed {
                dirty,
                key: key.into(),
            }
        }
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes, .. } => &bytes[..*len as usize],
            Key::Boxed { key, .. } => key.as_bytes(),
        }
    }

    /// A copy of the key, its flag clear (for `dirty`).
    #[inline]
    fn unflagged(&self) -> Key {
        match self {
            Key::Inline { len, bytes, .. } => Key::Inline {
                len: *len,
                dirty: false,
                bytes: *bytes,
            },
            Key::Boxed { key, .. } => Key::Boxed {
                dirty: false,
                key: key.clone(),
            },
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Boxed { key, .. } => key.into(),
            inline => inline.as_str().to_string(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` whole: always UTF-8, the fallback is unreachable.
            Key::Inline { len, bytes, .. } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            Key::Boxed { key, .. } => key,
        }
    }

    #[inline]
    fn dirty(&self) -> bool {
        match self {
            Key::Inline { dirty, .. } | Key::Boxed { dirty, .. } => *dirty,
        }
    }

    #[inline]
    fn set_dirty(&mut self, to: bool) {
        match self {
            Key::Inline { dirty, .. } | Key::Boxed { dirty, .. } => *dirty = to,
        }
    }
}

/// A value of the restored state that cannot be read: the key and why.
#[derive(Debug)]
pub struct Unreadable<E> {
    pub key: String,
    pub error: E,
}

impl<V> KeyedState<V> {
    /// The state a restore found: every entry decoded, the position and metadata of its last
    /// checkpoint. The keys of records the restore dropped count as changed, so the next
    /// checkpoint writes them again over those records.
    pub fn restore<E>(
        restored: Restored,
        decode: impl Fn(&[u8]) -> Result<V, E>,
    ) -> Result<KeyedState<V>, Unreadable<E>> {
        let hasher = SeededState::new();
        let mut entries = HashTable::with_capacity(restored.entries.len());
        let mut digest = StateDigest::default();
        for (key, bytes) in restored.entries {
            match decode(&bytes) {
                Ok(value) => {
                    // The hash of the bytes as stored, not of a re-encoding: that is what the
                    // changelog holds until the key changes.
                    let logged = entry_hash(&key, &bytes);
                    digest.insert(logged);
                    let entry = Box::new(Entry {
                        key: Key::new(&key, false),
                        logged,
                        value,
                    });
                    // A restore holds each key once: no lookup before the insert.
                    entries.insert_unique(hash_key(&hasher, key.as_bytes()), entry, |e| {
                        hash_key(&hasher, e.key.as_bytes())
                    });
                }
                Err(error) => return Err(Unreadable { key, error }),
            }
        }
        let checkpointed = restored.checkpoint.map(|c| (c.next_input_offset, c.app));
        let mut dirty = Vec::new();
        let mut gone = HashSet::with_hasher(hasher);
        for key in restored.unconfirmed {
            let added = match entries.find_mut(hash_key(&hasher, key.as_bytes()), |e| {
                e.key.as_bytes() == key.as_bytes()
            }) {
                Some(e) if e.key.dirty() => false,
                Some(e) => {
                    e.key.set_dirty(true);
                    true
                }
                None => gone.insert(key.clone()),
            };
            if added {
                dirty.push(Key::new(&key, false));
            }
        }
        Ok(KeyedState {
            entries,
            hasher,
            removed: HashMap::new(),
            dirty,
            gone,
            digest,
            next_offset: checkpointed.as_ref().map(|(next, _)| *next),
            checkpointed,
            ctrl: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|e| (e.key.as_str(), &e.value))
    }

    #[inline]
    fn entry(&self, key: &str) -> Option<&Entry<V>> {
        let b = key.as_bytes();
        self.entries
            .find(hash_key(&self.hasher, b), |e| e.key.as_bytes() == b)
            .map(|e| &**e)
    }

    /// Of the partition's state in the changelog as of the last checkpoint built.
    pub fn state_digest(&self) -> StateDigest {
        self.digest
    }

    /// The application metadata of the last checkpoint (restored or written).
    /// The input position of the last checkpoint (restored or made): where the group resumes.
    pub fn checkpointed_offset(&self) -> Option<i64> {
        self.checkpointed.as_ref().map(|(next, _)| *next)
    }

    pub fn checkpointed_app(&self) -> Option<&[u8]> {
        self.checkpointed.as_ref().map(|(_, app)| app.as_slice())
    }

    /// The next input offset to process.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Whether the record at `offset` was processed already (fetched early on purpose, or
    /// delivered twice).
    pub fn is_processed(&self, offset: i64) -> bool {
        self.next_offset.is_some_and(|n| offset < n)
    }

    /// The record at `offset` is being processed.
    pub fn processing(&mut self, offset: i64) {
        self.next_offset = Some(offset + 1);
    }

    /// Applies `f` to the value of `key` (its default when missing), and marks the key changed
    /// when `f` changed the value.
    pub fn update_if_changed<R>(&mut self, key: &str, f: impl FnOnce(&mut V) -> R) -> R
    where
        V: Default + Clone + PartialEq,
    {
        let (entry, dirty) = self.slot(key);
        let before = entry.value.clone();
        let r = f(&mut entry.value);
        if entry.value != before {
            mark_changed(entry, dirty);
        }
        r
    }

    /// Deletes `key`: the next checkpoint writes a tombstone for it (unless it is re-created
    /// first) and takes what the changelog held for it out of the digest.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let b = key.as_bytes();
        let found = self
            .entries
            .find_entry(hash_key(&self.hasher, b), |e| e.key.as_bytes() == b)
            .ok()?;
        let (entry, _) = found.remove();
        if entry.logged != 0 {
            self.removed.insert(key.to_string(), entry.logged);
        }
        // An entry's flag says whether its key is in `dirty`; once the entry is gone, `gone`
        // says it.
        if !entry.key.dirty() {
            self.dirty.push(Key::new(key, false));
        }
        self.gone.insert(key.to_string());
        Some(entry.value)
    }

    /// The entry of `key`, created empty when missing, and the list of changed keys. A key
    /// removed since the last checkpoint gets back its `logged` hash (the changelog still
    /// holds that record until the next one) and its place in `dirty`.
    #[inline]
    fn slot(&mut self, key: &str) -> (&mut Entry<V>, &mut Vec<Key>)
    where
        V: Default,
    {
        let b = key.as_bytes();
        let hasher = &self.hasher;
        let entry = self.entries.entry(
            hash_key(hasher, b),
            |e| e.key.as_bytes() == b,
            |e| hash_key(hasher, e.key.as_bytes()),
        );
        let occupied = match entry {
            hashbrown::hash_table::Entry::Occupied(o) => o,
            hashbrown::hash_table::Entry::Vacant(v) => {
                // Re-created since its removal: its key is in `dirty` already.
                let in_dirty = !self.gone.is_empty() && self.gone.remove(key);
                let created = Box::new(Entry {
                    key: Key::new(key, in_dirty),
                    logged: self.removed.remove(key).unwrap_or(0),
                    value: V::default(),
                });
                v.insert(created)
            }
        };
        let index = occupied.bucket_index();
        let entry = occupied.into_mut();
        self.ctrl = (entry as *const Box<Entry<V>> as usize)
            + (index + 1) * std::mem::size_of::<Box<Entry<V>>>();
        let entry = &mut **entry;
        (entry, &mut self.dirty)
    }

    /// The checkpoint of partition `p`: the changed keys, encoded, and a checkpoint record with
    /// the input position, the state's digest and `app`; `None` before any record, or when
    /// nothing changed since the last checkpoint. Once written, the keys count as unchanged.
    /// A changed key the state lacks (a dropped record's) is written as a tombstone.
    ///
    /// The changed keys are known in advance, so each key's way through the table and its
    /// value's blocks are loaded ahead ([`KeyedState::look_ahead`], [`LoadAhead`]) while the
    /// keys before it are encoded: the states have gone cold since their records.
    pub fn checkpoint(
        &mut self,
        p: i32,
        app: Vec<u8>,
        encode: impl Fn(&V) -> Vec<u8>,
    ) -> Option<PartitionCheckpoint>
    where
        V: LoadAhead,
    {
        let next = self.next_offset?;
        if self.dirty.is_empty()
            && self
                .checkpointed
                .as_ref()
                .is_some_and(|(n, a)| *n == next && *a == app)
        {
            return None;
        }
        let mut records = Vec::with_capacity(self.dirty.len());
        self.gone.clear();
        // Emptied, not dropped: the list keeps its room for the next span, as the set did.
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut keys = dirty.drain(..);
        while let Some(key) = keys.next() {
            self.look_ahead_all(
                keys.as_slice()
                    .iter()
                    .take(CHECKPOINT_AHEAD)
                    .map(Key::as_bytes),
            );
            // Moved out: a long key's own block becomes the record's, no copy.
            let key = key.into_string();
            let b = key.as_bytes();
            match self
                .entries
                .find_mut(hash_key(&self.hasher, b), |e| e.key.as_bytes() == b)
            {
                Some(entry) => {
                    let bytes = encode(&entry.value);
                    let hash = entry_hash(&key, &bytes);
                    if entry.logged == 0 {
                        self.digest.insert(hash);
                    } else {
                        self.digest.replace(entry.logged, hash);
                    }
                    entry.logged = hash;
                    entry.key.set_dirty(false);
                    records.push((key, Some(bytes)));
                }
                None => {
                    if let Some(logged) = self.removed.remove(&key) {
                        self.digest.remove(logged);
                    }
                    records.push((key, None));
                }
            }
        }
        drop(keys);
        self.dirty = dirty;
        self.checkpointed = Some((next, app.clone()));
        Some(PartitionCheckpoint {
            partition: p,
            records,
            checkpoint: Checkpoint {
                next_input_offset: next,
                state: Some(self.digest),
                app,
            },
        })
    }
}

/// Hints for a caller that knows which keys come next (the scorer holds the next few records
/// of its input, [`crate::runtime::service::Service::LOOKAHEAD`]): each loads part of a key's
/// way through the table into the cache, so that its update later finds it there instead of
/// waiting on up to three cache misses one after the other (docs/scale.md, "Lookahead", under "Against the targets"). They
/// read the table only where an earlier hint should have loaded it, and are hints only: a wrong
/// guess (another key in the bucket, a table grown since, a key the table lacks) loads a
/// useless line, never changes a result.
impl<V: LoadAhead> KeyedState<V> {
    /// Loads what the update of `key`, `distance` records from now, reads next: for the next
    /// record (1) the value's own blocks ([`LoadAhead`]), for the one after (2) its entry,
    /// for any later one its bucket. Called for each of the next records as each record is
    /// taken, a key gets all three, one per record, each once the one before has loaded.
    #[inline]
    pub fn look_ahead(&self, key: &[u8], distance: usize) {
        let hash = hash_key(&self.hasher, key);
        match distance {
            0 => {}
            1 => {
                if let Some(e) = self.first_candidate(hash) {
                    e.value.load_ahead();
                }
            }
            2 => {
                if let Some(e) = self.first_candidate(hash) {
                    let p = (e as *const Entry<V>).cast::<u8>();
                    prefetch(p);
                    prefetch(p.wrapping_add(64));
                }
            }
            _ => self.prefetch_bucket(hash),
        }
    }

    /// [`KeyedState::look_ahead`] for the keys of the next records, nearest first (each at
    /// its distance: 1, 2, ...).
    #[inline]
    pub fn look_ahead_all<'k>(&self, next: impl IntoIterator<Item = &'k [u8]>) {
        for (i, key) in next.into_iter().enumerate() {
            self.look_ahead(key, i + 1);
        }
    }

    /// The key's group of control bytes and the bucket slots beside it, from the table's
    /// layout (hashbrown keeps the slots before the control bytes, in reverse order), without
    /// reading either.
    #[inline]
    fn prefetch_bucket(&self, hash: u64) {
        let buckets = self.entries.num_buckets();
        if self.ctrl == 0 || buckets == 0 {
            return;
        }
        let pos = (hash as usize) & (buckets - 1);
        prefetch(self.ctrl.wrapping_add(pos) as *const u8);
        // The slots of the group's first buckets, where a key nearly always sits.
        let slot = self.ctrl.wrapping_sub((pos + 1) * SLOT);
        prefetch(slot as *const u8);
        prefetch(slot.wrapping_sub(7 * SLOT) as *const u8);
    }

    /// The entry of the first bucket whose control byte matches `hash`, keys not compared.
    #[inline]
    fn first_candidate(&self, hash: u64) -> Option<&Entry<V>> {
        let i = self.entries.iter_hash_buckets(hash).next()?;
        self.entries.get_bucket(i).map(|e| &**e)
    }
}

/// How many changed keys ahead a checkpoint loads (the scorer's own lookahead, as
/// [`KeyedState::look_ahead`]'s three steps need).
const CHECKPOINT_AHEAD: usize = 3;

/// What a value's encoding reads beyond its entry, loaded ahead by a checkpoint: a hint only.
pub trait LoadAhead {
    /// Loads the value's heap blocks into the cache; by default nothing.
    fn load_ahead(&self) {}
}

/// The blocks `UserState::encode` and `Engine::apply` read first.
impl LoadAhead for UserState {
    fn load_ahead(&self) {
        leadscore_engine::engine::prefetch_state(self);
    }
}

impl LoadAhead for String {}

/// Bytes of one bucket slot: a pointer.
const SLOT: usize = std::mem::size_of::<Box<Entry<()>>>();

/// The scorer's users: the engine updates them through [`UserStore`], which marks each
/// updated user changed.
impl UserStore for KeyedState<UserState> {
    fn update<R>(&mut self, user_id: &str, f: impl FnOnce(&mut UserState) -> R) -> R {
        let (entry, dirty) = self.slot(user_id);
        mark_changed(entry, dirty);
        f(&mut entry.value)
    }

    fn get(&self, user_id: &str) -> Option<&UserState> {
        KeyedState::get(self, user_id)
    }

    fn remove(&mut self, user_id: &str) -> Option<UserState> {
        KeyedState::remove(self, user_id)
    }
}

/// Marks an entry changed since the last checkpoint: its flag, and its key added to `dirty`
/// unless the flag was set already.
#[inline]
fn mark_changed<V>(entry: &mut Entry<V>, dirty: &mut Vec<Key>) {
    if !entry.key.dirty() {
        entry.key.set_dirty(true);
        dirty.push(entry.key.unflagged());
    }
}

/// The hash of a key as the table keeps it (of its bytes, the same for every lookup).
#[inline]
fn hash_key(hasher: &SeededState, key: &[u8]) -> u64 {
    hasher.hash_one(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restored(entries: &[(&str, &str)], checkpoint: Option<(i64, &[u8])>) -> Restored {
        Restored {
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            checkpoint: checkpoint.map(|(n, app)| Checkpoint {
                next_input_offset: n,
                state: Some(StateDigest::of(
                    entries.iter().map(|(k, v)| (*k, v.as_bytes())),
                )),
                app: app.to_vec(),
            }),
            ..Restored::default()
        }
    }

    fn utf8(b: &[u8]) -> Result<String, std::str::Utf8Error> {
        std::str::from_utf8(b).map(str::to_string)
    }

    #[test]
    fn a_checkpoint_holds_exactly_the_changed_keys_and_is_skipped_when_nothing_changed() {
        let mut s =
            KeyedState::restore(restored(&[("a", "1"), ("b", "2")], Some((10, b"x"))), utf8)
                .expect("readable");
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_offset(), Some(10));
        assert_eq!(s.checkpointed_app(), Some(&b"x"[..]));
        assert!(s.is_processed(9));
        assert!(!s.is_processed(10));
        let enc = |v: &String| v.as_bytes().to_vec();
        assert!(s.checkpoint(0, b"x".to_vec(), enc).is_none(), "nothing new");

        s.processing(10);
        s.update_if_changed("b", |v| *v = "3".into());
        s.update_if_changed("c", |v| v.push('4'));
        s.update_if_changed("a", |v| v.clone()); // read, not changed
        let cp = s.checkpoint(2, b"y".to_vec(), enc).expect("changes");
        assert_eq!(cp.partition, 2);
        assert_eq!(cp.checkpoint.next_input_offset, 11);
        assert_eq!(cp.checkpoint.app, b"y");
        let mut records = cp.records.clone();
        records.sort();
        assert_eq!(
            records,
            [
                ("b".to_string(), Some(b"3".to_vec())),
                ("c".to_string(), Some(b"4".to_vec()))
            ]
        );
        assert!(
            s.checkpoint(2, b"y".to_vec(), enc).is_none(),
            "written already"
        );
        // New metadata alone (a moved clock) is worth a checkpoint.
        let cp = s.checkpoint(2, b"z".to_vec(), enc).expect("new metadata");
        assert!(cp.records.is_empty());
    }

    #[test]
    fn no_checkpoint_before_any_record_and_unreadable_values_are_named() {
        let mut s: KeyedState<String> =
            KeyedState::restore(restored(&[], None), utf8).expect("empty");
        assert!(s
            .checkpoint(0, Vec::new(), |v| v.as_bytes().to_vec())
            .is_none());
        let mut bad = restored(&[], None);
        bad.entries.insert("k".into(), vec![0xff]);
        let err = KeyedState::restore(bad, utf8).expect_err("not UTF-8");
        assert_eq!(err.key, "k");
    }

    #[test]
    fn the_digest_follows_the_changed_keys_and_equals_a_full_recount() {
        let enc = |v: &String| v.as_bytes().to_vec();
        let mut s = KeyedState::restore(restored(&[("a", "1"), ("b", "2")], Some((10, b""))), utf8)
            .expect("readable");
        let full =
            |pairs: &[(&str, &str)]| StateDigest::of(pairs.iter().map(|(k, v)| (*k, v.as_bytes())));
        assert_eq!(s.state_digest(), full(&[("a", "1"), ("b", "2")]));

        s.processing(10);
        s.update_if_changed("b", |v| *v = "3".into());
        s.update_if_changed("c", |v| *v = "4".into());
        // Only read: not in the changelog, so neither counted nor hashed.
        s.update_if_changed("d", |v| v.clone());
        let cp = s.checkpoint(0, Vec::new(), enc).expect("changes");
        let want = full(&[("a", "1"), ("b", "3"), ("c", "4")]);
        assert_eq!(cp.checkpoint.state, Some(want));
        assert_eq!(s.state_digest(), want);
        assert_eq!(want.keys, 3);

        // A value changed back and forth between checkpoints counts once, as it ends.
        s.processing(11);
        s.update_if_changed("a", |v| *v = "x".into());
        s.update_if_changed("a", |v| *v = "5".into());
        let cp = s.checkpoint(0, Vec::new(), enc).expect("changes");
        assert_eq!(
            cp.checkpoint.state,
            Some(full(&[("a", "5"), ("b", "3"), ("c", "4")]))
        );
    }

    #[test]
    fn a_removed_key_is_a_tombstone_and_leaves_the_digest_as_a_full_recount() {
        let enc = |v: &String| v.as_bytes().to_vec();
        let full =
            |pairs: &[(&str, &str)]| StateDigest::of(pairs.iter().map(|(k, v)| (*k, v.as_bytes())));
        let mut s = KeyedState::restore(
            restored(&[("a", "1"), ("b", "2"), ("c", "3")], Some((10, b""))),
            utf8,
        )
        .expect("readable");
        s.processing(10);
        assert_eq!(s.remove("a"), Some("1".to_string()));
        assert_eq!(s.remove("a"), None, "gone already");
        assert_eq!(s.remove("never"), None);
        // Removed, then re-created before the checkpoint: a plain new value over the old record.
        s.remove("b");
        s.update_if_changed("b", |v| *v = "4".into());
        let cp = s.checkpoint(0, Vec::new(), enc).expect("changes");
        let mut records = cp.records.clone();
        records.sort();
        assert_eq!(
            records,
            [
                ("a".to_string(), None),
                ("b".to_string(), Some(b"4".to_vec()))
            ]
        );
        let want = full(&[("b", "4"), ("c", "3")]);
        assert_eq!(cp.checkpoint.state, Some(want));
        assert_eq!(want.keys, 2);

        // A key created and removed between two checkpoints was never logged: the tombstone
        // is harmless and the digest is untouched.
        s.processing(11);
        s.update_if_changed("d", |v| *v = "5".into());
        s.remove("d");
        s.remove("c");
        let cp = s.checkpoint(0, Vec::new(), enc).expect("changes");
        assert_eq!(cp.checkpoint.state, Some(full(&[("b", "4")])));
        assert!(
            s.checkpoint(0, Vec::new(), enc).is_none(),
            "nothing left over"
        );
    }

    /// What a user costs in the table: a key with its flag in 24 bytes, and a user's entry
    /// within the allocator's 128-byte size class (issue 14; 160 before 2026-12-04's fourth session).
    #[test]
    fn a_users_entry_fits_128_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        assert!(std::mem::size_of::<Entry<UserState>>() <= 128);
        let mut k = Key::new(&"k".repeat(INLINE_KEY + 1), false);
        k.set_dirty(true);
        assert!(k.dirty());
        assert_eq!(k.as_str(), "k".repeat(INLINE_KEY + 1));
    }

    /// The lookahead hints compute bucket addresses from hashbrown's layout (slots before the
    /// control bytes, in reverse order); this fails if a new hashbrown lays its table out
    /// otherwise (the hints would then load useless lines, never change a result). The first
    /// candidate is the key's own entry for nearly every key.
    #[test]
    fn the_hints_find_each_keys_bucket_and_entry_as_the_table_lays_them_out() {
        /// A value that counts the loads asked of it.
        #[derive(Clone, Debug, Default, PartialEq)]
        struct Counted(u64, std::cell::Cell<u32>);
        impl LoadAhead for Counted {
            fn load_ahead(&self) {
                self.1.set(self.1.get() + 1);
            }
        }
        let loads = |s: &KeyedState<Counted>| s.entries().map(|(_, v)| v.1.get()).sum::<u32>();
        let mut s: KeyedState<Counted> = KeyedState::default();
        // No table yet: nothing to load, no fault.
        for d in 0..4 {
            s.look_ahead(b"none yet", d);
        }
        let keys: Vec<String> = (0..5_000).map(|i| format!("user-{i:07}")).collect();
        let (mut own, mut near) = (0, 0);
        for (n, k) in keys.iter().enumerate() {
            s.update_if_changed(k, |v| v.0 = n as u64);
            // After every insert (the table grows as it goes), every key so far, checked at
            // powers of two to keep it quick.
            if !(n + 1).is_power_of_two() && n + 1 != keys.len() {
                continue;
            }
            for k in &keys[..=n] {
                let h = hash_key(&s.hasher, k.as_bytes());
                let i = s
                    .entries
                    .find_bucket_index(h, |e| e.key.as_str() == k)
                    .expect("inserted");
                let slot = s.entries.get_bucket(i).expect("occupied") as *const _ as usize;
                assert_eq!(slot, s.ctrl - (i + 1) * SLOT, "{k}: bucket {i}");
                // The probe starts where the hints load: the bucket at the hash's low bits,
                // and the key sits within the first group of 16 from there.
                let mask = s.entries.num_buckets() - 1;
                if i.wrapping_sub(h as usize) & mask < 16 {
                    near += 1;
                }
                let own_before = s.get(k).map_or(0, |v| v.1.get());
                let all_before = loads(&s);
                s.look_ahead(k.as_bytes(), 1);
                if s.get(k).map_or(0, |v| v.1.get()) == own_before + 1 {
                    own += 1;
                }
                for d in [0, 2, 3, 9] {
                    s.look_ahead(k.as_bytes(), d);
                }
                assert_eq!(loads(&s), all_before + 1, "only the next record's value");
            }
        }
        let checked: usize = (0..13).map(|b| 1usize << b).sum::<usize>() + keys.len();
        assert!(own * 100 >= checked * 99, "{own} of {checked}");
        assert!(near * 100 >= checked * 99, "{near} of {checked}");
        // A key the table lacks loads at most another key's value, and changes nothing.
        let before: Vec<(String, u64)> = s.entries().map(|(k, v)| (k.to_string(), v.0)).collect();
        for d in 0..4 {
            s.look_ahead(b"user-absent", d);
        }
        let after: Vec<(String, u64)> = s.entries().map(|(k, v)| (k.to_string(), v.0)).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn keys_short_and_long_are_found_and_each_changed_key_is_written_once() {
        // Around the inline limit, empty, multi-byte, and long enough to be boxed.
        let keys: Vec<String> = [0, 1, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 200]
            .iter()
            .map(|&n| "k".repeat(n))
            .chain(["é".repeat(11), "é".repeat(12), "ü-user-42".into()])
            .collect();
        let enc = |v: &String| v.as_bytes().to_vec();
        let mut s: KeyedState<String> = KeyedState::default();
        s.processing(0);
        for round in 0..3 {
            for (i, k) in keys.iter().enumerate() {
                // Twice per round: the second finds the key changed already.
                s.update_if_changed(k, |v| *v = format!("{round}-{i}"));
                s.update_if_changed(k, |v| v.push('!'));
            }
            assert_eq!(s.len(), keys.len());
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(s.get(k), Some(&format!("{round}-{i}!")), "{k:?}");
            }
            let mut listed: Vec<&str> = s.entries().map(|(k, _)| k).collect();
            listed.sort();
            let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
            want.sort();
            assert_eq!(listed, want);
            let cp = s.checkpoint(0, vec![round], enc).expect("changes");
            let mut written: Vec<String> = cp.records.iter().map(|(k, _)| k.clone()).collect();
            written.sort();
            let mut want: Vec<String> = keys.clone();
            want.sort();
            assert_eq!(written, want, "every key once, round {round}");
        }
        assert_eq!(s.get(&"k".repeat(INLINE_KEY + 2)), None);
        // A removed long key, re-created before the checkpoint: one record, its new value.
        let long = &keys[5];
        assert_eq!(s.remove(long), Some("2-5!".to_string()));
        assert_eq!(s.get(long), None);
        s.update_if_changed(long, |v| *v = "back".into());
        let cp = s.checkpoint(0, vec![9], enc).expect("changes");
        assert_eq!(cp.records, [(long.clone(), Some(b"back".to_vec()))]);
    }

    #[test]
    fn keys_of_dropped_records_are_written_again_at_the_next_checkpoint() {
        let mut r = restored(&[("a", "1")], Some((5, b"")));
        r.unconfirmed = vec!["a".to_string(), "gone".to_string()];
        let mut s = KeyedState::restore(r, utf8).expect("readable");
        // Nothing else changed, yet the checkpoint supersedes the dropped records.
        let cp = s
            .checkpoint(0, Vec::new(), |v: &String| v.as_bytes().to_vec())
            .expect("the dropped keys are due");
        let mut records = cp.records.clone();
        records.sort();
        assert_eq!(
            records,
            [
                ("a".to_string(), Some(b"1".to_vec())),
                ("gone".to_string(), None)
            ]
        );
        assert_eq!(
            cp.checkpoint.state,
            Some(StateDigest::of([("a", b"1".as_slice())]))
        );
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// Short keys (held inline) and one past `INLINE_KEY` (boxed).
    const KEYS: [&str; 4] = ["a", "b", "c", "a-user-id-longer-than-21-bytes"];

    #[derive(Clone, Debug)]
    enum Op {
        /// The engine's path, `UserStore::update`: marks the key changed whatever it does.
        Update(usize, i64),
        /// `update_if_changed` to this score (the same score: no change).
        SetIfChanged(usize, i64),
        /// `update_if_changed` changing nothing: creates an unchanged entry when missing.
        Read(usize),
        Remove(usize),
        /// A checkpoint at a new input position, or at the same one.
        Checkpoint {
            moved: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..KEYS.len(), 0i64..3).prop_map(|(k, v)| Op::Update(k, v)),
            3 => (0..KEYS.len(), 0i64..3).prop_map(|(k, v)| Op::SetIfChanged(k, v)),
            1 => (0..KEYS.len()).prop_map(Op::Read),
            2 => (0..KEYS.len()).prop_map(Op::Remove),
            1 => any::<bool>().prop_map(|moved| Op::Checkpoint { moved }),
        ]
    }

    fn state(score: i64) -> UserState {
        let mut st = UserState::default();
        st.score = score;
        st
    }

    fn encode(st: &UserState) -> Vec<u8> {
        st.score.to_le_bytes().to_vec()
    }

    /// The invariants the changed-flags rest on: an entry's flag says whether its key is in
    /// `dirty`; a key without an entry is in `dirty` exactly when it is in `gone`; no key is in
    /// `dirty` twice; every removed key that the changelog holds is in `gone`.
    fn check_invariants(s: &KeyedState<UserState>) -> Result<(), TestCaseError> {
        let listed: Vec<&str> = s.dirty.iter().map(Key::as_str).collect();
        let once: BTreeSet<&str> = listed.iter().copied().collect();
        prop_assert_eq!(listed.len(), once.len(), "twice in dirty: {:?}", listed);
        for e in s.entries.iter() {
            let key = e.key.as_str();
            prop_assert_eq!(e.key.dirty(), once.contains(key), "{}", key);
            prop_assert!(!s.gone.contains(key), "{} has an entry and is gone", key);
        }
        for key in &once {
            if s.entry(key).is_none() {
                prop_assert!(
                    s.gone.contains(*key),
                    "{} in dirty without entry or gone",
                    key
                );
            }
        }
        for key in &s.gone {
            prop_assert!(once.contains(key.as_str()), "{} gone, not in dirty", key);
        }
        for key in s.removed.keys() {
            prop_assert!(s.gone.contains(key), "{} removed, not gone", key);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// Against a model of what the changelog must get: every checkpoint writes each key
        /// changed or removed since the last one exactly once (its value, or a tombstone when
        /// it is gone), nothing else, and its digest is a full recount of what the changelog
        /// then holds; a checkpoint at the same position with nothing changed writes nothing.
        /// Keys removed and re-created, removed twice, only read, changed back and forth, and
        /// a restore's unconfirmed keys (repeated, with and without a state, with and without
        /// a checkpoint) included; the flags' invariants hold after every call.
        #[test]
        fn checkpoints_write_each_changed_key_once_and_the_digest_recounts(
            held in prop::collection::btree_map(0..KEYS.len(), 0i64..3, 0..4),
            unconfirmed in prop::collection::vec(0..KEYS.len(), 0..5),
            checkpointed in any::<bool>(),
            ops in prop::collection::vec(op(), 0..60),
        ) {
            let pairs: Vec<(&str, Vec<u8>)> =
                held.iter().map(|(k, v)| (KEYS[*k], encode(&state(*v)))).collect();
            let restored = Restored {
                entries: pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
                checkpoint: checkpointed.then(|| Checkpoint {
                    next_input_offset: 0,
                    state: Some(StateDigest::of(pairs.iter().map(|(k, v)| (*k, v.as_slice())))),
                    app: Vec::new(),
                }),
                unconfirmed: unconfirmed.iter().map(|k| KEYS[*k].to_string()).collect(),
                ..Restored::default()
            };
            let mut s = KeyedState::restore(restored, |b: &[u8]| {
                b.try_into().map(|a| state(i64::from_le_bytes(a)))
            })
            .expect("readable");
            check_invariants(&s)?;
            // The model: the scores held, what the changelog holds, the keys changed since.
            let mut now: BTreeMap<&str, i64> =
                held.iter().map(|(k, v)| (KEYS[*k], *v)).collect();
            let mut logged = now.clone();
            let mut changed: BTreeSet<&str> = unconfirmed.iter().map(|k| KEYS[*k]).collect();
            let mut offset = 0;
            s.processing(offset);
            for op in ops.into_iter().chain([Op::Checkpoint { moved: true }]) {
                match op {
                    Op::Update(k, v) => {
                        let key = KEYS[k];
                        UserStore::update(&mut s, key, |st| st.score = v);
                        changed.insert(key);
                        now.insert(key, v);
                    }
                    Op::SetIfChanged(k, v) => {
                        let key = KEYS[k];
                        s.update_if_changed(key, |st| st.score = v);
                        if now.get(key).copied().unwrap_or(0) != v {
                            changed.insert(key);
                        }
                        now.insert(key, v);
                    }
                    Op::Read(k) => {
                        let key = KEYS[k];
                        s.update_if_changed(key, |st| st.score);
                        now.entry(key).or_insert(0);
                    }
                    Op::Remove(k) => {
                        let key = KEYS[k];
                        let had = now.remove(key);
                        if had.is_some() {
                            changed.insert(key);
                        }
                        prop_assert_eq!(s.remove(key).map(|st| st.score), had);
                    }
                    Op::Checkpoint { moved } => {
                        if moved {
                            offset += 1;
                            s.processing(offset);
                        }
                        let cp = s.checkpoint(0, Vec::new(), encode);
                        let Some(cp) = cp else {
                            prop_assert!(changed.is_empty(), "{:?} not written", changed);
                            prop_assert!(!moved, "no checkpoint at a new position");
                            continue;
                        };
                        let keys: Vec<&str> = cp.records.iter().map(|(k, _)| k.as_str()).collect();
                        let once: BTreeSet<&str> = keys.iter().copied().collect();
                        prop_assert_eq!(keys.len(), once.len(), "a key written twice: {:?}", keys);
                        prop_assert_eq!(&once, &changed);
                        for (k, v) in &cp.records {
                            let key = KEYS.iter().copied().find(|x| x == k).unwrap_or_default();
                            prop_assert_eq!(v, &now.get(key).map(|v| encode(&state(*v))), "{}", k);
                            match now.get(key) {
                                Some(v) => logged.insert(key, *v),
                                None => logged.remove(key),
                            };
                        }
                        changed.clear();
                        prop_assert_eq!(
                            cp.checkpoint.state,
                            Some(StateDigest::of(
                                logged.iter().map(|(k, v)| (*k, encode(&state(*v))))
                                    .collect::<Vec<_>>()
                                    .iter()
                                    .map(|(k, v)| (*k, v.as_slice()))
                            ))
                        );
                        prop_assert!(s.dirty.is_empty() && s.gone.is_empty() && s.removed.is_empty());
                    }
                }
                check_invariants(&s)?;
            }
        }
    }
}
