//! Route validation: ranges, unworkable plans, missing capabilities.

use super::*;

#[test]
fn ranges_parse_as_written() {
    let p = |s: &str| parse_range(&RawRange::Text(s.into()), 10);
    assert_eq!(p("<=3"), Ok(Range { min: 0, max: 3 }));
    assert_eq!(p("<3"), Ok(Range { min: 0, max: 2 }));
    assert_eq!(p(">=8"), Ok(Range { min: 8, max: 10 }));
    assert_eq!(p(">7"), Ok(Range { min: 8, max: 10 }));
    assert_eq!(p("4-7"), Ok(Range { min: 4, max: 7 }));
    assert_eq!(p(" 5 "), Ok(Range { min: 5, max: 5 }));
    assert_eq!(parse_range(&RawRange::Exact(9), 10), Ok(Range { min: 9, max: 9 }));
    assert!(p("7-4").unwrap_err().contains("empty"));
    assert!(p("<0").is_err());
    assert!(p("11-12").unwrap_err().contains("above"));
    assert!(p("lots").unwrap_err().contains("not a range"));
    assert_eq!(parse_range(&RawRange::Text(">1000".into()), u64::MAX), Ok(Range { min: 1001, max: u64::MAX }));
}

#[test]
fn plans_that_cannot_work_are_config_errors() {
    let conf = |routes: &str| {
        let text = format!(
            "providers:\n  openai: {{ kind: openai, base_url: \"http://127.0.0.1:1/v1\" }}\nmodels:\n  a: {{ provider: openai, input_usd_per_mtok: 1, output_usd_per_mtok: 1 }}\n  b: {{ provider: openai, input_usd_per_mtok: 1, output_usd_per_mtok: 1 }}\nroutes:\n{routes}"
        );
        let errs = crate::config::load_str(&text, &|_| None).err().unwrap_or_default();
        errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("\n")
    };
    let e = conf("  - { name: r, select: { candidates: [a, b, a] } }");
    assert!(e.contains("routes[0].select.candidates[2]: model `a` is listed twice"), "{e}");
    let e = conf("  - { name: r, target: a, fallbacks: [b, b] }");
    assert!(e.contains("routes[0].fallbacks[1]: model `b` is listed twice"), "{e}");
    let e = conf("  - { name: \"café\", target: a }");
    assert!(e.contains("routes[0].name: `café` is sent in response headers"), "{e}");
    let e = conf("  - { name: r, split: [ { model: a, weight: 1, name: \"arm\\nX\" } ] }");
    assert!(e.contains("routes[0].split[0].name"), "{e}");
    let e = conf("  - { name: r, target: a, mode: local-only, fallbacks: [b] }");
    assert!(e.contains("routes[0].mode: this route is local-only but none of its models"), "{e}");
    assert_eq!(conf("  - { name: r, target: a, fallbacks: [b] }"), "");
}

#[test]
fn a_route_whose_models_lack_what_its_requests_need_is_an_error() {
    let text = |caps: &str| {
        format!(
            "providers:\n  openai: {{ kind: openai, base_url: \"http://127.0.0.1:1/v1\" }}\nmodels:\n  a: {{ provider: openai, input_usd_per_mtok: 1, output_usd_per_mtok: 1, capabilities: [{caps}] }}\nroutes:\n  - {{ name: r, match: {{ tools: true }}, target: a }}\n"
        )
    };
    let errs = crate::config::load_str(&text("streaming"), &|_| None).err().unwrap_or_default();
    assert!(errs.iter().any(|e| e.path == "routes[0].match" && e.message.contains("`tools` capability")), "{errs:?}");
    assert!(crate::config::load_str(&text("tools, streaming"), &|_| None).is_ok());
}
