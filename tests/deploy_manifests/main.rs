//! The deployment files checked against what the binary accepts, so that a renamed setting,
//! subcommand, flag, port, probe path, topic or metric breaks a test instead of a deployment:
//! `Dockerfile`, `.dockerignore`, `docker-compose.yml` (Kafka, the topics, the scorer, the
//! handoff and the Salesforce stand-in), `deploy/prometheus/`, `deploy/grafana/`,
//! `deploy/docker/leadscore.toml`, `deploy/kubernetes/` (the scorer's StatefulSet, the
//! handoff's Deployment, the Salesforce Secret, the ServiceMonitor and the PrometheusRule) and
//! the variables `docs/operations.md` names.
//! Nothing here needs Docker, Kubernetes or a network: the files are parsed, settings are loaded
//! with `Settings::load_from`, subcommands and flags are checked by running the built binary
//! with `--help`, and metric names and labels are read from the sources that record them.

#[path = "../common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::files::{read, root, str_key, yaml, yaml_docs};
use common::promql::{grouping_labels, metric_names, metric_uses};
use leadscore::config::{ConfigError, Settings};
use leadscore::ops::telemetry;
use leadscore::runtime::kafka::TopicSpec;
use leadscore::{handoff, scorer};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

// ---------------------------------------------------------------------------------------------
// Reading files
// ---------------------------------------------------------------------------------------------

/// The value at a dotted path of mapping keys; panics naming the path when it is missing.
fn at<'a>(value: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(value, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("missing key {path:?} (at {key:?}) in {v:?}"))
    })
}

fn str_at<'a>(value: &'a Yaml, path: &str) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn seq_at<'a>(value: &'a Yaml, path: &str) -> &'a [Yaml] {
    at(value, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{path} is not a list"))
}

/// A scalar as the text a container would see (compose and Kubernetes stringify numbers).
fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(scalar)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What the binary accepts
// ---------------------------------------------------------------------------------------------

/// The variables among `env` loaded over `file` as the service would load them. Every
/// `LEADSCORE*` variable must be a setting (`LEADSCORE__SECTION__KEY`) or the one
/// `salesforce.client_secret_env` names, which holds the Salesforce secret and is no setting.
fn load_settings(origin: &str, file: Option<(&str, &str)>, env: &[(String, String)]) -> Settings {
    let settings = Settings::load_from(file, env.iter().cloned())
        .unwrap_or_else(|e| panic!("{origin}: the settings do not load: {e}"));
    let secret_env = &settings.salesforce.client_secret_env;
    for (name, _) in env {
        assert!(
            !name.starts_with("LEADSCORE") || name.starts_with("LEADSCORE__") || name == secret_env,
            "{origin}: {name} is neither a setting (settings are LEADSCORE__SECTION__KEY) nor \
             salesforce.client_secret_env ({secret_env}), and the binary would ignore it"
        );
    }
    settings
}

/// Whether `var` names a setting, whatever its value: a value of the wrong type is fine here,
/// an unknown key is not.
fn assert_setting_name(var: &str, origin: &str) {
    match Settings::load_from(None, [(var.to_string(), "x".to_string())]) {
        Ok(_) | Err(ConfigError::Invalid { .. }) => {}
        Err(e) => panic!("{origin} names {var}, which is not a setting: {e}"),
    }
}

fn admin_port(settings: &Settings) -> u16 {
    settings
        .admin
        .listen_addr()
        .expect("admin.listen is checked at load")
        .port()
}

/// Runs `leadscore ARGS... --help`: succeeds only when the subcommand and the options before
/// `--help` are ones the binary accepts. Returns the help text.
fn assert_binary_accepts(args: &[String], origin: &str) -> String {
    assert!(!args.is_empty(), "{origin}: no subcommand");
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run leadscore");
    assert!(
        out.status.success(),
        "{origin}: `leadscore {} --help` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `--flag` in an argument list.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].as_str())
}

/// Every metric the binary exports, from its one table (`telemetry::METRICS`).
fn known_metrics() -> BTreeSet<String> {
    telemetry::METRICS
        .iter()
        .map(|m| m.name.to_string())
        .collect()
}

/// The metrics of the handoff (and its Salesforce client) alone.
fn handoff_metrics() -> BTreeSet<String> {
    telemetry::METRICS
        .iter()
        .filter(|m| m.owner == telemetry::Owner::Handoff)
        .map(|m| m.name.to_string())
        .collect()
}

/// The metric names the table declares as histograms.
fn histograms() -> BTreeSet<String> {
    let histograms: BTreeSet<String> = telemetry::METRICS
        .iter()
        .filter(|m| m.kind == telemetry::Kind::Histogram)
        .map(|m| m.name.to_string())
        .collect();
    assert!(histograms.contains(telemetry::EVENT_TO_OUTPUT_SECONDS));
    assert!(histograms.contains(telemetry::HANDOFF_BATCH_SECONDS));
    histograms
}

/// The label names each metric carries, by metric name, from the table.
fn recorded_labels() -> BTreeMap<String, Option<BTreeSet<String>>> {
    telemetry::METRICS
        .iter()
        .map(|m| {
            (
                m.name.to_string(),
                Some(m.labels.iter().map(|l| l.name.to_string()).collect()),
            )
        })
        .collect()
}

/// Whether `value` is one of the bounded values the table gives label `label` of `metric`.
fn label_value_exists(metric: &str, label: &str, value: &str) -> bool {
    telemetry::METRICS
        .iter()
        .filter(|m| m.name == metric)
        .flat_map(|m| m.labels.iter())
        .filter(|l| l.name == label)
        .any(|l| l.values.list().is_none_or(|values| values.contains(&value)))
}

/// A Prometheus series name without the histogram suffixes.
fn base_metric(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml
// ---------------------------------------------------------------------------------------------

fn compose() -> Yaml {
    yaml("docker-compose.yml")
}

fn compose_service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    at(compose, &format!("services.{name}"))
}

/// A service's `environment`, in either compose form (mapping or `KEY=VALUE` list).
fn compose_env(service: &Yaml) -> Vec<(String, String)> {
    match service.get("environment") {
        None => Vec::new(),
        Some(Yaml::Mapping(map)) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Yaml::Sequence(items)) => items
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(other) => panic!("environment is neither a mapping nor a list: {other:?}"),
    }
}

/// The settings a compose service runs with: no `--config`, so the defaults and its environment.
fn compose_settings(service: &str) -> Settings {
    let compose = compose();
    let env = compose_env(compose_service(&compose, service));
    assert!(
        env.iter().any(|(k, _)| k.starts_with("LEADSCORE__")),
        "the {service} service sets no LEADSCORE__ variable"
    );
    load_settings(&format!("docker-compose.yml {service}"), None, &env)
}

fn compose_scorer_settings() -> Settings {
    compose_settings("scorer")
}

fn compose_handoff_settings() -> Settings {
    compose_settings("handoff")
}

/// `(source, target)` of a service's volumes in short syntax (`SOURCE:TARGET[:MODE]`).
fn compose_volumes(service: &Yaml) -> Vec<(String, String)> {
    service
        .get("volumes")
        .map(strings)
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let mut parts = v.split(':');
            let source = parts.next().unwrap_or_default().to_string();
            let target = parts.next().unwrap_or_else(|| panic!("volume {v:?}"));
            (source, target.to_string())
        })
        .collect()
}

/// Container ports a service publishes (`HOST:CONTAINER`, `IP:HOST:CONTAINER` or `CONTAINER`).
fn compose_container_ports(service: &Yaml) -> Vec<u16> {
    service
        .get("ports")
        .map(strings)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let container = p.rsplit(':').next().unwrap_or(p);
            let container = container.split('/').next().unwrap_or(container);
            container.parse().unwrap_or_else(|_| panic!("port {p:?}"))
        })
        .collect()
}

/// The named volume a service mounts at `dir`.
fn compose_named_volume_at(compose: &Yaml, service: &str, dir: &Path) -> String {
    let volumes = compose_volumes(compose_service(compose, service));
    let (source, _) = volumes
        .iter()
        .find(|(_, target)| Path::new(target) == dir)
        .unwrap_or_else(|| panic!("{service}: no volume at {} in {volumes:?}", dir.display()));
    assert!(
        at(compose, "volumes").get(source.as_str()).is_some(),
        "{service}: the state volume {source} is a named volume"
    );
    source.clone()
}

#[test]
fn compose_scorer_environment_loads_as_settings() {
    let settings = compose_scorer_settings();
    assert_eq!(settings.kafka.get("bootstrap.servers"), Some("kafka:9092"));
    assert!(
        settings.scorer.rules.is_some(),
        "the scorer needs scorer.rules"
    );
}

/// A service's command line; its first word must be `subcommand`, and the binary must accept
/// it. Returns the command and the subcommand's help.
fn compose_command(service: &str, subcommand: &str) -> (Vec<String>, String) {
    let command = strings(at(compose_service(&compose(), service), "command"));
    assert_eq!(command[0], subcommand);
    let help = assert_binary_accepts(&command, &format!("docker-compose.yml {service} command"));
    (command, help)
}

#[test]
fn compose_scorer_command_is_a_subcommand_the_binary_accepts() {
    compose_command("scorer", "score");
}

#[test]
fn compose_scorer_publishes_the_admin_port_and_keeps_its_state_dir_on_a_volume() {
    let settings = compose_scorer_settings();
    let compose = compose();
    let scorer = compose_service(&compose, "scorer");
    assert_eq!(
        compose_container_ports(scorer),
        [admin_port(&settings)],
        "the published port is admin.listen's"
    );
    compose_named_volume_at(&compose, "scorer", &settings.scorer.state_dir);
    assert_eq!(str_at(scorer, "build"), ".");
}

#[test]
fn compose_scorer_rules_are_a_rules_file_the_image_ships() {
    let settings = compose_scorer_settings();
    let rules = settings.scorer.rules.expect("scorer.rules");
    assert_image_ships_rules(&rules, "docker-compose.yml");
}

#[test]
fn compose_scorer_starts_after_the_topics_exist_on_the_advertised_kafka_listener() {
    let compose = compose();
    let scorer = compose_service(&compose, "scorer");
    assert_eq!(
        str_at(scorer, "depends_on.topics.condition"),
        "service_completed_successfully"
    );
    let settings = compose_scorer_settings();
    let kafka_env: BTreeMap<String, String> = compose_env(compose_service(&compose, "kafka"))
        .into_iter()
        .collect();
    let advertised: Vec<&str> = kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        .split(',')
        .filter_map(|l| l.split_once("://").map(|(_, addr)| addr))
        .collect();
    let bootstrap = settings.kafka.get("bootstrap.servers").expect("bootstrap");
    assert!(
        advertised.contains(&bootstrap),
        "{bootstrap} is not among the advertised listeners {advertised:?}"
    );
    assert!(advertised.contains(&"localhost:29092"), "{advertised:?}");
    assert!(compose_container_ports(compose_service(&compose, "kafka")).contains(&29092));
    assert!(
        kafka_env["KAFKA_PROCESS_ROLES"].contains("controller"),
        "KRaft mode"
    );
}

/// The handoff's settings next to the scorer's in one deployment: the same cluster and topics
/// (`topics_why` says why the topics must agree), the scorer's output format, its own group.
fn assert_handoff_agrees_with_scorer(handoff: &Settings, scorer: &Settings, topics_why: &str) {
    assert_eq!(
        handoff.kafka.get("bootstrap.servers"),
        scorer.kafka.get("bootstrap.servers"),
        "one Kafka cluster"
    );
    assert_eq!(handoff.topics, scorer.topics, "{topics_why}");
    assert_eq!(
        handoff.scorer.output_format, scorer.scorer.output_format,
        "the handoff decodes score changes with scorer.output_format"
    );
    assert_ne!(handoff.handoff.group_id, scorer.scorer.group_id);
}

#[test]
fn compose_handoff_environment_loads_as_settings_that_agree_with_the_scorer() {
    let handoff = compose_handoff_settings();
    let scorer = compose_scorer_settings();
    assert_handoff_agrees_with_scorer(
        &handoff,
        &scorer,
        "the handoff reads the topics the scorer writes",
    );
    assert_ne!(
        admin_port(&handoff),
        admin_port(&scorer),
        "both admin ports are published on the host"
    );
    for settings in [&handoff, &scorer] {
        assert!(
            settings
                .admin
                .listen_addr()
                .expect("listen")
                .ip()
                .is_unspecified(),
            "{}: published ports and Prometheus reach only 0.0.0.0",
            settings.admin.listen
        );
    }
}

#[test]
fn compose_handoff_command_is_a_subcommand_the_binary_accepts() {
    compose_command("handoff", "handoff");
}

#[test]
fn compose_handoff_publishes_its_admin_port_and_keeps_its_state_dir_on_its_own_volume() {
    let settings = compose_handoff_settings();
    let compose = compose();
    assert_eq!(
        compose_container_ports(compose_service(&compose, "handoff")),
        [admin_port(&settings)],
        "the published port is admin.listen's"
    );
    let state_dir = &settings.handoff.state_dir;
    let volume = compose_named_volume_at(&compose, "handoff", state_dir);
    let scorer_volume = compose_named_volume_at(
        &compose,
        "scorer",
        &compose_scorer_settings().scorer.state_dir,
    );
    assert_ne!(volume, scorer_volume, "each service has its own store");
    // A fresh named volume takes the owner of the image's directory; a directory the image
    // lacks would be created for root, and the non-root user could not write its store.
    let image_volumes = find(&runtime_stage(), "VOLUME").join(" ");
    assert!(
        image_volumes.contains(&state_dir.display().to_string()),
        "handoff.state_dir {} is not the image's volume ({image_volumes})",
        state_dir.display()
    );
}

#[test]
fn compose_handoff_starts_after_the_topics_and_the_salesforce_standin() {
    let compose = compose();
    let handoff = compose_service(&compose, "handoff");
    assert_eq!(
        str_at(handoff, "depends_on.topics.condition"),
        "service_completed_successfully"
    );
    assert!(
        at(handoff, "depends_on").get("salesforce").is_some(),
        "the handoff starts after the stand-in"
    );
    let prometheus = strings(at(compose_service(&compose, "prometheus"), "depends_on"));
    assert!(
        prometheus.contains(&"handoff".to_string()),
        "{prometheus:?}"
    );
}

#[test]
fn compose_handoff_stops_and_restarts_like_the_scorer() {
    let compose = compose();
    let scorer = compose_service(&compose, "scorer");
    let handoff = compose_service(&compose, "handoff");
    for key in ["stop_grace_period", "restart"] {
        assert_eq!(
            handoff.get(key).map(scalar),
            scorer.get(key).map(scalar),
            "{key}"
        );
    }
    assert_eq!(str_at(handoff, "stop_grace_period"), "60s");
}

#[test]
fn compose_handoff_and_standin_run_the_image_the_scorer_builds() {
    let compose = compose();
    let scorer = compose_service(&compose, "scorer");
    let image = str_at(scorer, "image");
    assert_eq!(str_at(scorer, "build"), ".");
    for name in ["handoff", "salesforce"] {
        let service = compose_service(&compose, name);
        assert_eq!(str_at(service, "image"), image, "{name}");
        // Compose skips pulling an image another service builds, and builds it once.
        assert!(
            service.get("build").is_none(),
            "{name} builds the image again"
        );
    }
}

#[test]
fn compose_standin_command_is_a_subcommand_with_flags_the_binary_accepts() {
    let (command, help) = compose_command("salesforce", "salesforce-standin");
    for name in ["--listen", "--client-id"] {
        assert!(flag(&command, name).is_some(), "the stand-in sets {name}");
        assert!(
            help.contains(name),
            "{name} is no flag of salesforce-standin"
        );
    }
    let listen: std::net::SocketAddr = flag(&command, "--listen")
        .expect("--listen")
        .parse()
        .expect("--listen is a socket address");
    assert!(
        listen.ip().is_unspecified(),
        "the stand-in listens on {listen}, which other containers cannot reach"
    );
}

#[test]
fn compose_handoff_reaches_the_standin_with_the_credentials_it_accepts() {
    let settings = compose_handoff_settings();
    let compose = compose();
    let command = strings(at(compose_service(&compose, "salesforce"), "command"));
    let port: u16 = flag(&command, "--listen")
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("--listen HOST:PORT");
    assert_eq!(
        settings.salesforce.instance_url,
        format!("http://salesforce:{port}"),
        "salesforce.instance_url is the stand-in's service name and port"
    );
    assert!(
        compose_container_ports(compose_service(&compose, "salesforce")).contains(&port),
        "the stand-in's port is published, for GET /standin/leads from the host"
    );
    assert_eq!(
        flag(&command, "--client-id"),
        Some(settings.salesforce.client_id.as_str()),
        "salesforce.client_id is the id the stand-in accepts"
    );

    // The secret reaches the handoff through the variable its settings name, and the stand-in
    // through the one its help names; both hold the same value.
    let secret_env = &settings.salesforce.client_secret_env;
    assert!(settings.salesforce.client_secret_file.is_none());
    let handoff_env: BTreeMap<String, String> = compose_env(compose_service(&compose, "handoff"))
        .into_iter()
        .collect();
    let standin_env: BTreeMap<String, String> =
        compose_env(compose_service(&compose, "salesforce"))
            .into_iter()
            .collect();
    let help = assert_binary_accepts(&command[..1], "salesforce-standin");
    assert!(
        help.contains(secret_env.as_str()),
        "the stand-in does not read {secret_env}: {help}"
    );
    let secret = handoff_env
        .get(secret_env)
        .unwrap_or_else(|| panic!("the handoff has no {secret_env}"));
    assert!(!secret.is_empty());
    assert_eq!(standin_env.get(secret_env), Some(secret));
    let secret_in_handoff = settings
        .salesforce
        .client_secret_with(|name| handoff_env.get(name).cloned())
        .expect("the handoff finds its secret");
    assert_eq!(secret_in_handoff.expose(), secret);
}

/// One `kafka-topics.sh --create` call of the topics service.
#[derive(Debug, Default)]
struct TopicCreate {
    bootstrap: String,
    topic: String,
    partitions: i32,
    replication: i32,
    configs: BTreeMap<String, String>,
}

fn compose_topic_creates() -> Vec<TopicCreate> {
    let compose = compose();
    let topics = compose_service(&compose, "topics");
    let script = strings(at(topics, "command")).join("\n");
    script
        .split("kafka-topics.sh")
        .skip(1)
        .filter(|call| call.contains("--create"))
        .map(|call| {
            let words: Vec<&str> = call.split_whitespace().collect();
            let mut create = TopicCreate::default();
            for pair in words.windows(2) {
                match pair[0] {
                    "--bootstrap-server" => create.bootstrap = pair[1].to_string(),
                    "--topic" => create.topic = pair[1].to_string(),
                    "--partitions" => create.partitions = pair[1].parse().expect("partitions"),
                    "--replication-factor" => {
                        create.replication = pair[1].parse().expect("replication")
                    }
                    "--config" => {
                        let (k, v) = pair[1].split_once('=').expect("--config K=V");
                        create.configs.insert(k.to_string(), v.to_string());
                    }
                    _ => {}
                }
            }
            create
        })
        .collect()
}

/// The topics both services create when missing, by name; a topic both need (the score
/// changes) must be specified alike by both.
fn topics_the_services_need(scorer: &Settings, handoff: &Settings) -> BTreeMap<String, TopicSpec> {
    let mut out: BTreeMap<String, TopicSpec> = BTreeMap::new();
    for spec in scorer::topic_specs(scorer)
        .into_iter()
        .chain(handoff::topic_specs(handoff))
    {
        if let Some(seen) = out.get(&spec.name) {
            assert_eq!(
                (seen.partitions, seen.replication, &seen.config),
                (spec.partitions, spec.replication, &spec.config),
                "{}: the services would create it differently",
                spec.name
            );
        }
        out.insert(spec.name.clone(), spec);
    }
    out
}

#[test]
fn compose_creates_every_topic_the_scorer_and_the_handoff_need_as_they_would() {
    let scorer = compose_scorer_settings();
    let handoff = compose_handoff_settings();
    let wanted = topics_the_services_need(&scorer, &handoff);
    let creates = compose_topic_creates();
    let created: BTreeSet<&str> = creates.iter().map(|c| c.topic.as_str()).collect();
    let names: BTreeSet<&str> = wanted.keys().map(String::as_str).collect();
    assert_eq!(created, names);
    assert_eq!(creates.len(), created.len(), "a topic is created twice");
    for t in [&scorer.topics, &handoff.topics] {
        for (key, name) in t.names() {
            assert!(created.contains(name), "{key} {name} is not created");
        }
    }
    for c in &creates {
        let spec = &wanted[&c.topic];
        assert_eq!(c.partitions, spec.partitions, "{}: partitions", c.topic);
        assert_eq!(c.replication, spec.replication, "{}: replication", c.topic);
        let configs: BTreeMap<String, String> = spec.config.iter().cloned().collect();
        assert_eq!(c.configs, configs, "{}: --config", c.topic);
        assert_eq!(
            Some(c.bootstrap.as_str()),
            scorer.kafka.get("bootstrap.servers"),
            "{}",
            c.topic
        );
    }
    let by_name = |name: &str| creates.iter().find(|c| c.topic == name).expect(name);
    // Each changelog is co-partitioned with what its service consumes, or it refuses to start.
    for (changelog, consumed) in [
        (&scorer.topics.changelog, &scorer.topics.input),
        (&handoff.topics.handoff_changelog, &handoff.topics.output),
    ] {
        assert_eq!(
            by_name(changelog).partitions,
            by_name(consumed).partitions,
            "{changelog} and {consumed}"
        );
        assert_eq!(
            by_name(changelog)
                .configs
                .get("cleanup.policy")
                .map(String::as_str),
            Some("compact"),
            "{changelog}"
        );
    }
    for dlq in [&scorer.topics.dlq, &handoff.topics.handoffs_dlq] {
        assert_eq!(
            by_name(dlq)
                .configs
                .get("max.message.bytes")
                .map(String::as_str),
            Some("16777216"),
            "{dlq}"
        );
    }
}

/// The compose services the Prometheus of `deploy/prometheus/` scrapes, with their job names.
const SCRAPED: [(&str, &str); 2] = [
    ("scorer", "leadscore-scorer"),
    ("handoff", "leadscore-handoff"),
];

#[test]
fn prometheus_scrapes_each_service_admin_port_at_metrics_under_its_job() {
    let compose = compose();
    let mount = compose_volumes(compose_service(&compose, "prometheus"))
        .into_iter()
        .find(|(_, target)| target == "/etc/prometheus/prometheus.yml")
        .expect("prometheus.yml mounted");
    assert_eq!(mount.0, "./deploy/prometheus/prometheus.yml");

    let config = yaml("deploy/prometheus/prometheus.yml");
    let jobs = seq_at(&config, "scrape_configs");
    assert_eq!(jobs.len(), SCRAPED.len());
    for (service, job_name) in SCRAPED {
        let settings = compose_settings(service);
        let target = format!("{service}:{}", admin_port(&settings));
        let job = jobs
            .iter()
            .find(|job| {
                seq_at(job, "static_configs")
                    .iter()
                    .any(|sc| strings(at(sc, "targets")).contains(&target))
            })
            .unwrap_or_else(|| panic!("no scrape job targets {target}"));
        assert_eq!(str_at(job, "job_name"), job_name, "{target}");
        let path = job.get("metrics_path").and_then(Yaml::as_str);
        assert_eq!(path.unwrap_or("/metrics"), "/metrics");
        assert!(
            compose_container_ports(compose_service(&compose, service))
                .contains(&admin_port(&settings)),
            "{service} publishes what Prometheus scrapes"
        );
    }
}

#[test]
fn grafana_provisions_the_prometheus_datasource_and_the_dashboards_directory() {
    let compose = compose();
    let grafana = compose_volumes(compose_service(&compose, "grafana"));
    let target_of = |source: &str| {
        grafana
            .iter()
            .find(|(s, _)| s == source)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("{source} is not mounted into grafana"))
    };
    assert_eq!(
        target_of("./deploy/grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboards_dir = target_of("./deploy/grafana/dashboards");

    let providers = yaml("deploy/grafana/provisioning/dashboards/leadscore.yml");
    let provider = &seq_at(&providers, "providers")[0];
    assert_eq!(str_at(provider, "type"), "file");
    assert_eq!(str_at(provider, "options.path"), dashboards_dir);

    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &seq_at(&datasources, "datasources")[0];
    assert_eq!(str_at(ds, "type"), "prometheus");
    let prometheus_port = compose_container_ports(compose_service(&compose, "prometheus"))[0];
    assert_eq!(
        str_at(ds, "url"),
        format!("http://prometheus:{prometheus_port}")
    );
    // The dashboard's `datasource` variable starts at the default data source of its type.
    assert_eq!(at(ds, "isDefault").as_bool(), Some(true));
    assert_eq!(str_at(ds, "type"), dashboard_datasource_variable()["query"]);
}

#[test]
fn prometheus_loads_the_alert_rules_mounted_beside_its_config() {
    let config = yaml("deploy/prometheus/prometheus.yml");
    assert_eq!(strings(at(&config, "rule_files")), ["alerts.yml"]);
    let mounts = compose_volumes(compose_service(&compose(), "prometheus"));
    assert!(
        mounts.contains(&(
            "./deploy/prometheus/alerts.yml".to_string(),
            "/etc/prometheus/alerts.yml".to_string()
        )),
        "alerts.yml is not mounted beside prometheus.yml: {mounts:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------------------------

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/dashboards/leadscore.json")).expect("dashboard JSON")
}

/// Every value of the given keys anywhere in a JSON document.
fn collect<'a>(value: &'a Json, keys: &[&str], out: &mut Vec<&'a Json>) {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                if keys.contains(&k.as_str()) {
                    out.push(v);
                }
                collect(v, keys, out);
            }
        }
        Json::Array(items) => items.iter().for_each(|v| collect(v, keys, out)),
        _ => {}
    }
}

/// Panel queries (`expr`) and template-variable queries (`query`, `definition`).
fn dashboard_queries(dashboard: &Json) -> Vec<String> {
    let mut found = Vec::new();
    collect(dashboard, &["expr", "query", "definition"], &mut found);
    found
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The dashboard's `datasource` template variable.
fn dashboard_datasource_variable() -> Json {
    dashboard()["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == "datasource")
        .cloned()
        .expect("a template variable named datasource")
}

fn dashboard_datasource_uids() -> BTreeSet<String> {
    let dashboard = dashboard();
    let mut found = Vec::new();
    collect(&dashboard, &["datasource"], &mut found);
    found
        .into_iter()
        .filter_map(|ds| ds.get("uid").and_then(Json::as_str).map(str::to_string))
        .collect()
}

/// Every panel that is not a row, with the title of the row it sits under.
fn dashboard_panels(dashboard: &Json) -> Vec<(String, &Json)> {
    let mut out = Vec::new();
    let mut row = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            row = panel["title"].as_str().expect("row title").to_string();
            for inner in panel["panels"].as_array().into_iter().flatten() {
                out.push((row.clone(), inner));
            }
        } else {
            out.push((row.clone(), panel));
        }
    }
    out
}

fn panel_exprs(panel: &Json) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect()
}

/// The base names of every metric the dashboard queries.
fn dashboard_metrics(dashboard: &Json) -> BTreeSet<String> {
    dashboard_queries(dashboard)
        .iter()
        .flat_map(|e| metric_names(e))
        .map(|n| base_metric(&n).to_string())
        .collect()
}

/// The job matcher each service's queries carry: `job=~"$<variable>"`.
const SCORER_JOB: &str = "$scorer_job";
const HANDOFF_JOB: &str = "$handoff_job";

/// The job a query selects, from its `job=~"$..."` matchers; every metric must have one.
fn selected_job(expr: &str) -> String {
    let jobs: BTreeSet<String> = metric_uses(expr)
        .into_iter()
        .map(|u| {
            u.matchers
                .iter()
                .find(|(label, op, _)| label == "job" && op == "=~")
                .map(|(_, _, value)| value.clone())
                .unwrap_or_else(|| panic!("{} has no job=~ matcher in {expr}", u.name))
        })
        .collect();
    assert_eq!(jobs.len(), 1, "one service per query: {expr}");
    jobs.into_iter().next().expect("one")
}

/// Every panel and query picks its data source through the `datasource` variable, so the
/// dashboard imports into any Grafana, whatever its data sources' uids.
#[test]
fn dashboard_selects_its_data_source_through_a_variable_not_a_fixed_uid() {
    let variable = dashboard_datasource_variable();
    assert_eq!(variable["type"], "datasource");
    assert_eq!(variable["query"], "prometheus");
    assert_eq!(
        dashboard_datasource_uids(),
        BTreeSet::from(["${datasource}".to_string()]),
        "a panel or query names a fixed data source uid"
    );
    let dashboard = dashboard();
    for (row, panel) in dashboard_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for ds in std::iter::once(&panel["datasource"]).chain(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        ) {
            assert_eq!(
                ds["uid"], "${datasource}",
                "{row} / {title}: data source {ds}"
            );
        }
    }
}

#[test]
fn dashboard_queries_only_metrics_the_binary_exports() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "leadscore");
    let known = known_metrics();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 10, "{queries:?}");
    for expr in &queries {
        for name in metric_names(expr) {
            assert!(
                known.contains(base_metric(&name)),
                "{name} (in {expr}) is not a metric of telemetry::METRICS"
            );
        }
    }
}

#[test]
fn dashboard_queries_histograms_by_their_series_and_other_metrics_by_name() {
    let histograms = histograms();
    for expr in dashboard_queries(&dashboard()) {
        for name in metric_names(&expr) {
            let base = base_metric(&name);
            if histograms.contains(base) {
                assert_ne!(name, base, "histogram {base} has no bare series: {expr}");
            } else {
                assert_eq!(name, base, "{base} is no histogram: {expr}");
            }
        }
    }
    let quantiles = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|e| e.contains("histogram_quantile"))
        .collect::<Vec<_>>();
    assert!(!quantiles.is_empty());
    for q in quantiles {
        assert!(
            metric_names(&q).iter().all(|n| n.ends_with("_bucket")),
            "{q}"
        );
        assert!(q.contains("by (le)"), "{q}");
    }
}

#[test]
fn dashboard_shows_the_operational_metrics() {
    let shown = dashboard_metrics(&dashboard());
    for wanted in [
        telemetry::EVENTS_CONSUMED,
        telemetry::EVENTS_APPLIED,
        telemetry::EVENTS_SKIPPED,
        telemetry::EVENTS_DEAD_LETTERED,
        telemetry::SCORE_CHANGES,
        telemetry::EVENT_TO_OUTPUT_SECONDS,
        telemetry::CONSUMER_LAG,
        telemetry::RESTORING_PARTITIONS,
        telemetry::RESTORE_SECONDS,
        telemetry::RESTORE_RECORDS,
        telemetry::STORE_USERS,
        telemetry::PENDING_TIMERS,
        telemetry::CHECKPOINT_SECONDS,
        telemetry::ASSIGNED_PARTITIONS,
    ] {
        assert!(shown.contains(wanted), "no panel shows {wanted}");
    }
    let exprs = dashboard_queries(&dashboard()).join("\n");
    for by in ["sum by (reason)", "sum by (kind)", "by (partition)"] {
        assert!(exprs.contains(by), "no panel breaks down {by}");
    }
}

#[test]
fn dashboard_shows_every_handoff_and_salesforce_metric() {
    let dashboard = dashboard();
    let shown = dashboard_metrics(&dashboard);
    let own = handoff_metrics();
    assert!(own.len() >= 10, "{own:?}");
    for metric in &own {
        assert!(shown.contains(metric), "no panel shows {metric}");
    }

    // The handoff's side of what both services export: its lag and its restores.
    let handoff_exprs: Vec<String> = dashboard_queries(&dashboard)
        .into_iter()
        .filter(|e| !metric_names(e).is_empty() && selected_job(e) == HANDOFF_JOB)
        .collect();
    let handoff_shown: BTreeSet<String> = handoff_exprs
        .iter()
        .flat_map(|e| metric_names(e))
        .map(|n| base_metric(&n).to_string())
        .collect();
    for shared in [
        telemetry::CONSUMER_LAG,
        telemetry::ASSIGNED_PARTITIONS,
        telemetry::RESTORING_PARTITIONS,
        telemetry::RESTORE_SECONDS,
    ] {
        assert!(
            handoff_shown.contains(shared),
            "no handoff panel shows {shared}"
        );
    }
    let joined = handoff_exprs.join("\n");
    for by in [
        "sum by (outcome)",
        "sum by (status_class)",
        "sum by (endpoint)",
        "sum by (reason)",
        "by (partition)",
    ] {
        assert!(joined.contains(by), "no handoff panel breaks down {by}");
    }
    // API usage against the org's allowance, as a ratio.
    assert!(
        handoff_exprs.iter().any(|e| {
            let names = metric_names(e);
            e.contains(" / ")
                && names.first().map(String::as_str) == Some(telemetry::SALESFORCE_API_USAGE)
                && names.last().map(String::as_str) == Some(telemetry::SALESFORCE_API_LIMIT)
        }),
        "no panel divides {} by {}",
        telemetry::SALESFORCE_API_USAGE,
        telemetry::SALESFORCE_API_LIMIT
    );
}

#[test]
fn dashboard_tells_the_scorer_and_the_handoff_apart_by_job() {
    let dashboard = dashboard();
    // The job variables, and the Prometheus job names they must match.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let jobs = SCRAPED.map(|(_, job)| job);
    for (var, (job_name, other_job)) in ["scorer_job", "handoff_job"]
        .into_iter()
        .zip([(jobs[0], jobs[1]), (jobs[1], jobs[0])])
    {
        let v = variable(var);
        assert_eq!(v["type"], "textbox", "{var}: editable, for other job names");
        let value = v["query"].as_str().expect("default value");
        assert_eq!(v["current"]["value"], value, "{var}");
        let prefix = value.strip_suffix(".*").expect("a prefix regex");
        assert!(
            prefix.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{var}: {value}"
        );
        assert!(
            job_name.starts_with(prefix),
            "{var}={value} misses {job_name}"
        );
        assert!(
            !other_job.starts_with(prefix),
            "{var}={value} matches {other_job}"
        );
        // With the Prometheus Operator, a ServiceMonitor's job is the Service name.
        let service = format!("{job_name}-metrics");
        assert!(k8s_objects().contains_key(&("Service".to_string(), service.clone())));
        assert!(
            service.starts_with(prefix),
            "{var}={value} misses {service}"
        );
    }

    // Every query names its service; the handoff's own metrics and the panels under the
    // handoff rows select the handoff, all others the scorer.
    let own = handoff_metrics();
    let mut handoff_panels = 0;
    for (row, panel) in dashboard_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let want = if row.starts_with("Handoff") {
            handoff_panels += 1;
            HANDOFF_JOB
        } else {
            assert!(row.starts_with("Scorer"), "row {row:?}: Scorer or Handoff");
            SCORER_JOB
        };
        let exprs = panel_exprs(panel);
        assert!(!exprs.is_empty(), "{title}: no query");
        for expr in exprs {
            if metric_names(expr).is_empty() {
                continue; // e.g. up{...}
            }
            assert_eq!(selected_job(expr), want, "{row} / {title}: {expr}");
            for name in metric_names(expr) {
                if own.contains(base_metric(&name)) {
                    assert_eq!(want, HANDOFF_JOB, "{row} / {title}: {name}");
                }
            }
        }
    }
    assert!(handoff_panels >= 10, "{handoff_panels} handoff panels");
    let instance = variable("instance");
    let query = instance["definition"].as_str().expect("definition");
    assert_eq!(selected_job(query), SCORER_JOB, "{query}");
}

#[test]
fn dashboard_breaks_down_and_filters_only_by_labels_the_metrics_carry() {
    let labels = recorded_labels();
    // The table's labels, as the dashboard relies on them.
    let set = |names: &[&str]| -> Option<BTreeSet<String>> {
        Some(names.iter().map(|n| n.to_string()).collect())
    };
    assert_eq!(labels[telemetry::HANDOFFS], set(&["outcome"]));
    assert_eq!(labels[telemetry::HANDOFF_DEAD_LETTERED], set(&["reason"]));
    assert_eq!(labels[telemetry::HANDOFF_RETRIES], set(&[]));
    assert_eq!(
        labels[telemetry::SALESFORCE_REQUESTS],
        set(&["endpoint", "status_class"])
    );
    assert_eq!(labels[telemetry::SALESFORCE_API_USAGE], set(&[]));
    assert_eq!(labels[telemetry::SCORE_CHANGES], set(&["kind"]));
    for gauge in [
        telemetry::CONSUMER_LAG,
        telemetry::PARTITION_CLOCK,
        telemetry::RESTORE_REMAINING,
    ] {
        assert_eq!(labels[gauge], set(&["partition"]), "{gauge}");
    }

    let mut checked = 0;
    for expr in dashboard_queries(&dashboard()) {
        let uses = metric_uses(&expr);
        for by in grouping_labels(&expr) {
            if ["le", "instance", "job"].contains(&by.as_str()) {
                continue;
            }
            for u in &uses {
                if let Some(Some(carried)) = labels.get(base_metric(&u.name)) {
                    assert!(
                        carried.contains(&by),
                        "{} has no label {by}: {expr}",
                        u.name
                    );
                    checked += 1;
                }
            }
        }
        for u in &uses {
            for (label, op, value) in &u.matchers {
                if ["instance", "job"].contains(&label.as_str()) {
                    continue;
                }
                if let Some(Some(carried)) = labels.get(base_metric(&u.name)) {
                    assert!(
                        carried.contains(label),
                        "{} has no label {label}: {expr}",
                        u.name
                    );
                    checked += 1;
                }
                if op == "=" {
                    assert!(
                        label_value_exists(base_metric(&u.name), label, value),
                        "{label}=\"{value}\": no such value of {}: {expr}",
                        u.name
                    );
                }
            }
        }
    }
    assert!(checked >= 8, "only {checked} labels checked");
}

#[test]
fn dashboard_panels_have_unique_ids_and_do_not_overlap() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: id twice"
        );
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24, "{title}: wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.clone()) {
                    panic!("{title} overlaps {other}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------

const K8S: &str = "deploy/kubernetes";

/// Every object of the Kubernetes manifests, by (kind, name).
fn k8s_objects() -> BTreeMap<(String, String), Yaml> {
    let mut out = BTreeMap::new();
    for file in kustomization_resources() {
        for doc in yaml_docs(&format!("{K8S}/{file}")) {
            let key = (
                str_at(&doc, "kind").to_string(),
                str_at(&doc, "metadata.name").to_string(),
            );
            assert!(out.insert(key.clone(), doc).is_none(), "{key:?} twice");
        }
    }
    out
}

type Objects = BTreeMap<(String, String), Yaml>;

fn k8s<'a>(objects: &'a Objects, kind: &str, name: &str) -> &'a Yaml {
    objects
        .get(&(kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn kustomization_resources() -> Vec<String> {
    strings(at(&yaml(&format!("{K8S}/kustomization.yaml")), "resources"))
}

/// One of leadscore's workloads and the names that go with it.
struct Workload {
    kind: &'static str,
    name: &'static str,
    container: &'static str,
    subcommand: &'static str,
    /// The ConfigMap holding its `leadscore.toml`.
    config: &'static str,
    /// The ConfigMap of its `LEADSCORE__*` overrides.
    env: &'static str,
    /// Services that must route to its pods, and only to them.
    services: &'static [&'static str],
}

const SCORER: Workload = Workload {
    kind: "StatefulSet",
    name: "leadscore-scorer",
    container: "scorer",
    subcommand: "score",
    config: "leadscore-scorer-config",
    env: "leadscore-scorer-env",
    services: &["leadscore-scorer", "leadscore-scorer-metrics"],
};

const HANDOFF: Workload = Workload {
    kind: "Deployment",
    name: "leadscore-handoff",
    container: "handoff",
    subcommand: "handoff",
    config: "leadscore-handoff-config",
    env: "leadscore-handoff-env",
    services: &["leadscore-handoff-metrics"],
};

const WORKLOADS: [&Workload; 2] = [&SCORER, &HANDOFF];

fn workload<'a>(objects: &'a Objects, w: &Workload) -> &'a Yaml {
    k8s(objects, w.kind, w.name)
}

fn container<'a>(objects: &'a Objects, w: &Workload) -> &'a Yaml {
    seq_at(workload(objects, w), "spec.template.spec.containers")
        .iter()
        .find(|c| str_at(c, "name") == w.container)
        .unwrap_or_else(|| panic!("{}: no container {}", w.name, w.container))
}

fn pod_volumes<'a>(objects: &'a Objects, w: &Workload) -> &'a [Yaml] {
    seq_at(workload(objects, w), "spec.template.spec.volumes")
}

fn configmap_data<'a>(objects: &'a Objects, name: &str) -> &'a Yaml {
    at(k8s(objects, "ConfigMap", name), "data")
}

/// The container's environment: `envFrom` ConfigMaps, then `env`. A `valueFrom` stands for a
/// value the manifests cannot show: a setting's is left out (its name must still be a
/// setting), any other is kept with a placeholder so that [`load_settings`] checks its name.
fn k8s_container_env(objects: &Objects, container: &Yaml) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for source in container
        .get("envFrom")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
    {
        let name = str_at(source, "configMapRef.name");
        let data = configmap_data(objects, name)
            .as_mapping()
            .expect("ConfigMap data");
        env.extend(data.iter().map(|(k, v)| (scalar(k), scalar(v))));
    }
    for var in container
        .get("env")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
    {
        let name = str_at(var, "name").to_string();
        match var.get("value") {
            Some(v) => env.push((name, scalar(v))),
            None if name.starts_with("LEADSCORE__") => {
                assert_setting_name(&name, "a container's env")
            }
            None => env.push((name, "(valueFrom)".to_string())),
        }
    }
    env
}

/// The mount path of a ConfigMap key (`subPath`) in the workload's container.
fn config_mount<'a>(objects: &'a Objects, w: &Workload, configmap: &str, key: &str) -> &'a str {
    let volume = pod_volumes(objects, w)
        .iter()
        .find(|v| v.get("configMap").map(|c| str_at(c, "name")) == Some(configmap))
        .map(|v| str_at(v, "name"))
        .unwrap_or_else(|| panic!("{}: no volume of ConfigMap {configmap}", w.name));
    seq_at(container(objects, w), "volumeMounts")
        .iter()
        .find(|m| {
            str_at(m, "name") == volume && m.get("subPath").and_then(Yaml::as_str) == Some(key)
        })
        .map(|m| str_at(m, "mountPath"))
        .unwrap_or_else(|| panic!("{}: {configmap}/{key} is not mounted", w.name))
}

/// The settings a workload's pods run with: the ConfigMap's file named by `--config`, then the
/// container's environment.
fn k8s_settings(objects: &Objects, w: &Workload) -> Settings {
    let c = container(objects, w);
    let args = strings(at(c, "args"));
    let config_path = flag(&args, "--config").expect("--config");
    assert_eq!(
        config_mount(objects, w, w.config, "leadscore.toml"),
        config_path,
        "{}: --config names the mounted leadscore.toml",
        w.name
    );
    let text = str_key(configmap_data(objects, w.config), "leadscore.toml");
    let env = k8s_container_env(objects, c);
    load_settings(w.name, Some((w.config, text)), &env)
}

/// The volume mounted at `path` in the workload's container, with its mount.
fn volume_at<'a>(objects: &'a Objects, w: &Workload, path: &Path) -> (&'a Yaml, &'a Yaml) {
    let mount = seq_at(container(objects, w), "volumeMounts")
        .iter()
        .find(|m| Path::new(str_at(m, "mountPath")) == path)
        .unwrap_or_else(|| panic!("{}: nothing mounted at {}", w.name, path.display()));
    let name = str_at(mount, "name");
    let volume = pod_volumes(objects, w)
        .iter()
        .find(|v| str_at(v, "name") == name)
        .or_else(|| {
            workload(objects, w)
                .get("spec")
                .and_then(|s| s.get("volumeClaimTemplates"))
                .and_then(Yaml::as_sequence)
                .into_iter()
                .flatten()
                .find(|t| str_at(t, "metadata.name") == name)
        })
        .unwrap_or_else(|| panic!("{}: no volume {name}", w.name));
    (volume, mount)
}

#[test]
fn kustomization_lists_every_manifest_in_the_directory() {
    let listed: BTreeSet<String> = kustomization_resources().into_iter().collect();
    let present: BTreeSet<String> = std::fs::read_dir(root().join(K8S))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present);
    let objects = k8s_objects();
    for kind in [
        "StatefulSet",
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "Secret",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(objects.keys().any(|(k, _)| k == kind), "no {kind}");
    }
    for w in WORKLOADS {
        workload(&objects, w);
    }
}

#[test]
fn configmap_settings_files_and_rules_load() {
    let objects = k8s_objects();
    for w in WORKLOADS {
        let data = configmap_data(&objects, w.config);
        let settings = Settings::load_from(Some((w.config, str_key(data, "leadscore.toml"))), [])
            .unwrap_or_else(|e| panic!("{}'s leadscore.toml: {e}", w.config));
        assert_eq!(settings.scorer.rules.is_some(), w.subcommand == "score");
        let env = configmap_data(&objects, w.env);
        for (k, _) in env.as_mapping().expect("data") {
            assert!(scalar(k).starts_with("LEADSCORE__"), "{k:?} is no setting");
        }
    }
    let data = configmap_data(&objects, SCORER.config);
    leadscore::rules::parse_str(str_key(data, "rules.toml"), "rules.toml")
        .unwrap_or_else(|e| panic!("the ConfigMap's rules.toml: {e}"));
}

#[test]
fn statefulset_environment_over_the_configmap_file_loads_as_settings() {
    let objects = k8s_objects();
    let settings = k8s_settings(&objects, &SCORER);
    assert_ne!(
        settings.kafka.get("bootstrap.servers"),
        Some("localhost:9092"),
        "the pods need a real broker address"
    );
}

#[test]
fn handoff_deployment_settings_agree_with_the_scorer_and_point_at_a_real_org() {
    let objects = k8s_objects();
    let handoff = k8s_settings(&objects, &HANDOFF);
    let scorer = k8s_settings(&objects, &SCORER);
    assert_handoff_agrees_with_scorer(
        &handoff,
        &scorer,
        "the same topics, created alike by whichever service starts first",
    );
    let defaults = Settings::default().salesforce;
    let sf = &handoff.salesforce;
    assert!(
        sf.instance_url.starts_with("https://") && sf.instance_url != defaults.instance_url,
        "salesforce.instance_url {}: the org, over TLS",
        sf.instance_url
    );
    assert!(!sf.client_id.is_empty(), "salesforce.client_id");
}

#[test]
fn workload_args_are_subcommands_the_binary_accepts() {
    let objects = k8s_objects();
    for w in WORKLOADS {
        let args = strings(at(container(&objects, w), "args"));
        assert_eq!(args[0], w.subcommand, "{}", w.name);
        assert_binary_accepts(&args, &format!("the {} args", w.name));
    }
}

#[test]
fn statefulset_mounts_the_rules_and_the_state_volume_where_the_settings_point() {
    let objects = k8s_objects();
    let settings = k8s_settings(&objects, &SCORER);
    let sts = workload(&objects, &SCORER);
    assert_eq!(
        settings.scorer.rules.as_deref(),
        Some(Path::new(config_mount(
            &objects,
            &SCORER,
            SCORER.config,
            "rules.toml"
        )))
    );
    let claim = str_at(
        &seq_at(sts, "spec.volumeClaimTemplates")[0],
        "metadata.name",
    );
    let (volume, _) = volume_at(&objects, &SCORER, &settings.scorer.state_dir);
    assert_eq!(str_at(volume, "metadata.name"), claim);
    assert_eq!(
        at(sts, "spec.template.spec.terminationGracePeriodSeconds").as_u64(),
        Some(60),
        "time for the SIGTERM checkpoint"
    );
}

#[test]
fn handoff_deployment_keeps_its_state_dir_on_a_writable_volume_and_surges_on_updates() {
    let objects = k8s_objects();
    let settings = k8s_settings(&objects, &HANDOFF);
    let deployment = workload(&objects, &HANDOFF);
    // The root filesystem is read-only: without a volume there the store cannot open.
    let (volume, mount) = volume_at(&objects, &HANDOFF, &settings.handoff.state_dir);
    assert!(
        volume.get("emptyDir").is_some() || volume.get("persistentVolumeClaim").is_some(),
        "handoff.state_dir is on {volume:?}"
    );
    assert_ne!(mount.get("readOnly").and_then(Yaml::as_bool), Some(true));
    let grace = at(
        deployment,
        "spec.template.spec.terminationGracePeriodSeconds",
    )
    .as_u64()
    .expect("terminationGracePeriodSeconds");
    assert!(
        grace >= 60 && grace > 2 * settings.salesforce.timeout.as_secs(),
        "{grace} s: time for the Salesforce call in flight and the checkpoint"
    );
    // An old pod stops only once its replacement is Ready (restored, holding a token).
    let rolling = at(deployment, "spec.strategy.rollingUpdate");
    assert_eq!(scalar(at(rolling, "maxUnavailable")), "0");
    assert_ne!(scalar(at(rolling, "maxSurge")), "0");
    let replicas = at(deployment, "spec.replicas").as_i64().expect("replicas");
    assert!(
        (2..=i64::from(settings.topics.partitions)).contains(&replicas),
        "{replicas} replicas: two for availability, no more than partitions"
    );
    let readme = read(&format!("{K8S}/README.md"));
    assert!(
        readme.contains("## Why the handoff is a Deployment"),
        "the README says why"
    );
}

#[test]
fn probes_container_ports_and_services_use_each_admin_port_and_the_health_paths() {
    let objects = k8s_objects();
    let mut ports = BTreeSet::new();
    for w in WORKLOADS {
        let port = admin_port(&k8s_settings(&objects, w));
        assert!(ports.insert(port), "{}: admin port {port} twice", w.name);
        let c = container(&objects, w);
        let admin = seq_at(c, "ports")
            .iter()
            .find(|p| str_at(p, "name") == "admin")
            .unwrap_or_else(|| panic!("{}: a container port named admin", w.name));
        assert_eq!(at(admin, "containerPort").as_u64(), Some(u64::from(port)));
        let resolves =
            |p: &Yaml| p.as_str() == Some("admin") || p.as_u64() == Some(u64::from(port));

        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = at(c, &format!("{probe}.httpGet"));
            assert_eq!(str_at(get, "path"), path, "{}: {probe}", w.name);
            assert!(resolves(at(get, "port")), "{}: {probe} port", w.name);
        }

        for name in w.services {
            let service = k8s(&objects, "Service", name);
            let ports = seq_at(service, "spec.ports");
            assert!(
                ports.iter().any(|p| str_at(p, "name") == "admin"
                    && at(p, "port").as_u64() == Some(u64::from(port))
                    && resolves(at(p, "targetPort"))),
                "{name}: port admin {port}"
            );
        }
        let metrics = format!("{}-metrics", w.name);
        let annotations = at(k8s(&objects, "Service", &metrics), "metadata.annotations");
        let annotation = |key: &str| annotations.get(key).map(scalar).unwrap_or_default();
        assert_eq!(annotation("prometheus.io/scrape"), "true", "{metrics}");
        assert_eq!(
            annotation("prometheus.io/port"),
            port.to_string(),
            "{metrics}"
        );
        assert_eq!(annotation("prometheus.io/path"), "/metrics", "{metrics}");
    }
    let headless = k8s(&objects, "Service", "leadscore-scorer");
    assert_eq!(str_at(headless, "spec.clusterIP"), "None");
    assert_eq!(
        str_at(workload(&objects, &SCORER), "spec.serviceName"),
        "leadscore-scorer"
    );
}

#[test]
fn services_and_disruption_budgets_select_their_own_pods_only() {
    let objects = k8s_objects();
    let pod_labels = |w: &Workload| {
        at(workload(&objects, w), "spec.template.metadata.labels")
            .as_mapping()
            .expect("pod labels")
            .clone()
    };
    let selects = |selector: &Yaml, labels: &serde_yaml_ng::Mapping| {
        let selector = selector.as_mapping().expect("selector");
        assert!(!selector.is_empty(), "empty selector");
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    for (w, other) in [(&SCORER, &HANDOFF), (&HANDOFF, &SCORER)] {
        let own = pod_labels(w);
        let theirs = pod_labels(other);
        let mut selectors = vec![(
            format!("{} {}", w.kind, w.name),
            at(workload(&objects, w), "spec.selector.matchLabels"),
        )];
        for name in w.services {
            selectors.push((
                format!("Service {name}"),
                at(k8s(&objects, "Service", name), "spec.selector"),
            ));
        }
        let pdb = k8s(&objects, "PodDisruptionBudget", w.name);
        assert_eq!(at(pdb, "spec.maxUnavailable").as_u64(), Some(1));
        selectors.push((
            format!("PodDisruptionBudget {}", w.name),
            at(pdb, "spec.selector.matchLabels"),
        ));
        for (what, selector) in selectors {
            assert!(selects(selector, &own), "{what} misses the {} pods", w.name);
            assert!(
                !selects(selector, &theirs),
                "{what} also selects the {} pods",
                other.name
            );
        }
    }
}

/// The ServiceMonitor scrapes `/metrics` on port `admin` of each workload's metrics Service,
/// and of no other Service: the scorer's headless Service has the same labels and port, and
/// scraping it too would count every scorer pod twice.
#[test]
fn servicemonitor_scrapes_each_metrics_service_once_at_its_admin_port() {
    let objects = k8s_objects();
    let monitor = k8s(&objects, "ServiceMonitor", "leadscore");
    assert_eq!(str_at(monitor, "apiVersion"), "monitoring.coreos.com/v1");
    let selector = at(monitor, "spec.selector");
    let selected = |service: &Yaml| {
        let labels = at(service, "metadata.labels");
        let match_labels = selector
            .get("matchLabels")
            .and_then(Yaml::as_mapping)
            .into_iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let match_expressions = selector
            .get("matchExpressions")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .all(|e| {
                assert_eq!(str_at(e, "operator"), "In", "only In is checked here");
                let value = labels.get(str_at(e, "key")).map(scalar);
                value.is_some_and(|v| strings(at(e, "values")).contains(&v))
            });
        match_labels && match_expressions
    };
    let endpoints = seq_at(monitor, "spec.endpoints");
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    assert_eq!(str_at(endpoint, "port"), "admin");
    assert_eq!(str_at(endpoint, "path"), "/metrics");
    let keep = seq_at(endpoint, "relabelings")
        .iter()
        .find(|r| str_at(r, "action") == "keep")
        .expect("a keep relabeling");
    assert_eq!(
        strings(at(keep, "sourceLabels")),
        ["__meta_kubernetes_service_name"]
    );
    let kept: BTreeSet<String> = str_at(keep, "regex")
        .split('|')
        .map(str::to_string)
        .collect();

    let scraped: BTreeSet<String> = objects
        .iter()
        .filter(|((kind, _), service)| kind == "Service" && selected(service))
        .map(|((_, name), _)| name.clone())
        .filter(|name| kept.contains(name))
        .collect();
    let metrics_services: BTreeSet<String> = WORKLOADS
        .iter()
        .map(|w| format!("{}-metrics", w.name))
        .collect();
    assert_eq!(scraped, metrics_services);
    for name in &metrics_services {
        let ports = seq_at(k8s(&objects, "Service", name), "spec.ports");
        assert!(
            ports.iter().any(|p| str_at(p, "name") == "admin"),
            "{name} has no port named admin"
        );
    }
}

/// The PrometheusRule carries exactly the groups of deploy/prometheus/alerts.yml (generated
/// from it by deploy/prometheusrule.sh), so the alerts tests/alerts.rs checks are the ones
/// Kubernetes gets.
#[test]
fn prometheusrule_carries_the_groups_of_alerts_yml() {
    let objects = k8s_objects();
    let rule = k8s(&objects, "PrometheusRule", "leadscore");
    assert_eq!(str_at(rule, "apiVersion"), "monitoring.coreos.com/v1");
    let alerts = yaml("deploy/prometheus/alerts.yml");
    assert_eq!(
        at(rule, "spec.groups"),
        at(&alerts, "groups"),
        "deploy/kubernetes/prometheusrule.yaml differs from alerts.yml: run deploy/prometheusrule.sh"
    );
}

#[test]
fn pods_run_as_the_image_non_root_user_with_a_read_only_root() {
    let objects = k8s_objects();
    for w in WORKLOADS {
        let pod = at(workload(&objects, w), "spec.template.spec.securityContext");
        assert_eq!(at(pod, "runAsNonRoot").as_bool(), Some(true), "{}", w.name);
        let uid = at(pod, "runAsUser").as_u64().expect("runAsUser");
        assert_eq!(uid.to_string(), dockerfile_runtime_uid(), "{}", w.name);
        assert_eq!(
            at(pod, "fsGroup").as_u64(),
            Some(uid),
            "{}: volumes are writable and the Secret readable",
            w.name
        );
        let c = at(container(&objects, w), "securityContext");
        assert_eq!(
            at(c, "readOnlyRootFilesystem").as_bool(),
            Some(true),
            "{}",
            w.name
        );
        assert_eq!(
            at(c, "allowPrivilegeEscalation").as_bool(),
            Some(false),
            "{}",
            w.name
        );
        assert_eq!(strings(at(c, "capabilities.drop")), ["ALL"], "{}", w.name);
    }
}

#[test]
fn salesforce_secret_template_has_the_client_secret_key_the_settings_can_read() {
    let objects = k8s_objects();
    let secret = k8s(&objects, "Secret", "leadscore-salesforce");
    let data = secret
        .get("stringData")
        .or_else(|| secret.get("data"))
        .expect("data");
    assert!(data.get("client-secret").is_some());
    let text = read(&format!("{K8S}/salesforce-secret.yaml"));
    let default_env = Settings::default().salesforce.client_secret_env;
    assert!(
        text.contains(&default_env),
        "the template names the default variable {default_env}"
    );
    assert!(text.contains("LEADSCORE__SALESFORCE__CLIENT_SECRET_FILE"));
}

/// `(key, where it reaches the container)` for every use of Secret `secret` by a workload's
/// container: `env:NAME` for a `secretKeyRef`, the file path for a mounted key.
fn secret_uses(objects: &Objects, w: &Workload, secret: &str) -> Vec<(String, String)> {
    let c = container(objects, w);
    let mut uses = Vec::new();
    for var in c
        .get("env")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
    {
        if let Some(r) = var.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
            if str_at(r, "name") == secret {
                uses.push((
                    str_at(r, "key").to_string(),
                    format!("env:{}", str_at(var, "name")),
                ));
            }
        }
    }
    for source in c
        .get("envFrom")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
    {
        if let Some(r) = source.get("secretRef") {
            assert_ne!(
                str_at(r, "name"),
                secret,
                "{}: envFrom the Secret makes each key a variable no setting names",
                w.name
            );
        }
    }
    for volume in pod_volumes(objects, w) {
        let Some(s) = volume.get("secret") else {
            continue;
        };
        if str_at(s, "secretName") != secret {
            continue;
        }
        let mount = seq_at(c, "volumeMounts")
            .iter()
            .find(|m| str_at(m, "name") == str_at(volume, "name"))
            .unwrap_or_else(|| panic!("{}: the Secret's volume is not mounted", w.name));
        assert_eq!(
            mount.get("readOnly").and_then(Yaml::as_bool),
            Some(true),
            "{}: the Secret is mounted read-only",
            w.name
        );
        assert!(
            mount.get("subPath").is_none(),
            "{}: a subPath never updates",
            w.name
        );
        let mode = s.get("defaultMode").and_then(Yaml::as_u64).unwrap_or(0o644);
        let dir = Path::new(str_at(mount, "mountPath"));
        let items = s.get("items").and_then(Yaml::as_sequence);
        let keys: Vec<(String, String, u64)> = match items {
            Some(items) => items
                .iter()
                .map(|i| {
                    let m = i.get("mode").and_then(Yaml::as_u64).unwrap_or(mode);
                    (
                        str_at(i, "key").to_string(),
                        str_at(i, "path").to_string(),
                        m,
                    )
                })
                .collect(),
            None => vec![("client-secret".into(), "client-secret".into(), mode)],
        };
        for (key, path, mode) in keys {
            // Files are root's, group fsGroup: the group must read, the world must not.
            assert_eq!(mode & 0o040, 0o040, "{}: mode {mode:o} hides {key}", w.name);
            assert_eq!(
                mode & 0o007,
                0,
                "{}: mode {mode:o} shows {key} to all",
                w.name
            );
            uses.push((key, dir.join(path).display().to_string()));
        }
    }
    uses
}

#[test]
fn handoff_pods_get_the_salesforce_secret_only_where_the_settings_read_it() {
    let objects = k8s_objects();
    let settings = k8s_settings(&objects, &HANDOFF);
    let secret = k8s(&objects, "Secret", "leadscore-salesforce");
    let keys: BTreeSet<String> = secret
        .get("stringData")
        .or_else(|| secret.get("data"))
        .and_then(Yaml::as_mapping)
        .expect("data")
        .keys()
        .map(scalar)
        .collect();
    let uses = secret_uses(&objects, &HANDOFF, "leadscore-salesforce");
    assert!(!uses.is_empty(), "the handoff pods do not use the Secret");
    let sf = &settings.salesforce;
    let file = sf
        .client_secret_file
        .as_ref()
        .map(|p| p.display().to_string());
    for (key, place) in &uses {
        assert!(keys.contains(key), "the Secret has no key {key} ({keys:?})");
        let read = match place.strip_prefix("env:") {
            Some(var) => var == sf.client_secret_env,
            None => Some(place) == file.as_ref(),
        };
        assert!(
            read,
            "{key} reaches the pod at {place}, where the handoff does not look \
             (salesforce.client_secret_env {}, client_secret_file {file:?})",
            sf.client_secret_env
        );
    }
    // One way only: a variable of that name would win over the file.
    if let Some(file) = &file {
        assert!(uses.iter().any(|(_, place)| place == file));
        let env = k8s_container_env(&objects, container(&objects, &HANDOFF));
        assert!(
            !env.iter().any(|(name, _)| *name == sf.client_secret_env),
            "{} is set and would win over {file}",
            sf.client_secret_env
        );
    }
    // Nowhere else: not in the arguments, not in a ConfigMap, not in the scorer.
    let placeholder = scalar(
        at(secret, "stringData")
            .get("client-secret")
            .expect("client-secret"),
    );
    let args = strings(at(container(&objects, &HANDOFF), "args")).join(" ");
    assert!(
        !args.contains(&placeholder) && !args.contains("secret"),
        "{args}"
    );
    for ((kind, name), object) in &objects {
        if kind == "ConfigMap" {
            let text = serde_yaml_ng::to_string(object).expect("yaml");
            assert!(
                !text.contains(&placeholder),
                "ConfigMap {name} holds the secret"
            );
        }
    }
    assert!(secret_uses(&objects, &SCORER, "leadscore-salesforce").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Dockerfile and the image's settings
// ---------------------------------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined, comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's stages, each a list of instructions starting with its `FROM`.
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.trim().is_empty()) {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(instruction);
    }
    stages
}

fn find<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args}: not exec form: {e}"))
}

/// `COPY` sources and destination, options (`--from=...`) apart.
fn copy_parts(args: &str) -> (Vec<&str>, Vec<&str>, &str) {
    let (options, paths): (Vec<&str>, Vec<&str>) =
        args.split_whitespace().partition(|w| w.starts_with("--"));
    let (dest, sources) = paths.split_last().expect("COPY SRC... DEST");
    (options, sources.to_vec(), dest)
}

fn runtime_stage() -> Vec<Instruction> {
    dockerfile_stages().pop().expect("a stage")
}

fn dockerfile_runtime_uid() -> String {
    let users = find(&runtime_stage(), "USER")
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    let user = users.last().expect("the runtime stage sets USER");
    user.split(':').next().unwrap_or(user).to_string()
}

/// The image-side path a runtime-stage `COPY` puts `source` at, if it copies it.
fn image_path_of(source: &str) -> Option<PathBuf> {
    runtime_stage()
        .iter()
        .filter(|i| i.keyword == "COPY")
        .find_map(|i| {
            let (options, sources, dest) = copy_parts(&i.args);
            if !options.is_empty() || !sources.contains(&source) {
                return None;
            }
            Some(if dest.ends_with('/') {
                Path::new(dest).join(Path::new(source).file_name().expect("file"))
            } else {
                PathBuf::from(dest)
            })
        })
}

/// `rules` is a rules file the image copies from `examples/rules/`, and it is valid.
fn assert_image_ships_rules(rules: &Path, origin: &str) {
    let name = rules.file_name().expect("a file").to_string_lossy();
    let source = format!("examples/rules/{name}");
    assert_eq!(
        image_path_of(&source).as_deref(),
        Some(rules),
        "{origin}: scorer.rules {} is not where the Dockerfile copies {source}",
        rules.display()
    );
    leadscore::rules::load_file(&root().join(&source)).unwrap_or_else(|e| panic!("{source}: {e}"));
}

#[test]
fn dockerfile_builds_a_locked_release_in_a_rust_stage() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "multi-stage");
    let build = &stages[0];
    assert!(find(build, "FROM")[0].starts_with("rust:1-bookworm"));
    assert!(
        find(build, "RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "cargo build --release --locked"
    );
}

#[test]
fn dockerfile_runtime_stage_runs_the_binary_as_a_non_root_user() {
    let stages = dockerfile_stages();
    let build_name = find(&stages[0], "FROM")[0]
        .split_whitespace()
        .last()
        .expect("FROM IMAGE AS NAME")
        .to_string();
    let runtime = stages.last().expect("runtime");
    assert!(find(runtime, "FROM")[0].starts_with("debian:bookworm-slim"));

    let uid = dockerfile_runtime_uid();
    assert!(!["root", "0"].contains(&uid.as_str()), "USER {uid} is root");
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n >= 1000),
        "numeric uid: {uid}"
    );

    let copies_binary = find(runtime, "COPY").iter().any(|args| {
        let (options, _, dest) = copy_parts(args);
        options.contains(&format!("--from={build_name}").as_str())
            && dest == "/usr/local/bin/leadscore"
    });
    assert!(
        copies_binary,
        "COPY --from={build_name} ... /usr/local/bin/leadscore"
    );
    assert_eq!(exec_form(find(runtime, "ENTRYPOINT")[0]), ["leadscore"]);
}

#[test]
fn dockerfile_default_command_runs_the_image_config_which_loads() {
    let runtime = runtime_stage();
    let cmd = exec_form(find(&runtime, "CMD")[0]);
    assert_binary_accepts(&cmd, "the Dockerfile's CMD");
    let config = cmd
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| PathBuf::from(&w[1]))
        .expect("CMD passes --config");
    let source = "deploy/docker/leadscore.toml";
    assert_eq!(
        image_path_of(source),
        Some(config.clone()),
        "the Dockerfile copies {source} to {}",
        config.display()
    );
    let settings =
        Settings::load_from(Some((source, &read(source))), []).unwrap_or_else(|e| panic!("{e}"));
    assert_image_ships_rules(settings.scorer.rules.as_deref().expect("rules"), source);
    let expose: Vec<u16> = find(&runtime, "EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .map(|p| p.split('/').next().unwrap_or(p).parse().expect("port"))
        .collect();
    assert_eq!(expose, [admin_port(&settings)]);
    let volumes = find(&runtime, "VOLUME").join(" ");
    assert!(
        volumes.contains(&settings.scorer.state_dir.display().to_string()),
        "scorer.state_dir is the image's volume"
    );
}

#[test]
fn dockerfile_copies_only_files_the_build_context_keeps() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    assert!(ignored.contains(&"target".to_string()));
    assert!(ignored.contains(&".git".to_string()));
    for stage in dockerfile_stages() {
        for args in find(&stage, "COPY") {
            let (options, sources, _) = copy_parts(args);
            if options.iter().any(|o| o.starts_with("--from")) {
                continue;
            }
            for source in sources {
                let source = source.trim_end_matches('/');
                assert!(root().join(source).exists(), "COPY {source}: no such file");
                let excluded = ignored
                    .iter()
                    .any(|i| source == i || source.starts_with(&format!("{i}/")));
                assert!(!excluded, "COPY {source}, which .dockerignore excludes");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Variables named anywhere
// ---------------------------------------------------------------------------------------------

/// `LEADSCORE_...` names in a text: settings (`LEADSCORE__...`) and others, such as the
/// Salesforce secret's variable (placeholders like `LEADSCORE__SECTION__KEY` and prefixes like
/// `LEADSCORE__KAFKA__*` left out).
fn mentioned_variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("LEADSCORE_") {
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..len];
        if !name.ends_with('_') && name != "LEADSCORE__SECTION__KEY" {
            out.insert(name.to_string());
        }
        rest = &tail[len..];
    }
    out
}

#[test]
fn every_variable_the_deployment_files_and_operations_doc_name_is_a_setting() {
    let mut files = vec![
        "Dockerfile".to_string(),
        "docker-compose.yml".to_string(),
        "docs/operations.md".to_string(),
        "deploy/docker/leadscore.toml".to_string(),
    ];
    for dir in [
        K8S,
        "deploy/prometheus",
        "deploy/grafana/provisioning/datasources",
    ] {
        for entry in std::fs::read_dir(root().join(dir)).expect(dir) {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            files.push(format!("{dir}/{name}"));
        }
    }
    let secret_env = Settings::default().salesforce.client_secret_env;
    let mut checked = 0;
    let mut secret_mentions = 0;
    for file in &files {
        for var in mentioned_variables(&read(file)) {
            if var.starts_with("LEADSCORE__") {
                assert_setting_name(&var, file);
                checked += 1;
            } else {
                assert_eq!(
                    var, secret_env,
                    "{file} names {var}: neither a setting nor salesforce.client_secret_env"
                );
                secret_mentions += 1;
            }
        }
    }
    assert!(checked > 5, "only {checked} variables found");
    assert!(
        secret_mentions >= 3,
        "the secret's variable named {secret_mentions} times"
    );
    // The check itself rejects a misspelt name.
    let typo = Settings::load_from(
        None,
        [("LEADSCORE__SCORER__RULEZ".to_string(), "x".to_string())],
    );
    assert!(matches!(typo, Err(ConfigError::UnknownKey { .. })));
}
