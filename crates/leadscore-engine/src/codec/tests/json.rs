//! Decoding events from JSON: what is accepted, and what is rejected with which error.
use super::*;

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
    assert_eq!(keys(&e.properties), ["z", "a", "m"]);
}

#[test]
fn decodes_escaped_strings() {
    let e = ok(&format!(
        r#"{{"user\u005fid":"u\u00e9\n1","time":"{T0}","type":"custom_event","name":"caf\u00e9","properties":{{"k\"ey":"v\\al"}}}}"#
    ));
    assert_eq!(&*e.user_id, "u\u{e9}\n1");
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
        r#"{"user_id":"u1","time":true,"type":"session_start"}"#,
        "wrong_type",
    );
    assert_eq!(
        msg,
        r#"field "time": expected an RFC 3339 timestamp string, found a boolean"#
    );
}

#[test]
fn refuses_numbers_for_time_and_updated_at() {
    // SPEC 2: RFC 3339 timestamps. Epoch milliseconds (JavaScript's `Date.now()`), epoch
    // seconds and floats of either are the wrong type, whatever instant they would read as.
    for time in [
        "1767607200000",
        "1767607200",
        "1767607200000.0",
        "1.7676072e12",
        "0",
        "-1",
        "1767607200000.5",
        "1e300",
        "18446744073709551615",
    ] {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":{time},"type":"session_start"}}"#),
            "wrong_type",
        );
        assert!(
            msg.starts_with(r#"field "time": expected an RFC 3339 timestamp string, found a"#),
            "{time}: {msg}"
        );
    }
    let msg = rejects(
        &format!(
            r#"{{"user_id":"u1","time":"{T0}","type":"external_score","score":1,"updated_at":1767607200123}}"#
        ),
        "wrong_type",
    );
    assert!(
        msg.starts_with(r#"field "updated_at": expected an RFC 3339 timestamp string, found a"#),
        "{msg}"
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
fn rejects_missing_or_non_string_type_and_reports_an_unknown_one_with_its_user_and_time() {
    let msg = rejects(
        &format!(r#"{{"user_id":"u1","time":"{T0}"}}"#),
        "missing_field",
    );
    assert_eq!(msg, r#"missing field "type""#);
    let page_view = format!(
        r#"{{"user_id":"u1","time":"{T0}","type":"page_view","event_id":"e1","score":"any"}}"#
    );
    let msg = rejects(&page_view, "unknown_type");
    assert_eq!(
        msg,
        "field \"type\": unknown event type \"page_view\", expected one of session_start, \
             custom_event, email_added, attribute_changed, external_score, user_deleted"
    );
    match json(&page_view) {
        Err(DecodeError::UnknownType(u)) => {
            assert_eq!(u.kind, UnknownKind::Name("page_view".into()));
            assert_eq!((u.user_id.as_str(), u.time), ("u1", t0()));
        }
        other => panic!("{other:?}"),
    }
    // Whose and when are checked as for any event: an unknown type does not excuse them.
    rejects(
        r#"{"user_id":"u1","time":"soon","type":"page_view"}"#,
        "invalid_value",
    );
    rejects(
        &format!(r#"{{"time":"{T0}","type":"page_view"}}"#),
        "missing_field",
    );
    rejects(
        &format!(r#"{{"user_id":"u1","time":"{T0}","type":"page_view","event_id":""}}"#),
        "invalid_value",
    );
    let keyed = decode(Format::Json, Some(b"u2"), page_view.as_bytes());
    assert_eq!(keyed.map_err(|e| e.reason()), Err("key_mismatch"));
    rejects(
        &format!(r#"{{"user_id":"u1","time":"{T0}","type":1}}"#),
        "wrong_type",
    );
}

#[test]
fn user_deleted_needs_only_whose_and_when() {
    let e = ok(&format!(
        r#"{{"user_id":"u1","time":"{T0}","type":"user_deleted","value":[1],"score":"x"}}"#
    ));
    assert_eq!(e, Event::new("u1", t0(), EventType::UserDeleted));
    let back = json(std::str::from_utf8(&encode_event(Format::Json, &e)).unwrap_or_default());
    assert_eq!(back, Ok(e));
}

#[test]
fn a_tombstone_key_names_the_user_to_forget() {
    assert_eq!(decode_tombstone_key(Some(b"u1")), Ok("u1"));
    for (key, reason) in [
        (None, "missing_field"),
        (Some(&b""[..]), "missing_field"),
        (Some(&b"\xff"[..]), "invalid_value"),
        (Some(&b"\0leadscore.checkpoint"[..]), "invalid_value"),
    ] {
        let err = decode_tombstone_key(key).map_err(|e| e.reason());
        assert_eq!(err, Err(reason), "{key:?}");
    }
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
fn accepts_integral_floats_as_integers_and_rejects_fractions() {
    let base = format!(r#""user_id":"u1","time":"{T0}","type":"external_score""#);
    // Python's json.dumps writes floats; an integral one means the integer.
    for (number, want) in [
        ("5.0", 5),
        ("-0", 0),
        ("-0.0", 0),
        ("1e2", 100),
        ("-7.0E0", -7),
        ("-9223372036854775807", i64::MIN + 1),
        ("-9223372036854775808", i64::MIN),
    ] {
        let e = ok(&format!(r#"{{{base},"score":{number}}}"#));
        assert_eq!(e.score, Some(ScoreOp::Set(want)), "{number}");
        let e = ok(&format!(r#"{{{base},"increment":{number}}}"#));
        assert_eq!(e.score, Some(ScoreOp::Increment(want)), "{number}");
    }
    for (field, reason, message) in [
        (
            r#""score":5.5"#,
            "invalid_value",
            r#"field "score": 5.5 is not an integer"#,
        ),
        (
            r#""increment":-0.25"#,
            "invalid_value",
            r#"field "increment": -0.25 is not an integer"#,
        ),
        // 2^63 as a float is one past i64::MAX.
        (
            r#""score":9223372036854775808.0"#,
            "invalid_value",
            r#"field "score": 9.223372036854776e18 is out of the 64-bit integer range"#,
        ),
        (
            r#""increment":"5""#,
            "wrong_type",
            r#"field "increment": expected an integer, found a string"#,
        ),
        (
            r#""score":9223372036854775808"#,
            "invalid_value",
            r#"field "score": 9223372036854775808 is out of the 64-bit integer range"#,
        ),
        // One below i64::MIN reads as a float that rounds to -2^63: refused, not taken as
        // i64::MIN (and so is -2^63 written as a float, which cannot be told apart from it).
        (
            r#""score":-9223372036854775809"#,
            "invalid_value",
            r#"field "score": -9.223372036854776e18 is out of the 64-bit integer range"#,
        ),
        (
            r#""increment":-9223372036854775808.0"#,
            "invalid_value",
            r#"field "increment": -9.223372036854776e18 is out of the 64-bit integer range"#,
        ),
    ] {
        assert_eq!(rejects(&format!("{{{base},{field}}}"), reason), message);
    }
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

/// A property's name goes into the error line as it is only when plain: one with a line break,
/// a control character or a quote is quoted and escaped, so the input cannot forge or split
/// the `FILE:LINE: reason` line (docs/semantics.md) or the dead letter's message header.
#[test]
fn a_property_name_with_line_breaks_or_quotes_is_escaped_in_the_error() {
    let base = format!(r#""user_id":"u1","time":"{T0}","type":"custom_event","name":"n""#);
    let key = r#"x\"\nevents.jsonl:7: everything is fine\u001b[2J"#;
    let msg = rejects(
        &format!(r#"{{{base},"properties":{{"{key}":null}}}}"#),
        "wrong_type",
    );
    assert!(
        !msg.contains('\n') && !msg.chars().any(char::is_control),
        "{msg:?}"
    );
    assert_eq!(
        msg,
        r#"field "properties["x\"\nevents.jsonl:7: everything is fine\u{1b}[2J"]": expected a string, number or boolean, found null"#
    );
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
    // Unknown keys too (accepted before 2026-12-03), also when many, and when one is escaped.
    let many: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
    for extra in [
        r#""x":1,"x":2"#.to_string(),
        r#""x":1,"\u0078":2"#.to_string(),
        format!(r#"{},"k7":0"#, many.join(",")),
    ] {
        let msg = rejects(
            &format!(r#"{{"user_id":"u1","time":"{T0}","type":"session_start",{extra}}}"#),
            "malformed",
        );
        assert!(msg.contains("duplicate field `"), "{msg}");
    }
    // Distinct unknown keys are fine.
    ok(&format!(
        r#"{{"user_id":"u1","time":"{T0}","type":"session_start",{}}}"#,
        many.join(",")
    ));
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
    let err = decode(Format::Json, None, &payload);
    assert_eq!(err.map_err(|e| e.reason()), Err("malformed"));
}

#[test]
fn rejects_oversized_payloads_before_parsing() {
    let payload = vec![b'x'; 1_048_576];
    assert_eq!(
        failure(decode(Format::Json, None, &payload)),
        Some((
            "oversized",
            "payload is 1048576 bytes, over the 65536-byte limit".to_owned()
        ))
    );
    let err = decode(Format::Protobuf, None, &payload);
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

/// A user id with a leading NUL is the changelog's checkpoint key space: the scorer refused
/// it, but `simulate`, which decodes through the same function, scored it. Both refuse it now,
/// unknown types included.
#[test]
fn a_user_id_starting_with_nul_is_refused_by_the_decoder_itself() {
    for line in [
        r#"{"user_id":"\u0000x","time":"2026-01-05T10:00:00Z","type":"session_start"}"#,
        r#"{"user_id":"\u0000","time":"2026-01-05T10:00:00Z","type":"page_viewed"}"#,
    ] {
        let message = rejects(line, "invalid_value");
        assert!(
            message.contains("user_id") && message.contains("NUL"),
            "{message}"
        );
    }
    // A NUL elsewhere in the id is an ordinary character.
    assert_eq!(
        &*ok(r#"{"user_id":"x\u0000","time":"2026-01-05T10:00:00Z","type":"session_start"}"#)
            .user_id,
        "x\0"
    );
}
