"""The replica's start-up sequence and the application builder, with a fake vLLM runtime, S3 and ``ray.serve``.

Also checks the package can be what the cluster mounts: ``.py`` files only, relative imports only, importable under
another name (``llm_serve``) without Ray or vLLM installed.
"""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests.test_serve_cache import FakeS3, compiled_tree
from workloads.serve import app as serve_app
from workloads.serve import cache
from workloads.serve.settings import APP_IMPORT_PATH, DEPLOYMENT_NAME, SERVE_PACKAGE, ServeSettings

ROOT = Path(__file__).resolve().parents[1]
SERVE_DIR = ROOT / "workloads" / "serve"
VERSIONS = {"vllm": "0.16.0"}


def args(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "NousResearch/Meta-Llama-3-8B-Instruct",
        "served_model_name": "llama",
        "device": "neuron",
        "tensor_parallel_size": 2,
        "max_model_len": 4096,
        "max_num_seqs": 4,
        "artifact_cache_uri": "s3://artifacts-bucket/compiled",
        "compiled_artifacts_dir": str(tmp_path / "artifacts"),
    }
    return {**base, **overrides}


class FakeRuntime:
    """Stands in for compat.VLLMOpenAI; on start, 'compiles' into NEURON_COMPILED_ARTIFACTS if it is empty."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.compiled = False
        self.healthy = True

    def parse_args(self, argv: list[str]) -> SimpleNamespace:
        self.calls.append(("parse_args", argv))
        return SimpleNamespace(argv=argv)

    async def start(self, engine_args: Any) -> None:
        artifacts = os.environ.get("NEURON_COMPILED_ARTIFACTS")
        self.calls.append(("start", artifacts))
        if artifacts and not cache.local_files(Path(artifacts)):
            compiled_tree(Path(artifacts))
            self.compiled = True

    async def build_asgi_app(self, engine_args: Any) -> str:
        self.calls.append(("build_asgi_app",))
        return "ASGI_APP"

    async def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine dead")

    def shutdown(self) -> None:
        self.calls.append(("shutdown",))


@pytest.fixture(autouse=True)
def _restore_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    # The replica exports these variables; monkeypatch puts back their original state after each test.
    for name in ("NEURON_COMPILED_ARTIFACTS",):
        monkeypatch.setenv(name, "unset-by-fixture")
        monkeypatch.delenv(name)


def start_replica(a: dict[str, Any], s3: FakeS3) -> tuple[serve_app.VLLMServer, FakeRuntime, Any]:
    runtime = FakeRuntime()
    server = serve_app.VLLMServer(a, runtime_factory=lambda: runtime, s3_factory=lambda: s3, versions=lambda: VERSIONS)

    async def go() -> Any:
        asgi = await server.__serve_build_asgi_app__()
        if server.save_task is not None:
            await server.save_task
        return asgi

    return server, runtime, asyncio.run(go())


def test_cold_start_compiles_then_saves_and_next_replica_restores(tmp_path: Path) -> None:
    s3 = FakeS3()
    first, runtime, asgi = start_replica(args(tmp_path / "node1"), s3)
    assert asgi.app == "ASGI_APP"  # vLLM's app, behind the gate
    assert first.restore_result == cache.ABSENT and runtime.compiled
    key = cache.cache_key(ServeSettings.from_args(args(tmp_path)), VERSIONS)
    artifacts = tmp_path / "node1" / "artifacts" / key
    # The engine was pointed at the per-key directory and started after the restore attempt.
    assert ("start", str(artifacts)) in runtime.calls
    assert os.environ["NEURON_COMPILED_ARTIFACTS"] == str(artifacts)
    assert ("artifacts-bucket", f"compiled/{key}/{cache.MANIFEST}") in s3.objects

    second, runtime2, _ = start_replica(args(tmp_path / "node2"), s3)
    assert second.restore_result == cache.RESTORED
    assert not runtime2.compiled  # loaded what the first replica compiled
    assert second.save_task is None
    assert cache.local_files(tmp_path / "node2" / "artifacts" / key) == cache.local_files(artifacts)


def test_engine_argv_comes_from_the_settings(tmp_path: Path) -> None:
    _, runtime, _ = start_replica(args(tmp_path, artifact_cache_uri=None), FakeS3())
    argv = runtime.calls[0][1]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert [c[0] for c in runtime.calls][:3] == ["parse_args", "start", "build_asgi_app"]


def test_cache_off_touches_no_s3(tmp_path: Path) -> None:
    s3 = FakeS3()
    server, runtime, _ = start_replica(args(tmp_path, artifact_cache_uri=None), s3)
    assert s3.calls == [] and server.save_task is None
    assert runtime.compiled  # still compiles into the local artifacts directory


def test_cpu_replica_has_no_artifacts_and_no_neuron_env(tmp_path: Path) -> None:
    s3 = FakeS3()
    server, runtime, _ = start_replica(args(tmp_path, device="cpu", tensor_parallel_size=1), s3)
    assert server.artifacts is None and s3.calls == []
    assert ("start", None) in runtime.calls
    assert "NEURON_COMPILED_ARTIFACTS" not in os.environ


def test_unreadable_cache_still_starts_the_engine(tmp_path: Path) -> None:
    s3 = FakeS3()
    s3.deny_reads = True
    server, runtime, asgi = start_replica(args(tmp_path), s3)
    assert asgi.app == "ASGI_APP" and server.restore_result == cache.FAILED and runtime.compiled


def test_health_check_follows_the_engine_and_del_shuts_it_down(tmp_path: Path) -> None:
    server, runtime, _ = start_replica(args(tmp_path, artifact_cache_uri=None), FakeS3())
    asyncio.run(server.check_health())
    runtime.healthy = False
    with pytest.raises(RuntimeError, match="engine dead"):
        asyncio.run(server.check_health())
    server.__del__()
    assert runtime.calls[-1] == ("shutdown",)


def test_bad_args_fail_in_the_constructor(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device='tpu' is not allowed"):
        serve_app.VLLMServer(args(tmp_path, device="tpu"), runtime_factory=FakeRuntime)


def _fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A ``ray.serve`` with the two decorators build_app uses; records how they were called."""
    recorded: list[Any] = []

    def ingress(app: Any = None) -> Any:
        recorded.append(("ingress", app))
        return lambda cls: cls

    def deployment(**options: Any) -> Any:
        recorded.append(("deployment", options))

        def wrap(cls: Any) -> Any:
            return SimpleNamespace(bind=lambda *a: ("Application", cls, a))

        return wrap

    ray = ModuleType("ray")
    serve = ModuleType("ray.serve")
    serve.ingress = ingress  # type: ignore[attr-defined]
    serve.deployment = deployment  # type: ignore[attr-defined]
    ray.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.serve", serve)
    return recorded


def test_build_app_makes_one_late_bound_ingress_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = _fake_ray(monkeypatch)
    a = args(tmp_path)
    kind, cls, bound = serve_app.build_app(a)
    assert kind == "Application" and cls is serve_app.VLLMServer
    assert bound == (ServeSettings.from_args(a).to_args(),)
    assert recorded[0] == ("ingress", None)  # the app comes from __serve_build_asgi_app__
    options = recorded[1][1]
    assert options["name"] == DEPLOYMENT_NAME
    assert options["ray_actor_options"]["resources"] == {"neuron_cores": 2}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"replicas": 2}, "serve args: unknown key(s) replicas;"),
        ({"artifact_cache_uri": "gs://bucket/x"}, "serve args: artifact_cache_uri='gs://bucket/x' is not allowed"),
        ({"extra_engine_args": {"seed": {1, 2}}}, "serve args: extra_engine_args.seed={1, 2} is not allowed"),
    ],
)
def test_build_app_rejects_bad_args_before_deploying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any], message: str
) -> None:
    recorded = _fake_ray(monkeypatch)
    with pytest.raises(ValueError) as err:
        serve_app.build_app({**args(tmp_path), **overrides})
    assert str(err.value).startswith(message)
    assert recorded == []


def test_no_s3_client_means_no_cache_not_no_replica(tmp_path: Path) -> None:
    runtime = FakeRuntime()

    def broken() -> Any:
        raise ModuleNotFoundError("No module named 'boto3'")

    server = serve_app.VLLMServer(args(tmp_path), runtime_factory=lambda: runtime, s3_factory=broken)
    assert asyncio.run(server.__serve_build_asgi_app__()).app == "ASGI_APP"
    assert server.restore_result == cache.FAILED and server.save_task is None and runtime.compiled


def test_package_is_configmap_ready() -> None:
    """Only .py files, only relative imports of its own modules, Ray/vLLM/boto3 imported lazily, small."""
    files = sorted(p for p in SERVE_DIR.iterdir() if not p.name.startswith((".", "__pycache__")))
    assert all(p.suffix == ".py" for p in files), files
    assert sum(p.stat().st_size for p in files) < 256 * 1024  # a ConfigMap holds at most 1 MiB
    lazy = {"ray", "vllm", "boto3"}
    for path in files:
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] not in {"workloads", *lazy}, f"{path.name}: {node.module}"  # type: ignore[union-attr]
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in {"workloads", *lazy}, f"{path.name}: {alias.name}"


def test_importable_as_the_cluster_package_without_ray(tmp_path: Path) -> None:
    package = tmp_path / SERVE_PACKAGE
    package.mkdir()
    for path in SERVE_DIR.glob("*.py"):
        (package / path.name).write_text(path.read_text())
    module, attr = APP_IMPORT_PATH.split(":")
    code = textwrap.dedent(
        f"""
        import importlib, sys
        builder = getattr(importlib.import_module("{module}"), "{attr}")
        assert callable(builder)
        assert "ray" not in sys.modules and "vllm" not in sys.modules
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); exec({code!r})"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
