"""The official google-genai SDK through modelgate (run by tests/sdk_e2e.rs).

modelgate serves Gemini clients at /gemini/v1beta/models/{model}:generateContent
and :streamGenerateContent?alt=sse: `gemini-flash` from a Gemini provider,
`gpt-4o-mini` from an OpenAI-dialect one and `claude-haiku` from an
Anthropic-dialect one, translated. The mock answers text, or calls the first
function declared with {"city": "Paris"}; it reports 1200 input tokens (200
cached) and 300 output tokens.
"""
import json
import sys

import anthropic
import openai
from google import genai
from google.genai import errors, types

from checks import GW, check

PROMPT = "What is the weather in Paris?"
TOOLS = [types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Weather for a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})])]
TOOL_CONFIG = types.GenerateContentConfig(tools=TOOLS, automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))

client = genai.Client(vertexai=False, api_key="test-key", http_options=types.HttpOptions(base_url=GW + "/gemini", api_version="v1beta"))


def usage_ok(usage):
    return usage is not None and usage.prompt_token_count == 1200 and usage.candidates_token_count == 300


def text_and_usage(model):
    r = client.models.generate_content(model=model, contents=PROMPT)
    check(r.text == "Hello from the mock", f"{model}: text")
    check(usage_ok(r.usage_metadata), f"{model}: usage 1200/300 as the provider reported")
    check(r.candidates[0].finish_reason == types.FinishReason.STOP, f"{model}: finish_reason STOP")

    chunks = list(client.models.generate_content_stream(model=model, contents=PROMPT))
    check("".join(c.text or "" for c in chunks) == "Hello from the mock", f"{model} stream: text")
    check(chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP, f"{model} stream: last chunk has finish_reason STOP")
    check(usage_ok(chunks[-1].usage_metadata), f"{model} stream: usage in the last chunk")


def tool_round_trip(model, stream):
    what = f"{model}{' stream' if stream else ''}"
    if stream:
        calls = [fc for c in client.models.generate_content_stream(model=model, contents=PROMPT, config=TOOL_CONFIG) for fc in c.function_calls or []]
    else:
        calls = client.models.generate_content(model=model, contents=PROMPT, config=TOOL_CONFIG).function_calls or []
    check(len(calls) == 1 and calls[0].name == "get_weather", f"{what}: a function call to get_weather")
    check(calls[0].args == {"city": "Paris"}, f"{what}: function call args")

    history = [
        types.Content(role="user", parts=[types.Part.from_text(text=PROMPT)]),
        types.Content(role="model", parts=[types.Part(function_call=calls[0])]),
        types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response={"temp_c": 21})]),
    ]
    if stream:
        text = "".join(c.text or "" for c in client.models.generate_content_stream(model=model, contents=history, config=TOOL_CONFIG))
    else:
        text = client.models.generate_content(model=model, contents=history, config=TOOL_CONFIG).text
    check(text == "Hello from the mock", f"{what}: function response round trip answers text")


def generation_config():
    r = client.models.generate_content(model="gemini-flash", contents=PROMPT, config=types.GenerateContentConfig(
        system_instruction="Be brief.", temperature=0.2, max_output_tokens=100))
    check(r.text == "Hello from the mock", "gemini-flash: system instruction, temperature and max_output_tokens")
    r = client.models.generate_content(model="gpt-4o-mini", contents=PROMPT, config=types.GenerateContentConfig(
        system_instruction="Be brief.", temperature=0.2, max_output_tokens=100))
    check(r.text == "Hello from the mock", "gpt-4o-mini: system instruction, temperature and max_output_tokens")


def provider_error(model, status):
    # The SDK does not retry by default (no retry_options), so one call, one error.
    try:
        client.models.generate_content(model=model, contents=PROMPT, config=types.GenerateContentConfig(
            http_options=types.HttpOptions(headers={"x-mock-script": f"status:{status}"})))
        check(False, f"{model}: provider {status} raises")
    except errors.ClientError as e:
        check(e.code == status and f"mock {status}" in (e.message or ""), f"{model}: the provider's {status} raises ClientError ({e.code} {e.status}: {e.message})")


def other_sdks_on_gemini_model():
    """The openai and anthropic SDKs served by the Gemini-dialect model."""
    messages = [{"role": "user", "content": PROMPT}]
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    oa = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0)
    r = oa.chat.completions.create(model="gemini-flash", messages=messages)
    check(r.choices[0].message.content == "Hello from the mock" and r.usage.prompt_tokens == 1200
          and r.usage.prompt_tokens_details.cached_tokens == 200 and r.usage.completion_tokens == 300, "openai→gemini: text and usage")
    calls, finish = {}, None
    for c in oa.chat.completions.create(model="gemini-flash", messages=messages, stream=True,
                                        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": params}}]):
        for ch in c.choices:
            for tc in ch.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"name": None, "args": ""})
                entry["name"] = (tc.function and tc.function.name) or entry["name"]
                entry["args"] += (tc.function and tc.function.arguments) or ""
            finish = ch.finish_reason or finish
    check(list(calls) == [0] and calls[0]["name"] == "get_weather" and json.loads(calls[0]["args"]) == {"city": "Paris"}
          and finish == "tool_calls", "openai→gemini stream: tool call")

    an = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0)
    with an.messages.stream(model="gemini-flash", max_tokens=100, messages=messages) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text == "Hello from the mock" and final.usage.input_tokens == 1000 and final.usage.cache_read_input_tokens == 200
          and final.usage.output_tokens == 300, "anthropic→gemini stream: text and usage")
    with an.messages.stream(model="gemini-flash", max_tokens=100, messages=messages,
                            tools=[{"name": "get_weather", "input_schema": params}]) as s:
        final = s.get_final_message()
    use = [b for b in final.content if b.type == "tool_use"]
    check(final.stop_reason == "tool_use" and len(use) == 1 and use[0].input == {"city": "Paris"}, "anthropic→gemini stream: tool_use")


if __name__ == "__main__":
    text_and_usage("gemini-flash")
    text_and_usage("gpt-4o-mini")
    tool_round_trip("claude-haiku", stream=True)
    tool_round_trip("gpt-4o-mini", stream=False)
    generation_config()
    provider_error("gemini-flash", 400)
    provider_error("gpt-4o-mini", 429)
    other_sdks_on_gemini_model()
    print("all gemini SDK checks passed")
    sys.exit(0)
