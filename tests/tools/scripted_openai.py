"""A scripted OpenAI-compatible server: a real HTTP server on loopback that answers from a script.

Each POST to ``/v1/chat/completions`` consumes the next step of the script; the last step repeats when
the script runs out. A step is one of::

    {"json": {...}}                      a chat.completion whose message content is json.dumps(obj)
    {"content": "raw text"}              a chat.completion with this content (e.g. broken JSON)
    {"status": 429, "body": {...}, "headers": {"Retry-After": "0"}}   an error answer
    {"delay": 3.0, ...any of the above}  wait first (a slow answer past the client's timeout)

Every request is recorded (path, headers with lower-case names, JSON body) so tests can assert what
was sent.

    with ScriptedOpenAI([{"json": spec}]) as server:
        client = LlmClient(server.base_url, "scripted", timeout_s=1.0)
"""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from typing import Any

_DEFAULT_ERRORS = {
    400: ("invalid_request_error", "Bad request"),
    429: ("rate_limit_error", "Rate limit reached for requests"),
    500: ("server_error", "The server had an error while processing your request"),
}


class ScriptedOpenAI:
    """The server; a context manager that starts it on 127.0.0.1, port 0, in a background thread."""

    def __init__(self, script: list[dict[str, Any]] | None = None, model: str = "scripted") -> None:
        self.script: list[dict[str, Any]] = list(script or [{"content": "{}"}])
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._served = 0
        self._ids = itertools.count(1)
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ScriptedOpenAI:
        handler = _handler_for(self)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a handler still sleeping through a "delay" step is let go
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-openai", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "use ScriptedOpenAI as a context manager"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # --- the script ----------------------------------------------------------------------------

    def set_script(self, script: list[dict[str, Any]]) -> None:
        """Replace the script (and start it from its first step)."""
        with self._lock:
            self.script = list(script)
            self._served = 0

    def _next_step(self) -> dict[str, Any]:
        with self._lock:
            step = self.script[min(self._served, len(self.script) - 1)]
            self._served += 1
            return step

    def _record(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})

    def completion(self, content: str) -> dict[str, Any]:
        """A chat.completion shaped as OpenAI's."""
        return {
            "id": f"chatcmpl-scripted-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
        }


def _handler_for(server: ScriptedOpenAI) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass  # quiet: tests capture stderr to look for secrets

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
            server._record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                return
            step = server._next_step()
            if step.get("delay"):
                time.sleep(float(step["delay"]))
            if "status" in step:
                status = int(step["status"])
                kind, message = _DEFAULT_ERRORS.get(status, ("error", f"HTTP {status}"))
                default = {"error": {"message": message, "type": kind, "param": None, "code": None}}
                self._send(status, step.get("body", default), step.get("headers"))
            elif "json" in step:
                self._send(200, server.completion(json.dumps(step["json"], ensure_ascii=False)))
            else:
                self._send(200, server.completion(str(step.get("content", ""))))

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, str(value))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout); nothing to answer

    return Handler
