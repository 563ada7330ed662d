//! Decoding events from protobuf, checked against the same rules as JSON.
use super::*;

// --- Protobuf ----------------------------------------------------------------------------

#[test]
fn json_and_protobuf_of_the_same_event_decode_equal() {
    for event in sample_events() {
        for format in [Format::Json, Format::Protobuf] {
            let payload = encode_event(format, &event);
            let got = decode(format, Some(event.user_id.as_bytes()), &payload);
            assert_eq!(got, Ok(event.clone()), "{format}");
        }
    }
}

#[test]
fn protobuf_properties_come_sorted_by_key() {
    let mut e = Event::new("u1", t0(), EventType::CustomEvent);
    e.name = Some("n".into());
    e.properties = vec![("z".into(), Scalar::Int(1)), ("a".into(), Scalar::Int(2))];
    let got = decode(Format::Protobuf, None, &encode_event(Format::Protobuf, &e)).ok();
    assert_eq!(
        got.as_ref().map(|e| keys(&e.properties)),
        Some(vec!["a", "z"])
    );
}

#[test]
fn protobuf_rejects_missing_required_fields() {
    for (m, message) in [
        (
            pb_event_with(pb::EventType::SessionStart, |m| m.user_id.clear()),
            r#"missing field "user_id""#,
        ),
        (
            pb_event_with(pb::EventType::SessionStart, |m| m.time = None),
            r#"missing field "time""#,
        ),
        (
            pb_event(pb::EventType::Unspecified),
            r#"missing field "type""#,
        ),
    ] {
        assert_eq!(proto_rejects(&m, "missing_field"), message);
    }
}

#[test]
fn protobuf_unknown_type_number_decodes_to_the_unknown_outcome() {
    let mut m = pb_event(pb::EventType::SessionStart);
    m.r#type = 99;
    assert_eq!(
        proto_rejects(&m, "unknown_type"),
        r#"field "type": unknown event type number 99"#
    );
    match proto(&m) {
        Err(DecodeError::UnknownType(u)) => {
            assert_eq!(u.kind, UnknownKind::Number(99));
            assert_eq!((u.user_id.as_str(), u.time), ("u1", t0()));
        }
        other => panic!("{other:?}"),
    }
    // What every event needs is still checked first.
    m.time = None;
    proto_rejects(&m, "missing_field");
}

#[test]
fn protobuf_user_deleted_decodes_and_round_trips() {
    let m = pb_event(pb::EventType::UserDeleted);
    assert_eq!(
        pb::EventType::UserDeleted as i32,
        6,
        "appended, never renumbered"
    );
    let e = proto(&m).expect("decodes");
    assert_eq!(e, Event::new("u1", t0(), EventType::UserDeleted));
    let bytes = encode_event(Format::Protobuf, &e);
    assert_eq!(decode(Format::Protobuf, None, &bytes), Ok(e));
}

#[test]
fn protobuf_rejects_out_of_range_timestamps() {
    let mut m = pb_event(pb::EventType::SessionStart);
    m.time = pb_time(0, -1);
    assert_eq!(
        proto_rejects(&m, "invalid_value"),
        r#"field "time": invalid timestamp: nanos -1 out of range 0..=999999999"#
    );
    for seconds in [i64::MAX, MAX_MILLIS / 1000 + 1] {
        m.time = pb_time(seconds, 0);
        proto_rejects(&m, "invalid_value");
    }
}

#[test]
fn protobuf_applies_the_type_specific_rules() {
    let int_email = pb_event_with(pb::EventType::EmailAdded, |m| {
        m.value = Some(pb::Scalar {
            kind: Some(pb::scalar::Kind::IntValue(3)),
        });
    });
    let empty_id = pb_event_with(pb::EventType::SessionStart, |m| {
        m.event_id = Some(String::new());
    });
    for (m, reason, message) in [
        (
            pb_event(pb::EventType::CustomEvent),
            "missing_field",
            Some(r#"missing field "name" (required for custom_event)"#),
        ),
        (
            pb_event(pb::EventType::EmailAdded),
            "missing_field",
            Some(r#"missing field "value" (required for email_added)"#),
        ),
        (int_email, "wrong_type", None),
        (
            pb_event(pb::EventType::ExternalScore),
            "missing_field",
            None,
        ),
        (empty_id, "invalid_value", None),
    ] {
        let got = proto_rejects(&m, reason);
        if let Some(message) = message {
            assert_eq!(got, message);
        }
    }

    let mut m = pb_event(pb::EventType::ExternalScore);
    m.score_op = Some(pb::event::ScoreOp::Increment(-3));
    m.updated_at = pb_time(1, 2_000_000);
    let e = proto(&m);
    assert_eq!(
        e.map(|e| (e.score, e.updated_at)),
        Ok((Some(ScoreOp::Increment(-3)), Some(1002)))
    );
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

/// A protobuf custom_event whose one property is `key` = `value`.
fn pb_custom_with_property(key: &str, value: pb::Scalar) -> pb::Event {
    pb_event_with(pb::EventType::CustomEvent, |m| {
        m.name = Some("n".into());
        m.properties.insert(key.into(), value);
    })
}

#[test]
fn protobuf_rejects_properties_without_a_value() {
    let m = pb_custom_with_property("plan", pb::Scalar { kind: None });
    assert_eq!(
        proto_rejects(&m, "wrong_type"),
        r#"field "properties.plan": expected a string, number or boolean, found null"#
    );
}

#[test]
fn protobuf_rejects_non_finite_numbers() {
    let nan = pb::Scalar {
        kind: Some(pb::scalar::Kind::DoubleValue(f64::NAN)),
    };
    assert_eq!(
        proto_rejects(&pb_custom_with_property("ratio", nan), "invalid_value"),
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
    let e = decode(Format::Protobuf, None, &payload);
    assert_eq!(e, Ok(Event::new("u1", t0(), EventType::SessionStart)));
}

#[test]
fn protobuf_rejects_garbage_as_malformed() {
    for payload in [&b"\xff\xff\xff"[..], b"{\"user_id\":\"u1\"}", b"\x0a\x05ab"] {
        let err = failure(decode(Format::Protobuf, None, payload));
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
    let err = decode(Format::Protobuf, None, &payload);
    assert_eq!(err.map_err(|e| e.reason()), Err("malformed"));
}
