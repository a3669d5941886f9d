"""Weights cache: a replica restores the model's weights from S3 and only the first one downloads them from the Hub.

The replica's start-up (``app.VLLMServer``) with a fake engine, an in-memory S3 and a stand-in Hub download; the real
boto3, huggingface_hub and S3 wire protocol are exercised by the e2e tier (tests/e2e/test_weights_e2e.py, moto).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.test_serve_app import VERSIONS, FakeRuntime, args
from tests.test_serve_cache import ClientError, FakeS3
from workloads.serve import app as serve_app
from workloads.serve import cache, weights

MODEL = "NousResearch/Meta-Llama-3-8B-Instruct"
FILES = {"config.json": b"{}", "model-00001-of-00002.safetensors": b"w" * 300, "tokenizer.json": b"{}"}


class FakeHub:
    """Stands in for weights.hub_download: writes the model's files, counts the calls, can be unreachable."""

    def __init__(self, *, reachable: bool = True) -> None:
        self.calls: list[tuple[str, str]] = []
        self.reachable = reachable

    def __call__(self, model: str, revision: str, dest: Path) -> None:
        self.calls.append((model, revision))
        if not self.reachable:
            raise OSError("the Hub cannot be reached")
        dest.mkdir(parents=True)
        for name, body in FILES.items():
            (dest / name).write_bytes(body)


def wargs(node: Path, **overrides: Any) -> dict[str, Any]:
    base = {
        "artifact_cache_uri": None,
        "weights_cache_uri": "s3://artifacts-bucket/model-weights",
        "weights_dir": str(node / "weights"),
    }
    return args(node, **{**base, **overrides})


def start(a: dict[str, Any], s3: Any, hub: FakeHub, s3_factory: Any = None) -> tuple[serve_app.VLLMServer, FakeRuntime]:
    runtime = FakeRuntime()
    server = serve_app.VLLMServer(
        a,
        runtime_factory=lambda: runtime,
        s3_factory=s3_factory or (lambda: s3),
        versions=lambda: VERSIONS,
        hub_download=hub,
    )

    async def go() -> None:
        await server.__serve_build_asgi_app__()
        for task in (server.save_task, server.weights_save_task):
            if task is not None:
                await task

    asyncio.run(go())
    return server, runtime


def model_arg(runtime: FakeRuntime) -> tuple[str, str]:
    argv = runtime.calls[0][1]
    return argv[argv.index("--model") + 1], argv[argv.index("--served-model-name") + 1]


def test_the_first_worker_downloads_and_uploads_the_next_restores_without_the_hub(tmp_path: Path) -> None:
    s3, hub = FakeS3(), FakeHub()
    first, runtime = start(wargs(tmp_path / "node1"), s3, hub)
    local = tmp_path / "node1" / "weights" / MODEL / "main"
    assert hub.calls == [(MODEL, "main")]
    assert first.weights_prepared is not None and first.weights_prepared.source == "hub"
    # the engine loads the local directory and still serves under its name
    assert model_arg(runtime) == (str(local), "llama")
    prefix = f"model-weights/{MODEL}/main"
    assert ("artifacts-bucket", f"{prefix}/{cache.MANIFEST}") in s3.objects
    assert s3.calls[-1] == f"put {prefix}/{cache.MANIFEST}"  # the manifest last

    unreachable = FakeHub(reachable=False)
    second, runtime2 = start(wargs(tmp_path / "node2"), s3, unreachable)
    assert unreachable.calls == []  # never asked the Hub
    assert second.weights_prepared is not None and second.weights_prepared.source == "s3"
    assert second.weights_save_task is None
    restored = tmp_path / "node2" / "weights" / MODEL / "main"
    assert model_arg(runtime2) == (str(restored), "llama")
    assert cache.local_files(restored) == cache.local_files(local) == {k: len(v) for k, v in FILES.items()}


def test_a_torn_upload_without_its_manifest_is_ignored(tmp_path: Path) -> None:
    s3, hub = FakeS3(), FakeHub()
    s3.fail_uploads_after = 1  # the first worker's upload stops after one file: no manifest
    start(wargs(tmp_path / "node1"), s3, hub)
    assert any(k.endswith(".safetensors") or k.endswith(".json") for _, k in s3.objects)
    assert not any(k.endswith(cache.MANIFEST) for _, k in s3.objects)
    s3.fail_uploads_after = None
    second, _ = start(wargs(tmp_path / "node2"), s3, hub)
    # the partial copy was not read: the second worker went to the Hub and completed the upload
    assert hub.calls == [(MODEL, "main")] * 2 and second.weights_prepared is not None
    assert second.weights_prepared.source == "hub"
    assert any(k.endswith(cache.MANIFEST) for _, k in s3.objects)


def test_an_unreadable_bucket_or_no_s3_client_costs_a_download_not_the_start(tmp_path: Path) -> None:
    s3, hub = FakeS3(), FakeHub()
    s3.deny_reads = True
    server, runtime = start(wargs(tmp_path / "a"), s3, hub)
    assert server.weights_prepared is not None and server.weights_prepared.source == "hub"
    assert model_arg(runtime)[0].endswith("/main")

    def no_client() -> Any:
        raise RuntimeError("no credentials")

    server, _ = start(wargs(tmp_path / "b"), FakeS3(), hub, s3_factory=no_client)
    assert server.weights_prepared is not None and server.weights_prepared.source == "hub"
    assert server.weights_save_task is None


def test_weights_left_on_the_volume_are_used_and_saved_if_s3_lacks_them(tmp_path: Path) -> None:
    s3, hub = FakeS3(), FakeHub()
    local = tmp_path / "weights" / MODEL / "main"
    hub(MODEL, "main", local)  # a container restart: the volume kept them
    hub.calls.clear()
    server, _ = start(wargs(tmp_path), s3, hub)
    assert hub.calls == [] and server.weights_prepared is not None and server.weights_prepared.source == "local"
    assert ("artifacts-bucket", f"model-weights/{MODEL}/main/{cache.MANIFEST}") in s3.objects


def test_no_hub_and_no_copy_fails_the_start(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot be reached"):
        start(wargs(tmp_path), FakeS3(), FakeHub(reachable=False))


def test_a_local_model_or_no_uri_touches_neither_s3_nor_the_hub(tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    s3, hub = FakeS3(), FakeHub()
    server, runtime = start(wargs(tmp_path, model=str(model_dir)), s3, hub)
    assert server.weights is None and s3.calls == [] and hub.calls == []
    assert model_arg(runtime)[0] == str(model_dir)
    server, runtime = start(wargs(tmp_path, weights_cache_uri=None), s3, hub)
    assert server.weights is None and s3.calls == [] and hub.calls == []
    assert model_arg(runtime)[0] == MODEL  # the engine downloads it itself, as without the cache


def test_a_revision_is_its_own_entry(tmp_path: Path) -> None:
    s3, hub = FakeS3(), FakeHub()
    start(wargs(tmp_path / "a"), s3, hub)
    start(wargs(tmp_path / "b", model_revision="0123abc"), s3, hub)
    assert hub.calls == [(MODEL, "main"), (MODEL, "0123abc")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"weights_cache_uri": "gs://b/w"}, "serve args: weights_cache_uri='gs://b/w' is not allowed; allowed: s3://"),
        ({"model": "no-slash"}, "serve args: model='no-slash' is not allowed; allowed: a Hub repository id org/name"),
        ({"model_revision": "../x"}, "serve args: model_revision='../x' is not allowed; allowed: a branch, tag"),
    ],
)
def test_bad_weights_args_fail_the_deploy_with_one_line(
    tmp_path: Path,
    overrides: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")) as err:
        serve_app.validated(wargs(tmp_path, **overrides))
    assert "\n" not in str(err.value)


class BarrierS3(FakeS3):
    """Every first download of a restore waits until the other restore is downloading too (or times out)."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=5)
        self.waited: set[str] = set()

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None:  # noqa: N803 (boto3's names)
        kind = Key.split("/", 1)[0]
        if kind not in self.waited:
            self.waited.add(kind)
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError as exc:
                raise ClientError("SlowDown") from exc
        super().download_file(Bucket, Key, Filename)


def test_weights_and_compiled_artifacts_are_restored_at_the_same_time(tmp_path: Path) -> None:
    # Seed S3 with both (a first worker), then start a second one whose S3 lets a restore proceed only while the other
    # restore runs too: restored one after the other, the first restore would time out and fall back.
    s3 = BarrierS3()
    s3.barrier = threading.Barrier(1)
    both = {**wargs(tmp_path / "node1"), "artifact_cache_uri": "s3://artifacts-bucket/compiled"}
    start(both, s3, FakeHub())
    s3.barrier, s3.waited = threading.Barrier(2, timeout=5), set()
    both2 = {**wargs(tmp_path / "node2"), "artifact_cache_uri": "s3://artifacts-bucket/compiled"}
    hub = FakeHub(reachable=False)
    server, runtime = start(both2, s3, hub)
    assert s3.waited == {"compiled", "model-weights"}
    assert server.restore_result == cache.RESTORED and not runtime.compiled
    assert server.weights_prepared is not None and server.weights_prepared.source == "s3" and hub.calls == []


def test_plan_keys_by_model_and_revision() -> None:
    from workloads.serve.settings import ServeSettings

    s = ServeSettings.from_args(wargs(Path("/cache")))
    p = weights.plan(s)
    assert p is not None and p.key == f"{MODEL}/main"
    assert p.remote == cache.Location("artifacts-bucket", "model-weights")
    assert p.local_dir == Path("/cache/weights") / MODEL / "main"


class RacingS3(FakeS3):
    """Another replica of the same worker finishes its restore into the shared directory while this one downloads."""

    def __init__(self, dest: Path) -> None:
        super().__init__()
        self.dest = dest
        self.race = False

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None:  # noqa: N803 (boto3's names)
        super().download_file(Bucket, Key, Filename)
        if self.race and not self.dest.exists():
            FakeHub()(MODEL, "main", self.dest)


def test_replicas_sharing_a_volume_use_the_copy_that_landed_first(tmp_path: Path) -> None:
    node = tmp_path / "node2"
    s3 = RacingS3(node / "weights" / MODEL / "main")
    start(wargs(tmp_path / "node1"), s3, FakeHub())
    s3.race = True
    hub = FakeHub(reachable=False)
    server, runtime = start(wargs(node), s3, hub)
    # this replica's rename found the other's complete directory: it serves from it, without the Hub
    assert hub.calls == [] and server.weights_prepared is not None and server.weights_prepared.source == "local"
    assert model_arg(runtime)[0] == str(node / "weights" / MODEL / "main")


def test_a_download_that_loses_the_race_uses_the_winners_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "weights" / MODEL / "main"
    calls: list[dict[str, Any]] = []

    def snapshot_download(**kw: Any) -> str:
        calls.append(kw)
        for name, body in FILES.items():
            (Path(kw["local_dir"]) / name).write_bytes(body)
        if not dest.exists():
            FakeHub()(MODEL, "main", dest)  # the other replica renames its download into place first
        return str(kw["local_dir"])

    monkeypatch.setitem(sys.modules, "huggingface_hub", SimpleNamespace(snapshot_download=snapshot_download))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    weights.hub_download(MODEL, "main", dest)
    assert cache.local_files(dest) == {k: len(v) for k, v in FILES.items()}
    assert [p.name for p in dest.parent.iterdir()] == ["main"]  # no staging directory left behind
    assert calls[0]["endpoint"] == "http://127.0.0.1:9" and "original/*" in calls[0]["ignore_patterns"]
    # without a winner, a failed rename is an error, not a silent start from nothing
    monkeypatch.setattr(Path, "rename", lambda self, target: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        weights.hub_download(MODEL, "main", tmp_path / "other" / MODEL / "main")
