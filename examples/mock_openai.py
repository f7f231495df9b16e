#!/usr/bin/env python3
"""A stand-in OpenAI API for trying modelgate without a key (the README's
walkthrough): POST /v1/chat/completions answers in the real wire format,
as JSON or, with "stream": true, as server-sent events ending in
`data: [DONE]`, with usage; GET /v1/models lists two models. It answers
every model it is asked for and says which one in the reply.

    python3 examples/mock_openai.py 9999
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def usage(prompt: str, text: str) -> dict:
    p, c = max(1, len(prompt) // 4), max(1, len(text) // 4)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("mock: " + fmt % args + "\n")

    def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "mock"} for m in ("gpt-4o", "gpt-4o-mini")]
            return self.send(200, json.dumps({"object": "list", "data": data}).encode())
        self.send(404, json.dumps({"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}}).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path != "/v1/chat/completions":
            return self.send(404, json.dumps({"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}}).encode())
        model = body.get("model", "unknown")
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        text = f"Hello from the mock, answering as {model}."
        created = int(time.time())
        if not body.get("stream"):
            answer = {
                "id": "chatcmpl-mock", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage(prompt, text),
            }
            return self.send(200, json.dumps(answer).encode())
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        want_usage = (body.get("stream_options") or {}).get("include_usage")
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": w + " "}, "finish_reason": None}]} for w in text.split()]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if want_usage:
            chunks.append({"choices": [], "usage": usage(prompt, text)})
        for c in chunks:
            c.update({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model})
            self.chunk(f"data: {json.dumps(c)}\n\n".encode())
        self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
    print(f"mock OpenAI API on http://127.0.0.1:{port}/v1", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
