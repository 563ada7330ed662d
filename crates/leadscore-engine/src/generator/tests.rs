use super::*;
use crate::codec::{self, Format, Limits};
use crate::engine::Engine;
use crate::event::{EventType, Origin, ScoreOp};
use crate::partition::Partition;
use crate::rules::{self, Rules};
use crate::state::UserState;
use std::collections::{BTreeMap, HashSet};

fn seed_canvas() -> Engine {
    match rules::parse_str(Rules::SEED_CANVAS, "seed-canvas.toml") {
        Ok(r) => Engine::new(r),
        Err(e) => panic!("seed canvas does not load:\n{e}"),
    }
}

fn simulate(events: &[Event]) -> BTreeMap<String, UserState> {
    let engine = seed_canvas();
    let mut partition = Partition::new();
    let mut users = BTreeMap::new();
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let origin = Origin {
            topic: "gen",
            partition: 0,
            offset: i as i64,
        };
        partition.process(&engine, &mut users, e, origin, &mut out);
    }
    users
}

fn user_number(id: &str) -> usize {
    match id.strip_prefix("user-").and_then(|n| n.parse().ok()) {
        Some(n) => n,
        None => panic!("not a generated user id: {id}"),
    }
}

#[test]
fn same_seed_gives_same_events_and_another_seed_does_not() {
    let cfg = GeneratorConfig {
        users: 50,
        events: 2_000,
        ..GeneratorConfig::default()
    };
    assert_eq!(generate(&cfg), generate(&cfg));
    let other = GeneratorConfig {
        seed: 43,
        ..cfg.clone()
    };
    assert_ne!(generate(&cfg), generate(&other));
}

#[test]
fn generates_exactly_the_requested_number_of_events_for_the_requested_users() {
    for (users, events) in [(1, 1), (10, 5), (100, 3_000), (1000, 20_000), (0, 10)] {
        let cfg = GeneratorConfig {
            users,
            events,
            ..GeneratorConfig::default()
        };
        let out = generate(&cfg);
        assert_eq!(out.len(), events, "{users} users, {events} events");
        let seen: HashSet<&str> = out.iter().map(|e| &*e.user_id).collect();
        assert!(seen.len() <= users.max(1));
        assert!(seen.iter().all(|u| user_number(u) < users.max(1)));
    }
    assert!(generate(&GeneratorConfig {
        events: 0,
        ..GeneratorConfig::default()
    })
    .is_empty());
}

#[test]
fn stream_has_the_configured_late_duplicate_and_id_shares() {
    let cfg = GeneratorConfig::default();
    let events = generate(&cfg);
    let n = events.len() as f64;
    let with_id = events.iter().filter(|e| e.event_id.is_some()).count() as f64;
    assert!((with_id / n - 0.9).abs() < 0.02, "ids on {with_id} of {n}");

    let mut ids = HashSet::new();
    let mut dups = 0;
    for e in &events {
        if let Some(id) = &e.event_id {
            if !ids.insert(&**id) {
                dups += 1;
            }
        }
    }
    assert_eq!(dups, 200, "1% of 20 000 are re-sent copies");

    // Late events, not counting re-sent copies (which repeat an earlier time by design).
    let mut late = 0;
    let mut max_so_far = cfg.start - 3 * DAY;
    let mut firsts = HashSet::new();
    for e in &events {
        if e.event_id
            .as_ref()
            .is_some_and(|id| !firsts.insert(id.clone()))
        {
            continue;
        }
        if e.time < max_so_far - MINUTE / 2 {
            late += 1;
        }
        max_so_far = max_so_far.max(e.time);
    }
    assert!((200..=600).contains(&late), "{late} events out of order");
    let first = events.iter().map(|e| e.time).min().unwrap_or_default();
    let last = events.iter().map(|e| e.time).max().unwrap_or_default();
    assert!(first >= cfg.start - 3 * DAY && last <= cfg.start + cfg.span + DAY);
}

#[test]
fn duplicates_repeat_the_original_exactly_later_in_the_stream() {
    let events = generate(&GeneratorConfig::default());
    let mut first: std::collections::HashMap<&str, (usize, &Event)> = Default::default();
    let mut checked = 0;
    for (i, e) in events.iter().enumerate() {
        let Some(id) = e.event_id.as_deref() else {
            continue;
        };
        match first.get(id) {
            Some((j, orig)) => {
                assert!(*j < i);
                assert_eq!(*orig, e);
                checked += 1;
            }
            None => {
                first.insert(id, (i, e));
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn every_event_survives_json_and_protobuf_round_trips() {
    let limits = Limits::default();
    for e in generate(&GeneratorConfig::default()) {
        for format in [Format::Json, Format::Protobuf] {
            let bytes = codec::encode_event(format, &e);
            match codec::decode_event(format, Some(e.user_id.as_bytes()), &bytes, &limits) {
                Ok(back) => assert_eq!(back, e, "{format:?}"),
                Err(err) => panic!(
                    "{format:?} does not decode: {err}\n{}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
    }
}

#[test]
fn every_persona_and_event_shape_appears() {
    let events = generate(&GeneratorConfig::default());
    let personas: HashSet<Persona> = (0..1000).map(|n| persona(42, n)).collect();
    assert_eq!(personas.len(), Persona::ALL.len());
    let has = |f: &dyn Fn(&Event) -> bool| events.iter().any(f);
    for name in [
        "registered",
        "webinar_joined",
        "demo_requested",
        "pricing_viewed",
        "email_unsubscribed",
        "page_viewed",
    ] {
        assert!(has(&|e| e.name.as_deref() == Some(name)), "{name}");
    }
    for attr in [
        "lead_status",
        "is_employee",
        "lifecycle_stage",
        "country",
        "employees",
        "salesforce_lead_id",
    ] {
        assert!(
            has(&|e| e.kind == EventType::AttributeChanged && e.name.as_deref() == Some(attr)),
            "{attr}"
        );
    }
    for app in ["web", "ios", "android"] {
        assert!(has(&|e| e.app_id.as_deref() == Some(app)), "{app}");
    }
    assert!(has(&|e| matches!(e.score, Some(ScoreOp::Set(_)))));
    assert!(has(&|e| matches!(e.score, Some(ScoreOp::Increment(_)))));
    assert!(has(
        &|e| e.kind == EventType::ExternalScore && e.updated_at.is_none()
    ));
    assert!(has(
        &|e| e.kind == EventType::AttributeChanged && e.value.is_none()
    ));
    // Some external scores are older than one already sent for the same user.
    let mut newest: std::collections::HashMap<&str, Millis> = Default::default();
    let mut stale = 0;
    for e in &events {
        if let Some(at) = e.updated_at {
            let n = newest.entry(&*e.user_id).or_insert(at);
            if at < *n {
                stale += 1;
            }
            *n = (*n).max(at);
        }
    }
    assert!(stale > 0);
}

#[test]
fn salesforce_ids_look_real_and_are_unique() {
    let ids: HashSet<String> = (0..10_000).map(salesforce_lead_id).collect();
    assert_eq!(ids.len(), 10_000);
    for id in ids.iter().take(100) {
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("00Q"));
        assert!(id.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
    assert_eq!(user_id(42), "user-000042");
}

#[test]
fn salesforce_suffix_matches_the_case_checksum() {
    // Each suffix character encodes which of the five characters of its chunk are
    // uppercase (bit i for the i-th), as an index into A-Z0-5.
    let id = salesforce_lead_id(7);
    let chunk_bits = |s: &str| {
        s.bytes()
            .enumerate()
            .filter(|(_, c)| c.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | 1 << i)
    };
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    for k in 0..3 {
        let bits = chunk_bits(&id[k * 5..k * 5 + 5]);
        assert_eq!(id.as_bytes()[15 + k], table[bits], "{id}");
    }
}

#[test]
fn hot_leads_cross_100_under_the_seed_canvas_and_employees_never_score() {
    let cfg = GeneratorConfig::default();
    let users = simulate(&generate(&cfg));
    let mut hot = 0;
    for (id, st) in &users {
        match persona(cfg.seed, user_number(id)) {
            Persona::Hot => {
                hot += 1;
                assert!(st.score > 100, "hot lead {id} ends at {}", st.score);
            }
            Persona::Employee => assert_eq!(st.score, 0, "employee {id}"),
            _ => {}
        }
    }
    assert!(hot >= 30, "only {hot} hot leads");
    // Not everyone is a hot lead: the threshold still selects.
    let above = users.values().filter(|s| s.score > 100).count();
    assert!(
        above < users.len() / 5,
        "{above} of {} above 100",
        users.len()
    );
}

#[test]
fn shipped_example_event_files_decode() {
    let limits = Limits::default();
    for (name, text) in [
        (
            "sample.jsonl",
            include_str!("../../../../examples/events/sample.jsonl"),
        ),
        (
            "quickstart.jsonl",
            include_str!("../../../../examples/events/quickstart.jsonl"),
        ),
    ] {
        let mut lines = 0;
        for (i, line) in text.lines().enumerate() {
            if let Err(e) = codec::decode_event(Format::Json, None, line.as_bytes(), &limits) {
                panic!("{name}:{}: {e}", i + 1);
            }
            lines += 1;
        }
        assert!(lines > 10, "{name} has {lines} lines");
    }
}

#[test]
fn quickstart_example_scores_as_documented() {
    let input = include_str!("../../../../examples/events/quickstart.jsonl");
    let engine = seed_canvas();
    let run = |now: Option<&str>| {
        let now = now.map(|s| match crate::timestamp::parse_rfc3339(s) {
            Ok(t) => t,
            Err(e) => panic!("{s}: {e}"),
        });
        match crate::simulate::run(&engine, input.as_bytes(), now) {
            Ok(sim) => sim,
            Err(e) => panic!("simulate: {e}"),
        }
    };
    let scores = |sim: &crate::simulate::Simulation| -> Vec<(String, i64, bool)> {
        sim.users
            .iter()
            .map(|(u, s)| (u.clone(), s.score, s.enrolled))
            .collect()
    };
    let at_end = run(None);
    assert!(at_end.bad_lines.is_empty(), "{:?}", at_end.bad_lines);
    let expect = |v: [(&str, i64); 3]| -> Vec<(String, i64, bool)> {
        v.iter().map(|(u, s)| (u.to_string(), *s, true)).collect()
    };
    assert_eq!(
        scores(&at_end),
        expect([("alice", 101), ("bob", 0), ("carol", 1)])
    );
    let later = run(Some("2026-02-01T00:00:00Z"));
    assert_eq!(
        scores(&later),
        expect([("alice", 100), ("bob", 0), ("carol", 0)])
    );
}

/// Regenerates `examples/events/sample.jsonl`:
/// `cargo test --lib generator::tests::write_sample_jsonl -- --ignored`.
#[test]
#[ignore = "writes examples/events/sample.jsonl"]
fn write_sample_jsonl() -> io::Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/events/sample.jsonl"
    );
    let file = std::fs::File::create(path)?;
    write_jsonl(&generate(&sample_config()), io::BufWriter::new(file))
}
