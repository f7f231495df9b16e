"""Virtual keys and rate limits as the official SDKs see them (run by
tests/keys.rs). modelgate runs with auth.mode: known_keys; key
`mg-sdk-key` may make 2 requests a minute (rpm: 2); every provider key is
injected by modelgate.
"""
import anthropic
import openai

from checks import GW, Counter, check

KEY = "mg-sdk-key"
MESSAGES = [{"role": "user", "content": "Say hello"}]


def main():
    sent = Counter()
    bad = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-unknown", http_client=openai.DefaultHttpxClient(event_hooks={"request": [sent]}))
    try:
        bad.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        check(False, "openai: an unknown key is refused")
    except openai.AuthenticationError as e:
        check(e.status_code == 401 and e.code == "invalid_api_key" and "known_keys" in e.message, "openai: AuthenticationError for an unknown key")
    check(sent.n == 1, f"openai: a 401 is not retried ({sent.n} sent)")

    bad_a = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-unknown")
    try:
        bad_a.messages.create(model="claude-haiku", max_tokens=50, messages=MESSAGES)
        check(False, "anthropic: an unknown key is refused")
    except anthropic.AuthenticationError as e:
        check(e.status_code == 401 and "known_keys" in str(e), "anthropic: AuthenticationError for an unknown key")

    good_a = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key=KEY)
    m = good_a.messages.create(model="claude-haiku", max_tokens=50, messages=MESSAGES)
    check(m.content[0].text != "", "anthropic: the virtual key is served")

    good = openai.OpenAI(base_url=f"{GW}/v1", api_key=KEY, max_retries=0)
    r = good.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    check(r.choices[0].message.content != "", "openai: the virtual key is served")
    try:
        good.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        check(False, "openai: the third request in a minute is rate limited")
    except openai.RateLimitError as e:
        check(e.status_code == 429 and e.code == "rate_limit_exceeded" and e.type == "rate_limit_error", "openai: RateLimitError for rpm")
        retry = int(e.response.headers["retry-after"])
        check(1 <= retry <= 60, f"openai: Retry-After {retry}")
        check(e.response.headers["x-should-retry"] == "true", "openai: the SDK's own backoff may retry it")
    print("all SDK key checks passed")


main()
