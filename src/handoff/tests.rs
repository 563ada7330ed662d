//! The handoff service's pure parts: who is handed off, lead state, dead-letter labels, lead ids.

use super::*;
use crate::change::{Reason, ReasonKind, ScoreChange};
use crate::config::HandoffSettings;
use crate::event::Scalar;

#[test]
fn dead_letter_labels_are_a_bounded_set() {
    assert_eq!(dead_letter_label("entity_is_deleted"), "entity_is_deleted");
    assert_eq!(dead_letter_label("malformed"), "malformed");
    assert_eq!(dead_letter_label("some_code_a_server_made_up"), "other");
    assert_eq!(dead_letter_label(""), "other");
    // The handoff's own reasons.
    for reason in ["invalid_lead_id", "key_mismatch", "response_too_large"] {
        assert_eq!(dead_letter_label(reason), reason);
    }
    assert_eq!(
        dead_letter_label(&INVALID_LEAD_ID.to_ascii_lowercase()),
        "invalid_lead_id"
    );
    for code in [
        salesforce::TIMEOUT,
        salesforce::CONNECTION_ERROR,
        salesforce::UNEXPECTED_RESPONSE,
        salesforce::RESPONSE_TOO_LARGE,
    ] {
        assert_ne!(
            dead_letter_label(&code.to_ascii_lowercase()),
            "other",
            "{code}"
        );
    }
}

fn settings() -> HandoffSettings {
    Settings::default().handoff
}

fn change(user: &str, score: i64, status: Option<&str>) -> ScoreChange {
    ScoreChange {
        event_id: format!("c-{score}"),
        user_id: user.into(),
        time: 0,
        previous_score: 0,
        score,
        delta: score,
        reason: Reason {
            kind: ReasonKind::Rule,
            group: None,
            source_event_id: None,
        },
        windows: 0,
        attributes: status
            .map(|s| vec![("lead_status".to_string(), Scalar::Str(s.into()))])
            .unwrap_or_default(),
    }
}

/// `decide` with the funnel of `s`.
fn run(st: &mut LeadState, c: &ScoreChange, s: &HandoffSettings) -> Result<String, Skip> {
    decide(st, c, s, &Funnel::new(s))
}

/// The outcome of each `(score, status)` change in turn, for one lead.
fn story(s: &HandoffSettings, steps: &[(i64, &str)]) -> Vec<Result<String, Skip>> {
    let mut st = LeadState::default();
    steps
        .iter()
        .map(|(score, status)| run(&mut st, &change("u", *score, Some(status)), s))
        .collect()
}

const HANDED: Result<String, Skip> = Ok(String::new());

/// `Ok(lead id)` as `Ok("")`, to write stories short.
fn short(outcomes: Vec<Result<String, Skip>>) -> Vec<Result<String, Skip>> {
    outcomes
        .into_iter()
        .map(|o| o.map(|_| String::new()))
        .collect()
}

#[test]
fn hands_off_once_when_the_score_passes_the_threshold() {
    let s = settings();
    let mut st = LeadState::default();
    assert_eq!(
        run(&mut st, &change("u", 100, None), &s),
        Err(Skip::AtOrBelowThreshold)
    );
    assert_eq!(
        run(&mut st, &change("u", 101, None), &s),
        Ok("u".to_string())
    );
    assert_eq!(
        run(&mut st, &change("u", 105, None), &s),
        Err(Skip::AlreadyHandedOff)
    );
}

#[test]
fn a_lead_at_or_beyond_the_handoff_status_is_never_handed_off() {
    let s = settings();
    for status in [
        "MQL",
        "SAL",
        "SQL",
        "Opportunity",
        "Customer",
        "Converted",
        "Closed",
        "Closed - Converted",
        "Closed - Not Converted",
        // Compared without case and extra whitespace.
        "sql",
        "  closed -   Converted ",
    ] {
        let mut st = LeadState::default();
        assert_eq!(
            run(&mut st, &change("u", 150, Some(status)), &s),
            Err(Skip::AtOrBeyondHandoffStatus),
            "{status:?}"
        );
    }
}

#[test]
fn moving_to_sql_after_the_handoff_never_moves_the_lead_back() {
    let s = settings();
    // Handed off while Open; sales qualifies it; more points come in.
    let outcomes = story(
        &s,
        &[(120, "Open"), (125, "SQL"), (130, "SQL"), (140, "Customer")],
    );
    assert_eq!(
        short(outcomes),
        vec![
            HANDED,
            Err(Skip::AtOrBeyondHandoffStatus),
            Err(Skip::AtOrBeyondHandoffStatus),
            Err(Skip::AtOrBeyondHandoffStatus),
        ]
    );
    // The generated demo funnel: Open, Working, MQL, SQL: handed off once.
    let outcomes = story(
        &s,
        &[(110, "Open"), (120, "Working"), (130, "MQL"), (140, "SQL")],
    );
    assert_eq!(
        short(outcomes),
        vec![
            HANDED,
            Err(Skip::AlreadyHandedOff),
            Err(Skip::AtOrBeyondHandoffStatus),
            Err(Skip::AtOrBeyondHandoffStatus),
        ]
    );
}

#[test]
fn a_recycle_to_a_status_before_the_handoff_status_re_arms_the_lead() {
    let s = settings();
    let outcomes = story(
        &s,
        &[
            (120, "Open"),
            (121, "MQL"),
            (122, "SQL"),
            (123, "Nurture"), // recycled: handed off again
            (124, "Nurture"),
            (125, "Working"), // forward again: no second handoff
            (126, "MQL"),
            (127, "Working"), // back from MQL: a recycle
        ],
    );
    assert_eq!(
        short(outcomes),
        vec![
            HANDED,
            Err(Skip::AtOrBeyondHandoffStatus),
            Err(Skip::AtOrBeyondHandoffStatus),
            HANDED,
            Err(Skip::AlreadyHandedOff),
            Err(Skip::AlreadyHandedOff),
            Err(Skip::AtOrBeyondHandoffStatus),
            HANDED,
        ]
    );
    // A move back between statuses before MQL is a recycle too (Nurture is listed first).
    let outcomes = story(&s, &[(120, "Working"), (121, "Nurture")]);
    assert_eq!(short(outcomes), vec![HANDED, HANDED]);
    // A recycled lead below the threshold waits for its score.
    let outcomes = story(
        &s,
        &[
            (120, "Open"),
            (121, "SQL"),
            (90, "Nurture"),
            (101, "Nurture"),
        ],
    );
    assert_eq!(
        short(outcomes),
        vec![
            HANDED,
            Err(Skip::AtOrBeyondHandoffStatus),
            Err(Skip::AtOrBelowThreshold),
            HANDED,
        ]
    );
}

#[test]
fn moving_forward_before_the_handoff_status_does_not_re_arm() {
    let s = settings();
    let outcomes = story(&s, &[(120, "New"), (121, "Open"), (122, "Working")]);
    assert_eq!(
        short(outcomes),
        vec![
            HANDED,
            Err(Skip::AlreadyHandedOff),
            Err(Skip::AlreadyHandedOff)
        ]
    );
}

#[test]
fn unlisted_statuses_count_as_before_the_handoff_status_unless_skipped() {
    let mut s = settings();
    s.skip_statuses = vec!["Sales Accepted".to_string()];
    // Unlisted: handed off; moves among unlisted or to a listed earlier status are no
    // recycle, a move from beyond is.
    let outcomes = story(
        &s,
        &[
            (120, "Contacted"),
            (121, "Engaged"),
            (122, "Open"),
            (123, "sales accepted"),
            (124, "Engaged"),
        ],
    );
    assert_eq!(
        short(outcomes),
        vec![
            HANDED,
            Err(Skip::AlreadyHandedOff),
            Err(Skip::AlreadyHandedOff),
            Err(Skip::AtOrBeyondHandoffStatus),
            HANDED,
        ]
    );
}

#[test]
fn an_orgs_own_funnel_and_handoff_status_are_followed() {
    let mut s = settings();
    s.status_order = ["Lead", "Marketing Qualified", "Sales Qualified", "Won"]
        .map(String::from)
        .to_vec();
    s.handoff_status = "marketing qualified".to_string();
    let outcomes = story(
        &s,
        &[
            (120, "Lead"),
            (121, "Sales Qualified"),
            (122, "MQL"), // not in this org's funnel: before the handoff status
            (123, "Won"),
        ],
    );
    assert_eq!(
        short(outcomes),
        vec![
            HANDED,
            Err(Skip::AtOrBeyondHandoffStatus),
            HANDED,
            Err(Skip::AtOrBeyondHandoffStatus),
        ]
    );
}

#[test]
fn the_lead_id_can_come_from_an_attribute() {
    let mut s = settings();
    s.lead_id_attribute = Some("salesforce_lead_id".into());
    let mut st = LeadState::default();
    assert_eq!(
        run(&mut st, &change("u", 120, None), &s),
        Err(Skip::NoLeadId)
    );
    assert!(!st.handed_off, "waits for a change carrying the id");
    let mut c = change("u", 121, None);
    c.attributes.push((
        "salesforce_lead_id".into(),
        Scalar::Str("00Q5g000004nuOjEAI".into()),
    ));
    assert_eq!(run(&mut st, &c, &s), Ok("00Q5g000004nuOjEAI".to_string()));
}

#[test]
fn a_key_other_than_the_user_id_is_a_key_mismatch() {
    assert!(
        key_mismatch(None, "u1").is_none(),
        "no key: nothing to compare"
    );
    assert!(key_mismatch(Some(b"u1"), "u1").is_none());
    let e = key_mismatch(Some(b"u2"), "u1").expect("a mismatch");
    assert_eq!(e.reason(), "key_mismatch");
    assert!(e.to_string().contains("u2"), "{e}");
    let e = key_mismatch(Some(&[0xff, 0xfe]), "u1").expect("not UTF-8");
    assert_eq!(e.reason(), "key_mismatch");
}

#[test]
fn an_invalid_lead_id_is_a_permanent_failure_naming_the_id() {
    let e = invalid_lead_id("..");
    assert_eq!(e.error_code, INVALID_LEAD_ID);
    assert_eq!(e.hint, RetryHint::Permanent);
    assert!(e.message.contains("\"..\""), "{}", e.message);
    let long = invalid_lead_id(&"x".repeat(10_000));
    assert!(
        long.message.len() < 400,
        "the id is cut: {}",
        long.message.len()
    );
}

#[test]
fn lead_state_round_trips() {
    for st in [
        LeadState::default(),
        LeadState {
            handed_off: true,
            status: Some("Open".into()),
        },
        LeadState {
            handed_off: false,
            status: Some(String::new()),
        },
    ] {
        let back = LeadState::decode(&st.encode());
        // An empty status reads back as none: both mean "no status".
        let want = LeadState {
            status: st.status.clone().filter(|s| !s.is_empty()),
            ..st.clone()
        };
        assert_eq!(back, Some(want));
    }
    assert_eq!(LeadState::decode(&[9, 0]), None);
}
