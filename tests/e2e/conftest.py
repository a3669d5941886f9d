"""End-to-end tier: the project's serve application under a local Ray, on the vLLM CPU engine, with a tiny model.

Run with ``make e2e`` (its own venv, ``requirements-e2e.txt``).  Nothing here is imported by the default tier's
modules; Ray, vLLM and torch are imported inside the session fixture only. The browser tier (``make browser``,
``test_browser.py``) shares the serve app; its module imports Selenium, so a venv without Selenium leaves it out of
collection unless the run asks for the ``browser`` marker (then the import error shows).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.bench_servers import free_port, serve_app, tiny_settings

from . import tiny_model

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
    metrics_port: int  # the node's Ray metrics agent (a Ray pod's port 8080 in the cluster)

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/v1"


@pytest.fixture(scope="session")
def endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    try:
        import ray  # noqa: F401
    except ImportError:
        message = "the e2e tier needs Ray and vLLM: run `make e2e` (venv-e2e from requirements-e2e.txt)"
        if _asked_for(request.config, "e2e") or _asked_for(request.config, "browser"):
            pytest.fail(message)  # asked for explicitly: missing dependencies are a failure, not a skip
        pytest.skip(message)  # a plain `pytest` in the default venv, which `make test` never does
    # Short path: Ray's unix sockets live under the temp dir and have a ~107-character limit.
    work = Path(tempfile.mkdtemp(prefix="e2e-", dir="/tmp"))
    try:
        model_dir = tiny_model.build(work / "model")
        started = time.monotonic()
        metrics_port = free_port()
        # The same start-up the local benchmark uses: Serve runs build_app with serveConfigV2's args.
        try:
            with serve_app(tiny_settings(model_dir, SERVED_MODEL), work, metrics_export_port=metrics_port) as base_url:
                yield Endpoint(base_url, SERVED_MODEL, time.monotonic() - started, model_dir, metrics_port)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc))
    finally:
        shutil.rmtree(work, ignore_errors=True)
