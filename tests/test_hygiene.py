"""Version hygiene: charts pinned, every image pinned (manifests and chart values), the EKS version allowed, and the
second scheduler's image in step with the cluster's minor."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes_validate
import pytest

from infra import tokens
from infra.config import EKS_VERSIONS
from policy.charts import effective_values
from policy.rules import image_problem, images_of
from tools.render import Render

from .conftest import rendered


def chart_images(values: Any, path: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(path, repository, tag, digest) of every image block in a chart's values."""
    if isinstance(values, Mapping):
        if "repository" in values and "tag" in values:
            yield path, str(values["repository"]), str(values.get("tag") or ""), str(values.get("digest") or "")
        for k, v in values.items():
            yield from chart_images(v, f"{path}.{k}" if path else str(k))


def test_every_manifest_image_is_pinned(each_stack: Render) -> None:
    images = [i for m in each_stack.manifests() for i in images_of(m)]
    assert images
    assert [p for i in images if (p := image_problem(i))] == []


def test_every_chart_image_is_pinned(each_stack: Render) -> None:
    for release in each_stack.helm_releases():
        assert re.fullmatch(r"\d+\.\d+\.\d+", str(release["version"])), release["name"]
        for path, repo, tag, digest in chart_images(effective_values(release)):
            # An empty tag means the chart's appVersion, which the pinned chart version fixes; only a moving tag
            # or a digest that is not a sha256 leaves the image unpinned.
            assert tag != "latest", f"{release['name']}: {path} uses {repo}:latest"
            assert not digest or digest.startswith("sha256:"), f"{release['name']}: {path} digest {digest}"


def test_allowed_eks_versions_are_ones_the_validators_know() -> None:
    for version in EKS_VERSIONS:
        assert version <= kubernetes_validate.latest_version(), version


@pytest.mark.parametrize("version", EKS_VERSIONS)
def test_the_neuron_second_scheduler_matches_the_cluster_minor(version: str) -> None:
    r = rendered("dev", clusterVersion=version)
    (neuron,) = [h for h in r.helm_releases() if h["chart"].endswith("/neuron-helm-chart")]
    image = neuron["values"]["scheduler"]["customScheduler"]["image"]
    assert image["repository"] == "registry.k8s.io/kube-scheduler"
    # the Kubernetes skew policy allows kube-scheduler at the API server's minor or one older; we pin the same minor
    assert re.fullmatch(rf"v{re.escape(version)}\.\d+", image["tag"]), image["tag"]


def test_the_cluster_version_is_from_the_allowed_list(each_stack: Render) -> None:
    (c,) = each_stack.of_type(tokens.EKS_COMPONENT)
    assert c["inputs"]["version"] in EKS_VERSIONS
