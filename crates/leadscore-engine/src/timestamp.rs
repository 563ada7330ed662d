//! Event time: milliseconds since the Unix epoch (UTC), parsed from and printed as RFC 3339.
//!
//! A hand-written parser keeps decoding fast (it sits on the hot path of every input event) and
//! strict: a timestamp must carry a date, a time and an offset (`Z` or `±hh:mm`).
//!
//! # Accepted syntax
//!
//! `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM)`, as in RFC 3339 section 5.6 (the
//! lowercase letters and the space separator are the section's own allowance). The fraction may
//! have any number of digits; it is truncated (not rounded) to milliseconds, so ordering is kept
//! and a timestamp never moves into the next second.
//!
//! A leap second (`:60`) is accepted and mapped to the last millisecond of its minute
//! (`23:59:60.5Z` reads as `23:59:59.999Z`): event time stays monotonic across it without
//! inventing a time that belongs to the next minute. Epoch milliseconds, like Unix time, have no
//! slot for a leap second of their own. Only the minute 23:59 in UTC may have one (RFC 3339
//! section 5.7: leap seconds end a UTC day); `18:00:60Z` is refused.
//!
//! Years run from 0000 to 9999 (four digits, as RFC 3339 requires); a local time whose offset
//! would move the UTC instant outside that range is rejected, so every parsed value prints back
//! with [`format_rfc3339`] and parses again to the same value.

use thiserror::Error;

/// Milliseconds since 1970-01-01T00:00:00Z. Negative values are before the epoch.
pub type Millis = i64;

/// The earliest instant that RFC 3339 can name: `0000-01-01T00:00:00Z`.
pub const MIN_MILLIS: Millis = -62_167_219_200_000;

/// The latest instant that RFC 3339 can name at millisecond precision: `9999-12-31T23:59:59.999Z`.
pub const MAX_MILLIS: Millis = 253_402_300_799_999;

pub(crate) const MS_PER_DAY: i64 = 86_400_000;

/// Why a string is not an RFC 3339 timestamp. Each message names the offending part, so it can be
/// shown to whoever produced the event.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TimestampError {
    /// A character other than the one the syntax needs at this position.
    #[error("expected {expected} at byte {pos}")]
    Expected { expected: &'static str, pos: usize },
    /// The input stops before the timestamp is complete.
    #[error("ends at byte {pos}, expected {expected}")]
    UnexpectedEnd { expected: &'static str, pos: usize },
    #[error("month {0} out of range")]
    Month(u8),
    #[error("day {day} out of range for {year:04}-{month:02}")]
    Day { year: u16, month: u8, day: u8 },
    #[error("hour {0} out of range")]
    Hour(u8),
    #[error("minute {0} out of range")]
    Minute(u8),
    #[error("second {0} out of range")]
    Second(u8),
    #[error(
        "second 60 (a leap second) at {hour:02}:{minute:02}, which is not 23:59 in UTC: leap \
         seconds are inserted only at the end of a UTC day"
    )]
    LeapSecond { hour: u8, minute: u8 },
    #[error("offset hour {0} out of range")]
    OffsetHour(u8),
    #[error("offset minute {0} out of range")]
    OffsetMinute(u8),
    /// Something follows the offset.
    #[error("unexpected trailing characters at byte {0}")]
    Trailing(usize),
    /// The offset moves the instant before year 0000 or after year 9999 in UTC.
    #[error("instant is outside years 0000-9999 in UTC")]
    OutOfRange,
}

/// Parses an RFC 3339 timestamp (see the module doc for the exact syntax) into epoch
/// milliseconds, UTC.
pub fn parse_rfc3339(s: &str) -> Result<Millis, TimestampError> {
    let b = s.as_bytes();

    let year = digits4(b, 0)?;
    expect(b, 4, b'-', "'-'")?;
    let month = digits2(b, 5)?;
    expect(b, 7, b'-', "'-'")?;
    let day = digits2(b, 8)?;
    match b.get(10) {
        Some(b'T' | b't' | b' ') => {}
        Some(_) => return Err(expected("'T'", 10)),
        None => return Err(end("'T'", 10)),
    }
    let hour = digits2(b, 11)?;
    expect(b, 13, b':', "':'")?;
    let minute = digits2(b, 14)?;
    expect(b, 16, b':', "':'")?;
    let second = digits2(b, 17)?;

    if !(1..=12).contains(&month) {
        return Err(TimestampError::Month(month));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError::Day { year, month, day });
    }
    if hour > 23 {
        return Err(TimestampError::Hour(hour));
    }
    if minute > 59 {
        return Err(TimestampError::Minute(minute));
    }
    if second > 60 {
        return Err(TimestampError::Second(second));
    }

    // Fraction: any number of digits, the first three give the milliseconds.
    let mut pos = 19;
    let mut millis: i64 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while let Some(&c) = b.get(pos) {
            let d = c.wrapping_sub(b'0');
            if d >= 10 {
                break;
            }
            if pos - start < 3 {
                millis = millis * 10 + i64::from(d);
            }
            pos += 1;
        }
        match pos - start {
            0 if pos < b.len() => return Err(expected("a digit", pos)),
            0 => return Err(end("a digit", pos)),
            1 => millis *= 100,
            2 => millis *= 10,
            _ => {}
        }
    }

    // Offset: `Z`, or the local time's distance from UTC.
    let offset_ms: i64 = match b.get(pos) {
        Some(b'Z' | b'z') => {
            pos += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits2(b, pos + 1)?;
            expect(b, pos + 3, b':', "':'")?;
            let om = digits2(b, pos + 4)?;
            if oh > 23 {
                return Err(TimestampError::OffsetHour(oh));
            }
            if om > 59 {
                return Err(TimestampError::OffsetMinute(om));
            }
            pos += 6;
            let ms = (i64::from(oh) * 60 + i64::from(om)) * 60_000;
            if sign == b'+' {
                ms
            } else {
                -ms
            }
        }
        Some(_) => return Err(expected("'Z' or an offset like +02:00", pos)),
        None => return Err(end("'Z' or an offset like +02:00", pos)),
    };
    if pos != b.len() {
        return Err(TimestampError::Trailing(pos));
    }

    let (second, millis) = if second == 60 {
        // RFC 3339 section 5.7: a leap second ends a UTC day, so its minute is 23:59 in UTC
        // (05:29 at +05:30); anywhere else `:60` is a mistake, not a time.
        let local_minute = i64::from(hour) * 60 + i64::from(minute);
        if (local_minute - offset_ms / 60_000).rem_euclid(1440) != 23 * 60 + 59 {
            return Err(TimestampError::LeapSecond { hour, minute });
        }
        (59, 999)
    } else {
        (second, millis)
    };
    let days = days_from_civil(i64::from(year), u32::from(month), u32::from(day));
    let local = days * MS_PER_DAY
        + i64::from(hour) * 3_600_000
        + i64::from(minute) * 60_000
        + i64::from(second) * 1000
        + millis;
    let utc = local - offset_ms;
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&utc) {
        return Err(TimestampError::OutOfRange);
    }
    Ok(utc)
}

/// Prints epoch milliseconds as RFC 3339 in UTC: `2026-01-05T10:00:00Z`, or with exactly three
/// fraction digits when the millisecond part is not zero (`2026-01-05T10:00:00.123Z`).
///
/// Values outside [`MIN_MILLIS`]..=[`MAX_MILLIS`] still print (with a year of more than four
/// digits or a minus sign) but cannot be parsed back.
pub fn format_rfc3339(ms: Millis) -> String {
    Rfc3339(ms).to_string()
}

/// [`format_rfc3339`] as a `Display`: written straight into an encoder's output, with no
/// `String` of its own (the scorer writes one per published change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339(pub Millis);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0;
        let days = ms.div_euclid(MS_PER_DAY);
        let in_day = ms.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let hour = in_day / 3_600_000;
        let minute = in_day / 60_000 % 60;
        let second = in_day / 1000 % 60;
        let millis = in_day % 1000;

        if !(0..=9999).contains(&year) {
            write!(
                f,
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
            )?;
            if millis != 0 {
                write!(f, ".{millis:03}")?;
            }
            return f.write_str("Z");
        }

        // The common case, without the formatting machinery.
        let mut buf = [0u8; 24];
        put(&mut buf[0..4], year);
        buf[4] = b'-';
        put(&mut buf[5..7], i64::from(month));
        buf[7] = b'-';
        put(&mut buf[8..10], i64::from(day));
        buf[10] = b'T';
        put(&mut buf[11..13], hour);
        buf[13] = b':';
        put(&mut buf[14..16], minute);
        buf[16] = b':';
        put(&mut buf[17..19], second);
        let len = if millis == 0 {
            buf[19] = b'Z';
            20
        } else {
            buf[19] = b'.';
            put(&mut buf[20..23], millis);
            buf[23] = b'Z';
            24
        };
        // Only ASCII digits and punctuation were written, so this is always valid UTF-8.
        f.write_str(std::str::from_utf8(&buf[..len]).unwrap_or_default())
    }
}

/// Writes `n` (non-negative, fitting the slice) as zero-padded decimal digits.
fn put(out: &mut [u8], mut n: i64) {
    for slot in out.iter_mut().rev() {
        // `n % 10` is in 0..10 for the non-negative values this is called with.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn expected(what: &'static str, pos: usize) -> TimestampError {
    TimestampError::Expected {
        expected: what,
        pos,
    }
}

fn end(what: &'static str, pos: usize) -> TimestampError {
    TimestampError::UnexpectedEnd {
        expected: what,
        pos,
    }
}

fn expect(b: &[u8], pos: usize, c: u8, what: &'static str) -> Result<(), TimestampError> {
    match b.get(pos) {
        Some(&x) if x == c => Ok(()),
        Some(_) => Err(expected(what, pos)),
        None => Err(end(what, pos)),
    }
}

fn digit(b: &[u8], pos: usize) -> Result<u8, TimestampError> {
    match b.get(pos) {
        Some(&c) if c.is_ascii_digit() => Ok(c - b'0'),
        Some(_) => Err(expected("a digit", pos)),
        None => Err(end("a digit", pos)),
    }
}

fn digits2(b: &[u8], pos: usize) -> Result<u8, TimestampError> {
    Ok(digit(b, pos)? * 10 + digit(b, pos + 1)?)
}

fn digits4(b: &[u8], pos: usize) -> Result<u16, TimestampError> {
    Ok(u16::from(digits2(b, pos)?) * 100 + u16::from(digits2(b, pos + 2)?))
}

fn is_leap(year: u16) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let mp = i64::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
                                  // Both are small and non-negative by construction.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The wall clock as epoch milliseconds. The services use it (latency metrics, a caught-up
/// partition's clock, outcome times); the engine never does: its time comes in as a value.
pub fn wall_clock_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Millis {
        match parse_rfc3339(s) {
            Ok(ms) => ms,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse_rfc3339(s) {
            Ok(ms) => panic!("{s:?} parsed as {ms}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_the_epoch_and_a_recent_instant() {
        assert_eq!(p("1970-01-01T00:00:00Z"), 0);
        assert_eq!(p("2026-01-05T10:00:00Z"), 1_767_607_200_000);
        assert_eq!(p("1969-12-31T23:59:59.999Z"), -1);
    }

    #[test]
    fn truncates_fractions_of_any_length_to_milliseconds() {
        assert_eq!(p("1970-01-01T00:00:00.1Z"), 100);
        assert_eq!(p("1970-01-01T00:00:00.12Z"), 120);
        assert_eq!(p("1970-01-01T00:00:00.123Z"), 123);
        assert_eq!(p("1970-01-01T00:00:00.123999999Z"), 123);
        assert_eq!(p("1970-01-01T00:00:00.000000001Z"), 0);
        assert_eq!(p("1969-12-31T23:59:59.9999Z"), -1);
    }

    #[test]
    fn applies_offsets_towards_utc() {
        let utc = p("2026-01-05T10:00:00Z");
        assert_eq!(p("2026-01-05T12:00:00+02:00"), utc);
        assert_eq!(p("2026-01-05T04:30:00-05:30"), utc);
        assert_eq!(p("2026-01-05T10:00:00+00:00"), utc);
        assert_eq!(p("2026-01-05T10:00:00-00:00"), utc);
        assert_eq!(p("2026-01-06T09:59:00+23:59"), utc);
    }

    #[test]
    fn accepts_lowercase_letters_and_a_space_separator() {
        let utc = p("2026-01-05T10:00:00Z");
        assert_eq!(p("2026-01-05t10:00:00z"), utc);
        assert_eq!(p("2026-01-05 10:00:00Z"), utc);
    }

    #[test]
    fn knows_leap_days() {
        assert_eq!(
            p("2024-02-29T00:00:00Z"),
            p("2024-03-01T00:00:00Z") - MS_PER_DAY
        );
        assert_eq!(p("2000-02-29T00:00:00Z"), 951_782_400_000);
        for (input, message) in [
            ("2026-02-29T00:00:00Z", "day 29 out of range for 2026-02"),
            ("1900-02-29T00:00:00Z", "day 29 out of range for 1900-02"),
            ("2024-02-30T00:00:00Z", "day 30 out of range for 2024-02"),
            ("2026-04-31T00:00:00Z", "day 31 out of range for 2026-04"),
        ] {
            assert_eq!(err(input), message, "{input}");
        }
    }

    #[test]
    fn maps_a_leap_second_to_the_last_millisecond_of_its_minute() {
        assert_eq!(p("2016-12-31T23:59:60Z"), p("2016-12-31T23:59:59.999Z"));
        assert_eq!(p("2016-12-31T23:59:60.5Z"), p("2016-12-31T23:59:59.999Z"));
        assert!(p("2016-12-31T23:59:60Z") < p("2017-01-01T00:00:00Z"));
        // The same leap second in local time.
        assert_eq!(
            p("2017-01-01T05:29:60+05:30"),
            p("2016-12-31T23:59:59.999Z")
        );
        assert_eq!(
            p("2016-12-31T18:59:60-05:00"),
            p("2016-12-31T23:59:59.999Z")
        );
    }

    /// Found by an outside check (2026-12-07): `18:00:60Z` was read as `18:00:59.999Z`.
    #[test]
    fn a_leap_second_anywhere_but_the_end_of_a_utc_day_is_refused() {
        for input in [
            "2026-01-05T18:00:60Z",
            "2016-12-31T23:58:60Z",
            "2016-12-31T23:59:60+01:00",
            "2017-01-01T00:00:60Z",
        ] {
            let e = err(input);
            assert!(
                e.starts_with("second 60 (a leap second) at "),
                "{input}: {e}"
            );
        }
        assert!(err("2026-01-05T18:00:60Z").contains("at 18:00,"));
    }

    #[test]
    fn rejects_out_of_range_fields_naming_them() {
        for (input, message) in [
            ("2026-13-01T00:00:00Z", "month 13 out of range"),
            ("2026-00-01T00:00:00Z", "month 0 out of range"),
            ("2026-01-00T00:00:00Z", "day 0 out of range for 2026-01"),
            ("2026-01-32T00:00:00Z", "day 32 out of range for 2026-01"),
            ("2026-01-01T24:00:00Z", "hour 24 out of range"),
            ("2026-01-01T00:60:00Z", "minute 60 out of range"),
            ("2026-01-01T00:00:61Z", "second 61 out of range"),
            ("2026-01-01T00:00:00+24:00", "offset hour 24 out of range"),
            ("2026-01-01T00:00:00+01:60", "offset minute 60 out of range"),
            (
                "0000-01-01T00:00:00+00:01",
                "instant is outside years 0000-9999 in UTC",
            ),
            (
                "9999-12-31T23:59:00-00:01",
                "instant is outside years 0000-9999 in UTC",
            ),
        ] {
            assert_eq!(err(input), message, "{input}");
        }
    }

    #[test]
    fn rejects_malformed_syntax_naming_the_position() {
        for (input, message) in [
            ("", "ends at byte 0, expected a digit"),
            ("2026-01-05", "ends at byte 10, expected 'T'"),
            ("2026-01-05X10:00:00Z", "expected 'T' at byte 10"),
            ("2026/01/05T10:00:00Z", "expected '-' at byte 4"),
            ("26-01-05T10:00:00Z", "expected a digit at byte 2"),
            ("2026-1-05T10:00:00Z", "expected a digit at byte 6"),
            ("2026-01-05T10:00Z", "expected ':' at byte 16"),
            (
                "2026-01-05T10:00:00",
                "ends at byte 19, expected 'Z' or an offset like +02:00",
            ),
            (
                "2026-01-05T10:00:00 UTC",
                "expected 'Z' or an offset like +02:00 at byte 19",
            ),
            ("2026-01-05T10:00:00.Z", "expected a digit at byte 20"),
            ("2026-01-05T10:00:00.", "ends at byte 20, expected a digit"),
            ("2026-01-05T10:00:00+0200", "expected ':' at byte 22"),
            ("2026-01-05T10:00:00+02", "ends at byte 22, expected ':'"),
            (
                "2026-01-05T10:00:00ZZ",
                "unexpected trailing characters at byte 20",
            ),
            (
                "2026-01-05T10:00:00Z ",
                "unexpected trailing characters at byte 20",
            ),
            ("+2026-01-05T10:00:00Z", "expected a digit at byte 0"),
            ("２026-01-05T10:00:00Z", "expected a digit at byte 0"),
        ] {
            assert_eq!(err(input), message, "{input}");
        }
    }

    #[test]
    fn formats_whole_seconds_without_a_fraction() {
        assert_eq!(format_rfc3339(1_767_607_200_000), "2026-01-05T10:00:00Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn formats_milliseconds_with_three_digits() {
        assert_eq!(
            format_rfc3339(1_767_607_200_123),
            "2026-01-05T10:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339(1_767_607_200_007),
            "2026-01-05T10:00:00.007Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn formats_the_range_ends() {
        assert_eq!(format_rfc3339(MIN_MILLIS), "0000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(MAX_MILLIS), "9999-12-31T23:59:59.999Z");
        assert_eq!(p("0000-01-01T00:00:00Z"), MIN_MILLIS);
        assert_eq!(p("9999-12-31T23:59:59.999Z"), MAX_MILLIS);
    }

    #[test]
    fn formats_values_outside_the_range_without_panicking() {
        assert_eq!(format_rfc3339(MAX_MILLIS + 1), "10000-01-01T00:00:00Z");
        assert!(format_rfc3339(MIN_MILLIS - 1).starts_with('-'));
        let _ = format_rfc3339(i64::MIN);
        let _ = format_rfc3339(i64::MAX);
    }

    #[test]
    fn day_counts_agree_with_civil_dates_over_four_centuries() {
        let start = days_from_civil(1800, 1, 1);
        for days in start..start + 146_097 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in MIN_MILLIS..=MAX_MILLIS) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms));
        }

        #[test]
        fn offsets_name_the_same_instant(
            ms in MIN_MILLIS + MS_PER_DAY..MAX_MILLIS - MS_PER_DAY,
            offset_min in -(23 * 60 + 59)..=(23 * 60 + 59i64),
        ) {
            // Print the local time at `offset_min` from UTC, with its offset, and parse it back.
            let local = format_rfc3339(ms + offset_min * 60_000);
            let sign = if offset_min < 0 { '-' } else { '+' };
            let off = offset_min.abs();
            let with_offset = format!(
                "{}{sign}{:02}:{:02}",
                local.trim_end_matches('Z'),
                off / 60,
                off % 60
            );
            prop_assert_eq!(parse_rfc3339(&with_offset), Ok(ms));
        }

        #[test]
        fn never_panics_on_arbitrary_input(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }

        #[test]
        fn never_panics_on_near_miss_input(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?") {
            if let Ok(ms) = parse_rfc3339(&s) {
                prop_assert!((MIN_MILLIS..=MAX_MILLIS).contains(&ms));
            }
        }
    }
}
