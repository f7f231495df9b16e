"""The official SDKs in transparent mode (run by tests/sdk_e2e.rs).

No base URL is set: the clients call https://api.openai.com and
https://api.anthropic.com as they do in production. Only the environment
differs: HTTPS_PROXY points at modelgate's forward proxy and SSL_CERT_FILE
at its CA. modelgate intercepts, routes (gpt-4o → gpt-4o-mini) and serves
from local mocks.
"""
import json
import os
import sys

import anthropic
import openai

from checks import check

assert os.environ.get("HTTPS_PROXY") and os.environ.get("SSL_CERT_FILE"), "run with HTTPS_PROXY and SSL_CERT_FILE"
for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
    os.environ.pop(var, None)

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]

oa = openai.OpenAI(api_key="sk-app-key", max_retries=0)
check(str(oa.base_url).startswith("https://api.openai.com"), "openai: the client keeps its real base URL")
raw = oa.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
check(raw.headers.get("x-modelgate-model") == "gpt-4o-mini", "openai: the request went through modelgate and was routed")
r = raw.parse()
check(r.choices[0].message.content == "Hello from the mock" and r.usage.completion_tokens == 300, "openai: answer and usage")
chunks = list(oa.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
check("".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the mock", "openai: streaming through the proxy")
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
r = oa.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=tools)
check(json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}, "openai: tool calls")

an = anthropic.Anthropic(api_key="sk-ant-app-key", max_retries=0)
check(str(an.base_url).startswith("https://api.anthropic.com"), "anthropic: the client keeps its real base URL")
m = an.messages.create(model="claude-haiku", max_tokens=100, messages=MESSAGES)
check(m.content[0].text == "Hello from the mock" and m.usage.output_tokens == 300, "anthropic: answer and usage")
with an.messages.stream(model="claude-haiku", max_tokens=100, messages=MESSAGES) as s:
    text = "".join(s.text_stream)
check(text == "Hello from the mock", "anthropic: streaming through the proxy")
# An anthropic client served by an OpenAI model, still without a code change.
m = an.messages.create(model="gpt-4o-mini", max_tokens=100, messages=MESSAGES)
check(m.content[0].text == "Hello from the mock", "anthropic: translated to an OpenAI-dialect model")

print("all transparent-mode SDK checks passed")
sys.exit(0)
