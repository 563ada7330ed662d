use super::*;

#[test]
fn user_lists_parse_in_order_and_bad_sizes_say_why() {
    assert_eq!(parse_users("2000,5000"), Ok(ScaleUsers(vec![2000, 5000])));
    assert_eq!(
        parse_users(" 1_000_000 , 10000"),
        Ok(ScaleUsers(vec![1_000_000, 10_000]))
    );
    for (bad, why) in [
        ("abc", "is not a user count"),
        ("2000,,5000", "is not a user count"),
        ("", "is not a user count"),
        ("-5", "is not a user count"),
        ("0", "out of range"),
        ("999", "out of range"),
        ("10000001", "out of range"),
        ("99999999999999999999999", "is not a user count"),
        ("1000,1000,1000,1000,1000,1000,1000,1000,1000", "at most 8"),
    ] {
        let err = parse_users(bad).expect_err(bad);
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn the_childs_line_parses_back_and_gives_bytes_per_user() {
    let rss = Rss {
        users: 2_000,
        before_kib: 10_000,
        after_kib: 11_000,
    };
    let back = Rss::parse(&rss.line()).expect("its own line");
    assert_eq!(back.users, 2_000);
    assert_eq!(back.per_user(), 512.0);
    assert!(Rss::parse("users=2 before_kib=x").is_none());
    assert!(Rss::parse("warming up").is_none());
}

#[test]
fn chunks_of_traffic_neither_share_users_nor_event_ids() {
    let cfg = |seed| GeneratorConfig {
        users: 50,
        events: 500,
        seed,
        ..GeneratorConfig::default()
    };
    let a = traffic(cfg(1), |n| n, 0);
    let b = traffic(cfg(2), |n| 50 + n, a.len());
    let users = |t: &[Event]| -> std::collections::BTreeSet<String> {
        t.iter().map(|e| e.user_id.to_string()).collect()
    };
    assert!(users(&a).is_disjoint(&users(&b)));
    assert!(users(&b)
        .iter()
        .all(|u| number_after(u, "user-").is_some_and(|n| (50..100).contains(&n))));
    let ids = |t: &[Event]| -> std::collections::BTreeSet<String> {
        t.iter()
            .filter_map(|e| e.event_id.as_deref().map(str::to_owned))
            .collect()
    };
    assert!(!ids(&a).is_empty());
    assert!(ids(&a).is_disjoint(&ids(&b)));
    // The stretch's users land anywhere in the population, never outside it.
    let spread_to: std::collections::BTreeSet<usize> = (0..1_000).map(|n| spread(n, 300)).collect();
    assert!(spread_to.iter().all(|&u| u < 300));
    assert!(spread_to.len() > 250, "{}", spread_to.len());
}

/// The lookahead hints change nothing: the same events, with the next users loaded ahead or
/// not, leave the same states, changes and digest.
#[test]
fn loading_users_ahead_leaves_the_same_state_as_one_record_at_a_time() -> Result<()> {
    let engine = seed_canvas_engine()?;
    let events: Vec<Event> = traffic(
        GeneratorConfig {
            users: 400,
            events: 6_000,
            seed: 11,
            ..GeneratorConfig::default()
        },
        |local| local,
        0,
    );
    let run = |ahead: bool| {
        let mut path = ScorerPath::new(TOPIC);
        let mut out = Vec::new();
        let mut changes = 0;
        for (k, batch) in events.chunks(700).enumerate() {
            for i in 0..batch.len() {
                changes += if ahead {
                    path.process_at(&engine, batch, i, &mut out)
                } else {
                    path.process(&engine, &batch[i], &mut out)
                };
            }
            // Checkpoints (and so the table's growth between them) as the scorer has them.
            if k % 2 == 1 {
                path.checkpoint(UserState::encode);
            }
        }
        path.checkpoint(UserState::encode);
        (path, changes)
    };
    let (plain, plain_changes) = run(false);
    let (ahead, ahead_changes) = run(true);
    assert!(plain_changes > 1_000, "{plain_changes}");
    assert_eq!(ahead_changes, plain_changes);
    assert_eq!(ahead.users.len(), plain.users.len());
    assert_eq!(ahead.users.state_digest(), plain.users.state_digest());
    for (user, st) in plain.users.entries() {
        assert_eq!(ahead.users.get(user), Some(st), "{user}");
    }
    assert_eq!(ahead.partition.clock(), plain.partition.clock());
    assert_eq!(
        ahead.partition.pending_timers(),
        plain.partition.pending_timers()
    );
    Ok(())
}

#[test]
fn a_built_state_holds_every_active_user_with_nothing_left_to_checkpoint() -> Result<()> {
    let engine = seed_canvas_engine()?;
    let mut built = Built::build(&engine, 300, 7)?;
    assert_eq!(built.path.events, 3_000);
    assert!(
        built.path.users.len() > 250 && built.path.users.len() <= 300,
        "{}",
        built.path.users.len()
    );
    assert!(
        built
            .path
            .users
            .checkpoint(0, Vec::new(), UserState::encode)
            .is_none(),
        "the dirty set is empty, as after a scorer's checkpoint"
    );
    let (rate, ahead) = built.stretch(&engine, 300, 2_000, 7)?;
    assert!(rate > 0.0 && rate.is_finite());
    assert!(
        ahead > 0.0 && ahead.is_finite(),
        "a stretch of one batch still has both kinds"
    );
    assert_eq!(built.path.events, 5_000);
    assert!(built.path.users.len() <= 300, "the stretch adds no users");
    Ok(())
}

#[test]
fn the_table_and_the_csv_have_a_row_per_size() -> Result<()> {
    let dir = ScratchDir::new("scale-csv")?;
    let csv = dir.path().join("sub/scale.csv");
    let row = |users| Row {
        users,
        events: users * 10,
        engine_rate: 1e6,
        resident: 400.0,
        encoded: 250.0,
        partitions: 2,
        restore: Duration::from_millis(1500),
        restore_rate: 2e5,
        bare_rate: 1e5,
        single_rate: 1.5e6,
    };
    let rows = [row(2_000), row(5_000)];
    write_csv(&csv, &rows)?;
    let text = std::fs::read_to_string(&csv)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(
        lines[1],
        "2000,20000,1000000,400.0,250.0,2,1.500,200000,100000,2.000,0,1500000"
    );
    assert_eq!(lines.len(), 3);
    let opts = ScaleOptions {
        csv: csv.clone(),
        ..ScaleOptions::default()
    };
    let table = report(&opts, &rows);
    let body: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| users"))
        .collect();
    assert_eq!(body.len(), 2, "{table}");
    assert!(
        body[1].starts_with("| 5000 | 50000 | 1000000 | 400.0 |"),
        "{table}"
    );
    Ok(())
}

#[test]
fn a_run_refuses_bad_options_before_measuring() {
    let run_with = |o: ScaleOptions| run(&o).expect_err("refused").to_string();
    assert!(run_with(ScaleOptions {
        users: vec![],
        ..ScaleOptions::default()
    })
    .contains("--scale-users"));
    assert!(run_with(ScaleOptions {
        users: vec![0],
        ..ScaleOptions::default()
    })
    .contains("--scale-users"));
    let e = run_with(ScaleOptions {
        stretch: 0,
        ..ScaleOptions::default()
    });
    assert!(e.contains("--events"), "{e}");
    let e = run_with(ScaleOptions {
        stretch: MAX_STRETCH + 1,
        ..ScaleOptions::default()
    });
    assert!(e.contains("--events"), "{e}");
}
