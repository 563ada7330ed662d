//! Score changes: their JSON shape, round trips and validation.
use super::*;

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

/// The scorer encodes every change into one reused buffer: what was there before is gone.
#[test]
fn encoding_into_a_used_buffer_gives_the_same_bytes() {
    let mut short = sample_change();
    short.attributes = Attributes::default();
    for format in [Format::Json, Format::Protobuf] {
        let mut buf = b"left over from a longer record before".repeat(20);
        for c in [sample_change(), short.clone(), sample_change()] {
            encode_change_into(format, &c, &mut buf);
            assert_eq!(buf, encode_change(format, &c), "{format:?}");
            assert_eq!(decode_change(format, &buf).as_ref(), Ok(&c), "{format:?}");
        }
    }
}

/// The JSON encoder writes keys and strings itself (issue 14); it must write exactly what
/// serde_json writes for the same change, for any strings (quotes, backslashes, every control
/// character, non-ASCII), ids, times out of the four-digit years, extreme numbers and floats
/// serde_json writes as `null`.
#[test]
fn change_json_is_byte_for_byte_what_serde_writes() {
    let nasty = [
        String::new(),
        "plain".into(),
        "q\"b\\s/é\u{7f}\u{2028}".into(),
        (0u8..0x20).map(char::from).collect::<String>(),
        "tail\u{1f}".into(),
    ];
    let mut checked = 0;
    for (i, text) in nasty.iter().enumerate() {
        for kind in ReasonKind::ALL {
            let mut c = sample_change();
            c.user_id = format!("u{text}").into();
            c.reason.kind = kind;
            c.reason.group = (i % 2 == 0).then(|| text.as_str().into());
            c.reason.source_event_id = (i % 3 != 1).then(|| format!("{text}#").into());
            c.windows = [0, 1, u32::MAX][i % 3];
            c.id = if i % 2 == 0 {
                ChangeId::Count(i as u32)
            } else {
                ChangeId::from(text.as_str())
            };
            c.time = [0, -1, MAX_MILLIS + 1, i64::MIN, i64::MAX][i];
            (c.previous_score, c.score, c.delta) = (i64::MIN, i64::MAX, -1);
            c.attributes.set(text, Some(&Scalar::Str(text.clone())));
            for (name, v) in [
                ("f_nan", Scalar::Float(f64::NAN)),
                ("f_inf", Scalar::Float(f64::NEG_INFINITY)),
                ("f_small", Scalar::Float(-1.5e-300)),
                ("f_int", Scalar::Float(3.0)),
                ("i_min", Scalar::Int(i64::MIN)),
                ("b", Scalar::Bool(i % 2 == 0)),
            ] {
                c.attributes.set(name, Some(&v));
            }
            let ours = encode_change(Format::Json, &c);
            let serde = super::super::change::change_json_through_serde(&c);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&serde),
                "{kind:?} {text:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, nasty.len() * ReasonKind::ALL.len());
}

proptest! {
    #[test]
    fn change_json_matches_serde_for_any_strings_and_numbers(
        user in "\\PC{0,8}|[\\x00-\\x1f\"\\\\]{1,4}",
        text in any::<String>(),
        time in any::<i64>(),
        n in any::<i64>(),
        f in any::<f64>(),
        count in any::<u32>(),
    ) {
        let mut c = sample_change();
        c.user_id = user.into();
        c.id = if n % 2 == 0 { ChangeId::Count(count) } else { ChangeId::from(text.as_str()) };
        c.time = time;
        c.delta = n;
        c.reason.group = Some(text.as_str().into());
        c.attributes.set(&text, Some(&Scalar::Float(f)));
        let ours = encode_change(Format::Json, &c);
        prop_assert_eq!(ours, super::super::change::change_json_through_serde(&c));
    }
}

#[test]
fn change_json_omits_a_null_group_and_source_event() {
    let mut c = sample_change();
    c.reason = Reason {
        kind: ReasonKind::Inactivity,
        group: None,
        source_event_id: None,
    };
    c.attributes = Attributes::default();
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
        c.attributes.set("zz_ratio", Some(&Scalar::Float(0.5)));
        c.attributes.set("zz_vip", Some(&Scalar::Bool(false)));
        changes.push(c.clone());
        // The engine's ids: kept as a count, written out when encoded. A user id JSON has
        // to escape is written escaped and read back as the same count.
        c.id = ChangeId::Count(u32::MAX - kind as u32);
        c.user_id = "u \"1\"\\\n é".into();
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
    let c = c.ok();
    assert_eq!(
        c.as_ref()
            .map(|c| c.attributes.iter().map(|(k, _)| k).collect::<Vec<_>>()),
        Some(vec!["a", "b"])
    );
}

#[test]
fn decode_change_rejects_bad_changes_naming_the_field() {
    let good = String::from_utf8(encode_change(Format::Json, &sample_change())).unwrap_or_default();
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
            "invalid_value",
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
        let err = failure(decode_change(Format::Json, payload.as_bytes()));
        assert!(
            matches!(&err, Some((r, m)) if *r == reason && m.contains(field)),
            "{payload}: {err:?}"
        );
    }
}

#[test]
fn decode_change_rejects_bad_protobuf_changes() {
    let good = change_to_proto(&sample_change());
    let decode = |m: &pb::ScoreChange| failure(decode_change(Format::Protobuf, &m.encode_to_vec()));
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
