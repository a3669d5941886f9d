"""Weights cache: the model's files kept in the stack's bucket, so only the first worker downloads them from the Hub.

Layout under ``weights_cache_uri`` (``s3://bucket/prefix``), the same save/restore as the compiled artifacts
(``cache.py``: files first, manifest last, restore into a temporary sibling then rename)::

    <prefix>/<model id>/<revision>/<relative path of each file>
    <prefix>/<model id>/<revision>/MANIFEST.json     written last

A replica restores the weights of its model and revision from S3; only when S3 holds no complete copy (or cannot be
read) does it download them from the Hugging Face Hub, into a temporary sibling renamed into place once complete, and
upload them in the background after the engine started.  The engine then loads the local directory (``--model DIR``)
and never asks the Hub.  A copy without its manifest (an upload cut short) is never read.  Cache failures only cost
the Hub download they would have saved; a Hub that cannot be reached when S3 has no copy fails the start, as before.

Only the files the engine loads are fetched (``PATTERNS``): safetensors, the configs, the tokenizer and the chat
template, not the repository's ``original/`` checkpoint (Meta's Llama 3 repositories carry a second 16 GB copy there).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .settings import ServeSettings

log = logging.getLogger(__name__)

WHAT = "weights cache"
PATTERNS = ("*.json", "*.safetensors", "*.jinja", "*.model", "*.tiktoken", "*.txt")
IGNORED = ("original/*",)
# A Hub repository id ("org/name") and a revision (branch, tag or commit): path segments of the S3 key.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REVISION = re.compile(r"^[\w.-]+(/[\w.-]+)*$")


class WeightsError(ValueError):
    """The model id or revision cannot name a weights cache entry; the message is one line."""


def is_local_model(model: str) -> bool:
    """``model`` names a directory (the e2e tier's tiny model), not a Hub repository: nothing to cache."""
    return model.startswith(("/", "./", "../")) or Path(model).is_dir()


@dataclass(frozen=True)
class WeightsPlan:
    """Where this replica's weights live locally and in S3."""

    model: str
    revision: str
    key: str  # <model id>/<revision>
    local_dir: Path
    remote: cache.Location


def plan(settings: ServeSettings) -> WeightsPlan | None:
    """The weights plan of a replica (None without a weights cache URI, or for a model already on local disk)."""
    if not settings.weights_cache_uri or is_local_model(settings.model):
        return None
    remote = cache.parse_uri(settings.weights_cache_uri, "weights_cache_uri")
    if not _REPO_ID.match(settings.model) or ".." in settings.model:
        allowed = "a Hub repository id org/name"
        raise WeightsError(f"serve args: model={settings.model!r} is not allowed; allowed: {allowed}")
    revision = settings.model_revision
    if not _REVISION.match(revision) or ".." in revision.split("/"):
        raise WeightsError(f"serve args: model_revision={revision!r} is not allowed; allowed: a branch, tag or commit")
    key = f"{settings.model}/{revision}"
    return WeightsPlan(settings.model, revision, key, Path(settings.weights_dir) / key, remote)


def hub_download(model: str, revision: str, dest: Path) -> None:
    """The engine's files of ``model`` at ``revision`` from the Hugging Face Hub into ``dest``, which exists only once
    the download is complete.  ``HF_TOKEN`` comes from the environment; so does ``HF_ENDPOINT``, read here at call
    time (huggingface_hub reads it once, at import)."""
    from huggingface_hub import snapshot_download  # in the serving image; not needed by the render

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-", dir=dest.parent))
    try:
        snapshot_download(
            repo_id=model,
            revision=revision,
            local_dir=staging,
            allow_patterns=list(PATTERNS),
            ignore_patterns=list(IGNORED),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # the Hub client's bookkeeping, not the model's
        try:
            if dest.exists() and not cache.local_files(dest):
                dest.rmdir()
            staging.rename(dest)
        except OSError:
            if not cache.local_files(dest):
                raise
            # Another replica of this worker (they share the volume) completed first: its copy is the same files.
            log.info("%s: %s was completed by another replica meanwhile; using it", WHAT, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class Prepared:
    """What the replica hands to the engine, and whether S3 should get a copy after it started."""

    model_path: str  # --model: the local directory of the weights
    source: str  # "s3" (restored), "local" (the volume had them), "hub" (downloaded)
    seconds: float
    client: cache.S3Client | None  # set when the weights should be uploaded (downloaded from the Hub, S3 readable)


def prepare(
    p: WeightsPlan,
    s3_factory: Callable[[], cache.S3Client],
    download: Callable[[str, str, Path], None] = hub_download,
) -> Prepared:
    """Restore the weights from S3, or download them from the Hub when S3 has no complete copy."""
    started = time.monotonic()
    client: cache.S3Client | None
    try:
        client = s3_factory()
    except Exception as exc:  # the cache is an optimisation: without S3 the Hub still serves the weights
        log.warning("%s: no S3 client, downloading from the Hub: %s", WHAT, exc)
        client = None
    outcome = cache.FAILED if client is None else cache.restore(client, p.remote, p.key, p.local_dir, WHAT)
    if outcome == cache.FAILED and cache.local_files(p.local_dir):
        # The replicas of one worker share its volume: another one's restore or download completed first.
        outcome = cache.LOCAL
    if outcome in (cache.RESTORED, cache.LOCAL):
        source = "s3" if outcome == cache.RESTORED else "local"
        # A copy on the volume (a restarted container) may be one S3 never got: save_if_absent checks.
        return Prepared(str(p.local_dir), source, time.monotonic() - started, client if source == "local" else None)
    download(p.model, p.revision, p.local_dir)
    seconds = time.monotonic() - started
    log.info("%s: downloaded %s@%s from the Hub in %.2f s", WHAT, p.model, p.revision, seconds)
    return Prepared(str(p.local_dir), "hub", seconds, client)


def save(client: cache.S3Client, p: WeightsPlan) -> bool:
    """Upload the weights unless S3 already holds a complete copy; True if this call uploaded them."""
    return cache.save_if_absent(client, p.remote, p.key, p.local_dir, WHAT)
