//! One lead, explained: its score, status, caps and the recent changes that made the score
//! (issue 11). The scorer's `GET /v1/leads/{user_id}`, `leadscore lookup` and
//! `leadscore simulate --explain` all show this view, so they cannot disagree.

use crate::change::ReasonKind;
use crate::engine::Engine;
use crate::state::UserState;
use crate::timestamp::format_rfc3339;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// The view of one user's state as JSON: `user_id`, `score`, `enrolled`, `in_audience`,
/// `attributes`, `last_change`, `inactivity_due`, `caps` and `changes` (newest first). The
/// service adds where the state lives (`partition`, `owner`).
pub fn lead_view(engine: &Engine, user_id: &str, st: &UserState) -> Value {
    let attributes: Map<String, Value> = st
        .attributes()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_json()))
        .collect();
    let caps: Vec<Value> = st
        .caps()
        .iter()
        .filter_map(|c| {
            // Usage of a group no longer in the rules (or no longer capped) limits nothing.
            let name = engine.group_name(c.group)?;
            let group = engine.rules().groups.iter().find(|g| g.name == name)?;
            let cap = group.cap?;
            let window_end = c.window.saturating_add(1).saturating_mul(cap.per);
            Some(json!({
                "group": name,
                "used": c.used,
                "points": cap.points,
                "window_end": format_rfc3339(window_end),
            }))
        })
        .collect();
    let changes: Vec<Value> = st
        .history
        .notes()
        .iter()
        .rev()
        // A state restored from a deeper setting holds more until its next change cuts it.
        .take(engine.explain_depth())
        .map(|n| {
            let mut reason = Map::new();
            reason.insert("kind".into(), n.kind.as_str().into());
            if let Some(g) = n.group {
                reason.insert(
                    "group".into(),
                    engine.group_name(g).map_or(Value::Null, Value::from),
                );
            }
            if let Some(id) = &n.source_event_id {
                reason.insert("event_id".into(), id.as_str().into());
                if n.source_cut {
                    reason.insert("event_id_truncated".into(), true.into());
                }
            }
            let mut change = json!({
                "time": format_rfc3339(n.time),
                "previous_score": n.previous_score,
                "score": n.score(),
                "delta": n.delta(),
                "reason": reason,
            });
            if n.kind == ReasonKind::Inactivity {
                change["windows"] = n.windows.into();
            }
            change
        })
        .collect();
    json!({
        "user_id": user_id,
        "score": st.score,
        "enrolled": st.enrolled,
        "in_audience": engine.in_audience(st),
        "attributes": attributes,
        "last_change": st.last_change.get().map(format_rfc3339),
        "inactivity_due": st.shown_timer_due().map(format_rfc3339),
        "caps": caps,
        "changes": changes,
    })
}

/// `s` as it is when printable; quoted and escaped when it holds a control character, so a
/// string from the input (a user id, a status, an event id, a message repeating one) cannot
/// add lines to a terminal's text or send it escape sequences.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        std::borrow::Cow::Owned(format!("{s:?}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// The short human form of a [`lead_view`] (as `leadscore lookup` and `simulate --explain`
/// print it): the score and status, then why, newest change first.
pub fn render_text(view: &Value) -> String {
    let mut out = String::new();
    // Strings from the input (a user id, a status, an event id) as they are when printable;
    // quoted and escaped when they hold a control character, so they cannot add lines to the
    // text or send escape sequences to a terminal.
    let s = |v: &Value| match v {
        Value::String(s) => printable(s).into_owned(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let _ = writeln!(out, "{}  score {}", s(&view["user_id"]), s(&view["score"]));
    let enrolled = if view["enrolled"] == true {
        "enrolled"
    } else {
        "not enrolled"
    };
    let audience = if view["in_audience"] == true {
        "in the audience"
    } else {
        "outside the audience"
    };
    let status = view["attributes"]
        .get("lead_status")
        .map_or("-".to_string(), s);
    let _ = writeln!(
        out,
        "  status: {enrolled}, {audience}, lead_status {status}"
    );
    let _ = writeln!(
        out,
        "  last change {}, inactivity due {}",
        s(&view["last_change"]),
        s(&view["inactivity_due"])
    );
    if let (Some(p), Some(o)) = (view.get("partition"), view.get("owner")) {
        let _ = writeln!(out, "  partition {} on {}", s(p), s(o));
    }
    for c in view["caps"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  cap {}: {} of {} points used until {}",
            s(&c["group"]),
            s(&c["used"]),
            s(&c["points"]),
            s(&c["window_end"])
        );
    }
    let changes = view["changes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if changes.is_empty() {
        let _ = writeln!(out, "  no recent changes kept");
    } else {
        let _ = writeln!(out, "  why (newest first):");
    }
    for c in changes {
        let r = &c["reason"];
        let mut why = s(&r["kind"]);
        if let Some(g) = r.get("group") {
            let _ = write!(why, " {:?}", s(g));
        }
        if let Some(w) = c.get("windows") {
            let _ = write!(why, " x{}", s(w));
        }
        if let Some(e) = r.get("event_id") {
            let cut = if r["event_id_truncated"] == true {
                "..., cut"
            } else {
                ""
            };
            let _ = write!(why, " (event {}{cut})", s(e));
        }
        let delta = c["delta"].as_i64().unwrap_or(0);
        let _ = writeln!(
            out,
            "    {}  {:+}  {} -> {}  {}",
            s(&c["time"]),
            delta,
            s(&c["previous_score"]),
            s(&c["score"]),
            why
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate;

    const RULES: &str = r#"
[entry]
on = [{ type = "email_added" }]
[[group]]
name = "high intent"
delta = 5
cap = { points = 20, per = "1d" }
triggers = [{ type = "custom_event", name = "demo_requested" }]
[inactivity]
window = "7d"
delta = -1
[output]
tracked_attributes = ["lead_status"]
"#;

    fn engine(depth: usize) -> Engine {
        Engine::new(crate::rules::parse_str(RULES, "test.toml").unwrap()).with_explain_depth(depth)
    }

    const EVENTS: &str = r#"{"user_id":"u1","time":"2026-01-01T00:00:00Z","type":"email_added","value":"a@b.c","event_id":"e-1"}
{"user_id":"u1","time":"2026-01-01T01:00:00Z","type":"custom_event","name":"demo_requested","event_id":"e-2"}
{"user_id":"u1","time":"2026-01-01T02:00:00Z","type":"attribute_changed","name":"lead_status","value":"Open","event_id":"e-3"}
{"user_id":"u1","time":"2026-01-20T00:00:00Z","type":"custom_event","name":"demo_requested","event_id":"e-4"}
"#;

    #[test]
    fn the_view_explains_the_score_newest_first_and_the_deltas_add_up() {
        let e = engine(20);
        let sim = simulate::run(&e, EVENTS.as_bytes(), None).unwrap();
        let st = &sim.users["u1"];
        let v = lead_view(&e, "u1", st);
        assert_eq!(v["score"], 8, "{v}");
        assert_eq!(v["attributes"]["lead_status"], "Open");
        let changes = v["changes"].as_array().unwrap();
        let kinds: Vec<&str> = changes
            .iter()
            .map(|c| c["reason"]["kind"].as_str().unwrap())
            .collect();
        // e-4 (rule), the two collapsed decays (inactivity), e-3 (attribute), e-2 (rule); e-1
        // enrolled the user without changing the score.
        assert_eq!(kinds, ["rule", "inactivity", "attribute", "rule"]);
        assert_eq!(changes[0]["reason"]["group"], "high intent");
        assert_eq!(changes[0]["reason"]["event_id"], "e-4");
        assert_eq!(changes[1]["windows"], 2);
        assert_eq!(changes[1]["delta"], -2);
        // Oldest to newest, each change starts where the one before ended.
        let mut score = changes.last().unwrap()["previous_score"].as_i64().unwrap();
        for c in changes.iter().rev() {
            assert_eq!(c["previous_score"], score);
            score += c["delta"].as_i64().unwrap();
            assert_eq!(c["score"], score);
        }
        assert_eq!(score, 8);
        assert_eq!(v["caps"][0]["group"], "high intent");
        assert_eq!(v["caps"][0]["used"], 5);
        assert_eq!(v["caps"][0]["window_end"], "2026-01-21T00:00:00Z");
        let text = render_text(&v);
        assert!(text.contains("u1  score 8"), "{text}");
        assert!(
            text.contains("+5  3 -> 8  rule \"high intent\" (event e-4)"),
            "{text}"
        );
        assert!(text.contains("inactivity x2"), "{text}");
    }

    /// A timer due past the last instant RFC 3339 can name never fires (no clock reaches it),
    /// and shows as none rather than with a year of more than four digits.
    #[test]
    fn control_characters_from_the_input_are_escaped_in_the_text() {
        let view = serde_json::json!({
            "user_id": "u\nforged line",
            "score": 1,
            "attributes": {"lead_status": "\u{1b}[2JOpen"},
            "changes": [{"time": "t", "delta": 1, "previous_score": 0, "score": 1,
                         "reason": {"kind": "rule", "event_id": "e\r\n1"}}],
        });
        let text = render_text(&view);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        assert!(text.contains(r#""u\nforged line""#), "{text}");
        // A source event id cut to its first 128 bytes says so, as the JSON does (an outside
        // check: the text showed the cut id as if whole).
        let cut = serde_json::json!({
            "user_id": "u", "score": 1,
            "changes": [{"time": "t", "delta": 1, "previous_score": 0, "score": 1,
                         "reason": {"kind": "rule", "event_id": "e-1", "event_id_truncated": true}}],
        });
        assert!(
            render_text(&cut).contains("(event e-1..., cut)"),
            "{}",
            render_text(&cut)
        );
    }

    #[test]
    fn a_timer_due_past_year_9999_shows_as_none() {
        let e = engine(20);
        let mut st = simulate::run(&e, EVENTS.as_bytes(), None).unwrap().users["u1"].clone();
        st.timer_due = crate::timestamp::MAX_MILLIS.into();
        let v = lead_view(&e, "u1", &st);
        assert_eq!(v["inactivity_due"], "9999-12-31T23:59:59.999Z");
        st.timer_due = (crate::timestamp::MAX_MILLIS + 1).into();
        assert_eq!(lead_view(&e, "u1", &st)["inactivity_due"], Value::Null);
    }

    #[test]
    fn depth_bounds_the_list_and_zero_keeps_none() {
        let sim = simulate::run(&engine(2), EVENTS.as_bytes(), None).unwrap();
        let v = lead_view(&engine(2), "u1", &sim.users["u1"]);
        assert_eq!(v["changes"].as_array().unwrap().len(), 2);
        let sim = simulate::run(&engine(0), EVENTS.as_bytes(), None).unwrap();
        assert!(sim.users["u1"].history.is_empty());
        // A state restored from a run with a deeper history (the setting lowered since) is
        // shown to the engine's depth, newest first, before its next change cuts it (an
        // outside check saw 20 changes shown at depth 3).
        let deep = simulate::run(&engine(20), EVENTS.as_bytes(), None).unwrap();
        let st = &deep.users["u1"];
        let all = lead_view(&engine(20), "u1", st)["changes"].clone();
        assert!(all.as_array().unwrap().len() > 2);
        let v = lead_view(&engine(2), "u1", st);
        assert_eq!(
            v["changes"].as_array().unwrap()[..],
            all.as_array().unwrap()[..2]
        );
        assert!(lead_view(&engine(0), "u1", st)["changes"]
            .as_array()
            .unwrap()
            .is_empty());
    }
}
