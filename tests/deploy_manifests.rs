//! The deployment files checked against what the binary accepts, so that a renamed setting,
//! subcommand, port, probe path or metric breaks a test instead of a deployment:
//! `Dockerfile`, `.dockerignore`, `docker-compose.yml`, `deploy/prometheus/`, `deploy/grafana/`,
//! `deploy/docker/leadscore.toml`, `deploy/kubernetes/` and the variables `docs/operations.md`
//! names. Nothing here needs Docker, Kubernetes or a network: the files are parsed, settings are
//! loaded with `Settings::load_from`, and subcommands are checked by running the built binary
//! with `--help`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use leadscore::config::{ConfigError, Settings};
use leadscore::telemetry;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

// ---------------------------------------------------------------------------------------------
// Reading files
// ---------------------------------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file (`---` separated), empty ones skipped.
fn yaml_docs(rel: &str) -> Vec<Yaml> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn yaml(rel: &str) -> Yaml {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

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

/// The string under one key that may itself contain dots (`leadscore.toml`).
fn str_key<'a>(value: &'a Yaml, key: &str) -> &'a str {
    value
        .get(key)
        .and_then(Yaml::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {value:?}"))
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

/// The `LEADSCORE__*` variables among `env`, loaded over `file` as the service would load them.
fn load_settings(origin: &str, file: Option<(&str, &str)>, env: &[(String, String)]) -> Settings {
    for (name, _) in env {
        assert!(
            !name.starts_with("LEADSCORE") || name.starts_with("LEADSCORE__"),
            "{origin}: {name} is not a setting (settings are LEADSCORE__SECTION__KEY) and the \
             binary would ignore it"
        );
    }
    Settings::load_from(file, env.iter().cloned())
        .unwrap_or_else(|e| panic!("{origin}: the settings do not load: {e}"))
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
/// `--help` are ones the binary accepts.
fn assert_binary_accepts(args: &[String], origin: &str) {
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
}

/// The metric-name constants of `src/telemetry.rs` (`pub const X: &str = "...";`), by
/// constant name.
fn telemetry_constants() -> BTreeMap<String, String> {
    let text = read("src/telemetry.rs");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once(": &str = \"") else {
            continue;
        };
        let Some((value, _)) = rest.split_once('"') else {
            continue;
        };
        out.insert(name.trim().to_string(), value.to_string());
    }
    assert!(
        out.get("EVENTS_CONSUMED").map(String::as_str) == Some(telemetry::EVENTS_CONSUMED),
        "the scan of src/telemetry.rs found {out:?}"
    );
    out
}

/// The metric names `src/telemetry.rs` registers as histograms (`describe_histogram!(NAME`).
fn telemetry_histograms() -> BTreeSet<String> {
    let constants = telemetry_constants();
    let text = read("src/telemetry.rs");
    let histograms: BTreeSet<String> = text
        .split("describe_histogram!(")
        .skip(1)
        .filter_map(|rest| rest.split(',').next())
        .map(|name| constants[name.trim()].clone())
        .collect();
    assert!(histograms.contains(telemetry::EVENT_TO_OUTPUT_SECONDS));
    histograms
}

/// The `leadscore_[a-z_]+` names in a PromQL expression, as written (suffixes kept).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("leadscore_") {
        let starts_token = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        if starts_token {
            names.push(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    names
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

fn compose_scorer_settings() -> Settings {
    let compose = compose();
    let env = compose_env(compose_service(&compose, "scorer"));
    assert!(
        env.iter().any(|(k, _)| k.starts_with("LEADSCORE__")),
        "the scorer service sets no LEADSCORE__ variable"
    );
    load_settings("docker-compose.yml scorer", None, &env)
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

#[test]
fn compose_scorer_environment_loads_as_settings() {
    let settings = compose_scorer_settings();
    assert_eq!(settings.kafka.get("bootstrap.servers"), Some("kafka:9092"));
    assert!(
        settings.scorer.rules.is_some(),
        "the scorer needs scorer.rules"
    );
}

#[test]
fn compose_scorer_command_is_a_subcommand_the_binary_accepts() {
    let compose = compose();
    let command = strings(at(compose_service(&compose, "scorer"), "command"));
    assert_eq!(command[0], "score");
    assert_binary_accepts(&command, "docker-compose.yml scorer command");
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
    let volumes = compose_volumes(scorer);
    let (source, _) = volumes
        .iter()
        .find(|(_, target)| Path::new(target) == settings.scorer.state_dir)
        .unwrap_or_else(|| panic!("no volume at scorer.state_dir in {volumes:?}"));
    assert!(
        at(&compose, "volumes").get(source.as_str()).is_some(),
        "the state volume {source} is a named volume"
    );
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

/// One `kafka-topics.sh --create` call of the topics service.
#[derive(Debug, Default)]
struct TopicCreate {
    bootstrap: String,
    topic: String,
    partitions: i32,
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

#[test]
fn compose_creates_the_scorer_topics_as_the_scorer_would() {
    let settings = compose_scorer_settings();
    let creates = compose_topic_creates();
    let t = &settings.topics;
    let names: BTreeSet<&str> = creates.iter().map(|c| c.topic.as_str()).collect();
    let wanted: BTreeSet<&str> = [&t.input, &t.changelog, &t.output, &t.dlq]
        .into_iter()
        .map(String::as_str)
        .collect();
    assert_eq!(names, wanted);
    for c in &creates {
        assert_eq!(c.partitions, t.partitions, "{}: topics.partitions", c.topic);
        assert_eq!(
            Some(c.bootstrap.as_str()),
            settings.kafka.get("bootstrap.servers"),
            "{}",
            c.topic
        );
    }
    let by_name = |name: &str| creates.iter().find(|c| c.topic == name).expect(name);
    assert_eq!(
        by_name(&t.changelog)
            .configs
            .get("cleanup.policy")
            .map(String::as_str),
        Some("compact")
    );
    assert_eq!(
        by_name(&t.dlq)
            .configs
            .get("max.message.bytes")
            .map(String::as_str),
        Some("16777216")
    );
}

#[test]
fn prometheus_scrapes_the_scorer_admin_port_at_metrics() {
    let settings = compose_scorer_settings();
    let compose = compose();
    let mount = compose_volumes(compose_service(&compose, "prometheus"))
        .into_iter()
        .find(|(_, target)| target == "/etc/prometheus/prometheus.yml")
        .expect("prometheus.yml mounted");
    assert_eq!(mount.0, "./deploy/prometheus/prometheus.yml");

    let config = yaml("deploy/prometheus/prometheus.yml");
    let target = format!("scorer:{}", admin_port(&settings));
    let job = seq_at(&config, "scrape_configs")
        .iter()
        .find(|job| {
            seq_at(job, "static_configs")
                .iter()
                .any(|sc| strings(at(sc, "targets")).contains(&target))
        })
        .unwrap_or_else(|| panic!("no scrape job targets {target}"));
    let path = job.get("metrics_path").and_then(Yaml::as_str);
    assert_eq!(path.unwrap_or("/metrics"), "/metrics");
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
    let uid = str_at(ds, "uid");
    for used in dashboard_datasource_uids() {
        assert_eq!(
            used, uid,
            "the dashboard uses a datasource that is not provisioned"
        );
    }
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

fn dashboard_datasource_uids() -> BTreeSet<String> {
    let dashboard = dashboard();
    let mut found = Vec::new();
    collect(&dashboard, &["datasource"], &mut found);
    found
        .into_iter()
        .filter_map(|ds| ds.get("uid").and_then(Json::as_str).map(str::to_string))
        .collect()
}

#[test]
fn dashboard_queries_only_metrics_the_scorer_exports() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "leadscore");
    let known: BTreeSet<String> = telemetry_constants().into_values().collect();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 10, "{queries:?}");
    for expr in &queries {
        for name in metric_names(expr) {
            assert!(
                known.contains(base_metric(&name)),
                "{name} (in {expr}) is not a metric of src/telemetry.rs"
            );
        }
    }
}

#[test]
fn dashboard_queries_histograms_by_their_series_and_other_metrics_by_name() {
    let histograms = telemetry_histograms();
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
    let shown: BTreeSet<String> = dashboard_queries(&dashboard())
        .iter()
        .flat_map(|e| metric_names(e))
        .map(|n| base_metric(&n).to_string())
        .collect();
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

fn k8s<'a>(objects: &'a BTreeMap<(String, String), Yaml>, kind: &str, name: &str) -> &'a Yaml {
    objects
        .get(&(kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn kustomization_resources() -> Vec<String> {
    strings(at(&yaml(&format!("{K8S}/kustomization.yaml")), "resources"))
}

fn statefulset(objects: &BTreeMap<(String, String), Yaml>) -> &Yaml {
    k8s(objects, "StatefulSet", "leadscore-scorer")
}

fn scorer_container(sts: &Yaml) -> &Yaml {
    seq_at(sts, "spec.template.spec.containers")
        .iter()
        .find(|c| str_at(c, "name") == "scorer")
        .expect("container scorer")
}

fn configmap_data<'a>(objects: &'a BTreeMap<(String, String), Yaml>, name: &str) -> &'a Yaml {
    at(k8s(objects, "ConfigMap", name), "data")
}

/// The container's environment: `envFrom` ConfigMaps, then `env` (a `valueFrom` stands for a
/// value the manifests cannot show; its name must still be a setting).
fn k8s_container_env(
    objects: &BTreeMap<(String, String), Yaml>,
    container: &Yaml,
) -> Vec<(String, String)> {
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
            None => assert_setting_name(&name, "the StatefulSet's env"),
        }
    }
    env
}

/// The volume mount of a ConfigMap key (`subPath`), by key.
fn config_mount<'a>(sts: &'a Yaml, configmap: &str, key: &str) -> &'a str {
    let volume = seq_at(sts, "spec.template.spec.volumes")
        .iter()
        .find(|v| v.get("configMap").map(|c| str_at(c, "name")) == Some(configmap))
        .map(|v| str_at(v, "name"))
        .unwrap_or_else(|| panic!("no volume of ConfigMap {configmap}"));
    seq_at(scorer_container(sts), "volumeMounts")
        .iter()
        .find(|m| {
            str_at(m, "name") == volume && m.get("subPath").and_then(Yaml::as_str) == Some(key)
        })
        .map(|m| str_at(m, "mountPath"))
        .unwrap_or_else(|| panic!("{configmap}/{key} is not mounted"))
}

/// The settings a scorer pod runs with: the ConfigMap's file named by `--config`, then the
/// container's environment.
fn k8s_scorer_settings(objects: &BTreeMap<(String, String), Yaml>) -> Settings {
    let sts = statefulset(objects);
    let container = scorer_container(sts);
    let args = strings(at(container, "args"));
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .expect("--config");
    assert_eq!(
        config_mount(sts, "leadscore-scorer-config", "leadscore.toml"),
        config_path,
        "--config names the mounted leadscore.toml"
    );
    let text = str_key(
        configmap_data(objects, "leadscore-scorer-config"),
        "leadscore.toml",
    );
    let env = k8s_container_env(objects, container);
    load_settings("the scorer StatefulSet", Some(("configmap", text)), &env)
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
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "Secret",
    ] {
        assert!(objects.keys().any(|(k, _)| k == kind), "no {kind}");
    }
}

#[test]
fn configmap_settings_file_and_rules_load() {
    let objects = k8s_objects();
    let data = configmap_data(&objects, "leadscore-scorer-config");
    let settings = Settings::load_from(Some(("configmap", str_key(data, "leadscore.toml"))), [])
        .unwrap_or_else(|e| panic!("the ConfigMap's leadscore.toml: {e}"));
    assert!(settings.scorer.rules.is_some());
    leadscore::rules::parse_str(str_key(data, "rules.toml"), "rules.toml")
        .unwrap_or_else(|e| panic!("the ConfigMap's rules.toml: {e}"));
    let env = configmap_data(&objects, "leadscore-scorer-env");
    for (k, _) in env.as_mapping().expect("data") {
        assert!(scalar(k).starts_with("LEADSCORE__"), "{k:?} is no setting");
    }
}

#[test]
fn statefulset_environment_over_the_configmap_file_loads_as_settings() {
    let objects = k8s_objects();
    let settings = k8s_scorer_settings(&objects);
    assert_ne!(
        settings.kafka.get("bootstrap.servers"),
        Some("localhost:9092"),
        "the pods need a real broker address"
    );
}

#[test]
fn statefulset_args_are_a_subcommand_the_binary_accepts() {
    let objects = k8s_objects();
    let args = strings(at(scorer_container(statefulset(&objects)), "args"));
    assert_eq!(args[0], "score");
    assert_binary_accepts(&args, "the StatefulSet's args");
}

#[test]
fn statefulset_mounts_the_rules_and_the_state_volume_where_the_settings_point() {
    let objects = k8s_objects();
    let settings = k8s_scorer_settings(&objects);
    let sts = statefulset(&objects);
    assert_eq!(
        settings.scorer.rules.as_deref(),
        Some(Path::new(config_mount(
            sts,
            "leadscore-scorer-config",
            "rules.toml"
        )))
    );
    let claim = str_at(
        &seq_at(sts, "spec.volumeClaimTemplates")[0],
        "metadata.name",
    );
    let state = seq_at(scorer_container(sts), "volumeMounts")
        .iter()
        .find(|m| str_at(m, "name") == claim)
        .map(|m| str_at(m, "mountPath"))
        .expect("the claim is mounted");
    assert_eq!(Path::new(state), settings.scorer.state_dir);
    assert_eq!(
        at(sts, "spec.template.spec.terminationGracePeriodSeconds").as_u64(),
        Some(60),
        "time for the SIGTERM checkpoint"
    );
}

#[test]
fn probes_container_port_and_services_use_the_admin_port_and_health_paths() {
    let objects = k8s_objects();
    let port = admin_port(&k8s_scorer_settings(&objects));
    let container = scorer_container(statefulset(&objects));
    let admin = seq_at(container, "ports")
        .iter()
        .find(|p| str_at(p, "name") == "admin")
        .expect("a container port named admin");
    assert_eq!(at(admin, "containerPort").as_u64(), Some(u64::from(port)));
    let resolves = |p: &Yaml| p.as_str() == Some("admin") || p.as_u64() == Some(u64::from(port));

    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = at(container, &format!("{probe}.httpGet"));
        assert_eq!(str_at(get, "path"), path, "{probe}");
        assert!(resolves(at(get, "port")), "{probe} port");
    }

    for name in ["leadscore-scorer", "leadscore-scorer-metrics"] {
        let service = k8s(&objects, "Service", name);
        let ports = seq_at(service, "spec.ports");
        assert!(
            ports.iter().any(|p| str_at(p, "name") == "admin"
                && at(p, "port").as_u64() == Some(u64::from(port))
                && resolves(at(p, "targetPort"))),
            "{name}: port admin {port}"
        );
    }
    let headless = k8s(&objects, "Service", "leadscore-scorer");
    assert_eq!(str_at(headless, "spec.clusterIP"), "None");
    assert_eq!(
        str_at(statefulset(&objects), "spec.serviceName"),
        "leadscore-scorer"
    );

    let annotations = at(
        k8s(&objects, "Service", "leadscore-scorer-metrics"),
        "metadata.annotations",
    );
    let annotation = |key: &str| annotations.get(key).map(scalar).unwrap_or_default();
    assert_eq!(annotation("prometheus.io/scrape"), "true");
    assert_eq!(annotation("prometheus.io/port"), port.to_string());
    assert_eq!(annotation("prometheus.io/path"), "/metrics");
}

#[test]
fn services_and_disruption_budget_select_the_scorer_pods() {
    let objects = k8s_objects();
    let sts = statefulset(&objects);
    let labels = at(sts, "spec.template.metadata.labels")
        .as_mapping()
        .expect("pod labels");
    let selects_pods = |selector: &Yaml, what: &str| {
        let selector = selector.as_mapping().expect("selector");
        assert!(!selector.is_empty(), "{what}: empty selector");
        for (k, v) in selector {
            assert_eq!(labels.get(k), Some(v), "{what}: {k:?}");
        }
    };
    selects_pods(at(sts, "spec.selector.matchLabels"), "StatefulSet");
    for name in ["leadscore-scorer", "leadscore-scorer-metrics"] {
        selects_pods(at(k8s(&objects, "Service", name), "spec.selector"), name);
    }
    let pdb = k8s(&objects, "PodDisruptionBudget", "leadscore-scorer");
    selects_pods(at(pdb, "spec.selector.matchLabels"), "PodDisruptionBudget");
    assert_eq!(at(pdb, "spec.maxUnavailable").as_u64(), Some(1));
}

#[test]
fn scorer_pods_run_as_the_image_non_root_user_with_a_read_only_root() {
    let objects = k8s_objects();
    let sts = statefulset(&objects);
    let pod = at(sts, "spec.template.spec.securityContext");
    assert_eq!(at(pod, "runAsNonRoot").as_bool(), Some(true));
    let uid = at(pod, "runAsUser").as_u64().expect("runAsUser");
    assert_eq!(uid.to_string(), dockerfile_runtime_uid());
    assert_eq!(
        at(pod, "fsGroup").as_u64(),
        Some(uid),
        "the PVC is writable"
    );
    let container = at(scorer_container(sts), "securityContext");
    assert_eq!(
        at(container, "readOnlyRootFilesystem").as_bool(),
        Some(true)
    );
    assert_eq!(
        at(container, "allowPrivilegeEscalation").as_bool(),
        Some(false)
    );
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

/// `LEADSCORE__...` names in a text (placeholders like `LEADSCORE__SECTION__KEY` and prefixes
/// like `LEADSCORE__KAFKA__*` left out).
fn mentioned_variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("LEADSCORE__") {
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
    let mut checked = 0;
    for file in &files {
        for var in mentioned_variables(&read(file)) {
            assert_setting_name(&var, file);
            checked += 1;
        }
    }
    assert!(checked > 5, "only {checked} variables found");
    // The check itself rejects a misspelt name.
    let typo = Settings::load_from(
        None,
        [("LEADSCORE__SCORER__RULEZ".to_string(), "x".to_string())],
    );
    assert!(matches!(typo, Err(ConfigError::UnknownKey { .. })));
}
