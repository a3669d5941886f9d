"""Weights in-region on the e2e tier: real boto3 against a moto S3 server, real huggingface_hub against a fake Hub,
the real serve app and vLLM CPU engine (tests/e2e/weights_start.py, one process per worker start).

- the first start downloads the tiny model from the Hub, serves it and uploads it to the bucket (manifest last);
- a second start, with the Hub stopped and HF_HUB_OFFLINE=1, restores the weights from the bucket and serves them;
- an upload without its manifest (cut short) is never restored: the worker goes to the Hub.

Timings are printed (``-s``): Hub download, S3 upload and S3 restore of the tiny model, and each start end to end.
The tiny model is ~0.4 MB, so these measure the path's fixed costs, not the 16 GB of Llama-3-8B (the timeline's figure,
tools/timeline_durations.yaml, is an estimate with its basis).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools.bench_servers import free_port, tiny_settings
from workloads.serve import cache, weights
from workloads.serve.settings import ServeSettings

from . import fake_hub, tiny_model

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "e2e/tiny-llama"
BUCKET = "weights-e2e"
PREFIX = "model-weights"
START_TIMEOUT_S = 600


@dataclass
class World:
    work: Path
    model_dir: Path
    s3_url: str
    env: dict[str, str]  # AWS credentials and the S3 endpoint, as a worker gets them

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pytest.importorskip("moto", reason="the weights e2e needs moto[server] (requirements-e2e.txt)")
    from moto.server import ThreadedMotoServer

    # Short path: Ray's unix sockets live under the work directory.
    work = Path(tmp_path_factory.mktemp("w", numbered=True))
    model_dir = tiny_model.build(work / "model")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ENDPOINT_URL_S3": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            w = World(work, model_dir, url, env)
            w.client().create_bucket(Bucket=BUCKET)
            yield w
    finally:
        server.stop()


def settings_for(world: World, node: str) -> ServeSettings:
    """The e2e tier's tiny-model settings, with the model named by its Hub id and the weights cache on."""
    return dataclasses.replace(
        tiny_settings(world.model_dir),
        model=REPO_ID,
        weights_cache_uri=f"s3://{BUCKET}/{PREFIX}",
        weights_dir=str(world.work / node / "weights"),
    )


def plan_for(world: World, node: str) -> weights.WeightsPlan:
    p = weights.plan(settings_for(world, node))
    assert p is not None
    return p


def manifest_key(p: weights.WeightsPlan) -> str:
    return p.remote.key_for(p.key, cache.MANIFEST)


def test_a_torn_upload_is_ignored_and_a_complete_one_restores(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    client = world.client()
    with fake_hub.serve(REPO_ID, world.model_dir) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HOME", str(world.work / "torn" / "hf"))
        p = plan_for(world, "torn-a")
        # an upload cut short: every file, no manifest
        for name in cache.local_files(world.model_dir):
            client.upload_file(str(world.model_dir / name), BUCKET, p.remote.key_for(p.key, name))
        torn = weights.prepare(p, world.client)
        assert torn.source == "hub" and hub.requests, "the partial copy must not be restored"
        started = time.monotonic()
        assert weights.save(client, p)
        upload_s = time.monotonic() - started
        assert client.head_object(Bucket=BUCKET, Key=manifest_key(p))["ContentLength"] > 0
        asked = len(hub.requests)
        q = plan_for(world, "torn-b")
        restored = weights.prepare(q, world.client)
        assert restored.source == "s3" and len(hub.requests) == asked
        assert cache.local_files(q.local_dir) == cache.local_files(p.local_dir)
    print(
        f"\nweights e2e (tiny model, {sum(cache.local_files(p.local_dir).values())} bytes): Hub download "
        f"{torn.seconds:.2f} s, S3 upload {upload_s:.2f} s, S3 restore {restored.seconds:.2f} s"
    )
    client.delete_object(Bucket=BUCKET, Key=manifest_key(p))  # the next test starts from an empty cache entry


def start(world: World, node: str, env: dict[str, str], wait_for: str | None = None) -> dict[str, Any]:
    spec = {
        "args": settings_for(world, node).to_args(),
        "work": str(world.work / node),
        "env": {**world.env, **env, "HF_HOME": str(world.work / node / "hf")},
        "wait_for": [BUCKET, wait_for] if wait_for else None,
    }
    path = world.work / f"{node}.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.e2e.weights_start", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"{node} start failed:\n{proc.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["model"] == "tiny-llama" and report["choices"][0]["message"]["content"] is not None
    return report


def test_the_second_worker_restores_from_s3_and_serves_without_the_hub(world: World) -> None:
    p = plan_for(world, "node1")
    with fake_hub.serve(REPO_ID, world.model_dir) as hub:
        first = start(world, "node1", {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}, wait_for=manifest_key(p))
        assert any("/resolve/" in r for r in hub.requests), "the first start must download from the Hub"
        dead_hub = hub.url
        asked = len(hub.requests)
    # The Hub is gone (nothing listens at its address) and the client is told it is offline.
    second = start(world, "node2", {"HF_ENDPOINT": dead_hub, "HF_HUB_OFFLINE": "1"})
    assert len(hub.requests) == asked
    q = plan_for(world, "node2")
    assert cache.local_files(q.local_dir) == cache.local_files(p.local_dir) != {}
    print(
        f"\nweights e2e starts (tiny model, serve app + vLLM CPU, to the first chat reply): Hub download + upload "
        f"{first['startup_s']:.1f} s (upload complete {first['upload_wait_s']:.1f} s after the reply), "
        f"S3 restore {second['startup_s']:.1f} s"
    )
