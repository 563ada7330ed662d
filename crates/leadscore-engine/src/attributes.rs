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
use crate::state::{bytes_eq, put_i64, put_u64, varint_len, zigzag_len, Reader, StateError};

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
            while entry.as_ref().is_some_and(|e| e.name < key) {
                entry = entries.next();
            }
            let value = entry.as_ref().filter(|e| e.name == key).map(Entry::value);
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
        let (range, value) = match (self.find(name.as_bytes()), value) {
            (Ok(e), Some(v)) if e.value().same(v) => return false,
            (Ok(e), v) => (e.start..e.end, v),
            (Err(at), Some(v)) => (at..at, Some(v)),
            (Err(_), None) => return false,
        };
        // One exact-size buffer, written once: cheaper than splicing into the old one and
        // then fitting it.
        let size = value.map_or(0, |v| entry_len(name, v));
        let mut out = Vec::with_capacity(self.bytes.len() - range.len() + size);
        out.extend_from_slice(&self.bytes[..range.start]);
        if let Some(v) = value {
            put_entry(&mut out, name, v);
        }
        out.extend_from_slice(&self.bytes[range.end..]);
        self.bytes = out.into_boxed_slice();
        true
    }

    /// The bytes of the entries, without their count (what the state record copies).
    pub(crate) fn encoded_len(&self) -> usize {
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
            if e.name > name {
                return Err(e.start);
            }
            end = e.end;
        }
        Err(end)
    }
}

/// Builds attributes from pairs in any order (the last of a repeated name wins): for tests and
/// hand-made states.
impl<N: AsRef<str>> FromIterator<(N, Scalar)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (N, Scalar)>>(pairs: I) -> Attributes {
        let mut a = Attributes::default();
        for (name, value) in pairs {
            a.set(name.as_ref(), Some(&value));
        }
        a
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
