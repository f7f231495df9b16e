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

/// The breakdowns of `GET /admin/usage`, in the order they are shown.
const BREAKDOWNS: [(&str, &str); 8] = [
    ("by_provider", "PROVIDER"),
    ("by_model", "MODEL"),
    ("by_app", "APP"),
    ("by_task", "TASK"),
    ("by_route", "ROUTE"),
    ("by_arm", "ARM"),
    ("by_user", "USER"),
    ("by_key", "KEY"),
];

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `modelgate cost --csv`: one row per breakdown value. With one breakdown
/// (`--by`) its name heads the first column; with all of them a `by`
/// column says which breakdown a row belongs to.
pub fn render_cost_csv(u: &Value) -> String {
    let present: Vec<(&str, &str)> = BREAKDOWNS.iter().copied().filter(|(k, _)| u[*k].is_object()).collect();
    let single = present.len() == 1;
    let cols = "requests,input_tokens,output_tokens,cost_usd,requested_cost_usd,savings_usd,savings_pct";
    let mut out = match present.first() {
        Some((k, _)) if single => format!("{},{cols}\n", &k[3..]),
        _ => format!("by,name,{cols}\n"),
    };
    for (key, _) in present {
        let Some(m) = u[key].as_object() else { continue };
        for (name, c) in m {
            let nums: Vec<String> = ["requests", "input_tokens", "output_tokens", "cost_usd", "requested_cost_usd", "savings_usd", "savings_pct"]
                .iter()
                .map(|f| c[*f].to_string())
                .collect();
            let lead = if single { csv_field(name) } else { format!("{},{}", &key[3..], csv_field(name)) };
            out += &format!("{lead},{}\n", nums.join(","));
        }
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
    let hits = t["cache_hits"].as_u64().unwrap_or(0);
    if hits > 0 {
        out += &format!("response cache: {hits} requests served from the cache, saving {} upstream\n", usd(&t["cache_savings_usd"]));
    }
    if u["spend_spike"] == true {
        out += "warning: spend spike — the last hour is well above the average hour\n";
    }
    for (key, title) in BREAKDOWNS {
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
                .into_iter()
                .chain((hits > 0).then(|| [c["cache_hits"].as_u64().unwrap_or(0).to_string(), usd(&c["cache_savings_usd"])]).into_iter().flatten())
                .collect()
            })
            .collect();
        out += "\n";
        let mut head = vec![title, "REQUESTS", "INPUT TOK", "OUTPUT TOK", "COST", "SAVINGS", "SAVINGS %"];
        if hits > 0 {
            head.extend(["CACHE HITS", "CACHE SAVED"]);
        }
        out += &table(&head, &rows);
    }
    out
}
