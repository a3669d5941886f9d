"""The render harness as a command: four artefacts, a summary, and exit 2 with one line on a config error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.render", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_render_writes_the_four_artefacts_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    proc = run("--stack", "dev", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "stack dev:" in proc.stdout and "rendered in" in proc.stdout
    resources = json.loads((out / "resources.json").read_text())
    keys = {
        "urn",
        "type",
        "name",
        "custom",
        "remote",
        "parent",
        "provider",
        "dependencies",
        "propertyDependencies",
        "inputs",
    }
    assert resources and all(keys <= set(r) for r in resources)
    outputs = json.loads((out / "outputs.json").read_text())
    assert outputs["kubeconfig"] == "[secret]"
    assert set(outputs) >= {
        "clusterName",
        "region",
        "vpcId",
        "privateSubnetIds",
        "kubeconfig",
        "oidcProviderArn",
        "kubectlSetup",
    }
    assert outputs["kubectlSetup"] == "aws eks update-kubeconfig --region us-west-2 --name eks-neuron-llm-dev"
    manifests = sorted((out / "manifests").iterdir())
    assert manifests and all(p.name.count("-") >= 2 and p.suffix == ".yaml" for p in manifests)
    for p in manifests:
        obj = yaml.safe_load(p.read_text())
        ns = obj["metadata"].get("namespace") or "cluster"
        assert p.name == f"{obj['kind']}-{ns}-{obj['metadata']['name']}.yaml"
    assert (out / "helm").is_dir()


def test_no_secret_value_reaches_the_artefacts(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    assert run("--out", str(out)).returncode == 0
    text = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "get-token" not in text  # the kubeconfig is a secret output and a secret provider input


def test_prod_renders() -> None:
    proc = run("--stack", "prod", "--out", str(REPO / "build" / "render" / "prod"))
    assert proc.returncode == 0, proc.stderr
    assert "stack prod:" in proc.stdout


def test_a_config_error_exits_2_with_one_line_naming_the_key() -> None:
    proc = run("--config", "eks-neuron-llm:availabilityZoneCount=7")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "eks-neuron-llm:availabilityZoneCount: 7 is not allowed; allowed: 2 or 3"
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_bad_arguments_are_one_line_errors_too() -> None:
    proc = run("--config", "novalue")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("--config: 'novalue' is not allowed")
    proc = run("--stack", "qa")
    assert proc.returncode == 2 and proc.stderr.strip() == "--stack: 'qa' has no Pulumi.qa.yaml; allowed: dev, prod"
