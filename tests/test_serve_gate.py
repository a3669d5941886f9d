"""The replica's gate (workloads/serve/gate.py) as a plain ASGI app in front of a fake vLLM app: who may call which
route.  The e2e tier runs the same gate in front of the real vLLM app through Ray Serve's HAProxy ingress."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.test_serve_app import FakeRuntime, args
from tests.test_serve_cache import FakeS3
from workloads.serve import app as serve_app
from workloads.serve import gate, launch
from workloads.serve.settings import API_KEY_ENV, ServeSettings, SettingsError

KEY = "k3y-for-tests"


class FakeVLLM:
    """Answers 200 on every path and records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.seen.append((scope["type"], scope.get("path", "")))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"vllm"})


def call(
    app: Any, path: str, *, key: str | None = None, scheme: str = "Bearer", kind: str = "http", root: str = ""
) -> tuple[int | None, dict[str, str], Any]:
    headers = [(b"authorization", f"{scheme} {key}".encode())] if key is not None else []
    scope = {"type": kind, "path": path, "root_path": root, "method": "GET", "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    if kind == "websocket":
        return None, {}, sent
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    hdrs = {bytes(k).decode(): bytes(v).decode() for k, v in start["headers"]}
    return start["status"], hdrs, json.loads(body) if hdrs.get("content-type") == "application/json" else body


@pytest.mark.parametrize("path", sorted(gate.USER_ROUTES))
def test_user_routes_need_the_key(path: str) -> None:
    inner = FakeVLLM()
    app = gate.Gate(inner, KEY)
    for bad in (None, "wrong", ""):
        status, headers, body = call(app, path, key=bad)
        assert status == 401, (path, bad)
        assert headers["www-authenticate"] == "Bearer"
        assert body["error"]["type"] == "authentication_error"
        assert "Authorization: Bearer" in body["error"]["message"]
    assert call(app, path, key=KEY, scheme="Basic")[0] == 401
    assert inner.seen == []  # nothing unauthenticated reached vLLM
    assert call(app, path, key=KEY) == (200, {}, b"vllm")
    assert call(app, path, key=KEY, scheme="bearer")[0] == 200  # the scheme is case-insensitive (RFC 7235)


@pytest.mark.parametrize("path", sorted(gate.OPEN_ROUTES))
def test_probes_and_scrapes_need_no_key(path: str) -> None:
    assert call(gate.Gate(FakeVLLM(), KEY), path)[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/docs",
        "/openapi.json",
        "/redoc",
        "/scale_elastic_ep",
        "/is_scaling_elastic_ep",
        "/inference/v1/generate",
        "/invocations",
        "/tokenize",
        "/detokenize",
        "/v1/responses",
        "/v1/embeddings",
        "/pooling",
        "/version",
        "/v1/models/../../docs",
        "/v1/chat/completions/",
        "/",
    ],
)
def test_every_other_route_is_refused_before_vllm_sees_it(path: str) -> None:
    inner = FakeVLLM()
    status, _, body = call(gate.Gate(inner, KEY), path, key=KEY)  # even with the key
    assert status == 404
    assert path in body["error"]["message"] and "/v1/chat/completions" in body["error"]["message"]
    assert inner.seen == []


def test_routes_are_matched_below_the_mount_point() -> None:
    app = gate.Gate(FakeVLLM(), KEY)
    assert call(app, "/llm/v1/models", key=KEY, root="/llm")[0] == 200
    assert call(app, "/llm/docs", key=KEY, root="/llm")[0] == 404


def test_lifespan_reaches_vllm_and_websockets_are_closed_without_the_key() -> None:
    inner = FakeVLLM()
    app = gate.Gate(inner, KEY)

    async def nothing() -> dict[str, Any]:
        return {}

    async def ignore(_: Any) -> None:
        return None

    asyncio.run(app({"type": "lifespan"}, nothing, ignore))
    assert inner.seen == [("lifespan", "")]
    _, _, sent = call(app, "/v1/chat/completions", kind="websocket")
    assert sent == [{"type": "websocket.close", "code": gate.WS_POLICY_VIOLATION}]
    _, _, sent = call(app, "/v1/realtime", key=KEY, kind="websocket")
    assert sent[0]["type"] == "websocket.close"


def test_without_a_key_only_the_routes_are_limited() -> None:
    app = gate.Gate(FakeVLLM(), None)
    assert call(app, "/v1/models")[0] == 200
    assert call(app, "/docs")[0] == 404
    with pytest.raises(gate.GateError, match="empty"):
        gate.Gate(FakeVLLM(), "")


def test_a_replica_that_must_ask_for_a_key_and_has_none_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    started: list[FakeRuntime] = []

    def runtime() -> FakeRuntime:
        started.append(FakeRuntime())
        return started[-1]

    with pytest.raises(gate.GateError, match=API_KEY_ENV):
        serve_app.VLLMServer(args(tmp_path, require_api_key=True), runtime_factory=runtime, s3_factory=FakeS3)
    assert started == []  # failed before any engine was made


def test_the_replica_serves_vllm_behind_the_gate_with_the_environment_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    server = serve_app.VLLMServer(
        args(tmp_path, require_api_key=True, artifact_cache_uri=None),
        runtime_factory=FakeRuntime,
        s3_factory=FakeS3,
        versions=lambda: {"vllm": "0.16.0"},
    )
    built = asyncio.run(server.__serve_build_asgi_app__())
    assert isinstance(built, gate.Gate) and built.app == "ASGI_APP"
    assert built.key_ok({"headers": [(b"authorization", f"Bearer {KEY}".encode())]})
    assert not built.key_ok({"headers": []})
    assert serve_app.api_key(ServeSettings.from_args(args(tmp_path)), {API_KEY_ENV: KEY}) is None  # not required


def test_require_api_key_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="require_api_key"):
        ServeSettings.from_args(args(tmp_path, require_api_key="yes"))


def test_overload_is_refused_beyond_one_batch_of_queue_with_a_retryable_status(tmp_path: Path) -> None:
    settings = ServeSettings.from_args(args(tmp_path, max_num_seqs=8))
    options = launch.deployment_options(settings)
    assert options["max_queued_requests"] == 8
    assert options["backpressure_config"] == {"status_code": 429, "retry_after_s": launch.BACKPRESSURE_RETRY_AFTER_S}
    assert options["max_ongoing_requests"] >= settings.max_num_seqs


def test_a_dead_engine_is_a_retryable_503_until_the_replica_is_replaced() -> None:
    inner = FakeVLLM()
    alive = [True]
    app = gate.Gate(inner, KEY, alive=lambda: alive[0])
    assert call(app, "/v1/chat/completions", key=KEY)[0] == 200
    alive[0] = False
    status, headers, body = call(app, "/v1/chat/completions", key=KEY)
    assert status == 503 and headers["retry-after"] == str(gate.ENGINE_DEAD_RETRY_AFTER_S)
    assert "engine" in body["error"]["message"] and "retry" in body["error"]["message"]
    assert call(app, "/v1/chat/completions")[0] == 401  # still asks who is calling first
    assert call(app, "/health")[0] == 200  # vLLM's own /health reports the engine; probes reach it


def test_the_replica_reports_its_engine_dead_from_the_engine_client(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    server = serve_app.VLLMServer(args(tmp_path), runtime_factory=lambda: runtime, s3_factory=FakeS3)
    assert server.engine_alive()  # not started: nothing to report
    runtime.engine_client = SimpleNamespace(errored=False)  # type: ignore[attr-defined]
    assert server.engine_alive()
    runtime.engine_client.errored = True  # type: ignore[attr-defined]
    assert not server.engine_alive()
