//! A provider's answer bytes (whole JSON, or SSE split anywhere) read for
//! the answer checks, then judged by every check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::config::{Check, Escalation};
use modelgate::escalate::{answer, judge, Expect};
use modelgate::translate::Wire;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else { return };
    let wire = [Wire::Chat, Wire::Responses, Wire::Messages, Wire::Gemini][usize::from(knobs & 3)];
    let json_tool = knobs & 4 == 4;
    let said = match knobs & 8 == 8 {
        true => answer::stream(wire, rest, json_tool),
        false => match answer::whole(wire, rest, json_tool) {
            Some(s) => s,
            None => return,
        },
    };
    let esc = Escalation { on: Check::ALL.to_vec(), to: vec![], max: 1, min_avg_logprob: Some(-0.5), refusal_patterns: None, streams: true };
    let expect = Expect { json: knobs & 16 == 16, schema: None, logprobs: knobs & 32 == 32 };
    let _ = judge(&esc, &expect, &said);
});
