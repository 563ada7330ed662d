//! Logging setup: the filter, colours, and the JSON line format.
//!
//! - **Filter.** `RUST_LOG`, when set, is used verbatim. Otherwise the `log.level` setting is,
//!   with other crates' chatter held at `warn` ([`QUIET_CRATES`]): the storage engine alone logs
//!   some sixteen `info` lines with build paths at every start, and the Kafka and HTTP clients
//!   add their own. A crate the setting names (`info,fjall=debug`) keeps what the setting says.
//! - **Colours.** The `human` format writes ANSI colour codes only when stderr is a terminal;
//!   a file, a pipe or a container log collector gets plain text.
//! - **JSON.** One object per line, shaped as tracing-subscriber's own `json` format
//!   (`timestamp`, `level`, `fields`, `target`), except that a list logged with `?` (the
//!   partitions of a rebalance, `?partitions`) is written as a JSON array rather than as a
//!   string of its Debug text, so a collector can query it.

use std::fmt;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Crates whose `info` (and more verbose) lines are not shown unless asked for: the storage
/// engine (`fjall`, `lsm_tree`), the Kafka client (`rdkafka`, and `librdkafka` for the C
/// library's own log), the HTTP stack of the Salesforce client and the admin port.
pub const QUIET_CRATES: &[&str] = &[
    "fjall",
    "lsm_tree",
    "rdkafka",
    "librdkafka",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tokio_rustls",
    "tower",
    "axum",
];

/// The filter directives in effect: `RUST_LOG` verbatim when set (not empty), else the
/// `log.level` setting with `<crate>=warn` added for each of [`QUIET_CRATES`] the setting does
/// not name. Nothing is added when the setting's global level is already `warn` or quieter
/// (the crates are then as quiet as everything else), or when it has no global level.
pub fn filter_directives(rust_log: Option<&str>, setting: &str) -> String {
    if let Some(env) = rust_log.filter(|s| !s.trim().is_empty()) {
        return env.to_string();
    }
    let directives: Vec<&str> = setting
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let global = directives
        .iter()
        .filter_map(|d| d.parse::<LevelFilter>().ok())
        .next_back();
    if global.is_none_or(|g| g <= LevelFilter::WARN) {
        return setting.to_string();
    }
    // A directive for a module of the crate (`rdkafka::consumer=debug`) is more specific than
    // `rdkafka=warn` and wins over it in the filter, so only the crate itself counts here.
    let names = |krate: &str| {
        directives
            .iter()
            .any(|d| d.split(['=', '[']).next().unwrap_or("").trim() == krate)
    };
    let mut out = directives.join(",");
    for krate in QUIET_CRATES.iter().filter(|k| !names(k)) {
        out.push_str(&format!(",{krate}=warn"));
    }
    out
}

/// The subscriber the services log through, writing to `writer`; `ansi` only matters for the
/// human format. Separate from [`init_logging`] so tests can capture what it writes.
pub fn subscriber<W>(
    json: bool,
    directives: &str,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::new(directives);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        Box::new(builder.with_ansi(false).event_format(JsonLines).finish())
    } else {
        Box::new(builder.with_ansi(ansi).finish())
    }
}

/// Logging for a command: human-readable or JSON lines on stderr, the filter from `RUST_LOG`
/// or the `level` setting ([`filter_directives`]), colours only on a terminal. Once per
/// process; later calls do nothing.
pub fn init_logging(json: bool, level: &str) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = filter_directives(rust_log.as_deref(), level);
    let ansi = std::io::stderr().is_terminal();
    let _ = subscriber(json, &directives, std::io::stderr, ansi).try_init();
}

/// tracing-subscriber's JSON line layout with list values as arrays (module docs).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields::default();
        event.record(&mut fields);

        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("fields".into(), serde_json::Value::Object(fields.fields));
        // Records from the `log` crate carry their real target in a field.
        let target = fields
            .log_target
            .unwrap_or_else(|| meta.target().to_string());
        line.insert("target".into(), target.into());
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> = scope
                .from_root()
                .map(|span| serde_json::json!({ "name": span.name() }))
                .collect();
            line.insert("spans".into(), spans.into());
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values.
#[derive(Default)]
struct JsonFields {
    fields: serde_json::Map<String, serde_json::Value>,
    log_target: Option<String>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name();
        if name == "log.target" {
            self.log_target = value.as_str().map(str::to_string);
        } else if !name.starts_with("log.") {
            self.fields.insert(name.to_string(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| value.to_string().into());
        self.put(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }

    /// A value logged with `?` whose Debug text is a JSON array (a `Vec` or slice of numbers,
    /// strings or booleans: `[0, 2]`, `["a", "b"]`) is written as that array. Anything else,
    /// including text logged with `%`, stays a string.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if text.starts_with('[') {
            if let Ok(list @ serde_json::Value::Array(_)) = serde_json::from_str(&text) {
                self.put(field, list);
                return;
            }
        }
        self.put(field, text.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Captures what a subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Capture {
        type Writer = Capture;
        fn make_writer(&'w self) -> Capture {
            self.clone()
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("capture").clone()).expect("UTF-8 logs")
        }
    }

    /// Runs `f` under the subscriber the services build from `setting` and returns its output.
    fn logged(json: bool, setting: &str, ansi: bool, f: impl FnOnce()) -> String {
        let out = Capture::default();
        let sub = subscriber(json, &filter_directives(None, setting), out.clone(), ansi);
        tracing::subscriber::with_default(sub, f);
        out.text()
    }

    /// Asserts that what `f` logs under the human format from `setting` holds every one of
    /// `shown` and none of `hidden`.
    fn assert_logged(setting: &str, shown: &[&str], hidden: &[&str], f: impl FnOnce()) {
        let text = logged(false, setting, false, f);
        for line in shown {
            assert!(text.contains(line), "{line:?} missing from {text}");
        }
        for line in hidden {
            assert!(!text.contains(line), "{line:?} in {text}");
        }
    }

    #[test]
    fn json_writes_a_list_of_partitions_as_an_array() {
        let text = logged(true, "info", false, || {
            let partitions = vec![0, 2, 5];
            tracing::info!(?partitions, "partitions assigned");
            let topics = vec!["in", "out"];
            tracing::info!(?topics, count = 2u64, ok = true, "lists of strings too");
            tracing::info!(detail = %"[not, json]", "text stays text");
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0]["fields"]["partitions"],
            serde_json::json!([0, 2, 5])
        );
        assert_eq!(lines[0]["fields"]["message"], "partitions assigned");
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["target"]
            .as_str()
            .is_some_and(|t| t.contains("logging")));
        assert!(lines[0]["timestamp"].as_str().is_some_and(|t| t.len() > 10));
        assert_eq!(
            lines[1]["fields"]["topics"],
            serde_json::json!(["in", "out"])
        );
        assert_eq!(lines[1]["fields"]["count"], 2);
        assert_eq!(lines[1]["fields"]["ok"], true);
        assert_eq!(lines[2]["fields"]["detail"], "[not, json]");
    }

    #[test]
    fn human_format_has_no_colour_codes_when_not_writing_to_a_terminal() {
        // What init_logging passes for a stderr that is a file or a pipe.
        let text = logged(false, "info", false, || {
            tracing::warn!(partition = 3, "a warning");
        });
        assert!(text.contains("a warning"), "{text}");
        assert!(!text.contains('\u{1b}'), "escape codes in {text:?}");
        // And on a terminal, colours as before.
        let text = logged(false, "info", true, || tracing::warn!("a warning"));
        assert!(text.contains('\u{1b}'), "{text:?}");
    }

    #[test]
    fn other_crates_info_lines_are_held_at_warn_by_default() {
        let quiet = ["opening keyspace", "recovering tree", "a client line"];
        let shown = ["a storage warning", "scorer started"];
        assert_logged("info", &shown, &quiet, || {
            tracing::info!(target: "fjall::keyspace", "opening keyspace at /build/path");
            tracing::info!(target: "lsm_tree::tree", "recovering tree");
            tracing::info!(target: "librdkafka", "a client line");
            tracing::warn!(target: "fjall::journal", "a storage warning");
            tracing::info!(target: "leadscore::scorer", "scorer started");
        });
    }

    #[test]
    fn a_crate_the_setting_names_logs_as_the_setting_says() {
        assert_logged(
            "info,fjall=info",
            &["opening keyspace"],
            &["recovering tree"],
            || {
                tracing::info!(target: "fjall::keyspace", "opening keyspace");
                tracing::info!(target: "lsm_tree::tree", "recovering tree");
            },
        );
        assert_logged("debug", &["a debug line"], &["a hyper line"], || {
            tracing::debug!(target: "leadscore::scorer", "a debug line");
            tracing::info!(target: "hyper::proto", "a hyper line");
        });
    }

    #[test]
    fn rust_log_wins_over_the_setting_and_the_quiet_defaults() {
        assert_eq!(
            filter_directives(Some("debug,fjall=trace"), "info"),
            "debug,fjall=trace"
        );
        assert_eq!(filter_directives(Some("  "), "warn"), "warn");
        let d = filter_directives(None, "info");
        assert!(d.starts_with("info,"), "{d}");
        for krate in QUIET_CRATES {
            assert!(d.contains(&format!(",{krate}=warn")), "{krate} in {d}");
        }
        // Already quiet, or only per-target: left as written.
        assert_eq!(filter_directives(None, "warn"), "warn");
        assert_eq!(
            filter_directives(None, "warn,rdkafka::client=off,librdkafka=error"),
            "warn,rdkafka::client=off,librdkafka=error"
        );
        assert_eq!(
            filter_directives(None, "leadscore=debug"),
            "leadscore=debug"
        );
        let d = filter_directives(None, "info,rdkafka=info");
        assert!(!d.split(',').any(|x| x == "rdkafka=warn"), "{d}");
        assert!(d.contains("fjall=warn"), "{d}");
    }

    #[test]
    fn a_module_the_setting_names_is_more_specific_than_the_quiet_crate() {
        let setting = "info,rdkafka::consumer=debug";
        assert_logged(setting, &["a consumer line"], &["a client line"], || {
            tracing::debug!(target: "rdkafka::consumer", "a consumer line");
            tracing::info!(target: "rdkafka::client", "a client line");
        });
    }
}
