//! `[handoff]`: `leadscore handoff`, and the lead funnel it reads statuses in.

use super::*;
use crate::handoff::salesforce::MAX_COLLECTION_RECORDS;

/// `leadscore handoff` (SPEC section 6).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffSettings {
    /// Instances with the same group share the score-change partitions.
    pub group_id: String,
    /// Local per-lead state (handed off since last eligible?), a cache of the handoff
    /// changelog topic.
    pub state_dir: PathBuf,
    /// A lead is handed off when its score is above this.
    pub threshold: i64,
    /// The lead funnel, earliest status first: a lead at `handoff_status` or beyond is never
    /// handed off (never moved back), and a move back to a status before it (a recycle)
    /// makes the lead eligible again. Compared as [`status_key`]s.
    pub status_order: Vec<String>,
    /// The status the handoff puts leads in (the one `patch_body` sets); one of `status_order`.
    pub handoff_status: String,
    /// Statuses outside `status_order` that also count as at or beyond the handoff status (a
    /// status missing from the order otherwise counts as before it). Kept from the releases
    /// before `status_order`; a status listed before `handoff_status` cannot be here.
    pub skip_statuses: Vec<String>,
    /// The snapshot attribute holding the lead's status, placed in `status_order`.
    pub status_attribute: String,
    /// The snapshot attribute holding the Salesforce lead id, for sources whose user ids are
    /// not lead ids; `None`: the user id is the lead id.
    pub lead_id_attribute: Option<String>,
    /// What a lead id must look like, as `[CLASS]{MIN,MAX}` (see [`LeadIdPattern`]); `None`: a
    /// Salesforce record id, 15 or 18 ASCII letters and digits. A lead whose id does not match
    /// is dead-lettered (`invalid_lead_id`) without a call.
    pub lead_id_pattern: Option<String>,
    /// The JSON object sent as each lead's update. TOML may write it as an inline table or as a
    /// JSON string, since Salesforce field names and values are easiest to copy as JSON.
    #[serde(deserialize_with = "deserialize_json_object")]
    pub patch_body: serde_json::Value,
    /// How long to wait for more pending leads to fill one Collections call: fewer API calls
    /// (Salesforce meters them) for a little latency.
    #[serde(deserialize_with = "deserialize_duration")]
    pub linger: Duration,
    /// Leads per sObject Collections call; Salesforce accepts at most
    /// [`MAX_COLLECTION_RECORDS`] (200).
    pub max_batch: usize,
    /// Attempts for retryable failures (timeouts, connection errors, 408, 429, 5xx,
    /// `UNABLE_TO_LOCK_ROW`) before the lead is dead-lettered with the last answer; `None` (the
    /// default): retried until the call succeeds, the backoff capped at `backoff_max` (SPEC 6:
    /// those failures are retried, only other 4xx are dead-lettered, and no lead that should
    /// be handed off is lost).
    pub max_attempts: Option<u32>,
    /// The first retry delay; it doubles (with jitter) per attempt.
    #[serde(deserialize_with = "deserialize_duration")]
    pub backoff_initial: Duration,
    /// The cap on a retry delay, so a long outage is still probed regularly.
    #[serde(deserialize_with = "deserialize_duration")]
    pub backoff_max: Duration,
    /// How long calls pause after `403 REQUEST_LIMIT_EXCEEDED`; the leads are kept, and retrying
    /// sooner would only spend the limit that is already exhausted.
    #[serde(deserialize_with = "deserialize_duration")]
    pub limit_pause: Duration,
}

impl Default for HandoffSettings {
    fn default() -> Self {
        HandoffSettings {
            group_id: "leadscore-handoff".to_string(),
            state_dir: PathBuf::from("./state/handoff"),
            threshold: 100,
            status_order: DEFAULT_STATUS_ORDER.iter().map(|s| s.to_string()).collect(),
            handoff_status: "MQL".to_string(),
            skip_statuses: Vec::new(),
            status_attribute: leadscore_engine::rules::LEAD_STATUS.to_string(),
            lead_id_attribute: None,
            lead_id_pattern: None,
            patch_body: serde_json::json!({ "lead_status": "MQL" }),
            linger: Duration::from_millis(200),
            max_batch: MAX_COLLECTION_RECORDS,
            max_attempts: None,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            limit_pause: Duration::from_secs(60),
        }
    }
}

/// The default `handoff.status_order`: the statuses of the common Salesforce lead funnels,
/// earliest first, with `MQL` the handoff status. Recycle buckets (`Nurture`, `Recycled`) come
/// first, so a move there from any later status is a recycle. Everything after `MQL` is with
/// sales or done, so never moved back to MQL: accepted and qualified (`SAL`, `SQL`),
/// `Opportunity`, converted (`Converted`, Salesforce's default `Closed - Converted`,
/// `Customer`) and closed or disqualified (`Closed`, `Closed - Not Converted`, `Unqualified`,
/// `Disqualified`). `Open - Not Contacted` and `Working - Contacted` are Salesforce's default
/// picklist values for new and worked leads.
pub const DEFAULT_STATUS_ORDER: &[&str] = &[
    "Nurture",
    "Nurturing",
    "Recycled",
    "New",
    "Open",
    "Open - Not Contacted",
    "Working",
    "Working - Contacted",
    "MQL",
    "SAL",
    "SQL",
    "Qualified",
    "Opportunity",
    "Converted",
    "Closed - Converted",
    "Customer",
    "Closed",
    "Closed - Not Converted",
    "Unqualified",
    "Disqualified",
];

/// How statuses are compared: surrounding whitespace dropped, inner runs of whitespace made one
/// space, and case folded, so `"Closed -  Converted "` from a CRM sync is `Closed - Converted`
/// and `mql` is `MQL`. Picklist values that differ only in case are one status to the handoff.
pub fn status_key(status: &str) -> String {
    status
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// What a lead id must look like: `handoff.lead_id_pattern`, a deliberately small subset of
/// regular expressions with no regex engine behind it: one character class and a length,
/// `[CLASS]{MIN,MAX}` or `[CLASS]{N}`. The class lists characters and ranges (`A-Za-z0-9_-`; a
/// `-` first or last is itself). Whatever the pattern, an id is at most
/// [`LeadIdPattern::MAX_LEN`] long, and `/ ? # % \` and whitespace can never be in the class,
/// nor can an id be only dots: the id is a URL path segment and must not change the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeadIdPattern {
    /// A Salesforce record id: 15 or 18 ASCII letters and digits, an 18-character one's last
    /// three letters or `0`-`5` (its case suffix), the default.
    SalesforceId,
    /// A `[CLASS]{MIN,MAX}` pattern.
    Class {
        /// Allowed bytes (ASCII only).
        allowed: Vec<bool>,
        min: usize,
        max: usize,
    },
}

impl LeadIdPattern {
    /// The longest lead id any pattern accepts.
    pub const MAX_LEN: usize = 255;

    /// Parses `[CLASS]{MIN,MAX}`; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<LeadIdPattern, String> {
        let usage = "expected [CLASS]{MIN,MAX} or [CLASS]{N}, e.g. \"[A-Za-z0-9_-]{1,80}\"";
        let rest = pattern
            .strip_prefix('[')
            .ok_or_else(|| format!("{pattern:?}: {usage}"))?;
        let (class, count) = rest
            .split_once("]{")
            .ok_or_else(|| format!("{pattern:?}: {usage}"))?;
        let count = count
            .strip_suffix('}')
            .ok_or_else(|| format!("{pattern:?}: {usage}"))?;
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("{pattern:?}: {s:?} is not a length; {usage}"))
        };
        let (min, max) = match count.split_once(',') {
            Some((lo, hi)) => (number(lo)?, number(hi)?),
            None => (number(count)?, number(count)?),
        };
        if min == 0 || min > max || max > Self::MAX_LEN {
            return Err(format!(
                "{pattern:?}: the length must be 1 to {} with MIN <= MAX",
                Self::MAX_LEN
            ));
        }
        let mut allowed = vec![false; 128];
        let chars: Vec<char> = class.chars().collect();
        if chars.is_empty() {
            return Err(format!("{pattern:?}: the character class is empty"));
        }
        let mut i = 0;
        while i < chars.len() {
            let (lo, hi) = if i + 2 < chars.len() && chars[i + 1] == '-' {
                i += 3;
                (chars[i - 3], chars[i - 1])
            } else {
                i += 1;
                (chars[i - 1], chars[i - 1])
            };
            if !lo.is_ascii() || !hi.is_ascii() || lo > hi {
                return Err(format!(
                    "{pattern:?}: {lo}-{hi} is not an ASCII range (ids are ASCII)"
                ));
            }
            for c in lo..=hi {
                if c.is_ascii_control()
                    || c.is_ascii_whitespace()
                    || matches!(c, '/' | '?' | '#' | '%' | '\\')
                {
                    return Err(format!(
                        "{pattern:?}: {c:?} cannot be in a lead id (it is a URL path segment)"
                    ));
                }
                allowed[c as usize] = true;
            }
        }
        Ok(LeadIdPattern::Class { allowed, min, max })
    }

    /// Whether `id` is a lead id of this shape.
    pub fn matches(&self, id: &str) -> bool {
        if id.bytes().all(|b| b == b'.') {
            return false; // `.` and `..` (and empty) would be normalised out of the URL
        }
        match self {
            LeadIdPattern::SalesforceId => {
                (id.len() == 15 || id.len() == 18)
                    && id.bytes().all(|b| b.is_ascii_alphanumeric())
                    // An 18-character id's last three characters encode the case of the first
                    // fifteen, five bits each, as `A`-`Z` or `0`-`5` (in any case: that form
                    // is case-insensitive): a `6`-`9` there is no id.
                    && !id.bytes().skip(15).any(|b| matches!(b, b'6'..=b'9'))
            }
            LeadIdPattern::Class { allowed, min, max } => {
                (*min..=*max).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| allowed.get(usize::from(b)).copied().unwrap_or(false))
            }
        }
    }
}

impl HandoffSettings {
    /// The compiled `lead_id_pattern` (checked at load, so an error here names the setting).
    pub fn lead_id_pattern(&self) -> Result<LeadIdPattern, String> {
        match &self.lead_id_pattern {
            None => Ok(LeadIdPattern::SalesforceId),
            Some(p) => LeadIdPattern::parse(p),
        }
    }
}
