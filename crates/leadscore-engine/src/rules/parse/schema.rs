//! The walk of the rules file's schema, top down: one method per table of the format.

use super::access::{index, join, source_text};
use super::{Loader, Value, DEFAULT_DEDUPE_WINDOW, MAX_FACTOR_SCALE, TOP_LEVEL_KEYS};
use std::collections::hash_map::Entry as Slot;
use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

use crate::event::EventType;
use crate::rules::{
    group_key, Audience, Cap, Decay, Entry, Group, Inactivity, Matcher, Output, Rules,
    ScoreSettings, LEAD_STATUS,
};

impl Loader<'_> {
    pub(super) fn rules(&mut self, root: &DeTable<'_>) -> Rules {
        self.check_keys(root, "", "at the top level", TOP_LEVEL_KEYS);
        let dedupe_window = root
            .get("dedupe_window")
            .and_then(|v| self.duration(v, "dedupe_window"))
            .unwrap_or(DEFAULT_DEDUPE_WINDOW);
        Rules {
            dedupe_window,
            score: self.score(root.get("score")),
            entry: self.entry(root.get("entry")),
            audience: self.audience(root.get("audience")),
            groups: self.groups(root.get("group")),
            inactivity: root.get("inactivity").and_then(|v| self.inactivity(v)),
            output: self.output(root.get("output")),
        }
    }

    fn score(&mut self, value: Option<&Value<'_>>) -> ScoreSettings {
        let mut score = ScoreSettings {
            name: "lead score".to_string(),
            min: None,
            max: None,
        };
        let Some(t) = value.and_then(|v| self.table(v, "score", "a table ([score])")) else {
            return score;
        };
        self.check_keys(t, "score", "in [score]", &["name", "min", "max"]);
        if let Some(name) = t.get("name").and_then(|v| self.string(v, "score.name")) {
            score.name = name;
        }
        score.min = t.get("min").and_then(|v| self.integer(v, "score.min"));
        score.max = t.get("max").and_then(|v| self.integer(v, "score.max"));
        if let (Some(min), Some(max), Some(max_value)) = (score.min, score.max, t.get("max")) {
            if min > max {
                self.error(
                    max_value.span(),
                    "score.max",
                    format!("max ({max}) is less than min ({min})"),
                );
            }
        }
        score
    }

    fn entry(&mut self, value: Option<&Value<'_>>) -> Entry {
        let mut entry = Entry {
            on: default_entry_matchers(),
            reentry_window: 0,
        };
        let Some(t) = value.and_then(|v| self.table(v, "entry", "a table ([entry])")) else {
            return entry;
        };
        self.check_keys(t, "entry", "in [entry]", &["on", "reentry_window"]);
        if let Some(v) = t.get("on") {
            entry.on = self.matchers(v, "entry.on");
        }
        if let Some(w) = t
            .get("reentry_window")
            .and_then(|v| self.duration(v, "entry.reentry_window"))
        {
            entry.reentry_window = w;
        }
        entry
    }

    fn audience(&mut self, value: Option<&Value<'_>>) -> Audience {
        let mut audience = Audience::default();
        let Some(t) = value.and_then(|v| self.table(v, "audience", "a table ([audience])")) else {
            return audience;
        };
        self.check_keys(t, "audience", "in [audience]", &["include", "exclude"]);
        if let Some(v) = t.get("include") {
            audience.include = self.predicates(v, "audience.include", "attribute");
        }
        if let Some(v) = t.get("exclude") {
            audience.exclude = self.predicates(v, "audience.exclude", "attribute");
        }
        audience
    }

    fn groups(&mut self, value: Option<&Value<'_>>) -> Vec<Group> {
        let Some(value) = value else {
            return Vec::new();
        };
        let Some(items) = self.array(
            value,
            "group",
            "an array of tables ([[group]], not [group])",
        ) else {
            return Vec::new();
        };
        // Cap key -> the name that has it and where it was first used: a name used twice has
        // its key twice, as do two names whose keys collide.
        let mut seen: HashMap<u32, (String, String, usize)> = HashMap::new();
        let mut groups = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = index("group", i);
            if let Some(group) = self.group(item, &path, &mut seen) {
                groups.push(group);
            }
        }
        groups
    }

    fn group(
        &mut self,
        value: &Value<'_>,
        path: &str,
        seen: &mut HashMap<u32, (String, String, usize)>,
    ) -> Option<Group> {
        let t = self.table(value, path, "a table ([[group]])")?;
        self.check_keys(
            t,
            path,
            "in a [[group]]",
            &["name", "delta", "triggers", "cap"],
        );
        let name = self.required(t, value, path, "name", "").and_then(|v| {
            let key = join(path, "name");
            let name = self.string(v, &key)?;
            if name.is_empty() {
                // `reason.group` of its changes would be empty: refused by the change schema,
                // and read as no group at all from protobuf (an empty string is its default).
                self.error(
                    v.span(),
                    &key,
                    "must not be empty: score changes name the group (reason.group)",
                );
                return None;
            }
            match seen.entry(group_key(&name)) {
                Slot::Occupied(e) if e.get().0 == name => {
                    let (_, first, line) = e.get();
                    let message = format!(
                        "duplicate group name {name:?} (already used by {first} on line {line})"
                    );
                    self.error(v.span(), &key, message);
                }
                Slot::Occupied(e) => {
                    let other = &e.get().0;
                    // A group's cap usage and its explain notes are kept under a 32-bit hash
                    // of its name (in every user's state): two names with one hash would
                    // share a cap.
                    let message = format!(
                        "group name {name:?} has the same 32-bit key as group {other:?}, so \
                         the two would share one cap: rename one of them"
                    );
                    self.error(v.span(), &key, message);
                }
                Slot::Vacant(e) => {
                    let line = self.position(v.span().start).0;
                    e.insert((name.clone(), path.to_string(), line));
                }
            }
            Some(name)
        });
        let delta = self.required(t, value, path, "delta", "").and_then(|v| {
            let key = join(path, "delta");
            let delta = self.integer(v, &key)?;
            if delta == 0 {
                self.error(
                    v.span(),
                    &key,
                    "must not be zero: a group's delta is the (non-zero) change it applies",
                );
                return None;
            }
            Some(delta)
        });
        let triggers = self
            .required(
                t,
                value,
                path,
                "triggers",
                " (a group needs at least one trigger)",
            )
            .and_then(|v| {
                let key = join(path, "triggers");
                let triggers = self.matchers(v, &key);
                if v.get_ref().as_array().is_some_and(|a| a.is_empty()) {
                    self.error(
                        v.span(),
                        &key,
                        "is empty: a group needs at least one trigger",
                    );
                    return None;
                }
                Some(triggers)
            });
        let cap = match t.get("cap") {
            Some(v) => Some(self.cap(v, &join(path, "cap"))?),
            None => None,
        };
        Some(Group {
            name: name?,
            delta: delta?,
            triggers: triggers?,
            cap,
        })
    }

    fn cap(&mut self, value: &Value<'_>, path: &str) -> Option<Cap> {
        let t = self.table(value, path, "a table like { points = 20, per = \"1d\" }")?;
        self.check_keys(t, path, "in a cap", &["points", "per"]);
        let points = self.required(t, value, path, "points", "").and_then(|v| {
            let key = join(path, "points");
            let points = self.integer(v, &key)?;
            match u64::try_from(points) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    self.error(v.span(), &key, format!("must be positive, found {points}"));
                    None
                }
            }
        });
        let per = self
            .required(t, value, path, "per", "")
            .and_then(|v| self.positive_duration(v, &join(path, "per")));
        Some(Cap {
            points: points?,
            per: per?,
        })
    }

    fn inactivity(&mut self, value: &Value<'_>) -> Option<Inactivity> {
        let path = "inactivity";
        let t = self.table(value, path, "a table ([inactivity])")?;
        self.check_keys(t, path, "in [inactivity]", &["window", "delta", "factor"]);
        let window = self
            .required(t, value, path, "window", "")
            .and_then(|v| self.positive_duration(v, "inactivity.window"));
        let delta = t.get_key_value("delta");
        let factor = t.get_key_value("factor");
        let delta_decay = delta.and_then(|(_, v)| {
            let d = self.integer(v, "inactivity.delta")?;
            if d >= 0 {
                self.error(
                    v.span(),
                    "inactivity.delta",
                    format!("must be negative (inactivity lowers a score), found {d}"),
                );
                return None;
            }
            Some(Decay::Delta(d))
        });
        let factor_decay = factor.and_then(|(_, v)| self.factor(v, "inactivity.factor"));
        let decay = match (delta, factor) {
            (Some((dk, _)), Some((fk, _))) => {
                let (later, name) = if dk.span().start > fk.span().start {
                    (dk, "delta")
                } else {
                    (fk, "factor")
                };
                self.error(
                    later.span(),
                    &join(path, name),
                    "set either `delta` or `factor`, not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    value.span(),
                    path,
                    "needs either `delta` (a negative integer) or `factor` (a decimal strictly between 0 and 1)",
                );
                None
            }
            (Some(_), None) => delta_decay,
            (None, Some(_)) => factor_decay,
        };
        Some(Inactivity {
            window: window?,
            decay: decay?,
        })
    }

    /// The one float of the format, kept exact: `0.57` becomes `57 / 10^2`, read from the
    /// literal as written (not through a binary float, which would turn `0.29999999999999999`
    /// into `0.3`), so decay never suffers binary rounding (see [`Decay::Factor`]).
    fn factor(&mut self, value: &Value<'_>, key: &str) -> Option<Decay> {
        const RANGE: &str = "must be a decimal strictly between 0 and 1";
        let text = match value.get_ref() {
            DeValue::Float(f) => f.as_str(),
            DeValue::Integer(i) => {
                self.error(value.span(), key, format!("{RANGE}, found {i}"));
                return None;
            }
            _ => {
                self.wrong_type(value, key, "a decimal between 0 and 1, like 0.9");
                return None;
            }
        };
        match factor_decimal(text) {
            Ok((numerator, scale)) => Some(Decay::Factor { numerator, scale }),
            Err(FactorProblem::OutOfRange) => {
                self.error(
                    value.span(),
                    key,
                    format!("{RANGE}, found {}", source_text(value)),
                );
                None
            }
            Err(FactorProblem::TooPrecise) => {
                self.error(
                    value.span(),
                    key,
                    format!(
                        "{} has more than {MAX_FACTOR_SCALE} decimal places: a factor decay is \
                         computed exactly, with at most {MAX_FACTOR_SCALE} (a factor at or below \
                         1e-19, which takes every score to 0, is kept as 1e-19)",
                        source_text(value)
                    ),
                );
                None
            }
        }
    }

    fn output(&mut self, value: Option<&Value<'_>>) -> Output {
        let mut output = Output::default();
        let Some(t) = value.and_then(|v| self.table(v, "output", "a table ([output])")) else {
            return output;
        };
        self.check_keys(t, "output", "in [output]", &["tracked_attributes"]);
        if let Some(v) = t.get("tracked_attributes") {
            let key = "output.tracked_attributes";
            if let Some(items) = self.array(v, key, "an array of attribute names") {
                output.tracked_attributes = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        let name = self.string(item, &index(key, i))?;
                        if name.is_empty() {
                            // No attribute has an empty name: a typo, tracking nothing.
                            self.error(item.span(), &index(key, i), "is empty: an attribute name");
                            return None;
                        }
                        Some(name)
                    })
                    .collect();
            }
        }
        // SPEC 4: every change's snapshot holds at least `lead_status` (the handoff reads it),
        // listed or not.
        if !output.tracked_attributes.iter().any(|a| a == LEAD_STATUS) {
            output.tracked_attributes.push(LEAD_STATUS.to_string());
        }
        output
    }
}

/// What enrolls a user when `[entry]` or its `on` is absent (SPEC section 3, the seed's canvas).
pub(super) fn default_entry_matchers() -> Vec<Matcher> {
    [EventType::EmailAdded, EventType::ExternalScore]
        .into_iter()
        .map(|kind| Matcher {
            kind,
            name: None,
            app_id: None,
            properties: Vec::new(),
        })
        .collect()
}

/// Why a `factor` literal cannot be kept.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FactorProblem {
    /// Not a decimal strictly between 0 and 1 (`inf` and `nan` included).
    OutOfRange,
    /// More decimal places than [`MAX_FACTOR_SCALE`], and above `1e-19`.
    TooPrecise,
}

/// A TOML float literal (`0.57`, `5.7e-1`, `0.000_1`) as the exact decimal it writes,
/// `numerator / 10^scale` with no trailing zeros, when it lies strictly between 0 and 1 and
/// has at most [`MAX_FACTOR_SCALE`] decimal places (so `|score| × numerator` fits the i128
/// arithmetic of the decay). A factor at or below `1e-19` is kept as `1e-19`: truncated
/// toward zero, `score × factor` is 0 for every 64-bit score with either (|score| < 9.3 ×
/// 10^18), so the two decay every score alike.
pub(super) fn factor_decimal(text: &str) -> Result<(i64, u32), FactorProblem> {
    use FactorProblem::{OutOfRange, TooPrecise};
    let s: String = text.chars().filter(|&c| c != '_').collect();
    let (mantissa, exponent) = s.split_once(['e', 'E']).unwrap_or((&s, "0"));
    let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let is_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    // `-0.5`, `inf`, `nan` and the like end here.
    if int_part.is_empty() || !is_digits(int_part) || !is_digits(frac_part) {
        return Err(OutOfRange);
    }
    let (exp_negative, exp_digits) = match exponent.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, exponent.strip_prefix('+').unwrap_or(exponent)),
    };
    if exp_digits.is_empty() || !is_digits(exp_digits) {
        return Err(OutOfRange);
    }
    // An exponent beyond 10^18 either way saturates: the value is then far outside (0, 1) or
    // far below 1e-19, and both are decided the same.
    let exp_digits = exp_digits.trim_start_matches('0');
    let magnitude: i128 = if exp_digits.len() > 18 {
        10i128.pow(18)
    } else {
        exp_digits.parse().unwrap_or(0)
    };
    let exponent = if exp_negative { -magnitude } else { magnitude };
    let digits = format!("{int_part}{frac_part}");
    let significant = digits.trim_start_matches('0');
    let trailing_zeros = significant.len() - significant.trim_end_matches('0').len();
    let significant = significant.trim_end_matches('0');
    if significant.is_empty() {
        return Err(OutOfRange);
    }
    // The value is `significant × 10^power`, and lies in [10^(len - 1 + power), 10^(len + power)).
    let power = exponent - frac_part.len() as i128 + trailing_zeros as i128;
    let len = significant.len() as i128;
    if len + power > 0 {
        return Err(OutOfRange);
    }
    let scale = -power;
    if scale <= i128::from(MAX_FACTOR_SCALE) {
        // At most 18 digits: fits an i64.
        let numerator = significant.parse::<i64>().map_err(|_| TooPrecise)?;
        return Ok((numerator, scale as u32));
    }
    if len + power <= -19 || (significant == "1" && power == -19) {
        return Ok((1, 19));
    }
    Err(TooPrecise)
}
