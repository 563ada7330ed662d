//! `leadscore demo`: the whole pipeline in one process with no setup. An embedded
//! Kafka-protocol broker, the scorer, the handoff with a local Salesforce stand-in, and
//! generated events for a few hundred users over four simulated weeks; a live view of leads
//! crossing the MQL threshold and the stand-in receiving them, and a closing summary. Ends by
//! itself in well under a minute.
//!
//! The generated funnel moves leads forward only (Open, Working, and for some MQL and SQL), so
//! each qualified lead is handed off once. On top of it the demo scripts a few recycled leads
//! ([`recycled_leads`]): handed off, qualified by sales (SQL), then sent back to Nurture, which
//! makes them eligible again, so each of them is handed off twice. The summary counts both.
//!
//! At the end a partner tool's external score arrives over HTTP: the demo posts a Braze
//! `users/track` body to `leadscore ingest`'s API running in the same process, and the lead it
//! scores is handed off like the others. The traffic is dated so that it ends a few days
//! before now, because an attribute update over HTTP takes the time it is received.

use crate::change::{ReasonKind, ScoreChange};
use crate::codec::{self, Format};
use crate::config::{HandoffSettings, Secret};
use crate::dev::broker::DevBroker;
use crate::dev::scratch::ScratchDir;
use crate::dev::standin::StandinConfig;
use crate::event::{Event, EventType, Scalar, ScalarRef, ScoreOp};
use crate::generator::{self, GeneratorConfig};
use crate::handoff::{Funnel, Handoff};
use crate::ops::admin::{self, Health};
use crate::ops::telemetry;
use crate::rules::Rules;
use crate::runtime::shutdown::Shutdown;
use crate::scorer::Scorer;
use crate::timestamp::{format_rfc3339, Millis};
use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub users: usize,
    pub events: usize,
    /// How long producing the events takes (wall clock), so the view has time to show them.
    pub pace: Duration,
    /// The handoff threshold the view highlights.
    pub threshold: i64,
    /// Scripted leads handed off, qualified, then recycled to Nurture (handed off twice).
    pub recycled: usize,
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            users: 300,
            events: 9_000,
            pace: Duration::from_secs(15),
            threshold: 100,
            recycled: 2,
            seed: 2026,
        }
    }
}

/// Runs the demo, printing to stdout.
pub async fn run(opts: DemoOptions) -> Result<()> {
    let started = Instant::now();
    let dir = ScratchDir::new("demo").context("demo scratch directory")?;
    let rules_path = dir.path().join("seed-canvas.toml");
    // The seed canvas, with the Salesforce lead id carried on every score change for the handoff.
    let rules = format!(
        "{}\n[output]\ntracked_attributes = [\"lead_status\", \"salesforce_lead_id\"]\n",
        Rules::SEED_CANVAS
    );
    std::fs::write(&rules_path, rules).context("writing the demo rules")?;

    let broker = DevBroker::start("127.0.0.1:0").await?;
    let mut settings = broker.settings(3)?;
    settings.scorer.rules = Some(rules_path);
    settings.scorer.state_dir = dir.path().join("state");
    // Simulated weeks in the past: the wall clock would decay every score at once.
    settings.scorer.follow_wall_clock = false;
    settings.admin.listen = "127.0.0.1:0".into();

    println!("leadscore demo");
    println!(
        "  broker    embedded Kafka-protocol broker at {}",
        broker.bootstrap_servers()
    );
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let health = Health::new();
    let admin_addr = admin::serve(
        &settings.admin.listen,
        health.clone(),
        telemetry::prometheus(),
        shutdown.clone(),
        axum::Router::new(),
    )
    .await?;
    println!("  metrics   http://{admin_addr}/metrics   (and /healthz, /readyz)");
    println!(
        "  rules     the seed canvas (examples/rules/seed-canvas.toml); MQL above {}",
        opts.threshold
    );

    // The Salesforce stand-in, and the handoff pointed at it.
    let sf_secret = "demo-secret";
    let (sf_addr, standin) = crate::dev::standin::serve(
        "127.0.0.1:0",
        StandinConfig {
            client_id: "leadscore-demo".into(),
            client_secret: Secret::new(sf_secret),
            ..StandinConfig::default()
        },
        shutdown.clone(),
    )
    .await?;
    settings.salesforce.instance_url = format!("http://{sf_addr}");
    settings.salesforce.client_id = "leadscore-demo".into();
    settings.salesforce.client_secret_env = "LEADSCORE_DEMO_SALESFORCE_SECRET".into();
    std::env::set_var(&settings.salesforce.client_secret_env, sf_secret);
    settings.handoff.state_dir = dir.path().join("handoff");
    settings.handoff.lead_id_attribute = Some("salesforce_lead_id".into());
    settings.handoff.threshold = opts.threshold;
    println!("  salesforce stand-in at http://{sf_addr} (leads: http://{sf_addr}/standin/leads)");

    let topics = settings.topics.clone();
    let handoff_settings: HandoffSettings = settings.handoff.clone();
    let bootstrap = broker.bootstrap_servers();
    // The Braze-compatible ingest API, for the external score posted at the end.
    let keys_file = dir.path().join("ingest-api-keys");
    std::fs::write(&keys_file, format!("{DEMO_INGEST_KEY}\n")).context("ingest keys file")?;
    settings.ingest.api_keys_file = Some(keys_file);
    settings.ingest.listen = "127.0.0.1:0".into();
    let ingest = crate::ingest::Ingest::start(&settings, Health::new()).await?;
    let ingest_addr = ingest.local_addr()?;
    let ingest_task = tokio::spawn(ingest.run(shutdown.clone()));
    println!("  ingest    http://{ingest_addr}/users/track (Braze users/track; Bearer {DEMO_INGEST_KEY})");

    let handoff = Handoff::start(settings.clone(), Health::new(), shutdown.clone()).await?;
    let scorer = Scorer::start(settings, health).await?;
    let stop = shutdown.clone();
    let scorer_thread = tokio::task::spawn_blocking(move || scorer.run(stop));
    let handoff_thread = tokio::task::spawn_blocking(move || handoff.run());

    // Four simulated weeks ending a few days before now (the recycle story takes two more
    // days), so the external score received over HTTP at the end comes after all of it.
    let span = GeneratorConfig::default().span;
    let cfg = GeneratorConfig {
        users: opts.users,
        events: opts.events,
        seed: opts.seed,
        start: crate::timestamp::wall_clock_millis() - span - 5 * DAY,
        ..GeneratorConfig::default()
    };
    let events = generator::generate(&cfg);
    let first = events.iter().map(|e| e.time).min().unwrap_or(0);
    let last = events.iter().map(|e| e.time).max().unwrap_or(0);
    let story = recycled_leads(opts.users, opts.recycled, last);
    let story_len: usize = story.iter().map(Vec::len).sum();
    println!(
        "  traffic   {} events from {} users, {} to {} (late events, duplicates, employees, customers,\n            and {} lead(s) recycled to Nurture after sales took them)\n",
        events.len() + story_len,
        opts.users + opts.recycled,
        &format_rfc3339(first)[..10],
        &format_rfc3339(last)[..10],
        opts.recycled
    );

    // The producer: a plain Kafka client, as any user's would be.
    let bootstrap_p = bootstrap.clone();
    let input = topics.input.clone();
    let pace = opts.pace;
    let producer_task = tokio::task::spawn_blocking(move || -> Result<usize> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap_p)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .create()?;
        let send = |e: &Event| {
            let payload = codec::encode_event(Format::Json, e);
            let mut rec = BaseRecord::to(&input)
                .key(e.user_id.as_bytes())
                .payload(&payload);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        };
        let per_slice = (events.len() / 60).max(1);
        let slice_pause = pace / 60;
        for chunk in events.chunks(per_slice) {
            chunk.iter().for_each(send);
            std::thread::sleep(slice_pause);
        }
        // The recycle story in its three acts, each given time to reach Salesforce, as sales
        // would take a day: a lead that reaches SQL before its handoff is sent is not sent.
        for act in &story {
            act.iter().for_each(send);
            producer.flush(Duration::from_secs(30))?;
            std::thread::sleep(STORY_PAUSE);
        }
        // A few bad records, as real producers send now and then: they go to the dead-letter
        // topic and scoring goes on.
        let bad: [&[u8]; 3] = [
            b"not json at all",
            br#"{"user_id":"user-000001","type":"session_start"}"#,
            br#"{"user_id":"user-000002","time":"2099-01-07T10:00:00Z","type":"session_start"}"#,
        ];
        for b in bad {
            let rec = BaseRecord::to(&input).key("user-000001").payload(b);
            let _ = producer.send(rec);
        }
        producer.flush(Duration::from_secs(30))?;
        Ok(events.len() + story_len + bad.len())
    });

    // The live view: another plain consumer, on the score changes.
    let view = tokio::task::spawn_blocking({
        let output = topics.output.clone();
        let handoffs = topics.handoffs.clone();
        let threshold = opts.threshold;
        let done = shutdown.clone();
        let funnel = Funnel::new(&handoff_settings);
        move || watch(&bootstrap, &output, &handoffs, threshold, &funnel, done)
    });

    let produced = producer_task.await.context("producer")??;
    let posted = post_external_score(ingest_addr, opts.users + opts.recycled).await?;
    // Let the scorer drain, then stop everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.trigger();
    scorer_thread.await.context("scorer thread")??;
    handoff_thread.await.context("handoff thread")??;
    ingest_task.await.context("ingest task")??;
    let summary = view.await.context("view")??;
    let dlq = count_records(&broker.bootstrap_servers(), &topics.dlq).unwrap_or(0);
    let in_salesforce = standin
        .leads()
        .values()
        .filter(|f| f.get("lead_status").and_then(|v| v.as_str()) == Some("MQL"))
        .count();
    summary.print(produced + posted, dlq, opts.threshold, started.elapsed());
    println!(
        "  salesforce           {in_salesforce} leads marked MQL by {} API calls ({} token)",
        standin.api_calls(),
        standin.tokens_issued()
    );
    println!("\nNext: `leadscore dev-broker`, `leadscore score` and `leadscore handoff` run the same pieces as services (README).");
    drop(broker);
    drop(dir);
    Ok(())
}

/// The demo's ingest API key (a development key: the demo's API listens on localhost only).
const DEMO_INGEST_KEY: &str = "demo-ingest-key-0123456789";

const DAY: Millis = 24 * 60 * 60_000;

/// A partner tool's external score for a new lead, over HTTP as Braze's `users/track` takes
/// it: first the lead's attributes (its Salesforce id, status, e-mail), then the score. Prints
/// each request and answer; returns how many input events the two requests became (one per
/// attribute).
async fn post_external_score(ingest: std::net::SocketAddr, n: usize) -> Result<usize> {
    let user = generator::user_id(n);
    let client = reqwest::Client::new();
    let url = format!("http://{ingest}/users/track");
    let mut produced = 0;
    for attributes in [
        serde_json::json!({
            "external_id": user,
            "email": format!("partner{n}@initech.example"),
            "lead_status": "Open",
            "salesforce_lead_id": generator::salesforce_lead_id(n),
        }),
        serde_json::json!({"external_id": user, "lead_score": 150}),
    ] {
        let body = serde_json::json!({ "attributes": [attributes] });
        let answer = client
            .post(&url)
            .bearer_auth(DEMO_INGEST_KEY)
            .json(&body)
            .send()
            .await
            .context("posting to the ingest API")?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        println!("\n  POST /users/track {body}\n    -> {status} {text}");
        if !status.is_success() {
            anyhow::bail!("the ingest API answered {status}: {text}");
        }
        produced += attributes.as_object().map_or(0, |o| o.len() - 1);
    }
    // Time for the score change to reach the view and the handoff's batch to Salesforce.
    tokio::time::sleep(STORY_PAUSE).await;
    Ok(produced)
}

/// Wall-clock time between the acts of the recycle story: enough for a score change to go
/// through the scorer and the handoff's batch (`handoff.linger`) to Salesforce.
const STORY_PAUSE: Duration = Duration::from_millis(1500);

/// Scripted recycled leads, numbered after the generated users, their story starting an hour
/// after the generated traffic, in three acts: signed up with a high external score (handed
/// off while Open); qualified by sales a day later (SQL: never moved back to MQL); recycled to
/// Nurture a day after that (a move back before MQL: eligible again, so handed off a second
/// time).
fn recycled_leads(users: usize, count: usize, after: Millis) -> Vec<Vec<Event>> {
    const MINUTE: Millis = 60_000;
    let mut acts = vec![Vec::new(), Vec::new(), Vec::new()];
    for k in 0..count {
        let n = users + k;
        let user = generator::user_id(n);
        let t = after + 60 * MINUTE + k as Millis * MINUTE;
        let attribute = |time: Millis, name: &str, value: String| {
            let mut e = Event::new(user.clone(), time, EventType::AttributeChanged);
            e.name = Some(name.to_string());
            e.value = Some(Scalar::Str(value));
            e
        };
        let mut email = Event::new(user.clone(), t, EventType::EmailAdded);
        email.value = Some(Scalar::Str(format!("recycled{n}@initech.example")));
        let mut score = Event::new(user.clone(), t + 3, EventType::ExternalScore);
        score.score = Some(ScoreOp::Set(150));
        acts[0].extend([
            email,
            attribute(t + 1, "lead_status", "Open".into()),
            attribute(
                t + 2,
                "salesforce_lead_id",
                generator::salesforce_lead_id(n),
            ),
            score,
        ]);
        acts[1].push(attribute(t + DAY, "lead_status", "SQL".into()));
        acts[2].push(attribute(t + 2 * DAY, "lead_status", "Nurture".into()));
    }
    acts
}

#[derive(Default)]
struct Summary {
    changes: usize,
    by_kind: BTreeMap<&'static str, usize>,
    scores: HashMap<String, i64>,
    mqls: Vec<(String, String)>,
    /// Handoffs (`handed_off` outcomes) per user.
    handoffs: HashMap<String, usize>,
    /// Users whose status was seen moving back before MQL (a recycle).
    recycled: HashMap<String, usize>,
    /// The last status seen per user, to notice a recycle.
    statuses: HashMap<String, String>,
    /// Leads over the threshold never handed off because sales had them already (at MQL or
    /// beyond).
    with_sales: usize,
}

impl Summary {
    fn print(&self, produced: usize, dlq: usize, threshold: i64, elapsed: Duration) {
        println!("\nsummary");
        println!("  records produced     {produced}");
        println!("  score changes        {}", self.changes);
        for (k, n) in &self.by_kind {
            println!("    {k:<18} {n}");
        }
        println!("  dead-lettered        {dlq}");
        println!("  leads over {threshold:<9} {}", self.mqls.len());
        let handed = self.handoffs.len();
        let once = self.handoffs.values().filter(|n| **n == 1).count();
        let mut again: Vec<(&String, &usize)> =
            self.handoffs.iter().filter(|(_, n)| **n > 1).collect();
        again.sort();
        let (recycled, unexplained): (Vec<_>, Vec<_>) = again
            .iter()
            .partition(|(u, n)| self.recycled.get(*u).is_some_and(|r| **n <= r + 1));
        println!("  handed off           {handed} leads: {once} once");
        if self.with_sales > 0 {
            println!(
                "    {:<18} already at MQL or beyond, so not touched",
                format!("{} lead(s)", self.with_sales)
            );
        }
        for (user, n) in &recycled {
            println!("    {user:<18} {n} times: recycled to an earlier status after its handoff");
        }
        for (user, n) in &unexplained {
            println!("    {user:<18} {n} times WITHOUT a recycle (a bug: please report it)");
        }
        let mut top: Vec<(&String, &i64)> = self.scores.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        println!("  top leads");
        for (user, score) in top.iter().take(8) {
            let marker = if **score > threshold { "  MQL" } else { "" };
            println!("    {user:<14} {score:>5}{marker}");
        }
        println!("  took                 {:.1} s", elapsed.as_secs_f64());
    }
}

/// Follows the score changes until shutdown, printing MQL crossings and a periodic tally.
fn watch(
    bootstrap: &str,
    topic: &str,
    handoffs: &str,
    threshold: i64,
    funnel: &Funnel,
    done: Shutdown,
) -> Result<Summary> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "leadscore-demo-view")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic, handoffs])?;
    let mut s = Summary::default();
    let mut last_tally = Instant::now();
    let mut latest_time = 0;
    let mut idle_since: Option<Instant> = None;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.topic() == handoffs => {
                idle_since = None;
                if let Ok(o) =
                    serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default())
                {
                    if o["status"] == crate::handoff::HANDED_OFF {
                        let user = o["user_id"].as_str().unwrap_or("?").to_string();
                        *s.handoffs.entry(user).or_default() += 1;
                    }
                    println!(
                        "  SF   lead {} ({}) -> {} (HTTP {}, {} attempt(s))",
                        o["lead_id"].as_str().unwrap_or("?"),
                        o["user_id"].as_str().unwrap_or("?"),
                        o["status"].as_str().unwrap_or("?"),
                        o["http_status"],
                        o["attempts"]
                    );
                }
            }
            Some(Ok(m)) => {
                idle_since = None;
                let Ok(c) = codec::decode_change(Format::Json, m.payload().unwrap_or_default())
                else {
                    continue;
                };
                latest_time = latest_time.max(c.time);
                s.changes += 1;
                if let Some(ScalarRef::Str(status)) = c.attribute("lead_status") {
                    let before = s.statuses.insert(c.user_id.to_string(), status.to_owned());
                    if funnel.is_recycle(before.as_deref(), Some(status)) {
                        println!(
                            "  RECYCLED  {}  {:<12} {} -> {status}: eligible for a handoff again",
                            &format_rfc3339(c.time)[..16],
                            c.user_id,
                            before.as_deref().unwrap_or("?")
                        );
                        *s.recycled.entry(c.user_id.to_string()).or_default() += 1;
                    }
                }
                *s.by_kind.entry(c.reason.kind.as_str()).or_default() += 1;
                s.scores.insert(c.user_id.to_string(), c.score);
                if c.previous_score <= threshold
                    && c.score > threshold
                    && !s.mqls.iter().any(|(u, _)| **u == *c.user_id)
                {
                    print_mql(&c);
                    s.mqls.push((c.user_id.to_string(), format_rfc3339(c.time)));
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "demo view"),
            None => {
                if done.is_triggered() {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                }
            }
        }
        if last_tally.elapsed() >= Duration::from_secs(2) && latest_time > 0 {
            last_tally = Instant::now();
            println!(
                "  .. {}  {} changes, {} leads over {threshold}",
                &format_rfc3339(latest_time)[..16],
                s.changes,
                s.mqls.len()
            );
            let _ = std::io::stdout().flush();
        }
    }
    s.with_sales = s
        .mqls
        .iter()
        .filter(|(u, _)| !s.handoffs.contains_key(u))
        .filter(|(u, _)| funnel.at_or_beyond(s.statuses.get(u).map(String::as_str)))
        .count();
    Ok(s)
}

fn print_mql(c: &ScoreChange) {
    let why = match (c.reason.kind, &c.reason.group) {
        (ReasonKind::Rule, Some(g)) => format!("{g} {:+}", c.delta),
        (k, _) => format!("{k} {:+}", c.delta),
    };
    println!(
        "  MQL  {}  {:<12} {:>4} -> {:<4} ({why})",
        &format_rfc3339(c.time)[..16],
        c.user_id,
        c.previous_score,
        c.score
    );
}

fn count_records(bootstrap: &str, topic: &str) -> Result<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "leadscore-demo-count")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut n = 0;
    for t in md.topics() {
        for p in t.partitions() {
            let (lo, hi) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
            n += (hi - lo).max(0) as usize;
        }
    }
    Ok(n)
}
