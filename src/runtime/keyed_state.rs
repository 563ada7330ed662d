//! One owned partition's keyed state, as both services keep it in memory: values by key, the
//! keys changed since the last checkpoint, and the input position. It turns a restore into
//! state and the state into the next checkpoint ([`PartitionCheckpoint`]) for
//! [`Changelog::commit`](crate::changelog::Changelog::commit).

use crate::changelog::{Checkpoint, PartitionCheckpoint, Restored};
use crate::partition::UserStore;
use crate::state::UserState;
use std::collections::{HashMap, HashSet};

/// The state of one owned partition.
#[derive(Debug, Default)]
pub struct KeyedState<V> {
    entries: HashMap<String, V>,
    /// Keys changed since the last checkpoint.
    dirty: HashSet<String>,
    /// The next input offset to process; `None` until the first record (or a checkpoint).
    next_offset: Option<i64>,
    /// The input position and metadata of the last checkpoint, to skip one that would repeat
    /// it.
    checkpointed: Option<(i64, Vec<u8>)>,
}

/// A value of the restored state that cannot be read: the key and why.
#[derive(Debug)]
pub struct Unreadable<E> {
    pub key: String,
    pub error: E,
}

impl<V> KeyedState<V> {
    /// The state a restore found: every entry decoded, the position and metadata of its last
    /// checkpoint.
    pub fn restore<E>(
        restored: Restored,
        decode: impl Fn(&[u8]) -> Result<V, E>,
    ) -> Result<KeyedState<V>, Unreadable<E>> {
        let mut entries = HashMap::with_capacity(restored.entries.len());
        for (key, bytes) in restored.entries {
            match decode(&bytes) {
                Ok(v) => {
                    entries.insert(key, v);
                }
                Err(error) => return Err(Unreadable { key, error }),
            }
        }
        let checkpointed = restored.checkpoint.map(|c| (c.next_input_offset, c.app));
        Ok(KeyedState {
            entries,
            dirty: HashSet::new(),
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

    pub fn entries(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
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
        let value = self.entries.entry(key.to_string()).or_default();
        let before = value.clone();
        let r = f(value);
        if *value != before && !self.dirty.contains(key) {
            self.dirty.insert(key.to_string());
        }
        r
    }

    /// The checkpoint of partition `p`: the changed keys, encoded, and a checkpoint record with
    /// the input position and `app`; `None` before any record, or when nothing changed since
    /// the last checkpoint. Once written, the keys count as unchanged.
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
        let records = self
            .dirty
            .drain()
            .filter_map(|key| {
                let bytes = encode(self.entries.get(&key)?);
                Some((key, Some(bytes)))
            })
            .collect();
        self.checkpointed = Some((next, app.clone()));
        Some(PartitionCheckpoint {
            partition: p,
            records,
            checkpoint: Checkpoint {
                next_input_offset: next,
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
        self.entries.update(user_id, f)
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
}
