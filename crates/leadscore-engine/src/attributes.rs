//! A user's attributes, kept encoded in one buffer (issue 14: memory per user).
//!
//! As `(String, Scalar)` pairs, four attributes cost a `Vec` block of four 56-byte pairs plus a
//! heap block per name and per string value: about 450 bytes and nine allocations per user, each
//! a likely cache miss when the engine reads it. Here they are one buffer of about 100 bytes,
//! in exactly the encoding the state record uses for them (so encoding the state copies it), and
//! reads decode values in place as [`ScalarRef`]s.
//!
//! An entry: the name (varint length and bytes), a tag (0 string, 1 integer, 2 float, 3 false,
//! 4 true) and the value (a string as varint length and bytes, an integer as a zigzag varint, a
//! float as 8 little-endian bytes). Entries are sorted by name, names unique. Only this module
//! writes the buffer, from `&str`s, and [`Attributes::decode`] validates what it reads, so every
//! buffer is well formed; a read that still met a damaged one would end, not panic.

use crate::event::{Scalar, ScalarRef};
use crate::state::{
    bytes_cmp, bytes_eq, put_i64, put_u64, varint_len, zigzag_len, Reader, StateError,
};
use std::cmp::Ordering;

const STR: u8 = 0;
const INT: u8 = 1;
const FLOAT: u8 = 2;
const FALSE: u8 = 3;
const TRUE: u8 = 4;

/// A user's current attributes, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Exact size, so a box: no capacity word in every user's state.
    bytes: Box<[u8]>,
}

/// One entry of the buffer, where it starts and ends. The value is decoded when asked for, so
/// a scan past an entry reads only its name and skips its value.
struct Entry<'a> {
    name: &'a [u8],
    tag: u8,
    /// The value's bytes after the tag (for a string, after its length).
    raw: &'a [u8],
    start: usize,
    end: usize,
}

impl<'a> Entry<'a> {
    #[inline]
    fn value(&self) -> ScalarRef<'a> {
        let mut r = Reader::new(self.raw);
        match self.tag {
            // SAFETY: only this module writes the buffer, which is private: `put_entry` copies
            // a string value from a `&str`, `decode` checks every string value is UTF-8 before
            // keeping the bytes, and `Entries` hands out exactly the bytes a string entry's
            // length covers. Checking again here cost 2-3% of the engine's time (a profile of
            // `Partition::process`): every audience predicate reads values.
            STR => ScalarRef::Str(unsafe { std::str::from_utf8_unchecked(self.raw) }),
            INT => ScalarRef::Int(r.i64().unwrap_or_default()),
            FLOAT => ScalarRef::Float(f64::from_le_bytes(r.array().unwrap_or_default())),
            FALSE => ScalarRef::Bool(false),
            _ => ScalarRef::Bool(true),
        }
    }
}

impl Attributes {
    /// How many attributes there are (a scan: for encoding and tests, not the hot path).
    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The attribute `name`, if the user has it.
    #[inline]
    pub fn get(&self, name: &str) -> Option<ScalarRef<'_>> {
        self.find(name.as_bytes()).ok().map(|e| e.value())
    }

    /// The attributes in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, ScalarRef<'_>)> + '_ {
        self.entries()
            .filter_map(|e| Some((std::str::from_utf8(e.name).ok()?, e.value())))
    }

    /// Looks up the names of several `items` in one pass over the buffer: `items` sorted by
    /// `name` (as bytes, ascending; repeats allowed). Calls `f` on each item in order with its
    /// attribute's value, `None` when the user has none, and stops as soon as `f` returns
    /// false, which it then returns too. One scan for all of them instead of one per name: the
    /// audience's predicates, read on most events.
    #[inline]
    pub(crate) fn all_sorted<T>(
        &self,
        items: &[T],
        name: impl Fn(&T) -> &str,
        mut f: impl FnMut(&T, Option<ScalarRef<'_>>) -> bool,
    ) -> bool {
        let mut entries = self.entries();
        let mut entry = entries.next();
        for item in items {
            let key = name(item).as_bytes();
            while entry
                .as_ref()
                .is_some_and(|e| bytes_cmp(e.name, key) == Ordering::Less)
            {
                entry = entries.next();
            }
            let value = entry
                .as_ref()
                .filter(|e| bytes_eq(e.name, key))
                .map(Entry::value);
            if !f(item, value) {
                return false;
            }
        }
        true
    }

    /// Sets (or with `None` removes) an attribute. Returns whether its value changed.
    ///
    /// The buffer is kept at its exact size: a user's attributes change rarely, and a spare
    /// half in every user's buffer would cost more memory than the copies save time.
    pub fn set(&mut self, name: &str, value: Option<&Scalar>) -> bool {
        self.set_within(name, value, usize::MAX)
    }

    /// [`Attributes::set`], unless it would take the entries past `max` bytes and grow them
    /// (then nothing changes and the result is false): the per-user bound
    /// ([`crate::engine::MAX_ATTRIBUTE_BYTES`]) checked in the same scan that finds the entry.
    pub fn set_within(&mut self, name: &str, value: Option<&Scalar>, max: usize) -> bool {
        let (range, value) = match (self.find(name.as_bytes()), value) {
            (Ok(e), Some(v)) if e.value().same(v) => return false,
            (Ok(e), v) => (e.start..e.end, v),
            (Err(at), Some(v)) => (at..at, Some(v)),
            (Err(_), None) => return false,
        };
        let size = value.map_or(0, |v| entry_len(name, v));
        let len = self.bytes.len() - range.len() + size;
        if len > max && len > self.bytes.len() {
            return false;
        }
        // One exact-size buffer, written once: cheaper than splicing into the old one and
        // then fitting it.
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&self.bytes[..range.start]);
        if let Some(v) = value {
            put_entry(&mut out, name, v);
        }
        out.extend_from_slice(&self.bytes[range.end..]);
        self.bytes = out.into_boxed_slice();
        true
    }

    /// The length [`Attributes::encoded_len`] would have after `set(name, value)`, computed
    /// without building anything: for the per-user bound ([`crate::engine::MAX_ATTRIBUTE_BYTES`]).
    pub fn len_after_set(&self, name: &str, value: Option<&Scalar>) -> usize {
        let replaced = self.find(name.as_bytes()).map_or(0, |e| e.end - e.start);
        self.bytes.len() - replaced + value.map_or(0, |v| entry_len(name, v))
    }

    /// The bytes of the entries, without their count (what the state record copies).
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The heap bytes held (capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The buffer's address, for the engine's prefetch hints.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.bytes.as_ptr()
    }

    /// The state record's attribute section: the count, then the entries as they are.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_u64(out, self.len() as u64);
        out.extend_from_slice(&self.bytes);
    }

    /// Reads `n` entries of a state record, checking they are well formed (known tags, UTF-8
    /// names and strings) and sorted by name without repeats.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Attributes, StateError> {
        let n = r.len()?;
        let start = r.pos();
        let mut previous: Option<&[u8]> = None;
        for _ in 0..n {
            let len = r.len()?;
            let name = r.take(len)?;
            std::str::from_utf8(name).map_err(|_| StateError::Corrupt("string is not UTF-8"))?;
            if previous.is_some_and(|p| p >= name) {
                return Err(StateError::Corrupt("attributes not sorted"));
            }
            previous = Some(name);
            match r.byte()? {
                STR => {
                    let len = r.len()?;
                    std::str::from_utf8(r.take(len)?)
                        .map_err(|_| StateError::Corrupt("string is not UTF-8"))?;
                }
                INT => {
                    r.i64()?;
                }
                FLOAT => {
                    r.array::<8>()?;
                }
                FALSE | TRUE => {}
                _ => return Err(StateError::Corrupt("unknown attribute tag")),
            }
        }
        Ok(Attributes {
            bytes: r.bytes_between(start, r.pos()).into(),
        })
    }

    /// The attributes named in `names` (sorted ascending by bytes, no repeats), copied into a
    /// buffer of their own: a score change's snapshot of the tracked attributes. One pass that
    /// stops at the last name, one allocation (none when the user has none of them), and no
    /// value decoded.
    pub(crate) fn select_sorted<T: AsRef<str>>(&self, names: &[T]) -> Attributes {
        // The byte ranges to copy, adjacent ones merged: on the stack for up to `MAX` runs (the
        // tracked attributes a user has are a few names, mostly in one or two runs), spilled
        // to the heap past that.
        const MAX: usize = 8;
        let mut runs = [(0usize, 0usize); MAX];
        let mut n = 0usize;
        let mut spilled: Vec<(usize, usize)> = Vec::new();
        let mut names = names.iter().map(|n| n.as_ref().as_bytes()).peekable();
        for e in self.entries() {
            while names
                .next_if(|n| bytes_cmp(n, e.name) == Ordering::Less)
                .is_some()
            {}
            let Some(name) = names.peek() else { break };
            if !bytes_eq(name, e.name) {
                continue;
            }
            names.next();
            let last = if spilled.is_empty() {
                n.checked_sub(1).map(|i| &mut runs[i])
            } else {
                spilled.last_mut()
            };
            match last {
                Some(last) if last.1 == e.start => last.1 = e.end,
                _ if n < MAX => {
                    runs[n] = (e.start, e.end);
                    n += 1;
                }
                _ => {
                    if spilled.is_empty() {
                        spilled.extend_from_slice(&runs);
                    }
                    spilled.push((e.start, e.end));
                }
            }
            if names.peek().is_none() {
                break;
            }
        }
        if spilled.is_empty() {
            self.copy_runs(&runs[..n])
        } else {
            self.copy_runs(&spilled)
        }
    }

    fn copy_runs(&self, runs: &[(usize, usize)]) -> Attributes {
        match runs {
            [] => Attributes::default(),
            [(0, end)] if *end == self.bytes.len() => self.clone(),
            _ => {
                let size = runs.iter().map(|(a, b)| b - a).sum();
                let mut out = Vec::with_capacity(size);
                for &(a, b) in runs {
                    out.extend_from_slice(&self.bytes[a..b]);
                }
                Attributes {
                    bytes: out.into_boxed_slice(),
                }
            }
        }
    }

    fn entries(&self) -> Entries<'_> {
        Entries {
            bytes: &self.bytes,
            pos: 0,
        }
    }

    /// The entry named `name`, or where it would be inserted.
    #[inline]
    fn find(&self, name: &[u8]) -> Result<Entry<'_>, usize> {
        let mut end = 0;
        for e in self.entries() {
            if e.name.len() == name.len() && bytes_eq(e.name, name) {
                return Ok(e);
            }
            if bytes_cmp(e.name, name) == Ordering::Greater {
                return Err(e.start);
            }
            end = e.end;
        }
        Err(end)
    }
}

/// Builds attributes from pairs in any order (the last of a repeated name wins): a decoded
/// change's snapshot, tests and hand-made states. Sorted once and written once, so a long list
/// costs a sort, not a copy of the buffer per pair.
impl<N: AsRef<str>> FromIterator<(N, Scalar)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (N, Scalar)>>(pairs: I) -> Attributes {
        let mut pairs: Vec<(N, Scalar)> = pairs.into_iter().collect();
        // Stable: of a repeated name, the last given stays last.
        pairs.sort_by(|(a, _), (b, _)| a.as_ref().as_bytes().cmp(b.as_ref().as_bytes()));
        let last_of_name = |i: usize| {
            pairs
                .get(i + 1)
                .is_none_or(|(next, _)| next.as_ref() != pairs[i].0.as_ref())
        };
        let size = (0..pairs.len())
            .filter(|&i| last_of_name(i))
            .map(|i| entry_len(pairs[i].0.as_ref(), &pairs[i].1))
            .sum();
        let mut out = Vec::with_capacity(size);
        for i in (0..pairs.len()).filter(|&i| last_of_name(i)) {
            put_entry(&mut out, pairs[i].0.as_ref(), &pairs[i].1);
        }
        Attributes {
            bytes: out.into_boxed_slice(),
        }
    }
}

/// The encoded size of an entry.
fn entry_len(name: &str, value: &Scalar) -> usize {
    let value = match value {
        Scalar::Str(s) => varint_len(s.len() as u64) + s.len(),
        Scalar::Int(i) => zigzag_len(*i),
        Scalar::Float(_) => 8,
        Scalar::Bool(_) => 0,
    };
    varint_len(name.len() as u64) + name.len() + 1 + value
}

fn put_entry(out: &mut Vec<u8>, name: &str, value: &Scalar) {
    put_u64(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    match value {
        Scalar::Str(s) => {
            out.push(STR);
            put_u64(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Scalar::Int(i) => {
            out.push(INT);
            put_i64(out, *i);
        }
        Scalar::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Scalar::Bool(b) => out.push(if *b { TRUE } else { FALSE }),
    }
}

/// A scan over the buffer. Hand-written rather than through the state's `Reader`: it runs for
/// every attribute lookup of every event, and lengths (names and strings under 128 bytes) are
/// one byte.
struct Entries<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// The varint at `at` and the position after it.
#[inline(always)]
fn varint(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *bytes.get(at)?;
    if first < 0x80 {
        return Some((first as u64, at + 1));
    }
    let mut r = Reader::new(bytes.get(at..)?);
    let v = r.u64().ok()?;
    Some((v, at + r.pos()))
}

/// The `n` bytes at `at` and the position after them.
#[inline(always)]
fn take(bytes: &[u8], at: usize, n: u64) -> Option<(&[u8], usize)> {
    let end = at.checked_add(usize::try_from(n).ok()?)?;
    Some((bytes.get(at..end)?, end))
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    #[inline]
    fn next(&mut self) -> Option<Entry<'a>> {
        let b = self.bytes;
        let start = self.pos;
        if start >= b.len() {
            return None;
        }
        let (len, at) = varint(b, start)?;
        let (name, at) = take(b, at, len)?;
        let tag = *b.get(at)?;
        let at = at + 1;
        let (raw, end) = match tag {
            STR => {
                let (len, at) = varint(b, at)?;
                take(b, at, len)?
            }
            INT => {
                let (_, end) = varint(b, at)?;
                (&b[at..end], end)
            }
            FLOAT => take(b, at, 8)?,
            _ => (&b[at..at], at),
        };
        self.pos = end;
        Some(Entry {
            name,
            tag,
            raw,
            start,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn scalar() -> impl Strategy<Value = Scalar> {
        prop_oneof![
            "[a-zé]{0,20}".prop_map(Scalar::Str),
            any::<i64>().prop_map(Scalar::Int),
            any::<f64>().prop_map(Scalar::Float),
            any::<bool>().prop_map(Scalar::Bool),
        ]
    }

    proptest! {
        /// Any sequence of sets and removals leaves the same attributes as a sorted map given
        /// the same operations, reports a change exactly when the map's value changed, and
        /// survives the state encoding.
        #[test]
        fn agrees_with_a_sorted_map(ops in prop::collection::vec(
            ("[a-e]{1,3}", prop::option::of(scalar())), 0..60)
        ) {
            let mut a = Attributes::default();
            let mut m: BTreeMap<String, Scalar> = BTreeMap::new();
            for (name, value) in &ops {
                let before = m.get(name).cloned();
                match value {
                    Some(v) => { m.insert(name.clone(), v.clone()); }
                    None => { m.remove(name); }
                }
                let changed = before != m.get(name).cloned();
                prop_assert_eq!(a.set(name, value.as_ref()), changed);
                prop_assert_eq!(a.get(name).map(ScalarRef::to_owned), m.get(name).cloned());
            }
            let listed: Vec<(String, Scalar)> =
                a.iter().map(|(k, v)| (k.to_string(), v.to_owned())).collect();
            let expected: Vec<(String, Scalar)> = m.into_iter().collect();
            prop_assert_eq!(&listed, &expected);
            prop_assert_eq!(a.len(), expected.len());
            prop_assert_eq!(a.heap_bytes(), a.bytes.len(), "kept at its exact size");

            let mut out = Vec::new();
            a.encode_into(&mut out);
            let mut r = Reader::new(&out);
            let back = Attributes::decode(&mut r).unwrap();
            prop_assert_eq!(r.pos(), out.len());
            prop_assert_eq!(back, a);
        }

        /// A change's snapshot holds exactly the named attributes the user has, with their
        /// values, in a buffer as a set-by-set build of the same pairs writes it (so its
        /// encoding and equality hold), for names before, between and after the user's own,
        /// and for more separate runs of them than the pass keeps on the stack.
        #[test]
        fn select_sorted_keeps_exactly_the_named_attributes(
            pairs in prop::collection::vec(("[a-e]{1,2}", scalar()), 0..40),
            names in prop::collection::btree_set("[a-f]{1,2}", 0..30),
        ) {
            let a: Attributes = pairs.iter().cloned().collect();
            let names: Vec<String> = names.into_iter().collect();
            let picked = a.select_sorted(&names);
            let expected: Vec<(String, Scalar)> = a
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n == k))
                .map(|(k, v)| (k.to_string(), v.to_owned()))
                .collect();
            let listed: Vec<(String, Scalar)> =
                picked.iter().map(|(k, v)| (k.to_string(), v.to_owned())).collect();
            prop_assert_eq!(&listed, &expected);
            let mut built = Attributes::default();
            for (k, v) in &expected {
                built.set(k, Some(v));
            }
            prop_assert_eq!(&picked, &built);
            prop_assert_eq!(picked.heap_bytes(), picked.bytes.len(), "exact size");
        }

        /// Collecting pairs gives what setting them one by one gives: sorted, the last of a
        /// repeated name winning.
        #[test]
        fn collecting_pairs_agrees_with_setting_them_in_turn(
            pairs in prop::collection::vec(("[a-d]{1,2}", scalar()), 0..16),
        ) {
            let collected: Attributes = pairs.iter().cloned().collect();
            let mut set = Attributes::default();
            for (k, v) in &pairs {
                set.set(k, Some(v));
            }
            prop_assert_eq!(collected, set);
        }
    }

    proptest! {
        /// The size `set` allocates is the size `put_entry` writes.
        #[test]
        fn entry_len_is_the_written_size(name in "[a-z]{0,200}", value in scalar(), n in any::<i64>()) {
            for v in [value, Scalar::Int(n), Scalar::Str("x".repeat((n as u16) as usize))] {
                let mut out = Vec::new();
                put_entry(&mut out, &name, &v);
                prop_assert_eq!(entry_len(&name, &v), out.len());
            }
        }
    }

    /// Every other attribute named: more separate runs than the pass keeps on the stack.
    #[test]
    fn select_sorted_copies_scattered_attributes_too() {
        let a: Attributes = (0..20)
            .map(|i| (format!("k{i:02}"), Scalar::Int(i)))
            .collect();
        for first in [0, 1] {
            let names: Vec<String> = (first..20).step_by(2).map(|i| format!("k{i:02}")).collect();
            let picked: Vec<(String, Scalar)> = a
                .select_sorted(&names)
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_owned()))
                .collect();
            let expected: Vec<(String, Scalar)> = (first..20)
                .step_by(2)
                .map(|i| (format!("k{i:02}"), Scalar::Int(i)))
                .collect();
            assert_eq!(picked, expected);
        }
    }

    #[test]
    fn decode_rejects_unsorted_repeated_and_unknown_entries() {
        let encode = |entries: &[(&str, Scalar)]| {
            let mut out = Vec::new();
            put_u64(&mut out, entries.len() as u64);
            for (k, v) in entries {
                put_entry(&mut out, k, v);
            }
            out
        };
        let decode = |bytes: &[u8]| Attributes::decode(&mut Reader::new(bytes));
        let b = encode(&[("b", Scalar::Int(1)), ("a", Scalar::Int(2))]);
        assert_eq!(
            decode(&b),
            Err(StateError::Corrupt("attributes not sorted"))
        );
        let b = encode(&[("a", Scalar::Int(1)), ("a", Scalar::Int(2))]);
        assert_eq!(
            decode(&b),
            Err(StateError::Corrupt("attributes not sorted"))
        );
        let mut b = encode(&[("a", Scalar::Bool(true))]);
        *b.last_mut().unwrap() = 9;
        assert_eq!(
            decode(&b),
            Err(StateError::Corrupt("unknown attribute tag"))
        );
        let mut b = encode(&[("a", Scalar::Str("xy".into()))]);
        *b.last_mut().unwrap() = 0xff;
        assert_eq!(decode(&b), Err(StateError::Corrupt("string is not UTF-8")));
        let b = encode(&[("a", Scalar::Str("xy".into()))]);
        assert_eq!(decode(&b[..b.len() - 1]), Err(StateError::Truncated));
    }

    #[test]
    fn a_float_is_stored_bit_exact_and_a_changed_kind_is_a_change() {
        let mut a = Attributes::default();
        assert!(a.set("x", Some(&Scalar::Float(-0.0))));
        assert!(
            a.set("x", Some(&Scalar::Float(0.0))),
            "-0.0 and 0.0 differ in state"
        );
        assert!(!a.set("x", Some(&Scalar::Float(0.0))));
        assert!(
            a.set("x", Some(&Scalar::Int(0))),
            "an integer replaces a float"
        );
        assert_eq!(a.get("x").map(ScalarRef::to_owned), Some(Scalar::Int(0)));
    }
}
