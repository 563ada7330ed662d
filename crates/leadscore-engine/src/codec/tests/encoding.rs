//! Encoding events, and round trips through both formats.
use super::*;

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

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for format in [Format::Json, Format::Protobuf] {
            let _ = decode(format, Some(&bytes[..bytes.len().min(4)]), &bytes);
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
            let got = decode(format, None, &encode_event(format, &e));
            prop_assert_eq!(got, Ok(e.clone()));
        }
    }

}
