//! The scorer against a real broker process: the embedded mock (`leadscore dev-broker`) by
//! default, `tansu` with `LEADSCORE_TEST_BROKER=tansu` (tests/run runs both).

#[path = "../common/mod.rs"]
mod common;

use common::*;
use leadscore::codec::{self, Format};
use leadscore::generator::{self, GeneratorConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod kill9;
mod records;

use kill9::wait_owns_all;

const PARTITIONS: i32 = 3;

/// The scorer's final state, user by user, equals `leadscore simulate --partitions N`.
fn assert_matches_simulation(setup: &ScorerRig, events: &Path, partitions: i32) {
    let expected = simulate(&rules_path("seed-canvas.toml"), events, partitions);
    let actual: BTreeMap<String, serde_json::Value> = setup
        .changelog_states()
        .iter()
        .map(|(u, st)| (u.clone(), state_json(u, st)))
        .collect();
    assert_eq!(actual.len(), expected.len(), "number of users");
    let mut diffs = Vec::new();
    for (user, want) in &expected {
        match actual.get(user) {
            Some(got) if got == want => {}
            got => diffs.push(format!("{user}: simulate {want}\n  scorer   {got:?}")),
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} users differ, first:\n{}",
        diffs.len(),
        expected.len(),
        diffs.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    // And the last published change of every user carries its final score.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for r in read_all(&setup.broker, &setup.names.output) {
        let c = codec::decode_change(Format::Json, r.payload.as_deref().unwrap_or_default())
            .expect("score changes decode");
        last.insert(c.user_id.to_string(), c.score);
    }
    for (user, want) in &expected {
        let score = want["score"].as_i64().unwrap_or_default();
        assert_eq!(
            last.get(user).copied().unwrap_or(0),
            score,
            "last published score of {user}"
        );
    }
}

#[test]
fn kcat_produces_json_events_and_reads_the_score_changes() {
    let setup = ScorerRig::new("kcat", 1);
    if setup.broker.kind == BrokerKind::Tansu {
        // Debian's kcat (librdkafka 2.0.2) fails tansu's ApiVersion handshake (docs/brokers.md);
        // the other tests produce to tansu with rdkafka.
        eprintln!("skipped on tansu: kcat cannot talk to it");
        return;
    }
    let mut scorer = setup.scorer("s", &[]);
    let lines = [
        r#"{"user_id":"ann","time":"2026-01-05T10:00:00Z","type":"email_added","value":"ann@example.com"}"#,
        r#"{"user_id":"ann","time":"2026-01-05T10:01:00Z","type":"custom_event","name":"demo_requested"}"#,
        r#"{"user_id":"ann","time":"2026-01-05T10:02:00Z","type":"attribute_changed","name":"lead_status","value":"Working"}"#,
        r#"{"user_id":"ben","time":"2026-01-05T10:03:00Z","type":"session_start"}"#,
    ];
    let input: String = lines
        .iter()
        .map(|l| format!("{}|{l}\n", &l[12..15]))
        .collect();
    let file = setup.dir.path().join("kcat-in.txt");
    std::fs::write(&file, input).expect("write kcat input");
    let st = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &setup.broker.bootstrap,
            "-t",
            &setup.names.input,
            "-K",
            "|",
            "-l",
        ])
        .arg(&file)
        .status()
        .expect("kcat is installed by tests/setup");
    assert!(st.success(), "kcat produce");
    let out_topic = setup.names.output.clone();
    let mut lines_out = Vec::new();
    wait_until(Duration::from_secs(60), "two score changes", || {
        let out = Command::new("kcat")
            .args([
                "-C",
                "-b",
                &setup.broker.bootstrap,
                "-t",
                &out_topic,
                "-e",
                "-q",
                "-f",
                "%k\t%s\n",
            ])
            .output();
        lines_out = out
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        lines_out.len() >= 2
    });
    let (key, json) = lines_out[0].split_once('\t').expect("key and value");
    assert_eq!(key, "ann");
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON change");
    assert_eq!(v["score"], 5);
    assert_eq!(v["reason"]["kind"], "rule");
    assert_eq!(v["reason"]["group"], "high intent");
    let (_, json) = lines_out[1].split_once('\t').expect("key and value");
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON change");
    assert_eq!(v["reason"]["kind"], "attribute");
    assert_eq!(v["attributes"]["lead_status"], "Working");
    assert_eq!(lines_out.len(), 2, "ben is not enrolled: no change");
    assert!(scorer.terminate().success(), "SIGTERM exits 0");
}

/// An input record (key, value) and the dead-letter reason it must get, if bad.
type Input<'a> = (Option<&'a [u8]>, Vec<u8>, Option<&'a str>);

#[test]
fn bad_input_lands_in_the_dlq_with_its_reason_and_nothing_else_is_lost() {
    let setup = ScorerRig::new("dlq", 1);
    let _scorer = setup.scorer("s", &[]);
    let p = producer(&setup.broker);
    let good = |user: &str, t: &str, extra: &str| {
        format!(r#"{{"user_id":"{user}","time":"2026-01-05T10:{t}:00Z",{extra}}}"#).into_bytes()
    };
    let big = vec![b'x'; 1 << 20];
    let random: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let records: Vec<Input<'_>> = vec![
        (
            Some(b"u1"),
            good("u1", "00", r#""type":"email_added","value":"u1@x.io""#),
            None,
        ),
        (Some(b"u1"), random.clone(), Some("malformed")),
        (
            Some(b"u1"),
            b"{\"user_id\": \"u1\", \"time\": ".to_vec(),
            Some("malformed"),
        ),
        (
            Some(b"u1"),
            br#"{"time":"2026-01-05T10:00:00Z","type":"session_start"}"#.to_vec(),
            Some("missing_field"),
        ),
        (
            Some(b"u2"),
            good("u1", "02", r#""type":"session_start""#),
            Some("key_mismatch"),
        ),
        (Some(b"u1"), big.clone(), Some("oversized")),
        (
            Some(b"u1"),
            good(
                "u1",
                "03",
                r#""type":"custom_event","name":"demo_requested""#,
            ),
            None,
        ),
    ];
    for (k, v, _) in &records {
        produce(&p, &setup.names.input, *k, v);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let expected_bad: Vec<&str> = records.iter().filter_map(|r| r.2).collect();
    let mut dlq = Vec::new();
    wait_until(Duration::from_secs(60), "the dead letters", || {
        dlq = read_all(&setup.broker, &setup.names.dlq);
        dlq.len() >= expected_bad.len()
    });
    let reasons: Vec<&str> = dlq
        .iter()
        .map(|r| r.headers["leadscore.error.reason"].as_str())
        .collect();
    assert_eq!(reasons, expected_bad);
    // Original key and bytes, and where they came from.
    let bad: Vec<&Input<'_>> = records.iter().filter(|r| r.2.is_some()).collect();
    for (d, (k, v, _)) in dlq.iter().zip(bad) {
        assert_eq!(d.key.as_deref(), *k);
        assert_eq!(d.payload.as_deref(), Some(v.as_slice()));
        assert_eq!(d.headers["leadscore.source.topic"], setup.names.input);
        assert_eq!(d.headers["leadscore.source.partition"], "0");
        assert!(d.headers["leadscore.source.offset"].parse::<i64>().is_ok());
        assert!(!d.headers["leadscore.error.message"].is_empty());
    }
    assert!(dlq[3].headers["leadscore.error.message"].contains("user_id"));
    // The good events around them were scored.
    setup.wait_caught_up(records.len(), Duration::from_secs(60));
    let states = setup.changelog_states();
    assert_eq!(states["u1"].score, 5);
    assert!(states["u1"].enrolled);
}

#[test]
fn a_partition_count_mismatch_stops_the_start_with_a_clear_error() {
    let setup = ScorerRig::with_changelog("mismatch", 2, 3);
    let mut scorer = setup.scorer("s", &[]);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = scorer.exited() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the scorer did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = scorer.log_text();
    assert!(
        log.contains("co-partitioned") && log.contains(&setup.names.changelog),
        "error names the problem and the topic:\n{log}"
    );
}

#[test]
fn metrics_pass_promtool_and_move_as_events_flow() {
    let setup = ScorerRig::new("metrics", 2);
    let mut scorer = setup.scorer(
        "s",
        &[
            ("KAFKA__STATISTICS_INTERVAL_MS", "500"),
            ("LOG__FORMAT", "json"),
        ],
    );
    wait_until(Duration::from_secs(60), "/readyz to say ready", || {
        scorer.get("/readyz").is_some_and(|(code, _)| code == 200)
    });
    let (code, body) = scorer.get("/healthz").expect("healthz answers");
    assert_eq!(code, 200);
    assert!(body.contains("ok"));
    let p = producer(&setup.broker);
    let cfg = GeneratorConfig {
        users: 50,
        events: 500,
        ..GeneratorConfig::default()
    };
    let (_, records) = setup.generated(&cfg);
    produce_all(&p, &setup.names.input, &records);
    produce_all(&p, &setup.names.input, &[("x", "not json")]);
    setup.wait_caught_up(records.len() + 1, Duration::from_secs(60));
    let text = scrape_with_lag(&scorer, setup.dir.path(), "scorer", 2);

    let sum = |name: &str| metric_sum(&text, name);
    let consumed = sum("leadscore_events_consumed_total");
    assert_eq!(consumed, (records.len() + 1) as f64);
    // Every good event was either applied or skipped with a reason; the bad one dead-lettered.
    let applied = sum("leadscore_events_applied_total");
    let skipped = sum("leadscore_events_skipped_total");
    assert!(applied > 0.0);
    assert_eq!(
        applied + skipped,
        records.len() as f64,
        "applied {applied} skipped {skipped}"
    );
    assert_eq!(
        metric_with(
            &text,
            "leadscore_events_dead_lettered_total",
            "reason=\"malformed\""
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric_with(&text, "leadscore_score_changes_total", "kind=\"rule\"").unwrap_or(0.0) > 0.0
    );
    // Latency histograms: one observation per published change and per checkpointed batch.
    assert_eq!(
        sum("leadscore_event_to_output_seconds_count"),
        sum("leadscore_score_changes_total")
    );
    assert!(sum("leadscore_poll_to_output_seconds_count") > 0.0);
    assert!(sum("leadscore_checkpoint_duration_seconds_count") > 0.0);
    assert_eq!(
        sum("leadscore_checkpoint_duration_seconds_count"),
        sum("leadscore_checkpoints_total")
    );
    // Both partitions restored (from nothing) once.
    assert_eq!(sum("leadscore_restore_duration_seconds_count"), 2.0);
    assert_eq!(sum("leadscore_restoring_partitions"), 0.0);
    assert!(metric_samples(&text, "leadscore_restore_remaining_records").is_empty());
    // State: every user the changelog holds is in the store, and the store is on disk.
    let users = setup.changelog_states().len();
    assert!(users > 0);
    assert_eq!(sum("leadscore_store_keys"), users as f64);
    assert!(sum("leadscore_store_bytes") > 0.0);
    assert_eq!(metric_samples(&text, "leadscore_pending_timers").len(), 1);
    // Per-partition gauges: lag (caught up, so none left) and the partition clocks, which
    // follow event time (2024 onwards in generated events), not the wall clock.
    let lag = metric_samples(&text, "leadscore_consumer_lag_messages");
    let labels: Vec<&str> = lag.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["partition=\"0\"", "partition=\"1\""]);
    assert!(lag.iter().all(|(_, v)| *v >= 0.0));
    let clocks = metric_samples(&text, "leadscore_partition_clock_seconds");
    assert_eq!(clocks.len(), 2, "{clocks:?}");
    assert!(clocks.iter().all(|(_, v)| *v > 1.7e9), "{clocks:?}");
    assert_eq!(sum("leadscore_assigned_partitions"), 2.0);

    // Logs: JSON lines (log.format = json), one per lifecycle event, no payloads at info.
    scorer.stop();
    let log = scorer.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_string();
    let restored: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| message(l) == "partition restored")
        .collect();
    assert_eq!(restored.len(), 2, "{log}");
    for l in &restored {
        for field in [
            "partition",
            "users",
            "changelog_records",
            "duration_ms",
            "warm",
        ] {
            assert!(!l["fields"][field].is_null(), "{field} in {l}");
        }
    }
    for m in [
        "partitions assigned",
        "partitions revoked",
        "scorer stopped cleanly",
    ] {
        assert!(lines.iter().any(|l| message(l) == m), "{m}: {log}");
    }
    let (user, _) = &records[0];
    for l in lines.iter().filter(|l| l["level"] == "INFO") {
        assert!(
            !l.to_string().contains(user.as_str()),
            "a user id at info: {l}"
        );
    }
}

/// A scorer that restores answers 503 on /readyz, with the partitions it is restoring, and its
/// restore metrics move; once restored it answers 200. The broker answers slowly (a 200 ms round
/// trip on the mock) so that a restore takes long enough to watch. Mock only: tansu has no way
/// to slow it down, and its restores are covered by the kill -9 test.
#[test]
fn readyz_is_not_ready_while_restoring_and_ready_after() {
    if BrokerKind::from_env() == BrokerKind::Tansu {
        eprintln!("skipped on tansu: the round-trip delay is a dev-broker fault");
        return;
    }
    let names = Names::new("readyz");
    let broker = Broker::mock_with(&names.scorer_topics(2, 2), &["--round-trip-ms", "200"]);
    let setup = ScorerRig {
        broker,
        names,
        dir: TempDir::new("readyz"),
    };
    // A first scorer fills the changelog.
    let mut first = setup.scorer("first", &[]);
    let cfg = GeneratorConfig {
        users: 200,
        events: 2_000,
        ..GeneratorConfig::default()
    };
    let (_, records) = setup.produce_generated(&cfg);
    setup.wait_caught_up(records.len(), Duration::from_secs(120));
    first.stop();
    let users = setup.changelog_states().len();

    // A second one with an empty state directory restores everything from the changelog.
    let second = setup.scorer("second", &[]);
    let mut answers: Vec<(u16, serde_json::Value)> = Vec::new();
    let mut watched_restore_metrics = false;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never ready; answers: {answers:?}"
        );
        let Some((code, body)) = second.get("/readyz") else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&body).expect("/readyz answers JSON");
        let restoring = v["restoring"].as_array().cloned().unwrap_or_default();
        if !restoring.is_empty() {
            // Metrics between two answers that show the same partitions restoring were taken
            // during their restores (up to four partitions restore at once).
            let metrics = second.get("/metrics").map(|(_, t)| t).unwrap_or_default();
            let still = second.get("/readyz").is_some_and(|(_, b)| {
                let w: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
                w["restoring"].as_array() == Some(&restoring)
            });
            if still {
                // A partition counts in the gauge once its restore has started.
                let gauge = metric_sum(&metrics, "leadscore_restoring_partitions");
                assert!(
                    (0.0..=restoring.len() as f64).contains(&gauge),
                    "{gauge} restoring in the gauge, {restoring:?} in /readyz"
                );
                // Remaining records are known once a restore has read the watermarks, and
                // only for partitions still restoring.
                let remaining = metric_samples(&metrics, "leadscore_restore_remaining_records");
                for (l, _) in &remaining {
                    assert!(
                        restoring.iter().any(|p| *l == format!("partition=\"{p}\"")),
                        "{l} is not restoring ({restoring:?}): {metrics}"
                    );
                }
                watched_restore_metrics |= !remaining.is_empty() && gauge >= 1.0;
            }
        }
        let done = code == 200;
        answers.push((code, v));
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Not ready while any partition was restoring, and it was seen restoring.
    for (code, v) in &answers {
        let restoring = v["restoring"].as_array().map_or(0, Vec::len);
        if restoring > 0 {
            assert_eq!(*code, 503, "{v}");
            assert_eq!(v["ready"], false, "{v}");
            assert_eq!(v["joined"], true, "{v}");
        }
    }
    assert!(
        answers
            .iter()
            .any(|(_, v)| v["restoring"].as_array().map_or(0, Vec::len) > 0),
        "no answer during the restore: {answers:?}"
    );
    assert!(
        watched_restore_metrics,
        "restore metrics never seen mid-restore"
    );
    // Ready after: both partitions assigned, none restoring.
    let (_, last) = answers.last().expect("answers");
    assert_eq!(last["assigned"], serde_json::json!([0, 1]));
    assert_eq!(last["restoring"], serde_json::json!([]));
    // And it restored the real thing: every user, from the changelog.
    let (_, text) = second.get("/metrics").expect("metrics");
    assert_eq!(metric_sum(&text, "leadscore_store_keys"), users as f64);
    assert!(metric_sum(&text, "leadscore_restore_records_total") >= users as f64);
    assert_eq!(
        metric_sum(&text, "leadscore_restore_duration_seconds_count"),
        2.0
    );
    assert_eq!(metric_sum(&text, "leadscore_restoring_partitions"), 0.0);
    assert!(metric_samples(&text, "leadscore_restore_remaining_records").is_empty());
    let log = second.log_text();
    assert!(log.contains("partition restored"), "{log}");
}

/// Found by an outside check (2026-12-07): with the broker paused past the session timeout,
/// the scorer's partitions were lost and `/readyz` said ready with none assigned until the
/// group gave them back (in two of that check's four runs, never). Out of the group, it is
/// not ready; back in, it is again.
#[test]
fn readyz_is_not_ready_while_out_of_the_group_after_its_partitions_were_lost() {
    let setup = ScorerRig::new("readyz-lost", 2);
    let scorer = setup.scorer("only", &[]);
    let readyz = || {
        scorer.get("/readyz").map(|(code, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).expect("/readyz answers JSON");
            (code, v)
        })
    };
    wait_until(Duration::from_secs(60), "the scorer ready", || {
        readyz().is_some_and(|(code, v)| code == 200 && v["assigned"] == serde_json::json!([0, 1]))
    });
    // The broker paused past the rig's 6 s session timeout: the group takes the partitions.
    setup.broker.signal("-STOP");
    std::thread::sleep(Duration::from_secs(10));
    setup.broker.signal("-CONT");
    // From the loss to the next assignment, every answer says not ready and not joined. On
    // tansu the group gave the partitions back only after minutes, if at all (a JoinGroup it
    // left unanswered: docs/brokers.md, "Consumer groups"), so there the test ends once the
    // instance was seen out of the group.
    let tansu = BrokerKind::from_env() == BrokerKind::Tansu;
    let mut out_of_group = Vec::new();
    wait_until(
        Duration::from_secs(120),
        "the partitions back after the loss",
        || {
            if tansu && !out_of_group.is_empty() {
                return true;
            }
            let lost = scorer.log_text().contains("partitions lost");
            let Some((code, v)) = readyz() else {
                return false;
            };
            if lost && v["assigned"] == serde_json::json!([]) {
                assert_eq!(code, 503, "ready with no partition after losing them: {v}");
                assert_eq!(v["joined"], false, "{v}");
                out_of_group.push(v);
                return false;
            }
            !out_of_group.is_empty() && code == 200 && v["assigned"] == serde_json::json!([0, 1])
        },
    );
    assert!(!out_of_group.is_empty(), "never seen out of the group");
}

/// Against a broker that only speaks TLS (the dev-broker terminating TLS with a self-signed
/// certificate): a plaintext client gets nowhere, and the scorer, given `security.protocol=ssl`
/// and the CA as `[kafka]` properties, scores everything. Mock only: the TLS listener is the
/// dev-broker's.
#[test]
fn the_scorer_speaks_tls_to_a_tls_only_broker() {
    if BrokerKind::from_env() == BrokerKind::Tansu {
        eprintln!("skipped on tansu: the TLS listener is the dev-broker's");
        return;
    }
    let names = Names::new("tls");
    let dir = TempDir::new("tls");
    let cert = dir.path().join("broker.pem");
    let key = dir.path().join("broker.key");
    // openssl is installed by tests/setup.
    output_of(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost", "-addext"])
            .arg("subjectAltName=IP:127.0.0.1,DNS:localhost")
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let mut broker = Broker::mock_with(
        &names.scorer_topics(2, 2),
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8 path"),
            "--tls-key",
            key.to_str().expect("utf-8 path"),
        ],
    );
    // Plaintext: no metadata.
    let plain: BaseConsumer = broker.client().create().expect("plaintext client");
    assert!(
        plain
            .fetch_metadata(Some(&names.input), Duration::from_secs(3))
            .is_err(),
        "a plaintext client must not reach a TLS-only broker"
    );
    let ca = cert.display().to_string();
    broker.client_properties = vec![
        ("security.protocol".into(), "ssl".into()),
        ("ssl.ca.location".into(), ca.clone()),
    ];
    let setup = ScorerRig { broker, names, dir };
    let scorer = setup.scorer(
        "s",
        &[
            ("KAFKA__SECURITY_PROTOCOL", "ssl"),
            ("KAFKA__SSL_CA_LOCATION", &ca),
        ],
    );
    let cfg = traffic(100, 1_000, 11);
    let (events_file, records) = setup.produce_generated(&cfg);
    setup.wait_caught_up(records.len(), Duration::from_secs(120));
    let mut scorer = scorer;
    assert!(scorer.terminate().success(), "{}", scorer.log_text());
    assert_matches_simulation(&setup, &events_file, 2);
}

/// Issue 9.1: one valid record dated 2099 must not move its partition's clock: it goes to the
/// DLQ as `invalid_value` naming the time, and the leads around it keep their scores.
#[test]
fn a_far_future_record_is_dead_lettered_and_moves_no_clock() {
    let setup = ScorerRig::new("future", 1);
    let _scorer = setup.scorer("s", &[]);
    let p = producer(&setup.broker);
    let ev = |user: &str, time: &str, rest: &str| {
        format!(r#"{{"user_id":"{user}","time":"{time}",{rest}}}"#).into_bytes()
    };
    let records: Vec<(&str, Vec<u8>)> = vec![
        (
            "u1",
            ev(
                "u1",
                "2026-01-05T10:00:00Z",
                r#""type":"email_added","value":"u1@x.io""#,
            ),
        ),
        (
            "u1",
            ev(
                "u1",
                "2026-01-05T10:01:00Z",
                r#""type":"custom_event","name":"demo_requested""#,
            ),
        ),
        // Never enrolled, any user: still must not move the clock.
        (
            "zz",
            ev("zz", "2099-01-01T00:00:00Z", r#""type":"session_start""#),
        ),
        (
            "u1",
            ev("u1", "2026-01-05T10:05:00Z", r#""type":"session_start""#),
        ),
    ];
    produce_all(&p, &setup.names.input, &records);
    let mut dlq = Vec::new();
    wait_until(Duration::from_secs(60), "the dead letter", || {
        dlq = read_all(&setup.broker, &setup.names.dlq);
        !dlq.is_empty()
    });
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].headers["leadscore.error.reason"], "invalid_value");
    let message = &dlq[0].headers["leadscore.error.message"];
    assert!(message.contains("2099-01-01T00:00:00"), "{message}");
    assert_eq!(dlq[0].payload.as_deref(), Some(records[2].1.as_slice()));
    setup.wait_caught_up(records.len(), Duration::from_secs(60));
    let states = setup.changelog_states();
    // 5 for the demo request, 1 for the session: no decay, no re-entry wait from 2099.
    assert_eq!(states["u1"].score, 6);
    assert!(!states.contains_key("zz"));
}

/// SPEC 3.9 and the future-time guard: an event is judged against the wall clock its record
/// was written at (the record timestamp), not whenever it is read, so a replay after a crash,
/// a rebalance or a reset decides as the first read did. Before, the guard read the scorer's
/// clock: a record dead-lettered just past `max_future_skew` was accepted by a replay minutes
/// later, and the two runs ended with different states. Here a record written an hour ago
/// (its timestamp) with an event dated 50 minutes from now was 1 h 50 min ahead when written:
/// dead-lettered, though within the default 1 h of the scorer's clock now. The same event in a
/// record written now is accepted.
#[test]
fn an_event_is_judged_against_the_time_its_record_was_written() {
    use rdkafka::producer::BaseRecord;
    let setup = ScorerRig::new("future-written", 1);
    let _scorer = setup.scorer("s", &[]);
    let p = producer(&setup.broker);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let time = leadscore::timestamp::format_rfc3339(now + 50 * 60_000);
    let ev = |user: &str| {
        format!(
            r#"{{"user_id":"{user}","time":"{time}","type":"email_added","value":"{user}@x.io"}}"#
        )
    };
    let (old, new) = (ev("written-an-hour-ago"), ev("written-now"));
    p.send(
        BaseRecord::to(&setup.names.input)
            .key("written-an-hour-ago")
            .payload(old.as_str())
            .timestamp(now - 60 * 60_000),
    )
    .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    p.send(
        BaseRecord::to(&setup.names.input)
            .key("written-now")
            .payload(new.as_str()),
    )
    .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    p.flush(Duration::from_secs(60)).expect("flush");
    setup.wait_caught_up(2, Duration::from_secs(60));
    let dlq = read_all(&setup.broker, &setup.names.dlq);
    let keys: Vec<&[u8]> = dlq.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, [b"written-an-hour-ago".as_slice()], "{dlq:?}");
    assert_eq!(dlq[0].headers["leadscore.error.reason"], "invalid_value");
    let states = setup.changelog_states();
    assert!(states.contains_key("written-now"), "{states:?}");
    assert!(!states.contains_key("written-an-hour-ago"), "{states:?}");
}

/// A new owner that restores a partition whose changelog checkpoint is ahead of the group's
/// committed offset (a commit lost to a rebalance, or a crash between the checkpoint and the
/// asynchronous commit) commits the checkpoint's position, even when no new input arrives:
/// otherwise the group's lag stays wrong until the next event. Seen in CI as a lookup test
/// waiting forever for the group to catch up after a rebalance.
#[test]
fn a_restored_checkpoint_ahead_of_the_group_commit_is_committed_without_new_input() {
    let setup = ScorerRig::new("commit-restored", 2);
    let (_, records) = setup.produce_generated(&traffic(100, 1_000, 31));
    let mut first = setup.scorer("s", &[]);
    setup.wait_caught_up(records.len(), Duration::from_secs(120));
    first.stop();

    // A group with no commit at all (as a group whose commit was lost), beside the same
    // changelog and state: its checkpoints say everything is processed.
    let group = format!("{}-again", setup.names.group);
    let mut second = setup.scorer("s", &[("SCORER__GROUP_ID", &group)]);
    wait_group_caught_up(
        &setup.broker,
        &group,
        &setup.names.input,
        records.len(),
        Duration::from_secs(60),
    );
    second.stop();
}

/// SPEC 3.7: the clock follows the wall clock only once the partition is caught up. A
/// restarted scorer (with `follow_wall_clock`, the default) restores a partition with its
/// clock and then has a backlog to read: the backlog is scored in event time first. The
/// first poll after an assignment, or after an asynchronous commit, returns nothing while
/// the backlog waits (rdkafka hands the rebalance or commit event over as an empty poll), and
/// that empty poll was taken for "caught up": the restored clock jumped to the wall clock,
/// the user decayed through eleven months, and the backlog's session met the re-entry wait
/// of that decay and scored nothing (an outside review).
#[test]
fn a_restarted_scorer_reads_its_backlog_in_event_time_before_following_the_wall_clock() {
    let setup = ScorerRig::new("backlog-clock", 1);
    let p = producer(&setup.broker);
    let ev = |time: &str, rest: &str| {
        (
            "u1",
            format!(r#"{{"user_id":"u1","time":"{time}",{rest}}}"#).into_bytes(),
        )
    };
    let before = vec![
        ev(
            "2026-01-05T10:00:00Z",
            r#""type":"email_added","value":"u1@x.io""#,
        ),
        ev("2026-01-05T10:05:00Z", r#""type":"session_start""#),
    ];
    {
        // The rig's scorer does not follow the wall clock: the first run ends at 10:05.
        let _first = setup.scorer("s", &[]);
        produce_all(&p, &setup.names.input, &before);
        setup.wait_caught_up(before.len(), Duration::from_secs(60));
    }
    let backlog = vec![ev("2026-01-06T10:00:00Z", r#""type":"session_start""#)];
    produce_all(&p, &setup.names.input, &backlog);
    let _second = setup.scorer("s", &[("SCORER__FOLLOW_WALL_CLOCK", "true")]);
    setup.wait_caught_up(before.len() + backlog.len(), Duration::from_secs(60));
    let mut changes = Vec::new();
    wait_until(Duration::from_secs(30), "the decay once caught up", || {
        changes = read_all(&setup.broker, &setup.names.output)
            .iter()
            .map(|r| {
                let c =
                    codec::decode_change(Format::Json, r.payload.as_deref().unwrap_or_default())
                        .expect("score changes decode");
                (c.reason.kind.as_str().to_string(), c.time, c.score)
            })
            .collect();
        changes.iter().any(|(kind, _, _)| kind == "inactivity")
    });
    let t = |s: &str| leadscore::timestamp::parse_rfc3339(s).expect("a time");
    // The backlog's session scores at its own time, then the clock catches up with the wall
    // clock and the score decays from 2 to 0 (two 7-day windows after the session).
    assert_eq!(
        changes,
        vec![
            ("rule".to_string(), t("2026-01-05T10:05:00Z"), 1),
            ("rule".to_string(), t("2026-01-06T10:00:00Z"), 2),
            ("inactivity".to_string(), t("2026-01-20T10:00:00Z"), 0),
        ]
    );
}
