"""The pinned AMI release: checked against AWS's public parameters before anything is declared, one line if missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from infra import ami, tokens
from infra.config import DEFAULT_EKS_VERSION, EKS_VERSIONS, PROJECT
from tools import eks_ami
from tools.render import Render, RenderConfigError, render
from workloads import nodepools

from .conftest import REPO, rendered

KEY = f"{PROJECT}:nodeAmiVersion"
PINNED = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]["nodeAmiVersion"]["default"]
BY_PATH = "aws:ssm/getParametersByPath:getParametersByPath"


def test_the_parameter_is_the_one_karpenter_reads() -> None:
    # Karpenter 1.14.1 pkg/providers/amifamily/al2023.go resolvePath, for the AMI name the release notes list
    # (amazon-eks-node-al2023-x86_64-neuron-1.35-v20260714).
    assert ami.image_parameter("1.35", "x86_64", "neuron", "v20260714") == (
        "/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/x86_64/neuron/"
        "amazon-eks-node-al2023-x86_64-neuron-1.35-v20260714/image_id"
    )
    assert ami.alias("v20260714") == "al2023@v20260714"


def test_releases_are_read_only_from_the_variants_own_image_parameters() -> None:
    base = ami.variant_path("1.35", "x86_64", "standard")
    names = [
        ami.image_parameter("1.35", "x86_64", "standard", "v20260610"),
        ami.image_parameter("1.35", "x86_64", "standard", "v20260714"),
        f"{base}/recommended/image_id",
        f"{base}/recommended/release_version",
        ami.image_parameter("1.35", "x86_64", "neuron", "v20260618"),  # another variant
        ami.image_parameter("1.36", "x86_64", "standard", "v20260625"),  # another minor
    ]
    assert ami.releases_in(names, "1.35", "x86_64", "standard") == {"v20260610", "v20260714"}


def test_a_release_published_for_every_variant_passes() -> None:
    ami.check_release("v2", "1.35", "x86_64", {"standard": {"v1", "v2"}, "neuron": {"v2"}})


def test_a_release_missing_in_one_variant_is_one_line_naming_the_key_value_and_what_is_allowed() -> None:
    published = {"standard": {"v20260610", "v20260714"}, "neuron": {"v20260610"}}
    with pytest.raises(ami.AmiReleaseError) as info:
        ami.check_release("v20260714", "1.35", "x86_64", published)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{KEY}: 'v20260714' is not allowed; allowed: an amazon-eks-ami release published ")
    assert "for Kubernetes 1.35 with the x86_64 standard and neuron AL2023 AMIs" in message
    assert "e.g. v20260610, the newest one published; missing here: neuron;" in message


def test_a_minor_with_nothing_published_says_so() -> None:
    with pytest.raises(ami.AmiReleaseError, match="none is published yet; missing here: standard, neuron"):
        ami.check_release("v20260714", "1.99", "x86_64", {"standard": set(), "neuron": set()})


def test_newer_releases_are_the_ones_every_variant_has() -> None:
    published = {"standard": {"v1", "v2", "v3"}, "neuron": {"v1", "v2"}}
    assert ami.newer_than("v1", published) == ["v2"]
    assert ami.newer_than("v2", published) == []


def test_each_node_class_boots_the_variant_its_pools_need() -> None:
    plan = nodepools.plan(
        cluster_name="c",
        node_role="r",
        ami_alias=ami.alias(PINNED),
        default_disk_gib=100,
        neuron_disk_gib=500,
        default_pool_cpu_limit=10,
        default_pool_memory_gib=10,
        inf2_instance_types=["inf2.8xlarge"],
        trn1_instance_types=["trn1.2xlarge"],
        accelerator_capacity_types=["on-demand"],
        accelerator_pool_cpu_limit=10,
        accelerator_pool_memory_gib=10,
        inf2_neuron_device_limit=1,
        trn1_neuron_device_limit=1,
        accelerator_consolidate_after="1m",
        accelerator_disruption_budget="1",
        node_expire_after="720h",
    )
    assert set(plan.node_classes) == set(nodepools.AMI_VARIANTS)
    for pool in plan.node_pools.values():
        template = pool["spec"]["template"]["spec"]
        variant = nodepools.AMI_VARIANTS[template["nodeClassRef"]["name"]]
        families = [r["values"] for r in template["requirements"] if r["key"] == nodepools.INSTANCE_FAMILY_LABEL]
        # Neuron instances (inf2/trn1) boot the neuron AMI; everything else the standard one.
        assert variant == ("neuron" if families and families[0][0][:3] in {"inf", "trn"} else "standard")
        arch = [r["values"] for r in template["requirements"] if r["key"] == nodepools.ARCH_LABEL]
        assert arch == [["amd64"]] and nodepools.AMI_ARCH == "x86_64"


# --- the record the offline render answers from ------------------------------------------------------------------


def test_the_record_covers_every_allowed_minor_and_the_pin_has_both_variants() -> None:
    assert set(EKS_VERSIONS) <= eks_ami.minors()
    for minor in EKS_VERSIONS:
        for variant in nodepools.AMI_VARIANTS.values():
            assert eks_ami.releases(minor, variant), (minor, variant)
    # The pin exists for the default minor with a Neuron AMI (awslabs/amazon-eks-ami release notes of v20260714).
    assert PINNED in eks_ami.releases(DEFAULT_EKS_VERSION, "neuron")
    assert PINNED in eks_ami.releases(DEFAULT_EKS_VERSION, "standard")
    assert eks_ami.record()["source"].startswith("https://github.com/awslabs/amazon-eks-ami/")


def test_the_mock_lists_like_aws_and_refuses_paths_it_cannot_answer() -> None:
    path = ami.variant_path("1.35", "x86_64", "neuron")
    names = eks_ami.parameter_names(path, recursive=True)
    assert ami.image_parameter("1.35", "x86_64", "neuron", PINNED) in names
    # The release parameters sit two levels below the path: a non-recursive listing finds none.
    assert eks_ami.parameter_names(path, recursive=False) == []
    for unrecorded in (ami.variant_path("1.35", "arm64", "standard"), ami.variant_path("1.20", "x86_64", "neuron")):
        with pytest.raises(eks_ami.UnrecordedPathError):
            eks_ami.parameter_names(unrecorded, recursive=True)


# --- the program ---------------------------------------------------------------------------------------------------


def _ami_listings(r: Render) -> list[dict[str, object]]:
    return [i for i in r.invokes if i["token"] == BY_PATH]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_program_checks_each_variant_through_the_stacks_provider(stack: str) -> None:
    r = rendered(stack)
    listings = _ami_listings(r)
    minor = r.config[f"{PROJECT}:clusterVersion"]
    assert sorted(str(i["args"]["path"]) for i in listings) == sorted(
        ami.variant_path(minor, "x86_64", v) for v in nodepools.AMI_VARIANTS.values()
    )
    assert all(i["args"]["recursive"] is True and i["args"]["withDecryption"] is False for i in listings)
    (aws_provider,) = r.of_type("pulumi:providers:aws")
    # The stack's provider, so the stack's region answers (public parameters are per region).
    assert {str(i["provider"]).rsplit("::", 1)[0] for i in listings} == {aws_provider["urn"]}
    assert aws_provider["inputs"]["region"] == r.config["aws:region"]
    for node_class in r.of_type(tokens.NODE_CLASS):
        assert node_class["inputs"]["spec"]["amiSelectorTerms"] == [{"alias": ami.alias(PINNED)}]


def test_a_release_aws_does_not_publish_stops_the_render_with_one_line() -> None:
    with pytest.raises(RenderConfigError) as info:
        render("dev", {KEY: "v20990101"})
    (line,) = info.value.lines
    assert line.startswith(f"{KEY}: 'v20990101' is not allowed; allowed: an amazon-eks-ami release published for ")
    assert f"Kubernetes {DEFAULT_EKS_VERSION} " in line and f"e.g. {PINNED}" in line


def test_a_release_of_another_minor_is_refused_for_this_one() -> None:
    # v20260505 lists 1.35 AMIs only: a 1.36 cluster would get no node from it.
    assert "v20260505" in eks_ami.releases("1.35", "neuron") and "v20260505" not in eks_ami.releases("1.36", "neuron")
    with pytest.raises(RenderConfigError) as info:
        render("dev", {KEY: "v20260505", f"{PROJECT}:clusterVersion": "1.36"})
    (line,) = info.value.lines
    assert line.startswith(f"{KEY}: 'v20260505' is not allowed") and "Kubernetes 1.36 " in line


def test_the_render_cli_exits_2_with_the_one_line_and_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.render", "--config", "nodeAmiVersion=v20990101"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"{KEY}: 'v20990101' is not allowed; allowed:")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
