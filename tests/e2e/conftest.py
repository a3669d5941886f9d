"""End-to-end and fault tiers: the project's serve application under a local Ray, on the vLLM CPU engine, with a tiny
model, asking for an API key as the cluster does.

Run with ``make e2e`` and ``make faults`` (their own venv, ``requirements-e2e.txt``).  Nothing here is imported by the
default tier's modules; Ray, vLLM and torch are imported inside the fixtures only.  The fault tier starts a server of
its own (it kills parts of it), with its GCS in a TLS Redis the way prod keeps it in ElastiCache. The browser tier
(``make browser``, ``test_browser.py``) shares the e2e serve app; its module imports Selenium, so a venv without
Selenium leaves it out of collection unless the run asks for the ``browser`` marker (then the import error shows).
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.bench_servers import free_port, serve_app, tiny_settings
from workloads.rayservice import REDIS_CA_CERT_ENV
from workloads.serve.settings import API_KEY_ENV

from . import load, tiny_model

ROOT = Path(__file__).resolve().parents[2]
SERVED_MODEL = "tiny-llama"


def _asked_for(config: pytest.Config, marker: str) -> bool:
    """The run's ``-m`` expression selects ``marker`` (names it, and not as ``not marker``)."""
    expr = config.getoption("markexpr") or ""
    return marker in expr.split() and f"not {marker}" not in expr


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name == "test_browser.py" and importlib.util.find_spec("selenium") is None:
        return not _asked_for(config, "browser")
    return None


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # http://127.0.0.1:PORT
    model: str
    startup_s: float
    model_dir: Path  # the tiny model (and its tokenizer), for clients that tokenize locally (tools/bench_local.py)
    api_key: str  # what the replicas' gate asks for, as LLM_API_KEY does in the cluster
    metrics_port: int  # the node's Ray metrics agent (a Ray pod's port 8080 in the cluster)
    redis: load.Redis | None = None  # the GCS store of the fault tier's server

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/v1"


def _need_ray(request: pytest.FixtureRequest) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        message = "the e2e and fault tiers need Ray and vLLM: run `make e2e` (venv-e2e from requirements-e2e.txt)"
        if any(_asked_for(request.config, m) for m in ("e2e", "browser", "faults")):
            pytest.fail(message)  # asked for explicitly: missing dependencies are a failure, not a skip
        pytest.skip(message)  # a plain `pytest` in the default venv, which `make test` never does


def _serve(request: pytest.FixtureRequest, *, prefix: str, gcs_store: bool) -> Iterator[Endpoint]:
    _need_ray(request)
    # Short path: Ray's unix sockets live under the temp dir and have a ~107-character limit.
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    key = "e2e-" + secrets.token_hex(16)
    try:
        with ExitStack() as stack:
            model_dir = tiny_model.build(work / "model")
            env = {API_KEY_ENV: key}
            init: dict[str, object] = {}
            redis = None
            if gcs_store:
                # As in prod (gcsFaultToleranceOptions): rediss:// address, a password, the CA bundle to verify with.
                redis = stack.enter_context(load.tls_redis(work / "redis", secrets.token_hex(16)))
                env |= {"RAY_REDIS_ADDRESS": redis.address, REDIS_CA_CERT_ENV: str(redis.ca_cert)}
                init["_redis_password"] = redis.password
            started = time.monotonic()
            metrics_port = free_port()
            # The same start-up the local benchmark uses: Serve runs build_app with serveConfigV2's args.
            settings = tiny_settings(model_dir, SERVED_MODEL, require_api_key=True)
            try:
                base_url = stack.enter_context(
                    serve_app(settings, work, extra_env=env, init_options=init, metrics_export_port=metrics_port)
                )
            except (RuntimeError, TimeoutError) as exc:
                pytest.fail(str(exc))
            yield Endpoint(base_url, SERVED_MODEL, time.monotonic() - started, model_dir, key, metrics_port, redis)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    yield from _serve(request, prefix="e2e-", gcs_store=False)


@pytest.fixture(scope="module")
def fault_endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    yield from _serve(request, prefix="faults-", gcs_store=True)
