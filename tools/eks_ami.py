"""The recorded EKS AL2023 AMI releases (``tools/eks_ami_releases.yaml``) as the public SSM parameters AWS publishes.

The offline render's mock answers ``aws.ssm.get_parameters_by_path`` under ``/aws/service/eks/optimized-ami/`` from
this record, so the program's release check (``infra/ami.py``) runs offline against facts, not against itself.  A
path the record cannot answer (another architecture, a minor it does not cover) raises instead of answering "none".
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

RECORD = Path(__file__).resolve().parent / "eks_ami_releases.yaml"
_PATH = re.compile(
    r"/aws/service/eks/optimized-ami/(?P<minor>\d+\.\d+)/amazon-linux-2023/(?P<arch>\w+)/(?P<variant>\w+)"
)


class UnrecordedPathError(LookupError):
    """The record has no answer for this path; extend ``tools/eks_ami_releases.yaml`` from the release notes."""


@cache
def record() -> dict[str, Any]:
    data = yaml.safe_load(RECORD.read_text())
    return data if isinstance(data, dict) else {}


def releases(minor: str, variant: str) -> list[str]:
    """Recorded releases that list ``variant`` for ``minor``, oldest first."""
    rows: dict[str, dict[str, list[str]]] = record()["releases"]
    return sorted(r for r, minors in rows.items() if variant in minors.get(minor, []))


def minors() -> set[str]:
    rows: dict[str, dict[str, list[str]]] = record()["releases"]
    return {m for minors_ in rows.values() for m in minors_}


def parameter_names(path: str, *, recursive: bool) -> list[str]:
    """The parameter names ``GetParametersByPath`` lists under ``path``: one ``.../<ami name>/image_id`` per release.

    The release parameters sit two levels below the variant path, so a non-recursive listing finds none of them.
    """
    m = _PATH.fullmatch(path.rstrip("/"))
    if m is None or m["arch"] != record()["arch"] or m["minor"] not in minors():
        raise UnrecordedPathError(f"no recorded EKS AMI releases for {path}; add them to {RECORD.name}")
    if not recursive:
        return []
    minor, arch, variant = m["minor"], m["arch"], m["variant"]
    return [
        f"{path.rstrip('/')}/amazon-eks-node-al2023-{arch}-{variant}-{minor}-{release}/image_id"
        for release in releases(minor, variant)
    ]
