//! Warnings about rules that load but can never do anything (`leadscore rules check`).
//!
//! A rules file can be valid and still be wrong: a trigger on a field its event type never
//! carries, a group that an earlier group always wins over, a score range of one value. These are
//! not errors (the scorer runs them exactly as written), but they are almost always a mistake, so
//! `rules check` prints them and `--strict` fails on them.
//!
//! Every check here is *precise*: a warning is only given when the rule provably never has an
//! effect (or, for the missing `min`, when scores provably fall without bound). A rule that is
//! merely suspicious gets no warning, so `--strict` can gate a deploy without exceptions.
//!
//! Which fields an event carries is what [`crate::codec`] keeps for each type (SPEC section 2's
//! table): `name` on `custom_event` and `attribute_changed`, `app_id` on `session_start`,
//! `properties` on `custom_event`; anything else a producer sends is dropped at decoding.

use super::{Decay, Matcher, Rules, Test};
use crate::event::{EventType, Scalar};

/// One warning before it is located in the file: the key path (as errors use it) and the text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Finding {
    pub key: String,
    pub message: String,
}

/// Whether the decoder keeps a `name` on events of this type.
fn carries_name(kind: EventType) -> bool {
    matches!(kind, EventType::CustomEvent | EventType::AttributeChanged)
}

/// Whether the decoder keeps an `app_id` on events of this type.
fn carries_app_id(kind: EventType) -> bool {
    kind == EventType::SessionStart
}

/// Whether the decoder keeps `properties` on events of this type.
fn carries_properties(kind: EventType) -> bool {
    kind == EventType::CustomEvent
}

/// Every warning for `rules`, in no particular order. `line_of` gives the line a key path starts
/// on, so a warning can point at the other rule involved.
pub(super) fn lint(rules: &Rules, line_of: &dyn Fn(&str) -> Option<usize>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut warn = |key: String, message: String| out.push(Finding { key, message });

    if rules.entry.on.is_empty() {
        warn(
            "entry.on".into(),
            "is empty: no event enrolls a user, so no group and no inactivity rule ever applies \
             (only external_score events change scores)"
                .into(),
        );
    }
    for (i, m) in rules.entry.on.iter().enumerate() {
        if m.kind == EventType::UserDeleted {
            warn(
                format!("entry.on[{}]", i + 1),
                "never enrolls anyone: a user_deleted event deletes the user's state instead of \
                 being scored"
                    .into(),
            );
            continue;
        }
        for (key, why, fatal) in dead_fields(m, &format!("entry.on[{}]", i + 1)) {
            warn(
                key,
                consequence(why, fatal, "this matcher never enrolls anyone"),
            );
        }
    }

    for (g, group) in rules.groups.iter().enumerate() {
        let gpath = format!("group[{}]", g + 1);
        if group.name.trim().is_empty() {
            warn(
                format!("{gpath}.name"),
                "is blank: score changes report the group by its name (reason.group), so give it \
                 one people can read"
                    .into(),
            );
        }
        for (t, trigger) in group.triggers.iter().enumerate() {
            let tpath = format!("{gpath}.triggers[{}]", t + 1);
            if trigger.kind == EventType::ExternalScore {
                warn(
                    tpath,
                    "never fires: an external_score event sets or increments the score itself \
                     and never scores through a group"
                        .into(),
                );
                continue;
            }
            if trigger.kind == EventType::UserDeleted {
                warn(
                    tpath,
                    "never fires: a user_deleted event deletes the user's state instead of being \
                     scored"
                        .into(),
                );
                continue;
            }
            let dead = dead_fields(trigger, &tpath);
            if !never_matches(trigger) {
                if let Some(message) = shadowed(rules, g, t, line_of) {
                    warn(tpath.clone(), message);
                }
            }
            for (key, why, fatal) in dead {
                warn(key, consequence(why, fatal, "this trigger never fires"));
            }
        }
    }

    // Every include predicate must hold (SPEC 3.3): two on one attribute that no value passes
    // together leave the audience empty for good.
    let include = &rules.audience.include;
    for (j, later) in include.iter().enumerate() {
        let clash = include[..j].iter().position(|earlier| {
            earlier.key == later.key && contradicts(&earlier.test, &later.test)
        });
        if let Some(i) = clash {
            let other = format!("audience.include[{}]", i + 1);
            let at = line_of(&other).map_or(String::new(), |l| format!(" (line {l})"));
            warn(
                format!("audience.include[{}]", j + 1),
                format!(
                    "contradicts {other}{at}: no value of {:?}, and no missing one, passes both, \
                     so no user is ever in the audience and no event scores (only \
                     external_score events change scores)",
                    later.key
                ),
            );
        }
    }

    if let (Some(min), Some(max)) = (rules.score.min, rules.score.max) {
        if min == max {
            warn(
                "score.max".into(),
                format!(
                    "equals min ({min}): every score is clamped to {min}, so no rule can move a \
                     score away from it"
                ),
            );
        }
    }

    if let (Some(inactivity), None) = (rules.inactivity, rules.score.min) {
        // A factor decays toward 0 and stops there; a delta has no floor but `min`.
        if let Decay::Delta(d) = inactivity.decay {
            warn(
                "inactivity.delta".into(),
                format!(
                    "[score] has no `min`, so an inactive user's score falls by {} every window \
                     without end (and its timer never stops); set score.min, e.g. 0",
                    d.unsigned_abs()
                ),
            );
        }
    }
    out
}

/// The fields of `m` that its event type never carries: `(key path, why, fatal)`. A fatal one
/// makes the matcher never match; the other kind (a property predicate that holds on a missing
/// property) tests nothing but does no harm.
fn dead_fields(m: &Matcher, path: &str) -> Vec<(String, String, bool)> {
    let kind = m.kind;
    let mut out = Vec::new();
    if m.name.is_some() && !carries_name(kind) {
        out.push((
            format!("{path}.name"),
            format!(
                "{kind} events never carry a name (only custom_event and attribute_changed do)"
            ),
            true,
        ));
    }
    if m.app_id.is_some() && !carries_app_id(kind) {
        out.push((
            format!("{path}.app_id"),
            format!("{kind} events never carry an app_id (only session_start does)"),
            true,
        ));
    }
    if !carries_properties(kind) {
        for (k, p) in m.properties.iter().enumerate() {
            let op = p.test.operator();
            let holds = p.test.eval(None);
            out.push((
                format!("{path}.properties[{}]", k + 1),
                format!(
                    "{kind} events carry no properties (only custom_event does) and `{op}` is \
                     {} on a missing property",
                    if holds { "true" } else { "false" }
                ),
                !holds,
            ));
        }
    }
    out
}

/// `why` from [`dead_fields`] completed with what it means for the matcher.
fn consequence(why: String, fatal: bool, never: &str) -> String {
    if fatal {
        format!("{why}, so {never}")
    } else {
        format!("{why}: this predicate tests nothing")
    }
}

/// Whether no event can ever match `m`: a field its type never carries, or a property predicate
/// that is false on the missing properties of a type without them.
fn never_matches(m: &Matcher) -> bool {
    (m.name.is_some() && !carries_name(m.kind))
        || (m.app_id.is_some() && !carries_app_id(m.kind))
        || (!carries_properties(m.kind) && m.properties.iter().any(|p| !p.test.eval(None)))
}

/// Why trigger `t` of group `g` never decides anything, if an earlier trigger matches every event
/// it matches: one of an earlier group (which then always wins, SPEC 3.4) or an earlier one of
/// the same group (which makes it redundant).
fn shadowed(
    rules: &Rules,
    g: usize,
    t: usize,
    line_of: &dyn Fn(&str) -> Option<usize>,
) -> Option<String> {
    let trigger = &rules.groups[g].triggers[t];
    let at = |key: &str| match line_of(key) {
        Some(line) => format!("{key} (line {line})"),
        None => key.to_string(),
    };
    for (eg, earlier) in rules.groups[..g].iter().enumerate() {
        for (et, e) in earlier.triggers.iter().enumerate() {
            if covers(e, trigger) {
                let key = format!("group[{}].triggers[{}]", eg + 1, et + 1);
                return Some(format!(
                    "is shadowed: every event it matches also matches {} of the earlier group \
                     {:?}, which takes the event first, so this trigger never fires",
                    at(&key),
                    earlier.name
                ));
            }
        }
    }
    for (et, e) in rules.groups[g].triggers[..t].iter().enumerate() {
        if covers(e, trigger) {
            let key = format!("group[{}].triggers[{}]", g + 1, et + 1);
            return Some(format!(
                "is redundant: every event it matches already matches {} of the same group",
                at(&key)
            ));
        }
    }
    None
}

/// Whether every event matching `later` also matches `earlier`. Sufficient, not necessary: it
/// compares the two matchers field by field (no name or the same name, no app_id or the same,
/// each of `earlier`'s property predicates implied by one of `later`'s on the same property), so
/// it never claims a cover that does not hold.
fn covers(earlier: &Matcher, later: &Matcher) -> bool {
    if earlier.kind != later.kind || never_matches(earlier) {
        return false;
    }
    let same = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    if !same(&earlier.name, &later.name) || !same(&earlier.app_id, &later.app_id) {
        return false;
    }
    if !carries_properties(earlier.kind) {
        // Every property is missing; `earlier` matches, so its predicates hold on missing.
        return true;
    }
    earlier.properties.iter().all(|ep| {
        later
            .properties
            .iter()
            .any(|lp| lp.key == ep.key && implies(&lp.test, &ep.test))
    })
}

/// Whether no value, and no missing one, passes both `a` and `b`, by [`Test::eval`]'s rules.
/// Only cases that hold for every value are claimed: `exists = false` with a test that fails on
/// a missing value, and number bounds that leave nothing between them (compared as `f64`, as
/// `eval` compares). Value lists are not compared: `equals` is loose across numeric types.
fn contradicts(a: &Test, b: &Test) -> bool {
    let f = |n: &i64| *n as f64;
    let one_way = |a: &Test, b: &Test| match (a, b) {
        (Test::Exists(false), b) => !b.eval(None),
        (Test::Gt(x), Test::Lt(y) | Test::Lte(y)) | (Test::Gte(x), Test::Lt(y)) => f(y) <= f(x),
        (Test::Gte(x), Test::Lte(y)) => f(y) < f(x),
        _ => false,
    };
    one_way(a, b) || one_way(b, a)
}

/// Whether `a` holding on a property value (or on a missing one) means `b` holds on it too, by
/// [`Test::eval`]'s rules. Only cases that hold for every value, numbers included, are claimed.
fn implies(a: &Test, b: &Test) -> bool {
    if a == b {
        return true;
    }
    // `equals v` is `in [v]`: a value equal to one of `a`'s operands is equal to the same
    // operand in `b`'s list (operands are compared exactly, so loose equality carries over).
    let set = |t: &Test| -> Option<Vec<Scalar>> {
        match t {
            Test::Equals(v) => Some(vec![v.clone()]),
            Test::In(vs) => Some(vs.clone()),
            _ => None,
        }
    };
    let subset = |small: &[Scalar], big: &[Scalar]| small.iter().all(|s| big.contains(s));
    // The ordering tests compare as `f64`, as `eval` does, so large integers that round to the
    // same float are not mistaken for a strict bound.
    let f = |n: &i64| *n as f64;
    match (a, b) {
        // Anything that fails on a missing property proves the property exists.
        (a, Test::Exists(true)) => !a.eval(None),
        (Test::NotIn(small_out), Test::NotIn(big_out)) => subset(big_out, small_out),
        (_, Test::Equals(_) | Test::In(_)) => match (set(a), set(b)) {
            (Some(sa), Some(sb)) => subset(&sa, &sb),
            _ => false,
        },
        (Test::Gt(x), Test::Gt(y)) => f(x) >= f(y),
        (Test::Gte(x), Test::Gt(y)) => f(x) > f(y),
        (Test::Gt(x) | Test::Gte(x), Test::Gte(y)) => f(x) >= f(y),
        (Test::Lt(x), Test::Lt(y)) => f(x) <= f(y),
        (Test::Lte(x), Test::Lt(y)) => f(x) < f(y),
        (Test::Lt(x) | Test::Lte(x), Test::Lte(y)) => f(x) <= f(y),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{check_str, Predicate, RuleWarning};
    use std::path::Path;

    /// The warnings for `source`, which must load.
    fn warnings(source: &str) -> Vec<RuleWarning> {
        match check_str(source, "test.toml") {
            Ok(c) => c.warnings,
            Err(e) => panic!("unexpected errors:\n{e}"),
        }
    }

    /// Checks that `source` has exactly one warning, at `line` on `key`, whose message contains
    /// `part`.
    fn expect_one_warning(source: &str, line: usize, key: &str, part: &str) {
        let ws = warnings(source);
        assert_eq!(ws.len(), 1, "{ws:#?}");
        assert_eq!((ws[0].line, ws[0].key.as_str()), (line, key));
        assert!(ws[0].message.contains(part), "{}", ws[0]);
    }

    /// `(line, key)` of each warning.
    fn found(source: &str) -> Vec<(usize, String)> {
        warnings(source)
            .into_iter()
            .map(|w| (w.line, w.key))
            .collect()
    }

    /// One group named `name` with these triggers (inline TOML, one per line).
    fn group(name: &str, triggers: &[&str]) -> String {
        format!(
            "[[group]]\nname = {name:?}\ndelta = 1\ntriggers = [\n{}]\n",
            triggers
                .iter()
                .map(|t| format!("  {t},\n"))
                .collect::<String>()
        )
    }

    fn pairs(list: &[(usize, &str)]) -> Vec<(usize, String)> {
        list.iter().map(|(l, k)| (*l, k.to_string())).collect()
    }

    /// Found by an outside review: an include list no user can pass loaded without a word,
    /// even under `--strict`.
    #[test]
    fn warns_about_include_predicates_that_contradict() {
        for (a, b, part) in [
            ("exists = true", "exists = false", "\"plan\""),
            ("equals = \"pro\"", "exists = false", "no user"),
            ("gt = 5", "lte = 5", "no user"),
            ("gte = 6", "lt = 6", "no user"),
            ("gte = 6", "lte = 5", "no user"),
        ] {
            let source = format!(
                "[audience]\ninclude = [\n  {{ attribute = \"plan\", {a} }},\n  \
                 {{ attribute = \"plan\", {b} }},\n]\n"
            );
            expect_one_warning(&source, 4, "audience.include[2]", part);
            assert!(warnings(&source)[0].message.contains("(line 3)"));
        }
        // Predicates some value passes together, or on different attributes: no warning.
        for (a, b) in [
            ("gte = 5", "lte = 5"),
            ("gt = 5", "lt = 7"),
            ("exists = false", "not_in = [\"x\"]"),
            ("equals = 1", "in = [1, 2]"),
        ] {
            let source = format!(
                "[audience]\ninclude = [\n  {{ attribute = \"plan\", {a} }},\n  \
                 {{ attribute = \"plan\", {b} }},\n]\n"
            );
            assert!(
                found(&source).is_empty(),
                "{a} / {b}: {:?}",
                warnings(&source)
            );
        }
        let other = "[audience]\ninclude = [\n  { attribute = \"a\", exists = true },\n  \
                     { attribute = \"b\", exists = false },\n]\n";
        assert!(found(other).is_empty());
    }

    #[test]
    fn warns_about_an_empty_entry_on() {
        expect_one_warning("[entry]\non = []\n", 2, "entry.on", "no event enrolls");
    }

    #[test]
    fn warns_about_user_deleted_matchers_which_never_match() {
        let src = format!(
            "[entry]\non = [{{ type = \"email_added\" }}, {{ type = \"user_deleted\" }}]\n{}",
            group("g", &["{ type = \"user_deleted\" }"])
        );
        let ws = warnings(&src);
        let says =
            |key: &str, what: &str| ws.iter().any(|w| w.key == key && w.message.contains(what));
        assert!(says("entry.on[2]", "never enrolls"), "{ws:#?}");
        assert!(says("group[1].triggers[1]", "never fires"), "{ws:#?}");
    }

    #[test]
    fn warns_about_matcher_fields_the_event_type_never_carries() {
        let source = r#"[entry]
on = [
  { type = "email_added", name = "work" },
  { type = "external_score", app_id = "crm" },
  { type = "session_start", name = "home" },
]

[[group]]
name = "g"
delta = 1
triggers = [
  { type = "custom_event", name = "x", app_id = "web" },
  { type = "attribute_changed", name = "plan", app_id = "web" },
  { type = "session_start", properties = [{ property = "p", equals = 1 }] },
  { type = "email_added", properties = [{ property = "p", not_in = [1] }] },
  { type = "external_score", name = "model" },
]
"#;
        let ws = warnings(source);
        let got: Vec<(usize, &str)> = ws.iter().map(|w| (w.line, w.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (3, "entry.on[1].name"),
                (4, "entry.on[2].app_id"),
                (5, "entry.on[3].name"),
                (12, "group[1].triggers[1].app_id"),
                (13, "group[1].triggers[2].app_id"),
                (14, "group[1].triggers[3].properties[1]"),
                (15, "group[1].triggers[4].properties[1]"),
                (16, "group[1].triggers[5]"),
            ]
        );
        for (i, part) in [
            (0, "email_added events never carry a name"),
            (3, "custom_event events never carry an app_id"),
            (5, "`equals` is false on a missing property"),
            (6, "`not_in` is true on a missing property"),
            (7, "never scores through a group"),
        ] {
            assert!(ws[i].message.contains(part), "{}", ws[i]);
        }
        for (i, end) in [
            (0, "so this matcher never enrolls anyone"),
            (3, "so this trigger never fires"),
            (6, "this predicate tests nothing"),
        ] {
            assert!(ws[i].message.ends_with(end), "{}", ws[i]);
        }
    }

    #[test]
    fn fields_each_type_carries_give_no_warning() {
        let source = group(
            "g",
            &[
                r#"{ type = "session_start", app_id = "web" }"#,
                r#"{ type = "custom_event", name = "n", properties = [{ property = "p", exists = true }] }"#,
                r#"{ type = "attribute_changed", name = "plan" }"#,
                r#"{ type = "email_added" }"#,
            ],
        );
        assert_eq!(found(&source), []);
    }

    #[test]
    fn warns_about_a_trigger_shadowed_by_an_earlier_group() {
        let source = [
            group(
                "first",
                &[
                    r#"{ type = "session_start" }"#,
                    r#"{ type = "custom_event", name = "demo" }"#,
                    r#"{ type = "custom_event", name = "pricing", properties = [{ property = "plan", in = ["pro", "team"] }] }"#,
                ],
            ),
            group(
                "second",
                &[
                    // Any session_start is taken by group 1's first trigger.
                    r#"{ type = "session_start", app_id = "web" }"#,
                    r#"{ type = "custom_event", name = "demo" }"#,
                    r#"{ type = "custom_event", name = "demo", properties = [{ property = "x", gt = 1 }] }"#,
                    r#"{ type = "custom_event", name = "pricing", properties = [{ property = "plan", equals = "pro" }, { property = "seats", gte = 5 }] }"#,
                ],
            ),
        ]
        .concat();
        let ws = warnings(&source);
        let got: Vec<(usize, &str)> = ws.iter().map(|w| (w.line, w.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (13, "group[2].triggers[1]"),
                (14, "group[2].triggers[2]"),
                (15, "group[2].triggers[3]"),
                (16, "group[2].triggers[4]"),
            ]
        );
        assert!(
            ws[0].message.contains(
                "also matches group[1].triggers[1] (line 5) of the earlier group \"first\""
            ),
            "{}",
            ws[0]
        );
        assert!(
            ws[3].message.contains("group[1].triggers[3] (line 7)"),
            "{}",
            ws[3]
        );
    }

    #[test]
    fn warns_about_a_redundant_trigger_in_the_same_group() {
        let a = r#"{ type = "custom_event", name = "a" }"#;
        expect_one_warning(
            &group("g", &[a, a]),
            6,
            "group[1].triggers[2]",
            "is redundant",
        );
    }

    /// Each pair is an earlier trigger that matches only *some* of the later one's events: the
    /// later trigger still fires, so no warning.
    #[test]
    fn a_narrower_earlier_trigger_shadows_nothing() {
        for (earlier, later) in [
            (
                r#"{ type = "custom_event", name = "a" }"#,
                r#"{ type = "custom_event" }"#,
            ),
            (
                r#"{ type = "custom_event", name = "a" }"#,
                r#"{ type = "custom_event", name = "b" }"#,
            ),
            (
                r#"{ type = "session_start", app_id = "web" }"#,
                r#"{ type = "session_start" }"#,
            ),
            (
                r#"{ type = "session_start", app_id = "web" }"#,
                r#"{ type = "session_start", app_id = "ios" }"#,
            ),
            (
                r#"{ type = "session_start" }"#,
                r#"{ type = "custom_event" }"#,
            ),
            (
                r#"{ type = "custom_event", properties = [{ property = "p", exists = true }] }"#,
                r#"{ type = "custom_event" }"#,
            ),
            (
                r#"{ type = "custom_event", properties = [{ property = "p", exists = false }] }"#,
                r#"{ type = "custom_event" }"#,
            ),
            (
                r#"{ type = "custom_event", properties = [{ property = "p", not_in = ["a"] }] }"#,
                r#"{ type = "custom_event", properties = [{ property = "q", not_in = ["a"] }] }"#,
            ),
            (
                r#"{ type = "custom_event", properties = [{ property = "p", in = ["a"] }] }"#,
                r#"{ type = "custom_event", properties = [{ property = "p", in = ["a", "b"] }] }"#,
            ),
            (
                r#"{ type = "custom_event", properties = [{ property = "p", not_in = ["a", "b"] }] }"#,
                r#"{ type = "custom_event", properties = [{ property = "p", not_in = ["a"] }] }"#,
            ),
            (
                r#"{ type = "custom_event", properties = [{ property = "p", gt = 5 }] }"#,
                r#"{ type = "custom_event", properties = [{ property = "p", gt = 3 }] }"#,
            ),
            (
                r#"{ type = "custom_event", properties = [{ property = "p", gt = 5 }] }"#,
                r#"{ type = "custom_event", properties = [{ property = "p", gte = 5 }] }"#,
            ),
            (
                r#"{ type = "custom_event", properties = [{ property = "p", equals = 1 }] }"#,
                r#"{ type = "custom_event", properties = [{ property = "p", gte = 1 }, { property = "p", lte = 1 }] }"#,
            ),
            // An earlier trigger that never fires cannot take anything from a later one.
            (
                r#"{ type = "session_start", name = "x" }"#,
                r#"{ type = "session_start" }"#,
            ),
        ] {
            let source = [group("first", &[earlier]), group("second", &[later])].concat();
            let ws = warnings(&source);
            assert!(
                ws.iter().all(|w| !w.message.contains("shadowed")),
                "{earlier} then {later}: {ws:#?}"
            );
        }
    }

    /// `implies(a, b)` must mean: on every value (and on a missing one) where `a` holds, `b`
    /// holds. Checked by brute force over operands and values chosen around the edges: equal
    /// and adjacent numbers, integers too large for an f64, floats, strings and booleans.
    #[test]
    fn implies_only_what_holds_for_every_value() {
        let big = 9_007_199_254_740_993; // 2^53 + 1: rounds to 2^53 as an f64.
        let ints = [-1, 0, 1, 2, big - 1, big];
        let scalars = || {
            ints.iter().map(|i| Scalar::Int(*i)).chain([
                Scalar::Str("a".into()),
                Scalar::Str("1".into()),
                Scalar::Bool(true),
            ])
        };
        let mut tests = vec![Test::Exists(true), Test::Exists(false)];
        for i in ints {
            tests.extend([Test::Gt(i), Test::Gte(i), Test::Lt(i), Test::Lte(i)]);
        }
        for s in scalars() {
            tests.push(Test::Equals(s.clone()));
            tests.push(Test::In(vec![s.clone()]));
            tests.push(Test::NotIn(vec![s.clone()]));
            tests.push(Test::In(vec![s.clone(), Scalar::Int(1)]));
            tests.push(Test::NotIn(vec![s, Scalar::Int(1)]));
        }
        let mut values: Vec<Option<Scalar>> = vec![None];
        values.extend(scalars().map(Some));
        for f in [0.5, 1.0, 1.5, 2.0, 9_007_199_254_740_992.0, f64::NAN] {
            values.push(Some(Scalar::Float(f)));
        }
        let mut claimed = 0;
        for a in &tests {
            for b in &tests {
                if !implies(a, b) {
                    continue;
                }
                claimed += 1;
                for v in &values {
                    assert!(
                        !a.eval(v.as_ref()) || b.eval(v.as_ref()),
                        "implies({a:?}, {b:?}) but not on {v:?}"
                    );
                }
            }
        }
        // The check must have had something to check beyond `a == b`.
        assert!(claimed > 2 * tests.len(), "{claimed}");
    }

    #[test]
    fn warns_when_min_equals_max() {
        expect_one_warning(
            "[score]\nmin = 5\nmax = 5\n",
            3,
            "score.max",
            "clamped to 5",
        );
        assert_eq!(found("[score]\nmin = 5\nmax = 6\n"), []);
    }

    #[test]
    fn warns_about_a_blank_group_name() {
        let source = [
            group(" ", &[r#"{ type = "session_start" }"#]),
            group("  ", &[r#"{ type = "custom_event" }"#]),
        ]
        .concat();
        assert_eq!(
            found(&source),
            pairs(&[(2, "group[1].name"), (8, "group[2].name")])
        );
    }

    #[test]
    fn warns_about_delta_decay_without_min() {
        let decay = "[inactivity]\nwindow = \"7d\"\ndelta = -2\n";
        expect_one_warning(decay, 3, "inactivity.delta", "falls by 2 every window");
        assert_eq!(found(&format!("[score]\nmin = -10\n{decay}")), []);
        // A factor stops at 0 by itself.
        assert_eq!(found("[inactivity]\nwindow = \"7d\"\nfactor = 0.5\n"), []);
    }

    #[test]
    fn warning_displays_as_file_line_column_key_warning_message() {
        let ws = warnings("[entry]\non = []\n");
        assert!(
            ws[0]
                .to_string()
                .starts_with("test.toml:2:6: entry.on: warning: is empty"),
            "{}",
            ws[0]
        );
    }

    /// The rules files we ship (examples, the image's copies, the Kubernetes ConfigMap's seed
    /// canvas) must pass `rules check --strict`.
    #[test]
    fn shipped_rules_files_have_no_warnings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut sources = Vec::new();
        for entry in std::fs::read_dir(root.join("examples/rules")).expect("examples/rules") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(&path).expect("readable");
                sources.push((path.display().to_string(), text));
            }
        }
        assert!(sources.len() >= 2, "{sources:?}");
        let configmap =
            std::fs::read_to_string(root.join("deploy/kubernetes/scorer-configmap.yaml"))
                .expect("the scorer ConfigMap");
        let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&configmap)
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .collect();
        let embedded = docs
            .iter()
            .find_map(|d| d["data"]["rules.toml"].as_str())
            .expect("the ConfigMap has a rules.toml");
        sources.push((
            "scorer-configmap.yaml rules.toml".into(),
            embedded.to_string(),
        ));
        for (name, text) in sources {
            match check_str(&text, &name) {
                Ok(c) => assert_eq!(c.warnings, [], "{name}"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn predicates_on_types_without_properties_are_judged_by_their_missing_value() {
        let m = Matcher {
            kind: EventType::SessionStart,
            name: None,
            app_id: None,
            properties: vec![Predicate {
                key: "p".into(),
                test: Test::Exists(false),
            }],
        };
        assert!(!never_matches(&m));
        let plain = Matcher {
            properties: Vec::new(),
            ..m.clone()
        };
        // `exists = false` always holds on a session_start, so it covers the plain matcher.
        assert!(covers(&m, &plain));
    }
}
