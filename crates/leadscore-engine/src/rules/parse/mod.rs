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
//!
//! # Layout
//!
//! This file has the error types, the entry points (reading a file, capped) and the walk's state
//! ([`Loader`]); the walk itself is split by what it reads: `schema` (the tables of the format, top
//! down), `matcher` (event matchers and predicates) and `access` (typed accessors that report their
//! own errors, key paths and suggestions).

mod access;
mod matcher;
mod schema;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use super::{lint, Rules};
use crate::timestamp::Millis;

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The file as given to [`parse_str`] or [`check_bytes`].
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

/// Parses and validates a rules file's bytes, `file` naming it in the errors: at most
/// [`MAX_RULES_BYTES`] of UTF-8 text (the bytes of a longer file, up to one past the cap, tell
/// it apart), else a single error on line 0. Reading the file is the caller's (the `leadscore`
/// package's `config::rules_file`, bounded in size and time): this crate does no I/O.
pub fn check_bytes(bytes: &[u8], file: &str) -> Result<Checked, RulesErrors> {
    if bytes.len() > MAX_RULES_BYTES {
        return Err(RulesErrors::unreadable(
            file,
            format!(
                "is larger than {} MiB, the limit for a rules file (is this the right file?)",
                MAX_RULES_BYTES >> 20
            ),
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(source) => check_str(source, file),
        Err(e) => Err(RulesErrors::unreadable(
            file,
            format!(
                "is not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )),
    }
}

/// [`check_bytes`] without the warnings.
pub fn parse_bytes(bytes: &[u8], file: &str) -> Result<Rules, RulesErrors> {
    check_bytes(bytes, file).map(|c| c.rules)
}

impl RulesErrors {
    /// A rules file that cannot be read, or is not a rules file at all: one error on line 0.
    pub fn unreadable(file: &str, message: String) -> RulesErrors {
        RulesErrors(vec![RuleError {
            file: file.to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
        }])
    }
}

/// Parses and validates a rules file; `file` names it in the errors.
pub fn parse_str(source: &str, file: &str) -> Result<Rules, RulesErrors> {
    check_str(source, file).map(|c| c.rules)
}

/// 1-based line and column (in characters) of byte `offset` in `source`, as rules errors
/// give them: for the service's settings file's syntax errors too.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    Loader::new(source, "").position(offset)
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
/// [`Decay::apply`](super::Decay::apply); no sensible decay factor needs that many.
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
}

#[cfg(test)]
mod tests;
