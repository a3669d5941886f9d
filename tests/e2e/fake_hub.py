"""A stand-in for the Hugging Face Hub on 127.0.0.1: one model directory for ``huggingface_hub`` (``HF_ENDPOINT``).

It answers what ``snapshot_download`` asks (huggingface_hub 2.4 here; 0.36, the serving image's, asks a subset): the
model's revision info (commit and file list), its file tree, and each file's ``resolve`` URL (HEAD for the metadata,
GET for the bytes).  Every request is counted, so a test can tell that a start never reached the Hub.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class Hub:
    repo_id: str
    root: Path
    commit: str = "0" * 40
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def files(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str], *, head: bool = False) -> None:
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _answer(self, *, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            info = f"/api/models/{hub.repo_id}/revision/"
            tree = f"/api/models/{hub.repo_id}/tree/"
            resolve = f"/{hub.repo_id}/resolve/"
            if path.startswith(tree):
                entries = [
                    {"type": "file", "path": f, "size": (hub.root / f).stat().st_size, "oid": _digest(hub.root / f)}
                    for f in hub.files()
                ]
                self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, head=head)
                return
            if path.startswith(info):
                siblings = [{"rfilename": f} for f in hub.files()]
                body = json.dumps({"id": hub.repo_id, "sha": hub.commit, "siblings": siblings}).encode()
                self._send(200, body, {"Content-Type": "application/json"}, head=head)
                return
            if path.startswith(resolve):
                _, _, name = path[len(resolve) :].partition("/")
                target = hub.root / name
                if name in hub.files():
                    data = target.read_bytes()
                    headers = {
                        "X-Repo-Commit": hub.commit,
                        "ETag": '"' + _digest(target) + '"',
                        "Content-Type": "application/octet-stream",
                    }
                    self._send(200, data, headers, head=head)
                    return
            self._send(404, b'{"error": "not found"}', {"X-Error-Code": "EntryNotFound"}, head=head)

        def do_GET(self) -> None:
            self._answer(head=False)

        def do_HEAD(self) -> None:
            self._answer(head=True)

    return Handler


@contextmanager
def serve(repo_id: str, root: Path) -> Iterator[Hub]:
    """The fake Hub for ``root`` as ``repo_id``; stopped (nothing listens any more) when the block ends."""
    hub = Hub(repo_id, root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
