//! SPEC section 3 rules 8 and 9 (duplicates, replays) and the score change records of section 4.

use super::*;
use crate::event::ScalarRef;

// 8. Duplicates

#[test]
fn a_duplicate_just_inside_the_window_changes_nothing() {
    let events = [
        email("u", T0),
        with_id(session("u", T0 + H), "e1"),
        with_id(session("u", T0 + H + D - 1), "e1"),
    ];
    run_expecting(&rules(""), &events, 2, &[Outcome::Duplicate], 1);
}

#[test]
fn the_same_id_just_outside_the_window_applies_again() {
    let events = [
        email("u", T0),
        with_id(session("u", T0 + H), "e1"),
        with_id(session("u", T0 + H + D), "e1"),
        with_id(session("u", T0 + H + D + 1), "e1"),
    ];
    run_expecting(
        &rules(""),
        &events,
        2,
        &[Outcome::Scored, Outcome::Duplicate],
        2,
    );
}

#[test]
fn a_redelivered_event_is_a_duplicate_even_much_later_in_the_log() {
    let mut events = vec![
        email("u", T0),
        with_id(custom("u", T0 + H, "webinar_joined"), "w"),
    ];
    events.extend((0..20).map(|i| session("v", T0 + i * H)));
    events.push(with_id(custom("u", T0 + H, "webinar_joined"), "w"));
    let r = run_base(&events);
    assert_eq!(r.outcomes.last(), Some(&Outcome::Duplicate));
    assert_eq!(r.score("u"), 1);
}

/// Issue 9.3: an event that arrives more than two windows behind the partition clock, sent
/// twice back to back (a producer's retry), is applied once: its id's retention counts from
/// the clock when it was recorded, not from its own time.
#[test]
fn a_late_event_retried_by_its_producer_is_a_duplicate() {
    let events = [
        email("u", T0),
        session("v", T0 + 10 * D),
        with_id(session("u", T0 + H), "late"),
        with_id(session("u", T0 + H), "late"),
    ];
    run_expecting(
        &rules(""),
        &events,
        2,
        &[Outcome::Scored, Outcome::Duplicate],
        1,
    );
}

#[test]
fn a_late_events_id_is_forgotten_two_windows_after_it_was_recorded() {
    let e = rules("");
    let late = with_id(session("u", T0 + H), "late");
    let mut r = run(
        &e,
        &[email("u", T0), session("v", T0 + 10 * D), late.clone()],
    );
    // The recording clock is kept rounded up to within 1/256 of the lateness (16 bytes an
    // id, state.rs): never earlier than the clock when it was recorded.
    let clock = T0 + 10 * D;
    let recorded = r.user("u").seen.last().map_or(0, |s| s.recorded());
    assert!(
        (clock..=clock + (clock - (T0 + H)) / 256).contains(&recorded),
        "{recorded}"
    );
    // Kept while the clock is within two windows of the recording clock ...
    for (i, at) in [(3, recorded + 2 * D - 1), (4, recorded + 2 * D + 1)] {
        r.process(&e, &with_id(session("v", at), &format!("v{i}")), i);
        let kept = r.user("u").seen.len();
        let probe = with_id(attr("u", at, "x", s("y")), &format!("probe{i}"));
        let o = r.process(&e, &probe, 10 + i);
        assert_ne!(o, Outcome::Duplicate);
        let has_late = r
            .user("u")
            .seen
            .iter()
            .any(|s| s.id_hash == crate::state::stable_hash(b"late"));
        // ... and forgotten once it is past them.
        assert_eq!(has_late, i == 3, "clock {at}, {kept} ids before");
    }
}

#[test]
fn duplicates_are_per_user() {
    let r = run_base(&[
        email("u", T0),
        email("v", T0),
        with_id(session("u", T0 + 1), "same"),
        with_id(session("v", T0 + 2), "same"),
    ]);
    assert_eq!((r.score("u"), r.score("v")), (1, 1));
}

#[test]
fn a_duplicate_does_not_update_attributes() {
    let r = run_base(&[
        with_id(attr("u", T0, "lead_status", s("Open")), "a"),
        attr("u", T0 + 1, "lead_status", s("MQL")),
        with_id(attr("u", T0 + 2, "lead_status", s("Open")), "a"),
    ]);
    assert_eq!(
        r.user("u").attribute("lead_status").map(|v| v.to_owned()),
        s("MQL")
    );
}

// Score change records (SPEC section 4)

#[test]
fn a_tracked_attribute_change_alone_is_published_with_delta_zero() {
    let r = run_base(&[
        attr("u", T0, "lead_status", s("Open")),
        attr("u", T0 + 1, "lead_status", s("Open")),
        attr("u", T0 + 2, "city", s("Berlin")),
    ]);
    assert_eq!(r.kinds(), [(ReasonKind::Attribute, 0)]);
    assert_eq!(
        r.changes[0].attribute("lead_status").map(|v| v.to_owned()),
        s("Open")
    );
}

#[test]
fn changes_carry_ids_reasons_and_a_snapshot_of_tracked_attributes() {
    let r = run_base(&[
        attr("u", T0, "lead_status", s("Working")),
        email("u", T0 + 1),
        with_id(custom("u", T0 + 2, "demo_requested"), "d-1"),
    ]);
    let c = r.changes.last().expect("a change");
    assert_eq!((c.previous_score, c.score, c.delta), (0, 5, 5));
    assert_eq!(c.reason.kind, ReasonKind::Rule);
    assert_eq!(c.reason.group.as_deref(), Some("high intent"));
    assert_eq!(c.reason.source_event_id.as_deref(), Some("d-1"));
    assert_eq!(
        c.attributes.iter().collect::<Vec<_>>(),
        [("lead_status", ScalarRef::Str("Working"))]
    );
    // An event without an id is named by its position.
    let first = &r.changes[0];
    assert_eq!(first.reason.source_event_id.as_deref(), Some("t/0/0"));
}

#[test]
fn change_ids_are_deterministic_and_unique() {
    let e = rules(DECAY);
    let events = [
        email("u", T0),
        session("u", T0 + 1),
        with_id(session("u", T0 + 2), "x"),
        with_id(session("u", T0 + 2 + D), "x"),
        session("v", T0 + 30 * D),
    ];
    let a = run(&e, &events);
    let b = run(&e, &events);
    let ids: Vec<String> = a.changes.iter().map(|c| c.event_id().to_string()).collect();
    assert_eq!(
        ids,
        b.changes
            .iter()
            .map(|c| c.event_id().to_string())
            .collect::<Vec<_>>()
    );
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

// 9. Replays

#[test]
fn a_replayed_offset_changes_nothing() {
    let e = rules("");
    let mut users = BTreeMap::new();
    let mut changes = Vec::new();
    let mut p = Partition::new();
    for ev in [email("u", T0), session("u", T0 + 1)] {
        p.process(&e, &mut users, &ev, origin(7 + ev.time - T0), &mut changes);
    }
    let before = users.clone();
    let o = p.process(
        &e,
        &mut users,
        &session("u", T0 + 1),
        origin(8),
        &mut changes,
    );
    assert_eq!(o, Outcome::Replayed);
    assert_eq!(users, before);
}

/// A change of `kind` for `user` at `time` whose id is the count `n`.
fn counted(user: &str, time: Millis, kind: ReasonKind, n: u32) -> ScoreChange {
    ScoreChange {
        id: ChangeId::Count(n),
        user_id: user.into(),
        time,
        previous_score: 0,
        score: 1,
        delta: 1,
        reason: crate::change::Reason {
            kind,
            group: None,
            source_event_id: None,
        },
        windows: 0,
        attributes: Default::default(),
    }
}

#[test]
fn change_ids_spell_the_kind_user_time_and_count() {
    let id = |user, time, kind, n| counted(user, time, kind, n).event_id().to_string();
    assert_eq!(
        id("u-1", T0, ReasonKind::Rule, 1),
        format!("rule:u-1@{T0}#1")
    );
    assert_eq!(
        id("x", -1_500, ReasonKind::External, u32::MAX),
        "external:x@-1500#4294967295"
    );
    assert_eq!(id("y", 0, ReasonKind::Attribute, 0), "attribute:y@0#0");
    assert_eq!(id("z", 7, ReasonKind::Inactivity, 3), "inactivity:z@7#3");
    assert_eq!(
        id("é\"#@:", i64::MIN, ReasonKind::Rule, 9),
        format!("rule:é\"#@:@{}#9", i64::MIN)
    );
}

/// A decoded change keeps its id as a count only when the text is exactly what the count
/// spells for that change's own kind, user and time; anything else is kept as given, so the
/// text written back out is always the text read.
#[test]
fn an_id_reads_back_as_a_count_only_when_it_spells_its_own_change() {
    let c = counted("u#1", T0, ReasonKind::Rule, 0);
    let own = format!("rule:u#1@{T0}#12");
    assert_eq!(c.canonical_id(&own), ChangeId::Count(12));
    assert_eq!(
        c.canonical_id("rule:u#1@0#4294967295"),
        ChangeId::from("rule:u#1@0#4294967295")
    );
    for other in [
        format!("rule:u#1@{T0}#012"),
        format!("rule:u#1@{T0}#+12"),
        format!("rule:u#1@{T0}#4294967296"),
        format!("rule:u#1@{T0}#"),
        format!("external:u#1@{T0}#12"),
        format!("rule:u#2@{T0}#12"),
        format!("rule:u#1@{}#12", T0 + 1),
        format!("rule:u#1@{T0}12"),
        "c-9f2".to_string(),
        String::new(),
    ] {
        let id = c.canonical_id(&other);
        assert_eq!(id, ChangeId::from(other.as_str()), "{other}");
        let mut read = c.clone();
        read.id = id;
        assert_eq!(read.event_id().to_string(), other);
    }
}

/// Event ids are scoped per user (SPEC 3.8): two users' events may carry the same one, at the
/// same time. Their changes still get two ids, so a consumer can drop duplicates by the id
/// alone, across the whole topic (the warehouse's history keys on it).
#[test]
fn two_users_sharing_an_event_id_get_two_change_ids() {
    let e = rules("");
    let with_id = |user: &str| {
        let mut s = session(user, T0 + 1);
        s.event_id = Some("s-1".into());
        s
    };
    let r = run(
        &e,
        &[email("u", T0), email("v", T0), with_id("u"), with_id("v")],
    );
    assert_eq!((r.score("u"), r.score("v")), (1, 1));
    let ids: std::collections::BTreeSet<String> =
        r.changes.iter().map(|c| c.event_id().to_string()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(r.changes.len(), 2);
}

/// With `dedupe_window = "0s"` nothing is a duplicate (SPEC 3.8), so an event sent twice
/// scores twice: two changes, from one source id at one time. They still get two ids, so a
/// consumer dropping duplicates by id keeps both; and the same holds for an id forgotten
/// early, the 257th id of one user within the window (docs/semantics.md).
#[test]
fn an_event_applied_twice_gives_two_change_ids() {
    let e = rules("dedupe_window = \"0s\"\n");
    let again = || {
        let mut s = session("u", T0 + 1);
        s.event_id = Some("s-1".into());
        s
    };
    let r = run(&e, &session_after_email(T0, [again(), again()]));
    assert_eq!(r.score("u"), 3);
    let ids: std::collections::BTreeSet<String> =
        r.changes.iter().map(|c| c.event_id().to_string()).collect();
    assert_eq!(ids.len(), r.changes.len(), "{ids:?}");
    assert_eq!(r.changes.len(), 3);
}

#[test]
fn expired_ids_give_their_room_back() {
    // A burst of 40 ids, then, past their retention, one more: the list holds one id, in a
    // block of one (the list is an exact-size box: no spare room to keep).
    let e = rules("");
    let mut events = vec![email("u", T0)];
    events.extend((0..40).map(|i| with_id(session("u", T0 + i), &format!("burst{i}"))));
    let mut r = run(&e, &events);
    assert_eq!(r.user("u").seen.len(), 40);
    r.process(&e, &with_id(session("u", T0 + 10 * D), "later"), 100);
    assert_eq!(r.user("u").seen.len(), 1);
    assert_eq!(
        r.user("u").heap_bytes(),
        r.user("u").attributes().heap_bytes() + 16 + r.user("u").history.heap_bytes()
    );
}

/// SPEC 3.8: an id may be forgotten only two windows after it was recorded, so a retry within
/// the window is a duplicate even after hundreds of other ids from the same user (a busy
/// user's session events); only past [`MAX_SEEN_IDS`] does the state's bound drop the first
/// recorded (docs/semantics.md).
#[test]
fn a_retry_is_a_duplicate_after_hundreds_of_other_ids() {
    let e = rules("");
    // "first", then `others` distinct ids, then a retry of "first" a moment later (not earlier
    // than the last change: re-entry).
    let run_with = |others: usize| {
        let mut events = vec![
            email("u", T0),
            with_id(custom("u", T0, "webinar_joined"), "first"),
        ];
        events.extend((0..others).map(|i| with_id(session("u", T0 + 1), &format!("s{i}"))));
        events.push(with_id(custom("u", T0 + 1, "webinar_joined"), "first"));
        run(&e, &events)
    };
    let r = run_with(1000);
    assert_eq!(r.outcomes.last(), Some(&Outcome::Duplicate));
    assert_eq!(r.score("u"), 1001);

    // The bound: the first recorded id goes once the user has MAX_SEEN_IDS newer ones.
    let r = run_with(MAX_SEEN_IDS);
    assert_eq!(r.user("u").seen.len(), MAX_SEEN_IDS);
    assert_eq!(r.outcomes.last(), Some(&Outcome::Scored));
}

/// Issue 14 (memory per user): an inactivity timer firing drops the ids the partition clock
/// has forgotten (SPEC 3.8: more than two windows behind the later of the event's time and
/// the clock that recorded it) and keeps the rest, so an idle user holds no ids nothing can
/// match; a retry of a kept id is still a duplicate, and a forgotten id's is not.
#[test]
fn an_inactivity_timer_drops_the_forgotten_ids_and_keeps_the_rest() {
    // A 3-day window, so the timer fires while one id is forgotten and the other is not.
    let e = rules("[inactivity]\nwindow = \"3d\"\ndelta = -1\n");
    let events = [
        email("u", T0),
        // Scores: the timer is due at T0 + H + 3 days.
        with_id(session("u", T0 + H), "old"),
        // Changes nothing (no group), so the timer stays; at this clock "old" is still kept.
        with_id(custom("u", T0 + 2 * D, "page_viewed"), "recent"),
    ];
    let mut r = run(&e, &events);
    assert_eq!(
        r.outcomes,
        [Outcome::NoGroup, Outcome::Scored, Outcome::NoGroup]
    );
    assert_eq!(r.user("u").seen.len(), 2);
    let due = T0 + H + 3 * D;
    // Just before the timer: nothing fires, nothing is dropped.
    r.advance(&e, due - 1);
    assert_eq!(r.user("u").seen.len(), 2);
    r.advance(&e, due);
    assert_eq!(r.decays().len(), 1, "the timer fired");
    // Horizon: due - 2 days = T0 + H + 1 day. "old" (T0 + H) is past it, "recent" is not.
    let kept: Vec<u64> = r.user("u").seen.iter().map(|s| s.id_hash).collect();
    assert_eq!(kept, [stable_hash(b"recent")]);
    let retry = with_id(custom("u", T0 + 2 * D, "page_viewed"), "recent");
    assert_eq!(r.process(&e, &retry, 3), Outcome::Duplicate);
    // A forgotten id's event is not a duplicate (as at this clock without the timer): it
    // meets the re-entry rule instead, the decay being a later change.
    assert_eq!(
        r.process(&e, &with_id(session("u", T0 + H), "old"), 4),
        Outcome::ReentryWait
    );
}
