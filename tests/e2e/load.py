"""Load and fault helpers of the fault tier: streamed chat requests with their timings, the serve app's processes,
its engine metrics, and a TLS Redis for the GCS.  127.0.0.1 only; every loop is bounded in count and time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.bench_servers import stop

if TYPE_CHECKING:  # venv-e2e has httpx (vLLM, openai); the default tier only collects this package
    import httpx

# Random weights may emit EOS at any step: ignore_eos makes a request generate exactly max_tokens.
EXACT = {"ignore_eos": True}


@dataclass
class Result:
    status: int | None = None  # HTTP status, None when the connection failed before one came
    ttft_s: float | None = None  # first content chunk
    elapsed_s: float = 0.0  # until the stream ended (or failed)
    chunks: int = 0
    finished: bool = False  # the stream ended with [DONE]
    error: str = ""  # what the client saw when it did not finish: an error event, an exception
    body: str = ""  # the body of a non-200 answer
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 1  # requests sent for this result (a refused client may retry)


def chat_body(model: str, prompt: str, max_tokens: int, *, stream: bool = True) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
        **EXACT,
    }


async def sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    """Server-sent event lines, split on newlines only: a random model's tokens may hold characters that
    ``str.splitlines`` (and so ``aiter_lines``) also breaks at, such as U+2028 or U+0085, inside a JSON string."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
    if buffer:
        yield buffer.decode()


async def stream_chat(
    client: httpx.AsyncClient,
    model: str,
    prompt: str,
    max_tokens: int,
    *,
    hang_up_after: int | None = None,
    timeout_s: float = 120.0,
) -> Result:
    """One streamed chat completion; ``hang_up_after`` closes the connection after that many content chunks."""
    import httpx

    out = Result()
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat_body(model, prompt, max_tokens)
            ) as response:
                out.status = response.status_code
                out.headers = dict(response.headers)
                if response.status_code != 200:
                    out.body = (await response.aread()).decode(errors="replace")
                    return out
                async for line in sse_lines(response):
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    if data == "[DONE]":
                        out.finished = True
                        break
                    event = json.loads(data)
                    if "error" in event:
                        out.error = f"error event: {event['error']}"
                        break
                    if event.get("choices") and event["choices"][0].get("delta", {}).get("content"):
                        if out.ttft_s is None:
                            out.ttft_s = time.monotonic() - started
                        out.chunks += 1
                        if hang_up_after is not None and out.chunks >= hang_up_after:
                            out.error = "hung up"
                            break
    except TimeoutError:
        out.error = f"no end within {timeout_s:.0f}s"
    except (httpx.HTTPError, OSError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        out.elapsed_s = time.monotonic() - started
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def client(base_url: str, api_key: str, *, connections: int = 256, timeout_s: float = 120.0) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=httpx.Timeout(timeout_s, connect=10.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


# --- the engine's own view: /metrics ------------------------------------------------------------------------------


def metrics(base_url: str) -> dict[str, float]:
    """vLLM's gauges and counters for the served model (sample name -> value, labels dropped)."""
    import httpx

    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    out: dict[str, float] = {}
    for match in re.finditer(r"^(vllm:[a-z_:]+)(?:\{[^}]*\})? (\S+)$", text, re.M):
        out[match.group(1)] = out.get(match.group(1), 0.0) + float(match.group(2))
    return out


def metric(base_url: str, name: str, **labels: str) -> float:
    """One vLLM sample's value summed over the series whose labels include ``labels`` (0 when none)."""
    import httpx

    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels.items() <= found.items():
            total += float(match.group(2))
    return total


def wait_for(condition: Any, timeout_s: float, every_s: float = 0.5) -> float | None:
    """Seconds until ``condition()`` is true, or None after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(every_s)
    return None


# --- the serve app's processes ------------------------------------------------------------------------------------


def engine_processes() -> list[Any]:
    """vLLM's engine-core processes on this machine (the replica spawns one; its CPU worker is its child)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "VLLM::EngineCore" or "VLLM::EngineCore" in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
    return found


def replica_processes() -> list[Any]:
    """The serve replica's worker process and everything under it (engine core, its CPU worker)."""
    import psutil

    replicas = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if "ServeReplica:" in " ".join(proc.info["cmdline"] or []) or "ServeReplica:" in (proc.info["name"] or ""):
                replicas.append(proc)
    tree = []
    for replica in replicas:
        with contextlib.suppress(psutil.Error):
            tree += [replica, *replica.children(recursive=True)]
    return tree


def rss_mib(processes: Sequence[Any]) -> float:
    import psutil

    total = 0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def replica_names() -> list[str]:
    import ray

    return [str(a["name"]) for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]


def replica_actor_name() -> str:
    names = replica_names()
    if len(names) != 1:
        raise RuntimeError(f"expected one serve replica, found {names}")
    return str(names[0])


# --- a TLS Redis with a password, as the GCS store ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Redis:
    port: int
    password: str
    ca_cert: Path

    @property
    def address(self) -> str:
        return f"rediss://127.0.0.1:{self.port}"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fault-tier-ca",
        "-keyout", str(ca_key), "-out", str(ca_cert))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return ca_cert, cert, key


@contextlib.contextmanager
def tls_redis(directory: Path, password: str) -> Iterator[Redis]:
    """Debian's redis-server on 127.0.0.1, TLS only (no plain port), ``requirepass``, nothing persisted."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    ca_cert, cert, key = _certificates(directory / "tls")
    port = free_port()
    argv = [
        server,
        "--bind", "127.0.0.1",
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca_cert),
        "--tls-auth-clients", "no",
        "--requirepass", password,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    log = (directory / "redis.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(directory / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield Redis(port, password, ca_cert)
    finally:
        stop(proc, 30)
        log.close()
