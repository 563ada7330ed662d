//! `leadscore warehouse import|export`: the PostgreSQL warehouse sync, as Braze's Cloud Data
//! Ingestion does it for the seed.
//!
//! - [`import`]: polls a table or view of (user id, score, updated at) and produces each new row
//!   as an `external_score` event; the watermark is stored in the warehouse only after Kafka
//!   acknowledged the batch, so a crash re-sends and never skips (the scorer drops the re-sent
//!   events as duplicates: their ids are derived from the row).
//! - [`export`]: consumes the score changes into a table of each lead's current score and status
//!   and a history table keyed by the change's event id; offsets are committed after the
//!   database transaction, and a replayed change writes nothing twice; a tombstone deletes the
//!   forgotten user's rows from both.
//! - [`db`]: the connection (plain TCP or Unix socket; no TLS), errors with the server's own
//!   message, and reconnection with a bounded backoff.
//!
//! docs/ingest.md documents the tables and the guarantees.

pub mod db;
pub mod export;
pub mod import;

use crate::timestamp::Millis;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A PostgreSQL timestamp (microseconds) as event time (milliseconds, truncated toward the past,
/// so an event never moves later than its row).
pub fn to_millis(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let ms = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
            // -1.5 ms is -2 ms: floor, like the positive side.
            if before.subsec_nanos() % 1_000_000 != 0 {
                -ms - 1
            } else {
                -ms
            }
        }
    }
}

/// Event time as a PostgreSQL timestamp.
pub fn from_millis(ms: Millis) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Microseconds since the epoch: the watermark's precision, and part of an imported row's id.
pub fn to_micros(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_truncate_toward_the_past_and_round_trip_at_millisecond_precision() {
        let t = UNIX_EPOCH + Duration::from_micros(1_500);
        assert_eq!(to_millis(t), 1);
        assert_eq!(to_micros(t), 1_500);
        let before = UNIX_EPOCH - Duration::from_micros(1_500);
        assert_eq!(to_millis(before), -2);
        assert_eq!(to_micros(before), -1_500);
        for ms in [-86_400_000, -1, 0, 1, 1_767_607_200_123] {
            assert_eq!(to_millis(from_millis(ms)), ms);
        }
    }
}
