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
