"""Cross-dialect answers as the official SDKs see them (run by tests/sdk_e2e.rs).

modelgate serves `claude-haiku` (an Anthropic-dialect provider) to the openai
SDK (Chat Completions and Responses) and `gpt-4o-mini` (an OpenAI-dialect provider) to the anthropic SDK. The
mock answers text, or calls the first tool offered with {"city": "Paris"};
it reports 1200 input tokens (200 cached) and 300 output tokens.
"""
import json
import sys

import anthropic
import openai
import pydantic

from checks import GW, check
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather for a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def openai_client_on_anthropic_model():
    client = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="claude-haiku", messages=MESSAGES, max_tokens=100)
    check(raw.headers["x-modelgate-provider"] == "anthropic", "openai→anthropic: served by the Anthropic provider")
    r = raw.parse()
    check(r.choices[0].message.content == "Hello from the mock" and r.choices[0].finish_reason == "stop", "openai→anthropic: text and finish_reason")
    check(r.usage.prompt_tokens == 1200 and r.usage.completion_tokens == 300 and r.usage.prompt_tokens_details.cached_tokens == 200, "openai→anthropic: usage as the provider reported")

    chunks = list(client.chat.completions.create(model="claude-haiku", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == "Hello from the mock", "openai→anthropic stream: text")
    check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 300, "openai→anthropic stream: usage chunk")

    r = client.chat.completions.create(model="claude-haiku", messages=MESSAGES, tools=OPENAI_TOOLS)
    call = r.choices[0].message.tool_calls[0]
    check(r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", "openai→anthropic: tool call")
    check(json.loads(call.function.arguments) == {"city": "Paris"}, "openai→anthropic: tool arguments")

    calls = {}
    finish = None
    with client.chat.completions.create(model="claude-haiku", messages=MESSAGES, tools=OPENAI_TOOLS, stream=True) as stream:
        for c in stream:
            for ch in c.choices:
                for tc in ch.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": tc.id, "name": None, "args": ""})
                    if tc.function and tc.function.name:
                        entry["name"] = tc.function.name
                    if tc.function and tc.function.arguments:
                        entry["args"] += tc.function.arguments
                finish = ch.finish_reason or finish
    check(list(calls) == [0] and calls[0]["name"] == "get_weather" and calls[0]["id"] == "toolu_mock1", "openai→anthropic stream: tool call start")
    check(json.loads(calls[0]["args"]) == {"city": "Paris"} and finish == "tool_calls", "openai→anthropic stream: streamed tool arguments")

    follow = MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "toolu_mock1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_mock1", "content": "18 C and sunny"},
    ]
    r = client.chat.completions.create(model="claude-haiku", messages=follow, tools=OPENAI_TOOLS)
    check(r.choices[0].message.content == "Hello from the mock", "openai→anthropic: tool result round trip")

    # Structured output: the SDK's parse() with a Pydantic model, served by
    # Claude through a forced tool call.
    class Place(pydantic.BaseModel):
        city: str

    parsed = client.chat.completions.parse(model="claude-haiku", messages=MESSAGES, response_format=Place)
    check(parsed.choices[0].message.parsed == Place(city="Paris") and parsed.choices[0].finish_reason == "stop",
          "openai→anthropic: structured output parsed by the SDK")
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="claude-haiku", messages=MESSAGES, stream=True, response_format={"type": "json_object"}) if c.choices)
    check(json.loads(text) == {"city": "Paris"}, "openai→anthropic stream: JSON mode answer as content")

    try:
        client.chat.completions.create(model="claude-haiku", messages=MESSAGES, extra_headers={"x-mock-script": "status:429"})
        check(False, "openai→anthropic: provider 429 raises")
    except openai.RateLimitError as e:
        check(e.status_code == 429 and "mock 429" in e.message, "openai→anthropic: the provider's error in the OpenAI shape")


def responses_client_on_anthropic_model():
    """The openai SDK's Responses API served by an Anthropic-dialect model."""
    client = openai.OpenAI(base_url=f"{GW}/v1", api_key="sk-test", max_retries=0)
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    r = client.responses.create(model="claude-haiku", instructions="Be brief.", input="What is the weather in Paris?", max_output_tokens=100)
    check(r.status == "completed" and r.output_text == "Hello from the mock", "responses→anthropic: output_text")
    check(r.usage.input_tokens == 1200 and r.usage.output_tokens == 300 and r.usage.input_tokens_details.cached_tokens == 200, "responses→anthropic: usage as the provider reported")

    events = list(client.responses.create(model="claude-haiku", input="What is the weather in Paris?", stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    check(text == "Hello from the mock" and events[-1].type == "response.completed", "responses→anthropic stream: text deltas and response.completed")
    check(events[-1].response.usage.output_tokens == 300, "responses→anthropic stream: usage in response.completed")

    r = client.responses.create(model="claude-haiku", input="What is the weather in Paris?", tools=tools)
    calls = [o for o in r.output if o.type == "function_call"]
    check(len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}, "responses→anthropic: function_call item")

    # The SDK's stream helper accumulates items and argument deltas.
    with client.responses.stream(model="claude-haiku", input="What is the weather in Paris?", tools=tools) as s:
        arg_deltas = [e.delta for e in s if e.type == "response.function_call_arguments.delta"]
        final = s.get_final_response()
    call = [o for o in final.output if o.type == "function_call"][0]
    check(len(arg_deltas) >= 2 and "".join(arg_deltas) == call.arguments and call.call_id == "toolu_mock1", "responses→anthropic stream: streamed function-call arguments")

    follow = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": "get_weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"},
    ]
    r = client.responses.create(model="claude-haiku", input=follow, tools=tools)
    check(r.output_text == "Hello from the mock", "responses→anthropic: function_call_output round trip")

    try:
        client.responses.create(model="claude-haiku", input="hi", previous_response_id="resp_123")
        check(False, "responses→anthropic: previous_response_id is refused")
    except openai.BadRequestError as e:
        check("previous_response_id" in e.message, "responses→anthropic: server-side state is refused clearly")


def anthropic_client_on_openai_model():
    client = anthropic.Anthropic(base_url=f"{GW}/anthropic", api_key="sk-ant-test", max_retries=0)
    raw = client.messages.with_raw_response.create(model="gpt-4o-mini", max_tokens=100, system="Be brief.", messages=MESSAGES)
    check(raw.headers["x-modelgate-provider"] == "openai", "anthropic→openai: served by the OpenAI provider")
    m = raw.parse()
    check(m.content[0].text == "Hello from the mock" and m.stop_reason == "end_turn", "anthropic→openai: text and stop_reason")
    check(m.usage.input_tokens == 1000 and m.usage.cache_read_input_tokens == 200 and m.usage.output_tokens == 300, "anthropic→openai: usage as the provider reported")

    with client.messages.stream(model="gpt-4o-mini", max_tokens=100, messages=MESSAGES) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text == "Hello from the mock" and final.usage.output_tokens == 300, "anthropic→openai stream: text and usage")

    m = client.messages.create(model="gpt-4o-mini", max_tokens=100, messages=MESSAGES, tools=ANTHROPIC_TOOLS)
    use = [b for b in m.content if b.type == "tool_use"][0]
    check(m.stop_reason == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}, "anthropic→openai: tool_use")

    with client.messages.stream(model="gpt-4o-mini", max_tokens=100, messages=MESSAGES, tools=ANTHROPIC_TOOLS) as s:
        final = s.get_final_message()
    use = [b for b in final.content if b.type == "tool_use"][0]
    check(final.stop_reason == "tool_use" and use.id == "call_mock1" and use.input == {"city": "Paris"}, "anthropic→openai stream: streamed tool_use input")

    follow = MESSAGES + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_mock1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_mock1", "content": "18 C and sunny"}]},
    ]
    m = client.messages.create(model="gpt-4o-mini", max_tokens=100, messages=follow, tools=ANTHROPIC_TOOLS)
    check(m.content[0].text == "Hello from the mock", "anthropic→openai: tool result round trip")

    try:
        client.messages.create(model="gpt-4o-mini", max_tokens=100, messages=MESSAGES, thinking={"type": "enabled", "budget_tokens": 1024})
        check(False, "anthropic→openai: thinking is refused")
    except anthropic.BadRequestError as e:
        check("thinking" in e.message, "anthropic→openai: a field that would change the answer is refused clearly")


if __name__ == "__main__":
    openai_client_on_anthropic_model()
    responses_client_on_anthropic_model()
    anthropic_client_on_openai_model()
    print("all SDK translation checks passed")
    sys.exit(0)
