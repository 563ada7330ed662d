//! SPEC section 3 rule 6: external scores.

use super::*;

// 6. External scores

#[test]
fn external_scores_set_or_increment_enrolled_or_not_whatever_the_audience() {
    let e = rules_on("", &entry_on(r#"[{ type = "email_added" }]"#));
    let r = run(
        &e,
        &[
            attr("u", T0, "is_employee", Some(Scalar::Bool(true))),
            external("u", T0 + 1, ScoreOp::Set(40), None),
            external("u", T0 + 2, ScoreOp::Increment(-5), None),
        ],
    );
    assert!(!r.user("u").enrolled);
    assert_eq!(r.score("u"), 35);
    assert_eq!(
        r.kinds(),
        [(ReasonKind::External, 40), (ReasonKind::External, -5)]
    );
    assert_eq!(r.changes[0].reason.group, None);
}

#[test]
fn a_stale_external_score_is_ignored() {
    let events = [
        external("u", T0, ScoreOp::Set(50), Some(T0)),
        external("u", T0 + 1, ScoreOp::Set(10), Some(T0 - 1)),
        external("u", T0 + 2, ScoreOp::Set(20), Some(T0)),
    ];
    let outcomes = [Outcome::Scored, Outcome::StaleExternal, Outcome::Scored];
    run_expecting(&rules(""), &events, 0, &outcomes, 20);
}

#[test]
fn an_external_score_without_updated_at_always_applies() {
    let events = [
        external("u", T0, ScoreOp::Set(50), Some(T0 + D)),
        external("u", T0 + 1, ScoreOp::Set(10), None),
        external("u", T0 + 2, ScoreOp::Set(30), Some(T0)),
    ];
    run_expecting(&rules(""), &events, 0, &[Outcome::Scored; 3], 30);
}

#[test]
fn external_scores_are_clamped_and_ignore_reentry() {
    let e = rules_on("[score]\nmin = 0\nmax = 100\n", &reentry("1d"));
    let r = run(
        &e,
        &[
            external("u", T0, ScoreOp::Set(500), None),
            external("u", T0 + 1, ScoreOp::Increment(-1000), None),
        ],
    );
    assert_eq!(
        r.kinds(),
        [(ReasonKind::External, 100), (ReasonKind::External, -100)]
    );
}

/// A change between scores more than `i64::MAX` apart: its `delta` is `score -
/// previous_score` saturated to the 64-bit range, so it keeps its sign (docs/formats.md), and
/// the explain history still gives the exact score after it.
#[test]
fn a_delta_past_the_64_bit_range_saturates_with_its_sign() {
    let events = [
        external("u", T0, ScoreOp::Set(i64::MAX), None),
        external("u", T0 + 1, ScoreOp::Set(-2), None),
        external("u", T0 + 2, ScoreOp::Set(i64::MIN), None),
        external("u", T0 + 3, ScoreOp::Set(i64::MAX), None),
    ];
    let r = run(&rules(""), &events);
    assert_eq!(
        r.changes
            .iter()
            .map(|c| (c.previous_score, c.score, c.delta))
            .collect::<Vec<_>>(),
        [
            (0, i64::MAX, i64::MAX),
            (i64::MAX, -2, i64::MIN),
            (-2, i64::MIN, i64::MIN + 2),
            (i64::MIN, i64::MAX, i64::MAX),
        ]
    );
    let notes = r.user("u").history.notes();
    assert_eq!(
        notes
            .iter()
            .map(|n| (n.previous_score, n.score(), n.delta()))
            .collect::<Vec<_>>(),
        [
            (0, i64::MAX, i64::MAX),
            (i64::MAX, -2, i64::MIN),
            (-2, i64::MIN, i64::MIN + 2),
            (i64::MIN, i64::MAX, i64::MAX),
        ]
    );
}
