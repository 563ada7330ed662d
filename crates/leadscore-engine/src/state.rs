//! Per-user state and its binary encoding: the value of the local store and of the changelog.
//!
//! The encoding is versioned (first byte) and compact: varints, times as deltas from the last
//! score change, event ids as 64-bit hashes. A typical user (a few attributes, a day of event ids)
//! takes well under 200 bytes; `leadscore bench` measures it. Decoding an unknown version or a
//! damaged record is an error, never a panic, so a bad changelog record can be reported and the
//! restore can fall back.

use crate::attributes::Attributes;
use crate::event::{Scalar, ScalarRef};
use crate::history::History;
use crate::timestamp::{Millis, MAX_MILLIS, MIN_MILLIS};
use thiserror::Error;

/// The encoding version this build writes. Readers accept every version up to this one.
pub const STATE_VERSION: u8 = 4;

/// Everything the engine remembers about one user.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct UserState {
    pub score: i64,
    /// Set by the first event matching `entry.on`; never cleared.
    pub enrolled: bool,
    /// Current attributes, sorted by name, encoded in one buffer. Private so that every
    /// change goes through [`UserState::set_attribute`] or [`UserState::set_attribute_within`],
    /// which forget the audience verdict below.
    attributes: Attributes,
    /// The engine's last audience verdict on these attributes ([`AudienceMemo`]).
    pub(crate) audience: AudienceMemo,
    /// Event time of the last applied score change: the start of the re-entry wait.
    pub last_change: OptI64,
    /// When the inactivity timer is due; none while no timer runs.
    pub timer_due: OptI64,
    /// What most users never have (the last external score's `updated_at`, cap usage): see
    /// [`Rare`]. Read and set through [`UserState::caps`], [`UserState::external_updated_at`]
    /// and their setters, which keep it `None` while both are empty.
    rare: Option<Box<Rare>>,
    /// Recently applied explicit event ids, for duplicate detection, oldest first.
    pub seen: Box<[SeenEvent]>,
    /// Input offset of the last event applied to this user, so a replay after a crash skips the
    /// events this state already holds (see `docs/crash-safety.md`).
    pub last_offset: OptI64,
    /// The most recent score changes, to explain the score (version 3; empty before).
    pub history: History,
    /// How many changes this user has published, each window of a collapsed decay counted as
    /// one (so the count is the same as firing window by window gives), wrapping (version 4; 0
    /// before). Every change's id carries the count it ends at, which makes it unique: two decays
    /// whose last windows were due at the same time, or one event applied twice, get two ids
    /// (docs/semantics.md, "Change ids"). It sits in
    /// the padding after `enrolled`: free in memory.
    pub changes: u32,
}

/// An engine's audience verdict on a user's attributes as they stand, so that the events
/// of a user whose attributes did not change since do not scan them again (issue 14: the
/// audience scan was a sixth of `Engine::apply`'s time). Three bytes in the padding of
/// [`UserState`], free in memory; never encoded (a decoded state has none).
///
/// The verdict is only good for the engine that gave it: it carries that engine's key
/// ([`crate::engine::Engine`] draws a distinct one per construction, up to
/// [`AudienceMemo::MAX_KEY`] of them: a test process building an engine per generated case
/// stays far below), so a state that meets other rules (a test, a tool) is scanned again.
/// Changing the attributes forgets it. Two states that differ only in it are equal: it is a
/// cache, not state.
#[derive(Clone, Copy, Default)]
pub(crate) struct AudienceMemo([u8; 3]);

impl AudienceMemo {
    /// The largest engine key: 23 bits, the verdict takes the 24th.
    pub(crate) const MAX_KEY: u32 = (1 << 23) - 1;

    /// The key (bits 1-23) and the verdict (bit 0); 0 for none.
    #[inline]
    fn bits(self) -> u32 {
        let [a, b, c] = self.0;
        u32::from_le_bytes([a, b, c, 0])
    }

    /// The verdict of the engine keyed `key` (1 to [`AudienceMemo::MAX_KEY`]), if it gave one
    /// since the attributes last changed. Key 0 never has one.
    #[inline]
    pub(crate) fn get(self, key: u32) -> Option<bool> {
        let bits = self.bits();
        (key != 0 && bits >> 1 == key).then_some(bits & 1 == 1)
    }

    #[inline]
    pub(crate) fn set(&mut self, key: u32, verdict: bool) {
        let [a, b, c, _] = ((key & Self::MAX_KEY) << 1 | u32::from(verdict)).to_le_bytes();
        self.0 = [a, b, c];
    }
}

impl PartialEq for AudienceMemo {
    fn eq(&self, _: &AudienceMemo) -> bool {
        true
    }
}

impl std::fmt::Debug for AudienceMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bits() {
            0 => f.write_str("none"),
            m => write!(f, "engine {}: {}", m >> 1, m & 1 == 1),
        }
    }
}

/// The parts of a user's state that most users never have, in a block of their own: one
/// pointer in every state (null for most) instead of 24 bytes, so that `UserState` is 96 bytes
/// and a user's map entry 128, an allocator size class, instead of 160 (issue 14, memory per
/// user). A user with cap usage or a dated external score pays a 24-byte block.
#[derive(Clone, Debug, PartialEq, Default)]
struct Rare {
    /// `updated_at` of the last applied external score (none if it had none), to drop stale
    /// ones.
    external_updated_at: OptI64,
    /// What each capped group has applied per cap window. Exact size, rebuilt when a capped
    /// event changes it.
    caps: Box<[CapUsage]>,
}

/// An `Option<i64>` in 8 bytes instead of 16, for the times and the offset every user's state
/// holds (32 bytes per user): `i64::MIN` stands for none. No validated time (years 0000 to
/// 9999) or input offset is `i64::MIN`; a value that would be is kept as `i64::MIN + 1`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptI64(i64);

impl OptI64 {
    pub const NONE: OptI64 = OptI64(i64::MIN);

    #[inline]
    pub const fn get(self) -> Option<i64> {
        if self.0 == i64::MIN {
            None
        } else {
            Some(self.0)
        }
    }

    #[inline]
    pub const fn is_some(self) -> bool {
        self.0 != i64::MIN
    }

    #[inline]
    pub const fn is_none(self) -> bool {
        self.0 == i64::MIN
    }
}

impl Default for OptI64 {
    fn default() -> OptI64 {
        OptI64::NONE
    }
}

impl From<Option<i64>> for OptI64 {
    #[inline]
    fn from(v: Option<i64>) -> OptI64 {
        v.map_or(OptI64::NONE, OptI64::from)
    }
}

impl From<i64> for OptI64 {
    #[inline]
    fn from(v: i64) -> OptI64 {
        OptI64(v.max(i64::MIN + 1))
    }
}

impl PartialEq<Option<i64>> for OptI64 {
    fn eq(&self, other: &Option<i64>) -> bool {
        self.get() == *other
    }
}

/// As the `Option` it stands for.
impl std::fmt::Debug for OptI64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// Points a capped group applied within one cap window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapUsage {
    /// Hash of the group's name (stable across reordering of groups in the rules file).
    pub group: u32,
    /// Window index: event time divided by the cap period (epoch-aligned, UTC).
    pub window: i64,
    pub used: u64,
}

/// An applied event id, for duplicate detection, in 16 bytes (issue 14, memory per user: a
/// user holds one per event id within two dedupe windows, ten or more for an active one).
///
/// The id's hash takes 8 bytes; the event's time and the recording clock share the other 8:
/// the time exact, as an offset from [`MIN_MILLIS`] in 49 bits (every validated event time,
/// years 0000 to 9999, fits; one outside is clamped into that range), and how far the clock
/// was past it when the id was recorded in 15 bits, a 9-bit mantissa and a power of two,
/// **rounded up**: exact below 512 ms, within 1/256 of itself above. Only retention reads the
/// recording clock, and SPEC 3.8 lets an id be forgotten no sooner than two windows after it:
/// rounding up keeps a late event's id a little longer (at most 0.4% of its lateness: under 6
/// minutes for an event a day late), never shorter. Rounding a rounded value changes nothing,
/// so a state read back from the changelog equals the one written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SeenEvent {
    /// 64-bit FNV-1a hash of the event id: ids can be long, a collision within one user's
    /// window is about one in 10^17.
    pub id_hash: u64,
    /// Bits 15-63: the event time minus [`MIN_MILLIS`]; bits 0-14: the lateness code
    /// ([`late_code`]).
    packed: u64,
}

/// Bits of [`SeenEvent::packed`] holding the lateness code.
const LATE_BITS: u32 = 15;
/// Bits of the lateness code's mantissa.
const MANTISSA_BITS: u32 = 9;

/// `late` milliseconds as a 15-bit code: below 512 the value itself; above, a mantissa in
/// 256..512 and a shift, the value rounded up to the next one the code can hold.
fn late_code(late: u64) -> u64 {
    let m_max = 1u64 << MANTISSA_BITS;
    if late < m_max {
        return late;
    }
    let mut shift = u64::BITS - late.leading_zeros() - MANTISSA_BITS;
    let mut m = late.div_ceil(1u64 << shift);
    if m == m_max {
        m = m_max / 2;
        shift += 1;
    }
    (u64::from(shift) << MANTISSA_BITS) | m
}

/// The milliseconds a [`late_code`] stands for, saturated to `i64::MAX`.
fn late_value(code: u64) -> i64 {
    let shift = (code >> MANTISSA_BITS) as u32;
    let m = code & ((1u64 << MANTISSA_BITS) - 1);
    if shift > 0 && m.leading_zeros() < shift {
        return i64::MAX;
    }
    i64::try_from(m << shift).unwrap_or(i64::MAX)
}

impl SeenEvent {
    /// The id hashed to `id_hash`, applied at `time`, recorded at partition clock `recorded`
    /// (taken as `time` when before it).
    pub fn new(id_hash: u64, time: Millis, recorded: Millis) -> SeenEvent {
        let time = time.clamp(MIN_MILLIS, MAX_MILLIS);
        let late = recorded.saturating_sub(time).max(0) as u64;
        SeenEvent {
            id_hash,
            packed: ((time - MIN_MILLIS) as u64) << LATE_BITS | late_code(late),
        }
    }

    /// The event's time: the start of its dedupe window.
    #[inline]
    pub fn time(self) -> Millis {
        (self.packed >> LATE_BITS) as i64 + MIN_MILLIS
    }

    /// The partition clock when the id was recorded (never before `time`), rounded up as the
    /// type says: retention counts from here, so a late event's id is not forgotten as soon as
    /// it is recorded (SPEC 3.8).
    #[inline]
    pub fn recorded(self) -> Millis {
        self.time()
            .saturating_add(late_value(self.packed & ((1 << LATE_BITS) - 1)))
    }
}

impl SeenEvent {
    /// Whether the id is still remembered with the forgetting horizon at `horizon` (SPEC 3.8:
    /// kept while the later of its time and its recording clock is after it).
    ///
    /// The recording clock is never before the time, so an id whose time is after the horizon
    /// is kept without decoding the lateness: the common case, as every event with an id
    /// runs this over each of its user's remembered ids (the decode was a twentieth of
    /// `Engine::apply`).
    #[inline]
    pub(crate) fn kept_after(self, horizon: Millis) -> bool {
        self.time() > horizon || self.recorded() > horizon
    }

    /// Whether an event with this id at `time` is its duplicate: before its time plus the
    /// dedupe `window`.
    #[inline]
    pub(crate) fn catches(self, time: Millis, window: Millis) -> bool {
        time < self.time().saturating_add(window)
    }
}

/// As the three values it holds.
impl std::fmt::Debug for SeenEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenEvent")
            .field("id_hash", &self.id_hash)
            .field("time", &self.time())
            .field("recorded", &self.recorded())
            .finish()
    }
}

impl UserState {
    /// When the inactivity timer is due, for display (`inactivity_due` in `simulate` and the
    /// lead view): none also when it is due after the last instant an RFC 3339 time can name
    /// (9999-12-31T23:59:59.999Z), which no partition clock reaches (event times and the wall
    /// clock stay within it), so it never fires. A long window (rules durations go up to
    /// about 292 million years) can put it there.
    pub fn shown_timer_due(&self) -> Option<Millis> {
        self.timer_due
            .get()
            .filter(|&t| t <= crate::timestamp::MAX_MILLIS)
    }

    /// `updated_at` of the last applied external score (none if it had none), to drop stale
    /// ones.
    #[inline]
    pub fn external_updated_at(&self) -> OptI64 {
        self.rare
            .as_ref()
            .map_or(OptI64::NONE, |r| r.external_updated_at)
    }

    pub fn set_external_updated_at(&mut self, at: OptI64) {
        if at.is_none() && self.rare.is_none() {
            return;
        }
        self.rare
            .get_or_insert_with(Box::default)
            .external_updated_at = at;
        self.drop_empty_rare();
    }

    /// What each capped group has applied per cap window.
    #[inline]
    pub fn caps(&self) -> &[CapUsage] {
        self.rare.as_ref().map_or(&[], |r| &r.caps)
    }

    /// Takes the cap usage out to be worked on ([`UserState::set_caps`] puts it back).
    pub fn take_caps(&mut self) -> Vec<CapUsage> {
        self.rare
            .as_mut()
            .map(|r| std::mem::take(&mut r.caps).into_vec())
            .unwrap_or_default()
    }

    /// Replaces the cap usage, exact-size.
    pub fn set_caps(&mut self, caps: Vec<CapUsage>) {
        if caps.is_empty() && self.rare.is_none() {
            return;
        }
        self.rare.get_or_insert_with(Box::default).caps = caps.into_boxed_slice();
        self.drop_empty_rare();
    }

    /// No block for what is empty: the state compares equal to one that never had it.
    fn drop_empty_rare(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.external_updated_at.is_none() && r.caps.is_empty())
        {
            self.rare = None;
        }
    }

    #[inline]
    pub fn attribute(&self, name: &str) -> Option<ScalarRef<'_>> {
        self.attributes.get(name)
    }

    /// Sets (or with `None` removes) an attribute. Returns whether its value changed.
    #[inline]
    pub fn set_attribute(&mut self, name: &str, value: Option<&Scalar>) -> bool {
        self.set_attribute_within(name, value, usize::MAX)
    }

    /// [`UserState::set_attribute`] unless it would take the attributes past `max` bytes
    /// ([`Attributes::set_within`]). Returns whether the value changed.
    #[inline]
    pub fn set_attribute_within(&mut self, name: &str, value: Option<&Scalar>, max: usize) -> bool {
        let changed = self.attributes.set_within(name, value, max);
        if changed {
            self.audience = AudienceMemo::default();
        }
        changed
    }

    /// The user's attributes, sorted by name.
    #[inline]
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// The heap bytes this state holds (capacities, not lengths; no allocator overhead): with
    /// `size_of::<UserState>()` what a user costs in memory, for `leadscore bench`.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.attributes.heap_bytes()
            + self.rare.as_ref().map_or(0, |r| {
                size_of::<Rare>() + r.caps.len() * size_of::<CapUsage>()
            })
            + self.seen.len() * size_of::<SeenEvent>()
            + self.history.heap_bytes()
    }

    /// The versioned binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_bound());
        self.encode_into(&mut out);
        out
    }

    /// At least the length of the encoding (every varint counted at its longest): one
    /// allocation per record instead of three or four doublings from a guess, for the changed
    /// users every checkpoint encodes.
    pub fn encoded_len_bound(&self) -> usize {
        const VARINT: usize = 10;
        2 + 5 * VARINT
            + VARINT
            + self.attributes.encoded_len()
            + VARINT
            + self.caps().len() * 3 * VARINT
            + VARINT
            + self.seen.len() * (8 + 2 * VARINT)
            + 2 * VARINT
            + self.history.encoded_len()
            + VARINT
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(STATE_VERSION);
        let flags = (self.enrolled as u8)
            | (self.last_change.is_some() as u8) << 1
            | (self.timer_due.is_some() as u8) << 2
            | (self.external_updated_at().is_some() as u8) << 3
            | (self.last_offset.is_some() as u8) << 4;
        out.push(flags);
        put_i64(out, self.score);
        // Times are stored relative to `base` (the last change, else 0): they cluster near it.
        let base = self.last_change.get().unwrap_or(0);
        if let Some(t) = self.last_change.get() {
            put_i64(out, t);
        }
        if let Some(t) = self.timer_due.get() {
            put_i64(out, t - base);
        }
        if let Some(t) = self.external_updated_at().get() {
            put_i64(out, t - base);
        }
        if let Some(o) = self.last_offset.get() {
            put_i64(out, o);
        }
        self.attributes.encode_into(out);
        put_u64(out, self.caps().len() as u64);
        for c in self.caps() {
            put_u64(out, c.group as u64);
            put_i64(out, c.window);
            put_u64(out, c.used);
        }
        put_u64(out, self.seen.len() as u64);
        let mut prev = base;
        for s in &self.seen {
            out.extend_from_slice(&s.id_hash.to_le_bytes());
            let time = s.time();
            put_i64(out, time.wrapping_sub(prev));
            // Version 2: how far the clock was past the event time when it was recorded; zero
            // (one byte) for an event that arrived in order.
            put_u64(out, s.recorded().saturating_sub(time).max(0) as u64);
            prev = time;
        }
        // Version 3.
        self.history.encode_into(out);
        // Version 4.
        put_u64(out, u64::from(self.changes));
    }

    pub fn decode(bytes: &[u8]) -> Result<UserState, StateError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.byte()?;
        if version == 0 || version > STATE_VERSION {
            return Err(StateError::Version(version));
        }
        let flags = r.byte()?;
        if flags & !0x1f != 0 {
            return Err(StateError::Corrupt("unknown flag bits"));
        }
        let mut st = UserState {
            enrolled: flags & 1 != 0,
            score: r.i64()?,
            ..UserState::default()
        };
        if flags & 2 != 0 {
            st.last_change = r.i64()?.into();
        }
        let base = st.last_change.get().unwrap_or(0);
        if flags & 4 != 0 {
            st.timer_due = base.wrapping_add(r.i64()?).into();
        }
        if flags & 8 != 0 {
            st.set_external_updated_at(base.wrapping_add(r.i64()?).into());
        }
        if flags & 16 != 0 {
            st.last_offset = r.i64()?.into();
        }
        st.attributes = Attributes::decode(&mut r)?;
        let n = r.len()?;
        let mut caps = Vec::with_capacity(n);
        for _ in 0..n {
            let group = u32::try_from(r.u64()?).map_err(|_| StateError::Corrupt("group hash"))?;
            caps.push(CapUsage {
                group,
                window: r.i64()?,
                used: r.u64()?,
            });
        }
        st.set_caps(caps);
        let n = r.len()?;
        let mut seen = Vec::with_capacity(n);
        let mut prev = base;
        for _ in 0..n {
            let id_hash = u64::from_le_bytes(r.array()?);
            let time = prev.wrapping_add(r.i64()?);
            prev = time;
            // Version 1 did not keep the recording clock: its retention counted from `time`.
            let recorded = if version >= 2 {
                time.saturating_add(i64::try_from(r.u64()?).unwrap_or(i64::MAX))
            } else {
                time
            };
            seen.push(SeenEvent::new(id_hash, time, recorded));
        }
        st.seen = seen.into_boxed_slice();
        if version >= 3 {
            st.history = History::decode(&mut r)?;
        }
        if version >= 4 {
            st.changes =
                u32::try_from(r.u64()?).map_err(|_| StateError::Corrupt("change count"))?;
        }
        if r.pos != bytes.len() {
            return Err(StateError::Corrupt("trailing bytes"));
        }
        Ok(st)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StateError {
    #[error("state record has version {0}, this build reads versions 1 to {STATE_VERSION}")]
    Version(u8),
    #[error("state record is truncated")]
    Truncated,
    #[error("state record is damaged: {0}")]
    Corrupt(&'static str),
}

pub(crate) fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// How many bytes [`put_u64`] writes for `v`.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// How many bytes [`put_i64`] writes for `v`.
#[inline]
pub(crate) fn zigzag_len(v: i64) -> usize {
    varint_len(((v << 1) ^ (v >> 63)) as u64)
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The bytes from `start` to `end`, positions this reader has passed.
    pub(crate) fn bytes_between(&self, start: usize, end: usize) -> &'a [u8] {
        &self.bytes[start..end]
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self.pos.checked_add(n).ok_or(StateError::Truncated)?;
        let s = self.bytes.get(self.pos..end).ok_or(StateError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, StateError> {
        let b = *self.bytes.get(self.pos).ok_or(StateError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, StateError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(StateError::Corrupt("varint too long"))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, StateError> {
        let u = self.u64()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A length, bounded by the bytes left so a damaged length cannot make us allocate wildly.
    pub(crate) fn len(&mut self) -> Result<usize, StateError> {
        let n = self.u64()?;
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(StateError::Truncated);
        }
        Ok(n as usize)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let end = self.pos + N;
        let s = self.bytes.get(self.pos..end).ok_or(StateError::Truncated)?;
        self.pos = end;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

/// Byte equality tuned for the short names of attributes, properties and events: the length
/// first, then at most two overlapping word loads for up to 16 bytes, without a `memcmp` call.
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n >= 8 {
        if n > 16 {
            return a == b;
        }
        let w =
            |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
        return w(a, 0) == w(b, 0) && w(a, n - 8) == w(b, n - 8);
    }
    if n >= 4 {
        let w =
            |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
        return w(a, 0) == w(b, 0) && w(a, n - 4) == w(b, n - 4);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Byte order (as `<[u8]>::cmp`) tuned like [`bytes_eq`]: names that differ in their first
/// byte, most of them, are ordered without a `memcmp` call.
#[inline]
pub(crate) fn bytes_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ if bytes_eq(a, b) => std::cmp::Ordering::Equal,
        _ => a.cmp(b),
    }
}

/// 64-bit FNV-1a: stable across builds and platforms (unlike `std`'s `DefaultHasher`), which
/// matters because hashes are stored.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_what_is_written() {
        let mut values: Vec<i64> = vec![0, 1, -1, 63, 64, -64, -65, i64::MAX, i64::MIN];
        values.extend((0..63).flat_map(|b| [1i64 << b, (1i64 << b) - 1, -(1i64 << b)]));
        for v in values {
            let mut out = Vec::new();
            put_i64(&mut out, v);
            assert_eq!(zigzag_len(v), out.len(), "{v}");
            let mut out = Vec::new();
            put_u64(&mut out, v as u64);
            assert_eq!(varint_len(v as u64), out.len(), "{v}");
        }
    }

    fn typical() -> UserState {
        UserState {
            score: 42,
            enrolled: true,
            attributes: [
                ("email", Scalar::Str("jane.doe@example.com".into())),
                ("is_employee", Scalar::Bool(false)),
                ("lead_status", Scalar::Str("Open".into())),
                ("seats", Scalar::Int(12)),
                ("x", Scalar::Float(0.25)),
            ]
            .into_iter()
            .collect(),
            audience: AudienceMemo::default(),
            last_change: 1_790_000_000_000.into(),
            timer_due: 1_790_604_800_000.into(),
            rare: Some(Box::new(Rare {
                external_updated_at: 1_789_000_000_000.into(),
                caps: Box::new([CapUsage {
                    group: 7,
                    window: 20_717,
                    used: 15,
                }]),
            })),
            seen: vec![
                SeenEvent::new(1, 1_789_999_000_000, 1_789_999_000_000),
                SeenEvent::new(u64::MAX, 1_790_000_000_000, 1_790_900_000_000),
            ]
            .into(),
            last_offset: 123_456.into(),
            history: History::default(),
            changes: 300,
        }
    }

    /// A typical user with a full history of `depth` rule changes, event ids like
    /// `evt-0001234`.
    fn with_history(depth: usize) -> UserState {
        let mut st = typical();
        for i in 0..depth as i64 {
            let change = crate::change::ScoreChange {
                id: crate::change::ChangeId::Count(0),
                user_id: "u".into(),
                time: 1_790_000_000_000 + i * 3_600_000,
                previous_score: 20 + i,
                score: 21 + i,
                delta: 1,
                reason: crate::change::Reason {
                    kind: crate::change::ReasonKind::Rule,
                    group: Some("engaged".into()),
                    source_event_id: Some(format!("evt-{:07}", 1_000 + i).into()),
                },
                windows: 0,
                attributes: Default::default(),
            };
            st.history.push(&change, Some(0x9e37_79b9), depth);
        }
        st
    }

    #[test]
    fn a_version_2_record_decodes_with_no_history() {
        let st = UserState {
            changes: 0,
            ..typical()
        };
        let mut v2 = st.encode();
        v2[0] = 2;
        // Version 4 appended the change count (0: one byte), version 3 the history before it:
        // an empty one is two zero bytes (count, length).
        assert_eq!(v2.split_off(v2.len() - 3), vec![0, 0, 0]);
        assert_eq!(UserState::decode(&v2), Ok(st));
    }

    /// A record from before version 4 reads with no changes counted; the count is the last
    /// field, so a version 4 record is a version 3 one plus it.
    #[test]
    fn a_version_3_record_decodes_with_no_changes_counted() {
        let full = with_history(5);
        let v4 = full.encode();
        // 300 is two varint bytes.
        let mut v3 = v4[..v4.len() - 2].to_vec();
        v3[0] = 3;
        let st = UserState::decode(&v3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st, UserState { changes: 0, ..full });
        // And a count past u32 is damage, not a wrap.
        let mut big = v4[..v4.len() - 2].to_vec();
        put_u64(&mut big, 1 << 32);
        assert_eq!(
            UserState::decode(&big),
            Err(StateError::Corrupt("change count"))
        );
    }

    /// What the explain history costs (docs/operations.md quotes this): 20 changes with
    /// 11-byte event ids take 25 bytes each.
    #[test]
    fn a_full_history_costs_about_25_bytes_a_change() {
        let base = typical().encode().len();
        let full = with_history(20);
        assert_eq!(UserState::decode(&full.encode()).as_ref(), Ok(&full));
        let per_change = (full.encode().len() - base) as f64 / 20.0;
        assert!(
            (20.0..=30.0).contains(&per_change),
            "{per_change} bytes per kept change"
        );
    }

    /// A record written before version 2 (no recording clock per seen id) still reads: its
    /// ids count their retention from their event time, as that version did.
    #[test]
    fn version_1_records_still_decode() {
        let mut v1 = vec![1u8, 0, 84]; // version 1, no flags, score 42 (zigzag)
        v1.extend([0, 0, 1]); // no attributes, no caps, one seen id
        v1.extend(7u64.to_le_bytes());
        v1.extend([0xd0, 0x0f]); // time 1000 (zigzag 2000 as a varint)
        let st = UserState::decode(&v1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st.score, 42);
        assert_eq!(&*st.seen, [SeenEvent::new(7, 1000, 1000)]);
    }

    /// A remembered id takes 16 bytes, keeps its event time exact and its recording clock
    /// never earlier than given and at most 1/256 of the lateness later (exact below 512 ms);
    /// building one from what it holds gives it back unchanged (a changelog round trip).
    #[test]
    fn a_remembered_id_keeps_its_time_exact_and_rounds_its_recording_clock_up() {
        assert_eq!(std::mem::size_of::<SeenEvent>(), 16);
        let times = [
            MIN_MILLIS,
            -1,
            0,
            1_767_571_200_000,
            MAX_MILLIS - 1,
            MAX_MILLIS,
        ];
        let mut lates: Vec<i64> = vec![0, 1, 511, 512, 513, 1023, 1024, 1025, 86_400_000];
        // Every power of two and its neighbours, up to the widest span of valid times.
        for b in 9..62 {
            lates.extend([(1i64 << b) - 1, 1i64 << b, (1i64 << b) + 1, (3i64 << b) / 2]);
        }
        let mut checked = 0;
        for &time in &times {
            for &late in &lates {
                let given = time.saturating_add(late);
                let s = SeenEvent::new(9, time, given);
                assert_eq!((s.id_hash, s.time()), (9, time));
                let kept = s.recorded();
                let slack = if late < 512 { 0 } else { late / 256 };
                assert!(
                    kept >= given && kept - given <= slack,
                    "{time} + {late}: {kept}"
                );
                assert_eq!(SeenEvent::new(9, s.time(), kept), s, "{time} + {late}");
                checked += 1;
            }
        }
        assert_eq!(checked, times.len() * lates.len());
        // A clock before the time counts as the time; times outside years 0000-9999 (no
        // validated event has one) are clamped into them rather than wrapped.
        assert_eq!(SeenEvent::new(1, 5_000, 10).recorded(), 5_000);
        assert_eq!(SeenEvent::new(1, i64::MIN, i64::MIN).time(), MIN_MILLIS);
        assert_eq!(SeenEvent::new(1, i64::MAX, i64::MAX).time(), MAX_MILLIS);
        // The widest lateness saturates, far past any clock.
        assert!(SeenEvent::new(1, MIN_MILLIS, i64::MAX).recorded() >= MIN_MILLIS + i64::MAX);
    }

    proptest::proptest! {
        /// `kept_after`'s shortcut (an id whose time is after the horizon is kept) gives what
        /// SPEC 3.8's rule gives: kept while the later of the time and the recording clock is
        /// after the horizon, at horizons around both.
        #[test]
        fn kept_after_is_the_later_of_time_and_recording_clock_after_the_horizon(
            time in MIN_MILLIS..=MAX_MILLIS,
            late in proptest::prop_oneof![0i64..2_000, 0i64..=i64::MAX],
            around in -3i64..=3,
            from_time in proptest::bool::ANY,
        ) {
            let s = SeenEvent::new(7, time, time.saturating_add(late));
            let kept_until = s.recorded().max(s.time());
            let base = if from_time { s.time() } else { kept_until };
            let horizon = base.saturating_add(around);
            proptest::prop_assert_eq!(s.kept_after(horizon), kept_until > horizon);
        }
    }

    /// An audience verdict is read back by its own engine's key only, at every key from 1 to
    /// the largest; key 0 (the keys ran out) keeps none.
    #[test]
    fn an_audience_verdict_is_read_back_by_its_key_only() {
        let max = AudienceMemo::MAX_KEY;
        for key in [1, 2, 255, 256, 65_535, 65_536, max - 1, max] {
            for verdict in [false, true] {
                let mut m = AudienceMemo::default();
                assert_eq!(m.get(key), None);
                m.set(key, verdict);
                assert_eq!(m.get(key), Some(verdict), "key {key}");
                for other in [key - 1, key ^ 1, key ^ 256, key ^ 65_536, max ^ key] {
                    if other != key {
                        assert_eq!(m.get(other), None, "key {key}, read by {other}");
                    }
                }
            }
        }
        let mut m = AudienceMemo::default();
        m.set(0, true);
        assert_eq!(m.get(0), None);
    }

    /// A user's state is 96 bytes, so that with its key and changelog hash a map entry is
    /// 128, an allocator size class (issue 14, memory per user); empty parts hold no block.
    #[test]
    fn a_state_is_96_bytes_and_its_rare_parts_take_no_block_when_empty() {
        assert_eq!(std::mem::size_of::<UserState>(), 96);
        let mut st = typical();
        assert!(st.rare.is_some());
        st.set_external_updated_at(OptI64::NONE);
        assert!(st.rare.is_some(), "the caps are still there");
        st.set_caps(Vec::new());
        assert!(st.rare.is_none());
        assert_eq!(
            UserState::decode(&st.encode()).map(|d| d.rare.is_none()),
            Ok(true)
        );
    }

    #[test]
    fn encoding_round_trips() {
        for st in [UserState::default(), typical()] {
            assert_eq!(UserState::decode(&st.encode()), Ok(st));
        }
    }

    #[test]
    fn the_length_bound_covers_the_encoding_and_makes_one_allocation() {
        let mut extreme = with_history(20);
        // No last change: the other times are encoded from 0, each at its longest.
        extreme.score = i64::MIN;
        extreme.last_change = OptI64::NONE;
        extreme.timer_due = (i64::MIN + 1).into();
        extreme.set_external_updated_at((i64::MIN + 1).into());
        extreme.last_offset = i64::MAX.into();
        extreme.set_caps(vec![
            CapUsage {
                group: u32::MAX,
                window: i64::MIN,
                used: u64::MAX,
            };
            3
        ]);
        extreme.seen = vec![SeenEvent::new(u64::MAX, i64::MIN, i64::MAX); 5].into();
        for st in [UserState::default(), typical(), with_history(20), extreme] {
            let bytes = st.encode();
            assert!(bytes.len() <= st.encoded_len_bound(), "{st:?}");
            assert_eq!(bytes.capacity(), st.encoded_len_bound(), "never grown");
        }
    }

    #[test]
    fn a_packed_option_is_the_option_it_stands_for() {
        for v in [None, Some(0), Some(-1), Some(i64::MAX), Some(i64::MIN + 1)] {
            let p = OptI64::from(v);
            assert_eq!(p.get(), v);
            assert_eq!(p, v);
            assert_eq!(p.is_some(), v.is_some());
            assert_eq!(p.is_none(), v.is_none());
            assert_eq!(format!("{p:?}"), format!("{v:?}"));
        }
        assert_eq!(OptI64::default(), None);
        // The one value that cannot be held stays a value, one millisecond later.
        assert_eq!(OptI64::from(i64::MIN), Some(i64::MIN + 1));
        assert_eq!(std::mem::size_of::<OptI64>(), 8);
    }

    #[test]
    fn typical_user_is_small() {
        let n = typical().encode().len();
        assert!(n < 200, "typical state takes {n} bytes");
    }

    #[test]
    fn rejects_unknown_version_and_damage_without_panicking() {
        let bytes = typical().encode();
        let mut v2 = bytes.clone();
        v2[0] = 9;
        assert_eq!(UserState::decode(&v2), Err(StateError::Version(9)));
        for cut in 0..bytes.len() {
            assert!(UserState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(UserState::decode(&long).is_err());
    }

    #[test]
    fn bytes_eq_and_cmp_agree_with_slice_equality_and_order() {
        let words: Vec<String> = (0..40)
            .flat_map(|n| ["a".repeat(n), format!("{}b", "a".repeat(n)), "b".repeat(n)])
            .collect();
        for a in &words {
            for b in &words {
                assert_eq!(bytes_eq(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
                assert_eq!(
                    bytes_cmp(a.as_bytes(), b.as_bytes()),
                    a.cmp(b),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn attribute_lookup_works_for_short_and_long_lists() {
        let mut st = UserState::default();
        for n in (0..40).rev() {
            let name = format!("k{n:02}");
            assert_eq!(st.attribute(&name), None);
            assert!(st.set_attribute(&name, Some(&Scalar::Int(n))));
            let names: Vec<&str> = st.attributes.iter().map(|(k, _)| k).collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]));
            for m in n..40 {
                assert_eq!(st.attribute(&format!("k{m:02}")), Some(ScalarRef::Int(m)));
            }
        }
        for n in 0..40 {
            assert!(st.set_attribute(&format!("k{n:02}"), None));
            assert_eq!(st.attribute(&format!("k{n:02}")), None);
        }
        assert!(st.attributes.is_empty());
    }

    #[test]
    fn set_attribute_reports_real_changes_only() {
        let mut st = UserState::default();
        let open = Scalar::Str("Open".into());
        assert!(st.set_attribute("lead_status", Some(&open)));
        assert!(!st.set_attribute("lead_status", Some(&open)));
        assert!(st.set_attribute("a", Some(&Scalar::Int(1))));
        assert_eq!(st.attributes.iter().next().map(|(k, _)| k), Some("a"));
        assert!(st.set_attribute("lead_status", None));
        assert!(!st.set_attribute("lead_status", None));
        assert_eq!(st.attribute("a"), Some(ScalarRef::Int(1)));
    }
}
