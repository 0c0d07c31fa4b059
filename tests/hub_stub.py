"""A minimal stand-in for the Hugging Face hub's HTTP API serving one local folder as a model repository, so tests
exercise the real huggingface_hub client (HF_ENDPOINT, HF_TOKEN) without a network. A fake of the server, never of
cotgen's code. Endpoints: repo info (`/api/models/REPO/revision/REV`), the file tree (`/api/models/REPO/tree/REV`)
and file downloads (`/REPO/resolve/REV/FILE`, HEAD and GET); with `token`, a request without
`Authorization: Bearer TOKEN` gets 401 GatedRepo, as a gated Gemma repository answers."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

SHA = "a" * 40


def serve(folder: Path, repo: str, token: str | None = None):
    """Start the server on a free port; returns (server, requests seen as (method, path, authorization))."""
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    seen: list[tuple[str, str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _empty(self, status: int, error: str | None = None) -> None:
            self.send_response(status)
            if error:
                self.send_header("X-Error-Code", error)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _json(self, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, name: str, head: bool) -> None:
            data = files.get(name)
            if data is None:
                return self._empty(404, "EntryNotFound")
            self.send_response(200)
            self.send_header("X-Repo-Commit", SHA)
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def do_HEAD(self):
            self.do_GET(head=True)

        def do_GET(self, head: bool = False):
            auth = self.headers.get("authorization")
            seen.append((self.command, self.path, auth))
            if token and auth != f"Bearer {token}":
                return self._empty(401, "GatedRepo")
            path = urlparse(self.path).path
            if path.startswith(f"/api/models/{repo}/revision/"):
                return self._json({"id": repo, "sha": SHA, "siblings": [{"rfilename": n} for n in files]})
            if path.startswith(f"/api/models/{repo}/tree/"):
                return self._json([{"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                                   for n, d in files.items()])
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                return self._file(path[len(prefix):].split("/", 1)[1], head)
            return self._empty(404, "RepoNotFound")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen
