//! Personas: what kind of lead each user is, and the ids and Salesforce lead ids users get.

use super::user::Step;
use super::{stream, SplitMix64, PERSONA_STREAM};

/// What kind of lead a user is; it drives how much they do and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Persona {
    /// 42%: a few page views and sessions, rarely anything that shows intent.
    Cold,
    /// 25%: regular sessions, webinars, some pricing views.
    Warm,
    /// 6%: many sessions, demo requests and paid-plan pricing views; crosses 100 under the seed
    /// canvas within four weeks at the default density.
    Hot,
    /// 5%: `is_employee = true` right after signing up: excluded by the seed canvas's audience.
    Employee,
    /// 10%: becomes `lifecycle_stage = "customer"` part way, which leaves the audience.
    Customer,
    /// 12%: active for a while, unsubscribes, then goes quiet and decays.
    Churner,
}

impl Persona {
    pub const ALL: [Persona; 6] = [
        Persona::Cold,
        Persona::Warm,
        Persona::Hot,
        Persona::Employee,
        Persona::Customer,
        Persona::Churner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Persona::Cold => "cold",
            Persona::Warm => "warm",
            Persona::Hot => "hot",
            Persona::Employee => "employee",
            Persona::Customer => "customer",
            Persona::Churner => "churner",
        }
    }

    /// Share of users with this persona, in percent (the table sums to 100).
    fn percent(self) -> u64 {
        match self {
            Persona::Cold => 42,
            Persona::Warm => 25,
            Persona::Hot => 6,
            Persona::Employee => 5,
            Persona::Customer => 10,
            Persona::Churner => 12,
        }
    }

    /// Relative activity in tenths: a hot lead does 16 times what a cold one does.
    pub(super) fn activity(self) -> u64 {
        match self {
            Persona::Cold => 5,
            Persona::Warm => 20,
            Persona::Hot => 80,
            Persona::Employee => 10,
            Persona::Customer => 15,
            Persona::Churner => 12,
        }
    }

    /// What follows the `session_start` of a visit, with relative weights.
    pub(super) fn mix(self) -> &'static [(Step, u32)] {
        use Step::*;
        match self {
            Persona::Cold => &[
                (PageView, 50),
                (Session, 4),
                (Registered, 10),
                (Webinar, 4),
                (Pricing, 8),
                (Demo, 1),
                (Unsubscribe, 8),
                (External, 6),
                (LeadStatus, 3),
                (Country, 3),
                (RemoveCountry, 1),
                (Employees, 2),
            ],
            Persona::Warm => &[
                (PageView, 30),
                (Session, 5),
                (Registered, 10),
                (Webinar, 15),
                (Pricing, 15),
                (Demo, 5),
                (Unsubscribe, 3),
                (External, 8),
                (LeadStatus, 6),
                (Employees, 3),
            ],
            Persona::Hot => &[
                (PageView, 10),
                (Session, 5),
                (Registered, 4),
                (Webinar, 10),
                (Pricing, 33),
                (Demo, 25),
                (External, 7),
                (LeadStatus, 6),
            ],
            Persona::Employee => &[
                (PageView, 45),
                (Session, 15),
                (Registered, 5),
                (Webinar, 10),
                (Pricing, 15),
                (Demo, 10),
            ],
            Persona::Customer => &[
                (PageView, 40),
                (Session, 10),
                (Registered, 5),
                (Webinar, 15),
                (Pricing, 15),
                (External, 10),
                (LeadStatus, 5),
            ],
            Persona::Churner => &[
                (PageView, 35),
                (Session, 10),
                (Registered, 10),
                (Webinar, 15),
                (Pricing, 15),
                (Unsubscribe, 10),
                (External, 5),
            ],
        }
    }

    /// Chance that a `pricing_viewed` is for a paid plan (which the seed canvas scores).
    pub(super) fn paid_plan_chance(self) -> f64 {
        match self {
            Persona::Hot => 0.85,
            Persona::Warm | Persona::Customer => 0.5,
            Persona::Cold | Persona::Churner => 0.3,
            Persona::Employee => 0.6,
        }
    }

    /// A visit is a `session_start` and up to this many events more.
    pub(super) fn visit_extra(self) -> u64 {
        match self {
            Persona::Cold => 2,
            Persona::Warm => 4,
            Persona::Hot => 5,
            _ => 3,
        }
    }

    /// The active window as fractions (thousandths) of the span: when the user may first show up
    /// (uniform in `0..first`), and how long they stay (`None`: to the end of the span).
    pub(super) fn window(self) -> (i64, Option<(i64, i64)>) {
        match self {
            // Hot leads show up early enough to build a score before the span ends.
            Persona::Hot => (200, None),
            Persona::Warm => (600, None),
            Persona::Cold => (800, None),
            Persona::Employee | Persona::Customer => (500, None),
            Persona::Churner => (400, Some((150, 350))),
        }
    }

    /// External model outputs: `(set range, increment range)`.
    pub(super) fn external_ranges(self) -> ((i64, i64), (i64, i64)) {
        match self {
            // Above 100, so a late external set never pulls a hot lead under the threshold.
            Persona::Hot => ((110, 180), (5, 20)),
            Persona::Warm => ((20, 70), (-5, 10)),
            Persona::Customer => ((30, 90), (-5, 10)),
            Persona::Churner => ((10, 50), (-10, 5)),
            Persona::Cold | Persona::Employee => ((0, 25), (-5, 5)),
        }
    }

    /// The `lead_status` values the user goes through, in order.
    pub(super) fn statuses(self, rng: &mut SplitMix64) -> &'static [&'static str] {
        match self {
            Persona::Cold => &["Open"],
            Persona::Warm | Persona::Churner => &["Open", "Working"],
            // Some hot leads were qualified in Salesforce already: the handoff skips those.
            Persona::Hot if rng.chance(0.2) => &["Open", "Working", "MQL", "SQL"],
            Persona::Hot => &["Open", "Working"],
            Persona::Customer => &["Open", "Working", "SQL"],
            Persona::Employee => &[],
        }
    }
}

/// The persona of user number `n` under `seed`.
pub fn persona(seed: u64, n: usize) -> Persona {
    let roll = stream(seed, PERSONA_STREAM, n as u64).below(100);
    let mut acc = 0;
    for p in Persona::ALL {
        acc += p.percent();
        if roll < acc {
            return p;
        }
    }
    Persona::Churner
}

/// The user ID of user number `n`: `user-000042`. Stable: the demo and tests refer to users by it.
pub fn user_id(n: usize) -> String {
    format!("user-{n:06}")
}

/// A Salesforce-style 18-character Lead ID for user number `n`, unique per `n` below 62^6:
/// key prefix `00Q`, a pod and padding, six base-62 characters, and the three-character
/// case-checksum suffix Salesforce appends to 15-character ids, so the id looks real to a
/// validator (`00Q5g0000` + 6 chars + 3).
pub fn salesforce_lead_id(n: usize) -> String {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const SPACE: u64 = 62u64.pow(6);
    // An odd multiplier not divisible by 31 is a bijection modulo 62^6 = 2^6 * 31^6, so
    // neighbouring users get unrelated-looking ids that still never collide.
    let mut v = (n as u64 % SPACE).wrapping_mul(1_000_003) % SPACE;
    let mut tail = [0u8; 6];
    for slot in tail.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    let mut id: Vec<u8> = b"00Q5g0000".to_vec();
    id.extend_from_slice(&tail);
    const SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut suffix = [0u8; 3];
    for (chunk, out) in id.chunks(5).zip(suffix.iter_mut()) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | 1 << i);
        *out = SUFFIX[bits];
    }
    id.extend_from_slice(&suffix);
    // Only ASCII was written.
    id.iter().map(|&c| char::from(c)).collect()
}
