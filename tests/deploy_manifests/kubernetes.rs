//! The Kubernetes manifests of `deploy/kubernetes/`.

use super::*;

pub(super) const K8S: &str = "deploy/kubernetes";

/// Every object of the Kubernetes manifests, by (kind, name).
pub(super) fn k8s_objects() -> BTreeMap<(String, String), Yaml> {
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
    // The funnel shipped for an org is the stock one: a status dropped from the copy (it had
    // lost `Nurturing` and `Qualified`) counts as before MQL, and a lead Sales qualified was
    // PATCHed back to MQL (an outside review).
    let h = &handoff.handoff;
    assert_eq!(
        h.status_order,
        leadscore::config::DEFAULT_STATUS_ORDER,
        "handoff.status_order: the default picklist, in order"
    );
    // A real org's Lead field is `Status` (the stand-in takes any field; SPEC 6's seed body
    // names `lead_status`, the scorer's attribute).
    assert_eq!(
        h.patch_body,
        serde_json::json!({"Status": "MQL"}),
        "handoff.patch_body sets the Lead's standard Status field"
    );
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
