"""A scripted OpenAI-compatible HTTP server for tests of cotgen's OpenAI backend (a fake of the server, never of
cotgen's code): subclasses answer POSTs from their `script`; `serve(handler)` runs one on a free port."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar


class Scripted(BaseHTTPRequestHandler):
    """JSON replies; GET lists the one model `model_id`; subclasses define do_POST."""

    model_id: ClassVar[str] = "teacher"
    script: ClassVar[dict] = {}
    calls: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict | str):
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": self.model_id, "object": "model", "owned_by": "x",
                                                      "created": 0}]})


@contextmanager
def serve(handler: type[Scripted]):
    """Yield (base url ending in /v1, handler) while the server runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
