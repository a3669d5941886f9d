"""Who may call the serve endpoint, and which of vLLM's routes it exposes: a pure ASGI wrapper around vLLM's app.

vLLM's own app serves far more than users need: ``/docs`` and ``/openapi.json``, ``/tokenize``, SageMaker's
``/invocations`` (a full chat completion), ``/inference/v1/generate``, ``/scale_elastic_ep``, ``/pooling``... and
its ``--api-key`` (``VLLM_API_KEY``) guards only paths starting with ``/v1`` (vLLM 0.16 and 0.32 alike), so
``/invocations`` stays open with a key set.  The gate therefore decides itself, the same way on every vLLM version:

- ``USER_ROUTES`` (the OpenAI routes Open WebUI, the benchmark and the client examples use) need
  ``Authorization: Bearer <key>``; a missing or wrong key is a 401 that says so;
- ``OPEN_ROUTES`` (``/health`` for probes, ``/metrics`` for scrapes) answer without a key;
- every other path is a 404 naming the path, before vLLM sees it;
- while the replica's engine is dead (a crash, an OOM kill), the user routes answer 503 with ``Retry-After`` and a
  message saying so, until Serve's health check replaces the replica: vLLM's own handler for that case needs the
  uvicorn server of ``vllm serve``, which a Serve replica does not have, and answers a bare 500.

The key is compared as SHA-256 digests with ``hmac.compare_digest`` (constant time, any length).  Serve's own
``/-/healthz`` and ``/-/routes`` never reach the replica: HAProxy answers them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

USER_ROUTES: Final = frozenset({"/v1/models", "/v1/chat/completions", "/v1/completions"})
OPEN_ROUTES: Final = frozenset({"/health", "/metrics", "/metrics/"})
# WebSocket close code "policy violation" (RFC 6455): a refused WebSocket handshake.
WS_POLICY_VIOLATION: Final = 1008
# Seconds a client should wait before retrying while the replica is replaced (Serve notices a dead engine within
# three health checks, 10 s apart).
ENGINE_DEAD_RETRY_AFTER_S: Final = 10


class GateError(ValueError):
    """The gate cannot be built as asked (a required key is missing); one line naming what."""


def _error_body(status: int, kind: str, message: str) -> bytes:
    # The OpenAI error shape, so OpenAI clients surface the message (openai.AuthenticationError, NotFoundError).
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


async def _respond(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def route_of(scope: Mapping[str, Any]) -> str:
    """The request path relative to the app's mount point (Serve may set ``root_path`` to the route prefix)."""
    path = str(scope.get("path") or "/")
    root = str(scope.get("root_path") or "")
    if root and root != "/" and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def bearer_token(scope: Mapping[str, Any]) -> str | None:
    for name, value in scope.get("headers") or ():
        if bytes(name).lower() == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class Gate:
    """``Gate(app, api_key)``: the ASGI app the replica serves.  ``api_key=None`` asks no key (local tools only)."""

    def __init__(self, app: ASGIApp, api_key: str | None, alive: Callable[[], bool] = lambda: True) -> None:
        if api_key is not None and not api_key:
            raise GateError("serve gate: the API key is empty; set it or run without one explicitly (None)")
        self.app = app
        self.alive = alive  # False once the engine behind ``app`` is dead
        self._digest = hashlib.sha256(api_key.encode()).digest() if api_key is not None else None

    def key_ok(self, scope: Mapping[str, Any]) -> bool:
        if self._digest is None:
            return True
        token = bearer_token(scope)
        given = hashlib.sha256((token or "").encode()).digest()
        # Compare even when no token came, so the time taken does not tell a missing key from a wrong one.
        return hmac.compare_digest(given, self._digest) and token is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":  # vLLM's app starts and stops its state through the lifespan protocol
            await self.app(scope, receive, send)
            return
        route = route_of(scope)
        if kind == "websocket":
            if route in USER_ROUTES and self.key_ok(scope):
                await self.app(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            return
        if route in OPEN_ROUTES:
            await self.app(scope, receive, send)
        elif route not in USER_ROUTES:
            served = ", ".join(sorted(USER_ROUTES))
            await _respond(
                send,
                404,
                _error_body(404, "not_found_error", f"route {route} is not served here; served: {served}"),
            )
        elif not self.key_ok(scope):
            await _respond(
                send,
                401,
                _error_body(
                    401,
                    "authentication_error",
                    "missing or invalid API key: send the serve endpoint's key as 'Authorization: Bearer <key>'",
                ),
                [(b"www-authenticate", b"Bearer")],
            )
        elif not self.alive():
            await _respond(
                send,
                503,
                _error_body(
                    503,
                    "service_unavailable",
                    "the model engine of this replica has stopped; Serve is replacing the replica: retry shortly",
                ),
                [(b"retry-after", str(ENGINE_DEAD_RETRY_AFTER_S).encode())],
            )
        else:
            await self.app(scope, receive, send)
