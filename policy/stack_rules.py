"""Stack policies: checks that need more than one resource at a time.

Each is ``validate(resources, config, report)`` over records shaped like the render's ``resources.json`` (``type``,
``name``, ``urn``, ``inputs``, ``dependencies``, ``propertyDependencies``); the pack's entry point converts the
engine's ``PolicyResource`` objects into that shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policy import proof
from policy.quantity import amount
from workloads.topology import NEURON_DEVICE_RESOURCE, NEURON_TAINT_KEY

Report = Callable[[str], None]
Records = Sequence[Mapping[str, Any]]

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
SSE_TYPES = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
PAB_TYPE = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
DEFAULT_MAX_NEURON_DEVICES = 16


def _refers_to(record: Mapping[str, Any], urn: str) -> bool:
    deps = set(record.get("dependencies") or [])
    for urns in (record.get("propertyDependencies") or {}).values():
        deps.update(urns)
    return urn in deps


def s3_encryption_and_public_access_block(resources: Records, config: Mapping[str, Any], report: Report) -> None:
    for bucket in (r for r in resources if r["type"] in BUCKET_TYPES):
        if not any(r["type"] in SSE_TYPES and _refers_to(r, bucket["urn"]) for r in resources):
            report(f"bucket {bucket['name']} has no server-side encryption configuration")
        if not any(r["type"] == PAB_TYPE and _refers_to(r, bucket["urn"]) for r in resources):
            report(f"bucket {bucket['name']} has no public access block")


def neuron_devices_capped(resources: Records, config: Mapping[str, Any], report: Report) -> None:
    """Cost guard: the Neuron devices all accelerator pools may launch together stay under a ceiling."""
    ceiling = int(config.get("maxNeuronDevices") or DEFAULT_MAX_NEURON_DEVICES)
    total = 0
    for r in resources:
        obj = r["inputs"]
        if obj.get("kind") != "NodePool" or not r["type"].startswith("kubernetes:karpenter.sh/"):
            continue
        taints = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("taints") or []
        if not any(t.get("key") == NEURON_TAINT_KEY for t in taints):
            continue
        limit = ((obj.get("spec") or {}).get("limits") or {}).get(NEURON_DEVICE_RESOURCE)
        name = obj["metadata"]["name"]
        if limit is None:
            report(f"NodePool {name}: accelerator pool without a {NEURON_DEVICE_RESOURCE} limit; spend is unbounded")
            continue
        total += amount(NEURON_DEVICE_RESOURCE, limit)
    if total > ceiling:
        report(
            f"accelerator pools may launch {total} Neuron devices together; the ceiling (policy config "
            f"maxNeuronDevices) is {ceiling}"
        )


@dataclass(frozen=True)
class StackRule:
    name: str
    description: str
    validate: Callable[[Records, Mapping[str, Any], Report], None]


STACK_RULES: list[StackRule] = [
    StackRule(
        "s3-encrypted-and-private",
        "Every S3 bucket has SSE and a public access block",
        s3_encryption_and_public_access_block,
    ),
    StackRule(
        "neuron-cost-guard",
        "Accelerator pools together may launch at most maxNeuronDevices devices",
        neuron_devices_capped,
    ),
    StackRule(
        "scheduling-proof",
        "Every pod template has a node source, instance type and pool limit that fit it",
        proof.validate,
    ),
]
