"""Budgets as the official SDKs see them (run by tests/sdk_e2e.rs).

modelgate is configured there with request-count budgets, so the outcome is
exact whatever the mock reports: app `trial` may make 2 requests a day
(reject), app `trial-a` 1 (reject), and app `frugal` gets gpt-4o once a day,
then gpt-4o-mini (downgrade).
"""
import sys

import anthropic
import openai

from checks import GW, Counter, check
MESSAGES = [{"role": "user", "content": "Say hello"}]


def openai_tests():
    sent = Counter()
    # Default retries (2): the 429 must not be retried.
    client = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", default_headers={"x-modelgate-app": "trial"},
                           http_client=openai.DefaultHttpxClient(event_hooks={"request": [sent]}))
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    try:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        check(False, "openai: the request over the budget is refused")
    except openai.RateLimitError as e:
        check(e.status_code == 429 and "budget `trial-app`" in e.message and "resets at" in e.message, "openai: RateLimitError names the budget and its reset")
        check(e.code == "budget_exceeded" and e.type == "insufficient_quota", "openai: error code and type")
        check(int(e.response.headers["retry-after"]) > 0, "openai: Retry-After")
    check(sent.n == 3, f"openai: the SDK did not retry a budget refusal ({sent.n} requests sent)")

    frugal = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0, default_headers={"x-modelgate-app": "frugal"})
    raw = frugal.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    check(raw.headers["x-modelgate-model"] == "gpt-4o" and "x-modelgate-downgraded-by" not in raw.headers, "openai: within budget, served as asked")
    raw = frugal.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True)
    check(raw.headers["x-modelgate-model"] == "gpt-4o-mini", "openai stream: over budget, downgraded")
    check(raw.headers["x-modelgate-downgraded-by"] == "frugal-gpt-4o", "openai stream: header names the budget")
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    check(text == "Hello from the mock", "openai stream: the downgraded answer streams normally")


def anthropic_tests():
    sent = Counter()
    client = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", default_headers={"x-modelgate-app": "trial-a"},
                                 http_client=anthropic.DefaultHttpxClient(event_hooks={"request": [sent]}))
    msg = client.messages.create(model="claude-haiku", max_tokens=50, messages=MESSAGES)
    check(msg.content[0].text == "Hello from the mock", "anthropic: within budget")
    try:
        with client.messages.stream(model="claude-haiku", max_tokens=50, messages=MESSAGES) as s:
            s.get_final_message()
        check(False, "anthropic: the request over the budget is refused")
    except anthropic.RateLimitError as e:
        check(e.status_code == 429 and "budget `trial-a-app`" in e.message, "anthropic: RateLimitError names the budget")
        check(e.body["error"]["type"] == "rate_limit_error", "anthropic: error type")
    check(sent.n == 2, f"anthropic: the SDK did not retry a budget refusal ({sent.n} requests sent)")


if __name__ == "__main__":
    openai_tests()
    anthropic_tests()
    print("all SDK budget checks passed")
    sys.exit(0)
