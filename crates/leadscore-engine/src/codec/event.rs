//! Input events: decoding (JSON and protobuf into one validator) and encoding.

use super::error::{
    check_size, invalid, malformed, missing, truncate, wrong_type, DecodeError, Quoted,
    UnknownKind, UnknownType,
};
use super::loose::{find_duplicate, KeySeed, Loose, LooseSeed};
use super::{Format, Limits};
use crate::attributes::Attributes;
use crate::event::{Event, EventType, Scalar, ScalarRef, ScoreOp};
use crate::proto::v1 as pb;
use crate::timestamp::{format_rfc3339, parse_rfc3339, Millis, MAX_MILLIS, MIN_MILLIS};
use prost::Message as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

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
        // Unknown keys, kept only to refuse one written twice (docs/semantics.md, "Accepted
        // input forms"): checked once at the end, so a payload of many keys costs no more
        // than sorting them.
        let mut unknown: Vec<(Cow<'a, str>, ())> = Vec::new();
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
                    unknown.push((key, ()));
                    continue;
                }
            };
            if !matches!(slot, Loose::Absent) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            *slot = map.next_value_seed(LooseSeed::new(depth))?;
        }
        if let Some(key) = find_duplicate(&unknown) {
            return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
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
pub(super) fn json_text(payload: &[u8]) -> Result<&str, DecodeError> {
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
        Ok(pb::EventType::UserDeleted) => Some(EventType::UserDeleted),
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
pub(super) fn loose_from_string(s: String) -> Loose<'static> {
    if s.is_empty() {
        Loose::Absent
    } else {
        Loose::Str(Cow::Owned(s))
    }
}

pub(super) fn loose_from_opt_string(s: Option<String>) -> Loose<'static> {
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

pub(super) fn loose_from_scalar_map(
    m: std::collections::BTreeMap<String, pb::Scalar>,
) -> Loose<'static> {
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
    // The changelog keeps its checkpoint records under keys that start with NUL; here, so the
    // scorer and `simulate` refuse the same events (unknown types included).
    if user_id.starts_with('\0') {
        return Err(invalid(
            "user_id",
            "must not start with a NUL byte (reserved for checkpoint records)",
        ));
    }
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
        Some(Loose::Str(s)) => match EventType::parse(&s) {
            Some(kind) => kind,
            None => {
                return Err(unknown_type(
                    UnknownKind::Name(s.into_owned()),
                    user_id,
                    time,
                ))
            }
        },
        Some(Loose::UnknownEnum(n)) => {
            return Err(unknown_type(UnknownKind::Number(n), user_id, time))
        }
        Some(other) => return Err(wrong_type("type", "a string", &other)),
    };

    // Straight from the borrowed text into the shared id (a change shares it).
    let mut event = Event::new(&*user_id, time, kind);
    event.event_id = event_id.map(|id| Arc::from(&*id));
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
        // Whose and when is all a deletion needs; other fields are ignored, as for any type.
        EventType::UserDeleted => {}
    }
    Ok(event)
}

fn unknown_type(kind: UnknownKind, user_id: Cow<'_, str>, time: Millis) -> DecodeError {
    DecodeError::UnknownType(Box::new(UnknownType {
        kind,
        user_id: user_id.into_owned(),
        time,
    }))
}

/// SPEC 2, forgetting: the user a tombstone (a record with a null value) deletes, which only its
/// key names. A key that is missing, empty, not UTF-8 or reserved (a leading NUL, which
/// checkpoint records use) is bad input.
pub fn decode_tombstone_key(key: Option<&[u8]>) -> Result<&str, DecodeError> {
    let key = match key {
        None | Some([]) => return Err(DecodeError::TombstoneWithoutKey),
        Some(k) => k,
    };
    let user = std::str::from_utf8(key).map_err(|_| {
        invalid(
            "key",
            "a tombstone's key is not valid UTF-8, so it names no user",
        )
    })?;
    if user.starts_with('\0') {
        return Err(invalid(
            "key",
            "must not start with a NUL byte (reserved for checkpoint records)",
        ));
    }
    Ok(user)
}

/// SPEC 2: a record's key, when present, must be its user id. Also what the handoff checks of
/// the score changes it reads.
pub fn check_key(key: &[u8], user_id: &str) -> Result<(), DecodeError> {
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
pub(super) fn required_str<'a>(
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

pub(super) fn optional_str<'a>(
    field: &'static str,
    v: Loose<'a>,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    match v.given() {
        None => Ok(None),
        Some(Loose::Str(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(field, "a string", &other)),
    }
}

pub(super) fn required_time(field: &'static str, v: Loose<'_>) -> Result<Millis, DecodeError> {
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
        // SPEC 2: an RFC 3339 timestamp. A number (epoch seconds or milliseconds) is the wrong
        // type: read as either unit it could put the event years away from where its producer
        // meant it, and move the clock there (an outside review).
        other => Err(wrong_type(field, TIME_EXPECTED, &other)),
    }
}

const TIME_EXPECTED: &str = "an RFC 3339 timestamp string";

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

pub(super) fn timestamp_from_millis(ms: Millis) -> crate::proto::google::protobuf::Timestamp {
    crate::proto::google::protobuf::Timestamp {
        seconds: ms.div_euclid(1000),
        // In 0..1_000_000_000, which fits an i32.
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub(super) fn optional_int(field: &'static str, v: Loose<'_>) -> Result<Option<i64>, DecodeError> {
    match v.given() {
        None => Ok(None),
        Some(v) => integer(field, v, "an integer").map(Some),
    }
}

/// A 64-bit integer. A float with no fractional part counts (`5.0`, `-0`, `1e2`: Python's
/// `json.dumps` writes floats); `5.5`, or a number outside the range, is an error.
///
/// The range for a float is open at both ends. A JSON integer below `i64::MIN` reaches us as
/// the nearest float, and every one down to -9223372036854776832 rounds to exactly -2^63, so a
/// float of -2^63 cannot be told from an out-of-range integer and is refused with them.
/// (`-9223372036854775808` written as an integer is an `i64` and is accepted.)
fn integer(field: &'static str, v: Loose<'_>, expected: &'static str) -> Result<i64, DecodeError> {
    // 2^63, exactly representable; every float in (-2^63, 2^63) converts without loss.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match v {
        Loose::Int(i) => Ok(i),
        Loose::BigUint(u) => Err(invalid(
            field,
            format!("{u} is out of the 64-bit integer range"),
        )),
        Loose::Float(f) if f.is_finite() && f.fract() != 0.0 => {
            // Debug, not Display: `1e300` rather than 301 digits.
            Err(invalid(field, format!("{f:?} is not an integer")))
        }
        Loose::Float(f) if f > -TWO_63 && f < TWO_63 => Ok(f as i64),
        Loose::Float(f) => Err(invalid(
            field,
            format!("{f:?} is out of the 64-bit integer range"),
        )),
        other => Err(wrong_type(field, expected, &other)),
    }
}

pub(super) fn required_int(field: &'static str, v: Loose<'_>) -> Result<i64, DecodeError> {
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
pub(super) fn scalar_map(
    field: &'static str,
    v: Loose<'_>,
) -> Result<Vec<(String, Scalar)>, DecodeError> {
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
                    // A key from the input goes into an error line: as it is when it is
                    // plain, quoted and escaped otherwise, so no control character, line
                    // break or quote of it can forge or split the line.
                    let plain = k.chars().all(|c| !c.is_control() && c != '"' && c != '\\');
                    if plain {
                        let (head, cut) = truncate(&k);
                        format!("{field}.{head}{}", if cut { "..." } else { "" })
                    } else {
                        format!("{field}[{}]", Quoted(&k))
                    }
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
pub(super) fn to_json_vec<T: Serialize>(v: &T) -> Vec<u8> {
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
            (Some(v), _) => Some(Some(ScalarOut(v.as_ref()))),
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

/// A list of named scalars (an event's properties) as a JSON object.
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
            map.serialize_entry(k, &ScalarOut(v.as_ref()))?;
        }
        map.end()
    }
}

/// A user's (or a change's) attributes as a JSON object, values written from where they are
/// stored.
pub(super) struct AttributesOut<'a>(pub(super) &'a Attributes);

impl Serialize for AttributesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, &ScalarOut(v))?;
        }
        map.end()
    }
}

/// One scalar as JSON, owned or borrowed from where it is stored.
struct ScalarOut<'a>(ScalarRef<'a>);

impl Serialize for ScalarOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ScalarRef::Str(v) => s.serialize_str(v),
            ScalarRef::Int(v) => s.serialize_i64(v),
            // serde_json writes a non-finite float as null; decoders never produce one.
            ScalarRef::Float(v) => s.serialize_f64(v),
            ScalarRef::Bool(v) => s.serialize_bool(v),
        }
    }
}

/// One scalar as protobuf, owned or borrowed from where it is stored.
pub(super) fn scalar_to_proto(v: ScalarRef<'_>) -> pb::Scalar {
    use pb::scalar::Kind;
    pb::Scalar {
        kind: Some(match v {
            ScalarRef::Str(s) => Kind::StringValue(s.to_owned()),
            ScalarRef::Int(i) => Kind::IntValue(i),
            ScalarRef::Float(f) => Kind::DoubleValue(f),
            ScalarRef::Bool(b) => Kind::BoolValue(b),
        }),
    }
}

fn scalar_map_to_proto(m: &[(String, Scalar)]) -> std::collections::BTreeMap<String, pb::Scalar> {
    m.iter()
        .map(|(k, v)| (k.clone(), scalar_to_proto(v.as_ref())))
        .collect()
}

fn event_to_proto(e: &Event) -> pb::Event {
    let kind = match e.kind {
        EventType::SessionStart => pb::EventType::SessionStart,
        EventType::CustomEvent => pb::EventType::CustomEvent,
        EventType::EmailAdded => pb::EventType::EmailAdded,
        EventType::AttributeChanged => pb::EventType::AttributeChanged,
        EventType::ExternalScore => pb::EventType::ExternalScore,
        EventType::UserDeleted => pb::EventType::UserDeleted,
    };
    pb::Event {
        user_id: e.user_id.to_string(),
        time: Some(timestamp_from_millis(e.time)),
        event_id: e.event_id.as_deref().map(str::to_owned),
        r#type: kind as i32,
        name: e.name.clone(),
        app_id: e.app_id.clone(),
        properties: scalar_map_to_proto(&e.properties),
        value: e.value.as_ref().map(|v| scalar_to_proto(v.as_ref())),
        score_op: e.score.map(|op| match op {
            ScoreOp::Set(s) => pb::event::ScoreOp::Score(s),
            ScoreOp::Increment(i) => pb::event::ScoreOp::Increment(i),
        }),
        updated_at: e.updated_at.map(timestamp_from_millis),
    }
}
