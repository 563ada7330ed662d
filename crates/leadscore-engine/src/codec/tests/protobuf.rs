//! Decoding events from protobuf, checked against the same rules as JSON.
use super::*;

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
    let back = decode_event(Format::Protobuf, None, &bytes, &Limits::default());
    assert_eq!(back, Ok(e));
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
