"""Routing decisions as the official SDKs see them (run by tests/sdk_e2e.rs).

modelgate is configured there with the seed's complexity tiers on gpt-4o*
(gpt-4o-mini / mid / gpt-4o), a local-only route for app `hr` whose only
local model (llama, 4096-token context) is on an Ollama-style provider, and
routing.client_models: [gpt-4o].
"""
import sys

import anthropic
import openai

from checks import GW, check


def user(text):
    return [{"role": "user", "content": text}]


def openai_tests():
    client = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("add task to call john"))
    check(raw.headers["x-modelgate-model"] == "gpt-4o-mini" and raw.headers["x-modelgate-complexity"] == "2", "openai: simple request → simple tier")
    check(raw.parse().choices[0].message.content == "Hello from the mock", "openai: answer parsed")
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("show urgent Avenue tasks due this week"))
    check(raw.headers["x-modelgate-model"] == "mid", "openai: search request → middle tier")
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=user("analyze my productivity patterns"), stream=True))
    check(chunks[0].model == "gpt-4o", "openai stream: reasoning request → top tier")

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=user("add task to call john"), extra_headers={"x-modelgate-tier": "max"})
    check(raw.headers["x-modelgate-model"] == "gpt-4o", "openai: x-modelgate-tier: max escalates")
    try:
        client.chat.completions.create(model="gpt-4o", messages=user("hi"), extra_headers={"x-modelgate-model": "mid"})
        check(False, "openai: a model the config does not allow is refused")
    except openai.PermissionDeniedError as e:
        check(e.status_code == 403 and "routing.client_models" in e.message, "openai: disallowed x-modelgate-model → PermissionDeniedError")

    hr = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0, default_headers={"x-modelgate-app": "hr"})
    raw = hr.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("summarise my leave policy"))
    check(raw.headers["x-modelgate-model"] == "llama", "openai: local-only app served by the local model")
    try:
        hr.chat.completions.create(model="gpt-4o", messages=user("lorem ipsum " * 3000), max_tokens=1000)
        check(False, "openai: local-only request too long for the local model is refused")
    except openai.BadRequestError as e:
        check(e.code == "context_length_exceeded" and "not local" in e.message, "openai: local-only refusal says why (BadRequestError)")


def anthropic_tests():
    client = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0)
    msg = client.messages.create(model="claude-haiku", max_tokens=50, messages=user("hi"))
    check(msg.content[0].text == "Hello from the mock", "anthropic: unrouted request served")
    hr = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0, default_headers={"x-modelgate-mode": "local-only"})
    try:
        hr.messages.create(model="claude-haiku", max_tokens=50, messages=user("hi"))
        check(False, "anthropic: local-only (request header) with no local Anthropic model is refused")
    except anthropic.PermissionDeniedError as e:
        check(e.status_code == 403 and "local-only" in e.message, "anthropic: local-only refusal → PermissionDeniedError")


if __name__ == "__main__":
    openai_tests()
    anthropic_tests()
    print("all SDK routing checks passed")
    sys.exit(0)
