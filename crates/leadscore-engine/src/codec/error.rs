//! Why a payload was rejected ([`DecodeError`]), and the helpers that build its variants.

use super::loose::Loose;
use super::{Format, Limits};
use crate::event::{Event, EventType};
use crate::timestamp::{format_rfc3339, Millis};
use std::fmt;

/// Why a payload was rejected. [`DecodeError::reason`] gives a code from a small fixed set for
/// metric labels and dead-letter headers; `Display` gives the precise message, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is {size} bytes, over the {limit}-byte limit")]
    Oversized { size: usize, limit: usize },

    /// Not JSON, not protobuf, not UTF-8, not an object, or a repeated JSON key.
    #[error("malformed {} payload: {detail}", .format.label())]
    Malformed { format: Format, detail: String },

    #[error("missing field \"{field}\"{}", RequiredFor(*.required_for))]
    MissingField {
        field: String,
        /// The event type that needs the field, when not every type does.
        required_for: Option<EventType>,
    },

    /// An `external_score` with neither `score` nor `increment`.
    #[error("missing field \"score\" or \"increment\" (external_score needs exactly one)")]
    MissingScoreOp,

    #[error("field \"{field}\": expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },

    #[error("field \"{field}\": {detail}")]
    InvalidValue { field: String, detail: String },

    /// An `external_score` with both `score` and `increment`.
    #[error("fields \"score\" and \"increment\" are both set (external_score needs exactly one)")]
    ScoreAndIncrement,

    #[error("key {} does not match user_id {}", Quoted(.key), Quoted(.user_id))]
    KeyMismatch { key: String, user_id: String },

    #[error("key is not valid UTF-8, so it cannot match user_id {}", Quoted(.user_id))]
    KeyNotUtf8 { user_id: String },

    /// A well-formed event of a type this version does not know. Not bad input by default
    /// (SPEC 2: skipped and counted, so producers can add types first); it carries what the
    /// scorer needs to skip it as an event that changes nothing: whose it is and its time,
    /// both validated like any event's. With `scorer.unknown_types = "dead_letter"` it is a
    /// dead letter with this message.
    #[error("field \"type\": {}", .0)]
    UnknownType(Box<UnknownType>),

    /// A null value (a tombstone) without a key: nothing says whose state to delete.
    #[error("a tombstone (null value) needs a key: the id of the user to forget")]
    TombstoneWithoutKey,
}

/// What an event of an unknown type still tells: see [`DecodeError::UnknownType`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownType {
    /// The type as written: a JSON string, or a protobuf enum number.
    pub kind: UnknownKind,
    pub user_id: String,
    pub time: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnknownKind {
    Name(String),
    Number(i32),
}

impl fmt::Display for UnknownType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = "session_start, custom_event, email_added, attribute_changed, \
                     external_score, user_deleted";
        match &self.kind {
            UnknownKind::Name(n) => write!(
                f,
                "unknown event type {}, expected one of {known}",
                Quoted(n)
            ),
            UnknownKind::Number(n) => write!(f, "unknown event type number {n}"),
        }
    }
}

/// SPEC 2: an event whose `time` is more than `max_skew` ahead of `now` (the wall clock) is bad
/// input (`invalid_value`). One mis-dated record would otherwise move its partition's clock
/// years ahead and decay every lead on it.
pub fn check_not_future(event: &Event, now: Millis, max_skew: Millis) -> Result<(), DecodeError> {
    check_time_not_future(event.time, now, max_skew)
}

/// [`check_not_future`] for an event's `time` alone (one of an unknown type, which moves the
/// partition clock too).
pub fn check_time_not_future(
    time: Millis,
    now: Millis,
    max_skew: Millis,
) -> Result<(), DecodeError> {
    let limit = now.saturating_add(max_skew.max(0));
    if time > limit {
        return Err(invalid(
            "time",
            format!(
                "{} is more than {} ahead of the wall clock ({}); check the producer's clock \
                 or the field's unit (scorer.max_future_skew)",
                format_rfc3339(time),
                crate::duration::format(max_skew),
                format_rfc3339(now),
            ),
        ));
    }
    Ok(())
}

impl DecodeError {
    /// Every value [`DecodeError::reason`] can return, e.g. to register metric series up front.
    pub const REASONS: [&'static str; 7] = [
        "oversized",
        "malformed",
        "missing_field",
        "wrong_type",
        "invalid_value",
        "key_mismatch",
        "unknown_type",
    ];

    /// A short code from [`DecodeError::REASONS`]: bounded, so it is safe as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::MissingField { .. }
            | DecodeError::MissingScoreOp
            | DecodeError::TombstoneWithoutKey => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::InvalidValue { .. } | DecodeError::ScoreAndIncrement => "invalid_value",
            DecodeError::KeyMismatch { .. } | DecodeError::KeyNotUtf8 { .. } => "key_mismatch",
            DecodeError::UnknownType(_) => "unknown_type",
        }
    }
}

/// Prints a string from the input quoted and escaped, cut to a length that suits a log line and
/// a dead-letter header (the input may be a 64 KiB string).
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, cut) = truncate(self.0);
        write!(f, "{head:?}{}", if cut { "..." } else { "" })
    }
}

/// The first 64 bytes of `s` (at a character boundary), and whether anything was cut.
pub(super) fn truncate(s: &str) -> (&str, bool) {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return (s, false);
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// The ` (required for custom_event)` suffix of a missing-field message.
struct RequiredFor(Option<EventType>);

impl fmt::Display for RequiredFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, " (required for {t})"),
            None => Ok(()),
        }
    }
}

pub(super) fn malformed(format: Format, err: impl fmt::Display) -> DecodeError {
    DecodeError::Malformed {
        format,
        detail: err.to_string(),
    }
}

pub(super) fn missing(field: impl Into<String>, required_for: Option<EventType>) -> DecodeError {
    DecodeError::MissingField {
        field: field.into(),
        required_for,
    }
}

pub(super) fn wrong_type(
    field: impl Into<String>,
    expected: &'static str,
    found: &Loose<'_>,
) -> DecodeError {
    DecodeError::WrongType {
        field: field.into(),
        expected,
        found: found.found(),
    }
}

pub(super) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> DecodeError {
    DecodeError::InvalidValue {
        field: field.into(),
        detail: detail.into(),
    }
}

pub(super) fn check_size(payload: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    if payload.len() > limits.max_bytes {
        return Err(DecodeError::Oversized {
            size: payload.len(),
            limit: limits.max_bytes,
        });
    }
    Ok(())
}
