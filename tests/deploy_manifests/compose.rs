//! `docker-compose.yml`, and the Prometheus and Grafana configuration it mounts.

use super::*;

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
pub(super) fn assert_handoff_agrees_with_scorer(
    handoff: &Settings,
    scorer: &Settings,
    topics_why: &str,
) {
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
    // Dead letters carry the original record; a changelog, a user's state (bounded, but past
    // Kafka's default 1 MB for some rules): both as large as the services produce.
    for dlq in [
        &scorer.topics.dlq,
        &handoff.topics.handoffs_dlq,
        &scorer.topics.changelog,
        &handoff.topics.handoff_changelog,
    ] {
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
pub(super) const SCRAPED: [(&str, &str); 2] = [
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
