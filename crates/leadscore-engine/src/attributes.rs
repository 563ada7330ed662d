//! A user's attributes, kept encoded in one buffer (issue 14: memory per user).
//!
//! As `(String, Scalar)` pairs, four attributes cost a `Vec` block of four 56-byte pairs plus a
//! heap block per name and per string value: about 450 bytes and nine allocations per user, each
//! a likely cache miss when the engine reads it. Here they are one buffer of about 60 bytes
//! (with the names below held once per process), in the state record's encoding but for the
//! names, and reads decode values in place as [`ScalarRef`]s.
//!
//! An entry in the state record (the changelog and the local store): the name (varint length
//! and bytes), a tag (0 string, 1 integer, 2 float, 3 false, 4 true) and the value (a string as
//! varint length and bytes, an integer as a zigzag varint, a float as 8 little-endian bytes).
//! Entries are sorted by name, names unique.
//!
//! In memory the name is a reference instead: every user of a process has the same few
//! attribute names (`email`, `lead_status`, ...), and written out in every user's buffer they
//! were 47 of its 101 bytes (issue 14, memory per user; `leadscore bench`'s traffic). A name of
//! [`names::MIN_LEN`] to [`names::MAX_LEN`] bytes is kept once per process, in a table of up
//! to [`names::MAX`] names ([`names`]), and an entry starts with the varint `index × 2 + 1`;
//! any other name (or any name once the table is full) is written inline as before, after the
//! varint `length × 2`. The table only grows, so a name is interned in every buffer of the
//! process or in none: two buffers with the same attributes are the same bytes. Encoding the
//! state writes names out again; decoding interns them.
//!
//! Only this module writes the buffer, from `&str`s, and [`Attributes::decode`] validates what
//! it reads, so every buffer is well formed; a read that still met a damaged one would end, not
//! panic.

use crate::event::{Scalar, ScalarRef};
use crate::state::{
    bytes_cmp, bytes_eq, put_i64, put_u64, varint_len, zigzag_len, Reader, StateError,
};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};

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
    /// Where the tag is: the entry's value part, the same in memory and in the state record.
    tag_at: usize,
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

    /// The entry's size in the state record, its name written out.
    fn encoded_len(&self) -> usize {
        varint_len(self.name.len() as u64) + self.name.len() + (self.end - self.tag_at)
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
    /// ([`crate::engine::MAX_ATTRIBUTE_BYTES`]), as [`Attributes::size_past`] counts it.
    pub fn set_within(&mut self, name: &str, value: Option<&Scalar>, max: usize) -> bool {
        // `held`: where the entry replaced holds its name (an index or the name inline),
        // copied for the new one instead of looking the name up in the table again.
        let (range, value, held) = match (self.find(name.as_bytes()), value) {
            (Ok(e), Some(v)) if e.value().same(v) => return false,
            (Ok(e), v) => (e.start..e.end, v, e.start..e.tag_at),
            (Err(at), Some(v)) => (at..at, Some(v), 0..0),
            (Err(_), None) => return false,
        };
        // A new name is interned only once the change is taken: a refused one takes no
        // place in the table.
        if self.size_past(name, value, max).is_some() {
            return false;
        }
        let name_ref = match value {
            Some(_) if held.is_empty() => Some(NameRef::of(name)),
            _ => None,
        };
        let size = value.map_or(0, |v| {
            value_len(v) + name_ref.map_or(held.len(), |n| n.len(name))
        });
        let len = self.bytes.len() - range.len() + size;
        // One exact-size buffer, written once: cheaper than splicing into the old one and
        // then fitting it.
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&self.bytes[..range.start]);
        if let Some(v) = value {
            match name_ref {
                Some(n) => n.put(&mut out, name),
                None => out.extend_from_slice(&self.bytes[held]),
            }
            put_value(&mut out, v);
        }
        out.extend_from_slice(&self.bytes[range.end..]);
        self.bytes = out.into_boxed_slice();
        true
    }

    /// The length [`Attributes::encoded_len`] would have after `set(name, value)`, computed
    /// without building anything: for the per-user bound ([`crate::engine::MAX_ATTRIBUTE_BYTES`]).
    pub fn len_after_set(&self, name: &str, value: Option<&Scalar>) -> usize {
        let replaced = self.find(name.as_bytes()).map_or(0, |e| e.encoded_len());
        self.encoded_len() - replaced + value.map_or(0, |v| encoded_entry_len(name, v))
    }

    /// The per-user bound ([`crate::engine::MAX_ATTRIBUTE_BYTES`]) as `set_within` keeps it:
    /// [`Attributes::len_after_set`] when `set(name, value)` would take the state record's
    /// attributes past `max` and grow them; `None` when the set is within it. Counted only
    /// when [`Attributes::surely_within`] cannot tell (nearly never: no scan per event).
    pub fn size_past(&self, name: &str, value: Option<&Scalar>, max: usize) -> Option<usize> {
        if self.surely_within(name, value, max) {
            return None;
        }
        let after = self.len_after_set(name, value);
        (after > max && after > self.encoded_len()).then_some(after)
    }

    /// Whether `set(name, value)` surely leaves [`Attributes::len_after_set`] within `max`,
    /// known without a scan: the buffer with the new entry added whole (its name inline), times
    /// the most the state record can be over the buffer. False means "count it", not "over".
    #[inline]
    fn surely_within(&self, name: &str, value: Option<&Scalar>, max: usize) -> bool {
        let added = value.map_or(0, |v| NameRef::Inline.len(name) + value_len(v));
        self.bytes
            .len()
            .saturating_add(added)
            .saturating_mul(WRITTEN_OUT_RATIO)
            <= max
    }

    /// The bytes of the entries in the state record, names written out, without their count.
    pub fn encoded_len(&self) -> usize {
        self.entries().map(|e| e.encoded_len()).sum()
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

    /// The state record's attribute section: the count, then the entries, names written out.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_u64(out, self.len() as u64);
        for e in self.entries() {
            put_u64(out, e.name.len() as u64);
            out.extend_from_slice(e.name);
            out.extend_from_slice(&self.bytes[e.tag_at..e.end]);
        }
    }

    /// Reads `n` entries of a state record, checking they are well formed (known tags, UTF-8
    /// names and strings) and sorted by name without repeats.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Attributes, StateError> {
        let n = r.len()?;
        let mut out = Vec::new();
        let mut previous: Option<&[u8]> = None;
        for _ in 0..n {
            let len = r.len()?;
            let name = r.take(len)?;
            let name = std::str::from_utf8(name)
                .map_err(|_| StateError::Corrupt("string is not UTF-8"))?;
            if previous.is_some_and(|p| p >= name.as_bytes()) {
                return Err(StateError::Corrupt("attributes not sorted"));
            }
            previous = Some(name.as_bytes());
            NameRef::of(name).put(&mut out, name);
            let value_at = r.pos();
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
            out.extend_from_slice(r.bytes_between(value_at, r.pos()));
        }
        Ok(Attributes {
            bytes: out.into_boxed_slice(),
        })
    }

    /// The attributes `selection` names, copied into a buffer of their own: a score change's
    /// snapshot of the tracked attributes. One pass that stops once every name is found, one
    /// allocation (none when the user has none of them), and no name compared nor value decoded
    /// for an entry whose name the process's table holds: its index is tested in the
    /// selection's bit set (issue 14: comparing names was most of a snapshot's time).
    pub(crate) fn select(&self, selection: &Selection) -> Attributes {
        // The byte ranges to copy, adjacent ones merged: on the stack for up to `MAX` runs (the
        // tracked attributes a user has are a few names, mostly in one or two runs), spilled
        // to the heap past that.
        const MAX: usize = 8;
        let mut runs = [(0usize, 0usize); MAX];
        let mut n = 0usize;
        let mut spilled: Vec<(usize, usize)> = Vec::new();
        let mut left = selection.names.len();
        let b = &*self.bytes;
        let mut pos = 0;
        while left > 0 && pos < b.len() {
            // Every buffer is well formed (module docs); a damaged one would end the pass.
            let Some((header, at)) = varint(b, pos) else {
                break;
            };
            let (picked, tag_at) = if header & 1 == 1 {
                (selection.has_index(header >> 1), at)
            } else {
                let Some((name, tag_at)) = take(b, at, header >> 1) else {
                    break;
                };
                (selection.has_name(name), tag_at)
            };
            let Some((_, _, end)) = value_at(b, tag_at) else {
                break;
            };
            let start = pos;
            pos = end;
            if !picked {
                continue;
            }
            left -= 1;
            let last = if spilled.is_empty() {
                n.checked_sub(1).map(|i| &mut runs[i])
            } else {
                spilled.last_mut()
            };
            match last {
                Some(last) if last.1 == start => last.1 = end,
                _ if n < MAX => {
                    runs[n] = (start, end);
                    n += 1;
                }
                _ => {
                    if spilled.is_empty() {
                        spilled.extend_from_slice(&runs);
                    }
                    spilled.push((start, end));
                }
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
        let mut out = Vec::new();
        for i in (0..pairs.len()).filter(|&i| last_of_name(i)) {
            let name = pairs[i].0.as_ref();
            put_entry(&mut out, name, NameRef::of(name), &pairs[i].1);
        }
        Attributes {
            bytes: out.into_boxed_slice(),
        }
    }
}

/// How many times its buffer's size the state record's attributes can be at most: a name
/// held as an index (at least a byte) is written out in at most [`names::MAX_LEN`] + 1 bytes,
/// and an entry takes at least two bytes in the buffer (its name and its tag).
const WRITTEN_OUT_RATIO: usize = names::MAX_LEN / 2 + 1;

// The ratio above holds for an even `MAX_LEN` whose length varint is one byte.
const _: () = assert!(names::MAX_LEN % 2 == 0 && names::MAX_LEN < 128);

/// The size of an entry's tag and value.
fn value_len(value: &Scalar) -> usize {
    1 + match value {
        Scalar::Str(s) => varint_len(s.len() as u64) + s.len(),
        Scalar::Int(i) => zigzag_len(*i),
        Scalar::Float(_) => 8,
        Scalar::Bool(_) => 0,
    }
}

/// The size of an entry in the state record, its name written out.
fn encoded_entry_len(name: &str, value: &Scalar) -> usize {
    varint_len(name.len() as u64) + name.len() + value_len(value)
}

/// How an entry's name is held in memory: by its index in the process's table of names, or
/// written inline.
#[derive(Clone, Copy)]
enum NameRef {
    Interned(u32),
    Inline,
}

impl NameRef {
    /// `name`'s reference, interning it when it qualifies and the table has room.
    fn of(name: &str) -> NameRef {
        names::intern(name).map_or(NameRef::Inline, NameRef::Interned)
    }

    /// The varint that starts the entry: `index × 2 + 1`, or `length × 2`.
    fn header(self, name: &str) -> u64 {
        match self {
            NameRef::Interned(i) => u64::from(i) << 1 | 1,
            NameRef::Inline => (name.len() as u64) << 1,
        }
    }

    /// The bytes the name takes in memory.
    fn len(self, name: &str) -> usize {
        let header = varint_len(self.header(name));
        match self {
            NameRef::Interned(_) => header,
            NameRef::Inline => header + name.len(),
        }
    }

    fn put(self, out: &mut Vec<u8>, name: &str) {
        put_u64(out, self.header(name));
        if let NameRef::Inline = self {
            out.extend_from_slice(name.as_bytes());
        }
    }
}

fn put_entry(out: &mut Vec<u8>, name: &str, name_ref: NameRef, value: &Scalar) {
    name_ref.put(out, name);
    put_value(out, value);
}

/// An entry's tag and value.
fn put_value(out: &mut Vec<u8>, value: &Scalar) {
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

/// The value whose tag is at `tag_at`: the tag, the value's bytes after it (for a string,
/// after its length) and the position after the value.
#[inline]
fn value_at(b: &[u8], tag_at: usize) -> Option<(u8, &[u8], usize)> {
    let tag = *b.get(tag_at)?;
    let at = tag_at + 1;
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
    Some((tag, raw, end))
}

/// A fixed set of attribute names to pick out of users' buffers ([`Attributes::select`]): the
/// engine's tracked attributes. A name the process's table holds is matched by its index, one
/// bit; any other by its bytes.
///
/// Exact because a name is held the same way in every buffer of the process (module docs):
/// the names are interned here when they qualify and the table has room, so an entry held by
/// index `i` is one of them exactly when bit `i` is set; a name the table could not take is
/// never interned later (the table only grows, and a full one stays full), so entries with it
/// are inline and matched by bytes. Inline entries are compared with every name, interned or
/// not, so the pass does not even lean on that.
#[derive(Clone, Debug)]
pub(crate) struct Selection {
    /// Bit `i % 64` of word `i / 64`: the table's name `i` is one of the names.
    interned: [u64; names::MAX / 64],
    /// The names, sorted, without repeats: a pass stops once it has found them all.
    names: Vec<Box<str>>,
}

impl Selection {
    pub(crate) fn new<T: AsRef<str>>(names: &[T]) -> Selection {
        let mut sorted: Vec<Box<str>> = names.iter().map(|n| n.as_ref().into()).collect();
        sorted.sort();
        sorted.dedup();
        let mut interned = [0u64; names::MAX / 64];
        for name in &sorted {
            if let Some(i) = names::intern(name) {
                let i = i as usize;
                interned[i / 64] |= 1 << (i % 64);
            }
        }
        Selection {
            interned,
            names: sorted,
        }
    }

    /// The names, sorted.
    pub(crate) fn names(&self) -> &[Box<str>] {
        &self.names
    }

    #[inline]
    fn has_index(&self, index: u64) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.interned.get(i / 64).map(|w| w >> (i % 64) & 1 == 1))
            .unwrap_or(false)
    }

    fn has_name(&self, name: &[u8]) -> bool {
        self.names.iter().any(|n| bytes_eq(n.as_bytes(), name))
    }
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
        let (header, at) = varint(b, start)?;
        let (name, tag_at) = if header & 1 == 1 {
            (names::get(header >> 1)?.as_bytes(), at)
        } else {
            take(b, at, header >> 1)?
        };
        let (tag, raw, end) = value_at(b, tag_at)?;
        self.pos = end;
        Some(Entry {
            name,
            tag_at,
            tag,
            raw,
            start,
            end,
        })
    }
}

/// The process's table of attribute names ([`Attributes`]' module docs): each name kept once,
/// its index in every user's buffer instead. Bounded in count and length, so a producer that
/// invents names cannot grow it past [`MAX`] × [`MAX_LEN`] bytes (64 KiB): past that its names
/// are written inline, as before the table, and cost memory per user instead.
pub(crate) mod names {
    use super::{HashMap, LazyLock, OnceLock, RwLock};
    use crate::hash::SeededState;

    /// The most names the table holds.
    pub(crate) const MAX: usize = 1024;
    /// The shortest name interned: a shorter one inline takes no more than its index would.
    pub(crate) const MIN_LEN: usize = 2;
    /// The longest name interned.
    pub(crate) const MAX_LEN: usize = 64;

    /// Names by index, read without a lock on every scan of a buffer (a name, once set, never
    /// changes), and the index by name, for writing an entry (with the user maps' fast seeded
    /// hasher: the names come from the input).
    pub(crate) struct Table<'a> {
        slots: &'a [OnceLock<&'static str>],
        index: RwLock<HashMap<&'static str, u32, SeededState>>,
    }

    impl<'a> Table<'a> {
        pub(crate) fn new(slots: &'a [OnceLock<&'static str>]) -> Table<'a> {
            Table {
                slots,
                index: RwLock::new(HashMap::default()),
            }
        }

        /// `name`'s index, adding it when it is new, qualifies and there is room.
        pub(crate) fn intern(&self, name: &str) -> Option<u32> {
            if !(MIN_LEN..=MAX_LEN).contains(&name.len()) {
                return None;
            }
            // A poisoned lock only means another thread panicked while holding it; the map
            // it guards is always whole (one insert per write).
            if let Some(&i) = self
                .index
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
            {
                return Some(i);
            }
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            if let Some(&i) = index.get(name) {
                return Some(i);
            }
            let i = index.len();
            let slot = self.slots.get(i)?;
            let i = u32::try_from(i).ok()?;
            // Leaked on purpose: at most `MAX` names of at most `MAX_LEN` bytes, for the life
            // of the process.
            let name: &'static str = Box::leak(name.into());
            slot.set(name).ok()?;
            index.insert(name, i);
            Some(i)
        }

        /// The name at `index`, if there is one.
        #[cfg(test)]
        pub(crate) fn get(&self, index: u64) -> Option<&'static str> {
            get_in(self.slots, index)
        }
    }

    #[inline]
    fn get_in(slots: &[OnceLock<&'static str>], index: u64) -> Option<&'static str> {
        slots.get(usize::try_from(index).ok()?)?.get().copied()
    }

    static SLOTS: [OnceLock<&'static str>; MAX] = [const { OnceLock::new() }; MAX];
    static TABLE: LazyLock<Table<'static>> = LazyLock::new(|| Table::new(&SLOTS));

    thread_local! {
        /// The entries of the process's index this thread has used: a name's index never
        /// changes once given, so a copy is never stale, and a hit takes no lock (the lock's
        /// two atomic operations were a third of writing an attribute new to a user, issue
        /// 14). At most [`MAX`] entries per thread.
        static KNOWN: std::cell::RefCell<HashMap<&'static str, u32, SeededState>> =
            std::cell::RefCell::new(HashMap::default());
    }

    pub(crate) fn intern(name: &str) -> Option<u32> {
        if let Some(i) = KNOWN.with_borrow(|known| known.get(name).copied()) {
            return Some(i);
        }
        let i = TABLE.intern(name)?;
        if let Some(held) = get(u64::from(i)) {
            KNOWN.with_borrow_mut(|known| known.insert(held, i));
        }
        Some(i)
    }

    /// `name`'s index if the process's table has it, adding nothing.
    #[cfg(test)]
    pub(crate) fn find(name: &str) -> Option<u32> {
        TABLE
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// The process's name at `index`: straight from the slots, without the table's lazy
    /// start (a name can only be there once the table has been made).
    #[inline]
    pub(crate) fn get(index: u64) -> Option<&'static str> {
        get_in(&SLOTS, index)
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

        /// `set_within` refuses exactly the changes that would take the state record's
        /// attributes (names written out, whether held as an index or inline) past `max` and
        /// grow them, for bounds small enough that every path counts them.
        #[test]
        fn set_within_bounds_the_written_out_size(
            ops in prop::collection::vec(("[a-e]{1,3}|[a-z]{60,70}", prop::option::of(scalar())), 0..40),
            max in 0usize..400,
        ) {
            let mut a = Attributes::default();
            let mut m: BTreeMap<String, Scalar> = BTreeMap::new();
            let written = |m: &BTreeMap<String, Scalar>| -> usize {
                m.iter().map(|(k, v)| encoded_entry_len(k, v)).sum()
            };
            for (name, value) in &ops {
                let mut next = m.clone();
                match value {
                    Some(v) => { next.insert(name.clone(), v.clone()); }
                    None => { next.remove(name); }
                }
                let (now, after) = (written(&m), written(&next));
                let applies = next != m && (after <= max || after <= now);
                prop_assert_eq!(a.set_within(name, value.as_ref(), max), applies);
                if applies {
                    m = next;
                }
                prop_assert_eq!(a.encoded_len(), written(&m));
            }
            let listed: Vec<(String, Scalar)> =
                a.iter().map(|(k, v)| (k.to_string(), v.to_owned())).collect();
            prop_assert_eq!(listed, m.into_iter().collect::<Vec<_>>());
        }

        /// `surely_within` never says yes to a set that would take the state record's
        /// attributes past the bound.
        #[test]
        fn surely_within_is_never_wrong(
            pairs in prop::collection::vec(("[a-e]{1,3}|[a-z]{60,70}", scalar()), 0..20),
            name in "[a-e]{1,3}|[a-z]{60,70}|[a-z]{120,130}",
            value in prop::option::of(scalar()),
            max in 0usize..4000,
        ) {
            let a: Attributes = pairs.into_iter().collect();
            if a.surely_within(&name, value.as_ref(), max) {
                prop_assert!(a.len_after_set(&name, value.as_ref()) <= max);
            }
        }

        /// A change's snapshot holds exactly the named attributes the user has, with their
        /// values, in a buffer as a set-by-set build of the same pairs writes it (so its
        /// encoding and equality hold), for names before, between and after the user's own,
        /// for more separate runs of them than the pass keeps on the stack, and for names held
        /// inline (one byte, or longer than the table takes) as well as by index, given in any
        /// order and repeated.
        #[test]
        fn select_keeps_exactly_the_named_attributes(
            pairs in prop::collection::vec(("[a-e]{1,2}|[a-c]{65}", scalar()), 0..40),
            names in prop::collection::vec("[a-f]{1,2}|[a-c]{65}", 0..30),
        ) {
            let a: Attributes = pairs.iter().cloned().collect();
            let picked = a.select(&Selection::new(&names));
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
        /// The size `set` allocates is the size `put_entry` writes, and the size it counts
        /// against the per-user bound is the size the state record writes, whether the name is
        /// interned (2 to 64 bytes) or inline (shorter or longer).
        #[test]
        fn entry_len_is_the_written_size(name in "[a-z]{0,200}", value in scalar(), n in any::<i64>()) {
            for v in [value, Scalar::Int(n), Scalar::Str("x".repeat((n as u16) as usize))] {
                let name_ref = NameRef::of(&name);
                let mut out = Vec::new();
                put_entry(&mut out, &name, name_ref, &v);
                prop_assert_eq!(name_ref.len(&name) + value_len(&v), out.len());
                let a: Attributes = [(name.as_str(), v.clone())].into_iter().collect();
                prop_assert_eq!(&*a.bytes, &out[..]);
                let mut record = Vec::new();
                a.encode_into(&mut record);
                prop_assert_eq!(encoded_entry_len(&name, &v) + 1, record.len());
                prop_assert_eq!(a.encoded_len() + 1, record.len());
                prop_assert_eq!(a.len_after_set(&name, Some(&v)), a.encoded_len());
            }
        }
    }

    /// Every other attribute named: more separate runs than the pass keeps on the stack.
    #[test]
    fn select_copies_scattered_attributes_too() {
        let a: Attributes = (0..20)
            .map(|i| (format!("k{i:02}"), Scalar::Int(i)))
            .collect();
        for first in [0, 1] {
            let names: Vec<String> = (first..20).step_by(2).map(|i| format!("k{i:02}")).collect();
            let picked: Vec<(String, Scalar)> = a
                .select(&Selection::new(&names))
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
                put_u64(&mut out, k.len() as u64);
                out.extend_from_slice(k.as_bytes());
                put_entry(&mut out, "", NameRef::Inline, v);
                // `put_entry` wrote an empty inline name first: its header byte, 0.
                let at = out.len() - value_len(v) - 1;
                out.remove(at);
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
    /// The state record holds every name written out, in the format it had before names were
    /// interned: the same bytes as writing each entry by hand, so a changelog written by an
    /// older build decodes, and one written now is read by it.
    #[test]
    fn the_state_record_writes_names_out() {
        let a: Attributes = [
            ("email", Scalar::Str("a@b.c".into())),
            ("x", Scalar::Int(-3)),
            ("lead_status", Scalar::Str("Open".into())),
            (&"n".repeat(70), Scalar::Bool(true)),
        ]
        .into_iter()
        .collect();
        let mut record = Vec::new();
        a.encode_into(&mut record);
        let mut expected = vec![4u8];
        expected.extend_from_slice(&[5, b'e', b'm', b'a', b'i', b'l', STR, 5]);
        expected.extend_from_slice(b"a@b.c");
        expected.extend_from_slice(&[11]);
        expected.extend_from_slice(b"lead_status");
        expected.extend_from_slice(&[STR, 4]);
        expected.extend_from_slice(b"Open");
        expected.push(70);
        expected.extend_from_slice("n".repeat(70).as_bytes());
        expected.push(TRUE);
        expected.extend_from_slice(&[1, b'x', INT, 5]);
        assert_eq!(record, expected);
        assert_eq!(a.encoded_len() + 1, record.len());
        // In memory, a name of 2 to 64 bytes is an index (one or two bytes) while the
        // process's table has room (this test binary's other tests fill it in any order).
        let in_memory = |k: &str| match names::intern(k) {
            Some(i) => varint_len(u64::from(i) << 1 | 1),
            None => varint_len((k.len() as u64) << 1) + k.len(),
        };
        // Inline, the length is doubled: 70 takes two bytes.
        assert!(
            in_memory("x") == 2 && in_memory(&"n".repeat(70)) == 72,
            "never interned"
        );
        let names = in_memory("email") + in_memory("lead_status") + 2 + 72;
        assert_eq!(a.heap_bytes(), record.len() - 1 - (6 + 12 + 2 + 71) + names);
        let back = Attributes::decode(&mut Reader::new(&record)).unwrap();
        assert_eq!(back, a);
    }

    /// An attribute refused by the bound leaves its name out of the process's table (which
    /// would otherwise fill with the names of refused input).
    #[test]
    fn a_refused_attribute_takes_no_place_in_the_name_table() {
        let name = "a_name_only_this_test_sets";
        let mut a = Attributes::default();
        assert!(!a.set_within(name, Some(&Scalar::Str("x".repeat(100))), 50));
        assert!(a.is_empty());
        assert_eq!(names::find(name), None);
        assert!(a.set_within(name, Some(&Scalar::Int(1)), 50));
        assert!(
            names::find(name).is_some() || names::intern("zz").is_none(),
            "interned once taken, unless the table is full"
        );
    }

    /// A full table interns nothing more and keeps what it has; names outside the lengths it
    /// takes are never interned.
    #[test]
    fn the_name_table_is_bounded() {
        let slots: Vec<OnceLock<&'static str>> = (0..3).map(|_| OnceLock::new()).collect();
        let t = names::Table::new(&slots);
        assert_eq!(t.intern("ab"), Some(0));
        assert_eq!(t.intern("cd"), Some(1));
        assert_eq!(t.intern("ab"), Some(0));
        assert_eq!(t.intern("e"), None, "shorter than MIN_LEN");
        assert_eq!(t.intern(&"f".repeat(names::MAX_LEN + 1)), None);
        assert_eq!(t.intern(&"g".repeat(names::MAX_LEN)), Some(2));
        assert_eq!(t.intern("hi"), None, "full");
        assert_eq!(t.intern("cd"), Some(1), "still found when full");
        assert_eq!(t.get(1), Some("cd"));
        assert_eq!(t.get(3), None);
        assert_eq!(t.get(u64::MAX), None);
    }

    /// Buffers that reach the same attributes by different paths (set in turn, collected,
    /// decoded from the state record, a change's snapshot) are the same bytes, and hold each
    /// name the table has as its index.
    #[test]
    fn interned_names_are_one_form_whatever_built_the_buffer() {
        let pairs = [
            ("country", Scalar::Str("DE".into())),
            ("email", Scalar::Str("someone@example.com".into())),
            ("lead_status", Scalar::Str("Open".into())),
            (
                "salesforce_lead_id",
                Scalar::Str("00Q5g00000AbCdEfGH".into()),
            ),
        ];
        let mut set = Attributes::default();
        for (k, v) in pairs.iter().rev() {
            set.set(k, Some(v));
        }
        let collected: Attributes = pairs.iter().cloned().collect();
        let mut record = Vec::new();
        set.encode_into(&mut record);
        let decoded = Attributes::decode(&mut Reader::new(&record)).unwrap();
        let picked = set.select(&Selection::new(&[
            "country",
            "email",
            "lead_status",
            "salesforce_lead_id",
        ]));
        assert_eq!(set, collected);
        assert_eq!(set, decoded);
        assert_eq!(set, picked);
        let written: usize = pairs.iter().map(|(k, _)| 1 + k.len()).sum();
        let held: usize = pairs
            .iter()
            .map(|(k, _)| {
                names::intern(k).map_or(1 + k.len(), |i| varint_len(u64::from(i) << 1 | 1))
            })
            .sum();
        assert_eq!(set.heap_bytes(), set.encoded_len() - written + held);
    }
}
