//! Helpers for the broker tests: a broker process (the embedded mock via `leadscore
//! dev-broker`, or `tansu` when `LEADSCORE_TEST_BROKER=tansu`), unique topic names, scorer
//! processes, producing and reading back. `files` and `promql` serve the tests that read the
//! repository's deployment files; `postgres` the warehouse tests.
#![allow(dead_code)]

pub mod files;
pub mod postgres;
pub mod promql;
mod rig;

// Not every test binary uses a rig.
#[allow(unused_imports)]
pub use rig::*;

use leadscore::runtime::changelog::Changelog;
use leadscore::state::UserState;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_leadscore");

/// Which broker the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Mock,
    Tansu,
}

impl BrokerKind {
    pub fn from_env() -> BrokerKind {
        match std::env::var("LEADSCORE_TEST_BROKER").as_deref() {
            Ok("tansu") => BrokerKind::Tansu,
            _ => BrokerKind::Mock,
        }
    }
}

/// A broker process, killed on drop.
pub struct Broker {
    pub child: Child,
    pub bootstrap: String,
    pub kind: BrokerKind,
    /// More client properties every test client needs (TLS settings).
    pub client_properties: Vec<(String, String)>,
}

impl Broker {
    /// Sends `sig` (`-STOP`, `-CONT`) to the broker's process: paused, it answers no one
    /// (heartbeats, produce requests), as a broker that hangs.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    }

    /// A broker with `topics` (name, partitions, compacted) created.
    pub fn start(topics: &[(&str, i32, bool)]) -> Broker {
        match BrokerKind::from_env() {
            BrokerKind::Mock => Broker::mock(topics),
            BrokerKind::Tansu => {
                let b = Broker::tansu();
                for (name, partitions, compact) in topics {
                    b.create_topic(name, *partitions, *compact);
                }
                b
            }
        }
    }

    /// `leadscore dev-broker` on a free port; it prints its address first thing. The mock
    /// does not implement CreateTopics, so the dev-broker makes the topics.
    pub fn mock(topics: &[(&str, i32, bool)]) -> Broker {
        Broker::mock_with(topics, &[])
    }

    /// The mock with more `dev-broker` arguments (e.g. `--round-trip-ms`).
    pub fn mock_with(topics: &[(&str, i32, bool)], extra: &[&str]) -> Broker {
        let mut args: Vec<String> = ["dev-broker", "--listen", "127.0.0.1:0", "--partitions", "1"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        for (name, partitions, _) in topics {
            args.push("--topic".into());
            args.push(format!("{name}:{partitions}"));
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start leadscore dev-broker");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the dev-broker address");
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap.servers=")
            .unwrap_or_else(|| panic!("unexpected dev-broker output {line:?}"))
            .to_string();
        Broker {
            child,
            bootstrap,
            kind: BrokerKind::Mock,
            client_properties: Vec::new(),
        }
    }

    /// `tansu broker` with its in-memory engine on a free port.
    pub fn tansu() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu (installed by tests/setup)");
        let bootstrap = format!("127.0.0.1:{port}");
        wait_until(Duration::from_secs(30), "tansu to listen", || {
            std::net::TcpStream::connect(&bootstrap).is_ok()
        });
        Broker {
            child,
            bootstrap,
            kind: BrokerKind::Tansu,
            client_properties: Vec::new(),
        }
    }

    /// The client properties the library's own clients take (`bootstrap.servers` and TLS).
    pub fn properties(&self) -> BTreeMap<String, String> {
        let mut props = BTreeMap::new();
        props.insert("bootstrap.servers".to_string(), self.bootstrap.clone());
        props.extend(self.client_properties.iter().cloned());
        props
    }

    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.client_properties {
            c.set(k, v);
        }
        c
    }

    /// Creates a topic with `partitions` partitions (and compaction when asked), through the
    /// admin API (not on the mock, which lacks it).
    pub fn create_topic(&self, topic: &str, partitions: i32, compact: bool) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = self.client().create().expect("admin client");
        let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        if compact {
            t = t.set("cleanup.policy", "compact");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let r = rt
            .block_on(admin.create_topics([&t], &AdminOptions::new()))
            .expect("create topics");
        for x in r {
            if let Err((name, code)) = x {
                if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    panic!("create topic {name}: {code}");
                }
            }
        }
        wait_until(Duration::from_secs(20), "topic metadata", || {
            partition_count(self, topic) == Some(partitions)
        });
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn partition_count(broker: &Broker, topic: &str) -> Option<i32> {
    let c: BaseConsumer = broker.client().create().ok()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    Some(t.partitions().len() as i32)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `f` until it holds or `timeout` passes (then panics naming `what`).
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Topic and group names unique to one test.
#[derive(Clone, Debug)]
pub struct Names {
    pub input: String,
    pub changelog: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
    /// The lookup directory (`topics.instances`), made only by [`ScorerRig::with_instances`].
    pub instances: String,
}

impl Names {
    pub fn new(test: &str) -> Names {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Names {
            input: format!("in-{tag}"),
            changelog: format!("cl-{tag}"),
            output: format!("out-{tag}"),
            dlq: format!("dlq-{tag}"),
            group: format!("g-{tag}"),
            instances: format!("inst-{tag}"),
        }
    }

    /// The scorer's four topics as [`Broker::start`] takes them: the input, output and
    /// dead-letter topics with `partitions`, the compacted changelog with `changelog_partitions`.
    pub fn scorer_topics(
        &self,
        partitions: i32,
        changelog_partitions: i32,
    ) -> Vec<(&str, i32, bool)> {
        vec![
            (&self.input, partitions, false),
            (&self.changelog, changelog_partitions, true),
            (&self.output, partitions, false),
            (&self.dlq, partitions, false),
        ]
    }
}

/// Waits until `group`'s committed offsets on `topic` account for all `produced` records.
/// (Counting, not comparing with high watermarks: tansu under-reports those.)
pub fn wait_group_caught_up(
    broker: &Broker,
    group: &str,
    topic: &str,
    produced: usize,
    timeout: Duration,
) {
    let n = partition_count(broker, topic).expect("input topic");
    let reader = offset_reader(broker, group);
    wait_until(timeout, "the group to catch up", || {
        committed_offsets(&reader, topic, n)
            .is_some_and(|c| c.iter().sum::<i64>() == produced as i64)
    });
}

/// A client that reads `group`'s committed offsets ([`committed_offsets`]); made once per
/// wait, not per reading (each client starts its own threads and connections).
pub fn offset_reader(broker: &Broker, group: &str) -> BaseConsumer {
    broker
        .client()
        .set("group.id", group)
        .create()
        .expect("offset reader")
}

/// The committed offset of `reader`'s group on each of the first `partitions` partitions of
/// `topic` (0 where it has none), or `None` when the broker does not answer.
pub fn committed_offsets(reader: &BaseConsumer, topic: &str, partitions: i32) -> Option<Vec<i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let _ = tpl.add_partition(topic, p);
    }
    let committed = reader.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
    Some(
        (0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                },
            )
            .collect(),
    )
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "leadscore-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    /// Kept when the test fails, with its services' logs, for a post-mortem.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (logs of the failed test)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The environment variable of each setting (`KAFKA__BOOTSTRAP_SERVERS` is
/// `LEADSCORE__KAFKA__BOOTSTRAP_SERVERS`), in order: a later one overrides an earlier one.
pub fn settings_env(settings: &[(&str, &str)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| (format!("LEADSCORE__{k}"), v.to_string()))
        .collect()
}

/// A `leadscore` service process, killed on drop.
pub struct Service {
    child: Child,
    pub admin_port: u16,
    log: PathBuf,
}

impl Service {
    /// `leadscore <command>` (its words space-separated, as `warehouse import`) with only
    /// `env` (and `PATH`), its stderr appended to `log`.
    pub fn spawn(
        command: &str,
        env: &[(String, String)],
        admin_port: u16,
        log: PathBuf,
    ) -> Service {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(BIN)
            .args(command.split_whitespace())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn leadscore");
        Service {
            child,
            admin_port,
            log,
        }
    }

    /// The process id, for signals and /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or commit anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.child.wait().expect("wait for leadscore")
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM; the service must exit 0. A failure says how it ended (a code or a signal),
    /// whether it had already ended before the SIGTERM, and its log.
    pub fn stop(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "the service had already ended ({status}) before SIGTERM:\n{}",
                self.log_text()
            );
        }
        let status = self.terminate();
        assert!(
            status.success(),
            "SIGTERM: the service ended with {status}, not 0:\n{}",
            self.log_text()
        );
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin_port, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET (the admin endpoint), returning status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A producer with Kafka's default (murmur2) partitioner, as `simulate --partitions` assumes.
pub fn producer(broker: &Broker) -> ThreadedProducer<DefaultProducerContext> {
    broker
        .client()
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer")
}

pub fn produce(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) {
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => panic!("produce to {topic}: {e}"),
        }
    }
}

/// Produces keyed `records` to `topic` in their order, then flushes: all of them are on the
/// broker when it returns.
pub fn produce_all<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: &[(K, V)],
) {
    for (k, v) in records {
        produce(p, topic, Some(k.as_ref()), v.as_ref());
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

/// A tombstone (a record with a null value) keyed by `key`, or keyless.
pub fn produce_tombstone(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: Option<&[u8]>,
) {
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    p.send(rec)
        .unwrap_or_else(|(e, _)| panic!("produce a tombstone to {topic}: {e}"));
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    /// The record timestamp, in milliseconds, when the record has one.
    pub timestamp: Option<i64>,
}

/// Every record of `topic`, partition by partition in offset order.
pub fn read_all(broker: &Broker, topic: &str) -> Vec<Read> {
    let Some(n) = partition_count(broker, topic) else {
        return Vec::new();
    };
    let c: BaseConsumer = broker
        .client()
        .set("group.id", "leadscore-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("reader");
    let mut out = Vec::new();
    for p in 0..n {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .expect("tpl");
        c.assign(&tpl).expect("assign");
        loop {
            match c.poll(Duration::from_secs(10)) {
                Some(Ok(m)) => {
                    let mut headers = HashMap::new();
                    if let Some(h) = m.headers() {
                        for hd in h.iter() {
                            headers.insert(
                                hd.key.to_string(),
                                String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                            );
                        }
                    }
                    out.push(Read {
                        partition: p,
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers,
                        timestamp: m.timestamp().to_millis(),
                    });
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("read {topic}/{p}: {e}"),
                None => panic!("read {topic}/{p}: no record within 10 s"),
            }
        }
    }
    out
}

/// The users' state as the changelog holds it: restored exactly as a new scorer would, into a
/// scratch local store.
pub fn states_from_changelog(broker: &Broker, topic: &str) -> BTreeMap<String, UserState> {
    let dir = TempDir::new("restore");
    let changelog =
        Changelog::open(dir.path(), topic, &broker.properties()).expect("open changelog");
    let n = partition_count(broker, topic).expect("changelog exists");
    let mut users = BTreeMap::new();
    for p in 0..n {
        let restored = changelog.restore(p).expect("restore");
        for (k, v) in restored.entries {
            users.insert(k, UserState::decode(&v).expect("state decodes"));
        }
    }
    users
}

/// `leadscore simulate --partitions N` over `events` (JSONL) with `rules`: user id to its line.
pub fn simulate(
    rules: &Path,
    events: &Path,
    partitions: i32,
) -> BTreeMap<String, serde_json::Value> {
    simulate_with(rules, events, partitions, &[])
}

/// [`simulate`] with more arguments (`--now TIME`).
pub fn simulate_with(
    rules: &Path,
    events: &Path,
    partitions: i32,
    more: &[&str],
) -> BTreeMap<String, serde_json::Value> {
    let out = output_of(
        Command::new(BIN)
            .args(["simulate", "--rules"])
            .arg(rules)
            .arg("--events")
            .arg(events)
            .args(["--partitions", &partitions.to_string()])
            .args(more),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("simulate prints JSON");
            (v["user_id"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect()
}

/// Runs `command` to its end; panics with its stderr unless it succeeds.
pub fn output_of(command: &mut Command) -> std::process::Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `leadscore <command>` (words space-separated) with only `env`, which must fail to
/// start as a configuration error does (exit status 1); returns what it said on stderr.
pub fn configuration_error(command: &str, env: &[(String, String)]) -> String {
    let out = Command::new(BIN)
        .args(command.split_whitespace())
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap_or_else(|e| panic!("cannot run leadscore {command}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "leadscore {command}: {stderr}");
    stderr
}

/// A user's state as `simulate` prints it, for comparison with the simulator's output.
pub fn state_json(user: &str, st: &UserState) -> serde_json::Value {
    leadscore::simulate::user_json(user, st)
}

/// Checks a `/metrics` body with `promtool check metrics` (installed by tests/setup), keeping
/// it in `dir` for a look after a failure.
pub fn promtool_check(dir: &Path, name: &str, text: &str) {
    let file = dir.join(format!("{name}.metrics.txt"));
    std::fs::write(&file, text).expect("write metrics");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("promtool is installed by tests/setup");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of metric `name` in Prometheus text: (labels as written, value), in order.
/// Only the series of `name` itself: `name_bucket` and the like are other names.
pub fn metric_samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let (labels, value) = r.split_once('}')?;
                (labels.to_string(), value)
            } else if rest.starts_with(' ') {
                (String::new(), rest)
            } else {
                return None;
            };
            Some((labels, value.trim().parse::<f64>().ok()?))
        })
        .collect()
}

/// The sum of every series of metric `name` (0 when it has none).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    metric_samples(text, name).iter().map(|(_, v)| v).sum()
}

/// The value of the series of `name` whose labels contain `label` (e.g. `outcome="mql"`).
pub fn metric_with(text: &str, name: &str, label: &str) -> Option<f64> {
    metric_samples(text, name)
        .into_iter()
        .filter(|(l, _)| l.split(',').any(|kv| kv == label))
        .map(|(_, v)| v)
        .reduce(|a, b| a + b)
}

/// The `/metrics` of `service` once it shows consumer lag for `partitions` partitions (lag comes
/// from librdkafka statistics, every `statistics.interval.ms`), checked with promtool.
pub fn scrape_with_lag(service: &Service, dir: &Path, name: &str, partitions: usize) -> String {
    wait_until(Duration::from_secs(30), "lag of every partition", || {
        service.get("/metrics").is_some_and(|(_, text)| {
            metric_samples(&text, "leadscore_consumer_lag_messages").len() == partitions
        })
    });
    let (code, text) = service.get("/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    promtool_check(dir, name, &text);
    text
}
