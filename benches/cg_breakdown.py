#!/usr/bin/env python3
"""Where modelgate's instructions per request go, from one callgrind dump.

    python3 benches/cg_breakdown.py CALLGRIND_OUT REQUESTS [BARE_PER_REQUEST]

Reads `callgrind_annotate --inclusive=yes` (every function's cost with what
it calls) and splits the request into parts that do not overlap: each part
is the inclusive cost of the functions listed for it, minus the parts listed
inside it. "Pingora server" is everything outside modelgate's two phases
(request_filter, logging): reading the request, connection handling, the
task. Figures are per request (the dump's total divided by REQUESTS).
"""
import re
import subprocess
import sys

# (part, functions whose inclusive costs add up to it, parts nested inside
# it that are taken out of it). A function is its full demangled name; a
# tuple is alternatives, the first one the dump has (the compiler inlines
# some closures into their callers in one build and not in another).
SEND = ("modelgate::upstream::send::{{closure}}", "modelgate::upstream::send::{{closure}}::{{closure}}")
PARTS = [
    ("translation: request", ["modelgate::translate::request"], []),
    ("translation: answer", ["modelgate::translate::answer", "modelgate::translate::Translator::feed_data",
                             "modelgate::translate::Translator::finish"], []),
    ("answer check + usage (serde)", ["modelgate::upstream::retry::is_answer"], []),
    ("stream events: split, usage tap (serde)", ["modelgate::dialect::sse::StreamTap::feed", "modelgate::dialect::sse::StreamTap::finish"], []),
    ("upstream call (Pingora client: pool, write, read)", [SEND, "modelgate::upstream::retry::read_body_of::{{closure}}",
                                                          "<modelgate::upstream::Exchange as modelgate::relay::source::Source>::finish::{{closure}}",
                                                          "modelgate::upstream::Exchange::chunk::{{closure}}"], []),
    ("request body JSON parse", ["modelgate::body::JsonBody::parse"], []),
    ("classification (complexity, prompt scan)", ["modelgate::policy::classify::classify"], []),
    ("routing decision", ["modelgate::policy::decide"], []),
    ("budgets: admit", ["modelgate::budget::admit::<impl modelgate::budget::Inner>::admit_local",
                        "<modelgate::budget::charge::RequestEstimate as modelgate::budget::charge::Estimate>::bound"], []),
    ("budgets: settle + ledger line", ["modelgate::budget::hold::<impl modelgate::budget::Budgets>::settle::{{closure}}"], []),
    ("settlement: usage metrics, ledger entry", ["modelgate::relay::settle::settle::{{closure}}"], ["budgets: settle + ledger line"]),
    ("upstream request: headers, key, body", ["modelgate::upstream::request::prepare"], ["translation: request"]),
    ("response head (x-modelgate-*, Pingora write)", ["modelgate::relay::Relay::head", "pingora_proxy::Session::write_response_header::{{closure}}",
                                                     "pingora_proxy::Session::write_response_body::{{closure}}"], []),
    ("access-log line + request metrics", ["modelgate::proxy::ctx::Ctx::account"], []),
]
# The parts above nest inside these; "modelgate glue" is what is left.
PHASES = ["modelgate::proxy::gateway::Gateway::filter::{{closure}}",
          "<modelgate::proxy::gateway::Gateway as pingora_proxy::proxy_trait::ProxyHttp>::logging::{{closure}}"]


def inclusive(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    total, costs = 0, {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) .*PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(?:\?\?\?:)?(.*) \[", line)
        if m:
            costs[m.group(2)] = costs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return total, costs


def main():
    path, requests = sys.argv[1], int(sys.argv[2])
    bare = int(sys.argv[3]) if len(sys.argv) > 3 else None
    total, costs = inclusive(path)

    def cost(functions):
        total = 0
        for f in functions:
            found = [costs[a] for a in (f if isinstance(f, tuple) else (f,)) if a in costs]
            total += found[0] if found else 0
        return total

    parts = {}
    for part, fragments, inner in PARTS:
        parts[part] = cost(fragments) - sum(parts[i] for i in inner)
    rows = list(parts.items())
    phases = cost(PHASES)
    listed = sum(c for _, c in rows)
    rows.append(("modelgate glue (context, headers, futures, plan)", phases - listed))
    rows.append(("Pingora server (read request, connection, task)", total - phases))
    print(f"{'part':<52} {'instr/request':>14} {'share':>7}")
    for part, c in rows:
        print(f"{part:<52} {c / requests:>14,.0f} {100 * c / total:>6.1f}%")
    print(f"{'total':<52} {total / requests:>14,.0f}")
    if bare:
        print(f"{'bare Pingora passthrough, same requests':<52} {bare:>14,}")


if __name__ == "__main__":
    main()
