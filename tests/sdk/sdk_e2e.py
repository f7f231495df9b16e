"""The official openai and anthropic SDKs, unchanged, pointed at modelgate.

Run by tests/sdk_e2e.rs with MG_GATEWAY and MG_ADMIN set; modelgate is
configured there to route gpt-4o* -> gpt-4o-mini and claude-sonnet* ->
claude-haiku (claude-haiku-4-5-20251001) against a mock provider that reports
1200 input tokens (200 of them cached) and 300 output tokens.
"""
import sys
import urllib.request

import anthropic
import openai

from checks import ADMIN, GW, check
MESSAGES = [{"role": "user", "content": "Say hello"}]


def openai_tests():
    client = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0)

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    check(raw.headers["x-modelgate-model"] == "gpt-4o-mini", "openai: model rewritten (header)")
    check(raw.headers["x-modelgate-route"] == "mini", "openai: route header")
    check(float(raw.headers["x-modelgate-cost-usd"]) > 0, "openai: cost header")
    done = raw.parse()
    check(done.model == "gpt-4o-mini", "openai: upstream answered for the routed model")
    check(done.choices[0].message.content == "Hello from the mock", "openai: content")
    check(done.usage.prompt_tokens == 1200 and done.usage.completion_tokens == 300, "openai: usage reported")

    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == "Hello from the mock", "openai stream: content")
    check(all(c.usage is None for c in chunks), "openai stream: no usage chunk the client did not ask for")
    check(chunks[0].model == "gpt-4o-mini", "openai stream: routed model")

    chunks = list(client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    check(chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1200, "openai stream: usage when asked")

    resp = client.responses.create(model="gpt-4o", input="Say hello")
    check(resp.output_text == "Hello from the mock" and resp.usage.input_tokens == 1200, "openai responses API")

    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x" * (3 << 20)}])
        check(False, "openai: oversized body rejected")
    except openai.APIStatusError as e:
        check(e.status_code == 413 and "max_body_bytes" in e.message, "openai: 413 with a clear message")

    try:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                extra_headers={"x-mock-script": "cut"})
        for _ in stream:
            pass
        check(False, "openai: a cut stream raises")
    except openai.APIError as e:
        check("broke off" in str(e), "openai: a cut stream raises an APIError")


def anthropic_tests():
    client = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0)

    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES)
    check(raw.headers["x-modelgate-model"] == "claude-haiku", "anthropic: model rewritten (header)")
    msg = raw.parse()
    check(msg.model == "claude-haiku-4-5-20251001", "anthropic: upstream got the routed model id")
    check(msg.content[0].text == "Hello from the mock", "anthropic: content")
    check(msg.usage.input_tokens == 1000 and msg.usage.cache_read_input_tokens == 200, "anthropic: usage reported")

    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text == "Hello from the mock", "anthropic stream: content")
    check(final.usage.output_tokens == 300 and final.model == "claude-haiku-4-5-20251001", "anthropic stream: usage and model")

    try:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10,
                               messages=[{"role": "user", "content": "x" * (3 << 20)}])
        check(False, "anthropic: oversized body rejected")
    except anthropic.APIStatusError as e:
        check(e.status_code == 413 and e.body["error"]["type"] == "request_too_large", "anthropic: 413 in its dialect")

    try:
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES,
                                    extra_headers={"x-mock-script": "cut"}) as s:
            "".join(s.text_stream)
        check(False, "anthropic: a cut stream raises")
    except anthropic.APIError as e:
        check("broke off" in str(e), "anthropic: a cut stream raises an APIError")


def metrics_tests():
    text = urllib.request.urlopen(f"{ADMIN}/metrics").read().decode()
    lines = [l for l in text.splitlines() if l.startswith("modelgate_requests_total{")]
    check(any('dialect="anthropic"' in l and 'model="claude-haiku"' in l and 'status="200"' in l for l in lines),
          "metrics: anthropic requests counted")
    check(any('model="gpt-4o-mini"' in l and 'route="mini"' in l for l in lines), "metrics: openai requests counted")
    check("modelgate_cost_usd_total{" in text and "modelgate_overhead_seconds_bucket" in text, "metrics: cost and overhead")


if __name__ == "__main__":
    openai_tests()
    anthropic_tests()
    metrics_tests()
    print("all SDK checks passed")
    sys.exit(0)
