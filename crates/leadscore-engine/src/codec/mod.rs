//! JSON and protobuf decoding (with validation) and encoding of input events and score changes.
//!
//! # One validator for both formats
//!
//! Each format first decodes into a loose intermediate (`RawEvent`, `RawChange`) that records
//! what every field held without judging it. One function per record (`validate_event`,
//! `validate_change`) then applies the rules of SPEC sections 2 and 4 and builds the model type.
//! The formats therefore cannot drift apart: the same event is accepted or rejected, with the
//! same [`DecodeError`], whichever way it was written.
//!
//! # What is lenient, on purpose
//!
//! - **Unknown fields are ignored**, JSON keys and protobuf fields alike, so producers can start
//!   sending a field before the scorer knows it (forward compatibility).
//! - **Fields that the event's type does not use are ignored**, not validated: `score` on a
//!   `session_start` is not an error, whatever it holds.
//! - **A JSON `null` counts as absent**, except for `value`, where null means "remove the
//!   attribute" and a missing `value` key is an error (so a forgotten field never deletes data).
//! - **Integral floats are integers**: wherever an integer is expected (`score`, `increment`,
//!   a change's scores), `5.0`, `-0` and `1e2` read as `5`, `0` and
//!   `100` (Python's `json.dumps` writes floats); `5.5` or a float outside the 64-bit range is
//!   still an error naming the field.
//! - **Times** (`time`, `updated_at`) are an RFC 3339 string ([`crate::timestamp`] has the
//!   exact forms), years 0000 to 9999; a number is the wrong type (SPEC 2).
//! - **An unknown `type`** (a JSON string, or a protobuf enum number this version lacks) is not
//!   an invalid event: once `user_id`, the key, `time` and `event_id` check out, it decodes to
//!   [`DecodeError::UnknownType`], which the scorer skips and counts by default
//!   (`scorer.unknown_types`).
//!
//! # What is strict
//!
//! - A repeated JSON key is malformed, a repeated property name is invalid: which one wins is
//!   unspecified by JSON, so guessing would score something the producer may not have meant.
//! - `score` / `increment` must be integral (`5.5` is rejected), and NaN or infinite numbers
//!   (possible in protobuf only) are rejected so that both formats carry the same values.
//! - Protobuf has no way to tell an empty string or a zero enum from a missing one, so
//!   `user_id = ""` and `type = EVENT_TYPE_UNSPECIFIED` read as missing there; in JSON an empty
//!   `user_id`, `name` or `event_id` is an invalid value.
//!
//! # Numbers
//!
//! A JSON number is an `i64` when it is an integer that fits, else an `f64` (an integer above
//! `i64::MAX` becomes the nearest float, except for `score`/`increment`, where it is invalid).
//! serde_json's default float parser can be one unit in the last place off for numbers with
//! 16-17 significant digits; enabling its `float_roundtrip` feature makes it exact, at some cost
//! in speed. Scores are integers, so this only touches comparisons of float properties.
//!
//! # Hot path
//!
//! Every input event goes through [`decode_event`], so JSON is parsed in one pass by a
//! hand-written serde visitor into strings borrowed from the payload (copied only when they
//! contain escapes); nested values that are only going to be rejected or skipped are walked
//! without being stored. The only allocations are the owned strings of the resulting [`Event`](crate::event::Event).
//!
//! # Layout
//!
//! This file has the formats and limits; `error` the [`DecodeError`] and its builders, `loose` the
//! loose intermediate and its serde visitor, `event` the decoding and encoding of input events,
//! `change` those of score changes. Tests are in `tests/`, one file per area.

mod change;
mod error;
mod event;
mod loose;

pub use change::{change_to_json, decode_change, encode_change, encode_change_into};
pub use error::{check_not_future, check_time_not_future, DecodeError, UnknownKind, UnknownType};
pub use event::{check_key, decode_event, decode_tombstone_key, encode_event};

pub(crate) use error::Quoted;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

// ---------------------------------------------------------------------------------------------
// Format and limits
// ---------------------------------------------------------------------------------------------

/// The wire format of a topic, chosen per deployment (SPEC section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Protobuf => "protobuf",
        }
    }

    /// The name used in messages for people.
    fn label(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Protobuf => "protobuf",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is neither `json` nor `protobuf`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {}: expected \"json\" or \"protobuf\"", Quoted(.0))]
pub struct ParseFormatError(pub String);

impl FromStr for Format {
    type Err = ParseFormatError;

    fn from_str(s: &str) -> Result<Format, ParseFormatError> {
        match s {
            "json" => Ok(Format::Json),
            "protobuf" => Ok(Format::Protobuf),
            _ => Err(ParseFormatError(s.to_owned())),
        }
    }
}

/// Bounds on what a decoder accepts, so one hostile message cannot make the scorer allocate or
/// parse without limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Payloads longer than this are rejected as `oversized` before any parsing.
    pub max_bytes: usize,
}

impl Limits {
    /// 64 KiB: far above a real event (a few hundred bytes), far below what hurts.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: Limits::DEFAULT_MAX_BYTES,
        }
    }
}

#[cfg(test)]
mod tests;
