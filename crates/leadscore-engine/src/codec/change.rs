//! Score changes: encoding, and decoding with validation (for the handoff and the tools).

use super::error::{invalid, malformed, missing, wrong_type, DecodeError, Quoted};
use super::event::{
    json_text, loose_from_opt_string, loose_from_scalar_map, loose_from_string, optional_int,
    optional_str, required_int, required_str, required_time, scalar_map, scalar_to_proto,
    timestamp_from_millis, AttributesOut,
};
use super::loose::{find_duplicate, Loose, LooseSeed};
use super::Format;
use crate::attributes::Attributes;
use crate::change::{ChangeId, EventId, Reason, ReasonKind, ScoreChange};
use crate::event::ScalarRef;
use crate::proto::v1 as pb;
use crate::timestamp::Rfc3339;
use prost::Message as _;
use serde::de::DeserializeSeed;
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;

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
    let mut out = Vec::new();
    encode_change_into(format, change, &mut out);
    out
}

/// [`encode_change`] into `out` (cleared first), so a caller encoding change after change
/// reuses one buffer: the scorer, for every change it publishes.
pub fn encode_change_into(format: Format, change: &ScoreChange, out: &mut Vec<u8>) {
    out.clear();
    match format {
        Format::Json => write_change_json(change, out),
        Format::Protobuf => change_to_proto(change)
            .encode(out)
            .expect("a Vec grows to fit any message"),
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
    // Names are unique (`scalar_map` checks), so this sorts them and keeps every one.
    let attributes: Attributes = scalar_map("attributes", raw.attributes)?
        .into_iter()
        .collect();
    let mut change = ScoreChange {
        id: ChangeId::Count(0),
        user_id: user_id.into(),
        time,
        previous_score,
        score,
        delta,
        reason: Reason {
            kind,
            group: group.map(|g| Arc::from(&*g)),
            source_event_id: source.map(|s| Arc::from(&*s)),
        },
        windows,
        attributes,
    };
    change.id = change.canonical_id(&event_id);
    Ok(change)
}

/// The JSON form of a change written straight into `out`, byte for byte what serializing
/// [`ChangeOut`] with serde_json writes (a test holds the two together over generated and
/// hand-made changes). Keys are literals and strings are copied whole unless they need an
/// escape: the scorer encodes every change it publishes, and serde's field-by-field path was
/// about a tenth of its thread (issue 14).
fn write_change_json(c: &ScoreChange, out: &mut Vec<u8>) {
    use std::fmt::Write as _;
    // Room for a typical change in one go, rather than a check before every piece.
    out.reserve(256);
    out.extend_from_slice(b"{\"event_id\":\"");
    // Writing into a Vec cannot fail.
    let _ = write!(JsonStrWriter(out), "{}", c.event_id());
    out.extend_from_slice(b"\",\"user_id\":");
    json_str(out, &c.user_id);
    out.extend_from_slice(b",\"time\":\"");
    let _ = write!(JsonStrWriter(out), "{}", Rfc3339(c.time));
    out.extend_from_slice(b"\",\"previous_score\":");
    json_int(out, c.previous_score);
    out.extend_from_slice(b",\"score\":");
    json_int(out, c.score);
    out.extend_from_slice(b",\"delta\":");
    json_int(out, c.delta);
    out.extend_from_slice(b",\"reason\":{\"kind\":\"");
    out.extend_from_slice(c.reason.kind.as_str().as_bytes());
    out.push(b'"');
    if let Some(group) = &c.reason.group {
        out.extend_from_slice(b",\"group\":");
        json_str(out, group);
    }
    if let Some(id) = &c.reason.source_event_id {
        out.extend_from_slice(b",\"event_id\":");
        json_str(out, id);
    }
    out.push(b'}');
    if c.reason.kind == ReasonKind::Inactivity {
        out.extend_from_slice(b",\"windows\":");
        json_int(out, i64::from(c.windows));
    }
    out.extend_from_slice(b",\"attributes\":{");
    for (i, (k, v)) in c.attributes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k);
        out.push(b':');
        match v {
            ScalarRef::Str(v) => json_str(out, v),
            ScalarRef::Int(v) => json_int(out, v),
            ScalarRef::Bool(true) => out.extend_from_slice(b"true"),
            ScalarRef::Bool(false) => out.extend_from_slice(b"false"),
            // serde_json's own float formatting (and `null` for a non-finite one).
            ScalarRef::Float(v) => {
                serde_json::to_writer(&mut *out, &v).expect("JSON encoding of a float cannot fail")
            }
        }
    }
    out.extend_from_slice(b"}}");
}

/// The JSON form as serde_json writes [`ChangeOut`]: what [`write_change_json`] must equal.
#[cfg(test)]
pub(super) fn change_json_through_serde(c: &ScoreChange) -> Vec<u8> {
    serde_json::to_vec(&ChangeOut::new(c)).expect("JSON encoding of codec output types cannot fail")
}

/// An integer as JSON.
fn json_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(crate::event::decimal(n, &mut [0u8; 20]));
}

/// A JSON string, quotes included.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// The bytes of `s` as the inside of a JSON string, escaped as serde_json escapes them: `"`
/// and `\\` with a backslash, the control characters U+0000 to U+001F as `\b \t \n \f \r` or
/// `\u00xx` (lower-case hex), everything else as it is.
fn escape_into(out: &mut Vec<u8>, s: &str) {
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let bytes = s.as_bytes();
    // A fold rather than `any`: no early exit, so the compiler checks many bytes at a time.
    if !bytes.iter().fold(false, |found, &b| found | needs(b)) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// `fmt::Write` into a JSON string's inside: each piece escaped on its way into the buffer.
struct JsonStrWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for JsonStrWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

#[derive(Serialize)]
struct ChangeOut<'a> {
    #[serde(serialize_with = "display")]
    event_id: EventId<'a>,
    user_id: &'a str,
    #[serde(serialize_with = "display")]
    time: Rfc3339,
    previous_score: i64,
    score: i64,
    delta: i64,
    reason: ReasonOut<'a>,
    /// Inactivity changes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    windows: Option<u32>,
    attributes: AttributesOut<'a>,
}

#[derive(Serialize)]
struct ReasonOut<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
}

/// A JSON string written from `Display`, straight into the output.
fn display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl<'a> ChangeOut<'a> {
    fn new(c: &'a ScoreChange) -> ChangeOut<'a> {
        ChangeOut {
            event_id: c.event_id(),
            user_id: &c.user_id,
            time: Rfc3339(c.time),
            previous_score: c.previous_score,
            score: c.score,
            delta: c.delta,
            reason: ReasonOut {
                kind: c.reason.kind.as_str(),
                group: c.reason.group.as_deref(),
                event_id: c.reason.source_event_id.as_deref(),
            },
            windows: (c.reason.kind == ReasonKind::Inactivity).then_some(c.windows),
            attributes: AttributesOut(&c.attributes),
        }
    }
}

pub(super) fn change_to_proto(c: &ScoreChange) -> pb::ScoreChange {
    let kind = match c.reason.kind {
        ReasonKind::Rule => pb::ReasonKind::Rule,
        ReasonKind::Inactivity => pb::ReasonKind::Inactivity,
        ReasonKind::External => pb::ReasonKind::External,
        ReasonKind::Attribute => pb::ReasonKind::Attribute,
    };
    pb::ScoreChange {
        event_id: c.event_id().to_string(),
        user_id: c.user_id.to_string(),
        time: Some(timestamp_from_millis(c.time)),
        previous_score: c.previous_score,
        score: c.score,
        delta: c.delta,
        reason: Some(pb::Reason {
            kind: kind as i32,
            group: c.reason.group.as_deref().map(str::to_owned),
            event_id: c.reason.source_event_id.as_deref().map(str::to_owned),
        }),
        attributes: c
            .attributes
            .iter()
            .map(|(k, v)| (k.to_owned(), scalar_to_proto(v)))
            .collect(),
        windows: c.windows,
    }
}
