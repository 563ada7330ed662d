//! Durations as rules files and settings write them: `"0s"`, `"90m"`, `"7d"`, `"1h30m"`.
//!
//! A duration is one or more `<non-negative integer><unit>` pairs, units `ms`, `s`, `m`, `h` and
//! `d`, summed into milliseconds. There are no fractions and no signs: every window in SPEC
//! section 3 is a whole, non-negative span, and integer milliseconds keep window arithmetic on
//! event times exact. [`format()`] prints the shortest exact form, so a parsed rules file can be
//! shown back to its author in the units they would write.

use crate::timestamp::Millis;

/// The units, largest first: [`format()`] picks the first that divides exactly.
const UNITS: [(&str, Millis); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Why a string is not a duration. Each message quotes the input, since it usually ends up in a
/// rules-file error far from where the string was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(r#"empty duration (write e.g. "0s", "90m" or "7d")"#)]
    Empty,
    #[error(r#"missing unit after "{number}" in "{input}" (use ms, s, m, h or d)"#)]
    MissingUnit { number: String, input: String },
    #[error(r#"unknown unit "{unit}" in "{input}" (use ms, s, m, h or d)"#)]
    UnknownUnit { unit: String, input: String },
    #[error(r#"missing number before "{unit}" in "{input}""#)]
    MissingNumber { unit: String, input: String },
    #[error(
        r#"unexpected {found:?} in "{input}" (a duration is one or more <number><unit> pairs, like "1h30m")"#
    )]
    Unexpected { found: char, input: String },
    #[error(r#"duration "{input}" is too large"#)]
    Overflow { input: String },
}

/// Parses a duration into milliseconds.
pub fn parse(s: &str) -> Result<Millis, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let overflow = || DurationError::Overflow {
        input: s.to_string(),
    };
    let mut total: Millis = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_len);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if digits.is_empty() {
            return Err(if unit.is_empty() {
                unexpected(rest, s)
            } else {
                DurationError::MissingNumber {
                    unit: unit.to_string(),
                    input: s.to_string(),
                }
            });
        }
        if unit.is_empty() {
            return Err(if after.is_empty() {
                DurationError::MissingUnit {
                    number: digits.to_string(),
                    input: s.to_string(),
                }
            } else {
                unexpected(after, s)
            });
        }
        let Some(&(_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_string(),
                input: s.to_string(),
            });
        };
        let n: Millis = digits.parse().map_err(|_| overflow())?;
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(overflow)?;
        rest = after;
    }
    Ok(total)
}

/// The error for the first character of `at`, which is neither a digit nor a letter.
fn unexpected(at: &str, input: &str) -> DurationError {
    DurationError::Unexpected {
        found: at.chars().next().unwrap_or(' '),
        input: input.to_string(),
    }
}

/// The shortest exact form of `ms`: the largest unit that divides it (`86400000` is `"1d"`,
/// `5400000` is `"90m"`, `1500` is `"1500ms"`, `0` is `"0s"`). A negative value, which
/// [`parse`] never returns but arithmetic can produce, is printed with a leading `-`.
pub fn format(ms: Millis) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    for (name, unit_ms) in UNITS {
        let unit_ms = unit_ms.unsigned_abs();
        if abs % unit_ms == 0 {
            return format!("{sign}{}{name}", abs / unit_ms);
        }
    }
    // Unreachable: the last unit is 1 ms, which divides everything.
    format!("{sign}{abs}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms"), Ok(250));
        assert_eq!(parse("0s"), Ok(0));
        assert_eq!(parse("45s"), Ok(45_000));
        assert_eq!(parse("90m"), Ok(5_400_000));
        assert_eq!(parse("24h"), Ok(86_400_000));
        assert_eq!(parse("7d"), Ok(604_800_000));
    }

    #[test]
    fn sums_several_pairs() {
        assert_eq!(parse("1h30m"), Ok(5_400_000));
        assert_eq!(parse("1d2h3m4s5ms"), Ok(93_784_005));
    }

    #[test]
    fn rejects_the_empty_string() {
        assert_eq!(parse(""), Err(DurationError::Empty));
    }

    #[test]
    fn rejects_a_number_without_unit() {
        let e = parse("1h30").unwrap_err();
        assert!(matches!(e, DurationError::MissingUnit { ref number, .. } if number == "30"));
        assert_eq!(
            e.to_string(),
            r#"missing unit after "30" in "1h30" (use ms, s, m, h or d)"#
        );
    }

    #[test]
    fn rejects_an_unknown_unit_naming_it() {
        let e = parse("2w").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown unit "w" in "2w" (use ms, s, m, h or d)"#
        );
        assert!(
            matches!(parse("5mins"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "mins")
        );
    }

    #[test]
    fn rejects_a_unit_without_number() {
        assert!(
            matches!(parse("h"), Err(DurationError::MissingNumber { unit, .. }) if unit == "h")
        );
        assert!(
            matches!(parse("ms"), Err(DurationError::MissingNumber { unit, .. }) if unit == "ms")
        );
        // Letters are read greedily, so a stray letter after a pair joins its unit.
        assert!(
            matches!(parse("1hm"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "hm")
        );
    }

    #[test]
    fn rejects_signs_fractions_and_spaces() {
        for s in ["-5m", "1.5h", "1h 30m", " 1h", "1h "] {
            assert!(
                matches!(parse(s), Err(DurationError::Unexpected { .. })),
                "{s}: {:?}",
                parse(s)
            );
        }
        assert_eq!(
            parse("1.5h").unwrap_err().to_string(),
            r#"unexpected '.' in "1.5h" (a duration is one or more <number><unit> pairs, like "1h30m")"#
        );
    }

    #[test]
    fn rejects_overflow_instead_of_wrapping() {
        let too_many_days = format!("{}d", i64::MAX / 86_400_000 + 1);
        assert!(matches!(
            parse(&too_many_days),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse("99999999999999999999ms"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse(&format!("{}ms1ms", i64::MAX)),
            Err(DurationError::Overflow { .. })
        ));
        assert_eq!(parse(&format!("{}ms", i64::MAX)), Ok(i64::MAX));
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format(86_400_000), "1d");
        assert_eq!(format(5_400_000), "90m");
        assert_eq!(format(0), "0s");
        assert_eq!(format(1_500), "1500ms");
        assert_eq!(format(7_200_000), "2h");
        assert_eq!(format(-60_000), "-1m");
        assert_eq!(format(i64::MIN), "-9223372036854775808ms");
    }

    #[test]
    fn format_then_parse_round_trips() {
        for ms in [0, 1, 999, 1_000, 61_000, 5_400_000, 90_000_000, i64::MAX] {
            assert_eq!(parse(&format(ms)), Ok(ms), "{ms}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_non_negative_duration_round_trips(ms in 0i64..=i64::MAX) {
            proptest::prop_assert_eq!(parse(&format(ms)), Ok(ms));
        }
    }
}
