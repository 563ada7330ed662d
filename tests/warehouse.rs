//! `leadscore warehouse import|export` against a real PostgreSQL server of the test's own
//! (tests/common/postgres.rs) and the broker, run as the built binary, including `kill -9`
//! mid-stream: import re-sends and never skips (every row's latest score reaches the scorer
//! exactly as `simulate` computes it), export writes every change once.

mod common;

use common::postgres::Postgres;
use common::*;
use leadscore::codec::{self, Format};
use leadscore::partitioner::partition_for;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PARTITIONS: i32 = 3;

/// The scorer's topics and a PostgreSQL server of the test's own.
fn warehouse_rig(test: &str) -> (ScorerRig, Postgres) {
    (ScorerRig::new(test, PARTITIONS), Postgres::start(test))
}

fn warehouse_env(
    rig: &ScorerRig,
    pg: &Postgres,
    admin_port: u16,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = settings_env(&[
        ("KAFKA__BOOTSTRAP_SERVERS", &rig.broker.bootstrap),
        ("KAFKA__SESSION_TIMEOUT_MS", "6000"),
        ("KAFKA__HEARTBEAT_INTERVAL_MS", "500"),
        ("TOPICS__INPUT", &rig.names.input),
        ("TOPICS__OUTPUT", &rig.names.output),
        ("TOPICS__PARTITIONS", &PARTITIONS.to_string()),
        ("WAREHOUSE__URL", &pg.url()),
        ("WAREHOUSE__POLL_INTERVAL", "100ms"),
        ("ADMIN__LISTEN", &format!("127.0.0.1:{admin_port}")),
    ]);
    env.extend(settings_env(extra));
    env
}

/// `leadscore warehouse import|export` as a process.
fn warehouse(
    rig: &ScorerRig,
    pg: &Postgres,
    command: &str,
    tag: &str,
    extra: &[(&str, &str)],
) -> Service {
    let port = free_port();
    Service::spawn(
        &format!("warehouse {command}"),
        &warehouse_env(rig, pg, port, extra),
        port,
        rig.dir.path().join(format!("{command}-{tag}.log")),
    )
}

fn count(pg: &Postgres, sql: &str) -> usize {
    pg.sql(sql)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn create_import_table(pg: &Postgres) {
    pg.sql(
        "CREATE TABLE lead_score_imports (user_id text PRIMARY KEY, score integer, \
         updated_at timestamptz NOT NULL)",
    );
}

/// The external_score events on the input topic: (user, score, updated_at ms), checking each
/// record is keyed by its user and in its user's home partition.
fn imported(rig: &ScorerRig) -> Vec<(String, i64, i64)> {
    read_all(&rig.broker, &rig.names.input)
        .iter()
        .map(|r| {
            let key = r.key.as_deref().expect("keyed");
            let e = codec::decode_event(
                Format::Json,
                Some(key),
                r.payload.as_deref().unwrap_or_default(),
                &Default::default(),
            )
            .expect("a valid input event");
            assert_eq!(r.partition, partition_for(key, PARTITIONS));
            let score = match e.score {
                Some(leadscore::event::ScoreOp::Set(s)) => s,
                other => panic!("not a set score: {other:?}"),
            };
            (
                e.user_id.to_string(),
                score,
                e.updated_at.expect("updated_at"),
            )
        })
        .collect()
}

/// The table's rows: user to (score, updated_at ms).
fn table_rows(pg: &Postgres) -> BTreeMap<String, (i64, i64)> {
    pg.sql(
        "SELECT user_id, score, (extract(epoch from updated_at) * 1000)::bigint \
             FROM lead_score_imports WHERE score IS NOT NULL",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (
            f[0].to_string(),
            (f[1].parse().unwrap(), f[2].parse().unwrap()),
        )
    })
    .collect()
}

#[test]
fn import_sends_every_row_including_equal_timestamps_across_batch_boundaries() {
    let (rig, pg) = warehouse_rig("wh-import");
    create_import_table(&pg);
    // Ten rows at one instant and five at the next: batches of three end among equal times.
    pg.sql(
        "INSERT INTO lead_score_imports SELECT 'user-' || i, i * 10, \
         timestamptz '2026-01-05 10:00:00+00' + (i / 10) * interval '1 second' \
         FROM generate_series(0, 14) i",
    );
    pg.sql("INSERT INTO lead_score_imports VALUES ('no-score', NULL, '2026-01-05 10:00:00+00')");
    let mut import = warehouse(&rig, &pg, "import", "1", &[("WAREHOUSE__BATCH_SIZE", "3")]);
    wait_until(Duration::from_secs(30), "15 rows imported", || {
        read_all(&rig.broker, &rig.names.input).len() >= 15
    });
    // The watermark sits on the last row, stored after the last batch was acknowledged.
    wait_until(Duration::from_secs(10), "the watermark stored", || {
        pg.try_sql(
            "SELECT user_id FROM leadscore_import_watermarks WHERE name = 'lead_score_imports'",
        )
        .is_ok_and(|u| u == "user-14")
    });

    // Later updates, two of them at one new instant, are picked up by the next polls.
    pg.sql(
        "UPDATE lead_score_imports SET score = score + 1, \
         updated_at = timestamptz '2026-01-05 11:00:00+00' WHERE user_id IN ('user-3', 'user-12')",
    );
    wait_until(Duration::from_secs(30), "the updates imported", || {
        read_all(&rig.broker, &rig.names.input).len() >= 17
    });
    std::thread::sleep(Duration::from_millis(500));
    import.stop();

    let got = imported(&rig);
    assert_eq!(got.len(), 17, "each row version once: {got:?}");
    let versions: BTreeSet<(String, i64)> = got.iter().map(|(u, s, _)| (u.clone(), *s)).collect();
    assert_eq!(versions.len(), 17);
    let rows = table_rows(&pg);
    for (user, (score, at)) in &rows {
        assert!(
            got.contains(&(user.clone(), *score, *at)),
            "{user} {score} {at}"
        );
    }
    assert!(!got.iter().any(|(u, _, _)| u == "no-score"));
    let metrics = import.get("/metrics");
    assert!(metrics.is_none(), "stopped");
}

#[test]
fn import_killed_mid_stream_skips_nothing_and_the_scorer_gets_every_latest_score() {
    let (rig, pg) = warehouse_rig("wh-import-kill");
    create_import_table(&pg);
    // 400 rows in groups of 7 sharing an updated_at.
    pg.sql(
        "INSERT INTO lead_score_imports SELECT 'lead-' || i, (i * 37) % 200, \
         timestamptz '2026-01-05 10:00:00+00' + (i / 7) * interval '1 second' \
         FROM generate_series(0, 399) i",
    );
    let _scorer = rig.scorer("state", &[]);
    let extra = [("WAREHOUSE__BATCH_SIZE", "5")];
    let mut import = warehouse(&rig, &pg, "import", "1", &extra);
    wait_until(Duration::from_secs(30), "some batches imported", || {
        pg.try_sql("SELECT count(*) FROM leadscore_import_watermarks")
            .is_ok_and(|n| n == "1")
    });
    import.kill9();
    let before = read_all(&rig.broker, &rig.names.input).len();
    // Rows change while the import is down, some at one shared instant.
    pg.sql(
        "UPDATE lead_score_imports SET score = score + 3, \
         updated_at = timestamptz '2026-01-06 10:00:00+00' + (substr(user_id, 6)::int % 3) * interval '1 second' \
         WHERE substr(user_id, 6)::int % 4 = 0",
    );
    let mut import = warehouse(&rig, &pg, "import", "2", &extra);
    let rows = table_rows(&pg);
    wait_until(
        Duration::from_secs(60),
        "every row's latest version imported",
        || {
            let got: BTreeSet<(String, i64, i64)> = imported(&rig).into_iter().collect();
            rows.iter()
                .all(|(u, (s, at))| got.contains(&(u.clone(), *s, *at)))
        },
    );
    import.stop();
    let all = imported(&rig);
    eprintln!(
        "{before} events before the kill, {} after the restart",
        all.len()
    );

    // Simulate over what reached the input topic; every user ends at its row's latest score.
    let expected = rig.simulate_input(PARTITIONS);
    assert_eq!(expected.len(), rows.len());
    for (user, (score, _)) in &rows {
        assert_eq!(expected[user]["score"], *score, "{user}");
    }
    rig.wait_scored_as(&expected, "the scorer to hold every latest score");
}

/// Input events for `users` users: enrolled by email, then engagement that scores.
fn produce_engagement(rig: &ScorerRig, users: usize) -> usize {
    let mut records = Vec::new();
    for i in 0..users {
        let user = format!("lead-{i}");
        let mut lines = vec![format!(
            r#"{{"user_id":"{user}","time":"2026-01-05T10:00:00Z","type":"email_added","value":"{user}@example.com"}}"#
        )];
        for (k, name) in [
            "registered",
            "webinar_joined",
            "demo_requested",
            "pricing_viewed",
        ]
        .iter()
        .enumerate()
        {
            lines.push(format!(
                r#"{{"user_id":"{user}","time":"2026-01-05T1{}:00:00Z","type":"custom_event","name":"{name}","properties":{{"plan":"pro"}}}}"#,
                k + 1
            ));
        }
        records.extend(lines.into_iter().map(|line| (user.clone(), line)));
    }
    produce_all(&producer(&rig.broker), &rig.names.input, &records);
    records.len()
}

#[test]
fn export_killed_mid_stream_writes_every_change_once() {
    let (rig, pg) = warehouse_rig("wh-export");
    let _scorer = rig.scorer("state", &[]);
    produce_engagement(&rig, 60);
    // Every user: email (enrolls, no score), then four scoring events.
    wait_until(Duration::from_secs(60), "the scorer's changes", || {
        read_all(&rig.broker, &rig.names.output).len() >= 60 * 4
    });
    let extra = [("WAREHOUSE__EXPORT_BATCH", "7")];
    let mut export = warehouse(&rig, &pg, "export", "1", &extra);
    wait_until(Duration::from_secs(60), "some changes exported", || {
        pg.try_sql("SELECT count(*) FROM lead_score_changes")
            .is_ok_and(|n| n.parse::<usize>().unwrap_or(0) > 0)
    });
    export.kill9();
    let mut export = warehouse(&rig, &pg, "export", "2", &extra);
    let changes: Vec<leadscore::change::ScoreChange> = read_all(&rig.broker, &rig.names.output)
        .iter()
        .map(|r| {
            codec::decode_change(Format::Json, r.payload.as_deref().unwrap_or_default())
                .expect("a change")
        })
        .collect();
    let ids: BTreeSet<String> = changes.iter().map(|c| c.event_id().to_string()).collect();
    wait_until(Duration::from_secs(90), "every change exported", || {
        count(&pg, "SELECT count(*) FROM lead_score_changes") >= ids.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count(&pg, "SELECT count(*) FROM lead_score_changes"),
        ids.len()
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(DISTINCT event_id) FROM lead_score_changes"
        ),
        ids.len()
    );
    // Each lead's current row holds its last change.
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for c in &changes {
        last.insert(&c.user_id, c.score);
    }
    let scores: BTreeMap<String, i64> = pg
        .sql("SELECT user_id, score FROM lead_scores")
        .lines()
        .map(|l| {
            let (u, s) = l.split_once('|').unwrap();
            (u.to_string(), s.parse().unwrap())
        })
        .collect();
    assert_eq!(scores.len(), last.len());
    for (user, score) in &last {
        assert_eq!(scores.get(*user), Some(score), "{user}");
    }
    export.stop();

    // A replay from the start by another group writes nothing twice.
    let mut replay = warehouse(
        &rig,
        &pg,
        "export",
        "replay",
        &[("WAREHOUSE__EXPORT_GROUP_ID", "replay")],
    );
    wait_until(Duration::from_secs(60), "the replay to finish", || {
        replay.get("/metrics").is_some_and(|(_, m)| {
            metric_with(
                &m,
                "leadscore_warehouse_changes_exported_total",
                "outcome=\"duplicate\"",
            ) == Some(ids.len() as f64)
        })
    });
    let (_, m) = replay.get("/metrics").unwrap();
    assert_eq!(
        metric_with(
            &m,
            "leadscore_warehouse_changes_exported_total",
            "outcome=\"written\""
        ),
        Some(0.0)
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM lead_score_changes"),
        ids.len()
    );
    replay.stop();
}

#[test]
fn tls_is_refused_plainly_and_a_missing_url_is_a_configuration_error() {
    let (rig, pg) = warehouse_rig("wh-config");
    let run = |url: Option<&str>| {
        let mut env = warehouse_env(&rig, &pg, free_port(), &[]);
        env.retain(|(k, _)| k != "LEADSCORE__WAREHOUSE__URL");
        if let Some(u) = url {
            env.push(("LEADSCORE__WAREHOUSE__URL".into(), u.into()));
        }
        configuration_error("warehouse export", &env)
    };
    assert!(run(None).contains("warehouse.url is not set"));
    let tls = format!("{} sslmode=require", pg.url());
    assert!(run(Some(&tls)).contains("plain text only"));
}

/// An `updated_at` column without a time zone is refused at start, naming it: it was read as
/// UTC but compared with the clock in the session's zone, so a row was held for hours in a
/// database whose zone is behind UTC, with nothing logged (an outside review).
#[test]
fn an_updated_at_column_without_a_time_zone_is_refused_naming_it() {
    let (rig, pg) = warehouse_rig("wh-naive-time");
    pg.sql("CREATE TABLE imp_naive (user_id text, score bigint, updated_at timestamp)");
    let mut import = warehouse(
        &rig,
        &pg,
        "import",
        "1",
        &[("WAREHOUSE__IMPORT_TABLE", "imp_naive")],
    );
    wait_until(Duration::from_secs(30), "the import to exit", || {
        import.exited().is_some()
    });
    let e = import.log_text();
    assert!(
        e.contains("warehouse.updated_at_column \"updated_at\"")
            && e.contains("timestamp, not timestamptz"),
        "{e}"
    );
    // A table missing at start skips the check; created later with a `date` column, its
    // rows are refused by every poll, naming the column, and the import goes on (it
    // panicked reading the first row: an outside review).
    let mut late = warehouse(
        &rig,
        &pg,
        "import",
        "2",
        &[("WAREHOUSE__IMPORT_TABLE", "imp_late")],
    );
    wait_until(Duration::from_secs(30), "the import to poll", || {
        late.log_text().contains("warehouse import started")
    });
    pg.sql("CREATE TABLE imp_late (user_id text, score bigint, updated_at date)");
    pg.sql("INSERT INTO imp_late VALUES ('u1', 5, '2026-01-05')");
    wait_until(
        Duration::from_secs(30),
        "the poll to refuse the column",
        || late.log_text().contains("date, not timestamptz"),
    );
    assert!(late.exited().is_none(), "{}", late.log_text());
}

/// The value of counter `name` (no labels) on `service`'s `/metrics`, when it answers.
fn counter(service: &Service, name: &str) -> Option<f64> {
    let (_, text) = service.get("/metrics")?;
    metric_samples(&text, name).first().map(|(_, v)| *v)
}

/// Whether the input topic holds an event of `user`.
fn imported_users(rig: &ScorerRig) -> Vec<String> {
    imported(rig).into_iter().map(|(u, _, _)| u).collect()
}

#[test]
fn import_holds_rows_dated_ahead_of_the_clock_until_due_and_loses_nothing() {
    let (rig, pg) = warehouse_rig("wh-import-future");
    create_import_table(&pg);
    // f1 is two hours ahead (beyond scorer.max_future_skew: the scorer would dead-letter it),
    // there before the import starts; f4 a few seconds ahead. f2 and f3 are written
    // afterwards with current times.
    pg.sql("INSERT INTO lead_score_imports VALUES ('f1', 61, now() + interval '2 hours')");
    let mut import = warehouse(&rig, &pg, "import", "1", &[]);
    pg.sql("INSERT INTO lead_score_imports VALUES ('f4', 64, now() + interval '4 seconds')");
    std::thread::sleep(Duration::from_millis(1_000));
    pg.sql(
        "INSERT INTO lead_score_imports VALUES ('f2', 62, now()), \
         ('f3', 63, now() - interval '1 minute')",
    );
    wait_until(Duration::from_secs(30), "f2 and f3 imported", || {
        let users = imported_users(&rig);
        users.contains(&"f2".to_string()) && users.contains(&"f3".to_string())
    });
    // Read first, then ask whether f4 is still ahead: if it is, it cannot have been produced.
    let users = imported_users(&rig);
    if pg.sql("SELECT updated_at > now() FROM lead_score_imports WHERE user_id = 'f4'") == "t" {
        assert!(!users.contains(&"f4".to_string()), "f4 produced early");
    }
    wait_until(Duration::from_secs(30), "f4 imported once due", || {
        imported_users(&rig).contains(&"f4".to_string())
    });
    std::thread::sleep(Duration::from_millis(500));
    let users = imported_users(&rig);
    assert!(!users.contains(&"f1".to_string()), "f1 is held: {users:?}");
    let mut sorted = users.clone();
    sorted.sort();
    assert_eq!(sorted, ["f2", "f3", "f4"], "each due row once");
    // The watermark never passes the clock, so rows written now are still ahead of it.
    assert_eq!(
        pg.sql("SELECT updated_at <= now() FROM leadscore_import_watermarks"),
        "t"
    );
    pg.sql("INSERT INTO lead_score_imports VALUES ('f5', 65, now())");
    wait_until(Duration::from_secs(30), "f5 imported", || {
        imported_users(&rig).contains(&"f5".to_string())
    });
    // The row held far ahead is reported, not waited on unseen (an outside review).
    let log = import.log_text();
    assert!(
        log.contains("ahead are held until due") && log.contains("rows=1"),
        "{log}"
    );
    import.stop();
}

/// A score change as the scorer writes it in JSON.
fn change_json(id: &str, user: &str, score: i64, status: &str) -> String {
    serde_json::json!({
        "event_id": id,
        "user_id": user,
        "time": "2026-01-05T10:00:00Z",
        "previous_score": 0,
        "score": score,
        "delta": score,
        "reason": {"kind": "external", "event_id": format!("src-{id}")},
        "attributes": {"lead_status": status},
    })
    .to_string()
}

fn lead_scores(pg: &Postgres) -> BTreeMap<String, i64> {
    pg.sql("SELECT user_id, score FROM lead_scores")
        .lines()
        .map(|l| {
            let (u, s) = l.split_once('|').unwrap();
            (u.to_string(), s.parse().unwrap())
        })
        .collect()
}

fn history_of(pg: &Postgres, user: &str) -> Vec<String> {
    pg.sql(&format!(
        "SELECT event_id FROM lead_score_changes WHERE user_id = '{user}' ORDER BY event_id"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn export_forgets_a_tombstoned_user_in_both_tables_and_a_replay_keeps_them_forgotten() {
    let (rig, pg) = warehouse_rig("wh-export-forget");
    let p = producer(&rig.broker);
    let topic = &rig.names.output;
    // gone: two changes, then forgotten. back: forgotten, then a new life. kept: untouched.
    produce_all(
        &p,
        topic,
        &[
            ("gone", change_json("external:gone#1", "gone", 10, "Open")),
            ("gone", change_json("external:gone#2", "gone", 20, "MQL")),
            ("back", change_json("external:back#1", "back", 30, "Open")),
            ("kept", change_json("external:kept#1", "kept", 40, "Open")),
        ],
    );
    produce_tombstone(&p, topic, Some(b"gone"));
    produce_tombstone(&p, topic, Some(b"back"));
    produce_all(
        &p,
        topic,
        &[
            ("back", change_json("external:back#9", "back", 5, "Open")),
            ("last", change_json("external:last#1", "last", 1, "Open")),
        ],
    );
    let check = |what: &str| {
        let scores = lead_scores(&pg);
        assert_eq!(
            scores,
            BTreeMap::from([
                ("back".to_string(), 5),
                ("kept".to_string(), 40),
                ("last".to_string(), 1)
            ]),
            "{what}"
        );
        assert!(
            history_of(&pg, "gone").is_empty(),
            "{what}: history forgotten"
        );
        assert_eq!(history_of(&pg, "back"), ["external:back#9"], "{what}");
        assert_eq!(history_of(&pg, "kept"), ["external:kept#1"], "{what}");
    };
    let extra = [("WAREHOUSE__EXPORT_BATCH", "2")];
    let mut export = warehouse(&rig, &pg, "export", "1", &extra);
    wait_until(Duration::from_secs(60), "every record exported", || {
        counter_with(&export, "outcome=\"forgotten\"") == Some(2.0)
            && lead_scores(&pg).contains_key("last")
    });
    check("after the export");
    export.stop();
    // A replay from the start by another group: the old changes come back, and so do the
    // tombstones after them, in the partition's order.
    let mut replay = warehouse(
        &rig,
        &pg,
        "export",
        "replay",
        &[
            ("WAREHOUSE__EXPORT_GROUP_ID", "replay"),
            ("WAREHOUSE__EXPORT_BATCH", "1"),
        ],
    );
    // Written again: gone's two changes and back's first (their rows were deleted), then
    // back's new life once its tombstone deleted it again. kept and last: duplicates.
    wait_until(Duration::from_secs(60), "the replay to finish", || {
        counter_with(&replay, "outcome=\"forgotten\"") == Some(2.0)
            && counter_with(&replay, "outcome=\"duplicate\"") == Some(2.0)
            && counter_with(&replay, "outcome=\"written\"") == Some(4.0)
    });
    check("after the replay");
    replay.stop();
}

/// The exported-changes counter of `service` with `label`.
fn counter_with(service: &Service, label: &str) -> Option<f64> {
    let (_, text) = service.get("/metrics")?;
    metric_with(&text, "leadscore_warehouse_changes_exported_total", label)
}

/// Text no compression shrinks: an index entry of it cannot fit a btree page.
fn incompressible(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize])
        })
        .collect()
}

#[test]
fn export_replaces_u0000_and_passes_over_a_change_the_warehouse_refuses() {
    let (rig, pg) = warehouse_rig("wh-export-nul");
    let huge = incompressible(12_000);
    let mut nul = change_json("external:n\u{0}l#1", "n\u{0}l", 7, "Op\u{0}en");
    nul = nul.replace("src-", "src-\\u0000-");
    produce_all(
        &producer(&rig.broker),
        &rig.names.output,
        &[
            ("n\u{0}l".to_string(), nul),
            (
                huge.clone(),
                change_json("external:huge#1", &huge, 8, "Open"),
            ),
            (
                "after".to_string(),
                change_json("external:after#1", "after", 9, "Open"),
            ),
        ],
    );
    let mut export = warehouse(&rig, &pg, "export", "1", &[]);
    wait_until(
        Duration::from_secs(60),
        "the change after them exported",
        || {
            pg.try_sql("SELECT count(*) FROM lead_scores WHERE user_id = 'after'")
                .is_ok_and(|n| n == "1")
        },
    );
    assert!(export.exited().is_none(), "{}", export.log_text());
    // U+0000 becomes U+FFFD in every text and jsonb value.
    assert_eq!(
        pg.sql(
            "SELECT score, lead_status, attributes->>'lead_status' FROM lead_scores \
             WHERE user_id = 'n\u{FFFD}l'"
        ),
        "7|Op\u{FFFD}en|Op\u{FFFD}en"
    );
    assert_eq!(
        pg.sql("SELECT event_id, source_event_id FROM lead_score_changes WHERE score = 7"),
        "external:n\u{FFFD}l#1|src-\u{FFFD}-external:n\u{FFFD}l#1"
    );
    // The user id too long for the primary key's index is refused by PostgreSQL: passed over,
    // counted and logged with where it is, and nothing else is lost.
    assert_eq!(count(&pg, "SELECT count(*) FROM lead_score_changes"), 2);
    assert_eq!(
        counter(&export, "leadscore_warehouse_changes_skipped_total"),
        Some(1.0)
    );
    let log = export.log_text();
    assert!(
        log.contains("index row") && log.contains("offset"),
        "the refusal names the record and the server's reason:\n{log}"
    );
    export.stop();
}

#[test]
fn import_and_export_reconnect_after_the_database_restarts() {
    let (rig, pg) = warehouse_rig("wh-reconnect");
    create_import_table(&pg);
    let mut import = warehouse(&rig, &pg, "import", "1", &[]);
    let mut export = warehouse(&rig, &pg, "export", "1", &[]);
    let p = producer(&rig.broker);
    pg.sql("INSERT INTO lead_score_imports VALUES ('r1', 1, now())");
    produce_all(
        &p,
        &rig.names.output,
        &[("x1", change_json("c:x1", "x1", 1, "Open"))],
    );
    wait_until(
        Duration::from_secs(30),
        "r1 imported and x1 exported",
        || imported_users(&rig).contains(&"r1".to_string()) && lead_scores(&pg).contains_key("x1"),
    );
    pg.restart();
    pg.sql("INSERT INTO lead_score_imports VALUES ('r2', 2, now())");
    produce_all(
        &p,
        &rig.names.output,
        &[("x2", change_json("c:x2", "x2", 2, "Open"))],
    );
    wait_until(
        Duration::from_secs(60),
        "r2 imported and x2 exported",
        || imported_users(&rig).contains(&"r2".to_string()) && lead_scores(&pg).contains_key("x2"),
    );
    assert!(import.exited().is_none(), "{}", import.log_text());
    assert!(export.exited().is_none(), "{}", export.log_text());
    assert_eq!(imported_users(&rig), ["r1", "r2"]);
    import.stop();
    export.stop();
}

#[test]
fn database_errors_say_what_the_server_said_and_an_out_of_range_score_is_passed_over() {
    let (rig, pg) = warehouse_rig("wh-errors");
    // An unknown database: the server's own words, not "db error".
    let mut env = warehouse_env(&rig, &pg, free_port(), &[]);
    env.retain(|(k, _)| k != "LEADSCORE__WAREHOUSE__URL");
    env.push((
        "LEADSCORE__WAREHOUSE__URL".into(),
        pg.url().replace("dbname=postgres", "dbname=nosuch"),
    ));
    let said = configuration_error("warehouse import", &env);
    assert!(
        said.contains("database \"nosuch\" does not exist") && said.contains("3D000"),
        "{said}"
    );

    // A numeric score column: one value beyond bigint must not stop the rows around it.
    pg.sql("CREATE TABLE imp_num (user_id text, score numeric, updated_at timestamptz)");
    pg.sql(
        "INSERT INTO imp_num VALUES ('n1', 5, '2026-01-05 10:00:00+00'), \
         ('big', 1e20, '2026-01-05 10:00:01+00'), ('n2', 7.00, '2026-01-05 10:00:02+00'), \
         ('half', 12.5, '2026-01-05 10:00:03+00')",
    );
    let mut import = warehouse(
        &rig,
        &pg,
        "import",
        "num",
        &[("WAREHOUSE__IMPORT_TABLE", "imp_num")],
    );
    wait_until(Duration::from_secs(30), "the other rows imported", || {
        imported(&rig).len() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    let got: BTreeMap<String, i64> = imported(&rig).into_iter().map(|(u, s, _)| (u, s)).collect();
    assert_eq!(
        got,
        BTreeMap::from([
            ("n1".to_string(), 5),
            ("n2".to_string(), 7),
            ("half".to_string(), 13)
        ])
    );
    assert_eq!(
        counter(&import, "leadscore_warehouse_rows_skipped_total"),
        Some(1.0)
    );
    let log = import.log_text();
    assert!(
        log.contains("big") && log.contains("100000000000000000000"),
        "the row and its value are named:\n{log}"
    );
    import.stop();

    // A missing table: the poll is retried, and each failure says why.
    let mut missing = warehouse(
        &rig,
        &pg,
        "import",
        "missing",
        &[("WAREHOUSE__IMPORT_TABLE", "nope")],
    );
    wait_until(Duration::from_secs(30), "the poll failure logged", || {
        missing
            .log_text()
            .contains("relation \"nope\" does not exist")
    });
    assert!(missing.log_text().contains("42P01"));
    missing.stop();
}

#[test]
fn import_counts_rows_without_a_user_id_or_updated_at_and_keeps_its_watermark() {
    let (rig, pg) = warehouse_rig("wh-import-nulls");
    pg.sql("CREATE TABLE imp_nulls (user_id text, score bigint, updated_at timestamptz)");
    pg.sql(
        "INSERT INTO imp_nulls VALUES ('v1', 1, '2026-01-05 10:00:00+00'), \
         (NULL, 2, '2026-01-05 10:00:00+00'), ('', 3, '2026-01-05 10:00:01+00'), \
         ('v2', NULL, '2026-01-05 10:00:01+00'), ('timeless', 5, NULL), \
         ('v3', 6, '2026-01-05 10:00:02+00'), (NULL, 7, '2026-01-05 10:00:03+00'), \
         ('v4', 8, '2026-01-05 10:00:03+00'), ('forever', 13, 'infinity')",
    );
    // Rows whose event the scorer would dead-letter: a time outside years 0000-9999, a user id
    // making the event larger than scorer.max_event_bytes.
    pg.sql(
        "INSERT INTO imp_nulls VALUES ('ancient', 10, '-infinity'), \
         ('bc', 11, '4713-01-01 00:00:00+00 BC'), \
         (repeat('l', 70000), 12, '2026-01-05 10:00:02.5+00')",
    );
    let extra = [
        ("WAREHOUSE__IMPORT_TABLE", "imp_nulls"),
        ("WAREHOUSE__BATCH_SIZE", "2"),
    ];
    let mut import = warehouse(&rig, &pg, "import", "1", &extra);
    // Two null user ids, an empty one, a null score, a null and an infinite updated_at (never
    // due: it was held silently before), and the three the scorer would dead-letter: nine
    // passed over.
    wait_until(Duration::from_secs(30), "every row counted", || {
        counter(&import, "leadscore_warehouse_rows_imported_total") == Some(3.0)
            && counter(&import, "leadscore_warehouse_rows_skipped_total") == Some(9.0)
    });
    let log = import.log_text();
    assert!(
        log.contains("ancient") && log.contains("0000-9999") && log.contains("65536"),
        "each row and why it was passed over:\n{log}"
    );
    // The rows without a user id or score are named one by one too (they were a bare count).
    assert!(
        log.lines()
            .any(|l| l.contains("user_id=v2") && l.contains("no score")),
        "the row without a score, by its user id:\n{log}"
    );
    assert!(log.contains("null or infinite updated_at"), "{log}");
    pg.sql("INSERT INTO imp_nulls VALUES ('v5', 9, '2026-01-05 11:00:00+00')");
    wait_until(Duration::from_secs(30), "a later row imported", || {
        counter(&import, "leadscore_warehouse_rows_imported_total") == Some(4.0)
    });
    std::thread::sleep(Duration::from_millis(500));
    // Nothing counted twice, nothing imported twice.
    assert_eq!(
        counter(&import, "leadscore_warehouse_rows_skipped_total"),
        Some(9.0)
    );
    let mut users = imported_users(&rig);
    users.sort();
    assert_eq!(users, ["v1", "v3", "v4", "v5"]);
    import.stop();
}

/// Rows repeating a (user id, updated_at) pair: the one with the largest score is imported
/// whatever the table's physical order, the others passed over, logged and counted. They all
/// got one event id before, so the scorer kept whichever the table returned first (an outside
/// review). The scores compare as numbers: they were compared as their text (9 over 100), the
/// poll's `ORDER BY` naming the text column it selected (a later outside review).
#[test]
fn rows_repeating_a_user_and_updated_at_import_the_largest_score_and_count_the_rest() {
    let (rig, pg) = warehouse_rig("wh-import-pairs");
    pg.sql("CREATE TABLE imp_pairs (user_id text, score bigint, updated_at timestamptz)");
    pg.sql(
        "INSERT INTO imp_pairs VALUES ('p1', 10, '2026-01-05 10:00:00+00'), \
         ('p1', 30, '2026-01-05 10:00:00+00'), ('p1', 20, '2026-01-05 10:00:00+00'), \
         ('p1', NULL, '2026-01-05 10:00:00+00'), ('p2', 5, '2026-01-05 10:00:00+00'), \
         ('p1', 7, '2026-01-05 10:00:01+00'), ('p3', 40, '2026-01-05 10:00:02+00'), \
         ('p3', 50, '2026-01-05 10:00:02+00'), \
         ('p4', 9, '2026-01-05 10:00:03+00'), ('p4', 100, '2026-01-05 10:00:03+00'), \
         ('p5', -10, '2026-01-05 10:00:04+00'), ('p5', -1, '2026-01-05 10:00:04+00')",
    );
    let mut import = warehouse(
        &rig,
        &pg,
        "import",
        "1",
        &[("WAREHOUSE__IMPORT_TABLE", "imp_pairs")],
    );
    wait_until(Duration::from_secs(30), "every row counted", || {
        counter(&import, "leadscore_warehouse_rows_imported_total") == Some(6.0)
            && counter(&import, "leadscore_warehouse_rows_skipped_total") == Some(6.0)
    });
    let mut events: Vec<(String, i64)> = imported(&rig)
        .into_iter()
        .map(|(user, score, _)| (user, score))
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            ("p1".to_string(), 7),
            ("p1".to_string(), 30),
            ("p2".to_string(), 5),
            ("p3".to_string(), 50),
            // Compared as numbers, not as their text: 100 over 9, -1 over -10.
            ("p4".to_string(), 100),
            ("p5".to_string(), -1)
        ]
    );
    let log = import.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("repeat the row imported before it"))
            .count(),
        6,
        "each repeated row logged, p1's null score among them (it sorts last):\n{log}"
    );
    import.stop();
}

/// An inactivity change covering `windows` windows, as the scorer writes it in JSON.
fn inactivity_json(id: &str, user: &str, windows: u32) -> String {
    serde_json::json!({
        "event_id": id,
        "user_id": user,
        "time": "2026-01-05T10:00:00Z",
        "previous_score": 10,
        "score": 9,
        "delta": -1,
        "reason": {"kind": "inactivity"},
        "windows": windows,
        "attributes": {"lead_status": "Open"},
    })
    .to_string()
}

#[test]
fn export_keeps_every_window_count_and_passes_over_a_change_keyed_by_another_user() {
    let (rig, pg) = warehouse_rig("wh-export-windows");
    produce_all(
        &producer(&rig.broker),
        &rig.names.output,
        &[
            ("w1", inactivity_json("inactivity:w1#1", "w1", u32::MAX)),
            // Keyed bc4, about bc4-other: a tombstone keyed bc4 would never remove its row.
            ("bc4", change_json("external:bc4#1", "bc4-other", 5, "Open")),
            ("after", change_json("external:after#1", "after", 9, "Open")),
        ],
    );
    let mut export = warehouse(&rig, &pg, "export", "1", &[]);
    wait_until(Duration::from_secs(60), "the last change exported", || {
        pg.try_sql("SELECT count(*) FROM lead_scores WHERE user_id = 'after'")
            .is_ok_and(|n| n == "1")
    });
    // The table the exporter creates holds every window count exactly, never clamped.
    assert_eq!(
        pg.sql("SELECT windows FROM lead_score_changes WHERE user_id = 'w1'"),
        u32::MAX.to_string()
    );
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM lead_score_changes WHERE user_id LIKE 'bc4%'"
        ),
        0
    );
    assert_eq!(
        counter(&export, "leadscore_warehouse_changes_skipped_total"),
        Some(1.0)
    );
    let log = export.log_text();
    assert!(
        log.contains("bc4-other") && log.contains("does not match"),
        "the key and the user id are named:\n{log}"
    );
    export.stop();

    // A history table created before with an integer column cannot hold the count: the change
    // is passed over, logged and counted, not written altered.
    pg.sql(
        "CREATE TABLE int4_changes (LIKE lead_score_changes INCLUDING ALL); \
         ALTER TABLE int4_changes ALTER COLUMN windows TYPE integer",
    );
    let mut export = warehouse(
        &rig,
        &pg,
        "export",
        "int4",
        &[
            ("WAREHOUSE__CHANGES_TABLE", "int4_changes"),
            ("WAREHOUSE__SCORES_TABLE", "int4_scores"),
            ("WAREHOUSE__EXPORT_GROUP_ID", "int4"),
        ],
    );
    wait_until(Duration::from_secs(60), "the last change exported", || {
        pg.try_sql("SELECT count(*) FROM int4_scores WHERE user_id = 'after'")
            .is_ok_and(|n| n == "1")
    });
    assert_eq!(count(&pg, "SELECT count(*) FROM int4_changes"), 1);
    assert_eq!(
        counter(&export, "leadscore_warehouse_changes_skipped_total"),
        Some(2.0)
    );
    let log = export.log_text();
    assert!(
        log.contains("22003") && log.contains("inactivity:w1#1"),
        "the refusal names the change and the server's reason:\n{log}"
    );
    export.stop();
}

/// A role with only the privileges docs/ingest.md lists ("Access"), on tables made for it in
/// advance, runs both commands. Both ran `CREATE TABLE IF NOT EXISTS` at every start, which
/// PostgreSQL refuses without `CREATE` on the schema even when the table exists, and the
/// export `CREATE INDEX IF NOT EXISTS`, which only the table's owner may run (an outside
/// review): a least-privilege deployment could not start.
#[test]
fn a_role_without_create_runs_both_commands_on_tables_made_in_advance() {
    let (rig, pg) = warehouse_rig("wh-least-privilege");
    pg.sql("CREATE TABLE imp_lp (user_id text, score bigint, updated_at timestamptz)");
    // The commands create their own tables as the owner first, then hand them over.
    let mut import = warehouse(
        &rig,
        &pg,
        "import",
        "owner",
        &[("WAREHOUSE__IMPORT_TABLE", "imp_lp")],
    );
    wait_until(Duration::from_secs(30), "the watermark table", || {
        pg.try_sql("SELECT to_regclass('leadscore_import_watermarks') IS NOT NULL")
            .is_ok_and(|t| t == "t")
    });
    import.stop();
    let mut export = warehouse(&rig, &pg, "export", "owner", &[]);
    wait_until(Duration::from_secs(30), "the export tables", || {
        pg.try_sql("SELECT to_regclass('lead_scores') IS NOT NULL")
            .is_ok_and(|t| t == "t")
    });
    export.stop();
    pg.sql(
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC; CREATE ROLE lp LOGIN; \
         GRANT SELECT ON imp_lp TO lp; \
         GRANT SELECT, INSERT, UPDATE ON leadscore_import_watermarks TO lp; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON lead_score_changes, lead_scores TO lp",
    );
    let as_lp = pg.url().replace("user=postgres", "user=lp");

    pg.sql("INSERT INTO imp_lp VALUES ('lp-imported', 42, '2026-01-05 10:00:00+00')");
    let mut import = warehouse(
        &rig,
        &pg,
        "import",
        "lp",
        &[
            ("WAREHOUSE__IMPORT_TABLE", "imp_lp"),
            ("WAREHOUSE__URL", &as_lp),
        ],
    );
    wait_until(Duration::from_secs(30), "the row imported", || {
        imported_users(&rig) == ["lp-imported"]
    });
    import.stop();

    let p = producer(&rig.broker);
    produce_all(
        &p,
        &rig.names.output,
        &[
            ("lp1", change_json("external:lp1#1", "lp1", 5, "Open")),
            ("lp2", change_json("external:lp2#1", "lp2", 7, "Open")),
        ],
    );
    produce_tombstone(&p, &rig.names.output, Some(b"lp2"));
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).expect("flush");
    let mut export = warehouse(&rig, &pg, "export", "lp", &[("WAREHOUSE__URL", &as_lp)]);
    wait_until(
        Duration::from_secs(60),
        "lp1 written and lp2 forgotten",
        || {
            pg.try_sql("SELECT string_agg(user_id, ',') FROM lead_scores")
                .is_ok_and(|users| users == "lp1")
                && count(&pg, "SELECT count(*) FROM lead_score_changes") == 1
        },
    );
    export.stop();
}

/// A user id far longer than an event may be is read only as far as makes it too long (half
/// of `scorer.max_event_bytes` and a character: the id is in the event twice), so a batch's
/// memory is bounded whatever the table holds: a batch of ten 30 MB ids took 774 MB (an
/// outside review). The cut id can end a batch; the next poll goes on after every id it
/// starts (all too long as well), instead of reading the same row again for ever.
#[test]
fn a_huge_user_id_is_read_only_as_far_as_needed_and_passed_over_once() {
    let (rig, pg) = warehouse_rig("wh-import-huge-id");
    pg.sql("CREATE TABLE imp_huge (user_id text, score bigint, updated_at timestamptz)");
    pg.sql(
        "INSERT INTO imp_huge VALUES ('a', 1, '2026-01-05 10:00:00+00'), \
         ('b', 2, '2026-01-05 10:00:01+00'), \
         (repeat('x', 100000), 3, '2026-01-05 10:00:01+00'), \
         (repeat('x', 100000) || 'y', 4, '2026-01-05 10:00:01+00'), \
         ('c', 5, '2026-01-05 10:00:02+00')",
    );
    let mut import = warehouse(
        &rig,
        &pg,
        "import",
        "1",
        &[
            ("WAREHOUSE__IMPORT_TABLE", "imp_huge"),
            ("WAREHOUSE__BATCH_SIZE", "1"),
        ],
    );
    wait_until(
        Duration::from_secs(30),
        "the rows around it imported",
        || counter(&import, "leadscore_warehouse_rows_imported_total") == Some(3.0),
    );
    // A few more polls: the count stays.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        counter(&import, "leadscore_warehouse_rows_skipped_total"),
        Some(1.0)
    );
    let mut users = imported_users(&rig);
    users.sort();
    assert_eq!(users, ["a", "b", "c"]);
    let log = import.log_text();
    assert!(
        log.contains("user_id_bytes=32769") && !log.contains("user_id_bytes=100000"),
        "the id read only as far as needed:\n{log}"
    );
    import.stop();
}

/// Found by an outside check (2026-12-07): after a broker pause an exporter read nothing for
/// minutes while `/readyz` said ready with no partition assigned (its readiness never looked
/// at the group). It is ready once the group assigns it the partitions, not while out of it
/// after losing them, and ready again when they come back.
#[test]
fn export_is_not_ready_while_out_of_its_group_after_its_partitions_were_lost() {
    let (rig, pg) = warehouse_rig("wh-export-lost");
    let export = warehouse(&rig, &pg, "export", "only", &[]);
    let readyz = || {
        export.get("/readyz").map(|(code, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).expect("/readyz answers JSON");
            (code, v)
        })
    };
    wait_until(Duration::from_secs(60), "the exporter ready", || {
        readyz().is_some_and(|(code, v)| code == 200 && v["joined"] == true)
    });
    // The broker paused past the 6 s session timeout: the group takes the partitions.
    rig.broker.signal("-STOP");
    std::thread::sleep(Duration::from_secs(10));
    rig.broker.signal("-CONT");
    let mut out_of_group = 0;
    wait_until(
        Duration::from_secs(120),
        "back in the group after the loss",
        || {
            let lost = export.log_text().contains("partitions lost");
            match readyz() {
                Some((code, v)) if lost && v["joined"] == false => {
                    assert_eq!(code, 503, "{v}");
                    out_of_group += 1;
                    false
                }
                Some((code, v)) => out_of_group > 0 && code == 200 && v["joined"] == true,
                None => false,
            }
        },
    );
    // Still exporting: a change written after the pause reaches the warehouse.
    produce_all(
        &producer(&rig.broker),
        &rig.names.output,
        &[("after", change_json("external:after#1", "after", 7, "Open"))],
    );
    wait_until(
        Duration::from_secs(60),
        "the change after the pause",
        || lead_scores(&pg).get("after") == Some(&7),
    );
}
