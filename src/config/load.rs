//! Loading: defaults, then the file, then the environment; errors name where a value came from.

use super::env::{overlay, parse_env, process_env, EnvEntry};
use super::kafka::flatten_kafka;
use super::*;

/// Where each setting came from, for naming it in errors.
pub(super) struct Sources<'a> {
    pub(super) file: Option<&'a str>,
    pub(super) env: Vec<EnvEntry>,
}

impl Sources<'_> {
    /// The origin of the value at `path`: the environment variable that set it, or a table
    /// around it, or a key inside it; else the file.
    pub(super) fn origin(&self, path: &[&str]) -> Origin {
        let env_var = self
            .env
            .iter()
            .filter(|_| !path.is_empty())
            .find(|entry| entry.path.iter().zip(path).all(|(a, b)| a.as_str() == *b))
            .map(|entry| entry.var.clone());
        Origin {
            file: self.file.map(str::to_string),
            env_var,
        }
    }

    /// The origin of a setting named by dotted keys (not under `kafka`): the first that came
    /// from the environment, else the file.
    pub(super) fn origin_of(&self, keys: &[&str]) -> Origin {
        keys.iter()
            .map(|key| self.origin(&key.split('.').collect::<Vec<_>>()))
            .find(|origin| origin.env_var.is_some())
            .unwrap_or_else(|| self.origin(&[]))
    }

    /// The raw text of the environment variable that set exactly `path`.
    pub(super) fn env_raw(&self, path: &[&str]) -> Option<&str> {
        self.env
            .iter()
            .find(|entry| {
                entry
                    .path
                    .iter()
                    .map(String::as_str)
                    .eq(path.iter().copied())
            })
            .map(|entry| entry.raw.as_str())
    }

    pub(super) fn invalid(&self, keys: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin_of(keys),
            key: keys.first().copied().unwrap_or_default().to_string(),
            message: message.into(),
        }
    }
}

/// The most a settings file may hold: a real one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The settings file's text, read to at most one byte past [`MAX_CONFIG_BYTES`].
fn read_settings_file(path: &Path, name: &str) -> Result<String, ConfigError> {
    let read = |source| ConfigError::Read {
        file: name.to_string(),
        source,
    };
    let bytes = super::small_file::read_capped(path, MAX_CONFIG_BYTES).map_err(read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file: name.to_string(),
            max: MAX_CONFIG_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| {
        read(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

impl Settings {
    /// Defaults, then the file at `path` (if any), then the process's `LEADSCORE__*`
    /// environment variables.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let env = process_env()?;
        match path {
            None => Settings::load_from(None, env),
            Some(path) => {
                let name = path.display().to_string();
                let text = read_settings_file(path, &name)?;
                Settings::load_from(Some((&name, &text)), env)
            }
        }
    }

    /// [`Settings::load`] from given text and environment: `file` is (name for errors, TOML
    /// text); `env` may hold any variables, those without [`ENV_PREFIX`] are ignored.
    pub fn load_from(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut table = match file {
            None => Table::new(),
            Some((name, text)) => text.parse::<Table>().map_err(|e| ConfigError::Syntax {
                file: name.to_string(),
                message: syntax_message(text, &e),
            })?,
        };
        let sources = Sources {
            file: file.map(|(name, _)| name),
            env: parse_env(env)?,
        };

        // Kafka keys are normalized before the overlay, so `bootstrap_servers` in the file and
        // LEADSCORE__KAFKA__BOOTSTRAP_SERVERS land on the same key and the variable wins.
        if let Some(Value::Table(kafka)) = table.get_mut("kafka") {
            *kafka = flatten_kafka(kafka).map_err(|(key, message)| ConfigError::Invalid {
                origin: sources.origin(&[]),
                key: format!("kafka.{key}"),
                message,
            })?;
        }
        for entry in &sources.env {
            overlay(&mut table, entry, &sources)?;
        }

        let sections = field_names::<Settings>();
        if let Some(key) = table.keys().find(|key| !sections.contains(&key.as_str())) {
            return Err(ConfigError::UnknownKey {
                origin: sources.origin(&[key]),
                key: key.clone(),
                expected: sections.to_vec(),
            });
        }
        let mut take = |name: &str| table.remove(name);
        let settings = Settings {
            kafka: section(&sources, "kafka", take("kafka"))?,
            topics: section(&sources, "topics", take("topics"))?,
            scorer: section(&sources, "scorer", take("scorer"))?,
            handoff: section(&sources, "handoff", take("handoff"))?,
            salesforce: section(&sources, "salesforce", take("salesforce"))?,
            admin: section(&sources, "admin", take("admin"))?,
            ingest: section(&sources, "ingest", take("ingest"))?,
            warehouse: section(&sources, "warehouse", take("warehouse"))?,
            log: section(&sources, "log", take("log"))?,
        };
        settings.check(&sources)?;
        Ok(settings)
    }
}

/// One section, deserialized from its table, with errors naming the offending key.
fn section<T: DeserializeOwned + Default>(
    sources: &Sources<'_>,
    name: &str,
    value: Option<Value>,
) -> Result<T, ConfigError> {
    let mut table = match value {
        None => return Ok(T::default()),
        Some(Value::Table(table)) => table,
        Some(other) => {
            return Err(ConfigError::Invalid {
                origin: sources.origin(&[name]),
                key: name.to_string(),
                message: format!("must be a table, not {}", with_article(other.type_str())),
            })
        }
    };
    if name == "salesforce" && table.contains_key("client_secret") {
        return Err(ConfigError::SecretSetting {
            origin: sources.origin(&[name, "client_secret"]),
        });
    }
    let fields = field_names::<T>();
    if !fields.is_empty() {
        if let Some(key) = table.keys().find(|key| !fields.contains(&key.as_str())) {
            return Err(ConfigError::UnknownKey {
                origin: sources.origin(&[name, key]),
                key: format!("{name}.{key}"),
                expected: fields.to_vec(),
            });
        }
    }
    if let Ok(settings) = T::deserialize(table.clone()) {
        return Ok(settings);
    }
    // serde does not say which field failed. Every field has a default, so each key can be
    // tried alone: the first that fails is the culprit, and its error is the message. A key set
    // from the environment gets a second chance as the plain string it was written as.
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let Some(value) = table.get(&key).cloned() else {
            continue;
        };
        let alone = |value: Value| T::deserialize(Table::from_iter([(key.clone(), value)]));
        let Err(error) = alone(value.clone()) else {
            continue;
        };
        if let Some(raw) = sources.env_raw(&[name, &key]) {
            let plain = Value::String(raw.to_string());
            if plain != value && alone(plain.clone()).is_ok() {
                table.insert(key, plain);
                continue;
            }
        }
        return Err(ConfigError::Invalid {
            origin: sources.origin(&[name, &key]),
            key: format!("{name}.{key}"),
            message: error.message().to_string(),
        });
    }
    T::deserialize(table).map_err(|error| ConfigError::Invalid {
        origin: sources.origin(&[name]),
        key: name.to_string(),
        message: error.message().to_string(),
    })
}

/// A TOML syntax error as the line and column it is at and what is wrong, **without the source
/// line** that the parser's own message quotes: a typo on a credential's line (a missing
/// quote after `sasl_password = "...`) would print the credential (README, "Running the
/// scorer": errors never show a credential's value).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let (line, column) = crate::rules::line_column(text, span.start);
            format!("TOML parse error at line {line}, column {column}: {what}")
        }
        None => format!("TOML parse error: {what}"),
    }
}
