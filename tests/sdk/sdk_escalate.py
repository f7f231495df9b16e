"""Answer checks that escalate, as the official SDKs see them (run by
tests/escalate.rs).

The `gpt-4o*` tiers route checks JSON, the request's schema, refusals and
truncation, escalating to gpt-4o and buffering streams; the `claude*` route
escalates claude-haiku to claude-sonnet. The mock is told per model what to
answer (`x-mock-answer-MODEL`). The SDK parses the stronger model's answer,
and `x-modelgate-escalated` says what happened. The seed-003 "try with
advanced AI" flow re-sends a conversation with model gpt-4o.
"""
import json

import anthropic
import openai
from pydantic import BaseModel

from checks import GW, check


class City(BaseModel):
    city: str


SCHEMA = {"type": "json_schema", "json_schema": {"name": "City", "strict": True, "schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}}
GOOD = {"x-mock-answer-gpt-4o": 'text:{"city": "Paris"}'}


def openai_tests():
    client = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0)
    msgs = [{"role": "user", "content": "add the city of the meeting"}]

    # A schema-failing answer from the first model: the second model's.
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=msgs, response_format=SCHEMA,
        extra_headers={"x-mock-answer-gpt-4o-mini": 'text:{"city": 5}', **GOOD})
    r = raw.parse()
    check(json.loads(r.choices[0].message.content) == {"city": "Paris"}, "schema: the valid answer")
    check(raw.headers["x-modelgate-escalated"] == "gpt-4o-mini→gpt-4o:schema_mismatch", "schema: the header says why")
    check(raw.headers["x-modelgate-model"] == "gpt-4o", "schema: gpt-4o served")

    # The SDK's structured-output helper parses it into the model class.
    parsed = client.chat.completions.parse(
        model="gpt-4o", messages=[{"role": "user", "content": "add the city of the party"}], response_format=City,
        extra_headers={"x-mock-answer-gpt-4o-mini": "text:not json at all", **GOOD})
    check(parsed.choices[0].message.parsed == City(city="Paris"), "parse(): invalid JSON escalated, parsed into City")

    # A refusal and a truncated answer escalate the same way.
    for kind, reason in [("refusal", "refusal"), ("truncated:{\"city\": \"Par", "truncated")]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"add a {reason} city"}], response_format=SCHEMA,
            extra_headers={"x-mock-answer-gpt-4o-mini": kind, **GOOD})
        r = raw.parse()
        check(r.choices[0].message.refusal is None and r.choices[0].finish_reason == "stop", f"{reason}: a whole answer")
        check(raw.headers["x-modelgate-escalated"] == f"gpt-4o-mini→gpt-4o:{reason}", f"{reason}: escalated")

    # A stream (the route buffers streams to check them).
    text = ""
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "add a streamed city"}], stream=True,
            extra_headers={"x-mock-answer-gpt-4o-mini": "refusal", "x-mock-answer-gpt-4o": "text:Paris it is"}) as resp:
        check(resp.headers["x-modelgate-escalated"] == "gpt-4o-mini→gpt-4o:refusal", "stream: escalated")
        for chunk in resp.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
    check(text == "Paris it is", f"stream: the stronger model's text ({text!r})")

    # Seed 003: "try with advanced AI" re-sends the conversation with gpt-4o.
    convo = [{"role": "user", "content": "add task to call john"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=convo)
    check(first.headers["x-modelgate-model"] == "gpt-4o-mini", "seed 003: the simple tier first")
    again = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=convo)
    check(again.headers["x-modelgate-model"] == "gpt-4o", "seed 003: the retry reaches gpt-4o")


def anthropic_tests():
    client = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-haiku", max_tokens=100, messages=[{"role": "user", "content": "Say hello"}],
        extra_headers={"x-mock-answer-claude-haiku-4-5-20251001": "refusal"})
    m = raw.parse()
    check(m.stop_reason == "end_turn" and m.content[0].text == "Hello from the mock", "anthropic: the stronger model's answer")
    check(raw.headers["x-modelgate-escalated"] == "claude-haiku→claude-sonnet:refusal", "anthropic: escalated")
    raw = client.messages.with_raw_response.create(
        model="claude-haiku", max_tokens=5, messages=[{"role": "user", "content": "Say hello again"}],
        extra_headers={"x-mock-answer-claude-haiku-4-5-20251001": "truncated:", "x-mock-answer-claude-sonnet-4-5": "refusal"})
    m = raw.parse()
    check(m.stop_reason == "refusal", "anthropic: nothing passed: the last answer as it was")
    check(raw.headers["x-modelgate-check-failed"] == "refusal", "anthropic: marked")


openai_tests()
anthropic_tests()
print("all escalation checks passed")
