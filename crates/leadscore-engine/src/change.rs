//! The score change record (SPEC section 4): one per change, published to `lead-score-changes`.

use crate::attributes::Attributes;
use crate::event::ScalarRef;
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

#[derive(Clone, Debug, PartialEq)]
pub struct ScoreChange {
    /// Deterministic: the same input always gives the same id, so consumers can drop duplicates.
    pub event_id: String,
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
    /// The tracked attribute `name` in the snapshot.
    pub fn attribute(&self, name: &str) -> Option<ScalarRef<'_>> {
        self.attributes.get(name)
    }
}
