//! The published JSON Schemas of the outputs (`schemas/score-change.schema.json`,
//! `handoff-outcome.schema.json`, `dead-letter.schema.json`, docs/formats.md) against what the
//! services really write: score changes through the real encoder, from hand-made edge cases and
//! from the engine run over generated traffic; handoff outcomes through the handoff's encoder;
//! dead-letter headers from the function both services use. The protobuf form is checked too:
//! read field by field as docs/formats.md says, it is the JSON form, exactly.

use leadscore::change::{Reason, ReasonKind, ScoreChange};
use leadscore::codec::{self, Format};
use leadscore::engine::Engine;
use leadscore::event::Scalar;
use leadscore::generator::{self, GeneratorConfig};
use leadscore::handoff::salesforce::{RetryHint, SfError};
use leadscore::handoff::{invalid_lead_id, HandoffOutcome, Resolution};
use leadscore::proto::v1 as pb;
use leadscore::rules::Rules;
use leadscore::runtime::kafka;
use leadscore::timestamp::{format_rfc3339, parse_rfc3339, Millis};
use prost::Message as _;
use rdkafka::message::Headers;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A published schema, itself checked against the draft 2020-12 meta-schema, compiled with
/// `format` asserted (a validator may treat it as an annotation only; this one checks it), and
/// its own `examples` checked valid.
fn validator(name: &str) -> (Value, jsonschema::Validator) {
    let path = repo("schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{name}"
    );
    if let Err(e) = jsonschema::meta::validate(&schema) {
        panic!("{name} is not a valid draft 2020-12 schema: {e}");
    }
    let v = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for (i, example) in examples(&schema).iter().enumerate() {
        assert_valid(&v, &format!("{name} example {i}"), example);
    }
    (schema, v)
}

fn examples(schema: &Value) -> &[Value] {
    schema["examples"].as_array().expect("examples")
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn assert_valid(v: &jsonschema::Validator, what: &str, instance: &Value) {
    let errors = errors(v, instance);
    assert!(
        errors.is_empty(),
        "{what}: {instance}\n{}",
        errors.join("\n")
    );
}

fn assert_invalid(v: &jsonschema::Validator, what: &str, instance: &Value) {
    assert!(
        !v.is_valid(instance),
        "{what} should be invalid: {instance}"
    );
}

// ---------------------------------------------------------------------------------------------
// Score changes
// ---------------------------------------------------------------------------------------------

fn change(kind: ReasonKind, time: Millis, previous: i64, score: i64) -> ScoreChange {
    let source = (kind != ReasonKind::Inactivity).then(|| "e-1".into());
    ScoreChange {
        id: format!("e-1@{time}:{}", kind.as_str()).into(),
        user_id: "u1".into(),
        time,
        previous_score: previous,
        score,
        delta: score.wrapping_sub(previous),
        reason: Reason {
            kind,
            group: (kind == ReasonKind::Rule).then(|| "high intent".into()),
            source_event_id: source,
        },
        windows: u32::from(kind == ReasonKind::Inactivity),
        attributes: Default::default(),
    }
}

/// Every kind, with and without attributes of every scalar type, inactivity over one and many
/// windows, times with and without milliseconds at the ends of the range, extreme scores.
fn hand_made_changes() -> Vec<ScoreChange> {
    let t = parse_rfc3339("2026-01-05T10:01:00Z").expect("time");
    let mut out = Vec::new();
    for kind in ReasonKind::ALL {
        let (previous, score) = if kind == ReasonKind::Attribute {
            (7, 7)
        } else {
            (3, 8)
        };
        out.push(change(kind, t, previous, score));
        let mut with = change(kind, t + 123, previous, score);
        with.attributes = [
            ("email", Scalar::Str("ada@example.com".into())),
            ("employees", Scalar::Int(-40)),
            ("is_employee", Scalar::Bool(false)),
            ("lead_status", Scalar::Str("Open".into())),
            ("ratio", Scalar::Float(0.25)),
            ("round", Scalar::Float(2.0)),
            ("tiny", Scalar::Float(1e-300)),
            ("unicode", Scalar::Str("Zoë \u{1F600} \"quoted\"".into())),
        ]
        .into_iter()
        .collect();
        out.push(with);
    }
    let mut many = change(ReasonKind::Inactivity, t, 100, 93);
    many.windows = 7;
    out.push(many);
    let mut max = change(ReasonKind::Inactivity, t, 0, -1);
    max.windows = u32::MAX;
    out.push(max);
    out.push(change(ReasonKind::External, t, i64::MIN, i64::MAX));
    out.push(change(ReasonKind::External, 0, 0, 1));
    out.push(change(ReasonKind::Rule, -1, 0, 1));
    out.push(change(ReasonKind::Rule, -62_167_219_200_000, 1, 2));
    out.push(change(ReasonKind::Rule, 253_402_300_799_999, 1, 2));
    let mut group = change(ReasonKind::Rule, t, 0, 1);
    group.reason.group = Some("groupe \u{e9}t\u{e9}".into());
    group.reason.source_event_id = Some("lead-events/3/1042".into());
    out.push(group);
    out
}

/// What the engine publishes for generated traffic under the seed canvas and the b2b-saas
/// rules (a factor decay), with the clock moved on far enough to fire inactivity over many
/// windows.
fn engine_changes() -> Vec<ScoreChange> {
    let events = generator::generate(&GeneratorConfig {
        users: 200,
        events: 4000,
        ..GeneratorConfig::default()
    });
    let mut jsonl = Vec::new();
    generator::write_jsonl(&events, &mut jsonl).expect("jsonl");
    let end = events.iter().map(|e| e.time).max().expect("events") + 90 * 86_400_000;
    let mut out = Vec::new();
    for rules in ["seed-canvas.toml", "b2b-saas.toml"] {
        let path = repo("examples/rules").join(rules);
        let rules: Rules = leadscore::config::rules_file::load(&path).expect("rules");
        let sim =
            leadscore::simulate::run(&Engine::new(rules), &jsonl[..], Some(end)).expect("simulate");
        assert!(sim.bad_lines.is_empty(), "{:?}", sim.bad_lines);
        out.extend(sim.changes);
    }
    out
}

/// A protobuf score change read field by field as docs/formats.md says, into the JSON form.
fn proto_as_json(m: &pb::ScoreChange) -> Value {
    let time = m.time.as_ref().expect("time is always set");
    assert_eq!(time.nanos % 1_000_000, 0, "whole milliseconds");
    let millis = time.seconds * 1000 + i64::from(time.nanos / 1_000_000);
    let reason = m.reason.as_ref().expect("reason is always set");
    let kind = pb::ReasonKind::try_from(reason.kind)
        .expect("a known kind")
        .as_str_name()
        .strip_prefix("REASON_KIND_")
        .expect("prefixed enum name")
        .to_ascii_lowercase();
    let mut r = json!({ "kind": kind });
    if let Some(g) = &reason.group {
        r["group"] = json!(g);
    }
    if let Some(e) = &reason.event_id {
        r["event_id"] = json!(e);
    }
    let attributes: serde_json::Map<String, Value> = m
        .attributes
        .iter()
        .map(|(k, v)| {
            use pb::scalar::Kind;
            let v = match v.kind.as_ref().expect("attribute values are never null") {
                Kind::StringValue(s) => json!(s),
                Kind::IntValue(i) => json!(i),
                Kind::DoubleValue(d) => json!(d),
                Kind::BoolValue(b) => json!(b),
            };
            (k.clone(), v)
        })
        .collect();
    let mut out = json!({
        "event_id": m.event_id,
        "user_id": m.user_id,
        "time": format_rfc3339(millis),
        "previous_score": m.previous_score,
        "score": m.score,
        "delta": m.delta,
        "reason": r,
        "attributes": attributes,
    });
    if m.windows != 0 {
        out["windows"] = json!(m.windows);
    }
    out
}

#[test]
fn every_score_change_the_encoders_write_validates_and_both_formats_agree() {
    let (_, v) = validator("score-change.schema.json");
    let hand = hand_made_changes();
    let engine = engine_changes();
    let kinds: BTreeSet<&str> = engine.iter().map(|c| c.reason.kind.as_str()).collect();
    assert_eq!(
        kinds.len(),
        ReasonKind::ALL.len(),
        "engine corpus kinds: {kinds:?}"
    );
    assert!(
        engine.iter().any(|c| c.windows > 1),
        "the engine corpus has an inactivity change over several windows"
    );
    for (i, c) in hand.iter().chain(&engine).enumerate() {
        let bytes = codec::encode_change(Format::Json, c);
        let value: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_valid(&v, &format!("change {i}"), &value);
        let proto = pb::ScoreChange::decode(&codec::encode_change(Format::Protobuf, c)[..])
            .expect("protobuf");
        assert_eq!(
            proto_as_json(&proto),
            value,
            "change {i}: protobuf read as documented"
        );
    }
}

#[test]
fn the_score_change_schema_rejects_what_the_scorer_never_writes() {
    let (schema, v) = validator("score-change.schema.json");
    let good = codec::change_to_json(&change(ReasonKind::Rule, 1_767_607_260_000, 3, 8));
    assert_valid(&v, "good", &good);
    let bad = |edit: &dyn Fn(&mut Value), what: &str| {
        let mut value = good.clone();
        edit(&mut value);
        assert_invalid(&v, what, &value);
    };
    bad(
        &|c| c["reason"]["kind"] = json!("manual"),
        "an unknown kind",
    );
    bad(
        &|c| c["reason"]["kind"] = json!("REASON_KIND_RULE"),
        "the protobuf enum name",
    );
    bad(&|c| c["windows"] = json!(2), "windows on a rule change");
    bad(
        &|c| c["time"] = json!("2026-01-05T11:01:00+01:00"),
        "an offset",
    );
    bad(
        &|c| c["time"] = json!(1_767_607_260_000_i64),
        "epoch milliseconds",
    );
    bad(&|c| c["score"] = json!("8"), "a string score");
    bad(&|c| c["score"] = json!(8.5), "a fraction");
    bad(
        &|c| c["attributes"]["lead_status"] = Value::Null,
        "a null attribute",
    );
    bad(
        &|c| c["attributes"]["tags"] = json!(["a"]),
        "an array attribute",
    );
    bad(
        &|c| c["next"] = json!(1),
        "a field the encoder does not write",
    );
    bad(
        &|c| {
            c["reason"].as_object_mut().expect("object").remove("group");
        },
        "a rule change without its group",
    );
    let mut inactivity = codec::change_to_json(&change(ReasonKind::Inactivity, 0, 3, 2));
    assert_valid(&v, "inactivity", &inactivity);
    inactivity
        .as_object_mut()
        .expect("object")
        .remove("windows");
    assert_invalid(&v, "inactivity without windows", &inactivity);
    for (i, example) in examples(&schema).iter().enumerate() {
        codec::decode_change(Format::Json, example.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("example {i} does not decode: {e}"));
    }
}

/// The protobuf `content-type` names the message the .proto files really declare.
#[test]
fn the_protobuf_content_type_names_the_real_message() {
    let proto = std::fs::read_to_string(repo("proto/leadscore/v1/score_change.proto"))
        .expect("score_change.proto");
    assert!(proto.contains("\npackage leadscore.v1;\n"));
    assert!(proto.contains("\nmessage ScoreChange {\n"));
    assert_eq!(
        kafka::score_change_content_type(Format::Protobuf),
        "application/x-protobuf; messageType=leadscore.v1.ScoreChange"
    );
    assert_eq!(
        kafka::score_change_content_type(Format::Json),
        "application/json"
    );
    for file in ["event.proto", "score_change.proto"] {
        let text =
            std::fs::read_to_string(repo("proto/leadscore/v1").join(file)).expect("proto file");
        for option in [
            "option go_package = ",
            "option java_package = ",
            "option java_multiple_files = true;",
        ] {
            assert!(text.contains(option), "{file} lacks {option}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handoff outcomes
// ---------------------------------------------------------------------------------------------

fn sf_error(code: &str, fields: &[&str]) -> SfError {
    SfError {
        error_code: code.into(),
        message: format!("{code}: something \"quoted\" went wrong"),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        hint: RetryHint::Permanent,
    }
}

#[test]
fn every_handoff_outcome_validates() {
    let (_, v) = validator("handoff-outcome.schema.json");
    let not_found = sf_error("NOT_FOUND", &[]);
    let validation = sf_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", &["Status", "Company"]);
    let timeout = sf_error("TIMEOUT", &[]);
    let invalid = invalid_lead_id("../etc");
    let cases: [(Option<u16>, u32, Resolution, Millis); 8] = [
        (Some(204), 1, Resolution::HandedOff, 1_767_607_262_345),
        (Some(200), 3, Resolution::HandedOff, 1_767_607_262_000),
        (
            Some(404),
            1,
            Resolution::Failed(&not_found),
            1_767_607_262_000,
        ),
        (
            Some(400),
            2,
            Resolution::Failed(&validation),
            1_767_607_262_001,
        ),
        (None, 5, Resolution::Failed(&timeout), 1_767_607_262_000),
        (None, 0, Resolution::Failed(&invalid), 1_767_607_262_000),
        (None, 0, Resolution::Superseded, 1_767_607_262_000),
        (None, 2, Resolution::Superseded, 1_767_607_262_000),
    ];
    for (i, (http_status, attempts, resolution, time)) in cases.into_iter().enumerate() {
        let outcome = HandoffOutcome {
            user_id: "u1",
            lead_id: "00Q5e00000AbCdEfGH",
            score: 105,
            change_event_id: "rule:u1@1767607260000#8",
            attempts,
            http_status,
            resolution,
            time,
        };
        let value: Value = serde_json::from_slice(&outcome.encode()).expect("JSON");
        assert_valid(&v, &format!("outcome {i}"), &value);
        assert_eq!(value["status"], outcome.status());
        assert_eq!(
            value["error"].is_null(),
            !matches!(resolution, Resolution::Failed(_)),
            "outcome {i}: an error iff failed"
        );
    }
    let handed_off = HandoffOutcome {
        user_id: "u1",
        lead_id: "u1",
        score: 101,
        change_event_id: "x",
        attempts: 1,
        http_status: Some(204),
        resolution: Resolution::HandedOff,
        time: 0,
    };
    let good: Value = serde_json::from_slice(&handed_off.encode()).expect("JSON");
    let mut bad = good.clone();
    bad["error"] = json!({"errorCode": "NOT_FOUND", "message": "m", "fields": []});
    assert_invalid(&v, "handed off with an error", &bad);
    let mut bad = good.clone();
    bad["status"] = json!("failed");
    assert_invalid(&v, "failed without an error", &bad);
    let mut bad = good.clone();
    bad["status"] = json!("superseded");
    bad["error"] = json!({"errorCode": "NOT_FOUND", "message": "m", "fields": []});
    assert_invalid(&v, "superseded with an error", &bad);
    let mut bad = good;
    bad["status"] = json!("pending");
    assert_invalid(&v, "an unknown status", &bad);
}

// ---------------------------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------------------------

/// Headers as a JSON object of name to UTF-8 value, the form the schema describes.
fn headers_json(h: &rdkafka::message::OwnedHeaders) -> Value {
    let mut out = serde_json::Map::new();
    for header in h.iter() {
        let value = std::str::from_utf8(header.value.expect("a value")).expect("UTF-8");
        assert!(
            out.insert(header.key.to_string(), json!(value)).is_none(),
            "{} twice",
            header.key
        );
    }
    Value::Object(out)
}

#[test]
fn dead_letter_headers_validate() {
    let (_, v) = validator("dead-letter.schema.json");
    for reason in codec::DecodeError::REASONS {
        let h = kafka::dead_letter_headers(
            reason,
            "missing field `time`",
            Some(("lead-events", 3, 1042)),
        );
        assert_valid(&v, reason, &headers_json(&h));
    }
    let h = kafka::dead_letter_headers("not_found", "NOT_FOUND: gone", None);
    assert_valid(&v, "a Salesforce failure", &headers_json(&h));
    let h = kafka::dead_letter_headers("malformed", "", Some(("t", 0, 0)));
    assert_valid(&v, "partition and offset 0", &headers_json(&h));

    let mut partial = headers_json(&kafka::dead_letter_headers("malformed", "m", None));
    partial["leadscore.source.topic"] = json!("lead-events");
    assert_invalid(&v, "a source topic without partition and offset", &partial);
    let mut bad = headers_json(&kafka::dead_letter_headers(
        "malformed",
        "m",
        Some(("t", 1, 2)),
    ));
    bad["leadscore.source.offset"] = json!("-2");
    assert_invalid(&v, "a negative offset", &bad);
    assert_invalid(&v, "no reason", &json!({"leadscore.error.message": "m"}));
}
