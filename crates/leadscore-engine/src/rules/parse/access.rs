//! Typed accessors, each reporting its own error and returning `None` on failure, and the
//! key-path and suggestion helpers of the error messages.

use super::{Loader, Value, FLOAT_RULE};
use std::borrow::Cow;

use toml::de::{DeArray, DeTable, DeValue};

use crate::duration;
use crate::event::Scalar;
use crate::timestamp::Millis;

impl Loader<'_> {
    /// Reports unknown keys, naming the allowed ones (and the closest, for a likely typo).
    pub(super) fn check_keys(
        &mut self,
        table: &DeTable<'_>,
        path: &str,
        place: &str,
        allowed: &[&str],
    ) {
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            self.starts.insert(join(path, name), value.span().start);
            if allowed.contains(&name) {
                continue;
            }
            let hint = closest(name, allowed)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            self.error(
                key.span(),
                &join(path, name),
                format!(
                    "unknown key ({hint}allowed {place}: {})",
                    allowed.join(", ")
                ),
            );
        }
    }

    /// The value of a required key, or an error at the table (`value`) when it is missing.
    pub(super) fn required<'t, 'i>(
        &mut self,
        table: &'t DeTable<'i>,
        value: &Value<'_>,
        path: &str,
        name: &str,
        why: &str,
    ) -> Option<&'t Value<'i>> {
        let found = table.get(name);
        if found.is_none() {
            self.error(
                value.span(),
                &join(path, name),
                format!("missing required key `{name}`{why}"),
            );
        }
        found
    }

    pub(super) fn wrong_type(&mut self, value: &Value<'_>, key: &str, expected: &str) {
        let found = match value.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a datetime",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.error(
            value.span(),
            key,
            format!("expected {expected}, found {found}"),
        );
    }

    pub(super) fn table<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        key: &str,
        expected: &str,
    ) -> Option<&'v DeTable<'i>> {
        let t = value.get_ref().as_table();
        match t {
            // Array elements are located here; keys of tables by `check_keys`.
            Some(_) => {
                self.starts.insert(key.to_string(), value.span().start);
            }
            None => self.wrong_type(value, key, expected),
        }
        t
    }

    pub(super) fn array<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        key: &str,
        expected: &str,
    ) -> Option<&'v DeArray<'i>> {
        let a = value.get_ref().as_array();
        if a.is_none() {
            self.wrong_type(value, key, expected);
        }
        a
    }

    pub(super) fn string(&mut self, value: &Value<'_>, key: &str) -> Option<String> {
        let s = value.get_ref().as_str().map(str::to_string);
        if s.is_none() {
            self.wrong_type(value, key, "a string");
        }
        s
    }

    pub(super) fn boolean(&mut self, value: &Value<'_>, key: &str) -> Option<bool> {
        let b = value.get_ref().as_bool();
        if b.is_none() {
            self.wrong_type(value, key, "a boolean (true or false)");
        }
        b
    }

    pub(super) fn integer(&mut self, value: &Value<'_>, key: &str) -> Option<i64> {
        match value.get_ref() {
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
                if n.is_none() {
                    self.error(value.span(), key, format!("integer {i} is out of range"));
                }
                n
            }
            DeValue::Float(_) => {
                let text = source_text(value);
                self.error(
                    value.span(),
                    key,
                    format!("expected an integer, found {text}: {FLOAT_RULE}"),
                );
                None
            }
            _ => {
                self.wrong_type(value, key, "an integer");
                None
            }
        }
    }

    /// A predicate operand: string, integer or boolean (a float is refused, see [`FLOAT_RULE`]).
    pub(super) fn scalar(&mut self, value: &Value<'_>, key: &str) -> Option<Scalar> {
        match value.get_ref() {
            DeValue::String(s) => Some(Scalar::Str(s.to_string())),
            DeValue::Boolean(b) => Some(Scalar::Bool(*b)),
            DeValue::Integer(_) | DeValue::Float(_) => self.integer(value, key).map(Scalar::Int),
            _ => {
                self.wrong_type(value, key, "a string, an integer or a boolean");
                None
            }
        }
    }

    pub(super) fn duration(&mut self, value: &Value<'_>, key: &str) -> Option<Millis> {
        let Some(text) = value.get_ref().as_str() else {
            self.wrong_type(value, key, "a duration string like \"90m\" or \"7d\"");
            return None;
        };
        match duration::parse(text) {
            Ok(ms) => Some(ms),
            Err(e) => {
                self.error(value.span(), key, format!("invalid duration: {e}"));
                None
            }
        }
    }

    /// A duration that must be longer than zero: a zero cap window or inactivity window would
    /// divide time into nothing.
    pub(super) fn positive_duration(&mut self, value: &Value<'_>, key: &str) -> Option<Millis> {
        let ms = self.duration(value, key)?;
        if ms == 0 {
            self.error(value.span(), key, "must be longer than 0s");
            return None;
        }
        Some(ms)
    }
}

/// The value as written in the source, for messages (falls back to the parsed text).
pub(super) fn source_text(value: &Value<'_>) -> String {
    match value.get_ref() {
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Integer(i) => i.to_string(),
        other => other.type_str().to_string(),
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    let key = quote_key(key);
    if path.is_empty() {
        key.into_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[n]` for the element at 0-based `i`, shown 1-based (see the module doc).
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{}]", i + 1)
}

/// A key as it would be written in TOML: bare when it can be, quoted otherwise.
fn quote_key(key: &str) -> Cow<'_, str> {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    }
}

/// The allowed key closest to a misspelled one, if it is close enough to be a likely typo.
pub(super) fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(word, a), *a))
        .filter(|(d, a)| *d <= 2 && *d < a.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}
