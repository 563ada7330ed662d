//! A deterministic generator of realistic input events, for `leadscore bench`, `leadscore demo`
//! and tests.
//!
//! Real lead traffic is lopsided: most users are cold and do little, a few hot leads do a lot,
//! employees and customers browse but must never be handed to sales, and events arrive late or
//! twice. Benchmarks and demos on uniform random events would miss all of that (cap cut-offs,
//! audience exits, stale external scores, duplicates), so each user gets a [`Persona`] that
//! drives what they do, and the stream gets late and duplicate events on top.
//!
//! Everything comes from [`SplitMix64`] seeded by [`GeneratorConfig::seed`], with integer
//! arithmetic only where it matters, so a seed gives the same events on every platform and
//! build. A user's persona and behaviour depend only on the seed and the user's number, not on
//! how many users there are.
//!
//! # Shape of the stream
//!
//! - Each user starts with a short burst of profile events: `email_added` (the seed canvas's
//!   entry) for most users, then `lead_status = "Open"`, `salesforce_lead_id`, `country`,
//!   `employees`, `lifecycle_stage = "lead"`, `is_employee` as the persona has them.
//! - Then visits: a `session_start` followed by a few custom events minutes apart, drawn from
//!   the persona's mix, at random times in the user's active window.
//! - Customers turn `lifecycle_stage = "customer"` part way; churners unsubscribe and go quiet.
//! - All users' events are merged in time order. Then a fraction is moved back in time by a
//!   minute to three days while keeping its place in the sequence (late events), a fraction
//!   gets an `event_id` (`evt-000123`), and a fraction of those with an id is sent again up to an
//!   hour of event time later in the sequence (producer retries).
//!
//! # Layout
//!
//! This file has the configuration, the random numbers, the merge into one stream (late and
//! duplicate events) and JSONL writing; `persona` has what kind of lead each user is and their
//! ids, `user` what one user does.

mod persona;
mod user;

pub use persona::{persona, salesforce_lead_id, user_id, Persona};
use user::UserGen;

use crate::event::Event;
use crate::timestamp::Millis;
use std::io::{self, Write};

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

/// 2026-01-05T00:00:00Z, a Monday: the default start of generated traffic.
pub const DEFAULT_START: Millis = 1_767_571_200_000;

/// What to generate. Fractions are probabilities per event, in `0.0..=1.0`.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// How many users may appear; with fewer events than users, some users get none.
    pub users: usize,
    /// Exactly how many events [`generate`] returns, duplicates included.
    pub events: usize,
    /// Event time of the earliest (not late) event.
    pub start: Millis,
    /// How long the traffic runs: events fall in `start..start + span`, give or take a visit.
    pub span: Millis,
    pub seed: u64,
    /// Share of events whose time is moved back (a minute to three days) but not their position.
    pub late_fraction: f64,
    /// Share of the output that is a re-sent copy of an earlier event with an `event_id`.
    pub duplicate_fraction: f64,
    /// Share of events that carry an `event_id`; the rest are named by their Kafka position.
    pub with_event_ids: f64,
}

impl Default for GeneratorConfig {
    /// 1000 users, 20 000 events over four weeks from 2026-01-05, seed 42: enough traffic for hot
    /// leads to cross the seed canvas's handoff threshold of 100.
    fn default() -> Self {
        GeneratorConfig {
            users: 1000,
            events: 20_000,
            start: DEFAULT_START,
            span: 28 * DAY,
            seed: 42,
            late_fraction: 0.02,
            duplicate_fraction: 0.01,
            with_event_ids: 0.9,
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast, statistically sound for simulation,
/// and fully specified, so the generator needs no dependency and never changes under us.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for the
    /// small `n` used here). `0` when `n` is `0`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform integer in `lo..=hi` (`lo` if `hi < lo`).
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        match hi.abs_diff(lo).checked_add(1) {
            Some(width) => lo.wrapping_add(self.below(width) as i64),
            // The whole i64 range.
            None => self.next_u64() as i64,
        }
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniformly chosen element of a non-empty constant table.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The SplitMix64 output function: a bijective mixer of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An independent random stream for (`seed`, `domain`, `index`): each user's persona and events
/// come from their own stream, so adding users does not change existing ones.
fn stream(seed: u64, domain: u64, index: u64) -> SplitMix64 {
    SplitMix64::new(mix64(seed ^ mix64(domain.wrapping_add(mix64(index)))))
}

const PERSONA_STREAM: u64 = 1;
const USER_STREAM: u64 = 2;
const GLOBAL_STREAM: u64 = 3;

/// Generates `cfg.events` events (exactly) for up to `cfg.users` users; see the module doc for
/// the shape. With `cfg.users == 0` it still generates, for one user.
pub fn generate(cfg: &GeneratorConfig) -> Vec<Event> {
    if cfg.events == 0 {
        return Vec::new();
    }
    let users = cfg.users.max(1);
    let mut global = stream(cfg.seed, GLOBAL_STREAM, 0);
    let duplicates = if cfg.with_event_ids > 0.0 {
        let d = (cfg.events as f64 * cfg.duplicate_fraction.clamp(0.0, 1.0)).round() as usize;
        d.min(cfg.events - 1)
    } else {
        0
    };
    let primary = cfg.events - duplicates;

    // Events per user: proportional to persona activity times a per-user factor in 0.6..=1.4,
    // then the rounding remainder handed out one by one from a seeded offset.
    let mut gens: Vec<UserGen> = (0..users).map(|n| UserGen::new(cfg.seed, n)).collect();
    let raw: Vec<u64> = gens
        .iter_mut()
        .map(|g| g.persona.activity() * (600 + g.rng.below(801)))
        .collect();
    let total: u128 = raw.iter().map(|&r| u128::from(r)).sum();
    let mut counts: Vec<usize> = raw
        .iter()
        .map(|&r| (u128::from(r) * primary as u128 / total.max(1)) as usize)
        .collect();
    let assigned: usize = counts.iter().sum();
    let offset = global.below(users as u64) as usize;
    for i in 0..primary.saturating_sub(assigned) {
        counts[(offset + i) % users] += 1;
    }

    // Each user's events are in time order; a stable sort by time merges them.
    let mut keyed: Vec<(Millis, usize, Event)> = Vec::with_capacity(cfg.events);
    for (g, &count) in gens.iter_mut().zip(&counts) {
        for e in g.events(count, cfg.start, cfg.span) {
            keyed.push((e.time, g.n, e));
        }
    }
    keyed.sort_by_key(|(t, n, _)| (*t, *n));
    let mut events: Vec<Event> = keyed.into_iter().map(|(_, _, e)| e).collect();
    // Where each event sits in time before some are made late: retries are placed by it.
    let in_order: Vec<Millis> = events.iter().map(|e| e.time).collect();

    for (i, e) in events.iter_mut().enumerate() {
        if global.chance(cfg.with_event_ids) {
            e.event_id = Some(event_id(i).into());
        }
        if global.chance(cfg.late_fraction) {
            let back = match global.below(100) {
                0..=49 => global.between(MINUTE, HOUR),
                50..=84 => global.between(HOUR, DAY),
                _ => global.between(DAY, 3 * DAY),
            };
            e.time = e.time.saturating_sub(back);
        }
    }

    // Producer retries: a copy of an event with an id, up to an hour of event time later.
    let mut copies: Vec<(usize, Event)> = Vec::with_capacity(duplicates);
    for _ in 0..duplicates {
        let src = global.below(primary as u64) as usize;
        let original = &mut events[src];
        if original.event_id.is_none() {
            original.event_id = Some(event_id(src).into());
        }
        let copy = original.clone();
        let resend = in_order[src].saturating_add(global.between(0, HOUR));
        let at = in_order.partition_point(|&t| t <= resend).max(src + 1);
        copies.push((at, copy));
    }
    copies.sort_by_key(|(at, _)| *at);
    let mut out = Vec::with_capacity(cfg.events);
    let mut copies = copies.into_iter().peekable();
    for (i, e) in events.into_iter().enumerate() {
        while let Some((_, c)) = copies.next_if(|(at, _)| *at == i) {
            out.push(c);
        }
        out.push(e);
    }
    out.extend(copies.map(|(_, c)| c));
    out
}

/// The `event_id` of the `i`-th generated event.
fn event_id(i: usize) -> String {
    format!("evt-{i:06}")
}

/// Writes events as JSONL, the input of `leadscore simulate`.
pub fn write_jsonl(events: &[Event], mut out: impl Write) -> io::Result<()> {
    for e in events {
        out.write_all(&crate::codec::encode_event(crate::codec::Format::Json, e))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The generator settings of `examples/events/sample.jsonl`: 80 users, about 300 events over
/// two weeks, seed 7. Kept here so the file can be regenerated exactly.
pub fn sample_config() -> GeneratorConfig {
    GeneratorConfig {
        users: 80,
        events: 300,
        span: 14 * DAY,
        seed: 7,
        ..GeneratorConfig::default()
    }
}

#[cfg(test)]
mod tests;
