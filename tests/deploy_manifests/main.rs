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
mod compose;
mod dashboard;
mod kubernetes;

use compose::{assert_handoff_agrees_with_scorer, SCRAPED};
use dashboard::dashboard_datasource_variable;
use kubernetes::{k8s_objects, K8S};

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
    leadscore::config::rules_file::load(&root().join(&source))
        .unwrap_or_else(|e| panic!("{source}: {e}"));
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
