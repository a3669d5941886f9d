"""Compiled-artifact cache: key, restore and save against an in-memory S3 stand-in (no network, no boto3)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from workloads.serve import cache, launch
from workloads.serve.settings import ServeSettings

ARGS: dict[str, Any] = {
    "model": "NousResearch/Meta-Llama-3-8B-Instruct",
    "served_model_name": "llama",
    "device": "neuron",
    "tensor_parallel_size": 2,
    "max_model_len": 4096,
    "max_num_seqs": 4,
    "artifact_cache_uri": "s3://artifacts-bucket/neuron/compiled",
}
VERSIONS = {"vllm": "0.16.0", "neuronx-cc": "2.31.1"}


class ClientError(Exception):
    """Shaped like botocore's: the error code sits in ``response["Error"]["Code"]``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}}


class FakeS3:
    """The four S3 calls the cache makes, on a dict; can fail after N uploads or on every read."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.calls: list[str] = []
        self.fail_uploads_after: int | None = None
        self.deny_reads = False

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        self.calls.append(f"get {Key}")
        if self.deny_reads:
            raise ClientError("AccessDenied")
        if (Bucket, Key) not in self.objects:
            raise ClientError("NoSuchKey")
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        self.calls.append(f"put {Key}")
        self.objects[(Bucket, Key)] = Body
        return {}

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None:  # noqa: N803 (boto3's names)
        self.calls.append(f"download {Key}")
        if (Bucket, Key) not in self.objects:
            raise ClientError("404")
        Path(Filename).write_bytes(self.objects[(Bucket, Key)])

    def upload_file(self, Filename: str, Bucket: str, Key: str) -> None:  # noqa: N803 (boto3's names)
        uploads = sum(c.startswith("upload") for c in self.calls)
        self.calls.append(f"upload {Key}")
        if self.fail_uploads_after is not None and uploads >= self.fail_uploads_after:
            raise ClientError("SlowDown")
        self.objects[(Bucket, Key)] = Path(Filename).read_bytes()


def settings(**overrides: Any) -> ServeSettings:
    return ServeSettings.from_args({**ARGS, **overrides})


def compiled_tree(root: Path) -> Path:
    (root / "context_encoding_model").mkdir(parents=True)
    (root / "model.pt").write_bytes(b"neff" * 100)
    (root / "neuron_config.json").write_text('{"tp_degree": 2}')
    (root / "context_encoding_model" / "graph.neff").write_bytes(b"\x00\x01" * 50)
    return root


WHERE = cache.Location(bucket="artifacts-bucket", prefix="neuron/compiled")


def test_parse_uri() -> None:
    assert cache.parse_uri("s3://artifacts-bucket/neuron/compiled/") == WHERE
    assert cache.parse_uri("s3://b") == cache.Location("b", "")
    assert cache.Location("b", "").key_for("k", "x/y") == "k/x/y"


@pytest.mark.parametrize("uri", ["https://b/p", "s3://", "s3:///p", "s3://bad_bucket!/p"])
def test_bad_uri_fails_with_one_line(uri: str) -> None:
    with pytest.raises(cache.CacheError, match=r"^serve args: artifact_cache_uri=.* is not allowed; allowed: s3://"):
        cache.parse_uri(uri)


def test_key_is_stable_and_changes_with_every_compile_input() -> None:
    base = cache.cache_key(settings(), VERSIONS)
    assert base == cache.cache_key(settings(), dict(reversed(list(VERSIONS.items()))))
    assert len(base) == 32
    variants = [
        cache.cache_key(settings(model="other/model"), VERSIONS),
        cache.cache_key(settings(tensor_parallel_size=8), VERSIONS),
        cache.cache_key(settings(max_model_len=8192), VERSIONS),
        cache.cache_key(settings(max_num_seqs=8), VERSIONS),
        cache.cache_key(settings(block_size=32), VERSIONS),
        cache.cache_key(settings(dtype="float16"), VERSIONS),
        cache.cache_key(settings(extra_engine_args={"additional_config": {"x": 1}}), VERSIONS),
        cache.cache_key(settings(), {**VERSIONS, "neuronx-cc": "2.32.0"}),
        cache.cache_key(settings(), {**VERSIONS, "vllm": "0.17.0"}),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # What does not change a compile does not change the key.
    assert cache.cache_key(settings(served_model_name="renamed", artifact_cache_uri=None), VERSIONS) == base
    assert cache.cache_key(settings(compiled_artifacts_dir="/elsewhere"), VERSIONS) == base


def test_key_follows_the_flags_the_engine_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is taken from the engine's command line, so a new Neuron default (e.g. the KV block count the
    contiguous layout needs) keys new artifacts without anyone remembering to list it."""
    base = cache.cache_key(settings(), VERSIONS)
    assert "--num-gpu-blocks-override" in cache.compile_argv(settings())
    assert "--served-model-name" not in cache.compile_argv(settings())
    defaults = launch.neuron_default_flags
    monkeypatch.setattr(launch, "neuron_default_flags", lambda s: {**defaults(s), "num_gpu_blocks_override": 9})
    assert cache.cache_key(settings(), VERSIONS) != base


def test_installed_versions_records_absent_distributions() -> None:
    versions = cache.installed_versions(("pytest", "surely-not-installed-dist"))
    assert versions["surely-not-installed-dist"] == "absent"
    assert versions["pytest"][0].isdigit()


def test_plan_only_for_neuron(tmp_path: Path) -> None:
    p = cache.plan(settings(compiled_artifacts_dir=str(tmp_path)), VERSIONS)
    assert p is not None and p.remote == WHERE
    assert p.local_dir == tmp_path / cache.cache_key(settings(), VERSIONS)
    assert cache.plan(settings(artifact_cache_uri=None), VERSIONS).remote is None  # type: ignore[union-attr]
    assert cache.plan(settings(device="cpu"), VERSIONS) is None


def test_save_then_restore_round_trip(tmp_path: Path) -> None:
    s3 = FakeS3()
    source = compiled_tree(tmp_path / "compiled" / "k1")
    assert cache.save(s3, WHERE, "k1", source) is True
    assert s3.calls[-1] == "put neuron/compiled/k1/MANIFEST.json"  # manifest last: a save is complete only then
    manifest = json.loads(s3.objects[("artifacts-bucket", "neuron/compiled/k1/MANIFEST.json")])
    assert manifest == {"files": cache.local_files(source)}

    dest = tmp_path / "other-node" / "k1"
    assert cache.restore(s3, WHERE, "k1", dest) == cache.RESTORED
    assert cache.local_files(dest) == cache.local_files(source)
    assert (dest / "context_encoding_model" / "graph.neff").read_bytes() == b"\x00\x01" * 50
    assert [p.name for p in dest.parent.iterdir()] == ["k1"]  # no staging directory left behind


def test_restore_without_manifest_is_absent(tmp_path: Path) -> None:
    assert cache.restore(FakeS3(), WHERE, "k1", tmp_path / "k1") == cache.ABSENT
    assert not (tmp_path / "k1").exists()


def test_interrupted_save_is_never_restored(tmp_path: Path) -> None:
    s3 = FakeS3()
    s3.fail_uploads_after = 1
    assert cache.save(s3, WHERE, "k1", compiled_tree(tmp_path / "src")) is False
    assert not any(k.endswith(cache.MANIFEST) for _, k in s3.objects)
    assert cache.restore(s3, WHERE, "k1", tmp_path / "dest") == cache.ABSENT


def test_truncated_object_fails_restore_and_leaves_nothing(tmp_path: Path) -> None:
    s3 = FakeS3()
    cache.save(s3, WHERE, "k1", compiled_tree(tmp_path / "src"))
    s3.objects[("artifacts-bucket", "neuron/compiled/k1/model.pt")] = b"short"
    dest = tmp_path / "dest" / "k1"
    assert cache.restore(s3, WHERE, "k1", dest) == cache.FAILED
    assert not dest.exists()
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", cache.MANIFEST])
def test_manifest_with_unsafe_path_is_rejected(tmp_path: Path, bad: str) -> None:
    s3 = FakeS3()
    s3.objects[("artifacts-bucket", "neuron/compiled/k1/MANIFEST.json")] = json.dumps({"files": {bad: 1}}).encode()
    assert cache.restore(s3, WHERE, "k1", tmp_path / "k1") == cache.FAILED
    assert not [c for c in s3.calls if c.startswith("download")]


def test_denied_read_fails_soft(tmp_path: Path) -> None:
    s3 = FakeS3()
    s3.deny_reads = True
    assert cache.restore(s3, WHERE, "k1", tmp_path / "k1") == cache.FAILED


def test_existing_local_artifacts_are_kept(tmp_path: Path) -> None:
    s3 = FakeS3()
    dest = compiled_tree(tmp_path / "k1")
    assert cache.restore(s3, WHERE, "k1", dest) == cache.LOCAL
    assert s3.calls == []


def test_save_if_absent_does_not_overwrite_a_complete_copy(tmp_path: Path) -> None:
    s3 = FakeS3()
    src = compiled_tree(tmp_path / "src")
    assert cache.save_if_absent(s3, WHERE, "k1", src) is True
    uploads = len([c for c in s3.calls if c.startswith("upload")])
    assert cache.save_if_absent(s3, WHERE, "k1", src) is False
    assert len([c for c in s3.calls if c.startswith("upload")]) == uploads


def test_save_of_empty_directory_uploads_nothing(tmp_path: Path) -> None:
    s3 = FakeS3()
    assert cache.save(s3, WHERE, "k1", tmp_path / "missing") is False
    assert s3.calls == []
