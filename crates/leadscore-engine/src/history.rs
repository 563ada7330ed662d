//! A user's most recent score changes, kept in its state so that a lookup can say why the user
//! has its score (issue 11) without scanning the output topic.
//!
//! The notes are kept encoded, oldest first, in one byte buffer: a note costs about 15 bytes plus
//! its source event id, against about 100 bytes plus heap allocations as a struct with a
//! `String`. With the default depth of 20 and short event ids that is 300 to 700 bytes per user,
//! in memory, in the local store and in the changelog; docs/operations.md has the figures and
//! `scorer.explain_depth = 0` turns it off.
//!
//! A note's encoding: a tag byte (bits 0-1 the reason kind, bit 2 a group, bit 3 a source event
//! id, bit 4 more than one window, bit 5 the source id was cut), then the time, the previous
//! score and the delta as zigzag varints (the delta wrapped to 64 bits, so the score after the
//! change is exact even when the two scores are more than `i64::MAX` apart), the group's name
//! hash (4 bytes, little-endian), the source id (varint length and bytes) and the window count
//! (varint).

use crate::change::{ReasonKind, ScoreChange};
use crate::state::{put_i64, put_u64, varint_len, zigzag_len, Reader, StateError};
use crate::timestamp::Millis;

/// How many recent changes a user keeps when the setting is left alone.
pub const DEFAULT_DEPTH: usize = 20;

/// The longest source event id a note keeps, in bytes; a longer one is cut (at a character
/// boundary) and marked, so one producer's huge ids cannot grow every user's state.
pub const MAX_SOURCE_BYTES: usize = 128;

/// One recent score change, as a lookup shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeNote {
    pub time: Millis,
    pub previous_score: i64,
    /// The score after the change, exact ([`ChangeNote::score`]).
    score: i64,
    pub kind: ReasonKind,
    /// `stable_hash` of the group's name (as cap usage keeps it); the rules turn it back into
    /// the name, and a group since removed from the rules shows as unknown.
    pub group: Option<u32>,
    pub source_event_id: Option<String>,
    /// Whether `source_event_id` was cut to [`MAX_SOURCE_BYTES`].
    pub source_cut: bool,
    /// Inactivity windows the change covers (1 for one window); 0 for other kinds.
    pub windows: u32,
}

impl ChangeNote {
    /// The score after the change.
    pub fn score(&self) -> i64 {
        self.score
    }

    /// `score - previous_score`, saturated to the 64-bit range as a change's `delta` is.
    pub fn delta(&self) -> i64 {
        self.score.saturating_sub(self.previous_score)
    }
}

/// The encoded notes, oldest first, in one exact-size block: the note count (2 bytes,
/// little-endian), then the notes; no block at all while there are none.
///
/// One box, 16 bytes in every user's state: the count lives in the block and the block is its
/// own length (it had a length and a count beside it, 24 bytes; issue 14, memory per user).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Empty, or the count and the notes. Never a count of 0 with a block: no notes, no block.
    bytes: Box<[u8]>,
}

/// Bytes of the count at the start of the block.
const COUNT_BYTES: usize = 2;

fn kind_bits(kind: ReasonKind) -> u8 {
    match kind {
        ReasonKind::Rule => 0,
        ReasonKind::Inactivity => 1,
        ReasonKind::External => 2,
        ReasonKind::Attribute => 3,
    }
}

const HAS_GROUP: u8 = 1 << 2;
const HAS_SOURCE: u8 = 1 << 3;
const HAS_WINDOWS: u8 = 1 << 4;
const SOURCE_CUT: u8 = 1 << 5;

impl History {
    pub fn len(&self) -> usize {
        self.count() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn count(&self) -> u16 {
        match &*self.bytes {
            [a, b, ..] => u16::from_le_bytes([*a, *b]),
            _ => 0,
        }
    }

    /// Encoded size in bytes (the notes, without the count).
    pub fn encoded_len(&self) -> usize {
        self.used().len()
    }

    /// The notes' block, for the engine's prefetch hints: its start and its end, where the
    /// next note goes.
    #[inline]
    pub(crate) fn ends(&self) -> (*const u8, *const u8) {
        let p = self.bytes.as_ptr();
        (p, p.wrapping_add(self.bytes.len()))
    }

    /// The heap bytes the notes hold.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The encoded notes.
    #[inline]
    fn used(&self) -> &[u8] {
        self.bytes.get(COUNT_BYTES..).unwrap_or_default()
    }

    /// Appends a change, dropping the oldest notes beyond `depth` (0 keeps nothing).
    ///
    /// The oldest notes go first, then the note is appended and the block fitted to its
    /// length: every user holds one, and spare room was a large share of it (doubling left a
    /// third of it empty, 143 bytes held for 93 used per user at 100k users; growing by a
    /// quarter, a fifth). The allocator grows or shrinks the block in place within its size
    /// class, so this costs a `realloc` call, rarely a copy (see `state::grow`).
    pub fn push(&mut self, change: &ScoreChange, group: Option<u32>, depth: usize) {
        if depth == 0 {
            self.clear();
            return;
        }
        // The most notes a history keeps: the count's range, less one.
        let depth = depth.min(u16::MAX as usize - 1);
        let mut count = self.count() as usize;
        // Worked on through a `Vec` over the same block, handed back exact-size.
        let mut out = Vec::from(std::mem::take(&mut self.bytes));
        if out.is_empty() {
            out.extend_from_slice(&[0; COUNT_BYTES]);
        }
        if count >= depth {
            let drop = count + 1 - depth;
            let mut r = Reader::new(&out[COUNT_BYTES..]);
            for _ in 0..drop {
                // Notes this buffer wrote itself always decode.
                let _ = read_note_ref(&mut r);
            }
            let cut_at = r.pos();
            out.drain(COUNT_BYTES..COUNT_BYTES + cut_at);
            count -= drop.min(count);
        }
        let with_source = change.reason.source_event_id.as_ref();
        let cut = with_source.is_some_and(|s| s.len() > MAX_SOURCE_BYTES);
        let source = with_source.map(|id| {
            let mut end = id.len().min(MAX_SOURCE_BYTES);
            while !id.is_char_boundary(end) {
                end -= 1;
            }
            &id.as_bytes()[..end]
        });
        let tag = kind_bits(change.reason.kind)
            | if group.is_some() { HAS_GROUP } else { 0 }
            | if source.is_some() { HAS_SOURCE } else { 0 }
            | if change.windows > 1 { HAS_WINDOWS } else { 0 }
            | if cut { SOURCE_CUT } else { 0 };
        // Wrapped, not the change's saturated `delta`: the score reads back exact.
        let delta = change.score.wrapping_sub(change.previous_score);
        let size = 1
            + zigzag_len(change.time)
            + zigzag_len(change.previous_score)
            + zigzag_len(delta)
            + if group.is_some() { 4 } else { 0 }
            + source.map_or(0, |s| varint_len(s.len() as u64) + s.len())
            + if change.windows > 1 {
                varint_len(change.windows as u64)
            } else {
                0
            };
        out.reserve_exact(size);
        out.push(tag);
        put_i64(&mut out, change.time);
        put_i64(&mut out, change.previous_score);
        put_i64(&mut out, delta);
        if let Some(g) = group {
            out.extend_from_slice(&g.to_le_bytes());
        }
        if let Some(id) = source {
            put_u64(&mut out, id.len() as u64);
            out.extend_from_slice(id);
        }
        if change.windows > 1 {
            put_u64(&mut out, change.windows as u64);
        }
        // At most 65,534 notes: within the count's range.
        out[..COUNT_BYTES].copy_from_slice(&(count as u16 + 1).to_le_bytes());
        self.bytes = out.into_boxed_slice();
    }

    pub fn clear(&mut self) {
        self.bytes = Box::default();
    }

    /// The notes, oldest first.
    pub fn notes(&self) -> Vec<ChangeNote> {
        let mut r = Reader::new(self.used());
        (0..self.count())
            .map_while(|_| read_note(&mut r).ok())
            .collect()
    }

    /// The state encoding: the note count, the byte length, the notes.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_u64(out, self.count() as u64);
        put_u64(out, self.encoded_len() as u64);
        out.extend_from_slice(self.used());
    }

    /// Reads what [`History::encode_into`] wrote, checking every note.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<History, StateError> {
        let count = u16::try_from(r.u64()?).map_err(|_| StateError::Corrupt("history count"))?;
        let n = r.len()?;
        let notes = r.take(n)?;
        let mut check = Reader::new(notes);
        for _ in 0..count {
            read_note_ref(&mut check)?;
        }
        if check.pos() != notes.len() {
            return Err(StateError::Corrupt("history length"));
        }
        if count == 0 {
            return Ok(History::default());
        }
        let mut bytes = Vec::with_capacity(COUNT_BYTES + notes.len());
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(notes);
        Ok(History {
            bytes: bytes.into_boxed_slice(),
        })
    }
}

/// Reads one note, checking it, with its source id borrowed from the buffer: trimming and
/// decoding check every note and keep none, so they allocate nothing per note.
fn read_note_ref<'a>(r: &mut Reader<'a>) -> Result<(ChangeNote, Option<&'a str>), StateError> {
    let tag = r.byte()?;
    if tag & !0x3f != 0 {
        return Err(StateError::Corrupt("history note tag"));
    }
    let kind = match tag & 3 {
        0 => ReasonKind::Rule,
        1 => ReasonKind::Inactivity,
        2 => ReasonKind::External,
        _ => ReasonKind::Attribute,
    };
    let time = r.i64()?;
    let previous_score = r.i64()?;
    // Written wrapped: the exact score.
    let score = previous_score.wrapping_add(r.i64()?);
    let group = if tag & HAS_GROUP != 0 {
        Some(u32::from_le_bytes(r.array()?))
    } else {
        None
    };
    let source = if tag & HAS_SOURCE != 0 {
        let n = r.len()?;
        if n > MAX_SOURCE_BYTES {
            return Err(StateError::Corrupt("history source id too long"));
        }
        Some(
            std::str::from_utf8(r.take(n)?)
                .map_err(|_| StateError::Corrupt("history source id not UTF-8"))?,
        )
    } else {
        None
    };
    let windows = if tag & HAS_WINDOWS != 0 {
        u32::try_from(r.u64()?).map_err(|_| StateError::Corrupt("history windows"))?
    } else if kind == ReasonKind::Inactivity {
        1
    } else {
        0
    };
    let note = ChangeNote {
        time,
        previous_score,
        score,
        kind,
        group,
        source_event_id: None,
        source_cut: tag & SOURCE_CUT != 0,
        windows,
    };
    Ok((note, source))
}

/// Reads one note, owning its source id.
fn read_note(r: &mut Reader<'_>) -> Result<ChangeNote, StateError> {
    let (mut note, source) = read_note_ref(r)?;
    note.source_event_id = source.map(str::to_string);
    Ok(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Reason;

    fn change(i: i64, kind: ReasonKind, source: Option<&str>, windows: u32) -> ScoreChange {
        ScoreChange {
            id: format!("c{i}").into(),
            user_id: "u".into(),
            time: 1_700_000_000_000 + i * 1000,
            previous_score: i,
            score: i + 1,
            delta: 1,
            reason: Reason {
                kind,
                group: None,
                source_event_id: source.map(std::sync::Arc::from),
            },
            windows,
            attributes: Default::default(),
        }
    }

    #[test]
    fn keeps_the_newest_depth_notes_oldest_first() {
        let mut h = History::default();
        for i in 0..30 {
            h.push(
                &change(i, ReasonKind::Rule, Some(&format!("e-{i}")), 0),
                Some(7),
                20,
            );
        }
        let notes = h.notes();
        assert_eq!(notes.len(), 20);
        assert_eq!(notes[0].previous_score, 10);
        assert_eq!(notes[19].previous_score, 29);
        assert_eq!(notes[19].source_event_id.as_deref(), Some("e-29"));
        assert_eq!(notes[19].group, Some(7));
        // A smaller depth later drops the surplus at the next push.
        h.push(&change(30, ReasonKind::External, Some("x"), 0), None, 5);
        let notes = h.notes();
        assert_eq!(notes.len(), 5);
        assert_eq!(notes[4].kind, ReasonKind::External);
        assert_eq!(notes[0].previous_score, 26);
    }

    #[test]
    fn round_trips_every_kind_and_cuts_long_ids() {
        let mut h = History::default();
        h.push(&change(1, ReasonKind::Inactivity, None, 525_600), None, 20);
        h.push(&change(2, ReasonKind::Inactivity, None, 1), None, 20);
        h.push(&change(3, ReasonKind::Attribute, Some("a"), 0), None, 20);
        let long = "é".repeat(100); // 200 bytes
        h.push(&change(4, ReasonKind::External, Some(&long), 0), None, 20);
        let mut bytes = Vec::new();
        h.encode_into(&mut bytes);
        let back = History::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(back, h);
        let notes = back.notes();
        assert_eq!(notes[0].windows, 525_600);
        assert_eq!(notes[1].windows, 1);
        assert_eq!(notes[2].windows, 0);
        let cut = notes[3].source_event_id.as_ref().unwrap();
        assert!(cut.len() <= MAX_SOURCE_BYTES && long.starts_with(cut.as_str()));
        assert!(notes[3].source_cut);
        assert_eq!(notes[3].score(), 5);
    }

    /// The block holds the notes and their count, nothing more: it is fitted to each push,
    /// also when the oldest notes went.
    #[test]
    fn the_block_is_exactly_the_count_and_the_notes() {
        let mut h = History::default();
        assert_eq!(h.heap_bytes(), 0, "no notes, no block");
        for i in 0..200 {
            h.push(
                &change(i, ReasonKind::Rule, Some(&format!("evt-{i:07}")), 0),
                Some(3),
                20,
            );
            assert_eq!(h.heap_bytes(), COUNT_BYTES + h.encoded_len(), "push {i}");
        }
        assert_eq!(h.len(), 20);
    }

    #[test]
    fn a_depth_beyond_the_counts_range_keeps_as_many_as_it_can_count() {
        let mut h = History::default();
        let c = change(1, ReasonKind::Attribute, None, 0);
        for _ in 0..u16::MAX as usize + 2 {
            h.push(&c, None, usize::MAX);
        }
        assert_eq!(h.len(), u16::MAX as usize - 1);
        assert_eq!(h.notes().len(), h.len());
    }

    #[test]
    fn depth_zero_keeps_nothing_and_damage_is_an_error() {
        let mut h = History::default();
        h.push(&change(1, ReasonKind::Rule, Some("e"), 0), None, 0);
        assert!(h.is_empty());
        h.push(&change(1, ReasonKind::Rule, Some("e"), 0), None, 3);
        let mut bytes = Vec::new();
        h.encode_into(&mut bytes);
        // Claim two notes where there is one.
        bytes[0] = 2;
        assert!(History::decode(&mut Reader::new(&bytes)).is_err());
    }
}
