//! One owned partition's keyed state, as both services keep it in memory: values by key, the
//! keys changed since the last checkpoint, and the input position. It turns a restore into
//! state and the state into the next checkpoint ([`PartitionCheckpoint`]) for
//! [`Changelog::commit`](crate::runtime::changelog::Changelog::commit).

use crate::partition::UserStore;
use crate::runtime::changelog::{
    entry_hash, Checkpoint, PartitionCheckpoint, Restored, StateDigest,
};
use crate::state::UserState;
use leadscore_engine::hash::SeededState;
use std::collections::{HashMap, HashSet};

/// The state of one owned partition.
#[derive(Debug, Default)]
pub struct KeyedState<V> {
    /// Keyed by input ids (user ids): a seeded hasher, fast and flood-resistant
    /// ([`leadscore_engine::hash`]).
    /// Keys as `Box<str>`: a bucket holds 8 bytes less than with `String` (no capacity).
    entries: HashMap<Box<str>, Slot<V>, SeededState>,
    /// Keys changed since the last checkpoint.
    dirty: HashSet<String, SeededState>,
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
}

/// One key's value and the [`entry_hash`] of the bytes the changelog holds for it: 8 bytes per
/// key buy a checkpoint that updates the digest from the changed keys alone.
///
/// The value is boxed. The map's table has a slot per bucket, and a table of a million keys
/// has about two million buckets (hashbrown keeps it at most 7/8 full and doubles it): inline, a
/// user state's 180-odd bytes per bucket made about 450 of a user's 1,470 resident bytes at
/// 1M users, half of them in empty buckets. Boxed, a bucket is 40 bytes (docs/scale.md).
#[derive(Debug, Default)]
struct Slot<V> {
    value: Box<V>,
    /// 0: the changelog has no record of this key (it was only ever read, never changed).
    logged: u64,
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
        let mut entries =
            HashMap::with_capacity_and_hasher(restored.entries.len(), SeededState::new());
        let mut digest = StateDigest::default();
        for (key, bytes) in restored.entries {
            match decode(&bytes) {
                Ok(value) => {
                    // The hash of the bytes as stored, not of a re-encoding: that is what the
                    // changelog holds until the key changes.
                    let logged = entry_hash(&key, &bytes);
                    digest.insert(logged);
                    entries.insert(
                        key.into_boxed_str(),
                        Slot {
                            value: Box::new(value),
                            logged,
                        },
                    );
                }
                Err(error) => return Err(Unreadable { key, error }),
            }
        }
        let checkpointed = restored.checkpoint.map(|c| (c.next_input_offset, c.app));
        Ok(KeyedState {
            entries,
            removed: HashMap::new(),
            dirty: restored.unconfirmed.into_iter().collect(),
            digest,
            next_offset: checkpointed.as_ref().map(|(next, _)| *next),
            checkpointed,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key).map(|s| &*s.value)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, s)| (&**k, &*s.value))
    }

    /// Of the partition's state in the changelog as of the last checkpoint built.
    pub fn state_digest(&self) -> StateDigest {
        self.digest
    }

    /// The application metadata of the last checkpoint (restored or written).
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
        let value = &mut self.slot(key).value;
        let before = value.clone();
        let r = f(value);
        if *value != before && !self.dirty.contains(key) {
            self.dirty.insert(key.to_string());
        }
        r
    }

    /// Deletes `key`: the next checkpoint writes a tombstone for it (unless it is re-created
    /// first) and takes what the changelog held for it out of the digest.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let slot = self.entries.remove(key)?;
        if slot.logged != 0 {
            self.removed.insert(key.to_string(), slot.logged);
        }
        if !self.dirty.contains(key) {
            self.dirty.insert(key.to_string());
        }
        Some(*slot.value)
    }

    /// The slot of `key`, created empty when missing. A key removed since the last checkpoint
    /// gets back its `logged` hash: the changelog still holds that record until the next one.
    fn slot(&mut self, key: &str) -> &mut Slot<V>
    where
        V: Default,
    {
        let removed = &mut self.removed;
        self.entries.entry(Box::from(key)).or_insert_with(|| Slot {
            value: Box::default(),
            logged: removed.remove(key).unwrap_or(0),
        })
    }

    /// The checkpoint of partition `p`: the changed keys, encoded, and a checkpoint record with
    /// the input position, the state's digest and `app`; `None` before any record, or when
    /// nothing changed since the last checkpoint. Once written, the keys count as unchanged.
    /// A changed key the state lacks (a dropped record's) is written as a tombstone.
    pub fn checkpoint(
        &mut self,
        p: i32,
        app: Vec<u8>,
        encode: impl Fn(&V) -> Vec<u8>,
    ) -> Option<PartitionCheckpoint> {
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
        for key in self.dirty.drain() {
            match self.entries.get_mut(key.as_str()) {
                Some(slot) => {
                    let bytes = encode(&slot.value);
                    let hash = entry_hash(&key, &bytes);
                    if slot.logged == 0 {
                        self.digest.insert(hash);
                    } else {
                        self.digest.replace(slot.logged, hash);
                    }
                    slot.logged = hash;
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

/// The scorer's users: the engine updates them through [`UserStore`], which marks each
/// updated user changed.
impl UserStore for KeyedState<UserState> {
    fn update<R>(&mut self, user_id: &str, f: impl FnOnce(&mut UserState) -> R) -> R {
        if !self.dirty.contains(user_id) {
            self.dirty.insert(user_id.to_string());
        }
        match self.entries.get_mut(user_id) {
            Some(slot) => f(&mut slot.value),
            None => f(&mut self.slot(user_id).value),
        }
    }

    fn get(&self, user_id: &str) -> Option<&UserState> {
        self.entries.get(user_id).map(|s| &*s.value)
    }

    fn remove(&mut self, user_id: &str) -> Option<UserState> {
        KeyedState::remove(self, user_id)
    }
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
