"""A small OpenAI-compatible chat server on loopback for tests: `/v1/chat/completions` with scripted answers.

Each request takes the next behaviour from a script ("ok", "500", "malformed", "timeout", "401", "empty");
when the script runs out, "ok". Requests are recorded (path, headers, JSON body) so tests can assert what the
client sent, e.g. that the key arrived in the Authorization header and nowhere else.
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
    def __init__(self, script: Iterable[str] = (), answer: str = DEFAULT_ANSWER, delay_s: float = 2.0) -> None:
        self.script = list(script)
        self.answer = answer
        self.delay_s = delay_s  # how long a "timeout" answer stalls
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

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                behaviour = server.next_behaviour()
                if behaviour == "timeout":
                    time.sleep(server.delay_s)
                    return self._send(200, _completion("too late"))
                if behaviour == "500":
                    return self._send(500, {"error": {"message": "model crashed"}})
                if behaviour == "401":
                    # a careless server echoes the header it refused: the client must not log it as is
                    return self._send(401, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}})
                if behaviour == "malformed":
                    return self._send_raw(200, b'{"choices": [{"message": {"content": "sks person on Ma')
                if behaviour == "empty":
                    return self._send(200, {"choices": []})
                return self._send(200, _completion(server.answer, (body or {}).get("model", "fake")))

            def _send(self, status: int, payload: dict) -> None:
                self._send_raw(status, json.dumps(payload).encode())

            def _send_raw(self, status: int, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (timeout test)
                    pass

        return Handler


def _completion(content: str, model: str = "fake") -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
