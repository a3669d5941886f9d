"""End-to-end tier: the project's serve application under a local Ray, on the vLLM CPU engine, with a tiny model.

Run with ``make e2e`` (its own venv, ``requirements-e2e.txt``).  Nothing here is imported by the default tier's
modules; Ray, vLLM and torch are imported inside the session fixture only.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.bench_servers import engine_env, free_port
from workloads.serve.settings import APP_NAME, ROUTE_PREFIX, ServeSettings

from . import tiny_model

ROOT = Path(__file__).resolve().parents[2]
SERVED_MODEL = "tiny-llama"
READY_TIMEOUT_S = 420
# The same entry point the RayService names (APP_IMPORT_PATH), under the repository's package name.
BUILDER = "workloads.serve.app:build_app"


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # http://127.0.0.1:PORT
    model: str
    startup_s: float
    model_dir: Path  # the tiny model (and its tokenizer), for clients that tokenize locally (tools/bench_local.py)

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/v1"


@pytest.fixture(scope="session")
def endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    try:
        import ray
    except ImportError:
        message = "the e2e tier needs Ray and vLLM: run `make e2e` (venv-e2e from requirements-e2e.txt)"
        if "e2e" in (request.config.getoption("markexpr") or ""):
            pytest.fail(message)  # asked for explicitly: missing dependencies are a failure, not a skip
        pytest.skip(message)  # a plain `pytest` in the default venv, which `make test` never does
    from ray import serve
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ApplicationStatus

    # Short path: Ray's unix sockets live under the temp dir and have a ~107-character limit.
    work = Path(tempfile.mkdtemp(prefix="e2e-", dir="/tmp"))
    env = engine_env(work)
    saved = {k: os.environ.get(k) for k in (*env, "RAY_TMPDIR")}
    os.environ.update(env)
    os.environ["RAY_TMPDIR"] = str(work / "ray")
    model_dir = tiny_model.build(work / "model")

    settings = ServeSettings(
        model=str(model_dir),
        served_model_name=SERVED_MODEL,
        device="cpu",
        tensor_parallel_size=1,
        max_model_len=1024,
        max_num_seqs=16,
        block_size=32,  # the CPU attention backend needs a multiple of 32
        dtype="float32",
        enforce_eager=True,
    )
    port = free_port()
    started = time.monotonic()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(work / "ray"),
        runtime_env={"env_vars": env},
        logging_level="WARNING",
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        module, attr = BUILDER.split(":")
        # What Serve does with serveConfigV2's import_path + args.
        app = call_user_app_builder_with_args_if_necessary(
            getattr(importlib.import_module(module), attr), settings.to_args()
        )
        serve._run(app, _blocking=False, name=APP_NAME, route_prefix=ROUTE_PREFIX)
        deadline = started + READY_TIMEOUT_S
        while True:
            status = serve.status().applications.get(APP_NAME)
            if status is not None and status.status == ApplicationStatus.RUNNING:
                break
            if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
                pytest.fail(f"serve app failed to deploy: {status.message}")
            if time.monotonic() > deadline:
                pytest.fail(f"serve app not RUNNING after {READY_TIMEOUT_S}s: {status}")
            time.sleep(1)
        yield Endpoint(
            base_url=f"http://127.0.0.1:{port}",
            model=SERVED_MODEL,
            startup_s=time.monotonic() - started,
            model_dir=model_dir,
        )
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            shutil.rmtree(work, ignore_errors=True)
