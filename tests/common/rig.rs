//! The rigs the broker tests start from: [`ScorerRig`] for the scorer process tests and
//! [`HandoffRig`] for the handoff process tests, with [`rules_path`]. Re-exported from
//! `common`.

use super::*;
use leadscore::codec::{self, Format};
use leadscore::generator::{self, GeneratorConfig};

/// The rules file every broker test scores with.
pub fn rules_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/rules")
        .join(name)
}

/// What every scorer process test starts from: a broker with the scorer's topics, names unique
/// to the test, and a scratch directory for the stores, the logs and the events.
pub struct ScorerRig {
    pub broker: Broker,
    pub names: Names,
    pub dir: TempDir,
}

impl ScorerRig {
    /// The scorer's four topics, each with `partitions`.
    pub fn new(test: &str, partitions: i32) -> ScorerRig {
        ScorerRig::start(test, partitions, partitions, false)
    }

    /// The changelog with `changelog_partitions`, the other topics with `partitions`.
    pub fn with_changelog(test: &str, partitions: i32, changelog_partitions: i32) -> ScorerRig {
        ScorerRig::start(test, partitions, changelog_partitions, false)
    }

    /// The scorer's topics and the compacted lookup directory, `names.instances`.
    pub fn with_instances(test: &str, partitions: i32) -> ScorerRig {
        ScorerRig::start(test, partitions, partitions, true)
    }

    fn start(test: &str, partitions: i32, changelog_partitions: i32, instances: bool) -> ScorerRig {
        let names = Names::new(test);
        let mut topics = names.scorer_topics(partitions, changelog_partitions);
        if instances {
            topics.push((&names.instances, 1, true));
        }
        let broker = Broker::start(&topics);
        ScorerRig {
            broker,
            names,
            dir: TempDir::new(test),
        }
    }

    /// The environment of a scorer with the seed canvas, its store in `dir/<state>` and its
    /// admin endpoint on `port`, with `extra` settings (names without `LEADSCORE__`) last.
    pub fn scorer_env(
        &self,
        state: &str,
        port: u16,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let (names, state_dir) = (&self.names, self.dir.path().join(state));
        let mut env = settings_env(&[
            ("KAFKA__BOOTSTRAP_SERVERS", &self.broker.bootstrap),
            ("KAFKA__SESSION_TIMEOUT_MS", "6000"),
            ("KAFKA__HEARTBEAT_INTERVAL_MS", "500"),
            ("TOPICS__INPUT", &names.input),
            ("TOPICS__CHANGELOG", &names.changelog),
            ("TOPICS__OUTPUT", &names.output),
            ("TOPICS__DLQ", &names.dlq),
            ("SCORER__GROUP_ID", &names.group),
            (
                "SCORER__RULES",
                &rules_path("seed-canvas.toml").display().to_string(),
            ),
            ("SCORER__STATE_DIR", &state_dir.display().to_string()),
            ("SCORER__FOLLOW_WALL_CLOCK", "false"),
            ("ADMIN__LISTEN", &format!("127.0.0.1:{port}")),
            ("LOG__LEVEL", "info"),
        ]);
        env.extend(settings_env(extra));
        env
    }

    /// `leadscore score` on a free admin port with its store in `dir/<state>` and its log in
    /// `dir/<state>.log`: [`ScorerRig::scorer_env`], batches of at most 300 ms, then `extra`.
    pub fn scorer(&self, state: &str, extra: &[(&str, &str)]) -> Service {
        self.scorer_logging_to(state, state, extra)
    }

    /// [`ScorerRig::scorer`] logging to `dir/<log>.log`, for scorers that share a store.
    pub fn scorer_logging_to(&self, log: &str, state: &str, extra: &[(&str, &str)]) -> Service {
        let port = free_port();
        let mut settings = vec![("SCORER__BATCH_MAX_WAIT", "300ms")];
        settings.extend_from_slice(extra);
        let env = self.scorer_env(state, port, &settings);
        Service::spawn(
            "score",
            &env,
            port,
            self.dir.path().join(format!("{log}.log")),
        )
    }

    /// Generated events as JSONL in `dir/events.jsonl` (for `simulate`) and as (key, payload)
    /// input records.
    pub fn generated(&self, cfg: &GeneratorConfig) -> (PathBuf, Vec<(String, Vec<u8>)>) {
        let events = generator::generate(cfg);
        let path = self.dir.path().join("events.jsonl");
        let file = std::fs::File::create(&path).expect("events file");
        generator::write_jsonl(&events, std::io::BufWriter::new(file)).expect("write events");
        let records = events
            .iter()
            .map(|e| (e.user_id.to_string(), codec::encode_event(Format::Json, e)))
            .collect();
        (path, records)
    }

    /// [`ScorerRig::generated`], with every record on the input topic.
    pub fn produce_generated(&self, cfg: &GeneratorConfig) -> (PathBuf, Vec<(String, Vec<u8>)>) {
        let (path, records) = self.generated(cfg);
        produce_all(&producer(&self.broker), &self.names.input, &records);
        (path, records)
    }

    /// Waits until the group's committed offsets account for all `produced` input records.
    pub fn wait_caught_up(&self, produced: usize, timeout: Duration) {
        let (broker, names) = (&self.broker, &self.names);
        wait_group_caught_up(broker, &names.group, &names.input, produced, timeout);
    }

    /// The users' state as the changelog holds it.
    pub fn changelog_states(&self) -> BTreeMap<String, UserState> {
        states_from_changelog(&self.broker, &self.names.changelog)
    }

    /// `simulate --partitions N` with the scorers' rules (the seed canvas) over what the input
    /// topic holds (written to `dir/input.jsonl`): user id to its line.
    pub fn simulate_input(&self, partitions: i32) -> BTreeMap<String, serde_json::Value> {
        let events_file = self.dir.path().join("input.jsonl");
        let lines: Vec<String> = read_all(&self.broker, &self.names.input)
            .iter()
            .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
            .collect();
        std::fs::write(&events_file, lines.join("\n") + "\n").expect("write the input events");
        simulate(&rules_path("seed-canvas.toml"), &events_file, partitions)
    }

    /// Waits (60 s at most, then panics naming `what`) until the changelog holds every user of
    /// `expected` as `simulate` prints it.
    pub fn wait_scored_as(&self, expected: &BTreeMap<String, serde_json::Value>, what: &str) {
        wait_until(Duration::from_secs(60), what, || {
            let actual = self.changelog_states();
            expected.iter().all(|(user, want)| {
                actual
                    .get(user)
                    .is_some_and(|st| &state_json(user, st) == want)
            })
        });
    }
}

/// What every handoff process test starts from: a broker with the handoff's topics, a
/// Salesforce stand-in on a runtime of its own, and a scratch directory.
pub struct HandoffRig {
    pub broker: Broker,
    pub names: Names,
    pub handoffs: String,
    pub handoffs_dlq: String,
    pub handoff_changelog: String,
    pub dir: TempDir,
    pub rt: tokio::runtime::Runtime,
    pub standin: leadscore::dev::standin::Standin,
    pub instance_url: String,
}

impl HandoffRig {
    pub fn new(
        test: &str,
        partitions: i32,
        cfg: leadscore::dev::standin::StandinConfig,
    ) -> HandoffRig {
        let names = Names::new(test);
        let handoffs = format!("ho-{}", names.group);
        let handoffs_dlq = format!("hodlq-{}", names.group);
        let handoff_changelog = format!("hocl-{}", names.group);
        let broker = Broker::start(&[
            (&names.output, partitions, false),
            (&handoff_changelog, partitions, true),
            (&handoffs, partitions, false),
            (&handoffs_dlq, partitions, false),
        ]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (addr, standin) = rt
            .block_on(leadscore::dev::standin::serve(
                "127.0.0.1:0",
                cfg,
                leadscore::runtime::shutdown::Shutdown::new(),
            ))
            .expect("stand-in");
        HandoffRig {
            broker,
            names,
            handoffs,
            handoffs_dlq,
            handoff_changelog,
            dir: TempDir::new(test),
            rt,
            standin,
            instance_url: format!("http://{addr}"),
        }
    }

    /// The environment of a handoff process on this rig: topics, group, state directory,
    /// the stand-in, the admin port and the client secret (from the environment, never a flag).
    pub fn env(&self, admin_port: u16, secret: &str) -> Vec<(String, String)> {
        let mut env = settings_env(&[
            ("KAFKA__BOOTSTRAP_SERVERS", &self.broker.bootstrap),
            ("TOPICS__OUTPUT", &self.names.output),
            ("TOPICS__HANDOFFS", &self.handoffs),
            ("TOPICS__HANDOFFS_DLQ", &self.handoffs_dlq),
            ("TOPICS__HANDOFF_CHANGELOG", &self.handoff_changelog),
            ("HANDOFF__GROUP_ID", &self.names.group),
            (
                "HANDOFF__STATE_DIR",
                &self.dir.path().join("h").display().to_string(),
            ),
            ("SALESFORCE__INSTANCE_URL", &self.instance_url),
            ("SALESFORCE__CLIENT_ID", "leadscore-dev"),
            ("ADMIN__LISTEN", &format!("127.0.0.1:{admin_port}")),
        ]);
        env.push((
            "LEADSCORE_SALESFORCE_CLIENT_SECRET".to_string(),
            secret.to_string(),
        ));
        env
    }
}

/// The generator's default traffic for `users` users: `events` events from `seed`.
pub fn traffic(users: usize, events: usize, seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        users,
        events,
        seed,
        ..GeneratorConfig::default()
    }
}
