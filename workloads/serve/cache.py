"""Compiled-artifact cache: Neuron compile output kept in S3 so a restarted or new replica does not recompile.

Layout under ``artifact_cache_uri`` (``s3://bucket/prefix``)::

    <prefix>/<key>/<relative path of each file>
    <prefix>/<key>/MANIFEST.json     written last: {"files": {relative path: size}}

``key`` is a digest of everything that changes a compile (the engine's command line as the replica builds it, less
the name the model is served under, and the installed Neuron/vLLM versions), so artifacts of another model, engine
setting or SDK are never loaded.  A save is complete only once the manifest exists; a restore reads the manifest
first and downloads exactly the files it lists into a temporary sibling directory, checks their sizes, then renames
it into place, so a crash halfway never leaves a partial artifact directory for the engine to trip on.

The S3 client is passed in (boto3's in the cluster, credentials from EKS Pod Identity; a fake in tests).  Any cache
failure is logged and ignored: the worst case is the compile the cache exists to avoid, never a replica that does not
start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from . import launch
from .settings import ServeSettings

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
# Distributions whose version changes what a compile produces (absent ones are recorded as absent).
COMPILE_DISTRIBUTIONS = (
    "vllm",
    "vllm-neuron",
    "neuronx-distributed-inference",
    "neuronx-distributed",
    "neuronx-cc",
    "torch-neuronx",
)


class S3Client(Protocol):
    """The four calls of boto3's S3 client the cache uses."""

    def get_object(self, *, Bucket: str, Key: str) -> Mapping[str, Any]: ...  # noqa: N803 (boto3's names)

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> Any: ...  # noqa: N803

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None: ...  # noqa: N803

    def upload_file(self, Filename: str, Bucket: str, Key: str) -> None: ...  # noqa: N803


class CacheError(ValueError):
    """The cache URI or a manifest is malformed; the message is one line."""


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str  # without leading or trailing slash; may be empty

    def key_for(self, cache_key: str, relative: str) -> str:
        parts = [p for p in (self.prefix, cache_key, relative) if p]
        return "/".join(parts)


def parse_uri(uri: str, arg: str = "artifact_cache_uri") -> Location:
    """``s3://bucket/some/prefix`` -> Location(bucket, "some/prefix"); ``arg`` is the serve argument it came from."""
    bad = CacheError(f"serve args: {arg}={uri!r} is not allowed; allowed: s3://bucket[/prefix]")
    if not uri.startswith("s3://"):
        raise bad
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket or "/" in bucket or not bucket.replace("-", "").replace(".", "").isalnum():
        raise bad
    return Location(bucket=bucket, prefix=prefix.strip("/"))


def installed_versions(distributions: tuple[str, ...] = COMPILE_DISTRIBUTIONS) -> dict[str, str]:
    """Installed version of each distribution that shapes a compile ("absent" when not installed)."""
    out: dict[str, str] = {}
    for name in distributions:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def compile_argv(settings: ServeSettings) -> list[str]:
    """The engine's command line (``launch.engine_argv``: model, shape, dtype, the Neuron defaults such as the KV
    block count, extra args) less the name the model is served under, which no compile sees."""
    argv = launch.engine_argv(settings)
    at = argv.index("--served-model-name")
    return argv[:at] + argv[at + 2 :]


def cache_key(settings: ServeSettings, versions: Mapping[str, str]) -> str:
    """Digest of every input that changes the compiled artifacts: the engine's flags and the installed SDK."""
    inputs = {
        "device": settings.device,
        "engine_argv": compile_argv(settings),
        "versions": dict(sorted(versions.items())),
    }
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def local_files(root: Path) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file under root (empty if root does not exist)."""
    if not root.is_dir():
        return {}
    out: dict[str, int] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = path.stat().st_size
    return out


def _is_not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = str(response.get("Error", {}).get("Code", ""))
        return code in {"NoSuchKey", "404", "NotFound"}
    return False


# What a log line or error names: the compiled artifacts by default; workloads/serve/weights.py passes its own.
ARTIFACTS = "artifact cache"


def _read_manifest(client: S3Client, where: Location, key: str, what: str = ARTIFACTS) -> dict[str, int] | None:
    try:
        body = client.get_object(Bucket=where.bucket, Key=where.key_for(key, MANIFEST))["Body"].read()
    except Exception as exc:
        if _is_not_found(exc):
            return None
        raise
    files = json.loads(body).get("files")
    if not isinstance(files, dict) or not all(isinstance(v, int) for v in files.values()):
        raise CacheError(f"{what}: manifest of {key} is malformed")
    for rel in files:
        parts = Path(rel).parts
        if not rel or Path(rel).is_absolute() or ".." in parts or rel == MANIFEST:
            raise CacheError(f"{what}: manifest of {key} names an unsafe path {rel!r}")
    return files


# Outcomes of restore().
RESTORED = "restored"  # downloaded a complete copy from S3
LOCAL = "local"  # the local directory already held artifacts (a volume that outlived a container); S3 not read
ABSENT = "absent"  # S3 has no complete copy for this key
FAILED = "failed"  # S3 could not be read or the copy was bad; the engine compiles


def restore(client: S3Client, where: Location, key: str, dest: Path, what: str = ARTIFACTS) -> str:
    """Bring the files of ``key`` into ``dest`` unless it already holds some; one of the outcomes above."""
    if local_files(dest):
        log.info("%s: %s already holds files; not restoring", what, dest)
        return LOCAL
    started = time.monotonic()
    try:
        files = _read_manifest(client, where, key, what)
        if files is None:
            log.info("%s: nothing for %s at s3://%s/%s", what, key, where.bucket, where.key_for(key, ""))
            return ABSENT
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.restore-", dir=dest.parent))
        try:
            for rel, size in files.items():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(where.bucket, where.key_for(key, rel), str(target))
                if target.stat().st_size != size:
                    raise CacheError(f"{what}: {rel} has {target.stat().st_size} bytes, manifest says {size}")
            if dest.exists():
                dest.rmdir()  # empty (checked above)
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as exc:
        log.warning("%s: restore of %s failed, falling back: %s", what, key, exc)
        return FAILED
    log.info(
        "%s: restored %d files (%d bytes) of %s into %s in %.2f s",
        what,
        len(files),
        sum(files.values()),
        key,
        dest,
        time.monotonic() - started,
    )
    return RESTORED


def save(client: S3Client, where: Location, key: str, source: Path, what: str = ARTIFACTS) -> bool:
    """Upload every file under ``source`` and then the manifest; True if the upload completed."""
    files = local_files(source)
    if not files:
        log.warning("%s: %s is empty after the engine started; nothing to save", what, source)
        return False
    started = time.monotonic()
    try:
        for rel in files:
            client.upload_file(str(source / rel), where.bucket, where.key_for(key, rel))
        manifest = json.dumps({"files": files}, sort_keys=True).encode()
        client.put_object(Bucket=where.bucket, Key=where.key_for(key, MANIFEST), Body=manifest)
    except Exception as exc:
        log.warning("%s: save of %s failed: %s", what, key, exc)
        return False
    log.info("%s: saved %d files of %s in %.2f s", what, len(files), key, time.monotonic() - started)
    return True


def save_if_absent(client: S3Client, where: Location, key: str, source: Path, what: str = ARTIFACTS) -> bool:
    """``save`` unless S3 already holds a complete copy (another replica may have saved it meanwhile)."""
    try:
        if _read_manifest(client, where, key, what) is not None:
            log.info("%s: S3 already holds %s; not saving", what, key)
            return False
    except Exception as exc:
        log.warning("%s: cannot read the manifest of %s, saving anyway: %s", what, key, exc)
    return save(client, where, key, source, what)


@dataclass(frozen=True)
class ArtifactPlan:
    """Where this replica's compiled artifacts live locally and (optionally) in S3."""

    key: str
    local_dir: Path
    remote: Location | None


def plan(settings: ServeSettings, versions: Mapping[str, str]) -> ArtifactPlan | None:
    """The artifact plan of a Neuron replica (None on CPU, which compiles nothing)."""
    if settings.device != "neuron":
        return None
    key = cache_key(settings, versions)
    remote = parse_uri(settings.artifact_cache_uri) if settings.artifact_cache_uri else None
    return ArtifactPlan(key=key, local_dir=Path(settings.compiled_artifacts_dir) / key, remote=remote)


def boto3_client() -> S3Client:
    """boto3's S3 client with the default credential chain (EKS Pod Identity in the cluster)."""
    import boto3  # only in the serving image; never needed when the cache is off

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    client: S3Client = boto3.client("s3", region_name=region)
    return client
