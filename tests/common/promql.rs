//! Reading the `leadscore_*` metrics out of PromQL expressions, for the tests that check the
//! alerting rules and the dashboard against the metrics table (`telemetry::METRICS`).

use std::collections::BTreeSet;

/// One metric in a PromQL expression and its label matchers.
#[derive(Debug)]
pub struct MetricUse {
    /// As written, histogram suffixes kept.
    pub name: String,
    /// `(label, operator, value)` of the `{...}` after the name.
    pub matchers: Vec<(String, String, String)>,
}

pub fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `leadscore_*` selectors of an expression.
pub fn metric_uses(expr: &str) -> Vec<MetricUse> {
    let mut uses = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("leadscore_") {
        let starts_token = !rest[..i].chars().next_back().is_some_and(is_ident_char);
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        rest = &tail[len..];
        if !starts_token {
            continue;
        }
        let mut matchers = Vec::new();
        if let Some(selector) = rest.strip_prefix('{') {
            let end = selector.find('}').expect("a closed selector");
            for m in selector[..end].split(',').filter(|m| !m.trim().is_empty()) {
                let at = m.find(['=', '!']).expect("a matcher");
                let op_len = if m[at + 1..].starts_with(['=', '~']) {
                    2
                } else {
                    1
                };
                matchers.push((
                    m[..at].trim().to_string(),
                    m[at..at + op_len].to_string(),
                    m[at + op_len..].trim().trim_matches('"').to_string(),
                ));
            }
        }
        uses.push(MetricUse {
            name: tail[..len].to_string(),
            matchers,
        });
    }
    uses
}

/// The `leadscore_*` names in a PromQL expression, as written (suffixes kept).
pub fn metric_names(expr: &str) -> Vec<String> {
    metric_uses(expr).into_iter().map(|u| u.name).collect()
}

/// The labels of every `by (...)` and `on (...)` clause.
pub fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in ["by", "on"] {
        for (i, _) in expr.match_indices(word) {
            let before = expr[..i].chars().next_back();
            let after = expr[i + word.len()..].trim_start();
            if before.is_some_and(is_ident_char) || !after.starts_with('(') {
                continue;
            }
            let end = after.find(')').expect("a closed label list");
            out.extend(
                after[1..end]
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    out
}
