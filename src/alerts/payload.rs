//! The bodies sinks receive: the generic JSON (the [`Alert`] itself) and a
//! Slack incoming-webhook message (`text` for notifications, `blocks` for
//! the layout; other Slack-compatible receivers — Mattermost, Rocket.Chat,
//! Discord's `/slack` endpoint — read `text`).

use serde_json::{json, Value};

use super::Alert;

/// The generic JSON body.
pub fn generic(a: &Alert) -> Vec<u8> {
    serde_json::to_vec(a).unwrap_or_default()
}

fn icon(severity: &str) -> &'static str {
    match severity {
        "critical" => ":rotating_light:",
        "warning" => ":warning:",
        _ => ":information_source:",
    }
}

/// A figure for a Slack field.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_object().map(|o| o.values().map(shown).collect::<Vec<_>>().join(" ")).unwrap_or_else(|| shown(i)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// The Slack incoming-webhook body.
pub fn slack(a: &Alert) -> Vec<u8> {
    let text = format!("{} [{}] {} ({})", icon(a.severity), a.instance, a.summary, a.severity);
    // Slack allows 10 fields per section.
    let fields: Vec<Value> = a.figures.iter().take(10).map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", shown(v))})).collect();
    let mut context = format!("rule `{}` · id `{}` · {} · {}", a.rule, a.id, a.instance, a.fired_at);
    if let Some(link) = &a.link {
        context += &format!(" · <{link}|details>");
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&format!("{} {}", icon(a.severity), a.summary), 150), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&a.detail, 3000)}}),
    ];
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    serde_json::to_vec(&json!({"text": text, "blocks": blocks})).unwrap_or_default()
}

/// At most `n` characters (Slack rejects longer block texts).
fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    s.chars().take(n - 1).chain(['…']).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Event;
    use crate::config::Alerts;

    #[test]
    fn both_shapes_carry_the_id_summary_and_figures() {
        let e = Event::CostPerHour { last_hour_usd: 61.2, threshold_usd: 50.0 };
        let a = Alert::new(&e, &Alerts { instance: "web-1".into(), ..Alerts::default() }, jiff::Timestamp::UNIX_EPOCH);
        let g: Value = serde_json::from_slice(&generic(&a)).unwrap();
        for k in ["id", "rule", "severity", "subject", "summary", "detail", "figures", "fired_at", "instance", "test"] {
            assert!(g.get(k).is_some(), "generic body lacks {k}: {g}");
        }
        assert_eq!(g["figures"]["last_hour_usd"], 61.2);
        let s: Value = serde_json::from_slice(&slack(&a)).unwrap();
        assert!(s["text"].as_str().unwrap().contains("Spend in the last hour is $61.2000"), "{s}");
        let blocks = s["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert!(blocks.last().unwrap()["elements"][0]["text"].as_str().unwrap().contains(&a.id));
        assert!(blocks[2]["fields"].as_array().unwrap().iter().any(|f| f["text"] == "*threshold_usd*\n50.0"));
    }
}
