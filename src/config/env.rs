//! The `LEADSCORE__SECTION__KEY` environment overlay (see the module doc of `config`).

use super::kafka::{flatten_kafka, kafka_key};
use super::load::Sources;
use super::*;

/// The prefix with one underscore: a variable under it whose name has a double underscore is
/// a mistyped setting.
const MISSPELLED_PREFIX: &str = "LEADSCORE_";

/// One `LEADSCORE__...` variable.
pub(super) struct EnvEntry {
    pub(super) var: String,
    /// The lowercased key path; under `kafka`, one segment in librdkafka spelling.
    pub(super) path: Vec<String>,
    /// The value as given, used as a plain string when its literal reading has the wrong type.
    pub(super) raw: String,
}

/// The process's `LEADSCORE__*` variables. Unlike `std::env::vars`, a variable that is not
/// Unicode is an error naming it rather than a panic, and other variables are not looked at.
pub(super) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let lossy = name.to_string_lossy();
        // `LEADSCORE_` with one underscore too: [`parse_env`] refuses a setting spelled so.
        if !lossy.starts_with(MISSPELLED_PREFIX) {
            continue;
        }
        match (name.to_str(), value.into_string()) {
            (Some(name), Ok(value)) => vars.push((name.to_string(), value)),
            _ => {
                return Err(ConfigError::EnvVar {
                    var: lossy.into_owned(),
                    message: "is not valid Unicode".to_string(),
                })
            }
        }
    }
    Ok(vars)
}

/// The `LEADSCORE__*` variables among `env`, sorted by path so that a variable setting a whole
/// table applies before those setting keys inside it.
pub(super) fn parse_env(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<EnvEntry>, ConfigError> {
    let mut entries = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            if let Some(rest) = var.strip_prefix(MISSPELLED_PREFIX) {
                if rest.contains(ENV_SEPARATOR) {
                    // A setting with one underscore after the prefix was silently ignored (an
                    // outside review); the variables leadscore reads by name
                    // (`LEADSCORE_SALESFORCE_CLIENT_SECRET`) have no double underscore.
                    return Err(ConfigError::EnvVar {
                        message: format!(
                            "looks like a setting, but settings are \
                             LEADSCORE__SECTION__KEY, two underscores after LEADSCORE: \
                             did you mean {ENV_PREFIX}{rest}?"
                        ),
                        var,
                    });
                }
            }
            continue;
        };
        let segments: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::EnvVar {
                var,
                message: "has an empty path segment (write LEADSCORE__SECTION__KEY)".to_string(),
            });
        }
        let path = match segments.split_first() {
            Some((section, keys)) if section == "kafka" && !keys.is_empty() => {
                vec![section.clone(), kafka_key(&keys.join("."))]
            }
            _ => segments,
        };
        entries.push(EnvEntry { var, path, raw });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for pair in entries.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(ConfigError::EnvVar {
                var: pair[1].var.clone(),
                message: format!("sets the same key as {}", pair[0].var),
            });
        }
    }
    Ok(entries)
}

/// An environment variable's value: a TOML value literal when it is one, else the plain string.
fn env_value(raw: &str) -> Value {
    raw.parse::<Value>()
        .unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// Inserts one environment variable's value at its path, creating tables as needed.
pub(super) fn overlay(
    table: &mut Table,
    entry: &EnvEntry,
    sources: &Sources<'_>,
) -> Result<(), ConfigError> {
    let mut value = env_value(&entry.raw);
    if let Some(done) = overlay_role_table(table, entry, &value, sources) {
        return done;
    }
    let whole_kafka = entry.path.len() == 1 && entry.path[0] == "kafka";
    if let (true, Value::Table(kafka)) = (whole_kafka, &value) {
        value =
            Value::Table(
                flatten_kafka(kafka).map_err(|(key, message)| ConfigError::Invalid {
                    origin: sources.origin(&["kafka"]),
                    key: format!("kafka.{key}"),
                    message,
                })?,
            );
    }
    let Some((last, parents)) = entry.path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let slot = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match slot {
            Value::Table(inner) => current = inner,
            other => {
                let path: Vec<&str> = parents[..=depth].iter().map(String::as_str).collect();
                return Err(ConfigError::Invalid {
                    origin: sources.origin(&path),
                    key: path.join("."),
                    message: format!(
                        "is {}, not a table, so {} cannot set a key inside it",
                        with_article(other.type_str()),
                        entry.var
                    ),
                });
            }
        }
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// `LEADSCORE__KAFKA__PRODUCER='{ linger_ms = 5 }'` (or `__CONSUMER`): replaces that whole table,
/// as `LEADSCORE__KAFKA` replaces `[kafka]`. In the flattened `[kafka]` table the role's
/// properties are keys with its prefix, so those are dropped and the variable's put in their
/// place; variables naming one property of the table sort after it and still apply. `None` for
/// any other variable, or a value that is not a table (which the check then rejects by name).
fn overlay_role_table(
    table: &mut Table,
    entry: &EnvEntry,
    value: &Value,
    sources: &Sources<'_>,
) -> Option<Result<(), ConfigError>> {
    let [section, role] = entry.path.as_slice() else {
        return None;
    };
    let prefix = [PRODUCER_PREFIX, CONSUMER_PREFIX]
        .into_iter()
        .find(|p| p.trim_end_matches('.') == role)?;
    let (true, Value::Table(given)) = (section == "kafka", value) else {
        return None;
    };
    let flat = match flatten_kafka(given) {
        Ok(flat) => flat,
        Err((key, message)) => {
            return Some(Err(ConfigError::Invalid {
                origin: sources.origin(&["kafka", role]),
                key: format!("kafka.{prefix}{key}"),
                message,
            }))
        }
    };
    let slot = table
        .entry("kafka".to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    let Value::Table(kafka) = slot else {
        return Some(Err(ConfigError::Invalid {
            origin: sources.origin(&["kafka"]),
            key: "kafka".to_string(),
            message: format!(
                "is not a table, so {} cannot set a table inside it",
                entry.var
            ),
        }));
    };
    kafka.retain(|key, _| !key.starts_with(prefix));
    for (key, value) in flat {
        kafka.insert(format!("{prefix}{key}"), value);
    }
    Some(Ok(()))
}
