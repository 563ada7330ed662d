//! What the handoff keeps per user and who gets handed off (SPEC 6 "Who"): the lead state,
//! the funnel of `handoff.status_order`, and [`decide`], all pure.

use crate::change::{ChangeId, ScoreChange};
use crate::config::{status_key, HandoffSettings};
use crate::event::ScalarRef;
use std::collections::{HashMap, HashSet};

/// What the handoff remembers about a user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeadState {
    /// Handed off since it last became eligible.
    pub handed_off: bool,
    /// The last `lead_status` seen, to notice a change; a change without one leaves it, and
    /// so does a move from MQL or beyond to a status the funnel does not list.
    pub status: Option<String>,
    /// `stable_hash` of a lead id refused as invalid (dead-lettered without a call) since the
    /// lead last became eligible: the same id is not dead-lettered again on every change,
    /// while another id (the attribute fixed at its source) hands the lead off.
    pub refused_id: Option<u64>,
    /// `stable_hash`es of the ids of the last [`RECENT_CHANGES`] score changes read, oldest
    /// first: a change read again (the scorer republishes the changes after its last
    /// checkpoint when it restarts after a crash) is a duplicate, dropped by its `event_id` as
    /// SPEC 4 says a consumer can, so that a recycle among them cannot hand the lead off twice.
    pub recent: Vec<u64>,
    /// For the changes named as the scorer names them (`<kind>:<user>@<time>#<count>`): the
    /// largest time and the largest count read. A change with neither larger is a replay,
    /// however many changes came after it: the scorer republishes every change after its last
    /// checkpoint, which can be more than [`RECENT_CHANGES`] of one user, and a replayed
    /// recycle with an old status could send a lead at SQL back to MQL (an outside review).
    pub newest: Option<Newest>,
}

/// The largest time and change count a lead has read ([`LeadState::newest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Newest {
    pub time: i64,
    pub count: u32,
}

/// How many change ids a lead remembers: more than a scorer's crash replays of one user in
/// any realistic span (the changes after its last checkpoint, a few seconds' worth), 64 bytes
/// of state at most.
pub const RECENT_CHANGES: usize = 8;

/// The encoding of a state with neither a refused id nor recent changes, which every version
/// reads: the version, the flag, the status.
const LEAD_STATE_VERSION: u8 = 1;
/// The encoding with them: the version, the flag, `1` and the refused id's hash (8 bytes,
/// little-endian) or `0`, the number of recent change hashes and each (8 bytes), the status.
const LEAD_STATE_V2: u8 = 2;
/// Version 2 with [`LeadState::newest`] before the status: `1`, the time (8 bytes) and the
/// count (4 bytes), little-endian, or `0`.
const LEAD_STATE_V3: u8 = 3;

impl LeadState {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = if self.refused_id.is_none() && self.recent.is_empty() && self.newest.is_none()
        {
            vec![LEAD_STATE_VERSION, self.handed_off as u8]
        } else {
            let version = if self.newest.is_some() {
                LEAD_STATE_V3
            } else {
                LEAD_STATE_V2
            };
            let mut v = vec![version, self.handed_off as u8];
            match self.refused_id {
                Some(h) => {
                    v.push(1);
                    v.extend_from_slice(&h.to_le_bytes());
                }
                None => v.push(0),
            }
            let recent = &self.recent[self.recent.len().saturating_sub(RECENT_CHANGES)..];
            v.push(recent.len() as u8);
            for h in recent {
                v.extend_from_slice(&h.to_le_bytes());
            }
            if let Some(n) = self.newest {
                v.push(1);
                v.extend_from_slice(&n.time.to_le_bytes());
                v.extend_from_slice(&n.count.to_le_bytes());
            }
            v
        };
        if let Some(s) = &self.status {
            v.extend_from_slice(s.as_bytes());
        }
        v
    }

    pub fn decode(bytes: &[u8]) -> Option<LeadState> {
        let hash = |b: &[u8]| Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?));
        let mut st = LeadState::default();
        let status = match bytes {
            [LEAD_STATE_VERSION, flag @ (0 | 1), rest @ ..] => {
                st.handed_off = *flag == 1;
                rest
            }
            [version @ (LEAD_STATE_V2 | LEAD_STATE_V3), flag @ (0 | 1), has @ (0 | 1), rest @ ..] =>
            {
                st.handed_off = *flag == 1;
                let mut rest = rest;
                if *has == 1 {
                    st.refused_id = Some(hash(rest)?);
                    rest = &rest[8..];
                }
                let (&n, mut rest) = rest.split_first()?;
                if n as usize > RECENT_CHANGES {
                    return None;
                }
                for _ in 0..n {
                    st.recent.push(hash(rest)?);
                    rest = &rest[8..];
                }
                if *version == LEAD_STATE_V3 {
                    let (&has, more) = rest.split_first()?;
                    rest = more;
                    match has {
                        0 => {}
                        1 => {
                            let time = i64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
                            let count = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?);
                            st.newest = Some(Newest { time, count });
                            rest = &rest[12..];
                        }
                        _ => return None,
                    }
                }
                rest
            }
            _ => return None,
        };
        if !status.is_empty() {
            st.status = Some(std::str::from_utf8(status).ok()?.to_string());
        }
        Some(st)
    }

    /// Records that `lead_id` was refused as invalid: the lead stays eligible for another id.
    pub fn refuse(&mut self, lead_id: &str) {
        self.handed_off = false;
        self.refused_id = Some(crate::state::stable_hash(lead_id.as_bytes()));
    }

    /// Whether `change` was read already: by its time and count when the scorer named it
    /// (a change with neither larger than the newest read is a replay), else by its id among
    /// the recent ones. Otherwise remembers it.
    fn seen_before(&mut self, change: &ScoreChange) -> bool {
        if let ChangeId::Count(count) = change.id {
            // A state written before version 3 remembers the scorer's ids in `recent` only:
            // until it has a newest, a change among them is still a replay.
            if self.newest.is_none() && !self.recent.is_empty() {
                let h = crate::state::stable_hash(change.event_id().to_string().as_bytes());
                if self.recent.contains(&h) {
                    return true;
                }
            }
            if let Some(n) = self.newest {
                // The count wraps (docs/semantics.md, "Change ids"): compared as a distance.
                let not_later = (count.wrapping_sub(n.count) as i32) <= 0;
                if not_later && change.time <= n.time {
                    return true;
                }
            }
            let n = self.newest.get_or_insert(Newest {
                time: change.time,
                count,
            });
            n.time = n.time.max(change.time);
            if (count.wrapping_sub(n.count) as i32) > 0 {
                n.count = count;
            }
            return false;
        }
        self.seen_id_before(&change.event_id().to_string())
    }

    /// Whether the change with this id was read already; otherwise remembers it.
    fn seen_id_before(&mut self, change_id: &str) -> bool {
        let h = crate::state::stable_hash(change_id.as_bytes());
        if self.recent.contains(&h) {
            return true;
        }
        if self.recent.len() >= RECENT_CHANGES {
            self.recent.remove(0);
        }
        self.recent.push(h);
        false
    }
}

/// Why a score change hands nothing off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    AtOrBelowThreshold,
    /// The lead is at the handoff status or beyond: handing it off would move it back.
    AtOrBeyondHandoffStatus,
    AlreadyHandedOff,
    NoLeadId,
    /// The lead id is the one refused as invalid last time: dead-lettered once already.
    RefusedLeadId,
    /// A change read before (its `event_id` is among the lead's recent ones): a replay.
    Duplicate,
}

/// Where a status stands in the funnel (`handoff.status_order`, `handoff_status`,
/// `skip_statuses`), compared as [`status_key`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Listed before the handoff status, at this index of the order.
    Before(usize),
    /// Not listed: before the handoff status, but with no place relative to listed ones.
    Unlisted,
    /// The handoff status, a listed status after it, or one of `skip_statuses`.
    AtOrBeyond,
}

/// The funnel of `handoff.status_order`, ready for lookups.
#[derive(Clone, Debug)]
pub struct Funnel {
    index: HashMap<String, usize>,
    handoff_at: usize,
    skip: HashSet<String>,
}

impl Funnel {
    /// The funnel of checked settings; a `handoff_status` missing from the order (which
    /// [`Settings`] loading rejects) makes every listed status count as before it.
    pub fn new(s: &HandoffSettings) -> Funnel {
        let index: HashMap<String, usize> = s
            .status_order
            .iter()
            .enumerate()
            .map(|(i, status)| (status_key(status), i))
            .collect();
        let handoff_at = index
            .get(&status_key(&s.handoff_status))
            .copied()
            .unwrap_or(usize::MAX);
        Funnel {
            index,
            handoff_at,
            skip: s.skip_statuses.iter().map(|k| status_key(k)).collect(),
        }
    }

    fn place(&self, status: &str) -> Place {
        let key = status_key(status);
        match self.index.get(&key) {
            Some(&i) if i < self.handoff_at => Place::Before(i),
            Some(_) => Place::AtOrBeyond,
            None if self.skip.contains(&key) => Place::AtOrBeyond,
            None => Place::Unlisted,
        }
    }

    /// At the handoff status or beyond: never handed off. No status counts as before it.
    pub fn at_or_beyond(&self, status: Option<&str>) -> bool {
        status.is_some_and(|s| self.place(s) == Place::AtOrBeyond)
    }

    /// A recycle: a move back to a listed status before the handoff status, from the handoff
    /// status or beyond, or from a later listed status. Moves forward (`Open` to `Working`),
    /// moves between unlisted statuses and a first status are not: a lead handed off while
    /// `Open` whose CRM then shows `Working` was not sent back by anyone. Nor is a move from
    /// the handoff status or beyond to an unlisted status ([`Funnel::leaves_for_unlisted`]).
    /// ([`decide`] never passes a cleared status: the lead keeps its last one.)
    pub fn is_recycle(&self, from: Option<&str>, to: Option<&str>) -> bool {
        let (Some(from), Some(to)) = (from, to) else {
            return false;
        };
        match (self.place(from), self.place(to)) {
            (Place::AtOrBeyond, Place::Before(_)) => true,
            (Place::Before(was), Place::Before(now)) => now < was,
            _ => false,
        }
    }

    /// A move from the handoff status or beyond to a status not in the funnel: taken as still
    /// with Sales (fail closed), so a lead at SQL whose CRM shows a status the funnel does not
    /// list (`Lost` in an org that added it) is never PATCHed back to MQL (SPEC 6): [`decide`]
    /// keeps the lead's last status, as for a cleared one, until a move to a listed status.
    pub fn leaves_for_unlisted(&self, from: Option<&str>, to: Option<&str>) -> bool {
        let (Some(from), Some(to)) = (from, to) else {
            return false;
        };
        self.place(from) == Place::AtOrBeyond && self.place(to) == Place::Unlisted
    }
}

/// The status a change shows, when it is one the funnel does not list and the lead is at the
/// handoff status or beyond: [`decide`] keeps the lead's last status then
/// ([`Funnel::leaves_for_unlisted`]), so the lead stays ineligible until a listed status comes.
/// The handoff logs such a status, since an org's own recycle status missing from
/// `handoff.status_order` would otherwise hold its leads silently.
pub fn unlisted_status(
    st: &LeadState,
    change: &ScoreChange,
    s: &HandoffSettings,
    funnel: &Funnel,
) -> Option<String> {
    let now = match change.attribute(&s.status_attribute)? {
        ScalarRef::Str(v) => v.to_owned(),
        other => other.to_string(),
    };
    funnel
        .leaves_for_unlisted(st.status.as_deref(), Some(&now))
        .then_some(now)
}

/// SPEC 6 "Who", as a pure function: updates the user's handoff state for one score change and
/// says whether to hand the lead off now (and under which lead id).
pub fn decide(
    st: &mut LeadState,
    change: &ScoreChange,
    s: &HandoffSettings,
    funnel: &Funnel,
) -> Result<String, Skip> {
    if st.seen_before(change) {
        return Err(Skip::Duplicate);
    }
    let status = match change.attribute(&s.status_attribute) {
        Some(ScalarRef::Str(v)) => Some(v.to_owned()),
        Some(other) => Some(other.to_string()),
        None => None,
    };
    // A cleared status (the attribute removed, or a change without it) moves the lead nowhere:
    // it keeps the last status seen, for eligibility and for the next recycle, so a sync that
    // drops the field cannot send an SQL lead back to MQL (README, "Recycle").
    if let Some(now) = status {
        if st.status.as_deref().map(status_key) != Some(status_key(&now)) {
            // A move from MQL or beyond to an unlisted status is not a move either: the lead
            // stays where it was, with Sales (fail closed).
            if !funnel.leaves_for_unlisted(st.status.as_deref(), Some(&now)) {
                if funnel.is_recycle(st.status.as_deref(), Some(&now)) {
                    st.handed_off = false;
                    st.refused_id = None;
                }
                st.status = Some(now);
            }
        }
    }
    // The funnel before the threshold: a lead that reached MQL or beyond says so at any score,
    // which is what drops a handoff still waiting in the batch.
    if funnel.at_or_beyond(st.status.as_deref()) {
        return Err(Skip::AtOrBeyondHandoffStatus);
    }
    if change.score <= s.threshold {
        return Err(Skip::AtOrBelowThreshold);
    }
    if st.handed_off {
        return Err(Skip::AlreadyHandedOff);
    }
    let lead_id = match &s.lead_id_attribute {
        None => change.user_id.to_string(),
        Some(attr) => match change.attribute(attr) {
            // Any value is the id: one that is not a lead id (empty, `..`) is dead-lettered
            // as `invalid_lead_id` rather than waited on for ever.
            Some(ScalarRef::Str(id)) => id.to_owned(),
            Some(other) => other.to_string(),
            // Not known yet: a later change that carries it hands the lead off.
            None => return Err(Skip::NoLeadId),
        },
    };
    if st.refused_id == Some(crate::state::stable_hash(lead_id.as_bytes())) {
        return Err(Skip::RefusedLeadId);
    }
    st.handed_off = true;
    st.refused_id = None;
    Ok(lead_id)
}

/// A lead's state is one small block: nothing beyond its entry to load ahead.
impl crate::runtime::keyed_state::LoadAhead for LeadState {}
