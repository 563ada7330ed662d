//! Tests of the codec: shared helpers and samples here, one file per area below.

use super::change::change_to_proto;
use super::error::{invalid, malformed, missing, wrong_type};
use super::event::timestamp_from_millis;
use super::loose::Loose;
use super::*;
use crate::attributes::Attributes;
use crate::change::{ChangeId, Reason, ReasonKind, ScoreChange};
use crate::event::{Event, EventType, Scalar, ScoreOp};
use crate::proto::v1 as pb;
use crate::timestamp::{parse_rfc3339, Millis, MAX_MILLIS};
use proptest::prelude::*;
use prost::Message as _;

mod change;
mod encoding;
mod json;
mod protobuf;

const T0: &str = "2026-01-05T10:00:00Z";

fn t0() -> Millis {
    match parse_rfc3339(T0) {
        Ok(ms) => ms,
        Err(e) => panic!("{e}"),
    }
}

/// Decodes `payload` under the record key `key`, within the default limits.
fn decode(format: Format, key: Option<&[u8]>, payload: &[u8]) -> Result<Event, DecodeError> {
    decode_event(format, key, payload, &Limits::default())
}

/// The reason and message of a decoding error; `None` when it decoded.
fn failure<T>(result: Result<T, DecodeError>) -> Option<(&'static str, String)> {
    result.err().map(|e| (e.reason(), e.to_string()))
}

fn json(s: &str) -> Result<Event, DecodeError> {
    decode(Format::Json, None, s.as_bytes())
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
    decode(Format::Protobuf, None, &m.encode_to_vec())
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

/// [`pb_event`] of `kind` with `change` made to it.
fn pb_event_with(kind: pb::EventType, change: impl FnOnce(&mut pb::Event)) -> pb::Event {
    let mut m = pb_event(kind);
    change(&mut m);
    m
}

fn pb_time(seconds: i64, nanos: i32) -> Option<crate::proto::google::protobuf::Timestamp> {
    Some(crate::proto::google::protobuf::Timestamp { seconds, nanos })
}

/// The keys of `pairs` (properties or attributes), in order.
fn keys<K: AsRef<str>>(pairs: &[(K, Scalar)]) -> Vec<&str> {
    pairs.iter().map(|(k, _)| k.as_ref()).collect()
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
        id: "c-9f2".into(),
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
        attributes: [
            ("lead_status", Scalar::Str("Open".into())),
            ("sf_lead_id", Scalar::Str("00Q5".into())),
            ("visits", Scalar::Int(7)),
        ]
        .into_iter()
        .collect(),
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

// --- Keys --------------------------------------------------------------------------------

/// A JSON session_start of user u1, decoded under the record key `key`.
fn keyed_session(key: &[u8]) -> Result<Event, DecodeError> {
    let payload = format!(r#"{{"user_id":"u1","time":"{T0}","type":"session_start"}}"#);
    decode(Format::Json, Some(key), payload.as_bytes())
}

#[test]
fn accepts_a_key_equal_to_user_id() {
    assert_eq!(
        keyed_session(b"u1").map(|e| e.user_id.to_string()),
        Ok("u1".to_owned())
    );
}

#[test]
fn rejects_a_key_that_differs_from_user_id() {
    assert_eq!(
        failure(keyed_session(b"u2")),
        Some((
            "key_mismatch",
            r#"key "u2" does not match user_id "u1""#.to_owned()
        ))
    );
    assert_eq!(
        keyed_session(b"").map_err(|e| e.reason()),
        Err("key_mismatch")
    );
}

#[test]
fn rejects_a_key_that_is_not_utf8() {
    assert_eq!(
        failure(keyed_session(b"\xffu1")),
        Some((
            "key_mismatch",
            r#"key is not valid UTF-8, so it cannot match user_id "u1""#.to_owned()
        ))
    );
}

#[test]
fn rejects_a_key_mismatch_in_protobuf() {
    let payload = pb_event(pb::EventType::SessionStart).encode_to_vec();
    let err = decode(Format::Protobuf, Some(b"u2"), &payload);
    assert_eq!(err.map_err(|e| e.reason()), Err("key_mismatch"));
    assert!(decode(Format::Protobuf, Some(b"u1"), &payload).is_ok());
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
