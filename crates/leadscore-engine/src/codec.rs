//! JSON and protobuf decoding (with validation) and encoding of input events and score changes.
//!
//! # One validator for both formats
//!
//! Each format first decodes into a loose intermediate (`RawEvent`, `RawChange`) that records
//! what every field held without judging it. One function per record (`validate_event`,
//! `validate_change`) then applies the rules of SPEC sections 2 and 4 and builds the model type.
//! The formats therefore cannot drift apart: the same event is accepted or rejected, with the
//! same [`DecodeError`], whichever way it was written.
//!
//! # What is lenient, on purpose
//!
//! - **Unknown fields are ignored**, JSON keys and protobuf fields alike, so producers can start
//!   sending a field before the scorer knows it (forward compatibility).
//! - **Fields that the event's type does not use are ignored**, not validated: `score` on a
//!   `session_start` is not an error, whatever it holds.
//! - **A JSON `null` counts as absent**, except for `value`, where null means "remove the
//!   attribute" and a missing `value` key is an error (so a forgotten field never deletes data).
//!
//! # What is strict
//!
//! - A repeated JSON key is malformed, a repeated property name is invalid: which one wins is
//!   unspecified by JSON, so guessing would score something the producer may not have meant.
//! - `score` / `increment` must be integers (a JSON `5.0` is a float and is rejected), and
//!   NaN or infinite numbers (possible in protobuf only) are rejected so that both formats
//!   carry the same values.
//! - Protobuf has no way to tell an empty string or a zero enum from a missing one, so
//!   `user_id = ""` and `type = EVENT_TYPE_UNSPECIFIED` read as missing there; in JSON an empty
//!   `user_id`, `name` or `event_id` is an invalid value.
//!
//! # Numbers
//!
//! A JSON number is an `i64` when it is an integer that fits, else an `f64` (an integer above
//! `i64::MAX` becomes the nearest float, except for `score`/`increment`, where it is invalid).
//! serde_json's default float parser can be one unit in the last place off for numbers with
//! 16-17 significant digits; enabling its `float_roundtrip` feature makes it exact, at some cost
//! in speed. Scores are integers, so this only touches comparisons of float properties.
//!
//! # Hot path
//!
//! Every input event goes through [`decode_event`], so JSON is parsed in one pass by a
//! hand-written serde visitor into strings borrowed from the payload (copied only when they
//! contain escapes); nested values that are only going to be rejected or skipped are walked
//! without being stored. The only allocations are the owned strings of the resulting [`Event`].

use crate::change::{Reason, ReasonKind, ScoreChange};
use crate::event::{Event, EventType, Scalar, ScoreOp};
use crate::proto::v1 as pb;
use crate::timestamp::{format_rfc3339, parse_rfc3339, Millis, MAX_MILLIS, MIN_MILLIS};
use prost::Message as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

// ---------------------------------------------------------------------------------------------
// Format and limits
// ---------------------------------------------------------------------------------------------

/// The wire format of a topic, chosen per deployment (SPEC section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Protobuf => "protobuf",
        }
    }

    /// The name used in messages for people.
    fn label(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Protobuf => "protobuf",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is neither `json` nor `protobuf`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {}: expected \"json\" or \"protobuf\"", Quoted(.0))]
pub struct ParseFormatError(pub String);

impl FromStr for Format {
    type Err = ParseFormatError;

    fn from_str(s: &str) -> Result<Format, ParseFormatError> {
        match s {
            "json" => Ok(Format::Json),
            "protobuf" => Ok(Format::Protobuf),
            _ => Err(ParseFormatError(s.to_owned())),
        }
    }
}

/// Bounds on what a decoder accepts, so one hostile message cannot make the scorer allocate or
/// parse without limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Payloads longer than this are rejected as `oversized` before any parsing.
    pub max_bytes: usize,
}

impl Limits {
    /// 64 KiB: far above a real event (a few hundred bytes), far below what hurts.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: Limits::DEFAULT_MAX_BYTES,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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
}

/// SPEC 2: an event whose `time` is more than `max_skew` ahead of `now` (the wall clock) is bad
/// input (`invalid_value`). One mis-dated record would otherwise move its partition's clock
/// years ahead and decay every lead on it.
pub fn check_not_future(event: &Event, now: Millis, max_skew: Millis) -> Result<(), DecodeError> {
    let limit = now.saturating_add(max_skew.max(0));
    if event.time > limit {
        return Err(invalid(
            "time",
            format!(
                "{} is more than {} ahead of the wall clock ({}); check the producer's clock \
                 or the field's unit (scorer.max_future_skew)",
                format_rfc3339(event.time),
                crate::duration::format(max_skew),
                format_rfc3339(now),
            ),
        ));
    }
    Ok(())
}

impl DecodeError {
    /// Every value [`DecodeError::reason`] can return, e.g. to register metric series up front.
    pub const REASONS: [&'static str; 6] = [
        "oversized",
        "malformed",
        "missing_field",
        "wrong_type",
        "invalid_value",
        "key_mismatch",
    ];

    /// A short code from [`DecodeError::REASONS`]: bounded, so it is safe as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::MissingField { .. } | DecodeError::MissingScoreOp => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::InvalidValue { .. } | DecodeError::ScoreAndIncrement => "invalid_value",
            DecodeError::KeyMismatch { .. } | DecodeError::KeyNotUtf8 { .. } => "key_mismatch",
        }
    }
}

/// Prints a string from the input quoted and escaped, cut to a length that suits a log line and
/// a dead-letter header (the input may be a 64 KiB string).
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, cut) = truncate(self.0);
        write!(f, "{head:?}{}", if cut { "..." } else { "" })
    }
}

/// The first 64 bytes of `s` (at a character boundary), and whether anything was cut.
fn truncate(s: &str) -> (&str, bool) {
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

fn malformed(format: Format, err: impl fmt::Display) -> DecodeError {
    DecodeError::Malformed {
        format,
        detail: err.to_string(),
    }
}

fn missing(field: impl Into<String>, required_for: Option<EventType>) -> DecodeError {
    DecodeError::MissingField {
        field: field.into(),
        required_for,
    }
}

fn wrong_type(field: impl Into<String>, expected: &'static str, found: &Loose<'_>) -> DecodeError {
    DecodeError::WrongType {
        field: field.into(),
        expected,
        found: found.found(),
    }
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> DecodeError {
    DecodeError::InvalidValue {
        field: field.into(),
        detail: detail.into(),
    }
}

fn check_size(payload: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    if payload.len() > limits.max_bytes {
        return Err(DecodeError::Oversized {
            size: payload.len(),
            limit: limits.max_bytes,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The loose intermediate
// ---------------------------------------------------------------------------------------------

/// What a field held on the wire, before validation. JSON strings borrow from the payload.
#[derive(Debug, Default)]
enum Loose<'a> {
    /// The field was not there.
    #[default]
    Absent,
    Null,
    Bool(bool),
    Int(i64),
    /// A JSON integer above `i64::MAX`.
    BigUint(u64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An array, contents skipped: no field accepts one.
    Array,
    /// An object whose contents were skipped (nested deeper than any field looks).
    Object,
    /// An object whose entries were kept, in input order.
    Map(Vec<(Cow<'a, str>, Loose<'a>)>),
    /// A protobuf `google.protobuf.Timestamp`, range-checked by the validator.
    Timestamp(crate::proto::google::protobuf::Timestamp),
    /// A protobuf enum number this schema version does not know.
    UnknownEnum(i32),
}

impl<'a> Loose<'a> {
    /// How the value is named in a wrong-type message.
    fn found(&self) -> &'static str {
        match self {
            Loose::Absent => "nothing",
            Loose::Null => "null",
            Loose::Bool(_) => "a boolean",
            Loose::Int(_) | Loose::BigUint(_) => "an integer",
            Loose::Float(_) => "a float",
            Loose::Str(_) => "a string",
            Loose::Array => "an array",
            Loose::Object | Loose::Map(_) => "an object",
            Loose::Timestamp(_) => "a timestamp",
            Loose::UnknownEnum(_) => "an enum number",
        }
    }

    /// The value, unless it is absent or null: the two mean the same for every field but `value`.
    fn given(self) -> Option<Loose<'a>> {
        match self {
            Loose::Absent | Loose::Null => None,
            v => Some(v),
        }
    }
}

/// Deserializes a [`Loose`]. `depth` is how many levels of objects keep their entries; deeper
/// objects and all arrays are walked and dropped, which bounds what a payload can make us store.
struct LooseSeed<'a> {
    depth: u8,
    lifetime: PhantomData<&'a ()>,
}

impl LooseSeed<'_> {
    fn new(depth: u8) -> Self {
        LooseSeed {
            depth,
            lifetime: PhantomData,
        }
    }
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for LooseSeed<'a> {
    type Value = Loose<'a>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'a>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for LooseSeed<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Loose<'a>, E> {
        Ok(Loose::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Loose<'a>, E> {
        Ok(Loose::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Loose<'a>, E> {
        Ok(i64::try_from(v).map_or(Loose::BigUint(v), Loose::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Loose<'a>, E> {
        Ok(Loose::Float(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Loose<'a>, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Loose<'a>, E> {
        Ok(Loose::Null)
    }

    fn visit_none<E>(self) -> Result<Loose<'a>, E> {
        Ok(Loose::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'a>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'a>, A::Error> {
        if self.depth == 0 {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Loose::Object);
        }
        // Sized for a typical object, so most never reallocate.
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(key) = map.next_key_seed(KeySeed(PhantomData))? {
            let value = map.next_value_seed(LooseSeed::new(self.depth - 1))?;
            entries.push((key, value));
        }
        Ok(Loose::Map(entries))
    }
}

/// Deserializes an object key, borrowing it from the payload when it has no escapes.
struct KeySeed<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for KeySeed<'a> {
    type Value = Cow<'a, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'a, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for KeySeed<'a> {
    type Value = Cow<'a, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// The first name that appears twice in `entries`, if any.
fn find_duplicate<'e, V>(entries: &'e [(Cow<'_, str>, V)]) -> Option<&'e str> {
    // Pairwise is fastest for the few entries real objects have; sorting bounds the cost of a
    // hostile payload with thousands of them.
    if entries.len() <= 16 {
        for (i, (key, _)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(k, _)| k == key) {
                return Some(key);
            }
        }
        return None;
    }
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

// ---------------------------------------------------------------------------------------------
// Events: decoding
// ---------------------------------------------------------------------------------------------

/// An input event as it came off the wire, one slot per field of SPEC section 2.
#[derive(Debug, Default)]
struct RawEvent<'a> {
    user_id: Loose<'a>,
    time: Loose<'a>,
    event_id: Loose<'a>,
    kind: Loose<'a>,
    name: Loose<'a>,
    app_id: Loose<'a>,
    properties: Loose<'a>,
    value: Loose<'a>,
    score: Loose<'a>,
    increment: Loose<'a>,
    updated_at: Loose<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawEvent<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawEvent<'a>, D::Error> {
        d.deserialize_map(RawEventVisitor(PhantomData))
    }
}

struct RawEventVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for RawEventVisitor<'a> {
    type Value = RawEvent<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEvent<'a>, A::Error> {
        let mut raw = RawEvent::default();
        while let Some(key) = map.next_key_seed(KeySeed(PhantomData))? {
            let (slot, depth) = match key.as_ref() {
                "user_id" => (&mut raw.user_id, 0),
                "time" => (&mut raw.time, 0),
                "event_id" => (&mut raw.event_id, 0),
                "type" => (&mut raw.kind, 0),
                "name" => (&mut raw.name, 0),
                "app_id" => (&mut raw.app_id, 0),
                "properties" => (&mut raw.properties, 1),
                "value" => (&mut raw.value, 0),
                "score" => (&mut raw.score, 0),
                "increment" => (&mut raw.increment, 0),
                "updated_at" => (&mut raw.updated_at, 0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if !matches!(slot, Loose::Absent) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            *slot = map.next_value_seed(LooseSeed::new(depth))?;
        }
        Ok(raw)
    }
}

/// Decodes and validates one input event.
///
/// `key` is the Kafka key: when present it must be valid UTF-8 and equal `user_id`, since the
/// key decides the partition and so which instance holds the user's state. Payloads over
/// `limits.max_bytes` are rejected before parsing. See the module doc for what is lenient and
/// what is strict; every rejection names the field at fault.
pub fn decode_event(
    format: Format,
    key: Option<&[u8]>,
    payload: &[u8],
    limits: &Limits,
) -> Result<Event, DecodeError> {
    check_size(payload, limits)?;
    let raw = match format {
        Format::Json => serde_json::from_str::<RawEvent<'_>>(json_text(payload)?)
            .map_err(|e| malformed(format, e))?,
        Format::Protobuf => {
            raw_event_from_proto(pb::Event::decode(payload).map_err(|e| malformed(format, e))?)
        }
    };
    validate_event(raw, key)
}

/// The payload as text. JSON must be UTF-8 as a whole, and serde_json does not check the parts
/// it skips (unknown fields), so the check comes first; after it, serde_json need not re-check.
fn json_text(payload: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(payload)
        .map_err(|e| malformed(Format::Json, format_args!("not UTF-8: {e}")))
}

/// Moves a decoded protobuf event into the intermediate, marking what proto3 cannot tell apart
/// from absence (empty strings, enum 0) as absent.
fn raw_event_from_proto(m: pb::Event) -> RawEvent<'static> {
    let kind = match pb::EventType::try_from(m.r#type) {
        Ok(pb::EventType::Unspecified) => None,
        Ok(pb::EventType::SessionStart) => Some(EventType::SessionStart),
        Ok(pb::EventType::CustomEvent) => Some(EventType::CustomEvent),
        Ok(pb::EventType::EmailAdded) => Some(EventType::EmailAdded),
        Ok(pb::EventType::AttributeChanged) => Some(EventType::AttributeChanged),
        Ok(pb::EventType::ExternalScore) => Some(EventType::ExternalScore),
        Err(_) => None,
    };
    let kind_slot = match kind {
        Some(k) => Loose::Str(Cow::Borrowed(k.as_str())),
        None if m.r#type == 0 => Loose::Absent,
        None => Loose::UnknownEnum(m.r#type),
    };
    // A message field cannot be null, only unset: for attribute_changed unset means null.
    let value = match m.value {
        Some(s) => loose_from_scalar(s),
        None if kind == Some(EventType::AttributeChanged) => Loose::Null,
        None => Loose::Absent,
    };
    let (score, increment) = match m.score_op {
        Some(pb::event::ScoreOp::Score(s)) => (Loose::Int(s), Loose::Absent),
        Some(pb::event::ScoreOp::Increment(i)) => (Loose::Absent, Loose::Int(i)),
        None => (Loose::Absent, Loose::Absent),
    };
    RawEvent {
        user_id: loose_from_string(m.user_id),
        time: m.time.map_or(Loose::Absent, Loose::Timestamp),
        event_id: loose_from_opt_string(m.event_id),
        kind: kind_slot,
        name: loose_from_opt_string(m.name),
        app_id: loose_from_opt_string(m.app_id),
        properties: loose_from_scalar_map(m.properties),
        value,
        score,
        increment,
        updated_at: m.updated_at.map_or(Loose::Absent, Loose::Timestamp),
    }
}

/// A proto3 string without presence: empty means not set.
fn loose_from_string(s: String) -> Loose<'static> {
    if s.is_empty() {
        Loose::Absent
    } else {
        Loose::Str(Cow::Owned(s))
    }
}

fn loose_from_opt_string(s: Option<String>) -> Loose<'static> {
    s.map_or(Loose::Absent, |s| Loose::Str(Cow::Owned(s)))
}

fn loose_from_scalar(s: pb::Scalar) -> Loose<'static> {
    use pb::scalar::Kind;
    match s.kind {
        None => Loose::Null,
        Some(Kind::StringValue(v)) => Loose::Str(Cow::Owned(v)),
        Some(Kind::IntValue(v)) => Loose::Int(v),
        Some(Kind::DoubleValue(v)) => Loose::Float(v),
        Some(Kind::BoolValue(v)) => Loose::Bool(v),
    }
}

fn loose_from_scalar_map(m: std::collections::BTreeMap<String, pb::Scalar>) -> Loose<'static> {
    if m.is_empty() {
        return Loose::Absent;
    }
    Loose::Map(
        m.into_iter()
            .map(|(k, v)| (Cow::Owned(k), loose_from_scalar(v)))
            .collect(),
    )
}

/// The rules of SPEC section 2, shared by both formats.
fn validate_event(raw: RawEvent<'_>, key: Option<&[u8]>) -> Result<Event, DecodeError> {
    let user_id = required_str("user_id", raw.user_id, None)?;
    if let Some(key) = key {
        check_key(key, &user_id)?;
    }
    let time = required_time("time", raw.time)?;
    let event_id = match optional_str("event_id", raw.event_id)? {
        Some(id) if id.is_empty() => return Err(invalid("event_id", "must not be empty")),
        id => id,
    };
    let kind = match raw.kind.given() {
        None => return Err(missing("type", None)),
        Some(Loose::Str(s)) => EventType::parse(&s).ok_or_else(|| {
            invalid(
                "type",
                format!(
                    "unknown event type {}, expected one of session_start, custom_event, \
                     email_added, attribute_changed, external_score",
                    Quoted(&s)
                ),
            )
        })?,
        Some(Loose::UnknownEnum(n)) => {
            return Err(invalid("type", format!("unknown event type number {n}")))
        }
        Some(other) => return Err(wrong_type("type", "a string", &other)),
    };

    let mut event = Event::new(user_id.into_owned(), time, kind);
    event.event_id = event_id.map(Cow::into_owned);
    match kind {
        EventType::SessionStart => {
            event.app_id = optional_str("app_id", raw.app_id)?.map(Cow::into_owned);
        }
        EventType::CustomEvent => {
            event.name = Some(required_str("name", raw.name, Some(kind))?.into_owned());
            event.properties = properties(raw.properties)?;
        }
        EventType::EmailAdded => {
            let address = match raw.value {
                Loose::Absent => return Err(missing("value", Some(kind))),
                Loose::Str(s) if s.is_empty() => return Err(invalid("value", "must not be empty")),
                Loose::Str(s) => s,
                other => return Err(wrong_type("value", "a string", &other)),
            };
            event.value = Some(Scalar::Str(address.into_owned()));
        }
        EventType::AttributeChanged => {
            event.name = Some(required_str("name", raw.name, Some(kind))?.into_owned());
            event.value = match raw.value {
                // Only an explicit null removes: a forgotten field must not delete data.
                Loose::Absent => return Err(missing("value", Some(kind))),
                Loose::Null => None,
                v => Some(scalar(
                    || "value".to_owned(),
                    v,
                    "a string, number, boolean or null",
                )?),
            };
        }
        EventType::ExternalScore => {
            let score = optional_int("score", raw.score)?;
            let increment = optional_int("increment", raw.increment)?;
            event.score = Some(match (score, increment) {
                (Some(s), None) => ScoreOp::Set(s),
                (None, Some(i)) => ScoreOp::Increment(i),
                (Some(_), Some(_)) => return Err(DecodeError::ScoreAndIncrement),
                (None, None) => return Err(DecodeError::MissingScoreOp),
            });
            event.updated_at = match raw.updated_at.given() {
                Some(v) => Some(time_value("updated_at", v)?),
                None => None,
            };
        }
    }
    Ok(event)
}

fn check_key(key: &[u8], user_id: &str) -> Result<(), DecodeError> {
    // Equal bytes imply valid UTF-8, so the common case needs no UTF-8 check.
    if key == user_id.as_bytes() {
        return Ok(());
    }
    match std::str::from_utf8(key) {
        Ok(k) => Err(DecodeError::KeyMismatch {
            key: k.to_owned(),
            user_id: user_id.to_owned(),
        }),
        Err(_) => Err(DecodeError::KeyNotUtf8 {
            user_id: user_id.to_owned(),
        }),
    }
}

/// A required, non-empty string.
fn required_str<'a>(
    field: &'static str,
    v: Loose<'a>,
    required_for: Option<EventType>,
) -> Result<Cow<'a, str>, DecodeError> {
    match v.given() {
        None => Err(missing(field, required_for)),
        Some(Loose::Str(s)) if s.is_empty() => Err(invalid(field, "must not be empty")),
        Some(Loose::Str(s)) => Ok(s),
        Some(other) => Err(wrong_type(field, "a string", &other)),
    }
}

fn optional_str<'a>(
    field: &'static str,
    v: Loose<'a>,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    match v.given() {
        None => Ok(None),
        Some(Loose::Str(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(field, "a string", &other)),
    }
}

fn required_time(field: &'static str, v: Loose<'_>) -> Result<Millis, DecodeError> {
    match v.given() {
        None => Err(missing(field, None)),
        Some(v) => time_value(field, v),
    }
}

fn time_value(field: &'static str, v: Loose<'_>) -> Result<Millis, DecodeError> {
    match v {
        Loose::Str(s) => parse_rfc3339(&s).map_err(|e| {
            invalid(
                field,
                format!("invalid RFC 3339 timestamp {}: {e}", Quoted(&s)),
            )
        }),
        Loose::Timestamp(ts) => millis_from_timestamp(&ts)
            .map_err(|detail| invalid(field, format!("invalid timestamp: {detail}"))),
        other => Err(wrong_type(field, "an RFC 3339 timestamp string", &other)),
    }
}

/// A protobuf timestamp as epoch milliseconds (truncated), within the range RFC 3339 can print,
/// so that both formats accept the same instants.
fn millis_from_timestamp(ts: &crate::proto::google::protobuf::Timestamp) -> Result<Millis, String> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(format!("nanos {} out of range 0..=999999999", ts.nanos));
    }
    let ms = ts
        .seconds
        .checked_mul(1000)
        .map(|ms| ms + i64::from(ts.nanos / 1_000_000));
    match ms {
        Some(ms) if (MIN_MILLIS..=MAX_MILLIS).contains(&ms) => Ok(ms),
        _ => Err(format!("seconds {} is outside years 0000-9999", ts.seconds)),
    }
}

fn timestamp_from_millis(ms: Millis) -> crate::proto::google::protobuf::Timestamp {
    crate::proto::google::protobuf::Timestamp {
        seconds: ms.div_euclid(1000),
        // In 0..1_000_000_000, which fits an i32.
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn optional_int(field: &'static str, v: Loose<'_>) -> Result<Option<i64>, DecodeError> {
    match v.given() {
        None => Ok(None),
        Some(Loose::Int(i)) => Ok(Some(i)),
        Some(Loose::BigUint(u)) => Err(invalid(
            field,
            format!("{u} is out of the 64-bit integer range"),
        )),
        Some(other) => Err(wrong_type(field, "an integer", &other)),
    }
}

fn required_int(field: &'static str, v: Loose<'_>) -> Result<i64, DecodeError> {
    optional_int(field, v)?.ok_or_else(|| missing(field, None))
}

/// A property or attribute value. `field` builds the name for a message, only on error.
fn scalar(
    field: impl FnOnce() -> String,
    v: Loose<'_>,
    expected: &'static str,
) -> Result<Scalar, DecodeError> {
    match v {
        Loose::Str(s) => Ok(Scalar::Str(s.into_owned())),
        Loose::Int(i) => Ok(Scalar::Int(i)),
        // Above i64::MAX: the nearest float, as for any other number that is not an i64.
        Loose::BigUint(u) => Ok(Scalar::Float(u as f64)),
        Loose::Float(f) if f.is_finite() => Ok(Scalar::Float(f)),
        Loose::Float(f) => Err(invalid(field(), format!("{f} is not a finite number"))),
        Loose::Bool(b) => Ok(Scalar::Bool(b)),
        other => Err(wrong_type(field(), expected, &other)),
    }
}

/// The entries of a string-to-scalar object (`properties`, `attributes`), in input order.
fn scalar_map(field: &'static str, v: Loose<'_>) -> Result<Vec<(String, Scalar)>, DecodeError> {
    let entries = match v.given() {
        None => return Ok(Vec::new()),
        Some(Loose::Map(entries)) => entries,
        Some(other) => return Err(wrong_type(field, "an object", &other)),
    };
    if let Some(dup) = find_duplicate(&entries) {
        return Err(invalid(
            field,
            format!("{} appears more than once", Quoted(dup)),
        ));
    }
    entries
        .into_iter()
        .map(|(k, v)| {
            let value = scalar(
                || {
                    let (head, cut) = truncate(&k);
                    format!("{field}.{head}{}", if cut { "..." } else { "" })
                },
                v,
                "a string, number or boolean",
            )?;
            Ok((k.into_owned(), value))
        })
        .collect()
}

fn properties(v: Loose<'_>) -> Result<Vec<(String, Scalar)>, DecodeError> {
    scalar_map("properties", v)
}

// ---------------------------------------------------------------------------------------------
// Events: encoding
// ---------------------------------------------------------------------------------------------

/// Encodes an event with SPEC section 2's field names (JSON) or the `leadscore.v1.Event`
/// message (protobuf), for generators, tests and replays. Absent optional fields are omitted;
/// an `attribute_changed` without a value is written with `"value": null` (its removal form).
pub fn encode_event(format: Format, event: &Event) -> Vec<u8> {
    match format {
        Format::Json => to_json_vec(&EventOut::new(event)),
        Format::Protobuf => event_to_proto(event).encode_to_vec(),
    }
}

/// `serde_json` fails only on maps with non-string keys, which these types never have.
fn to_json_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON encoding of codec output types cannot fail")
}

#[derive(Serialize)]
struct EventOut<'a> {
    user_id: &'a str,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_id: Option<&'a str>,
    #[serde(skip_serializing_if = "ScalarMapOut::is_empty")]
    properties: ScalarMapOut<'a>,
    /// `Some(None)` writes `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Option<ScalarOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    increment: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

impl<'a> EventOut<'a> {
    fn new(e: &'a Event) -> EventOut<'a> {
        let value = match (&e.value, e.kind) {
            (Some(v), _) => Some(Some(ScalarOut(v))),
            (None, EventType::AttributeChanged) => Some(None),
            (None, _) => None,
        };
        EventOut {
            user_id: &e.user_id,
            time: format_rfc3339(e.time),
            event_id: e.event_id.as_deref(),
            kind: e.kind.as_str(),
            name: e.name.as_deref(),
            app_id: e.app_id.as_deref(),
            properties: ScalarMapOut(&e.properties),
            value,
            score: match e.score {
                Some(ScoreOp::Set(s)) => Some(s),
                _ => None,
            },
            increment: match e.score {
                Some(ScoreOp::Increment(i)) => Some(i),
                _ => None,
            },
            updated_at: e.updated_at.map(format_rfc3339),
        }
    }
}

struct ScalarOut<'a>(&'a Scalar);

impl Serialize for ScalarOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Scalar::Str(v) => s.serialize_str(v),
            Scalar::Int(v) => s.serialize_i64(*v),
            // serde_json writes a non-finite float as null; decoders never produce one.
            Scalar::Float(v) => s.serialize_f64(*v),
            Scalar::Bool(v) => s.serialize_bool(*v),
        }
    }
}

struct ScalarMapOut<'a>(&'a [(String, Scalar)]);

impl ScalarMapOut<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ScalarMapOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, &ScalarOut(v))?;
        }
        map.end()
    }
}

fn scalar_to_proto(v: &Scalar) -> pb::Scalar {
    use pb::scalar::Kind;
    pb::Scalar {
        kind: Some(match v {
            Scalar::Str(s) => Kind::StringValue(s.clone()),
            Scalar::Int(i) => Kind::IntValue(*i),
            Scalar::Float(f) => Kind::DoubleValue(*f),
            Scalar::Bool(b) => Kind::BoolValue(*b),
        }),
    }
}

fn scalar_map_to_proto(m: &[(String, Scalar)]) -> std::collections::BTreeMap<String, pb::Scalar> {
    m.iter()
        .map(|(k, v)| (k.clone(), scalar_to_proto(v)))
        .collect()
}

fn event_to_proto(e: &Event) -> pb::Event {
    let kind = match e.kind {
        EventType::SessionStart => pb::EventType::SessionStart,
        EventType::CustomEvent => pb::EventType::CustomEvent,
        EventType::EmailAdded => pb::EventType::EmailAdded,
        EventType::AttributeChanged => pb::EventType::AttributeChanged,
        EventType::ExternalScore => pb::EventType::ExternalScore,
    };
    pb::Event {
        user_id: e.user_id.clone(),
        time: Some(timestamp_from_millis(e.time)),
        event_id: e.event_id.clone(),
        r#type: kind as i32,
        name: e.name.clone(),
        app_id: e.app_id.clone(),
        properties: scalar_map_to_proto(&e.properties),
        value: e.value.as_ref().map(scalar_to_proto),
        score_op: e.score.map(|op| match op {
            ScoreOp::Set(s) => pb::event::ScoreOp::Score(s),
            ScoreOp::Increment(i) => pb::event::ScoreOp::Increment(i),
        }),
        updated_at: e.updated_at.map(timestamp_from_millis),
    }
}

// ---------------------------------------------------------------------------------------------
// Score changes
// ---------------------------------------------------------------------------------------------

/// A score change as it came off the wire. `reason` holds the reason object's entries.
#[derive(Debug, Default)]
struct RawChange<'a> {
    event_id: Loose<'a>,
    user_id: Loose<'a>,
    time: Loose<'a>,
    previous_score: Loose<'a>,
    score: Loose<'a>,
    delta: Loose<'a>,
    reason: Loose<'a>,
    windows: Loose<'a>,
    attributes: Loose<'a>,
}

/// Encodes a score change (SPEC section 4): the JSON shape of [`change_to_json`] with keys in
/// that order, or the `leadscore.v1.ScoreChange` message.
pub fn encode_change(format: Format, change: &ScoreChange) -> Vec<u8> {
    match format {
        Format::Json => to_json_vec(&ChangeOut::new(change)),
        Format::Protobuf => change_to_proto(change).encode_to_vec(),
    }
}

/// The JSON form of a score change:
/// `{"event_id":..,"user_id":..,"time":"RFC 3339","previous_score":..,"score":..,"delta":..,
/// "reason":{"kind":"rule","group":"engaged","event_id":".."},"attributes":{"lead_status":"Open"}}`,
/// with a null `group` or source `event_id` left out.
pub fn change_to_json(change: &ScoreChange) -> serde_json::Value {
    serde_json::to_value(ChangeOut::new(change))
        .expect("JSON encoding of codec output types cannot fail")
}

/// Decodes a score change, as a consumer of `lead-score-changes` (the handoff) does. Unknown
/// fields are ignored; the attributes come sorted by name, as the scorer writes them.
pub fn decode_change(format: Format, payload: &[u8]) -> Result<ScoreChange, DecodeError> {
    let raw = match format {
        Format::Json => raw_change_from_json(payload)?,
        Format::Protobuf => raw_change_from_proto(
            pb::ScoreChange::decode(payload).map_err(|e| malformed(format, e))?,
        ),
    };
    validate_change(raw)
}

fn raw_change_from_json(payload: &[u8]) -> Result<RawChange<'_>, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(json_text(payload)?);
    // Two levels: the change object, and the `reason` and `attributes` objects inside it.
    let top = LooseSeed::new(2)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| malformed(Format::Json, e))?;
    let Loose::Map(mut entries) = top else {
        return Err(malformed(
            Format::Json,
            format_args!("expected a score change object, found {}", top.found()),
        ));
    };
    if let Some(dup) = find_duplicate(&entries) {
        return Err(malformed(
            Format::Json,
            format_args!("duplicate field `{dup}`"),
        ));
    }
    let reason = take(&mut entries, "reason");
    if let Loose::Map(reason_entries) = &reason {
        if let Some(dup) = find_duplicate(reason_entries) {
            return Err(malformed(
                Format::Json,
                format_args!("duplicate field `reason.{dup}`"),
            ));
        }
    }
    Ok(RawChange {
        event_id: take(&mut entries, "event_id"),
        user_id: take(&mut entries, "user_id"),
        time: take(&mut entries, "time"),
        previous_score: take(&mut entries, "previous_score"),
        score: take(&mut entries, "score"),
        delta: take(&mut entries, "delta"),
        reason,
        windows: take(&mut entries, "windows"),
        attributes: take(&mut entries, "attributes"),
    })
}

/// Removes the entry `name` from an object's entries (absent when it is not there).
fn take<'a>(entries: &mut [(Cow<'a, str>, Loose<'a>)], name: &str) -> Loose<'a> {
    entries
        .iter_mut()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::mem::take(v))
        .unwrap_or_default()
}

fn raw_change_from_proto(m: pb::ScoreChange) -> RawChange<'static> {
    let reason = m.reason.map_or(Loose::Absent, |r| {
        let kind = match pb::ReasonKind::try_from(r.kind) {
            Ok(pb::ReasonKind::Unspecified) => Loose::Absent,
            Ok(pb::ReasonKind::Rule) => Loose::Str(Cow::Borrowed(ReasonKind::Rule.as_str())),
            Ok(pb::ReasonKind::Inactivity) => {
                Loose::Str(Cow::Borrowed(ReasonKind::Inactivity.as_str()))
            }
            Ok(pb::ReasonKind::External) => {
                Loose::Str(Cow::Borrowed(ReasonKind::External.as_str()))
            }
            Ok(pb::ReasonKind::Attribute) => {
                Loose::Str(Cow::Borrowed(ReasonKind::Attribute.as_str()))
            }
            Err(_) => Loose::UnknownEnum(r.kind),
        };
        Loose::Map(vec![
            (Cow::Borrowed("kind"), kind),
            (Cow::Borrowed("group"), loose_from_opt_string(r.group)),
            (Cow::Borrowed("event_id"), loose_from_opt_string(r.event_id)),
        ])
    });
    RawChange {
        event_id: loose_from_string(m.event_id),
        user_id: loose_from_string(m.user_id),
        time: m.time.map_or(Loose::Absent, Loose::Timestamp),
        // proto3 integers have no presence: zero is a value.
        previous_score: Loose::Int(m.previous_score),
        score: Loose::Int(m.score),
        delta: Loose::Int(m.delta),
        reason,
        windows: if m.windows == 0 {
            Loose::Absent
        } else {
            Loose::Int(m.windows.into())
        },
        attributes: loose_from_scalar_map(m.attributes),
    }
}

fn validate_change(raw: RawChange<'_>) -> Result<ScoreChange, DecodeError> {
    let event_id = required_str("event_id", raw.event_id, None)?.into_owned();
    let user_id = required_str("user_id", raw.user_id, None)?.into_owned();
    let time = required_time("time", raw.time)?;
    let previous_score = required_int("previous_score", raw.previous_score)?;
    let score = required_int("score", raw.score)?;
    let delta = required_int("delta", raw.delta)?;
    let mut reason_entries = match raw.reason.given() {
        None => return Err(missing("reason", None)),
        Some(Loose::Map(entries)) => entries,
        Some(other) => return Err(wrong_type("reason", "an object", &other)),
    };
    let kind = match take(&mut reason_entries, "kind").given() {
        None => return Err(missing("reason.kind", None)),
        Some(Loose::Str(s)) => ReasonKind::parse(&s).ok_or_else(|| {
            invalid(
                "reason.kind",
                format!(
                    "unknown reason kind {}, expected one of rule, inactivity, external, attribute",
                    Quoted(&s)
                ),
            )
        })?,
        Some(Loose::UnknownEnum(n)) => {
            return Err(invalid(
                "reason.kind",
                format!("unknown reason kind number {n}"),
            ))
        }
        Some(other) => return Err(wrong_type("reason.kind", "a string", &other)),
    };
    let group = optional_str("reason.group", take(&mut reason_entries, "group"))?;
    let source = optional_str("reason.event_id", take(&mut reason_entries, "event_id"))?;
    let windows = match optional_int("windows", raw.windows)? {
        Some(n) => u32::try_from(n)
            .map_err(|_| invalid("windows", format!("{n} is not a count of windows")))?,
        // Written by a scorer before collapsed decays: one window each.
        None if kind == ReasonKind::Inactivity => 1,
        None => 0,
    };
    let mut attributes = scalar_map("attributes", raw.attributes)?;
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(ScoreChange {
        event_id,
        user_id,
        time,
        previous_score,
        score,
        delta,
        reason: Reason {
            kind,
            group: group.map(Cow::into_owned),
            source_event_id: source.map(Cow::into_owned),
        },
        windows,
        attributes,
    })
}

#[derive(Serialize)]
struct ChangeOut<'a> {
    event_id: &'a str,
    user_id: &'a str,
    time: String,
    previous_score: i64,
    score: i64,
    delta: i64,
    reason: ReasonOut<'a>,
    /// Inactivity changes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    windows: Option<u32>,
    attributes: ScalarMapOut<'a>,
}

#[derive(Serialize)]
struct ReasonOut<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
}

impl<'a> ChangeOut<'a> {
    fn new(c: &'a ScoreChange) -> ChangeOut<'a> {
        ChangeOut {
            event_id: &c.event_id,
            user_id: &c.user_id,
            time: format_rfc3339(c.time),
            previous_score: c.previous_score,
            score: c.score,
            delta: c.delta,
            reason: ReasonOut {
                kind: c.reason.kind.as_str(),
                group: c.reason.group.as_deref(),
                event_id: c.reason.source_event_id.as_deref(),
            },
            windows: (c.reason.kind == ReasonKind::Inactivity).then_some(c.windows),
            attributes: ScalarMapOut(&c.attributes),
        }
    }
}

fn change_to_proto(c: &ScoreChange) -> pb::ScoreChange {
    let kind = match c.reason.kind {
        ReasonKind::Rule => pb::ReasonKind::Rule,
        ReasonKind::Inactivity => pb::ReasonKind::Inactivity,
        ReasonKind::External => pb::ReasonKind::External,
        ReasonKind::Attribute => pb::ReasonKind::Attribute,
    };
    pb::ScoreChange {
        event_id: c.event_id.clone(),
        user_id: c.user_id.clone(),
        time: Some(timestamp_from_millis(c.time)),
        previous_score: c.previous_score,
        score: c.score,
        delta: c.delta,
        reason: Some(pb::Reason {
            kind: kind as i32,
            group: c.reason.group.clone(),
            event_id: c.reason.source_event_id.clone(),
        }),
        attributes: scalar_map_to_proto(&c.attributes),
        windows: c.windows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::parse_rfc3339;
    use proptest::prelude::*;

    const T0: &str = "2026-01-05T10:00:00Z";

    fn t0() -> Millis {
        match parse_rfc3339(T0) {
            Ok(ms) => ms,
            Err(e) => panic!("{e}"),
        }
    }

    fn json(s: &str) -> Result<Event, DecodeError> {
        decode_event(Format::Json, None, s.as_bytes(), &Limits::default())
    }

    fn ok(s: &str) -> Event {
        match json(s) {
            Ok(e) => e,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    /// The error for `s`, checked to carry `reason`, as its message.
    fn rejects(s: &str, reason: &str) -> String {
        match json(s) {
            Ok(e) => panic!("{s} decoded as {e:?}"),
            Err(e) => {
                assert_eq!(e.reason(), reason, "{s}: {e}");
                e.to_string()
            }
        }
    }

    fn proto(m: &pb::Event) -> Result<Event, DecodeError> {
        decode_event(
            Format::Protobuf,
            None,
            &m.encode_to_vec(),
            &Limits::default(),
        )
    }

    fn proto_rejects(m: &pb::Event, reason: &str) -> String {
        match proto(m) {
            Ok(e) => panic!("{m:?} decoded as {e:?}"),
            Err(e) => {
                assert_eq!(e.reason(), reason, "{e}");
                e.to_string()
            }
        }
    }

    /// A valid protobuf event of `kind`, to break one field at a time.
    fn pb_event(kind: pb::EventType) -> pb::Event {
        pb::Event {
            user_id: "u1".into(),
            time: Some(timestamp_from_millis(t0())),
            r#type: kind as i32,
            ..Default::default()
        }
    }

    fn str_scalar(s: &str) -> pb::Scalar {
        pb::Scalar {
            kind: Some(pb::scalar::Kind::StringValue(s.into())),
        }
    }

    fn sample_events() -> Vec<Event> {
        let t = t0();
        let mut session = Event::new("u1", t, EventType::SessionStart);
        session.app_id = Some("web".into());
        session.event_id = Some("e-1".into());

        let mut custom = Event::new("u1", t + 1, EventType::CustomEvent);
        custom.name = Some("pricing_viewed".into());
        custom.properties = vec![
            ("count".into(), Scalar::Int(3)),
            ("plan".into(), Scalar::Str("pro \"annual\"".into())),
            ("ratio".into(), Scalar::Float(0.25)),
            ("trial".into(), Scalar::Bool(true)),
        ];

        let mut email = Event::new("u2", t + 2, EventType::EmailAdded);
        email.value = Some(Scalar::Str("a@example.com".into()));

        let mut attr = Event::new("u3", t + 3, EventType::AttributeChanged);
        attr.name = Some("lead_status".into());
        attr.value = Some(Scalar::Str("Open".into()));

        let mut removal = Event::new("u3", t + 4, EventType::AttributeChanged);
        removal.name = Some("lead_status".into());

        let mut set = Event::new("u4", -1_500, EventType::ExternalScore);
        set.score = Some(ScoreOp::Set(-40));
        set.updated_at = Some(t - 60_000);

        let mut inc = Event::new("u4", t + 5, EventType::ExternalScore);
        inc.score = Some(ScoreOp::Increment(i64::MAX));

        vec![session, custom, email, attr, removal, set, inc]
    }

    fn sample_change() -> ScoreChange {
        ScoreChange {
            event_id: "c-9f2".into(),
            user_id: "u1".into(),
            time: t0() + 123,
            previous_score: 10,
            score: 25,
            delta: 15,
            reason: Reason {
                kind: ReasonKind::Rule,
                group: Some("engaged".into()),
                source_event_id: Some("lead-events/0/42".into()),
            },
            windows: 0,
            attributes: vec![
                ("lead_status".into(), Scalar::Str("Open".into())),
                ("sf_lead_id".into(), Scalar::Str("00Q5".into())),
                ("visits".into(), Scalar::Int(7)),
            ],
        }
    }

    // --- Format and limits -------------------------------------------------------------------

    #[test]
    fn format_parses_and_prints_its_lowercase_name() {
        for f in [Format::Json, Format::Protobuf] {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        assert_eq!(
            serde_json::from_str::<Format>("\"protobuf\"").ok(),
            Some(Format::Protobuf)
        );
        assert_eq!(
            "xml".parse::<Format>().map_err(|e| e.to_string()),
            Err("unknown format \"xml\": expected \"json\" or \"protobuf\"".to_owned())
        );
    }

    #[test]
    fn default_limit_is_64_kib() {
        assert_eq!(Limits::default().max_bytes, 65_536);
    }

    // --- JSON: accepted events ---------------------------------------------------------------

    #[test]
    fn decodes_every_event_type_from_json() {
        let e = ok(
            r#"{"user_id":"u1","time":"2026-01-05T10:00:00Z","type":"session_start","app_id":"web","event_id":"e-1"}"#,
        );
        assert_eq!(e, sample_events()[0]);

        let e = ok(
            r#"{"user_id":"u1","time":"2026-01-05T10:00:00.001Z","type":"custom_event","name":"pricing_viewed",
                       "properties":{"count":3,"plan":"pro \"annual\"","ratio":0.25,"trial":true}}"#,
        );
        assert_eq!(e, sample_events()[1]);

        let e = ok(
            r#"{"user_id":"u2","time":"2026-01-05T10:00:00.002Z","type":"email_added","value":"a@example.com"}"#,
        );
        assert_eq!(e, sample_events()[2]);

        let e = ok(
            r#"{"user_id":"u3","time":"2026-01-05T10:00:00.003Z","type":"attribute_changed","name":"lead_status","value":"Open"}"#,
        );
        assert_eq!(e, sample_events()[3]);

        let e = ok(
            r#"{"user_id":"u4","time":"1969-12-31T23:59:58.500Z","type":"external_score","score":-40,"updated_at":"2026-01-05T09:59:00Z"}"#,
        );
        assert_eq!(e, sample_events()[5]);

        let e = ok(
            r#"{"user_id":"u4","time":"2026-01-05T10:00:00.005Z","type":"external_score","increment":9223372036854775807}"#,
        );
        assert_eq!(e, sample_events()[6]);
    }

    #[test]
    fn attribute_changed_with_null_value_removes_the_attribute() {
        let e = ok(
            r#"{"user_id":"u3","time":"2026-01-05T10:00:00.004Z","type":"attribute_changed","name":"lead_status","value":null}"#,
        );
        assert_eq!(e, sample_events()[4]);
    }

    #[test]
    fn attribute_values_keep_their_scalar_kind() {
        for (v, want) in [
            ("7", Scalar::Int(7)),
            ("-7", Scalar::Int(-7)),
            ("7.5", Scalar::Float(7.5)),
            ("7.0", Scalar::Float(7.0)),
            ("1e3", Scalar::Float(1000.0)),
            (
                "18446744073709551615",
                Scalar::Float(18_446_744_073_709_551_615.0),
            ),
            ("false", Scalar::Bool(false)),
            ("\"\"", Scalar::Str(String::new())),
        ] {
            let e = ok(&format!(
                r#"{{"user_id":"u","time":"{T0}","type":"attribute_changed","name":"a","value":{v}}}"#
            ));
            assert_eq!(e.value, Some(want), "{v}");
        }
    }

    #[test]
    fn keeps_json_property_order() {
        let e = ok(&format!(
            r#"{{"user_id":"u","time":"{T0}","type":"custom_event","name":"n","properties":{{"z":1,"a":2,"m":3}}}}"#
        ));
        let keys: Vec<&str> = e.properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }

    #[test]
    fn decodes_escaped_strings() {
        let e = ok(&format!(
            r#"{{"user\u005fid":"u\u00e9\n1","time":"{T0}","type":"custom_event","name":"caf\u00e9","properties":{{"k\"ey":"v\\al"}}}}"#
        ));
        assert_eq!(e.user_id, "u\u{e9}\n1");
        assert_eq!(e.name.as_deref(), Some("caf\u{e9}"));
        assert_eq!(e.property("k\"ey"), Some(&Scalar::Str("v\\al".into())));
    }

    #[test]
    fn ignores_unknown_fields() {
        let e = ok(&format!(
            r#"{{"schema":2,"user_id":"u1","nested":{{"a":[1,{{"b":null}}]}},"time":"{T0}","type":"session_start","tags":["x"]}}"#
        ));
        assert_eq!(e, Event::new("u1", t0(), EventType::SessionStart));
    }

    #[test]
    fn ignores_fields_that_do_not_belong_to_the_type() {
        let e = ok(&format!(
            r#"{{"user_id":"u1","time":"{T0}","type":"session_start","score":1.5,"increment":2,"name":5,
                 "properties":[1],"value":{{"x":1}},"updated_at":"not a time"}}"#
        ));
        assert_eq!(e, Event::new("u1", t0(), EventType::SessionStart));

        let e = ok(&format!(
            r#"{{"user_id":"u1","time":"{T0}","type":"email_added","value":"a@b","app_id":7,"properties":null}}"#
        ));
        assert_eq!(e.app_id, None);
        assert!(e.properties.is_empty());
    }

    #[test]
    fn treats_null_as_absent_for_optional_fields() {
        let e = ok(&format!(
            r#"{{"user_id":"u1","time":"{T0}","type":"session_start","event_id":null,"app_id":null}}"#
        ));
        assert_eq!(e, Event::new("u1", t0(), EventType::SessionStart));
        let e = ok(&format!(
            r#"{{"user_id":"u1","time":"{T0}","type":"external_score","score":3,"increment":null,"updated_at":null}}"#
        ));
        assert_eq!(e.score, Some(ScoreOp::Set(3)));
        assert_eq!(e.updated_at, None);
    }

    #[test]
    fn applies_time_offsets() {
        let e = ok(r#"{"user_id":"u1","time":"2026-01-05T12:00:00+02:00","type":"session_start"}"#);
        assert_eq!(e.time, t0());
    }

    // --- JSON: rejected events ---------------------------------------------------------------

    #[test]
    fn rejects_missing_user_id() {
        let msg = rejects(
            &format!(r#"{{"time":"{T0}","type":"session_start"}}"#),
            "missing_field",
        );
        assert_eq!(msg, r#"missing field "user_id""#);
        rejects(
            &format!(r#"{{"user_id":null,"time":"{T0}","type":"session_start"}}"#),
            "missing_field",
        );
    }

    #[test]
    fn rejects_empty_or_non_string_user_id() {
        let msg = rejects(
            &format!(r#"{{"user_id":"","time":"{T0}","type":"session_start"}}"#),
            "invalid_value",
        );
        assert_eq!(msg, r#"field "user_id": must not be empty"#);
        let msg = rejects(
            &format!(r#"{{"user_id":42,"time":"{T0}","type":"session_start"}}"#),
            "wrong_type",
        );
        assert_eq!(
            msg,
            r#"field "user_id": expected a string, found an integer"#
        );
    }

    #[test]
    fn rejects_missing_time() {
        let msg = rejects(
            r#"{"user_id":"u1","type":"session_start"}"#,
            "missing_field",
        );
        assert_eq!(msg, r#"missing field "time""#);
    }

    #[test]
    fn rejects_invalid_time_naming_what_is_wrong() {
        let msg = rejects(
            r#"{"user_id":"u1","time":"2026-13-01T00:00:00Z","type":"session_start"}"#,
            "invalid_value",
        );
        assert_eq!(
            msg,
            r#"field "time": invalid RFC 3339 timestamp "2026-13-01T00:00:00Z": month 13 out of range"#
        );
        let msg = rejects(
            r#"{"user_id":"u1","time":1767607200000,"type":"session_start"}"#,
            "wrong_type",
        );
        assert_eq!(
            msg,
            r#"field "time": expected an RFC 3339 timestamp string, found an integer"#
        );
    }

    #[test]
    fn cuts_long_input_strings_in_messages() {
        let long = "9".repeat(1000);
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{long}","type":"session_start"}}"#),
            "invalid_value",
        );
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains(&format!("\"{}\"...", "9".repeat(64))), "{msg}");
    }

    #[test]
    fn rejects_missing_unknown_or_non_string_type() {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}"}}"#),
            "missing_field",
        );
        assert_eq!(msg, r#"missing field "type""#);
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":"page_view"}}"#),
            "invalid_value",
        );
        assert_eq!(
            msg,
            "field \"type\": unknown event type \"page_view\", expected one of session_start, \
             custom_event, email_added, attribute_changed, external_score"
        );
        rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":1}}"#),
            "wrong_type",
        );
    }

    #[test]
    fn rejects_empty_event_id() {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":"session_start","event_id":""}}"#),
            "invalid_value",
        );
        assert_eq!(msg, r#"field "event_id": must not be empty"#);
    }

    #[test]
    fn rejects_custom_event_without_name() {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":"custom_event"}}"#),
            "missing_field",
        );
        assert_eq!(msg, r#"missing field "name" (required for custom_event)"#);
        rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":"custom_event","name":""}}"#),
            "invalid_value",
        );
    }

    #[test]
    fn rejects_attribute_changed_without_name() {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":"attribute_changed","value":1}}"#),
            "missing_field",
        );
        assert_eq!(
            msg,
            r#"missing field "name" (required for attribute_changed)"#
        );
    }

    #[test]
    fn rejects_attribute_changed_without_a_value_key() {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":"attribute_changed","name":"a"}}"#),
            "missing_field",
        );
        assert_eq!(
            msg,
            r#"missing field "value" (required for attribute_changed)"#
        );
    }

    #[test]
    fn rejects_attribute_values_that_are_not_scalars() {
        let msg = rejects(
            &format!(
                r#"{{"user_id":"u1","time":"{T0}","type":"attribute_changed","name":"a","value":{{"x":1}}}}"#
            ),
            "wrong_type",
        );
        assert_eq!(
            msg,
            r#"field "value": expected a string, number, boolean or null, found an object"#
        );
        rejects(
            &format!(
                r#"{{"user_id":"u1","time":"{T0}","type":"attribute_changed","name":"a","value":[1]}}"#
            ),
            "wrong_type",
        );
    }

    #[test]
    fn rejects_email_added_without_a_string_value() {
        let base = format!(r#""user_id":"u1","time":"{T0}","type":"email_added""#);
        let msg = rejects(&format!("{{{base}}}"), "missing_field");
        assert_eq!(msg, r#"missing field "value" (required for email_added)"#);
        let msg = rejects(&format!(r#"{{{base},"value":null}}"#), "wrong_type");
        assert_eq!(msg, r#"field "value": expected a string, found null"#);
        rejects(&format!(r#"{{{base},"value":5}}"#), "wrong_type");
        let msg = rejects(&format!(r#"{{{base},"value":""}}"#), "invalid_value");
        assert_eq!(msg, r#"field "value": must not be empty"#);
    }

    #[test]
    fn rejects_external_score_with_both_score_and_increment() {
        let msg = rejects(
            &format!(
                r#"{{"user_id":"u1","time":"{T0}","type":"external_score","score":1,"increment":2}}"#
            ),
            "invalid_value",
        );
        assert_eq!(
            msg,
            r#"fields "score" and "increment" are both set (external_score needs exactly one)"#
        );
    }

    #[test]
    fn rejects_external_score_with_neither_score_nor_increment() {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":"external_score"}}"#),
            "missing_field",
        );
        assert_eq!(
            msg,
            r#"missing field "score" or "increment" (external_score needs exactly one)"#
        );
    }

    #[test]
    fn rejects_non_integer_scores() {
        let base = format!(r#""user_id":"u1","time":"{T0}","type":"external_score""#);
        let msg = rejects(&format!(r#"{{{base},"score":5.0}}"#), "wrong_type");
        assert_eq!(msg, r#"field "score": expected an integer, found a float"#);
        let msg = rejects(&format!(r#"{{{base},"increment":"5"}}"#), "wrong_type");
        assert_eq!(
            msg,
            r#"field "increment": expected an integer, found a string"#
        );
        let msg = rejects(
            &format!(r#"{{{base},"score":9223372036854775808}}"#),
            "invalid_value",
        );
        assert_eq!(
            msg,
            r#"field "score": 9223372036854775808 is out of the 64-bit integer range"#
        );
    }

    #[test]
    fn rejects_invalid_updated_at() {
        let msg = rejects(
            &format!(
                r#"{{"user_id":"u1","time":"{T0}","type":"external_score","score":1,"updated_at":"2026-02-30T00:00:00Z"}}"#
            ),
            "invalid_value",
        );
        assert_eq!(
            msg,
            r#"field "updated_at": invalid RFC 3339 timestamp "2026-02-30T00:00:00Z": day 30 out of range for 2026-02"#
        );
    }

    #[test]
    fn rejects_properties_that_are_not_scalars_naming_the_property() {
        let base = format!(r#""user_id":"u1","time":"{T0}","type":"custom_event","name":"n""#);
        for (v, found) in [
            ("{\"a\":1}", "an object"),
            ("[1,2]", "an array"),
            ("null", "null"),
        ] {
            let msg = rejects(
                &format!(r#"{{{base},"properties":{{"ok":1,"plan":{v}}}}}"#),
                "wrong_type",
            );
            assert_eq!(
                msg,
                format!(
                    r#"field "properties.plan": expected a string, number or boolean, found {found}"#
                )
            );
        }
    }

    #[test]
    fn rejects_properties_that_are_not_an_object() {
        let msg = rejects(
            &format!(
                r#"{{"user_id":"u1","time":"{T0}","type":"custom_event","name":"n","properties":[]}}"#
            ),
            "wrong_type",
        );
        assert_eq!(
            msg,
            r#"field "properties": expected an object, found an array"#
        );
    }

    #[test]
    fn rejects_repeated_property_names() {
        let msg = rejects(
            &format!(
                r#"{{"user_id":"u1","time":"{T0}","type":"custom_event","name":"n","properties":{{"a":1,"b":2,"a":3}}}}"#
            ),
            "invalid_value",
        );
        assert_eq!(msg, r#"field "properties": "a" appears more than once"#);

        let many: Vec<String> = (0..40).map(|i| format!("\"p{}\":{i}", i % 39)).collect();
        rejects(
            &format!(
                r#"{{"user_id":"u1","time":"{T0}","type":"custom_event","name":"n","properties":{{{}}}}}"#,
                many.join(",")
            ),
            "invalid_value",
        );
    }

    #[test]
    fn rejects_repeated_top_level_keys_as_malformed() {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","user_id":"u2","time":"{T0}","type":"session_start"}}"#),
            "malformed",
        );
        assert!(msg.contains("duplicate field `user_id`"), "{msg}");
    }

    #[test]
    fn rejects_payloads_that_are_not_a_json_object_as_malformed() {
        for p in [
            "",
            "not json",
            "{\"user_id\":",
            "[1,2]",
            "\"u1\"",
            "null",
            "{} {}",
            "{\"user_id\":\"u1\"}x",
        ] {
            let msg = rejects(p, "malformed");
            assert!(msg.starts_with("malformed JSON payload: "), "{msg}");
        }
    }

    #[test]
    fn rejects_invalid_utf8_as_malformed() {
        let mut payload =
            format!(r#"{{"user_id":"u1","time":"{T0}","type":"session_start","x":"#).into_bytes();
        payload.extend_from_slice(b"\"\xff\xfe\"}");
        let err = decode_event(Format::Json, None, &payload, &Limits::default());
        assert_eq!(err.map_err(|e| e.reason()), Err("malformed"));
    }

    #[test]
    fn rejects_oversized_payloads_before_parsing() {
        let payload = vec![b'x'; 1_048_576];
        let err = decode_event(Format::Json, None, &payload, &Limits::default());
        let err = err.err().map(|e| (e.reason(), e.to_string()));
        assert_eq!(
            err,
            Some((
                "oversized",
                "payload is 1048576 bytes, over the 65536-byte limit".to_owned()
            ))
        );
        let err = decode_event(Format::Protobuf, None, &payload, &Limits::default());
        assert_eq!(err.map_err(|e| e.reason()), Err("oversized"));
    }

    #[test]
    fn accepts_a_payload_exactly_at_the_limit() {
        let payload = format!(r#"{{"user_id":"u1","time":"{T0}","type":"session_start"}}"#);
        let limits = Limits {
            max_bytes: payload.len(),
        };
        assert!(decode_event(Format::Json, None, payload.as_bytes(), &limits).is_ok());
        let limits = Limits {
            max_bytes: payload.len() - 1,
        };
        let err = decode_event(Format::Json, None, payload.as_bytes(), &limits);
        assert_eq!(err.map_err(|e| e.reason()), Err("oversized"));
    }

    // --- Keys --------------------------------------------------------------------------------

    #[test]
    fn accepts_a_key_equal_to_user_id() {
        let payload = format!(r#"{{"user_id":"u1","time":"{T0}","type":"session_start"}}"#);
        let e = decode_event(
            Format::Json,
            Some(b"u1"),
            payload.as_bytes(),
            &Limits::default(),
        );
        assert_eq!(e.map(|e| e.user_id), Ok("u1".to_owned()));
    }

    #[test]
    fn rejects_a_key_that_differs_from_user_id() {
        let payload = format!(r#"{{"user_id":"u1","time":"{T0}","type":"session_start"}}"#);
        let err = decode_event(
            Format::Json,
            Some(b"u2"),
            payload.as_bytes(),
            &Limits::default(),
        );
        let err = err.err().map(|e| (e.reason(), e.to_string()));
        assert_eq!(
            err,
            Some((
                "key_mismatch",
                r#"key "u2" does not match user_id "u1""#.to_owned()
            ))
        );
        let err = decode_event(
            Format::Json,
            Some(b""),
            payload.as_bytes(),
            &Limits::default(),
        );
        assert_eq!(err.map_err(|e| e.reason()), Err("key_mismatch"));
    }

    #[test]
    fn rejects_a_key_that_is_not_utf8() {
        let payload = format!(r#"{{"user_id":"u1","time":"{T0}","type":"session_start"}}"#);
        let err = decode_event(
            Format::Json,
            Some(b"\xffu1"),
            payload.as_bytes(),
            &Limits::default(),
        );
        let err = err.err().map(|e| (e.reason(), e.to_string()));
        assert_eq!(
            err,
            Some((
                "key_mismatch",
                r#"key is not valid UTF-8, so it cannot match user_id "u1""#.to_owned()
            ))
        );
    }

    #[test]
    fn rejects_a_key_mismatch_in_protobuf() {
        let payload = pb_event(pb::EventType::SessionStart).encode_to_vec();
        let err = decode_event(Format::Protobuf, Some(b"u2"), &payload, &Limits::default());
        assert_eq!(err.map_err(|e| e.reason()), Err("key_mismatch"));
        let ok = decode_event(Format::Protobuf, Some(b"u1"), &payload, &Limits::default());
        assert!(ok.is_ok());
    }

    #[test]
    fn every_reason_is_in_the_published_set() {
        let errors = [
            DecodeError::Oversized { size: 2, limit: 1 },
            malformed(Format::Json, "x"),
            missing("f", None),
            DecodeError::MissingScoreOp,
            wrong_type("f", "a string", &Loose::Null),
            invalid("f", "x"),
            DecodeError::ScoreAndIncrement,
            DecodeError::KeyMismatch {
                key: "a".into(),
                user_id: "b".into(),
            },
            DecodeError::KeyNotUtf8 {
                user_id: "b".into(),
            },
        ];
        for e in errors {
            assert!(DecodeError::REASONS.contains(&e.reason()), "{e:?}");
        }
    }

    // --- Protobuf ----------------------------------------------------------------------------

    #[test]
    fn json_and_protobuf_of_the_same_event_decode_equal() {
        for event in sample_events() {
            let from_json = decode_event(
                Format::Json,
                Some(event.user_id.as_bytes()),
                &encode_event(Format::Json, &event),
                &Limits::default(),
            );
            let from_proto = decode_event(
                Format::Protobuf,
                Some(event.user_id.as_bytes()),
                &encode_event(Format::Protobuf, &event),
                &Limits::default(),
            );
            assert_eq!(from_json, Ok(event.clone()));
            assert_eq!(from_proto, Ok(event));
        }
    }

    #[test]
    fn protobuf_properties_come_sorted_by_key() {
        let mut e = Event::new("u1", t0(), EventType::CustomEvent);
        e.name = Some("n".into());
        e.properties = vec![("z".into(), Scalar::Int(1)), ("a".into(), Scalar::Int(2))];
        let got = decode_event(
            Format::Protobuf,
            None,
            &encode_event(Format::Protobuf, &e),
            &Limits::default(),
        );
        let keys: Option<Vec<String>> = got
            .ok()
            .map(|e| e.properties.into_iter().map(|(k, _)| k).collect());
        assert_eq!(keys, Some(vec!["a".to_owned(), "z".to_owned()]));
    }

    #[test]
    fn protobuf_rejects_missing_required_fields() {
        let mut m = pb_event(pb::EventType::SessionStart);
        m.user_id.clear();
        assert_eq!(
            proto_rejects(&m, "missing_field"),
            r#"missing field "user_id""#
        );

        let mut m = pb_event(pb::EventType::SessionStart);
        m.time = None;
        assert_eq!(
            proto_rejects(&m, "missing_field"),
            r#"missing field "time""#
        );

        let m = pb_event(pb::EventType::Unspecified);
        assert_eq!(
            proto_rejects(&m, "missing_field"),
            r#"missing field "type""#
        );
    }

    #[test]
    fn protobuf_rejects_an_unknown_type_number() {
        let mut m = pb_event(pb::EventType::SessionStart);
        m.r#type = 99;
        assert_eq!(
            proto_rejects(&m, "invalid_value"),
            r#"field "type": unknown event type number 99"#
        );
    }

    #[test]
    fn protobuf_rejects_out_of_range_timestamps() {
        let mut m = pb_event(pb::EventType::SessionStart);
        m.time = Some(crate::proto::google::protobuf::Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(
            proto_rejects(&m, "invalid_value"),
            r#"field "time": invalid timestamp: nanos -1 out of range 0..=999999999"#
        );
        m.time = Some(crate::proto::google::protobuf::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        });
        proto_rejects(&m, "invalid_value");
        m.time = Some(crate::proto::google::protobuf::Timestamp {
            seconds: MAX_MILLIS / 1000 + 1,
            nanos: 0,
        });
        proto_rejects(&m, "invalid_value");
    }

    #[test]
    fn protobuf_applies_the_type_specific_rules() {
        let m = pb_event(pb::EventType::CustomEvent);
        assert_eq!(
            proto_rejects(&m, "missing_field"),
            r#"missing field "name" (required for custom_event)"#
        );

        let m = pb_event(pb::EventType::EmailAdded);
        assert_eq!(
            proto_rejects(&m, "missing_field"),
            r#"missing field "value" (required for email_added)"#
        );

        let mut m = pb_event(pb::EventType::EmailAdded);
        m.value = Some(pb::Scalar {
            kind: Some(pb::scalar::Kind::IntValue(3)),
        });
        proto_rejects(&m, "wrong_type");

        let m = pb_event(pb::EventType::ExternalScore);
        proto_rejects(&m, "missing_field");

        let mut m = pb_event(pb::EventType::ExternalScore);
        m.score_op = Some(pb::event::ScoreOp::Increment(-3));
        m.updated_at = Some(crate::proto::google::protobuf::Timestamp {
            seconds: 1,
            nanos: 2_000_000,
        });
        let e = proto(&m);
        assert_eq!(
            e.map(|e| (e.score, e.updated_at)),
            Ok((Some(ScoreOp::Increment(-3)), Some(1002)))
        );

        let mut m = pb_event(pb::EventType::SessionStart);
        m.event_id = Some(String::new());
        proto_rejects(&m, "invalid_value");
    }

    #[test]
    fn protobuf_attribute_changed_without_value_removes_the_attribute() {
        let mut m = pb_event(pb::EventType::AttributeChanged);
        m.name = Some("lead_status".into());
        assert_eq!(proto(&m).map(|e| e.value), Ok(None));
        m.value = Some(pb::Scalar { kind: None });
        assert_eq!(proto(&m).map(|e| e.value), Ok(None));
        m.name = None;
        proto_rejects(&m, "missing_field");
    }

    #[test]
    fn protobuf_rejects_properties_without_a_value() {
        let mut m = pb_event(pb::EventType::CustomEvent);
        m.name = Some("n".into());
        m.properties
            .insert("plan".into(), pb::Scalar { kind: None });
        assert_eq!(
            proto_rejects(&m, "wrong_type"),
            r#"field "properties.plan": expected a string, number or boolean, found null"#
        );
    }

    #[test]
    fn protobuf_rejects_non_finite_numbers() {
        let mut m = pb_event(pb::EventType::CustomEvent);
        m.name = Some("n".into());
        m.properties.insert(
            "ratio".into(),
            pb::Scalar {
                kind: Some(pb::scalar::Kind::DoubleValue(f64::NAN)),
            },
        );
        assert_eq!(
            proto_rejects(&m, "invalid_value"),
            r#"field "properties.ratio": NaN is not a finite number"#
        );
    }

    #[test]
    fn protobuf_ignores_fields_that_do_not_belong_to_the_type() {
        let mut m = pb_event(pb::EventType::SessionStart);
        m.properties.insert("x".into(), pb::Scalar { kind: None });
        m.value = Some(str_scalar("v"));
        m.score_op = Some(pb::event::ScoreOp::Score(3));
        m.name = Some(String::new());
        assert_eq!(
            proto(&m),
            Ok(Event::new("u1", t0(), EventType::SessionStart))
        );
    }

    #[test]
    fn protobuf_ignores_unknown_fields() {
        let mut payload = pb_event(pb::EventType::SessionStart).encode_to_vec();
        // Field 99, wire type 2 (length-delimited), 3 bytes.
        prost::encoding::encode_key(99, prost::encoding::WireType::LengthDelimited, &mut payload);
        payload.extend_from_slice(&[3, b'a', b'b', b'c']);
        let e = decode_event(Format::Protobuf, None, &payload, &Limits::default());
        assert_eq!(e, Ok(Event::new("u1", t0(), EventType::SessionStart)));
    }

    #[test]
    fn protobuf_rejects_garbage_as_malformed() {
        for payload in [&b"\xff\xff\xff"[..], b"{\"user_id\":\"u1\"}", b"\x0a\x05ab"] {
            let err = decode_event(Format::Protobuf, None, payload, &Limits::default());
            let err = err.err().map(|e| (e.reason(), e.to_string()));
            assert!(
                matches!(&err, Some(("malformed", m)) if m.starts_with("malformed protobuf payload: ")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn protobuf_rejects_invalid_utf8_strings_as_malformed() {
        // Field 1 (user_id), length 2, bytes that are not UTF-8.
        let payload = [0x0a, 0x02, 0xff, 0xfe];
        let err = decode_event(Format::Protobuf, None, &payload, &Limits::default());
        assert_eq!(err.map_err(|e| e.reason()), Err("malformed"));
    }

    // --- Encoding ----------------------------------------------------------------------------

    #[test]
    fn encodes_json_with_spec_field_names_omitting_absent_fields() {
        let events = sample_events();
        let text = |e: &Event| String::from_utf8(encode_event(Format::Json, e)).ok();
        assert_eq!(
            text(&events[0]).as_deref(),
            Some(
                r#"{"user_id":"u1","time":"2026-01-05T10:00:00Z","event_id":"e-1","type":"session_start","app_id":"web"}"#
            )
        );
        assert_eq!(
            text(&events[4]).as_deref(),
            Some(
                r#"{"user_id":"u3","time":"2026-01-05T10:00:00.004Z","type":"attribute_changed","name":"lead_status","value":null}"#
            )
        );
        assert_eq!(
            text(&events[5]).as_deref(),
            Some(
                r#"{"user_id":"u4","time":"1969-12-31T23:59:58.500Z","type":"external_score","score":-40,"updated_at":"2026-01-05T09:59:00Z"}"#
            )
        );
        assert_eq!(
            text(&events[1]).as_deref(),
            Some(
                r#"{"user_id":"u1","time":"2026-01-05T10:00:00.001Z","type":"custom_event","name":"pricing_viewed","properties":{"count":3,"plan":"pro \"annual\"","ratio":0.25,"trial":true}}"#
            )
        );
    }

    // --- Score changes -----------------------------------------------------------------------

    #[test]
    fn change_json_has_the_spec_shape() {
        let text = String::from_utf8(encode_change(Format::Json, &sample_change())).ok();
        assert_eq!(
            text.as_deref(),
            Some(concat!(
                r#"{"event_id":"c-9f2","user_id":"u1","time":"2026-01-05T10:00:00.123Z","#,
                r#""previous_score":10,"score":25,"delta":15,"#,
                r#""reason":{"kind":"rule","group":"engaged","event_id":"lead-events/0/42"},"#,
                r#""attributes":{"lead_status":"Open","sf_lead_id":"00Q5","visits":7}}"#
            ))
        );
    }

    #[test]
    fn change_json_omits_a_null_group_and_source_event() {
        let mut c = sample_change();
        c.reason = Reason {
            kind: ReasonKind::Inactivity,
            group: None,
            source_event_id: None,
        };
        c.attributes.clear();
        c.windows = 4;
        let v = change_to_json(&c);
        assert_eq!(v["reason"], serde_json::json!({"kind": "inactivity"}));
        assert_eq!(v["attributes"], serde_json::json!({}));
        assert_eq!(v["windows"], 4);
        // Only inactivity changes carry a window count.
        assert!(change_to_json(&sample_change()).get("windows").is_none());
    }

    /// A change written before collapsed decays (no `windows`) covers one window.
    #[test]
    fn an_inactivity_change_without_windows_covers_one() {
        let json = br#"{"event_id":"inactivity:u@1","user_id":"u","time":"2026-01-05T10:00:00Z","previous_score":3,"score":2,"delta":-1,"reason":{"kind":"inactivity"},"attributes":{}}"#;
        assert_eq!(decode_change(Format::Json, json).map(|c| c.windows), Ok(1));
    }

    #[test]
    fn a_time_further_ahead_than_the_skew_is_invalid_and_names_the_time() {
        let now = t0();
        let mut e = Event::new("u", now + 3_600_000, EventType::SessionStart);
        assert_eq!(check_not_future(&e, now, 3_600_000), Ok(()));
        e.time = now + 3_600_001;
        let err = check_not_future(&e, now, 3_600_000).expect_err("too far ahead");
        assert_eq!(err.reason(), "invalid_value");
        e.time = match parse_rfc3339("2099-01-01T00:00:00Z") {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let msg = check_not_future(&e, now, 3_600_000)
            .expect_err("2099")
            .to_string();
        assert!(
            msg.contains("time") && msg.contains("2099-01-01T00:00:00"),
            "{msg}"
        );
    }

    #[test]
    fn change_to_json_matches_the_encoded_json() {
        let c = sample_change();
        let parsed: Result<serde_json::Value, _> =
            serde_json::from_slice(&encode_change(Format::Json, &c));
        assert_eq!(parsed.ok(), Some(change_to_json(&c)));
    }

    #[test]
    fn change_round_trips_in_both_formats() {
        let mut changes = vec![sample_change()];
        for kind in ReasonKind::ALL {
            let mut c = sample_change();
            c.reason.kind = kind;
            c.reason.group = None;
            c.windows = if kind == ReasonKind::Inactivity { 3 } else { 0 };
            c.previous_score = 0;
            c.delta = 0;
            c.score = 0;
            c.time = -1;
            c.attributes.push(("zz_ratio".into(), Scalar::Float(0.5)));
            c.attributes.push(("zz_vip".into(), Scalar::Bool(false)));
            changes.push(c);
        }
        for c in changes {
            for format in [Format::Json, Format::Protobuf] {
                assert_eq!(
                    decode_change(format, &encode_change(format, &c)),
                    Ok(c.clone()),
                    "{format}"
                );
            }
        }
    }

    #[test]
    fn decode_change_sorts_attributes_and_ignores_unknown_fields() {
        let c = decode_change(
            Format::Json,
            br#"{"v":2,"event_id":"c","user_id":"u","time":"2026-01-05T10:00:00Z","previous_score":0,
                 "score":1,"delta":1,"reason":{"kind":"external","extra":[1]},"attributes":{"b":1,"a":"x"}}"#,
        );
        let names: Option<Vec<String>> = c
            .ok()
            .map(|c| c.attributes.into_iter().map(|(k, _)| k).collect());
        assert_eq!(names, Some(vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn decode_change_rejects_bad_changes_naming_the_field() {
        let good =
            String::from_utf8(encode_change(Format::Json, &sample_change())).unwrap_or_default();
        let cases = [
            (
                good.replace(r#""kind":"rule""#, r#""kind":"bonus""#),
                "invalid_value",
                "reason.kind",
            ),
            (
                good.replace(r#""kind":"rule","#, ""),
                "missing_field",
                "reason.kind",
            ),
            (good.replace(r#""score":25,"#, ""), "missing_field", "score"),
            (
                good.replace(r#""score":25"#, r#""score":2.5"#),
                "wrong_type",
                "score",
            ),
            (
                good.replace("2026-01-05T10:00:00.123Z", "yesterday"),
                "invalid_value",
                "time",
            ),
            (
                good.replace(r#""visits":7"#, r#""visits":[7]"#),
                "wrong_type",
                "attributes.visits",
            ),
            (
                good.replace(r#""user_id":"u1","#, ""),
                "missing_field",
                "user_id",
            ),
            (
                good.replace(
                    r#""event_id":"c-9f2","#,
                    r#""event_id":"c-9f2","event_id":"x","#,
                ),
                "malformed",
                "event_id",
            ),
            ("[]".to_owned(), "malformed", "score change object"),
        ];
        for (payload, reason, field) in cases {
            let err = decode_change(Format::Json, payload.as_bytes());
            let err = err.err().map(|e| (e.reason(), e.to_string()));
            assert!(
                matches!(&err, Some((r, m)) if *r == reason && m.contains(field)),
                "{payload}: {err:?}"
            );
        }
    }

    #[test]
    fn decode_change_rejects_bad_protobuf_changes() {
        let good = change_to_proto(&sample_change());
        let decode = |m: &pb::ScoreChange| {
            decode_change(Format::Protobuf, &m.encode_to_vec())
                .err()
                .map(|e| (e.reason(), e.to_string()))
        };
        let mut m = good.clone();
        m.reason = None;
        assert_eq!(
            decode(&m),
            Some(("missing_field", r#"missing field "reason""#.to_owned()))
        );
        let mut m = good.clone();
        if let Some(r) = m.reason.as_mut() {
            r.kind = 0;
        }
        assert_eq!(decode(&m).map(|e| e.0), Some("missing_field"));
        let mut m = good.clone();
        if let Some(r) = m.reason.as_mut() {
            r.kind = 42;
        }
        assert_eq!(
            decode(&m),
            Some((
                "invalid_value",
                r#"field "reason.kind": unknown reason kind number 42"#.to_owned()
            ))
        );
        let mut m = good;
        m.user_id.clear();
        assert_eq!(decode(&m).map(|e| e.0), Some("missing_field"));
        assert_eq!(
            decode_change(Format::Protobuf, b"\xff").map_err(|e| e.reason()),
            Err("malformed")
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for format in [Format::Json, Format::Protobuf] {
                let _ = decode_event(format, Some(&bytes[..bytes.len().min(4)]), &bytes, &Limits::default());
                let _ = decode_change(format, &bytes);
            }
        }

        #[test]
        fn events_round_trip_through_both_formats(
            user in "[a-z0-9@.\\-]{1,20}",
            ms in crate::timestamp::MIN_MILLIS..=crate::timestamp::MAX_MILLIS,
            n in any::<i64>(),
            // Floats with a short exact decimal form: see "Numbers" in the module doc.
            f in (-1_000_000_000_000i64..1_000_000_000_000).prop_map(|n| n as f64 / 100.0),
            s in "\\PC{0,12}",
            b in any::<bool>(),
        ) {
            let mut e = Event::new(user, ms, EventType::CustomEvent);
            e.name = Some(s.clone() + "n");
            e.properties = vec![
                ("b".into(), Scalar::Bool(b)),
                ("f".into(), Scalar::Float(f)),
                ("n".into(), Scalar::Int(n)),
                ("s".into(), Scalar::Str(s)),
            ];
            for format in [Format::Json, Format::Protobuf] {
                let got = decode_event(format, None, &encode_event(format, &e), &Limits::default());
                prop_assert_eq!(got, Ok(e.clone()));
            }
        }
    }
}
