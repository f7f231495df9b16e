use super::*;

/// The plain definition of [`too_deep`]: byte by byte.
fn too_deep_plain(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

proptest::proptest! {
    #[test]
    fn the_depth_scan_agrees_with_the_plain_one(body in proptest::collection::vec(proptest::sample::select(b"[]{}\"\\ax".to_vec()), 0..64), max in 0usize..6) {
        proptest::prop_assert_eq!(too_deep(&body, max), too_deep_plain(&body, max));
    }
}

proptest::proptest! {
    #[test]
    fn a_rewrite_means_exactly_the_edit(
        keys in proptest::collection::vec(proptest::sample::select(vec!["model", "stream", "stream_options", "messages", "x", "\\u006dodel"]), 0..5),
        space in proptest::sample::select(vec!["", " ", "\n  "]),
        model in proptest::sample::select(vec![None, Some("m2")]),
        usage in proptest::bool::ANY,
    ) {
        let mut keys = keys;
        keys.dedup();
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.replace("\\u006d", "m")));
        let value = |k: &str| match k {
            "stream" => "true",
            "stream_options" => r#"{"x":1}"#,
            "messages" => r#"[{"role":"user","content":"a}b"}]"#,
            _ => r#""m1""#,
        };
        let body = format!("{space}{{{}{space}}}{space}", keys.iter().map(|k| format!("{space}\"{k}\"{space}:{space}{}", value(k))).collect::<Vec<_>>().join(","));
        let b = JsonBody::parse(Bytes::from(body.clone())).unwrap();
        let (out, added) = b.render(model, usage);
        let mut want: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(m) = model {
            want["model"] = m.into();
        }
        if usage && want["stream_options"]["include_usage"] != true {
            want["stream_options"]["include_usage"] = true.into();
            proptest::prop_assert!(added);
        }
        let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        proptest::prop_assert_eq!(got, want, "{} -> {}", body, String::from_utf8_lossy(&out));
    }
}

#[test]
fn rewrite_changes_only_model() {
    let src = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \u00e9"}],"x_unknown":{"a":[1,2.50]},"temperature":0.2}"#;
    let b = JsonBody::parse(Bytes::from_static(src)).unwrap();
    assert_eq!(b.render(None, false).0, Bytes::from_static(src), "unchanged body is forwarded byte-identical");
    assert_eq!(b.render(Some("gpt-4o"), false).0, Bytes::from_static(src), "the same model is no change");
    let out = b.render(Some("gpt-4o-mini"), false).0;
    let mut want: serde_json::Value = serde_json::from_slice(src).unwrap();
    want["model"] = "gpt-4o-mini".into();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap(), want);
    // Raw text of other fields is kept verbatim (escapes, number formats).
    assert!(std::str::from_utf8(&out).unwrap().contains(r#""x_unknown":{"a":[1,2.50]}"#));
    assert!(std::str::from_utf8(&out).unwrap().contains(r#"hi \u00e9"#));
}

#[test]
fn stream_usage_is_added_once_and_merged() {
    let b = JsonBody::parse(Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"x":1}}"#)).unwrap();
    assert!(b.stream());
    let (bytes, added) = b.render(Some("n"), true);
    assert!(added);
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["stream_options"], serde_json::json!({"x":1,"include_usage":true}));
    assert_eq!(v["model"], "n");
    let b = JsonBody::parse(Bytes::from_static(br#"{"stream":true}"#)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&b.render(Some("m"), true).0).unwrap();
    assert_eq!(v, serde_json::json!({"stream":true,"model":"m","stream_options":{"include_usage":true}}));
    let b = JsonBody::parse(Bytes::from_static(b" { } ")).unwrap();
    assert_eq!(&b.render(Some("m"), false).0[..], br#" { "model":"m"} "#);
    // Whitespace and order are kept; only the value's text changes.
    let b = JsonBody::parse(Bytes::from_static(b"{ \"stream\" : true ,\n \"model\" :\"a\" }")).unwrap();
    assert_eq!(&b.render(Some("bb"), false).0[..], b"{ \"stream\" : true ,\n \"model\" :\"bb\" }");
    let b = JsonBody::parse(Bytes::from_static(br#"{"stream":true,"stream_options":{"include_usage":true}}"#)).unwrap();
    assert!(!b.render(None, true).1);
}

#[test]
fn bad_bodies_say_what_to_fix() {
    let e = JsonBody::parse(Bytes::from_static(b"{\"model\": ")).err().unwrap();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("not valid JSON"));
    let e = JsonBody::parse(Bytes::from_static(b"[1]")).err().unwrap();
    assert!(e.message.contains("must be a JSON object"));
    let b = JsonBody::parse(Bytes::from_static(br#"{"model": 5}"#)).unwrap();
    assert!(b.model().is_err());
    let e = JsonBody::parse(Bytes::from_static(br#"{"model":"a","messages":[],"model":"b"}"#)).err().unwrap();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("duplicate top-level key `model`"), "{}", e.message);
    let b = JsonBody::parse(Bytes::from_static(br#"{"model":"gpt-4o\r\nx: y"}"#)).unwrap();
    assert!(b.model().unwrap_err().message.contains("control characters"));
    let e = JsonBody::parse(Bytes::from_static(b"{\"model\":\"gpt-4o\",\"x\":\"\xff\"}")).err().unwrap();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("not valid UTF-8"), "{}", e.message);
    // A nested duplicate is the provider's business, not a top-level ambiguity.
    assert!(JsonBody::parse(Bytes::from_static(br#"{"a":{"x":1,"x":2}}"#)).is_ok());
}

#[test]
fn depth_is_counted_outside_strings() {
    assert!(!too_deep(br#"{"a":[[["x"]]]}"#, 4));
    assert!(too_deep(br#"{"a":[[[["x"]]]]}"#, 4));
    assert!(!too_deep(br#"{"a":"[[[[[[[[[[\"[[[["}"#, 2));
    let deep = "[".repeat(100_000);
    assert!(too_deep(deep.as_bytes(), 256));
}

/// Any JSON value: scalars (strings with quotes, escapes and non-ASCII
/// text), arrays and objects nested a few levels.
fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e9f64..1e9).prop_map(serde_json::Value::from),
        "[a-z\"\\\\{}\\[\\],: é\n]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z\"\\\\:,{} ]{0,5}", inner, 0..4).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What `Cursor` reads from the array or object `raw` (`open` is its
/// bracket), item by item with `next`.
fn read<'a, T>(raw: &'a str, open: u8, next: impl Fn(&mut Cursor<'a>) -> Option<T>) -> Vec<T> {
    let mut c = Cursor::new(raw);
    let mut out = Vec::new();
    if c.enter(open) {
        while let Some(item) = next(&mut c) {
            out.push(item);
        }
    }
    out
}

fn elements(raw: &str) -> Vec<&str> {
    read(raw, b'[', Cursor::value)
}

fn members(raw: &str) -> Vec<(&str, &str)> {
    read(raw, b'{', Cursor::member)
}

proptest::proptest! {
    #[test]
    fn the_cursor_reads_what_serde_reads(items in proptest::collection::vec(json_value(), 0..5), pretty in proptest::bool::ANY) {
        let show = |v: &serde_json::Value| if pretty { serde_json::to_string_pretty(v).unwrap() } else { serde_json::to_string(v).unwrap() };
        let array = serde_json::Value::from(items.clone());
        let got: Vec<serde_json::Value> = elements(&show(&array)).into_iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        proptest::prop_assert_eq!(&got, &items);
        let object: serde_json::Map<String, serde_json::Value> = items.iter().enumerate().map(|(i, v)| (format!("k\"{i}:"), v.clone())).collect();
        let text = show(&serde_json::Value::Object(object.clone()));
        let got: serde_json::Map<String, serde_json::Value> =
            members(&text).into_iter().map(|(k, v)| (serde_json::from_str(k).unwrap(), serde_json::from_str(v).unwrap())).collect();
        proptest::prop_assert_eq!(got, object);
        // Neither an array nor an object: nothing.
        proptest::prop_assert_eq!(elements("\"[1]\"").len() + members("[1]").len() + elements(" null").len(), 0);
    }
}

proptest::proptest! {
    #[test]
    fn the_string_end_search_agrees_with_a_plain_one(text in proptest::collection::vec(proptest::sample::select(b"\"\\\\aaaaaaaaaaaa".to_vec()), 1..200), at in 0usize..100) {
        let at = at.min(text.len() - 1);
        let plain = {
            let mut i = at + 1;
            loop {
                match text.get(i) {
                    None => break None,
                    Some(b'"') => break Some(i + 1),
                    Some(b'\\') => i += 2,
                    Some(_) => i += 1,
                }
            }
        };
        proptest::prop_assert_eq!(string_end(&text, at), plain);
    }
}
