//! Ledger round trips and torn writes.

use std::fs::OpenOptions;
use std::io::Write;

use super::*;

#[test]
fn entries_round_trip_and_torn_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::new(dir.path(), false);
    let e = Entry {
        ts: "2026-11-25T10:00:00.5Z".into(),
        app: "a".into(),
        route: "r".into(),
        provider: "p".into(),
        model: "m".into(),
        input: 10,
        output: 5,
        cost_usd: 0.25,
        requested_cost_usd: 0.5,
        ..Default::default()
    };
    let old = Entry { ts: "2026-10-31T23:59:59Z".into(), ..e.clone() };
    // Only for an entry whose `ts` does not parse (none here).
    let now: Timestamp = "2026-09-15T00:00:00Z".parse().unwrap();
    {
        let mut g = l.lock();
        l.append(&mut g, &old, now).unwrap();
        l.append(&mut g, &e, now).unwrap();
    }
    l.sync();
    assert!(dir.path().join("ledger-2026-10.jsonl").exists());
    let mut f = OpenOptions::new().append(true).open(dir.path().join("ledger-2026-11.jsonl")).unwrap();
    f.write_all(b"{\"ts\":\"2026-11-25T11:").unwrap();
    // A new process appends after the torn line, not onto it.
    let l2 = Ledger::new(dir.path(), true);
    let later = Entry { ts: "2026-11-25T12:00:00Z".into(), ..e.clone() };
    l2.append(&mut l2.lock(), &later, now).unwrap();
    let mut seen = Vec::new();
    let scan = l.scan_since("2026-11-01T00:00:00Z".parse::<Timestamp>().unwrap().as_second(), |e, _| seen.push(e.clone()));
    assert_eq!(seen, vec![e, later]);
    assert_eq!(scan.problems, vec![], "the torn end was cut off, not left as damage");
    let mut all = 0;
    l.read_since(0, |_, _| all += 1);
    assert_eq!(all, 3);
}

#[test]
fn the_arm_and_request_id_read_back_and_a_bad_id_is_not_damage() {
    let e = Entry {
        ts: "2026-11-25T10:00:00.5Z".into(),
        app: "a".into(),
        route: "r".into(),
        provider: "p".into(),
        model: "m".into(),
        arm: Some("candidate".into()),
        request_id: Some(crate::request_id::RequestId(0xab)),
        ..Default::default()
    };
    let line = serde_json::to_string(&e).unwrap();
    assert!(line.contains(r#""arm":"candidate","request_id":"00000000000000ab""#), "{line}");
    assert_eq!(entry::parse_line(line.as_bytes()).unwrap().unwrap().0, e);
    let odd = line.replace("00000000000000ab", "not-an-id");
    let (read, _) = entry::parse_line(odd.as_bytes()).unwrap().unwrap();
    assert_eq!((read.request_id, read.arm.as_deref()), (None, Some("candidate")));
}

#[test]
fn the_line_is_what_serde_json_writes() {
    let own = |e: &Entry| {
        let mut out = Vec::new();
        e.write_json(&mut out);
        String::from_utf8(out).unwrap()
    };
    let bare = Entry::default();
    assert_eq!(own(&bare), serde_json::to_string(&bare).unwrap());
    let full = Entry {
        ts: "2026-12-02T04:40:00.123Z".into(),
        app: "bill\"ing\\\u{7}é".into(),
        task: Some("extraction".into()),
        route: "mini".into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        requested: Some("gpt-4o".into()),
        input: 1200,
        cached: 200,
        cache_write: 7,
        output: 300,
        cost_usd: 0.000123456789,
        requested_cost_usd: 1e-20,
        estimated: true,
        downgraded_by: Some("daily".into()),
        arm: Some("b".into()),
        cache_hit: true,
        cache_saved_usd: 0.25,
        request_id: crate::request_id::RequestId::parse("00ff00ff00ff00ff"),
        check_failed: Some("schema_mismatch".into()),
        escalated_to: Some("gpt-4o".into()),
        escalated: Some("gpt-4o-mini→gpt-4o:schema_mismatch".into()),
        key: Some("alice".into()),
        user: Some("u\n1".into()),
    };
    let line = own(&full);
    assert_eq!(line, serde_json::to_string(&full).unwrap());
    assert_eq!(serde_json::from_str::<Entry>(&line).unwrap(), full);
}
