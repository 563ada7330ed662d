//! SPEC section 3 rules 1 to 3: attributes, enrollment and the audience.

use super::*;

// 1. Attributes

#[test]
fn attributes_update_whether_or_not_the_user_is_enrolled() {
    let e = rules("");
    let r = run(
        &e,
        &[
            attr("u", T0, "lead_status", s("Open")),
            attr("u", T0 + 1, "seats", Some(Scalar::Int(5))),
            attr("u", T0 + 2, "seats", None),
        ],
    );
    let st = r.user("u");
    assert!(!st.enrolled);
    assert_eq!(st.attribute("lead_status").map(|v| v.to_owned()), s("Open"));
    assert_eq!(st.attribute("seats"), None);
}

#[test]
fn email_added_sets_the_email_attribute() {
    let r = run_base(&[email("u", T0)]);
    assert_eq!(
        r.user("u").attribute("email").map(|v| v.to_owned()),
        s("u@example.com")
    );
}

// 2. Enrollment

#[test]
fn events_before_enrollment_never_score() {
    let events = [session("u", T0), custom("u", T0 + 1, "demo_requested")];
    let r = run_expecting(&rules(""), &events, 0, &[Outcome::NotEnrolled; 2], 0);
    assert!(!r.user("u").enrolled);
}

#[test]
fn the_enrolling_event_is_also_scored() {
    let e = rules("");
    // With a session_start entry, the enrolling session scores through "engaged".
    let e2 = rules_on("", &entry_on(r#"[{ type = "session_start" }]"#));
    let r = run(&e2, &[session("u", T0)]);
    assert_eq!(r.score("u"), 1);
    assert!(r.user("u").enrolled);
    // email_added enrolls but matches no group: enrolled, no score.
    let events = [email("u", T0), session("u", T0 + 1)];
    run_expecting(&e, &events, 0, &[Outcome::NoGroup, Outcome::Scored], 1);
}

// 3. Audience

#[test]
fn excluded_users_do_not_score() {
    let events = [
        email("u", T0),
        attr("u", T0 + 1, "is_employee", Some(Scalar::Bool(true))),
        session("u", T0 + 2),
    ];
    run_expecting(&rules(""), &events, 2, &[Outcome::OutsideAudience], 0);
}

#[test]
fn audience_is_evaluated_on_the_attributes_after_the_event() {
    let e = rules_on(
        "",
        &format!(
            "{BASE}\n[[group]]\nname = \"became lead\"\ndelta = 3\ntriggers = [{{ type = \"attribute_changed\", name = \"lifecycle_stage\" }}]\n"
        ),
    );
    let r = run(
        &e,
        &[
            email("u", T0),
            attr("u", T0 + 1, "lifecycle_stage", s("customer")),
            attr("u", T0 + 2, "lifecycle_stage", s("lead")),
        ],
    );
    assert_eq!(r.outcomes[1], Outcome::OutsideAudience);
    assert_eq!(r.outcomes[2], Outcome::Scored);
    assert_eq!(r.score("u"), 3);
}

/// The audience verdict an engine keeps in a state (issue 14) is forgotten when an attribute
/// changes, in both directions, and again and again on one user.
#[test]
fn a_kept_audience_verdict_follows_every_attribute_change() {
    let employee = |t, v| attr("u", T0 + t, "is_employee", Some(Scalar::Bool(v)));
    let events = [
        email("u", T0),
        session("u", T0 + 1),
        employee(2, true),
        session("u", T0 + 3),
        session("u", T0 + 4),
        employee(5, false),
        session("u", T0 + 6),
        attr("u", T0 + 7, "lifecycle_stage", s("customer")),
        session("u", T0 + 8),
        attr("u", T0 + 9, "lifecycle_stage", None),
        session("u", T0 + 10),
    ];
    let r = run(&rules(""), &events);
    let sessions: Vec<Outcome> = [1, 3, 4, 6, 8, 10].map(|i| r.outcomes[i]).to_vec();
    use Outcome::{OutsideAudience as Out, Scored};
    assert_eq!(sessions, [Scored, Out, Out, Scored, Out, Scored]);
    assert_eq!(r.score("u"), 3);
}

/// A verdict is only good for the rules that gave it: a state scored by one engine and then
/// handed to another with a different audience (a test, a tool, a rules change in a process
/// that keeps its states) is judged by the second engine's audience, and the first engine's
/// own verdict is not taken for the second's after it.
#[test]
fn a_kept_audience_verdict_is_not_taken_by_other_rules() {
    let everyone = rules_on(
        "",
        &edit(
            "exclude = [\n  { attribute = \"is_employee\", equals = true },",
            "exclude = [",
        ),
    );
    let strict = rules("");
    let mut r = run(
        &strict,
        &[
            email("u", T0),
            attr("u", T0 + 1, "is_employee", Some(Scalar::Bool(true))),
        ],
    );
    // Turn by turn; a clone shares its engine's rules, and so its verdicts.
    let clone = strict.clone();
    let turns = [&strict, &everyone, &strict, &everyone, &clone];
    let outcomes: Vec<Outcome> = (2..)
        .zip(turns)
        .map(|(t, e)| r.process(e, &session("u", T0 + t), t))
        .collect();
    use Outcome::{OutsideAudience as Out, Scored};
    assert_eq!(outcomes, [Out, Scored, Out, Scored, Out]);
    assert_eq!(r.score("u"), 2);
}

/// The verdict is a cache, not state: a state that holds one equals (and encodes as) the
/// same state without, so replays and restores compare equal.
#[test]
fn a_kept_audience_verdict_is_not_part_of_the_state() {
    let r = run_base(&[email("u", T0), session("u", T0 + 1), session("u", T0 + 2)]);
    let st = r.user("u");
    assert_ne!(
        format!("{:?}", st.audience),
        "none",
        "the sessions left a verdict"
    );
    let back = UserState::decode(&st.encode()).expect("decodes");
    assert_eq!(format!("{:?}", back.audience), "none");
    assert_eq!(&back, st);
}

#[test]
fn include_predicates_must_all_hold() {
    let mut r = rules("").rules().clone();
    r.audience.include = vec![
        Predicate {
            key: "country".into(),
            test: crate::rules::Test::In(vec![Scalar::Str("DE".into())]),
        },
        Predicate {
            key: "employees".into(),
            test: crate::rules::Test::Gte(50),
        },
    ];
    let e = Engine::new(r);
    let r = run(
        &e,
        &[
            email("u", T0),
            attr("u", T0 + 1, "country", s("DE")),
            session("u", T0 + 2),
            attr("u", T0 + 3, "employees", Some(Scalar::Int(50))),
            session("u", T0 + 4),
        ],
    );
    assert_eq!(r.outcomes[2], Outcome::OutsideAudience);
    assert_eq!(r.outcomes[4], Outcome::Scored);
    assert_eq!(r.score("u"), 1);
}
