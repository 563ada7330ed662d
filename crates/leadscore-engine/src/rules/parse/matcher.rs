//! Event matchers and the attribute/property predicates, with their operators.

use super::access::{closest, index, join};
use super::{Key, Loader, Value, OPERATORS};

use crate::event::{EventType, Scalar};
use crate::rules::{Matcher, Predicate, Test};

impl Loader<'_> {
    /// A list of event matchers; elements that fail are reported and left out.
    pub(super) fn matchers(&mut self, value: &Value<'_>, path: &str) -> Vec<Matcher> {
        let Some(items) = self.array(value, path, "an array of event matchers") else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.matcher(item, &index(path, i)))
            .collect()
    }

    fn matcher(&mut self, value: &Value<'_>, path: &str) -> Option<Matcher> {
        let t = self.table(
            value,
            path,
            "an event matcher like { type = \"custom_event\", name = \"registered\" }",
        )?;
        self.check_keys(
            t,
            path,
            "in an event matcher",
            &["type", "name", "app_id", "properties"],
        );
        let kind = self.required(t, value, path, "type", "").and_then(|v| {
            let key = join(path, "type");
            let name = self.string(v, &key)?;
            let kind = EventType::parse(&name);
            if kind.is_none() {
                let valid: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                let hint = closest(&name, &valid)
                    .map(|c| format!("did you mean {c:?}? "))
                    .unwrap_or_default();
                self.error(
                    v.span(),
                    &key,
                    format!(
                        "unknown event type {name:?} ({hint}valid: {})",
                        valid.join(", ")
                    ),
                );
            }
            kind
        });
        let name = t.get("name").map(|v| self.string(v, &join(path, "name")));
        let app_id = t
            .get("app_id")
            .map(|v| self.string(v, &join(path, "app_id")));
        let properties = t
            .get("properties")
            .map(|v| self.predicates(v, &join(path, "properties"), "property"));
        Some(Matcher {
            kind: kind?,
            // An optional key that is present but wrong fails the matcher, not just the key.
            name: name.map_or(Some(None), |n| n.map(Some))?,
            app_id: app_id.map_or(Some(None), |a| a.map(Some))?,
            properties: properties.unwrap_or_default(),
        })
    }

    /// A list of predicates on `subject` (`attribute` or `property`).
    pub(super) fn predicates(
        &mut self,
        value: &Value<'_>,
        path: &str,
        subject: &str,
    ) -> Vec<Predicate> {
        let Some(items) = self.array(value, path, "an array of predicates") else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.predicate(item, &index(path, i), subject))
            .collect()
    }

    fn predicate(&mut self, value: &Value<'_>, path: &str, subject: &str) -> Option<Predicate> {
        let example = format!("a predicate like {{ {subject} = \"plan\", equals = \"pro\" }}");
        let t = self.table(value, path, &example)?;
        let allowed: Vec<&str> = std::iter::once(subject)
            .chain(OPERATORS.iter().copied())
            .collect();
        self.check_keys(t, path, "in a predicate", &allowed);
        let key = self
            .required(t, value, path, subject, "")
            .and_then(|v| self.string(v, &join(path, subject)));
        let mut ops: Vec<(&Key<'_>, &Value<'_>)> = t
            .iter()
            .filter(|(k, _)| OPERATORS.contains(&k.get_ref().as_ref()))
            .collect();
        ops.sort_by_key(|(k, _)| k.span().start);
        // Check every operator's value, even when there are too many, to report all at once.
        let tests: Vec<Option<Test>> = ops
            .iter()
            .map(|(k, v)| self.test(k.get_ref(), v, &join(path, k.get_ref())))
            .collect();
        match ops.as_slice() {
            [] => {
                self.error(
                    value.span(),
                    path,
                    format!("has no operator; use one of {}", OPERATORS.join(", ")),
                );
                None
            }
            [_] => Some(Predicate {
                key: key?,
                test: tests.into_iter().next().flatten()?,
            }),
            [_, (second, _), ..] => {
                let names: Vec<String> = ops
                    .iter()
                    .map(|(k, _)| format!("`{}`", k.get_ref()))
                    .collect();
                self.error(
                    second.span(),
                    path,
                    format!(
                        "has {} operators ({}); use exactly one",
                        ops.len(),
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn test(&mut self, op: &str, value: &Value<'_>, key: &str) -> Option<Test> {
        match op {
            "equals" => self.scalar(value, key).map(Test::Equals),
            "in" | "not_in" => {
                let items = self.array(value, key, "an array of values")?;
                if items.is_empty() {
                    self.error(
                        value.span(),
                        key,
                        format!("`{op}` needs at least one value"),
                    );
                    return None;
                }
                let scalars: Vec<Option<Scalar>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.scalar(item, &index(key, i)))
                    .collect();
                let scalars: Vec<Scalar> = scalars.into_iter().collect::<Option<_>>()?;
                Some(if op == "in" {
                    Test::In(scalars)
                } else {
                    Test::NotIn(scalars)
                })
            }
            "exists" => self.boolean(value, key).map(Test::Exists),
            "gt" => self.integer(value, key).map(Test::Gt),
            "gte" => self.integer(value, key).map(Test::Gte),
            "lt" => self.integer(value, key).map(Test::Lt),
            "lte" => self.integer(value, key).map(Test::Lte),
            _ => None,
        }
    }
}
