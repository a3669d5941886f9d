"""The client examples against a local stand-in server speaking the OpenAI wire format on 127.0.0.1."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from workloads.client import chat

ROOT = Path(__file__).resolve().parents[1]
MODEL = "stand-in/llama"
KEY = "stand-in-key"


class _StandIn(BaseHTTPRequestHandler):
    """Answers /v1/models and /v1/chat/completions (plain and SSE streaming); records every request body."""

    requests: ClassVar[list[dict[str, Any]]] = []
    fail_chat: ClassVar[bool] = False

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _key_ok(self) -> bool:
        # As the serve endpoint's gate: the key as a bearer token, or a 401.
        if self.headers.get("Authorization") == f"Bearer {KEY}":
            return True
        self._json(401, {"error": {"message": "missing or invalid API key", "type": "authentication_error"}})
        return False

    def do_GET(self) -> None:
        if not self._key_ok():
            return
        if self.path == "/v1/models":
            self._json(
                200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "x"}]}
            )
        else:
            self._json(404, {"error": {"message": "not found", "type": "NotFound", "code": 404}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._key_ok():
            return
        type(self).requests.append({"path": self.path, **body})
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "not found", "type": "NotFound", "code": 404}})
            return
        if type(self).fail_chat:
            self._json(400, {"error": {"message": "bad max_tokens", "type": "BadRequestError", "code": 400}})
            return
        answer = f"echo:{body['messages'][-1]['content']}"
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in re.findall(r".{1,4}", answer):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def server() -> Iterator[str]:
    _StandIn.requests = []
    _StandIn.fail_chat = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_all_three_examples_run_against_the_stand_in(server: str) -> None:
    out = io.StringIO()
    assert chat.main(["--base-url", server, "--timeout", "10"], out=out) == 0
    text = out.getvalue()
    assert f"model {MODEL} at {server}" in text  # discovered from /v1/models
    assert "[simple] echo:What is AWS Inferentia2 designed for?" in text
    assert "[sampling] echo:Give me a second, different one. (finish_reason=stop)" in text
    assert "[stream] echo:Write a haiku about Kubernetes." in text
    paths = [r["path"] for r in _StandIn.requests]
    assert paths == ["/v1/chat/completions"] * 3
    simple, sampling, stream = _StandIn.requests
    assert simple["model"] == MODEL and not simple.get("stream")
    # The second example really sends other sampling parameters.
    assert {k: sampling[k] for k in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed")} == {
        "temperature": 0.9,
        "top_p": 0.8,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.3,
        "seed": 7,
    }
    assert stream["stream"] is True


def test_one_example_with_model_and_url_from_env(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server)
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    out = io.StringIO()
    assert chat.main(["stream"], out=out) == 0
    assert [r["model"] for r in _StandIn.requests] == ["from-env"]
    assert out.getvalue().splitlines()[-1] == "[stream] echo:Write a haiku about Kubernetes."


def test_default_base_url_is_the_port_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    args = chat.parse_args([])
    assert (args.base_url, args.model, args.example) == ("http://localhost:8000/v1", None, "all")


def test_without_a_key_the_examples_say_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    err = io.StringIO()
    with pytest.raises(SystemExit) as stopped, contextlib.redirect_stderr(err):
        chat.parse_args([])
    assert stopped.value.code == 2 and "servingApiKeyCommand" in err.getvalue()


def test_a_wrong_key_is_refused_by_the_endpoint(server: str) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError):
        chat.main(["simple", "--base-url", server, "--api-key", "wrong", "--timeout", "10"], out=io.StringIO())


def test_a_server_error_surfaces_as_an_exception(server: str) -> None:
    """The examples do not swallow errors: a 4xx from the server fails the run."""
    import openai

    _StandIn.fail_chat = True
    with pytest.raises(openai.BadRequestError, match="bad max_tokens"):
        chat.main(["simple", "--base-url", server, "--model", MODEL, "--timeout", "10"], out=io.StringIO())


def test_client_pin_matches_dev_requirements() -> None:
    def pin(path: Path) -> str:
        return next(line for line in path.read_text().splitlines() if line.startswith("openai=="))

    assert pin(ROOT / "workloads/client/requirements.txt") == pin(ROOT / "requirements-dev.txt")
