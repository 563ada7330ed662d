//! The score change record (SPEC section 4): one per change, published to `lead-score-changes`.

use crate::attributes::Attributes;
use crate::event::{write_decimal, ScalarRef};
use crate::timestamp::Millis;
use std::fmt;
use std::sync::Arc;

/// Why a score changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// An event scored through a group.
    Rule,
    /// The inactivity timer fired.
    Inactivity,
    /// An `external_score` event set or incremented the score.
    External,
    /// A tracked attribute changed and the score did not (`delta = 0`).
    Attribute,
}

impl ReasonKind {
    pub const ALL: [ReasonKind; 4] = [
        ReasonKind::Rule,
        ReasonKind::Inactivity,
        ReasonKind::External,
        ReasonKind::Attribute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::Rule => "rule",
            ReasonKind::Inactivity => "inactivity",
            ReasonKind::External => "external",
            ReasonKind::Attribute => "attribute",
        }
    }

    pub fn parse(s: &str) -> Option<ReasonKind> {
        ReasonKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ReasonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reason {
    pub kind: ReasonKind,
    /// The group an event scored through (`kind = rule`). Shared with the engine's rules, so
    /// a change does not allocate its group name.
    pub group: Option<Arc<str>>,
    /// The id of the event that caused the change; `None` for inactivity.
    pub source_event_id: Option<Arc<str>>,
}

/// A change's id (its `event_id` on the output). The engine names every change
/// `<kind>:<user>@<time ms>#<count>` (docs/semantics.md, "Change ids"), and every part but the
/// count is a field of the change already, so it keeps the count alone and the text is written
/// only when the change is encoded: no allocation per change. A decoded id in that form of its
/// own change's fields becomes a count again, so a round trip compares equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeId {
    /// The user's count of changes, this one included: the id is
    /// `<reason kind>:<user id>@<time ms>#<count>`.
    Count(u32),
    /// Any other id, as read or given.
    Given(Box<str>),
}

impl From<&str> for ChangeId {
    fn from(id: &str) -> ChangeId {
        ChangeId::Given(id.into())
    }
}

impl From<String> for ChangeId {
    fn from(id: String) -> ChangeId {
        ChangeId::Given(id.into_boxed_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScoreChange {
    /// Deterministic: the same input always gives the same id, so consumers can drop
    /// duplicates. Its text is [`ScoreChange::event_id`].
    pub id: ChangeId,
    pub user_id: Arc<str>,
    /// Event time of the change (the source event's time, or the inactivity due time).
    pub time: Millis,
    pub previous_score: i64,
    pub score: i64,
    pub delta: i64,
    pub reason: Reason,
    /// For an inactivity change: how many inactivity windows it covers (SPEC 3.7: one clock
    /// advance that fires the timer several times publishes one change with the total delta).
    /// 0 for every other kind.
    pub windows: u32,
    /// Snapshot of the tracked attributes the user has, sorted by name: copied from the
    /// user's attributes as they are encoded, in one block (no allocation per name or value).
    pub attributes: Attributes,
}

impl ScoreChange {
    /// The change's id as text: `Display`s without allocating ([`ChangeId`]).
    pub fn event_id(&self) -> EventId<'_> {
        EventId(self)
    }

    /// `id` as this change's [`ChangeId`]: a count when it is this change's own
    /// `<kind>:<user>@<time>#<count>` (so a decoded change equals the one encoded), else given.
    pub fn canonical_id(&self, id: &str) -> ChangeId {
        let count = id
            .rsplit_once('#')
            .and_then(|(_, n)| n.parse::<u32>().ok())
            .filter(|&n| {
                let mut own = String::with_capacity(id.len());
                // Writing into a `String` cannot fail.
                let _ = write_count_id(&mut own, self.reason.kind, &self.user_id, self.time, n);
                own == id
            });
        match count {
            Some(n) => ChangeId::Count(n),
            None => ChangeId::from(id),
        }
    }

    /// The tracked attribute `name` in the snapshot.
    pub fn attribute(&self, name: &str) -> Option<ScalarRef<'_>> {
        self.attributes.get(name)
    }
}

/// A change's id as text, written when displayed (`to_string`, or straight into an encoder).
#[derive(Clone, Copy)]
pub struct EventId<'a>(&'a ScoreChange);

impl fmt::Display for EventId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        match &c.id {
            ChangeId::Given(id) => f.write_str(id),
            // In parts, straight into the writer (an encoder's buffer): no width or padding.
            ChangeId::Count(n) => write_count_id(f, c.reason.kind, &c.user_id, c.time, *n),
        }
    }
}

impl fmt::Debug for EventId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// `<kind>:<user>@<time>#<count>` into `out`.
fn write_count_id(
    out: &mut impl fmt::Write,
    kind: ReasonKind,
    user_id: &str,
    time: Millis,
    count: u32,
) -> fmt::Result {
    out.write_str(kind.as_str())?;
    out.write_char(':')?;
    out.write_str(user_id)?;
    out.write_char('@')?;
    write_decimal(out, time)?;
    out.write_char('#')?;
    write_decimal(out, i64::from(count))
}
