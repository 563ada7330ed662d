//! One user's events: the steps a persona takes, and the names, places and apps they use.

use super::{
    persona, salesforce_lead_id, stream, user_id, Persona, SplitMix64, DAY, HOUR, MINUTE,
    USER_STREAM,
};
use crate::event::{Event, EventType, Scalar, ScoreOp};
use crate::timestamp::Millis;

/// One thing a user does, before it gets a time and becomes an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
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
pub(super) struct UserGen {
    pub(super) n: usize,
    pub(super) persona: Persona,
    pub(super) rng: SplitMix64,
    id: String,
    statuses: &'static [&'static str],
    next_status: usize,
    country: &'static str,
    employees: i64,
    last_updated_at: Option<Millis>,
}

impl UserGen {
    pub(super) fn new(seed: u64, n: usize) -> UserGen {
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
    pub(super) fn events(&mut self, count: usize, start: Millis, span: Millis) -> Vec<Event> {
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
