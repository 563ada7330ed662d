//! The pure pieces: classification, backoff, settings checks and answer parsing, without a
//! server.

use super::*;
use crate::config::HandoffSettings;

#[test]
fn classify_follows_the_spec_for_every_case() {
    use RetryHint::*;
    let table: &[(Option<u16>, &str, RetryHint)] = &[
        // No answer: timeouts and connection errors.
        (None, TIMEOUT, Retry),
        (None, CONNECTION_ERROR, Retry),
        (Some(408), "REQUEST_TIMEOUT", Retry),
        (Some(429), "TOO_MANY_REQUESTS", Retry),
        (Some(500), "UNKNOWN_EXCEPTION", Retry),
        (Some(502), UNEXPECTED_RESPONSE, Retry),
        (Some(503), "SERVER_UNAVAILABLE", Retry),
        (Some(504), UNEXPECTED_RESPONSE, Retry),
        // Row locks, whatever status carries them.
        (Some(400), "UNABLE_TO_LOCK_ROW", Retry),
        (Some(200), "UNABLE_TO_LOCK_ROW", Retry),
        (Some(503), "UNABLE_TO_LOCK_ROW", Retry),
        // Server-side failures: retried alone (5xx) and as a record of a collection's 200.
        (Some(500), "UNKNOWN_EXCEPTION", Retry),
        (Some(200), "UNKNOWN_EXCEPTION", Retry),
        (Some(200), "SERVER_UNAVAILABLE", Retry),
        (Some(503), "SERVER_UNAVAILABLE", Retry),
        (Some(200), "REQUEST_RUNNING_TOO_LONG", Retry),
        // The daily API limit.
        (Some(403), "REQUEST_LIMIT_EXCEEDED", PauseForLimit),
        (Some(200), "REQUEST_LIMIT_EXCEEDED", PauseForLimit),
        // A session refused after the replay: credentials, not the lead.
        (Some(401), "INVALID_SESSION_ID", AuthFailure),
        // Other 4xx, and record errors inside a 200: no retry.
        (Some(404), "NOT_FOUND", Permanent),
        (Some(200), "NOT_FOUND", Permanent),
        (Some(400), "MALFORMED_ID", Permanent),
        (Some(200), "MALFORMED_ID", Permanent),
        (Some(404), "ENTITY_IS_DELETED", Permanent),
        (Some(400), "FIELD_CUSTOM_VALIDATION_EXCEPTION", Permanent),
        (Some(200), "FIELD_CUSTOM_VALIDATION_EXCEPTION", Permanent),
        (Some(400), "INVALID_FIELD", Permanent),
        (Some(400), "JSON_PARSER_ERROR", Permanent),
        (Some(403), "INSUFFICIENT_ACCESS_OR_READONLY", Permanent),
        (Some(405), "METHOD_NOT_ALLOWED", Permanent),
        (Some(415), "UNSUPPORTED_MEDIA_TYPE", Permanent),
        (Some(200), UNEXPECTED_RESPONSE, Permanent),
        // Not Salesforce's word on the lead (the client follows no redirect): the update did
        // not happen, so it is retried, and dead-lettered after `max_attempts` (SPEC 6 exempts
        // only other 4xx from retry).
        (Some(100), UNEXPECTED_RESPONSE, Retry),
        (Some(301), UNEXPECTED_RESPONSE, Retry),
        (Some(302), UNEXPECTED_RESPONSE, Retry),
        (Some(307), UNEXPECTED_RESPONSE, Retry),
        (Some(308), UNEXPECTED_RESPONSE, Retry),
    ];
    for (status, code, want) in table {
        assert_eq!(classify(*status, code), *want, "{status:?} {code}");
    }
}

#[test]
fn backoff_doubles_then_caps_and_stays_within_jitter_bounds() {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let base = |attempt: u32| {
        let grown = Duration::from_millis(100) * 2u32.pow(attempt.min(20) - 1);
        grown.min(Duration::from_secs(1))
    };
    let jitters = [
        0,
        1,
        7,
        999_999_937,
        123_456_789_012,
        u64::MAX / 3,
        u64::MAX,
    ];
    for attempt in 1..=12 {
        for jitter in jitters {
            let d = backoff.delay(attempt, jitter);
            assert!(
                d >= base(attempt) / 2 && d <= base(attempt),
                "attempt {attempt}, jitter {jitter}: {d:?} outside [{:?}, {:?}]",
                base(attempt) / 2,
                base(attempt)
            );
        }
        // The jitter reaches both ends: 0 the bottom, the span the top.
        assert_eq!(backoff.delay(attempt, 0), base(attempt) / 2);
        let span = base(attempt).as_nanos() - base(attempt).as_nanos() / 2;
        assert_eq!(backoff.delay(attempt, span as u64), base(attempt));
    }
    // Grows: 100, 200, 400, 800 ms, then the 1 s cap.
    let lows: Vec<u128> = (1..=6).map(|a| backoff.delay(a, 0).as_millis()).collect();
    assert_eq!(lows, vec![50, 100, 200, 400, 500, 500]);
    // Deterministic given the jitter; attempt 0 is the first retry; no overflow.
    assert_eq!(backoff.delay(3, 42), backoff.delay(3, 42));
    assert_eq!(backoff.delay(0, 5), backoff.delay(1, 5));
    assert!(backoff.delay(u32::MAX, u64::MAX) <= Duration::from_secs(1));
    let huge = Backoff::new(Duration::MAX, Duration::MAX);
    assert!(huge.delay(u32::MAX, 0) >= Duration::MAX / 2);
    let settings = HandoffSettings::default();
    assert_eq!(
        Backoff::from_settings(&settings),
        Backoff::new(settings.backoff_initial, settings.backoff_max)
    );
    assert_ne!(jitter(), jitter(), "fresh randomness per call");
}

/// A canned answer, for shapes the stand-in never sends.
fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_string(),
    }
}

#[test]
fn unexpected_answers_say_what_was_wrong() {
    // A proxy's HTML error page.
    let page = sobject_outcome(&reply(502, "<html>Bad Gateway</html>"));
    let e = error_of(&page);
    assert_eq!(e.error_code, UNEXPECTED_RESPONSE);
    assert_eq!(e.hint, RetryHint::Retry);
    assert!(e.message.contains("HTTP 502"), "{}", e.message);
    assert!(
        e.message.contains("not a Salesforce error array"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("<html>Bad Gateway</html>"),
        "{}",
        e.message
    );

    let odd = error_of(&sobject_outcome(&reply(400, "{\"oops\": 1}"))).clone();
    assert_eq!(
        (odd.error_code.as_str(), odd.hint),
        (UNEXPECTED_RESPONSE, RetryHint::Permanent)
    );
    let empty = error_of(&sobject_outcome(&reply(400, "[]"))).clone();
    assert!(
        empty.message.contains("an empty error array"),
        "{}",
        empty.message
    );
    // Any 2xx on a lone PATCH is success, whatever its body.
    for (status, body) in [(200, "{}"), (200, "<html>OK</html>"), (201, ""), (299, "x")] {
        assert_eq!(
            sobject_outcome(&reply(status, body)),
            ok(status),
            "{status} {body}"
        );
    }

    // A validation error keeps its fields; further errors are named.
    let validation = error_of(&sobject_outcome(&reply(
        400,
        r#"[{"message":"Rating is required","errorCode":"FIELD_CUSTOM_VALIDATION_EXCEPTION","fields":["Rating"]},
                {"message":"x","errorCode":"INVALID_FIELD"}]"#,
    )))
    .clone();
    assert_eq!(validation.error_code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert_eq!(validation.fields, vec!["Rating".to_string()]);
    assert_eq!(
        validation.message,
        "Rating is required (and 1: INVALID_FIELD)"
    );
    assert_eq!(validation.hint, RetryHint::Permanent);

    // Collections: wrong count, wrong shape, failure without errors, errorCode spelling.
    let short = collection_outcomes(
        &reply(200, r#"[{"id":"a","success":true,"errors":[]}]"#),
        &["a", "b", "c"],
    );
    assert_eq!(short.len(), 3);
    assert_eq!(short[0], ok(200), "a success naming its record is taken");
    assert!(error_of(&short[2])
        .message
        .contains("1 results for 3 records"));
    assert_eq!(error_of(&short[2]).hint, RetryHint::Retry);
    let object_body = collection_outcomes(&reply(200, r#"{"success":true}"#), &["a", "b"]);
    assert!(error_of(&object_body[0]).message.contains("not an array"));
    assert_eq!(error_of(&object_body[0]).hint, RetryHint::Retry);
    let mixed = collection_outcomes(
        &reply(
            200,
            r#"[{"success":false,"errors":[]},
                    {"success":false,"errors":[{"errorCode":"MALFORMED_ID","message":"bad id","fields":["Id"]}]},
                    {"id":"x","success":true,"errors":[]}]"#,
        ),
        &["v", "w", "x"],
    );
    assert!(error_of(&mixed[0])
        .message
        .contains("success false and no errors"));
    assert_eq!(error_of(&mixed[0]).hint, RetryHint::Retry);
    assert_eq!(error_of(&mixed[1]).error_code, "MALFORMED_ID");
    assert_eq!(error_of(&mixed[1]).fields, vec!["Id".to_string()]);
    assert_eq!(mixed[2], ok(200));
    let whole = collection_outcomes(
        &reply(
            400,
            r#"[{"message":"too many","errorCode":"EXCEEDED_ID_LIMIT"}]"#,
        ),
        &["a", "b"],
    );
    assert!(whole
        .iter()
        .all(|o| o.http_status == Some(400) && error_of(o).error_code == "EXCEEDED_ID_LIMIT"));

    // Token answers: never Permanent, and a 200 body is never quoted (it may hold a token).
    let no_token = token_from_reply(&reply(200, r#"{"token":"abc"}"#)).expect_err("no token");
    assert_eq!(no_token.hint, RetryHint::NoToken);
    assert!(!no_token.message.contains("abc"));
    let down = token_from_reply(&reply(503, "down")).expect_err("down");
    assert_eq!(
        (down.error_code.as_str(), down.hint),
        (UNEXPECTED_RESPONSE, RetryHint::NoToken)
    );

    let long = "x".repeat(5000);
    let e = error_of(&sobject_outcome(&reply(500, &long))).clone();
    assert!(
        e.message.len() < 500,
        "the body is cut: {}",
        e.message.len()
    );
}

#[test]
fn new_rejects_settings_it_cannot_use() {
    let good = SalesforceSettings {
        client_id: "app".to_string(),
        ..SalesforceSettings::default()
    };
    let cases = [
        (
            SalesforceSettings {
                instance_url: "ftp://x".to_string(),
                ..good.clone()
            },
            "salesforce.instance_url",
        ),
        (
            SalesforceSettings {
                api_version: String::new(),
                ..good.clone()
            },
            "salesforce.api_version",
        ),
        (
            SalesforceSettings {
                client_id: " ".to_string(),
                ..good.clone()
            },
            "salesforce.client_id",
        ),
    ];
    for (settings, key) in cases {
        let e = SalesforceClient::new(&settings, Secret::new("s")).expect_err(key);
        assert!(e.to_string().starts_with(key), "{e}");
    }
    let e = SalesforceClient::new(&good, Secret::new("")).expect_err("empty secret");
    assert!(e.to_string().contains("secret is empty"), "{e}");
    let trailing = SalesforceSettings {
        instance_url: "https://example.my.salesforce.com/".to_string(),
        ..good
    };
    let client = SalesforceClient::new(&trailing, Secret::new("s")).expect("valid");
    assert_eq!(client.instance_url, "https://example.my.salesforce.com");
}

/// An 18-character id names the record of the 15-character id it starts with exactly (a
/// 15-character id is case-sensitive), and in any other case only with the suffix Salesforce
/// computes from the case of that id's letters.
#[test]
fn an_eighteen_character_id_names_a_record_by_its_case_suffix() {
    for (answered, sent, same) in [
        ("001A0000006Vm9rIAC", "001A0000006Vm9r", true), // Salesforce's documented example
        ("001a0000006vm9riac", "001A0000006Vm9r", true), // 18 characters: any case
        ("001A0000006Vm9r", "001A0000006VM9RIAC", true),
        ("001A0000006Vm9rAAA", "001A0000006Vm9r", true), // the id sent, exactly: its record
        ("001a0000006vm9rAAA", "001A0000006Vm9r", false), // another case, another suffix
        ("00Q5e00000KC001AAA", "00Q5e00000KC001", true),
        ("00Q5e00000KC001EAD", "00Q5e00000KC001", true),
        ("00q5e00000kc001", "00Q5e00000KC001", false), // 15 characters: case counts
        ("00q5e00000kc001AAA", "00Q5e00000KC001", false),
        ("00q5e00000kc001ead", "00Q5e00000KC001", true),
        ("001A0000006Vm9rIAC", "001A0000006Vm9rIAC", true),
        ("001A0000006Vm9rIA", "001A0000006Vm9r", false),
    ] {
        assert_eq!(same_id(answered, sent), same, "{answered} for {sent}");
    }
}

#[test]
fn collection_results_are_matched_to_records_by_position_and_id() {
    let sent = [
        "00Q000000000001AAA",
        "00Q000000000002AAA",
        "00Q000000000003",
    ];
    let success = |id: &str| format!(r#"{{"id":"{id}","success":true,"errors":[]}}"#);
    let failure = r#"{"success":false,"errors":[{"statusCode":"NOT_FOUND","message":"gone"}]}"#;
    // In order: each result is taken, a 15-character id answered in its 18-character form.
    let body = format!(
        "[{},{failure},{}]",
        success(sent[0]),
        success("00Q000000000003EAA")
    );
    let exact = collection_outcomes(&reply(200, &body), &sent);
    assert_eq!(exact[0], ok(200));
    assert_eq!(error_of(&exact[1]).error_code, "NOT_FOUND");
    assert_eq!(error_of(&exact[1]).hint, RetryHint::Permanent);
    assert_eq!(exact[2], ok(200));
    // A success naming another record: the order is not to be trusted, so the failure
    // cannot be attributed either; only the success at its own position is taken.
    let body = format!("[{},{failure},{}]", success(sent[0]), success(sent[1]));
    let swapped = collection_outcomes(&reply(200, &body), &sent);
    assert_eq!(swapped[0], ok(200));
    for o in &swapped[1..] {
        assert_eq!(error_of(o).hint, RetryHint::Retry, "{o:?}");
        assert_eq!(error_of(o).error_code, UNEXPECTED_RESPONSE);
    }
    assert!(error_of(&swapped[2]).message.contains("is a success for"));
    // A success without an id is not a success for anyone.
    let body = r#"[{"success":true,"errors":[]}]"#;
    let anonymous = collection_outcomes(&reply(200, body), &sent[..1]);
    assert_eq!(error_of(&anonymous[0]).hint, RetryHint::Retry);
    // One unreadable result: the rest cannot be placed with confidence.
    let body = format!("[{},17,{failure}]", success(sent[0]));
    let odd = collection_outcomes(&reply(200, &body), &sent);
    assert_eq!(odd[0], ok(200));
    assert_eq!(error_of(&odd[1]).hint, RetryHint::Retry);
    assert_eq!(error_of(&odd[2]).hint, RetryHint::Retry);
}

#[test]
fn odd_lead_ids_cannot_change_the_path() {
    assert_eq!(
        encode_path_segment("00Q000000000001AAA"),
        "00Q000000000001AAA"
    );
    assert_eq!(encode_path_segment("../x?y"), "..%2Fx%3Fy");
}
