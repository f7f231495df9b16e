"""Fallback and broken streams as the official SDKs see them (run by tests/sdk_e2e.rs).

modelgate is configured there with gpt-4o (OpenAI kind) and claude-sonnet
(Anthropic kind, id claude-sonnet-4-5) on a primary mock, falling back to
claude-haiku and gpt-4o-mini on a second mock, without same-model retries.
The mock's `x-mock-script` header, which modelgate forwards to every
attempt, is limited with `@id` to the primary's upstream model id, so the
fallback answers normally.
"""
import sys

import anthropic
import openai

from checks import GW, check

MESSAGES = [{"role": "user", "content": "hi"}]
ANSWER = "Hello from the mock"


def openai_tests():
    client = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0)
    failing = {"x-mock-script": "status:503@gpt-4o"}

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, extra_headers=failing)
    check(raw.status_code == 200 and raw.headers["x-modelgate-model"] == "claude-haiku" and raw.headers["x-modelgate-attempts"] == "2",
          "openai (max_retries=0): gpt-4o's 503 is served by the fallback claude-haiku")
    check(raw.parse().choices[0].message.content == ANSWER, "openai: the fallback's answer, in the OpenAI shape")

    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=failing))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == ANSWER, "openai stream: a 503 before the first event falls back, and the stream is complete")

    got = ""
    try:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                extra_headers={"x-mock-script": "cut@gpt-4o"})
        for c in stream:
            if c.choices:
                got += c.choices[0].delta.content or ""
        check(False, "openai: a stream cut mid-way raises while iterating")
    except openai.APIError as e:
        check(not isinstance(e, openai.APIConnectionError),
              f"openai: a stream cut mid-way raises APIError from modelgate's error chunk, not a connection error ({type(e).__name__}: {e})")
        check(got != ANSWER, "openai: a cut stream does not yield a complete answer")


def anthropic_tests():
    client = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0)

    raw = client.messages.with_raw_response.create(model="claude-sonnet", max_tokens=50, messages=MESSAGES,
                                                   extra_headers={"x-mock-script": "status:529@claude-sonnet-4-5"})
    check(raw.headers["x-modelgate-model"] == "gpt-4o-mini" and raw.headers["x-modelgate-attempts"] == "2",
          "anthropic: claude-sonnet's 529 is served by the fallback gpt-4o-mini")
    check(raw.parse().content[0].text == ANSWER, "anthropic: the fallback's answer, in the Anthropic shape")

    cut = {"x-mock-script": "cut@claude-sonnet-4-5"}
    got = ""
    try:
        with client.messages.stream(model="claude-sonnet", max_tokens=50, messages=MESSAGES, extra_headers=cut) as s:
            for t in s.text_stream:
                got += t
        check(False, "anthropic: messages.stream cut mid-way raises")
    except anthropic.APIError as e:
        check(isinstance(e, anthropic.APIStatusError),
              f"anthropic: messages.stream cut mid-way raises APIStatusError from modelgate's error event ({type(e).__name__}: {e})")
        check(got != ANSWER, "anthropic: a cut messages.stream does not yield a complete answer")

    types = []
    try:
        for event in client.messages.create(model="claude-sonnet", max_tokens=50, messages=MESSAGES, stream=True, extra_headers=cut):
            types.append(event.type)
        check(False, "anthropic: create(stream=True) cut mid-way raises")
    except anthropic.APIError as e:
        check(isinstance(e, anthropic.APIStatusError),
              f"anthropic: create(stream=True) cut mid-way raises APIStatusError ({type(e).__name__}: {e})")
        check(types[:1] == ["message_start"] and "message_stop" not in types,
              f"anthropic: the first event arrived, message_stop never did ({types})")


if __name__ == "__main__":
    openai_tests()
    anthropic_tests()
    print("all SDK fallback checks passed")
    sys.exit(0)
