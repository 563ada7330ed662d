//! The scoring rules (SPEC section 3): the model, loaded from TOML by [`parse_str`], and the pure
//! predicate and matcher tests the engine runs on every event.

mod lint;
mod parse;

pub use parse::{
    check_bytes, check_str, line_column, parse_bytes, parse_str, Checked, RuleError, RuleWarning,
    RulesErrors, MAX_RULES_BYTES,
};

use crate::event::{Event, EventType, Scalar, ScalarRef};
use crate::state::bytes_eq;
use crate::timestamp::Millis;

/// A whole rules file, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// How long an applied `event_id` makes a later event with the same id a duplicate.
    pub dedupe_window: Millis,
    pub score: ScoreSettings,
    pub entry: Entry,
    pub audience: Audience,
    /// In file order: an event scores through the first group with a matching trigger.
    pub groups: Vec<Group>,
    pub inactivity: Option<Inactivity>,
    pub output: Output,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScoreSettings {
    pub name: String,
    pub min: Option<i64>,
    pub max: Option<i64>,
}

impl ScoreSettings {
    /// Clamps `score` to `[min, max]`.
    #[inline]
    pub fn clamp(&self, score: i64) -> i64 {
        let mut s = score;
        if let Some(max) = self.max {
            s = s.min(max);
        }
        if let Some(min) = self.min {
            s = s.max(min);
        }
        s
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The first event matching any of these enrolls the user.
    pub on: Vec<Matcher>,
    pub reentry_window: Millis,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Audience {
    pub include: Vec<Predicate>,
    pub exclude: Vec<Predicate>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    /// Non-zero; negative decrements.
    pub delta: i64,
    pub triggers: Vec<Matcher>,
    pub cap: Option<Cap>,
}

/// At most `points` of change (in absolute value) per epoch-aligned window of `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub points: u64,
    pub per: Millis,
}

/// The "Everyone Else" path: what happens to a score left alone for `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Inactivity {
    pub window: Millis,
    pub decay: Decay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    /// Add this (negative) number.
    Delta(i64),
    /// Multiply by a decimal in (0, 1), kept exact as `numerator / 10^scale`, truncating toward
    /// zero: `0.57 × 100` is `57`, not the `56` a binary float would give.
    Factor { numerator: i64, scale: u32 },
}

impl Decay {
    /// The score after one decay step, before clamping.
    pub fn apply(self, score: i64) -> i64 {
        match self {
            Decay::Delta(d) => score.saturating_add(d),
            Decay::Factor { numerator, scale } => {
                let v = score as i128 * numerator as i128 / 10i128.pow(scale);
                v as i64
            }
        }
    }
}

/// Which attributes every score change carries a snapshot of, and whose change alone is
/// published (`kind = attribute`). Not in SPEC's seed example: the `[output]` table is optional.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Always holds [`LEAD_STATUS`] (SPEC 4: a change's snapshot has at least `lead_status`),
    /// whether the rules file lists it or not.
    pub tracked_attributes: Vec<String>,
}

/// The key a group's cap usage and explain notes are kept under in users' states: a 32-bit
/// hash of its name, stable across reorderings of the rules file. No two groups of one rules
/// file have the same key (the loader refuses such a file).
pub fn group_key(name: &str) -> u32 {
    crate::state::stable_hash(name.as_bytes()) as u32
}

/// The attribute holding a lead's funnel status, which every change's snapshot carries.
pub const LEAD_STATUS: &str = "lead_status";

impl Default for Output {
    fn default() -> Self {
        Output {
            tracked_attributes: vec![LEAD_STATUS.to_string()],
        }
    }
}

/// An event matcher: `type`, optional `name`, `app_id` and property predicates.
#[derive(Clone, Debug, PartialEq)]
pub struct Matcher {
    pub kind: EventType,
    pub name: Option<String>,
    pub app_id: Option<String>,
    pub properties: Vec<Predicate>,
}

impl Matcher {
    #[inline]
    pub fn matches(&self, event: &Event) -> bool {
        self.kind == event.kind
            && opt_eq(self.name.as_deref(), event.name.as_deref())
            && opt_eq(self.app_id.as_deref(), event.app_id.as_deref())
            && self
                .properties
                .iter()
                .all(|p| p.test.eval(event.property(&p.key)))
    }
}

/// A matcher's optional `name` or `app_id` against the event's: no requirement, or equal.
#[inline]
fn opt_eq(want: Option<&str>, have: Option<&str>) -> bool {
    match (want, have) {
        (None, _) => true,
        (Some(w), Some(h)) => bytes_eq(w.as_bytes(), h.as_bytes()),
        (Some(_), None) => false,
    }
}

/// A test of one attribute (audience) or property (matcher).
#[derive(Clone, Debug, PartialEq)]
pub struct Predicate {
    /// The attribute or property name.
    pub key: String,
    pub test: Test,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Equals(Scalar),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Exists(bool),
    Gt(i64),
    Gte(i64),
    Lt(i64),
    Lte(i64),
}

impl Test {
    /// The operator's name in the rules file.
    pub fn operator(&self) -> &'static str {
        match self {
            Test::Equals(_) => "equals",
            Test::In(_) => "in",
            Test::NotIn(_) => "not_in",
            Test::Exists(_) => "exists",
            Test::Gt(_) => "gt",
            Test::Gte(_) => "gte",
            Test::Lt(_) => "lt",
            Test::Lte(_) => "lte",
        }
    }

    /// Evaluates the test on a value that may be missing. A missing value fails every test but
    /// `not_in` and `exists = false`; the ordering tests fail on a non-number.
    #[inline]
    pub fn eval(&self, value: Option<&Scalar>) -> bool {
        self.eval_ref(value.map(Scalar::as_ref))
    }

    /// [`Test::eval`] on a borrowed value, as a user's attributes hand theirs out.
    #[inline]
    pub fn eval_ref(&self, value: Option<ScalarRef<'_>>) -> bool {
        let Some(v) = value else {
            return matches!(self, Test::NotIn(_) | Test::Exists(false));
        };
        match self {
            Test::Equals(x) => v.loose_eq(x),
            Test::In(xs) => xs.iter().any(|x| v.loose_eq(x)),
            Test::NotIn(xs) => !xs.iter().any(|x| v.loose_eq(x)),
            Test::Exists(e) => *e,
            Test::Gt(n) => v.as_f64().is_some_and(|x| x > *n as f64),
            Test::Gte(n) => v.as_f64().is_some_and(|x| x >= *n as f64),
            Test::Lt(n) => v.as_f64().is_some_and(|x| x < *n as f64),
            Test::Lte(n) => v.as_f64().is_some_and(|x| x <= *n as f64),
        }
    }
}

impl Rules {
    /// The seed canvas of SPEC section 3, shipped as `examples/rules/seed-canvas.toml`.
    pub const SEED_CANVAS: &'static str =
        include_str!("../../../../examples/rules/seed-canvas.toml");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/semantics.md: `equals`, `in` and `not_in` compare an integer and a float by value,
    /// exactly, also past 2^53 where a float holds only every other integer (so converting the
    /// integer to a float would make 2^53 + 1 equal 2^53).
    #[test]
    fn an_integer_and_a_float_are_equal_only_when_exactly_the_same_number() {
        const P53: i64 = 1 << 53;
        let cases: [(i64, f64, bool); 10] = [
            (1, 1.0, true),
            (1, 1.5, false),
            (P53, P53 as f64, true),
            (P53 + 1, P53 as f64, false),
            (-(P53 + 1), -(P53 as f64), false),
            (i64::MAX, 9_223_372_036_854_775_807.0, false), // the float is 2^63
            (i64::MIN, -9_223_372_036_854_775_808.0, true),
            (i64::MIN + 1, -9_223_372_036_854_775_808.0, false),
            (0, f64::NAN, false),
            (0, -0.0, true),
        ];
        for (i, f, equal) in cases {
            let int = Scalar::Int(i);
            let float = Scalar::Float(f);
            for (test_value, event_value) in [(&int, &float), (&float, &int)] {
                let v = Some(event_value.as_ref());
                let ctx = format!("{test_value:?} against {event_value:?}");
                assert_eq!(Test::Equals(test_value.clone()).eval_ref(v), equal, "{ctx}");
                assert_eq!(
                    Test::In(vec![test_value.clone()]).eval_ref(v),
                    equal,
                    "{ctx}"
                );
                assert_eq!(
                    Test::NotIn(vec![test_value.clone()]).eval_ref(v),
                    !equal,
                    "{ctx}"
                );
            }
        }
    }

    #[test]
    fn missing_value_fails_every_test_but_not_in_and_exists_false() {
        let all = [
            Test::Equals(Scalar::Bool(true)),
            Test::In(vec![Scalar::Str("a".into())]),
            Test::NotIn(vec![Scalar::Str("a".into())]),
            Test::Exists(true),
            Test::Exists(false),
            Test::Gt(0),
            Test::Gte(0),
            Test::Lt(0),
            Test::Lte(0),
        ];
        let passing: Vec<&str> = all
            .iter()
            .filter(|t| t.eval(None))
            .map(|t| t.operator())
            .collect();
        assert_eq!(passing, ["not_in", "exists"]);
        assert!(Test::Exists(false).eval(None));
    }

    #[test]
    fn ordering_tests_are_false_on_non_numbers() {
        let s = Scalar::Str("5".into());
        for t in [Test::Gt(1), Test::Gte(1), Test::Lt(9), Test::Lte(9)] {
            assert!(!t.eval(Some(&s)), "{} on a string", t.operator());
        }
        assert!(Test::Gt(1).eval(Some(&Scalar::Float(1.5))));
        assert!(!Test::Gt(1).eval(Some(&Scalar::Int(1))));
        assert!(Test::Gte(1).eval(Some(&Scalar::Int(1))));
        assert!(Test::Lt(1).eval(Some(&Scalar::Float(0.5))));
        assert!(Test::Lte(1).eval(Some(&Scalar::Int(1))));
    }

    #[test]
    fn numbers_compare_by_value_other_kinds_strictly() {
        assert!(Test::Equals(Scalar::Int(1)).eval(Some(&Scalar::Float(1.0))));
        assert!(!Test::Equals(Scalar::Bool(true)).eval(Some(&Scalar::Str("true".into()))));
        assert!(Test::NotIn(vec![Scalar::Str("customer".into())])
            .eval(Some(&Scalar::Str("lead".into()))));
        assert!(!Test::NotIn(vec![Scalar::Str("customer".into())])
            .eval(Some(&Scalar::Str("customer".into()))));
    }

    #[test]
    fn factor_decay_is_exact_decimal_truncated_toward_zero() {
        let f = Decay::Factor {
            numerator: 57,
            scale: 2,
        };
        assert_eq!(f.apply(100), 57);
        assert_eq!(f.apply(3), 1);
        assert_eq!(f.apply(-3), -1);
        assert_eq!(Decay::Delta(-1).apply(5), 4);
    }

    #[test]
    fn clamp_applies_min_and_max() {
        let s = ScoreSettings {
            name: "x".into(),
            min: Some(0),
            max: Some(10),
        };
        assert_eq!(s.clamp(-5), 0);
        assert_eq!(s.clamp(50), 10);
        assert_eq!(s.clamp(7), 7);
    }
}
