//! What records the scorer reads and writes: misrouted, keyless and far-future input, record
//! timestamps and headers, client properties, tombstones and unknown event types.

use super::*;

/// Issue 9.4: records produced with librdkafka's default partitioner (CRC32, not Kafka's
/// murmur2) and keyless records are scored in their user's home partition, once, even across a
/// `kill -9`: the final state equals `simulate --partitions N`, and every user's state lives in
/// its home changelog partition only.
#[test]
fn misrouted_and_keyless_records_are_scored_once_in_the_home_partition() {
    let setup = ScorerRig::new("misrouted", PARTITIONS);
    // Without the inactivity rule, the result does not depend on how the re-routed copies of
    // different users interleave with each other on the home partition.
    let seed = std::fs::read_to_string(rules_path("seed-canvas.toml")).expect("seed rules");
    let cut = seed.find("[inactivity]").unwrap_or(seed.len());
    let rules = setup.dir.path().join("no-inactivity.toml");
    std::fs::write(&rules, &seed[..cut]).expect("write rules");
    let cfg = traffic(300, 4_000, 23);
    let (events_file, records) = setup.generated(&cfg);
    // Keyless events for users of their own, one each, so their order cannot matter.
    let mut keyless = Vec::new();
    let mut lines = std::fs::read_to_string(&events_file).expect("events");
    for i in 0..40 {
        let line = format!(
            r#"{{"user_id":"keyless-{i}","time":"2026-01-05T12:00:00Z","type":"external_score","score":{}}}"#,
            i * 3 + 1
        );
        lines.push_str(&line);
        lines.push('\n');
        keyless.push(line.into_bytes());
    }
    std::fs::write(&events_file, lines).expect("events with keyless ones");

    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    let extra_env = [env("SCORER__RULES", &rules.display().to_string())];
    let extra: Vec<(&str, &str)> = extra_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut scorer = setup.scorer("s", &extra);
    let crc32 = crc32_producer(&setup);
    let misplaced = records
        .iter()
        .filter(|(k, _)| {
            leadscore::partitioner::partition_for(k.as_bytes(), PARTITIONS)
                != crc32_partition(k.as_bytes(), PARTITIONS)
        })
        .count();
    assert!(
        misplaced > records.len() / 3,
        "the test needs misrouted records"
    );
    let (first, second) = records.split_at(records.len() / 2);
    for (k, v) in first {
        produce(&crc32, &setup.names.input, Some(k.as_bytes()), v);
    }
    for v in &keyless {
        produce(&crc32, &setup.names.input, None, v);
    }
    crc32.flush(Duration::from_secs(30)).expect("flush");
    wait_owns_all(&scorer, PARTITIONS as usize);
    std::thread::sleep(Duration::from_millis(700));
    scorer.kill9();
    let mut scorer = setup.scorer("s", &extra);
    produce_all(&crc32, &setup.names.input, second);

    let expected = simulate(&rules, &events_file, PARTITIONS);
    let mut actual = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        actual = setup
            .changelog_states()
            .iter()
            .map(|(u, st)| (u.clone(), state_json(u, st)))
            .collect::<BTreeMap<String, serde_json::Value>>();
        if actual == expected {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let diffs: Vec<String> = expected
        .iter()
        .filter(|(u, want)| actual.get(*u) != Some(*want))
        .map(|(u, want)| format!("{u}: simulate {want}\n  scorer   {:?}", actual.get(u)))
        .collect();
    assert!(
        diffs.is_empty() && actual.len() == expected.len(),
        "{} of {} users differ ({} in the changelog), first:\n{}",
        diffs.len(),
        expected.len(),
        actual.len(),
        diffs.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    // One state per user, in its home partition.
    for r in read_all(&setup.broker, &setup.names.changelog) {
        let Some(key) = r.key.as_deref() else {
            continue;
        };
        if key.first() == Some(&0) {
            continue; // checkpoint records
        }
        assert_eq!(
            r.partition,
            leadscore::partitioner::partition_for(key, PARTITIONS),
            "{} in a second partition",
            String::from_utf8_lossy(key)
        );
    }
    let metrics = scorer.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let misrouted = metric_samples(&metrics, "leadscore_events_misrouted_total");
    assert!(
        misrouted
            .iter()
            .any(|(l, v)| l.contains("wrong_partition") && *v > 0.0),
        "{misrouted:?}"
    );
    assert!(scorer.terminate().success(), "SIGTERM exits 0");
}

/// A backlog of old events produced with librdkafka's default partitioner, then read by one
/// scorer following the wall clock: a home partition that reaches its end while the scorer's
/// other partitions still hold records for its users (to be re-routed to it) is not caught
/// up yet, so its clock does not jump to the wall clock between a user's events. Before, it
/// did: the inactivity decays of months fired after a user's first re-routed events and
/// again after the later ones, and most users ended far below `simulate --now`.
#[test]
fn a_home_partition_waits_for_rerouted_records_before_following_the_wall_clock() {
    let setup = ScorerRig::new("misrouted-wall", PARTITIONS);
    // A decay by half per week, so scores depend on every window fired; events within an
    // hour, so no timer is due before the wall clock moves the clocks.
    let seed = std::fs::read_to_string(rules_path("seed-canvas.toml")).expect("seed rules");
    let cut = seed
        .find("[inactivity]")
        .expect("seed canvas has an inactivity rule");
    let rules = setup.dir.path().join("halving.toml");
    std::fs::write(
        &rules,
        format!(
            "{}[inactivity]\nwindow = \"7d\"\nfactor = 0.5\n",
            &seed[..cut]
        ),
    )
    .expect("write rules");
    let cfg = GeneratorConfig {
        span: 3_600_000,
        ..traffic(200, 3_000, 31)
    };
    let (events_file, records) = setup.generated(&cfg);
    let crc32 = crc32_producer(&setup);
    produce_all(&crc32, &setup.names.input, &records);
    let rules_setting = rules.display().to_string();
    let mut scorer = setup.scorer(
        "s",
        &[
            ("SCORER__RULES", &rules_setting),
            ("SCORER__FOLLOW_WALL_CLOCK", "true"),
        ],
    );
    let simulate_now = |now: i64| {
        let now = leadscore::timestamp::format_rfc3339(now);
        simulate_with(&rules, &events_file, PARTITIONS, &["--now", &now])
    };
    let millis = leadscore::timestamp::wall_clock_millis;
    // The scorer's clocks follow the wall clock between two readings of it, so each user's
    // state is simulate's at one of them (a window can end in between).
    let mut diffs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let before = simulate_now(millis());
        let actual: BTreeMap<String, serde_json::Value> = setup
            .changelog_states()
            .iter()
            .map(|(u, st)| (u.clone(), state_json(u, st)))
            .collect();
        let after = simulate_now(millis());
        diffs = before
            .iter()
            .filter(|(u, want)| {
                let got = actual.get(*u);
                got != Some(*want) && got != after.get(*u)
            })
            .map(|(u, want)| format!("{u}: simulate {want}\n  scorer   {:?}", actual.get(u)))
            .collect();
        if diffs.is_empty() && actual.len() == before.len() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        diffs.is_empty(),
        "{} users differ, first:\n{}",
        diffs.len(),
        diffs.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(scorer.terminate().success(), "SIGTERM exits 0");
}

/// A producer with librdkafka's default partitioner (`consistent_random`: CRC32 of the key),
/// not Kafka's murmur2.
fn crc32_producer(
    setup: &ScorerRig,
) -> rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> {
    setup
        .broker
        .client()
        .set("partitioner", "consistent_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// librdkafka's `consistent_random` partition of a key: CRC32 modulo the partition count.
fn crc32_partition(key: &[u8], partitions: i32) -> i32 {
    let mut crc = 0xffff_ffffu32;
    for &b in key {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    ((!crc) % partitions as u32) as i32
}

#[test]
fn score_changes_carry_their_event_time_as_record_timestamp_and_a_content_type() {
    for (format, content_type) in [
        ("json", "application/json"),
        (
            "protobuf",
            "application/x-protobuf; messageType=leadscore.v1.ScoreChange",
        ),
    ] {
        let setup = ScorerRig::new(&format!("stamps-{format}"), 2);
        let (_, events) = setup.produce_generated(&GeneratorConfig {
            users: 20,
            events: 300,
            ..GeneratorConfig::default()
        });
        let mut scorer = setup.scorer("s", &[("SCORER__OUTPUT_FORMAT", format)]);
        setup.wait_caught_up(events.len(), Duration::from_secs(120));
        scorer.stop();
        let records = read_all(&setup.broker, &setup.names.output);
        assert!(records.len() > 20, "{format}: {} changes", records.len());
        let wire = format.parse::<Format>().expect("format");
        let now = leadscore::timestamp::wall_clock_millis();
        for Read {
            timestamp,
            headers,
            payload,
            ..
        } in records
        {
            let change =
                codec::decode_change(wire, payload.as_deref().expect("a value")).expect("decodes");
            assert_eq!(
                headers.get("content-type").map(String::as_str),
                Some(content_type),
                "{format}: {}",
                change.event_id()
            );
            // Generated traffic lies in the past: the record timestamp is the change's time,
            // not the (much later) moment it was produced.
            assert!(change.time < now - 86_400_000, "{}", change.time);
            assert_eq!(
                timestamp,
                Some(change.time),
                "{format}: {}",
                change.event_id()
            );
        }
    }
}

#[test]
fn producer_and_consumer_properties_reach_only_their_clients_without_librdkafka_warnings() {
    let setup = ScorerRig::new("role-props", 1);
    let (_, events) = setup.produce_generated(&GeneratorConfig {
        users: 5,
        events: 50,
        ..GeneratorConfig::default()
    });
    // A producer property and a consumer property in the shared [kafka] (scorer_env sets
    // session.timeout.ms there too), and one in each role's table.
    let mut scorer = setup.scorer(
        "s",
        &[
            ("KAFKA__LINGER_MS", "20"),
            ("KAFKA__FETCH_WAIT_MAX_MS", "100"),
            ("KAFKA__PRODUCER__COMPRESSION_CODEC", "gzip"),
            ("KAFKA__CONSUMER__FETCH_MIN_BYTES", "1"),
        ],
    );
    setup.wait_caught_up(events.len(), Duration::from_secs(60));
    scorer.stop();
    let log = scorer.log_text();
    assert!(log.contains("partition restored"), "{log}");
    // librdkafka's CONFWARN: "Configuration property X is a producer property and will be
    // ignored by this consumer instance" (and the reverse).
    assert!(!log.contains("will be ignored"), "{log}");
    assert!(!log.contains("CONFWARN"), "{log}");
}

/// The last record of each key, as a compacted copy of the topic would keep it.
fn last_by_key(records: &[Read]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    records
        .iter()
        .filter_map(|r| Some((r.key.clone()?, r.payload.clone())))
        .collect()
}

fn event_json(user: &str, time: &str, rest: &str) -> Vec<u8> {
    format!(r#"{{"user_id":"{user}","time":"2026-01-05T{time}:00Z",{rest}}}"#).into_bytes()
}

/// Issue 12.5: `user_deleted` and an input tombstone each delete the user: a tombstone in the
/// changelog and one on the score changes (so a compacted copy forgets the user), later events
/// start from nothing, and all of it holds through a `kill -9` and restart of the scorer,
/// whether or not the deletions were checkpointed before the kill.
#[test]
fn deleted_users_leave_tombstones_and_start_from_nothing_through_a_restart() {
    let setup = ScorerRig::new("forget", 1);
    let mut scorer = setup.scorer("s", &[]);
    let p = producer(&setup.broker);
    let email = r#""type":"email_added","value":"x@y.io""#;
    let demo = r#""type":"custom_event","name":"demo_requested""#;
    let first: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("u1", Some(event_json("u1", "10:00", email))),
        ("u1", Some(event_json("u1", "10:01", demo))),
        ("u2", Some(event_json("u2", "10:00", email))),
        ("u2", Some(event_json("u2", "10:01", demo))),
        ("u3", Some(event_json("u3", "10:00", email))),
        (
            "u1",
            Some(event_json("u1", "10:05", r#""type":"user_deleted""#)),
        ),
        ("u2", None),
    ];
    for (i, (k, v)) in first.iter().enumerate() {
        match v {
            Some(v) => produce(&p, &setup.names.input, Some(k.as_bytes()), v),
            None => produce_tombstone(&p, &setup.names.input, Some(k.as_bytes())),
        }
        if i == 4 {
            // The users checkpointed before they are deleted, so that the deletions take
            // logged states out of the changelog and its digest.
            p.flush(Duration::from_secs(30)).expect("flush");
            setup.wait_caught_up(i + 1, Duration::from_secs(60));
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    setup.wait_caught_up(first.len(), Duration::from_secs(60));
    let (_, metrics) = scorer.get("/metrics").expect("metrics");
    assert_eq!(
        metric_sum(&metrics, "leadscore_users_deleted_total"),
        2.0,
        "{metrics}"
    );
    let states = setup.changelog_states();
    assert!(!states.contains_key("u1") && !states.contains_key("u2"));
    assert!(states["u3"].enrolled);
    let changelog = last_by_key(&read_all(&setup.broker, &setup.names.changelog));
    assert_eq!(
        changelog.get(&b"u1"[..]),
        Some(&None),
        "a changelog tombstone"
    );
    assert_eq!(
        changelog.get(&b"u2"[..]),
        Some(&None),
        "a changelog tombstone"
    );
    let output = read_all(&setup.broker, &setup.names.output);
    let last = last_by_key(&output);
    assert_eq!(last.get(&b"u1"[..]), Some(&None), "an output tombstone");
    assert_eq!(last.get(&b"u2"[..]), Some(&None), "an output tombstone");

    // Then the user comes back, across a kill -9 taken right after more input arrives (so
    // some of it may be replayed from the last checkpoint) and a restart.
    let second: Vec<(&str, Vec<u8>)> = vec![
        ("u1", event_json("u1", "11:00", r#""type":"session_start""#)),
        ("u1", event_json("u1", "11:01", email)),
        ("u1", event_json("u1", "11:02", demo)),
        ("u2", event_json("u2", "11:00", r#""type":"session_start""#)),
    ];
    produce_all(&p, &setup.names.input, &second);
    scorer.kill9();
    let scorer = setup.scorer("s", &[]);
    setup.wait_caught_up(first.len() + second.len(), Duration::from_secs(60));
    // The warm restart found its local copy's digest and key count right: the digest of the
    // checkpoint, kept per changed key, still matched with the deleted users taken out. (Other
    // reasons are about where the kill landed, not deletions: on tansu, whose high watermark
    // can lag a flushed checkpoint, the local copy may look `ahead` and is restored from the
    // changelog instead, which is safe.)
    let (_, metrics) = scorer.get("/metrics").expect("metrics");
    for reason in ["digest", "key_count"] {
        let failures = metric_with(
            &metrics,
            "leadscore_store_verify_failures_total",
            &format!("reason=\"{reason}\""),
        );
        assert_eq!(failures, Some(0.0), "{reason}: {metrics}");
    }
    let states = setup.changelog_states();
    // 5, not 10: the demo request before the deletion is gone with the state.
    let u1 = &states["u1"];
    assert_eq!((u1.score, u1.enrolled), (5, true), "{u1:?}");
    let u2 = &states["u2"];
    assert_eq!(
        (u2.score, u2.enrolled, u2.attributes().len()),
        (0, false, 0),
        "{u2:?}"
    );
    let last = last_by_key(&read_all(&setup.broker, &setup.names.output));
    let u1_last = last[&b"u1"[..]].as_deref().expect("u1 scored again");
    let change = codec::decode_change(Format::Json, u1_last).expect("a score change");
    assert_eq!((change.previous_score, change.score), (0, 5));
    assert_eq!(last.get(&b"u2"[..]), Some(&None), "u2 scored nothing since");
}

/// Issue 12.5: a tombstone produced to another partition than its user's home (a CRC32
/// partitioner, or an explicit partition) is re-routed home like any record and deletes there.
#[test]
fn a_tombstone_off_its_home_partition_is_rerouted_and_deletes_the_user() {
    let setup = ScorerRig::new("tomb-reroute", PARTITIONS);
    let _scorer = setup.scorer("s", &[]);
    let p = producer(&setup.broker);
    let email = event_json("u1", "10:00", r#""type":"email_added","value":"x@y.io""#);
    produce_all(&p, &setup.names.input, &[("u1", email)]);
    setup.wait_caught_up(1, Duration::from_secs(60));
    assert!(setup.changelog_states().contains_key("u1"));
    let home = leadscore::partitioner::partition_for(b"u1", PARTITIONS);
    let elsewhere = (home + 1) % PARTITIONS;
    let rec: rdkafka::producer::BaseRecord<'_, [u8], [u8]> =
        rdkafka::producer::BaseRecord::to(&setup.names.input)
            .key(&b"u1"[..])
            .partition(elsewhere);
    p.send(rec)
        .unwrap_or_else(|(e, _)| panic!("produce a tombstone: {e}"));
    p.flush(Duration::from_secs(30)).expect("flush");
    // The email, the tombstone where it was produced, and its copy on the home partition.
    setup.wait_caught_up(3, Duration::from_secs(60));
    assert!(!setup.changelog_states().contains_key("u1"));
    let input = read_all(&setup.broker, &setup.names.input);
    let copy = input
        .iter()
        .find(|r| r.partition == home && r.payload.is_none())
        .expect("the tombstone's copy on the home partition");
    assert_eq!(copy.key.as_deref(), Some(&b"u1"[..]));
    assert!(copy.headers.contains_key("leadscore-rerouted-from"));
    let last = last_by_key(&read_all(&setup.broker, &setup.names.output));
    assert_eq!(last.get(&b"u1"[..]), Some(&None), "an output tombstone");
}

/// The re-routing header is the scorer's own: a copy of it that came with a record from
/// elsewhere (a mirror or replay that copies headers, or a producer setting it) must not make
/// an event a duplicate of another. A header on a record at its home partition that names that
/// same partition is not a re-routed copy's, and a misrouted record is re-routed under its own
/// position, whatever header it carries: so none of these three events without ids is lost.
#[test]
fn a_copied_rerouting_header_makes_no_event_a_duplicate() {
    let setup = ScorerRig::new("forged-header", PARTITIONS);
    let _scorer = setup.scorer("s", &[]);
    let p = producer(&setup.broker);
    let user = "fh1";
    let home = leadscore::partitioner::partition_for(user.as_bytes(), PARTITIONS);
    let elsewhere = (home + 1) % PARTITIONS;
    let external =
        |rest: &str| event_json(user, "10:00", &format!(r#""type":"external_score",{rest}"#));
    let first = external(r#""score":10"#);
    produce(&p, &setup.names.input, Some(user.as_bytes()), &first);
    p.flush(Duration::from_secs(30)).expect("flush");
    setup.wait_caught_up(1, Duration::from_secs(60));
    // The position of the first event, which is its identity: what the copied headers name.
    let named = format!("{}/{home}/0", setup.names.input);
    let send = |partition: i32, payload: &[u8]| {
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "leadscore-rerouted-from",
            value: Some(named.as_bytes()),
        });
        let rec: rdkafka::producer::BaseRecord<'_, [u8], [u8]> =
            rdkafka::producer::BaseRecord::to(&setup.names.input)
                .key(user.as_bytes())
                .payload(payload)
                .partition(partition)
                .headers(headers);
        p.send(rec)
            .unwrap_or_else(|(e, _)| panic!("produce with a header: {e}"));
    };
    let misrouted = external(r#""increment":5"#);
    send(elsewhere, &misrouted);
    send(home, &external(r#""increment":100"#));
    p.flush(Duration::from_secs(30)).expect("flush");
    // The first event, the two sent with the header, and the misrouted one's copy.
    setup.wait_caught_up(4, Duration::from_secs(60));
    let states = setup.changelog_states();
    assert_eq!(states[user].score, 115, "{:?}", states[user]);
    let input = read_all(&setup.broker, &setup.names.input);
    let copy = input
        .iter()
        .find(|r| r.partition == home && r.payload.as_deref() == Some(&misrouted[..]))
        .expect("the misrouted event's copy on the home partition");
    assert_eq!(
        copy.headers
            .get("leadscore-rerouted-from")
            .map(String::as_str),
        Some(format!("{}/{elsewhere}/0", setup.names.input).as_str()),
        "re-routed under its own position"
    );
}

/// One user's attributes are bounded (64 KiB encoded): an event that would take them past it is
/// a dead letter naming the attribute and the limit, and nothing of it is applied. Without the
/// bound (found by an outside check, 2026-12-04), a producer setting thousands of attributes
/// on one user grew its changelog record past Kafka's default 1 MB, and the scorer stopped at
/// that checkpoint, and again at every restart. A removal always applies, and makes room.
#[test]
fn attributes_past_the_per_user_bound_are_dead_lettered_not_applied() {
    let setup = ScorerRig::new("attr-bound", 1);
    let _scorer = setup.scorer("s", &[]);
    let p = producer(&setup.broker);
    let value = "x".repeat(4000);
    let mut sent = 0;
    let mut send = |rest: String| {
        produce(
            &p,
            &setup.names.input,
            Some(b"u1"),
            &event_json("u1", "10:00", &rest),
        );
        sent += 1;
    };
    send(r#""type":"email_added","value":"u1@example.com""#.into());
    // About 4 KB each: sixteen fit, the next four do not.
    for i in 0..20 {
        send(format!(
            r#""type":"attribute_changed","name":"a{i:02}","value":"{value}""#
        ));
    }
    send(r#""type":"attribute_changed","name":"a00","value":null"#.into());
    send(format!(
        r#""type":"attribute_changed","name":"a20","value":"{value}""#
    ));
    p.flush(Duration::from_secs(30)).expect("flush");
    setup.wait_caught_up(sent, Duration::from_secs(60));
    let dlq = read_all(&setup.broker, &setup.names.dlq);
    let refused: Vec<String> = dlq
        .iter()
        .map(|r| {
            assert_eq!(r.headers["leadscore.error.reason"], "invalid_value");
            let message = &r.headers["leadscore.error.message"];
            assert!(message.contains("65536 bytes per user"), "{message}");
            message.split('"').nth(3).unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(refused, ["a16", "a17", "a18", "a19"]);
    let states = setup.changelog_states();
    let names: Vec<String> = states["u1"]
        .attributes()
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    let mut expected: Vec<String> = (1..16).map(|i| format!("a{i:02}")).collect();
    expected.extend(["a20".to_string(), "email".to_string()]);
    assert_eq!(names, expected);
}

/// Issue 12.5: a keyless tombstone names no user: a dead letter, and nobody is deleted.
#[test]
fn a_keyless_tombstone_is_dead_lettered() {
    let setup = ScorerRig::new("keyless-tomb", 1);
    let _scorer = setup.scorer("s", &[]);
    let p = producer(&setup.broker);
    produce(
        &p,
        &setup.names.input,
        Some(b"u1"),
        &event_json("u1", "10:00", r#""type":"email_added","value":"x@y.io""#),
    );
    produce_tombstone(&p, &setup.names.input, None);
    p.flush(Duration::from_secs(30)).expect("flush");
    let mut dlq = Vec::new();
    wait_until(Duration::from_secs(60), "the dead letter", || {
        dlq = read_all(&setup.broker, &setup.names.dlq);
        !dlq.is_empty()
    });
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].headers["leadscore.error.reason"], "missing_field");
    assert!(dlq[0].headers["leadscore.error.message"].contains("tombstone"));
    // SPEC 2: the dead letter keeps the original key: none, not an empty one (which a replay
    // to the input topic after a fix would turn into a `key_mismatch`).
    assert_eq!(dlq[0].key, None);
    setup.wait_caught_up(2, Duration::from_secs(60));
    assert!(setup.changelog_states()["u1"].enrolled);
}

/// Issue 12.2: an event type the scorer does not know is skipped and counted, not
/// dead-lettered, and its time counts in the partition clock (here: an inactivity decay falls
/// due by it); with `scorer.unknown_types = "dead_letter"` it is a dead letter and moves nothing.
#[test]
fn an_unknown_type_is_skipped_and_counted_or_dead_lettered_when_configured() {
    for mode in ["skip", "dead_letter"] {
        let setup = ScorerRig::new(&format!("unknown-{}", mode.replace('_', "-")), 1);
        let scorer = setup.scorer("s", &[("SCORER__UNKNOWN_TYPES", mode)]);
        let p = producer(&setup.broker);
        let records = [
            (
                "u1",
                event_json("u1", "10:00", r#""type":"email_added","value":"x@y.io""#),
            ),
            (
                "u1",
                event_json(
                    "u1",
                    "10:01",
                    r#""type":"custom_event","name":"demo_requested""#,
                ),
            ),
            // Eight days later: the seven-day inactivity timer of u1 is due by then.
            (
                "u9",
                br#"{"user_id":"u9","time":"2026-01-13T10:00:00Z","type":"page_view","url":"/"}"#
                    .to_vec(),
            ),
        ];
        produce_all(&p, &setup.names.input, &records);
        setup.wait_caught_up(records.len(), Duration::from_secs(60));
        let (_, metrics) = scorer.get("/metrics").expect("metrics");
        let skipped = metric_with(
            &metrics,
            "leadscore_events_skipped_total",
            "reason=\"unknown_type\"",
        );
        let dead = metric_with(
            &metrics,
            "leadscore_events_dead_lettered_total",
            "reason=\"unknown_type\"",
        );
        let dlq = read_all(&setup.broker, &setup.names.dlq);
        let states = setup.changelog_states();
        assert!(!states.contains_key("u9"), "{mode}");
        if mode == "skip" {
            assert_eq!((skipped, dead), (Some(1.0), Some(0.0)), "{metrics}");
            assert!(dlq.is_empty());
            assert_eq!(states["u1"].score, 4, "decayed once: the clock moved");
        } else {
            assert_eq!((skipped, dead), (Some(0.0), Some(1.0)), "{metrics}");
            assert_eq!(dlq.len(), 1);
            assert_eq!(dlq[0].headers["leadscore.error.reason"], "unknown_type");
            assert!(dlq[0].headers["leadscore.error.message"].contains("page_view"));
            assert_eq!(states["u1"].score, 5, "no clock moved");
        }
    }
}
