"""The response cache as the official SDKs see it (run by tests/cache.rs).

modelgate caches (ttl 600 s, temperatures up to 1 cacheable). The same
request twice: the second is a hit (`x-modelgate-cache: hit`) and the SDK
parses exactly what it parsed the first time — JSON and streamed, tool
calls included. Changing any one of temperature, max_tokens, tools, system,
one message byte, the model or the app is a miss. Every distinct request
is counted; the Rust side checks the mock saw exactly that many calls.
"""
import sys

import anthropic
import openai

from checks import GW, check

DISTINCT = 0


def fresh(what, first_headers, again_headers):
    """`first` went upstream; `again` (the same request) was a hit."""
    global DISTINCT
    DISTINCT += 1
    check(first_headers["x-modelgate-cache"] == "miss", f"{what}: first is a miss")
    check(again_headers["x-modelgate-cache"] == "hit", f"{what}: the same request again is a hit")


OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather for a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def openai_tests():
    client = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0)
    base = dict(model="gpt-4o-mini", temperature=0, max_tokens=50,
                messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}])

    def twice(what, c=client, **kw):
        args = {**base, **kw}
        a = c.chat.completions.with_raw_response.create(**args)
        b = c.chat.completions.with_raw_response.create(**args)
        fresh(what, a.headers, b.headers)
        return a, b

    a, b = twice("openai json")
    check(a.parse().model_dump() == b.parse().model_dump(), "openai json: identical answer")
    check(b.parse().choices[0].message.content == "Hello from the mock", "openai json: the text")
    check(b.headers["x-modelgate-attempts"] == "0", "openai json: a hit makes no upstream attempt")

    a, b = twice("openai tool call", tools=OPENAI_TOOLS)
    ca, cb = a.parse().choices[0].message.tool_calls[0], b.parse().choices[0].message.tool_calls[0]
    check(a.parse().model_dump() == b.parse().model_dump() and cb.function.name == "get_weather", "openai tool call: identical")
    check(cb.function.arguments == ca.function.arguments, "openai tool call: identical arguments")

    for what, kw in [("openai stream", {}), ("openai stream with tools", {"tools": OPENAI_TOOLS}),
                     ("openai stream with usage", {"stream_options": {"include_usage": True}})]:
        args = {**base, **kw, "stream": True}
        ra = client.chat.completions.with_raw_response.create(**args)
        chunks_a = [c.model_dump() for c in ra.parse()]
        rb = client.chat.completions.with_raw_response.create(**args)
        chunks_b = [c.model_dump() for c in rb.parse()]
        fresh(what, ra.headers, rb.headers)
        check(chunks_a == chunks_b and len(chunks_a) >= 3, f"{what}: the same chunks in the same order")

    for what, kw, c in [
        ("temperature", {"temperature": 0.5}, client),
        ("max_tokens", {"max_tokens": 51}, client),
        ("tools", {"tools": OPENAI_TOOLS[:1] + [{"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}]}, client),
        ("system", {"messages": [{"role": "system", "content": "Be brief!"}, {"role": "user", "content": "Say hello"}]}, client),
        ("one message byte", {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hellO"}]}, client),
        ("model", {"model": "gpt-4o"}, client),
        ("app", {}, openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0, default_headers={"x-modelgate-app": "other"})),
    ]:
        twice(f"openai, changed {what}", c=c, **kw)


def anthropic_tests():
    client = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0)
    # (This SDK version has no `temperature` parameter: sent as an extra field.)
    base = dict(model="claude-haiku", max_tokens=50, system="Be brief.", extra_body={"temperature": 0},
                messages=[{"role": "user", "content": "Say hello"}])

    def twice(what, c=client, **kw):
        args = {**base, **kw}
        a = c.messages.with_raw_response.create(**args)
        b = c.messages.with_raw_response.create(**args)
        fresh(what, a.headers, b.headers)
        return a, b

    a, b = twice("anthropic json")
    check(a.parse().model_dump() == b.parse().model_dump(), "anthropic json: identical answer")
    check(b.parse().content[0].text == "Hello from the mock", "anthropic json: the text")

    a, b = twice("anthropic tool use", tools=ANTHROPIC_TOOLS)
    check(a.parse().model_dump() == b.parse().model_dump(), "anthropic tool use: identical")
    check(b.parse().content[-1].type == "tool_use" and b.parse().content[-1].input == {"city": "Paris"}, "anthropic tool use: the call")

    for what, kw in [("anthropic stream", {}), ("anthropic stream with tools", {"tools": ANTHROPIC_TOOLS})]:
        args = {**base, **kw, "stream": True}
        ra = client.messages.with_raw_response.create(**args)
        events_a = [e.model_dump() for e in ra.parse()]
        rb = client.messages.with_raw_response.create(**args)
        events_b = [e.model_dump() for e in rb.parse()]
        fresh(what, ra.headers, rb.headers)
        check(events_a == events_b and events_a[-1]["type"] == "message_stop", f"{what}: the same events in the same order")
        with client.messages.stream(**{k: v for k, v in args.items() if k != "stream"}) as s:
            final = s.get_final_message()
        check(final.stop_reason in ("end_turn", "tool_use"), f"{what}: the helper assembles the cached stream")

    for what, kw, c in [
        ("temperature", {"extra_body": {"temperature": 0.5}}, client),
        ("max_tokens", {"max_tokens": 51}, client),
        ("tools", {"tools": ANTHROPIC_TOOLS}, client),
        ("system", {"system": "Be brief!"}, client),
        ("one message byte", {"messages": [{"role": "user", "content": "Say hellO"}]}, client),
        ("model", {"model": "gpt-4o-mini"}, client),
        ("app", {}, anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0,
                                        default_headers={"x-modelgate-app": "other"})),
    ]:
        if what == "tools":
            # (tools were cached above as "anthropic tool use": a different tool list here.)
            kw = {"tools": ANTHROPIC_TOOLS + [{"name": "other", "input_schema": {"type": "object"}}]}
        twice(f"anthropic, changed {what}", c=c, **kw)


if __name__ == "__main__":
    openai_tests()
    anthropic_tests()
    print(f"distinct requests: {DISTINCT}")
    print("all SDK cache checks passed")
    sys.exit(0)
