//! `[kafka]`: librdkafka properties passed through verbatim, and their redaction.

use super::*;

/// librdkafka properties, passed verbatim to every consumer, producer and admin client (see the
/// module doc for the key spelling).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Property name (with dots) to value, as librdkafka takes them: everything a string.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    /// A broker on this machine, so `leadscore dev-broker` and a service work with no config.
    fn default() -> Self {
        KafkaSettings {
            properties: BTreeMap::from([(
                "bootstrap.servers".to_string(),
                "localhost:9092".to_string(),
            )]),
        }
    }
}

impl KafkaSettings {
    /// The value of a property, by its dotted librdkafka name.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// Every property, for building a client configuration.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Whether a librdkafka property may hold a credential, whose value must not reach an error or
/// a log: any name containing `password`, `secret`, `token` or `key` in any case
/// (`sasl.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...), and
/// `sasl.oauthbearer.config`. Broad on purpose: hiding a key file's path costs little.
/// [`crate::runtime::kafka::is_redacted_property`] adds the properties librdkafka does not know.
pub fn is_sensitive_kafka_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|word| key.contains(word))
        || key == "sasl.oauthbearer.config"
}

impl fmt::Debug for KafkaSettings {
    /// Settings get logged at startup; credentials passed through as properties must not be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.properties.iter().map(|(k, v)| {
                let shown = if crate::runtime::kafka::is_redacted_property(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

impl<'de> Deserialize<'de> for KafkaSettings {
    /// Any table: nested tables (from unquoted dotted keys like `ssl.ca.location = ...`) are
    /// flattened, `_` becomes `.`, and scalar values are stringified; the result is laid over the
    /// defaults.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = Table::deserialize(deserializer)?;
        let flat = flatten_kafka(&table).map_err(|(_, message)| de::Error::custom(message))?;
        let mut settings = KafkaSettings::default();
        for (key, value) in flat {
            let value = kafka_value_string(&value).map_err(de::Error::custom)?;
            settings.properties.insert(key, value);
        }
        Ok(settings)
    }
}

/// A `[kafka]` table with nested tables flattened and keys in librdkafka spelling. Two spellings
/// of one property are an error naming it, rather than one silently winning.
pub(super) fn flatten_kafka(table: &Table) -> Result<Table, (String, String)> {
    fn walk(
        prefix: &str,
        table: &Table,
        out: &mut Table,
        spelled: &mut BTreeMap<String, String>,
    ) -> Result<(), (String, String)> {
        for (key, value) in table {
            let full = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let Value::Table(inner) = value {
                walk(&full, inner, out, spelled)?;
                continue;
            }
            let property = kafka_key(&full);
            if let Some(previous) = spelled.insert(property.clone(), full.clone()) {
                let message = format!("set twice, as \"{previous}\" and \"{full}\"");
                return Err((property, message));
            }
            out.insert(property, value.clone());
        }
        Ok(())
    }
    let mut out = Table::new();
    walk("", table, &mut out, &mut BTreeMap::new())?;
    Ok(out)
}

/// A `[kafka]` key in librdkafka spelling.
pub(super) fn kafka_key(key: &str) -> String {
    key.replace('_', ".")
}

/// A TOML value as librdkafka expects it. Arrays become comma-separated lists, librdkafka's
/// list syntax. The message never quotes the value: it may be a credential.
fn kafka_value_string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(_) | Value::Table(_) => {
                    Err("an array property must hold strings, numbers or booleans".to_string())
                }
                scalar => kafka_value_string(scalar),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        other => Err(format!(
            "a librdkafka property is a string, number, boolean or array of those, not {}",
            with_article(other.type_str())
        )),
    }
}
