"""The EKS AL2023 AMI release every Karpenter node class pins, checked against AWS's public parameters at preview.

Karpenter 1.14 resolves an EC2NodeClass alias ``al2023@<release>`` for the cluster's minor by reading, for each
architecture and variant, the public SSM parameter ``image_parameter(minor, arch, variant, release)``
(``pkg/providers/amifamily/al2023.go``, ``resolvePath``).  A parameter that does not exist is skipped silently (the
EC2NodeClass reports an error only when none exists); without the variant a pool needs, that pool launches no node.
So before anything is declared, the capacity component lists the published releases of each variant its node
classes use (``get_parameters_by_path`` through the stack's AWS provider) and stops the program with one line naming
``nodeAmiVersion`` if the pinned release is missing from any of them.

Offline, the render's mock answers the same invoke from ``tools/eks_ami_releases.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import pulumi
import pulumi_aws as aws

KEY = "eks-neuron-llm:nodeAmiVersion"
FAMILY = "al2023"
RELEASES_URL = "https://github.com/awslabs/amazon-eks-ami/releases"
_RELEASE = r"v\d{8}"


class AmiReleaseError(pulumi.RunError):
    """The pinned AMI release is not published for the cluster's minor; ``pulumi.RunError``: no traceback."""


def alias(release: str) -> str:
    """The EC2NodeClass ``amiSelectorTerms`` alias of an AL2023 release, e.g. ``al2023@v20260714``."""
    return f"{FAMILY}@{release}"


def variant_path(minor: str, arch: str, variant: str) -> str:
    """The SSM path under which AWS publishes one parameter per release of an AL2023 variant."""
    return f"/aws/service/eks/optimized-ami/{minor}/amazon-linux-2023/{arch}/{variant}"


def image_parameter(minor: str, arch: str, variant: str, release: str) -> str:
    """The parameter Karpenter reads for ``al2023@<release>`` (its value is the AMI ID)."""
    return f"{variant_path(minor, arch, variant)}/amazon-eks-node-al2023-{arch}-{variant}-{minor}-{release}/image_id"


def releases_in(names: Iterable[str], minor: str, arch: str, variant: str) -> set[str]:
    """The releases whose image parameter is among ``names`` (other parameters under the path are ignored)."""
    prefix, suffix = image_parameter(minor, arch, variant, "\0").split("\0")
    pattern = re.compile(f"{re.escape(prefix)}({_RELEASE}){re.escape(suffix)}")
    return {m.group(1) for name in names if (m := pattern.fullmatch(name))}


def newest_common(published: Mapping[str, set[str]]) -> str | None:
    """The newest release published for every variant, or None."""
    sets = list(published.values())
    common = set.intersection(*sets) if sets else set()
    return max(common) if common else None


def check_release(release: str, minor: str, arch: str, published: Mapping[str, set[str]]) -> None:
    """Raise ``AmiReleaseError`` (one line) unless ``release`` is published for every variant in ``published``."""
    missing = [variant for variant, releases in published.items() if release not in releases]
    if not missing:
        return
    variants = " and ".join(published)
    newest = newest_common(published)
    example = f"e.g. {newest}, the newest one published" if newest else "none is published yet"
    raise AmiReleaseError(
        f"{KEY}: {release!r} is not allowed; allowed: an amazon-eks-ami release published for Kubernetes {minor} "
        f"with the {arch} {variants} AL2023 AMIs ({example}; missing here: {', '.join(missing)}; see {RELEASES_URL})"
    )


def newer_than(release: str, published: Mapping[str, set[str]]) -> list[str]:
    """Releases newer than ``release`` that are published for every variant, oldest first."""
    sets = list(published.values())
    common = set.intersection(*sets) if sets else set()
    return sorted(r for r in common if r > release)


def require_release(release: str, *, minor: str, arch: str, variants: Sequence[str], opts: pulumi.InvokeOptions) -> str:
    """The node classes' alias for ``release``, after checking AWS publishes it for each variant at ``minor``.

    One ``GetParametersByPath`` listing per variant (read-only, public parameters); ``opts`` carries the parent whose
    AWS provider (the stack's, with its region) answers.  A newer release only warns: bumping rolls every node.
    """
    published: dict[str, set[str]] = {}
    for variant in dict.fromkeys(variants):
        listing = aws.ssm.get_parameters_by_path(
            path=variant_path(minor, arch, variant), recursive=True, with_decryption=False, opts=opts
        )
        published[variant] = releases_in(listing.names, minor, arch, variant)
    check_release(release, minor, arch, published)
    newer = newer_than(release, published)
    if newer:
        pulumi.log.warn(
            f"{KEY}: {release} is pinned; {len(newer)} newer release(s) are published for Kubernetes {minor}, the "
            f"newest {newer[-1]}. Bump it deliberately: every Karpenter node is replaced through drift."
        )
    return alias(release)
