//! `modelgate status` and `modelgate cost`: readable tables from the admin
//! API of a running modelgate.

use serde_json::Value;

/// GET `url` and parse its JSON body.
pub fn fetch(url: &str) -> Result<Value, String> {
    let mut resp = ureq::get(url)
        .config()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .call()
        .map_err(|e| format!("cannot reach modelgate's admin API at {url}: {e} (is modelgate running? pass --admin http://HOST:PORT or -c CONFIG)"))?;
    let status = resp.status();
    let text = resp.body_mut().read_to_string().map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url} did not answer JSON: {e}"))
}

fn usd(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("${x:.2}"),
        Some(x) => format!("${x:.4}"),
        None => "-".into(),
    }
}

/// Left-aligned first column, right-aligned numbers.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| if i == 0 { format!("{c:<0$}", w[i]) } else { format!("{c:>0$}", w[i]) }).collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(head.iter().map(|s| s.to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

pub fn render_status(b: &Value) -> String {
    let rows: Vec<Vec<String>> = b["budgets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            vec![
                x["name"].as_str().unwrap_or("").to_string(),
                x["scope"].as_str().unwrap_or("").to_string(),
                x["window"].as_str().unwrap_or("").to_string(),
                usd(&x["spent_usd"]),
                usd(&x["reserved_usd"]),
                usd(&x["limit_usd"]),
                usd(&x["remaining_usd"]),
                x["state"].as_str().unwrap_or("").replace('_', " "),
                x["on_exceed"].as_str().unwrap_or("").to_string(),
                x["resets_at"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let mut out = String::new();
    if rows.is_empty() {
        out += "no budgets configured (add `budgets:` to the config)\n";
    } else {
        out += &table(&["BUDGET", "SCOPE", "WINDOW", "SPENT", "RESERVED", "LIMIT", "REMAINING", "STATE", "ON EXCEED", "RESETS AT"], &rows);
        // What a state means, in words, for every budget that is not plainly ok.
        let notes: Vec<String> = b["budgets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["state"] != "ok")
            .filter_map(|x| Some(format!("  {}: {}\n", x["name"].as_str()?, x["detail"].as_str()?)))
            .collect();
        if !notes.is_empty() {
            out += "\n";
            out += &notes.concat();
        }
    }
    if b["store"]["kind"] == "redis" {
        let up = b["store"]["available"].as_bool().unwrap_or(false);
        out += &format!("\nbudget store: redis ({})\n", if up { "available" } else { "UNAVAILABLE: figures are this process's local view" });
    }
    out
}

pub fn render_cost(u: &Value) -> String {
    let mut out = format!("usage {} ({} to {})\n", u["window"].as_str().unwrap_or(""), u["from"].as_str().unwrap_or(""), u["to"].as_str().unwrap_or(""));
    let t = &u["total"];
    out += &format!(
        "total: {} requests, {} input + {} output tokens, cost {}, at the requested models {}, savings {} ({}%)\n",
        t["requests"],
        t["input_tokens"],
        t["output_tokens"],
        usd(&t["cost_usd"]),
        usd(&t["requested_cost_usd"]),
        usd(&t["savings_usd"]),
        t["savings_pct"]
    );
    if u["spend_spike"] == true {
        out += "warning: spend spike — the last hour is well above the average hour\n";
    }
    for (key, title) in [("by_provider", "PROVIDER"), ("by_model", "MODEL"), ("by_app", "APP"), ("by_route", "ROUTE")] {
        let Some(m) = u[key].as_object().filter(|m| !m.is_empty()) else { continue };
        let rows: Vec<Vec<String>> = m
            .iter()
            .map(|(k, c)| {
                // `other` is the ledger's key for models the config does not name.
                let name = if key == "by_model" && k == "other" { "(unconfigured models)".to_string() } else { k.clone() };
                vec![
                    name,
                    c["requests"].to_string(),
                    c["input_tokens"].to_string(),
                    c["output_tokens"].to_string(),
                    usd(&c["cost_usd"]),
                    usd(&c["savings_usd"]),
                    format!("{}%", c["savings_pct"]),
                ]
            })
            .collect();
        out += "\n";
        out += &table(&[title, "REQUESTS", "INPUT TOK", "OUTPUT TOK", "COST", "SAVINGS", "SAVINGS %"], &rows);
    }
    // Split routes' arms (cost per request is what an A/B split compares).
    let arms: Vec<Vec<String>> = u["by_arm"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(route, m)| m.as_object().into_iter().flatten().map(move |(arm, c)| (route, arm, c)))
        .map(|(route, arm, c)| {
            let n = c["requests"].as_u64().unwrap_or(0);
            let per = c["cost_usd"].as_f64().filter(|_| n > 0).map_or_else(|| "-".to_string(), |v| format!("${:.6}", v / n as f64));
            vec![format!("{route} / {arm}"), n.to_string(), usd(&c["cost_usd"]), per, format!("{}%", c["savings_pct"])]
        })
        .collect();
    if !arms.is_empty() {
        out += "\n";
        out += &table(&["ROUTE / ARM", "REQUESTS", "COST", "COST/REQUEST", "SAVINGS %"], &arms);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cost_lists_split_arms() {
        let u = serde_json::json!({"window": "month", "from": "a", "to": "b",
            "total": {"requests": 3, "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.003, "requested_cost_usd": 0.01, "savings_usd": 0.007, "savings_pct": 70.0},
            "by_arm": {"rollout": {"candidate": {"requests": 2, "cost_usd": 0.001, "savings_pct": 90.0}, "control": {"requests": 1, "cost_usd": 0.002, "savings_pct": 50.0}}}});
        let text = super::render_cost(&u);
        assert!(text.contains("ROUTE / ARM") && text.contains("rollout / candidate") && text.contains("$0.000500"), "{text}");
    }
}
