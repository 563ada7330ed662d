//! The rules-file loader: TOML text to a validated [`Rules`], reporting every error at once.
//!
//! Rules files are written by hand and checked by `leadscore rules check` before a deploy, so the
//! loader is built for the person fixing the file: it reports *every* problem in one pass, each
//! with its line, column and the dotted key a user would write (`group[2].delta`). serde's derive
//! stops at the first error and cannot tell "a float where an integer belongs" from other type
//! errors, so the file is parsed into toml's spanned document tree ([`DeTable`]) and walked by
//! hand instead. Only a TOML syntax error stops the walk: there is no tree to walk past it.
//!
//! # Key paths
//!
//! A key path joins table keys with `.` and writes array elements as `[n]`, **1-based**, the way
//! people count: `group[1]` is the first `[[group]]` of the file, `audience.exclude[2]` the
//! second exclude predicate, `entry.on[1].type` the `type` of the first entry matcher. Keys that
//! are not bare TOML keys are quoted: `score."my key"`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml::de::{DeArray, DeString, DeTable, DeValue};
use toml::Spanned;

use super::{
    lint, Audience, Cap, Decay, Entry, Group, Inactivity, Matcher, Output, Predicate, Rules,
    ScoreSettings, Test,
};
use crate::duration;
use crate::event::{EventType, Scalar};
use crate::timestamp::Millis;

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The file as given to [`parse_str`] or [`load_file`].
    pub file: String,
    /// 1-based; 0 when the error concerns the whole file (it could not be read).
    pub line: usize,
    /// 1-based, in characters; 0 with `line`.
    pub column: usize,
    /// The dotted path of the offending key (see the module doc); empty for a syntax error or an
    /// unreadable file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for RuleError {
    /// `file:line:column: key: message`, the shape editors and CI logs turn into links. Without a
    /// line (an unreadable file) the position is left out rather than printed as `0:0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, &self.file, self.line, self.column, &self.key)?;
        write!(f, " {}", self.message)
    }
}

/// `file:line:column: key:`, shared by errors and warnings so both link the same way.
fn write_location(
    f: &mut fmt::Formatter<'_>,
    file: &str,
    line: usize,
    column: usize,
    key: &str,
) -> fmt::Result {
    write!(f, "{file}:")?;
    if line > 0 {
        write!(f, "{line}:{column}:")?;
    }
    if !key.is_empty() {
        write!(f, " {key}:")?;
    }
    Ok(())
}

/// A rule that loads but can never do anything (the checks are in `rules/lint.rs`), located
/// like a [`RuleError`]. The rules still run as written; `rules check --strict` fails on these.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleWarning {
    pub file: String,
    /// 1-based; 0 when the rule has no place in the file (a default).
    pub line: usize,
    /// 1-based, in characters; 0 with `line`.
    pub column: usize,
    /// The dotted key path, as in [`RuleError::key`].
    pub key: String,
    pub message: String,
}

impl fmt::Display for RuleWarning {
    /// `file:line:column: key: warning: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(f, &self.file, self.line, self.column, &self.key)?;
        write!(f, " warning: {}", self.message)
    }
}

/// A rules file that loaded, with the warnings about it, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub rules: Rules,
    pub warnings: Vec<RuleWarning>,
}

/// Every error found in a rules file, in file order; never empty when returned by the loader.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct RulesErrors(pub Vec<RuleError>);

impl fmt::Display for RulesErrors {
    /// One error per line, so the whole report can be printed as is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The largest rules file read. Real ones are a few kilobytes; the cap keeps a wrong path
/// (`/dev/zero`, a log file) from being read until memory runs out.
pub const MAX_RULES_BYTES: usize = 1 << 20;

/// Reads and parses the rules file at `path`. An unreadable file is a single error with line 0.
pub fn load_file(path: &Path) -> Result<Rules, RulesErrors> {
    check_file(path).map(|c| c.rules)
}

/// [`load_file`] keeping the warnings.
pub fn check_file(path: &Path) -> Result<Checked, RulesErrors> {
    let file = path.display().to_string();
    match read_capped(path) {
        Ok(source) => check_str(&source, &file),
        Err(message) => Err(RulesErrors(vec![RuleError {
            file,
            line: 0,
            column: 0,
            key: String::new(),
            message,
        }])),
    }
}

/// The file's text, at most [`MAX_RULES_BYTES`] of it, or why not.
fn read_capped(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read the rules file: {e}");
    let file = std::fs::File::open(path).map_err(cannot)?;
    if file.metadata().map_err(cannot)?.is_dir() {
        return Err("cannot read the rules file: it is a directory".into());
    }
    let mut bytes = Vec::new();
    // One byte past the cap tells "exactly at the cap" from "larger".
    file.take(MAX_RULES_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > MAX_RULES_BYTES {
        return Err(format!(
            "is larger than {} MiB, the limit for a rules file (is this the right file?)",
            MAX_RULES_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Parses and validates a rules file; `file` names it in the errors.
pub fn parse_str(source: &str, file: &str) -> Result<Rules, RulesErrors> {
    check_str(source, file).map(|c| c.rules)
}

/// [`parse_str`] keeping the warnings about rules that can never do anything.
pub fn check_str(source: &str, file: &str) -> Result<Checked, RulesErrors> {
    let mut loader = Loader::new(source, file);
    let root = match DeTable::parse(source) {
        Ok(root) => root,
        Err(e) => {
            let (line, column) = match e.span() {
                Some(span) => loader.position(span.start),
                None => (0, 0),
            };
            return Err(RulesErrors(vec![RuleError {
                file: file.to_string(),
                line,
                column,
                key: String::new(),
                message: format!("TOML syntax error: {}", e.message()),
            }]));
        }
    };
    let rules = loader.rules(root.get_ref());
    if !loader.errors.is_empty() {
        // The walk visits tables in key order, not file order; sort so the report reads top down.
        loader.errors.sort_by_key(|e| (e.line, e.column));
        return Err(RulesErrors(loader.errors));
    }
    let line_of = |key: &str| loader.locate(key).map(|(line, _)| line);
    let mut warnings: Vec<RuleWarning> = lint::lint(&rules, &line_of)
        .into_iter()
        .map(|f| {
            let (line, column) = loader.locate(&f.key).unwrap_or((0, 0));
            RuleWarning {
                file: file.to_string(),
                line,
                column,
                key: f.key,
                message: f.message,
            }
        })
        .collect();
    warnings.sort_by_key(|w| (w.line, w.column));
    Ok(Checked { rules, warnings })
}

type Value<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<DeString<'i>>;

const TOP_LEVEL_KEYS: &[&str] = &[
    "dedupe_window",
    "score",
    "entry",
    "audience",
    "group",
    "inactivity",
    "output",
];
const OPERATORS: &[&str] = &["equals", "in", "not_in", "exists", "gt", "gte", "lt", "lte"];
const DEFAULT_DEDUPE_WINDOW: Millis = 24 * 3_600_000;
/// Beyond 18 decimal places `numerator / 10^scale` no longer fits the i64/i128 arithmetic of
/// [`Decay::apply`]; no sensible decay factor needs that many.
const MAX_FACTOR_SCALE: u32 = 18;
const FLOAT_RULE: &str = "every number in a rules file is an integer, except `factor`";

/// The walk's state: where line breaks are (to turn byte offsets into line and column) and the
/// errors found so far.
struct Loader<'s> {
    file: &'s str,
    source: &'s str,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    errors: Vec<RuleError>,
    /// Where each key path's value starts (byte offset), for locating warnings after the walk.
    starts: HashMap<String, usize>,
}

impl<'s> Loader<'s> {
    fn new(source: &'s str, file: &'s str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Loader {
            file,
            source,
            line_starts,
            errors: Vec::new(),
            starts: HashMap::new(),
        }
    }

    /// Line and column of the value at a key path the walk visited.
    fn locate(&self, key: &str) -> Option<(usize, usize)> {
        self.starts.get(key).map(|&offset| self.position(offset))
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .source
            .get(start..offset)
            .map_or(offset.saturating_sub(start), |s| s.chars().count());
        (line, column + 1)
    }

    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.errors.push(RuleError {
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }

    // ---- the schema, top down ----

    fn rules(&mut self, root: &DeTable<'_>) -> Rules {
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
        // Name -> where it was first used, for the duplicate-name error.
        let mut seen: HashMap<String, (String, usize)> = HashMap::new();
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
        seen: &mut HashMap<String, (String, usize)>,
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
            if let Some((first, line)) = seen.get(&name) {
                let message = format!(
                    "duplicate group name {name:?} (already used by {first} on line {line})"
                );
                self.error(v.span(), &key, message);
            } else {
                let line = self.position(v.span().start).0;
                seen.insert(name.clone(), (path.to_string(), line));
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

    /// The one float of the format, kept exact: `0.57` becomes `57 / 10^2`, so decay never
    /// suffers binary rounding (see [`Decay::Factor`]).
    fn factor(&mut self, value: &Value<'_>, key: &str) -> Option<Decay> {
        const RANGE: &str = "must be a decimal strictly between 0 and 1";
        let f = match value.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => {
                self.error(value.span(), key, format!("{RANGE}, found {i}"));
                return None;
            }
            _ => {
                self.wrong_type(value, key, "a decimal between 0 and 1, like 0.9");
                return None;
            }
        };
        let Some(f) = f.filter(|f| *f > 0.0 && *f < 1.0) else {
            self.error(
                value.span(),
                key,
                format!("{RANGE}, found {}", source_text(value)),
            );
            return None;
        };
        match decimal(&format!("{f}")) {
            Some((numerator, scale)) if scale <= MAX_FACTOR_SCALE => {
                Some(Decay::Factor { numerator, scale })
            }
            _ => {
                self.error(
                    value.span(),
                    key,
                    format!("{f} has more than {MAX_FACTOR_SCALE} decimal places"),
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
                    .filter_map(|(i, item)| self.string(item, &index(key, i)))
                    .collect();
            }
        }
        output
    }

    /// A list of event matchers; elements that fail are reported and left out.
    fn matchers(&mut self, value: &Value<'_>, path: &str) -> Vec<Matcher> {
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
    fn predicates(&mut self, value: &Value<'_>, path: &str, subject: &str) -> Vec<Predicate> {
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

    // ---- typed accessors: each reports its own error and returns None on failure ----

    /// Reports unknown keys, naming the allowed ones (and the closest, for a likely typo).
    fn check_keys(&mut self, table: &DeTable<'_>, path: &str, place: &str, allowed: &[&str]) {
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
    fn required<'t, 'i>(
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

    fn wrong_type(&mut self, value: &Value<'_>, key: &str, expected: &str) {
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

    fn table<'v, 'i>(
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

    fn array<'v, 'i>(
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

    fn string(&mut self, value: &Value<'_>, key: &str) -> Option<String> {
        let s = value.get_ref().as_str().map(str::to_string);
        if s.is_none() {
            self.wrong_type(value, key, "a string");
        }
        s
    }

    fn boolean(&mut self, value: &Value<'_>, key: &str) -> Option<bool> {
        let b = value.get_ref().as_bool();
        if b.is_none() {
            self.wrong_type(value, key, "a boolean (true or false)");
        }
        b
    }

    fn integer(&mut self, value: &Value<'_>, key: &str) -> Option<i64> {
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
    fn scalar(&mut self, value: &Value<'_>, key: &str) -> Option<Scalar> {
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

    fn duration(&mut self, value: &Value<'_>, key: &str) -> Option<Millis> {
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
    fn positive_duration(&mut self, value: &Value<'_>, key: &str) -> Option<Millis> {
        let ms = self.duration(value, key)?;
        if ms == 0 {
            self.error(value.span(), key, "must be longer than 0s");
            return None;
        }
        Some(ms)
    }
}

/// What enrolls a user when `[entry]` or its `on` is absent (SPEC section 3, the seed's canvas).
fn default_entry_matchers() -> Vec<Matcher> {
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

/// The value as written in the source, for messages (falls back to the parsed text).
fn source_text(value: &Value<'_>) -> String {
    match value.get_ref() {
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Integer(i) => i.to_string(),
        other => other.type_str().to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    let key = quote_key(key);
    if path.is_empty() {
        key.into_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[n]` for the element at 0-based `i`, shown 1-based (see the module doc).
fn index(path: &str, i: usize) -> String {
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
fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
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

/// An exact decimal `numerator / 10^scale` from a decimal string such as `0.57`, `-1.25` or
/// `1e-5`, normalized (no trailing zeros in the numerator while `scale > 0`). `None` if the
/// string is not a plain decimal or the numerator does not fit an i64.
fn decimal(s: &str) -> Option<(i64, u32)> {
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int_part}{frac_part}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut scale = i64::try_from(frac_part.len()).ok()?.checked_sub(exponent)?;
    let digits = digits.trim_start_matches('0');
    let mut numerator: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    while scale < 0 {
        numerator = numerator.checked_mul(10)?;
        scale += 1;
    }
    while scale > 0 && numerator != 0 && numerator % 10 == 0 {
        numerator /= 10;
        scale -= 1;
    }
    if numerator == 0 {
        scale = 0;
    }
    let numerator = i64::try_from(if negative { -numerator } else { numerator }).ok()?;
    Some((numerator, u32::try_from(scale).ok()?))
}

#[cfg(test)]
mod tests;
