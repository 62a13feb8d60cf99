"""A small OpenAI-compatible chat server on loopback for tests: `/v1/chat/completions` with scripted answers.

Each request takes the next behaviour from a script; when the script runs out, "ok":

- "ok", "empty" (no choices), "malformed" (truncated JSON), "500", "timeout" (stalls `delay_s`, then answers);
- "401" and "401-long" (a careless server echoing the Authorization header in its error body, after 190
  characters of padding in the long one, so shortening the body before redacting would cut the key in two);
- "redirect" (302 to `redirect_to`), "drip" (one byte every `drip_s` seconds), "huge" / "huge-stream" (a 2 MB
  answer with / without a Content-Length), "echo" (an answer whose prompts contain the Authorization header).

Requests are recorded (method, path, headers, JSON body) so tests can assert what the client sent, e.g. that
the key arrived in the Authorization header and nowhere else.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_ANSWER = (
    "Here are new prompts:\n"
    "1. sks person as an astronaut on Mars, cinematic, golden hour lighting, 35mm lens\n"
    "2. sks person in a white spacesuit on the red dunes of Mars, dramatic rim light\n"
    "3. an astronaut on Mars, epic, highly detailed\n"
    "4. %%% ###\n"
)


class FakeOpenAIServer:
    def __init__(
        self,
        script: Iterable[str] = (),
        answer: str = DEFAULT_ANSWER,
        delay_s: float = 2.0,
        redirect_to: str = "",
        drip_s: float = 2.0,
    ) -> None:
        self.script = list(script)
        self.answer = answer
        self.delay_s = delay_s  # how long a "timeout" answer stalls
        self.redirect_to = redirect_to  # where a "redirect" answer points
        self.drip_s = drip_s  # the pause between the bytes of a "drip" answer
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_behaviour(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else "ok"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # where a redirected POST arrives (urllib turns 302 into GET)
                server.requests.append(
                    {"method": "GET", "path": self.path, "headers": dict(self.headers), "body": None}
                )
                self._send(200, _completion(server.answer))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                server.requests.append(
                    {"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body}
                )
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                behaviour = server.next_behaviour()
                if behaviour == "timeout":
                    time.sleep(server.delay_s)
                    return self._send(200, _completion("too late"))
                if behaviour == "500":
                    return self._send(500, {"error": {"message": "model crashed"}})
                if behaviour in ("401", "401-long"):
                    # a careless server echoes the header it refused: the client must not log it as is
                    padding = "x" * 190 if behaviour == "401-long" else ""
                    message = f"{padding}bad key {self.headers.get('Authorization')}"
                    return self._send_raw(401, message.encode())
                if behaviour == "redirect":
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if behaviour == "drip":
                    return self._drip(json.dumps(_completion(server.answer)).encode())
                if behaviour in ("huge", "huge-stream"):
                    data = json.dumps(_completion("sks person on Mars, " + "x" * 2_000_000)).encode()
                    return self._send_raw(200, data, length=behaviour == "huge")
                if behaviour == "echo":
                    key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    echoed = (
                        f"sks person as an astronaut on Mars, golden hour lighting, oil painting, serene, {key}\n"
                        f"sks person on Mars, oil painting, key {key[:16]}\n{server.answer}"
                    )
                    return self._send(200, _completion(echoed))
                if behaviour == "malformed":
                    return self._send_raw(200, b'{"choices": [{"message": {"content": "sks person on Ma')
                if behaviour == "empty":
                    return self._send(200, {"choices": []})
                return self._send(200, _completion(server.answer, (body or {}).get("model", "fake")))

            def _send(self, status: int, payload: dict) -> None:
                self._send_raw(status, json.dumps(payload).encode())

            def _send_raw(self, status: int, data: bytes, length: bool = True) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    if length:  # without it (HTTP/1.0) the answer ends when the connection closes
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (timeout test)
                    pass

            def _drip(self, data: bytes) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for index in range(len(data)):
                        self.wfile.write(data[index : index + 1])
                        self.wfile.flush()
                        time.sleep(server.drip_s)
                except (BrokenPipeError, ConnectionResetError, OSError):  # the client gave up, as it should
                    pass

        return Handler


def _completion(content: str, model: str = "fake") -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
