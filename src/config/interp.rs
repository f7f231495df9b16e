//! `${VAR}` and `${VAR:-default}` substitution on the raw file text, before
//! YAML parsing, so line numbers stay those of the file. `$$` is a literal `$`.
//! Comment lines are left alone: a `${X}` in a comment must not fail a load.

use super::ConfigError;

/// Each variable a config used, and its value.
pub type Used = Vec<(String, String)>;

/// Substitute environment variables, collecting one error per unset
/// variable. Also returns each variable used and its value, so that
/// messages about the substituted text can name `${VAR}` instead of
/// printing what may be a secret.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(String, Used), Vec<ConfigError>> {
    let mut used = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push(ConfigError::at_line(lineno + 1, "unterminated `${` (write `$$` for a literal `$`)"));
                    out.push_str(&rest[i..]);
                    rest = "";
                    break;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                match (env(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                    (Some(v), _) => {
                        out.push_str(&v);
                        used.push((name.to_string(), v));
                    }
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errors
                        .push(ConfigError::at_line(lineno + 1, format!("environment variable `{name}` is not set; set it, or write `${{{name}:-default}}`"))),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok((out, used))
    } else {
        Err(errors)
    }
}

/// `message` with every substituted value written back as `${VAR}`.
pub fn redact(message: &str, used: &[(String, String)]) -> String {
    let mut m = message.to_string();
    let mut by_len: Vec<&(String, String)> = used.iter().filter(|(_, v)| v.len() >= 3).collect();
    // Longest first, so a value that contains another is replaced whole.
    by_len.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (name, value) in by_len {
        if m.contains(value.as_str()) {
            m = m.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<ConfigError>> {
        substitute(text, env).map(|(out, _)| out)
    }

    #[test]
    fn messages_name_the_variable_not_its_value() {
        let used = vec![("KEY".to_string(), "sk-secret-123".to_string()), ("N".to_string(), "1".to_string())];
        assert_eq!(redact("`sk-secret-123` is not a URL (line 1)", &used), "`${KEY}` is not a URL (line 1)");
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "HOST" => Some("example.org".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        let out = interpolate("a: ${HOST}\nb: ${NOPE:-x}\nc: $$5 ${EMPTY:-d}\n# ${UNSET}\n", &env).unwrap();
        assert_eq!(out, "a: example.org\nb: x\nc: $5 d\n# ${UNSET}\n");
    }

    #[test]
    fn reports_each_unset_variable_with_its_line() {
        let errs = interpolate("a: 1\nb: ${ONE}\nc: ${TWO}\n", &env).unwrap_err();
        let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(2), Some(3)]);
        assert!(errs[0].message.contains("`ONE`"));
    }
}
