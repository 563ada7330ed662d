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

use crate::event::{Event, EventType, Scalar, ScoreOp};
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
    fn activity(self) -> u64 {
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
    fn mix(self) -> &'static [(Step, u32)] {
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
    fn paid_plan_chance(self) -> f64 {
        match self {
            Persona::Hot => 0.85,
            Persona::Warm | Persona::Customer => 0.5,
            Persona::Cold | Persona::Churner => 0.3,
            Persona::Employee => 0.6,
        }
    }

    /// A visit is a `session_start` and up to this many events more.
    fn visit_extra(self) -> u64 {
        match self {
            Persona::Cold => 2,
            Persona::Warm => 4,
            Persona::Hot => 5,
            _ => 3,
        }
    }

    /// The active window as fractions (thousandths) of the span: when the user may first show up
    /// (uniform in `0..first`), and how long they stay (`None`: to the end of the span).
    fn window(self) -> (i64, Option<(i64, i64)>) {
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
    fn external_ranges(self) -> ((i64, i64), (i64, i64)) {
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
    fn statuses(self, rng: &mut SplitMix64) -> &'static [&'static str] {
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

/// One thing a user does, before it gets a time and becomes an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Email,
    /// The next `lead_status` of the user's progression (a page view once it is exhausted).
    LeadStatus,
    SalesforceId,
    Country,
    /// `country` set to null: attribute removal.
    RemoveCountry,
    Employees,
    Lifecycle(&'static str),
    IsEmployee(bool),
    Session,
    Registered,
    Webinar,
    Demo,
    Pricing,
    PageView,
    Unsubscribe,
    External,
}

const FIRST_NAMES: &[&str] = &[
    "ana", "ben", "chen", "dana", "emeka", "fatima", "george", "hana", "ivan", "jun", "kofi",
    "lena", "maria", "noah", "olga", "priya", "quinn", "raj", "sofia", "tom",
];
const LAST_NAMES: &[&str] = &[
    "garcia", "smith", "mueller", "kim", "okafor", "rossi", "nguyen", "silva", "tanaka", "dubois",
    "kowalski", "haddad", "jensen", "patel",
];
const DOMAINS: &[&str] = &[
    "acme.example",
    "globex.example",
    "initech.example",
    "umbrella.example",
    "hooli.example",
    "example.com",
    "example.org",
];
/// The seller's own domain: employees sign up with it.
const EMPLOYEE_DOMAIN: &str = "leadscore.example";
const COUNTRIES: &[&str] = &[
    "US", "US", "US", "GB", "DE", "FR", "IN", "BR", "CA", "AU", "NL", "JP", "ES", "SE",
];
const APPS: &[&str] = &[
    "web", "web", "web", "web", "ios", "ios", "android", "android",
];
const PATHS: &[&str] = &[
    "/",
    "/pricing",
    "/product",
    "/docs/getting-started",
    "/blog/lead-scoring-101",
    "/customers",
    "/integrations/salesforce",
];
/// Company size bands: a band, then uniform within it, gives a long tail without floats.
const COMPANY_SIZES: &[(i64, i64)] = &[
    (1, 10),
    (11, 50),
    (51, 200),
    (201, 1000),
    (1001, 5000),
    (5001, 50_000),
];

/// One user's generator: the state that makes their events coherent over time (status only moves
/// forward, external `updated_at` usually increases).
struct UserGen {
    n: usize,
    persona: Persona,
    rng: SplitMix64,
    id: String,
    statuses: &'static [&'static str],
    next_status: usize,
    country: &'static str,
    employees: i64,
    last_updated_at: Option<Millis>,
}

impl UserGen {
    fn new(seed: u64, n: usize) -> UserGen {
        let persona = persona(seed, n);
        let mut rng = stream(seed, USER_STREAM, n as u64);
        let statuses = persona.statuses(&mut rng);
        let country = rng.pick(COUNTRIES);
        let (lo, hi) = rng.pick(COMPANY_SIZES);
        let employees = rng.between(lo, hi);
        UserGen {
            n,
            persona,
            rng,
            id: user_id(n),
            statuses,
            next_status: 0,
            country,
            employees,
            last_updated_at: None,
        }
    }

    /// The user's `count` events in time order, within `start..start + span`.
    fn events(&mut self, count: usize, start: Millis, span: Millis) -> Vec<Event> {
        if count == 0 {
            return Vec::new();
        }
        let (first, stay) = self.persona.window();
        let first_seen = start.saturating_add(
            self.rng
                .between(0, span.max(0).saturating_mul(first) / 1000),
        );
        let end = match stay {
            Some((lo, hi)) => first_seen
                .saturating_add(span.max(0).saturating_mul(self.rng.between(lo, hi)) / 1000),
            None => start.saturating_add(span.max(0)),
        };

        let profile = self.profile();
        let mut steps: Vec<(Millis, Step)> = Vec::with_capacity(count);
        let mut t = first_seen;
        for step in profile.into_iter().take(count) {
            steps.push((t, step));
            t = t.saturating_add(self.rng.between(2_000, 10 * MINUTE));
        }
        let activity_from = t;
        let mut activity: Vec<(Millis, Step)> = Vec::with_capacity(count - steps.len());
        while steps.len() + activity.len() < count {
            let left = (count - steps.len() - activity.len()) as u64;
            let size = (1 + self.rng.below(self.persona.visit_extra() + 1)).min(left);
            let mut t = self.rng.between(activity_from, end.max(activity_from));
            activity.push((t, Step::Session));
            for _ in 1..size {
                t = t.saturating_add(self.rng.between(15_000, 8 * MINUTE));
                let step = self.draw();
                activity.push((t, step));
            }
        }
        activity.sort_by_key(|(t, _)| *t);
        match self.persona {
            Persona::Customer if !activity.is_empty() => {
                let i = activity.len() * 6 / 10;
                activity[i].1 = Step::Lifecycle("customer");
            }
            Persona::Churner => {
                if let Some(last) = activity.last_mut() {
                    last.1 = Step::Unsubscribe;
                }
            }
            _ => {}
        }
        steps.extend(activity);
        steps
            .into_iter()
            .map(|(time, step)| self.event(step, time))
            .collect()
    }

    /// The burst of sign-up events that opens a user's history.
    fn profile(&mut self) -> Vec<Step> {
        let p = self.persona;
        if p == Persona::Employee {
            return vec![Step::Email, Step::IsEmployee(true), Step::Country];
        }
        let mut steps = Vec::with_capacity(7);
        let email = match p {
            Persona::Hot => 1.0,
            Persona::Cold => 0.75,
            _ => 0.97,
        };
        if self.rng.chance(email) {
            steps.push(Step::Email);
        }
        let synced = match p {
            Persona::Hot | Persona::Warm => 1.0,
            Persona::Cold => 0.6,
            _ => 0.9,
        };
        if self.rng.chance(synced) {
            steps.push(Step::LeadStatus);
            steps.push(Step::SalesforceId);
        }
        if self.rng.chance(0.7) {
            steps.push(Step::Country);
        }
        if self.rng.chance(0.5) {
            steps.push(Step::Employees);
        }
        if self.rng.chance(0.6) {
            steps.push(Step::Lifecycle("lead"));
        }
        if self.rng.chance(0.25) {
            steps.push(Step::IsEmployee(false));
        }
        steps
    }

    /// A weighted draw from the persona's mix.
    fn draw(&mut self) -> Step {
        let mix = self.persona.mix();
        let total: u32 = mix.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(u64::from(total)) as u32;
        for (step, w) in mix {
            if roll < *w {
                return *step;
            }
            roll -= w;
        }
        Step::PageView
    }

    fn event(&mut self, step: Step, time: Millis) -> Event {
        let mut e = Event::new(self.id.clone(), time, EventType::CustomEvent);
        let attribute = |e: &mut Event, name: &str, value: Option<Scalar>| {
            e.kind = EventType::AttributeChanged;
            e.name = Some(name.to_string());
            e.value = value;
        };
        match step {
            Step::Email => {
                e.kind = EventType::EmailAdded;
                let first = self.rng.pick(FIRST_NAMES);
                let last = self.rng.pick(LAST_NAMES);
                let domain = if self.persona == Persona::Employee {
                    EMPLOYEE_DOMAIN
                } else {
                    self.rng.pick(DOMAINS)
                };
                e.value = Some(Scalar::Str(format!("{first}.{last}{}@{domain}", self.n)));
            }
            Step::LeadStatus => match self.statuses.get(self.next_status) {
                Some(status) => {
                    self.next_status += 1;
                    attribute(&mut e, "lead_status", Some(Scalar::Str(status.to_string())));
                }
                None => return self.event(Step::PageView, time),
            },
            Step::SalesforceId => attribute(
                &mut e,
                "salesforce_lead_id",
                Some(Scalar::Str(salesforce_lead_id(self.n))),
            ),
            Step::Country => {
                if self.rng.chance(0.2) {
                    // Moved, or a better IP lookup.
                    self.country = self.rng.pick(COUNTRIES);
                }
                attribute(
                    &mut e,
                    "country",
                    Some(Scalar::Str(self.country.to_string())),
                );
            }
            Step::RemoveCountry => attribute(&mut e, "country", None),
            Step::Employees => {
                // Enrichment refreshes drift a little.
                self.employees = (self.employees
                    + self.rng.between(-self.employees / 10, self.employees / 10))
                .max(1);
                attribute(&mut e, "employees", Some(Scalar::Int(self.employees)));
            }
            Step::Lifecycle(stage) => attribute(
                &mut e,
                "lifecycle_stage",
                Some(Scalar::Str(stage.to_string())),
            ),
            Step::IsEmployee(b) => attribute(&mut e, "is_employee", Some(Scalar::Bool(b))),
            Step::Session => {
                e.kind = EventType::SessionStart;
                if self.rng.chance(0.95) {
                    e.app_id = Some(self.rng.pick(APPS).to_string());
                }
            }
            Step::Registered => {
                e.name = Some("registered".into());
                e.properties = vec![("plan".into(), Scalar::Str("free".into()))];
            }
            Step::Webinar => e.name = Some("webinar_joined".into()),
            Step::Demo => {
                e.name = Some("demo_requested".into());
                if self.rng.chance(0.7) {
                    e.properties = vec![("seats".into(), Scalar::Int(self.seats()))];
                }
            }
            Step::Pricing => {
                e.name = Some("pricing_viewed".into());
                let plan = if self.rng.chance(self.persona.paid_plan_chance()) {
                    if self.rng.chance(0.4) {
                        "enterprise"
                    } else {
                        "pro"
                    }
                } else {
                    "free"
                };
                // Keys in sorted order: protobuf maps decode sorted, so both formats agree.
                e.properties = vec![("plan".into(), Scalar::Str(plan.into()))];
                if self.rng.chance(0.5) {
                    let seats = self.seats();
                    e.properties.push(("seats".into(), Scalar::Int(seats)));
                }
            }
            Step::PageView => {
                e.name = Some("page_viewed".into());
                e.properties = vec![("path".into(), Scalar::Str(self.rng.pick(PATHS).into()))];
            }
            Step::Unsubscribe => e.name = Some("email_unsubscribed".into()),
            Step::External => {
                e.kind = EventType::ExternalScore;
                let (set, inc) = self.persona.external_ranges();
                e.score = Some(if self.rng.chance(0.5) {
                    ScoreOp::Set(self.rng.between(set.0, set.1))
                } else {
                    ScoreOp::Increment(self.rng.between(inc.0, inc.1))
                });
                if self.rng.chance(0.8) {
                    let at = match self.last_updated_at {
                        // A model run that reached us after a newer one: the engine drops it.
                        Some(last) if self.rng.chance(0.2) => {
                            last.saturating_sub(self.rng.between(HOUR, 3 * DAY))
                        }
                        _ => time.saturating_sub(self.rng.between(0, 30 * MINUTE)),
                    };
                    self.last_updated_at = Some(self.last_updated_at.map_or(at, |l| l.max(at)));
                    e.updated_at = Some(at);
                }
            }
        }
        e
    }

    /// Seat counts: mostly small teams, some large.
    fn seats(&mut self) -> i64 {
        if self.rng.chance(0.8) {
            self.rng.between(1, 25)
        } else {
            self.rng.between(26, 500)
        }
    }
}

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
            e.event_id = Some(event_id(i));
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
            original.event_id = Some(event_id(src));
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
