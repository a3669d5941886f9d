"""Open WebUI on 127.0.0.1 with the environment the stack's Deployment sets (the browser tier and ``make demo``).

    python -m tools.webui_local --version        # the open-webui release the image pins (for the Makefile)
    python -m tools.webui_local --requirement    # the pip requirement of that release

The ``open-webui`` package from PyPI, at the version of the image tag in ``workloads.openwebui.IMAGE`` (so the two
cannot drift), runs from its own venv (``venv-webui``). Its environment is the container env of the rendered
Deployment, changed only where a cluster value cannot work here:

- ``OPENAI_API_BASE_URLS`` points at the local serve app instead of the RayService's Service;
- ``DATA_DIR`` and ``HOME`` are local directories, ``PORT`` a free local port (the image's ``start.sh`` passes
  ``$PORT`` to uvicorn; here it goes to ``open-webui serve --port``);
- a ``secretKeyRef`` (the session key) takes a value made here, as the random password the stack puts in the Secret.

Added, never shadowing a variable the Deployment sets: what the image's Dockerfile sets and the PyPI package does
not (``IMAGE_ENV``: ``ENV=prod``, its model caches under the data directory), and the offline switches
(``OFFLINE_ENV``), so nothing downloads a model or checks for updates. Nothing else of the caller's environment
reaches the process (only ``PATH`` and the locale).

This module imports only the standard library and ``workloads`` at load, so the Makefile can ask it for the version
with a bare ``python3``; the render is imported when the env is read.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workloads import openwebui

if TYPE_CHECKING:
    from tools.render import Render

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = ROOT / "venv-webui"
PACKAGE = "open-webui"
READY_TIMEOUT_S = 300
STOP_TIMEOUT_S = 30

# Variables whose cluster value cannot work on this machine; each must be set by the Deployment.
LOCAL_KEYS = ("OPENAI_API_BASE_URLS", "DATA_DIR", "HOME", "PORT")

# Offline switches (open-webui's backend config, env.py and config.py at the pinned release): OFFLINE_MODE turns
# off the version check and the embedding/reranking/Whisper model updates and sets HF_HUB_OFFLINE; the rest say the
# same explicitly, so a release that drops one of OFFLINE_MODE's effects still downloads nothing.
OFFLINE_ENV: Mapping[str, str] = {
    "OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
    "RAG_RERANKING_MODEL_AUTO_UPDATE": "false",
    "WHISPER_MODEL_AUTO_UPDATE": "false",
    "ENABLE_VERSION_UPDATE_CHECK": "false",
    "AUTO_DOWNLOAD_NLTK": "false",
}


class WebUIError(RuntimeError):
    """The render, the venv or the server is not what the local Open WebUI needs; the message is one line."""


def version(image: str = openwebui.IMAGE) -> str:
    """The open-webui release of the image tag: ``ghcr.io/open-webui/open-webui:v0.12.4`` -> ``0.12.4``."""
    match = re.fullmatch(r"[^:@]+:v(\d+\.\d+\.\d+)", image)
    if match is None:
        raise WebUIError(f"workloads.openwebui.IMAGE={image!r} has no release tag; allowed: <repository>:vX.Y.Z")
    return match.group(1)


def requirement(image: str = openwebui.IMAGE) -> str:
    return f"{PACKAGE}=={version(image)}"


def image_env(data_dir: Path) -> dict[str, str]:
    """What the image's Dockerfile sets that matters to the backend, with its paths under ``data_dir`` as there."""
    cache = data_dir / "cache"
    return {
        "ENV": "prod",  # the image's; the package defaults to dev (API docs served, other socket checks)
        "USE_SLIM_DOCKER": "false",
        "USE_CUDA_DOCKER": "false",
        "RAG_EMBEDDING_MODEL": "sentence-transformers/all-MiniLM-L6-v2",
        "SENTENCE_TRANSFORMERS_HOME": str(cache / "embedding" / "models"),
        "HF_HOME": str(cache / "embedding" / "models"),
        "WHISPER_MODEL": "base",
        "WHISPER_MODEL_DIR": str(cache / "whisper" / "models"),
        "TIKTOKEN_ENCODING_NAME": "cl100k_base",
        "TIKTOKEN_CACHE_DIR": str(cache / "tiktoken"),
        "PYTHONUNBUFFERED": "1",
    }


def deployment(r: Render) -> dict[str, Any]:
    """The rendered Open WebUI Deployment."""
    found = [
        m
        for m in r.manifests()
        if m["kind"] == "Deployment"
        and m["metadata"]["name"] == openwebui.NAME
        and m["metadata"].get("namespace") == openwebui.NAMESPACE
    ]
    if len(found) != 1:
        raise WebUIError(f"render: {len(found)} Deployments {openwebui.NAMESPACE}/{openwebui.NAME}; expected 1")
    return found[0]


def container(r: Render) -> dict[str, Any]:
    (c,) = [c for c in deployment(r)["spec"]["template"]["spec"]["containers"] if c["name"] == openwebui.NAME]
    return dict(c)


def probe_paths(r: Render) -> list[str]:
    """The HTTP paths of the container's startup and readiness probes, in that order (what Kubernetes waits for)."""
    c = container(r)
    return [c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe") if p in c]


def local_env(
    env: Sequence[Mapping[str, Any]],
    *,
    openai_url: str,
    data_dir: Path,
    home: Path,
    port: int,
    secrets: Mapping[tuple[str, str], str],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The process environment for the Deployment's container ``env`` list, made local as the module says."""
    local = {"OPENAI_API_BASE_URLS": openai_url, "DATA_DIR": str(data_dir), "HOME": str(home), "PORT": str(port)}
    out: dict[str, str] = {}
    for item in env:
        name = str(item["name"])
        if "valueFrom" in item:
            ref = item["valueFrom"].get("secretKeyRef")
            if ref is None or (ref["name"], ref["key"]) not in secrets:
                raise WebUIError(f"Deployment env {name}: valueFrom {item['valueFrom']} has no local value")
            out[name] = secrets[(ref["name"], ref["key"])]
        else:
            out[name] = local.get(name, str(item.get("value", "")))
    missing = [k for k in LOCAL_KEYS if k not in out]
    if missing:
        raise WebUIError(f"Deployment env: no {', '.join(missing)}; the local run replaces these and needs them set")
    additions = {**image_env(data_dir), **OFFLINE_ENV, **(extra or {})}
    shadowed = sorted(set(additions) & set(out))
    if shadowed:
        raise WebUIError(f"Deployment env sets {', '.join(shadowed)}, which the local run would replace")
    return {**out, **additions}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv() -> Path:
    """The venv with open-webui: ``$WEBUI_VENV`` (the Makefile sets it), else ``venv-webui`` in the repository."""
    return Path(os.environ.get("WEBUI_VENV", str(DEFAULT_VENV))).resolve()


def installed_version(venv: Path) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        raise WebUIError(f"{venv}: no venv; `make {venv.name}/.installed-{version()}` creates it")
    code = f"import importlib.metadata as m; print(m.version({PACKAGE!r}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def check_venv(venv: Path) -> None:
    """The venv's open-webui is the image's release, or one line saying what to do."""
    have, want = installed_version(venv), version()
    if have != want:
        raise WebUIError(
            f"{venv}: open-webui {have or 'missing'}, the image pins v{want}; `make {venv.name}/.installed-{want}`"
        )


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:PORT
    env: Mapping[str, str]
    data_dir: Path
    log: Path
    startup_s: float
    process: subprocess.Popen[bytes]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except OSError:
        return 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def serve(env: Mapping[str, str], ready_paths: Sequence[str], log: Path, venv: Path = DEFAULT_VENV) -> Iterator[Server]:
    """``open-webui serve`` on 127.0.0.1:$PORT with exactly ``env``; yields once every path in ``ready_paths``
    answers 200 (the Deployment's probes), stops the process group on exit."""
    check_venv(venv)
    data_dir, home = Path(env["DATA_DIR"]), Path(env["HOME"])
    data_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    port = int(env["PORT"])
    proc_env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    proc_env.update(env)
    argv = [str(venv / "bin" / "open-webui"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=proc_env, cwd=data_dir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = started + READY_TIMEOUT_S
        for path in ready_paths:
            while _get(url + path) != 200:
                if proc.poll() is not None:
                    raise WebUIError(f"open-webui exited with {proc.returncode} before {path} answered; see {log}")
                if time.monotonic() > deadline:
                    raise WebUIError(f"open-webui: {path} not ready after {READY_TIMEOUT_S}s; see {log}")
                time.sleep(0.5)
        yield Server(url, dict(env), data_dir, log, time.monotonic() - started, proc)
    finally:
        _stop(proc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--version", action="store_true", help="the open-webui release the image pins")
    group.add_argument("--requirement", action="store_true", help="its pip requirement")
    args = parser.parse_args(argv)
    try:
        print(version() if args.version else requirement())
    except WebUIError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
