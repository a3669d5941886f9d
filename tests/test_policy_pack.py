"""The pack as the policy engine runs it: real pulumi_policy objects, fed the render's resources."""

from __future__ import annotations

import copy
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.pack import PACK_NAME, build_policies
from policy.rules import RESOURCE_RULES
from policy.stack_rules import STACK_RULES
from tools.render import Render


def options() -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


def policy_resources(records: list[dict[str, Any]]) -> list[PolicyResource]:
    by_urn: dict[str, PolicyResource] = {}
    out = []
    for r in records:
        res = PolicyResource(r["type"], r["inputs"], r["urn"], r["name"], options(), None, None, [], {})
        by_urn[r["urn"]] = res
        out.append(res)
    for r, res in zip(records, out, strict=True):
        res.dependencies = [by_urn[u] for u in r["dependencies"] if u in by_urn]
        res.property_dependencies = {
            k: [by_urn[u] for u in v if u in by_urn] for k, v in r["propertyDependencies"].items()
        }
    return out


def run_pack(records: list[dict[str, Any]], config: dict[str, Any] | None = None) -> list[str]:
    found: list[str] = []
    for policy in build_policies():

        def report(message: str, urn: str | None, name: str = policy.name) -> None:
            found.append(f"{name}: {message}")

        if isinstance(policy, ResourceValidationPolicy):
            for r in records:
                provider: PolicyProviderResource | None = None
                policy.validate(
                    ResourceValidationArgs(
                        r["type"],
                        r["inputs"],
                        r["urn"],
                        r["name"],
                        options(),
                        provider,
                        (config or {}).get(policy.name),
                    ),
                    report,
                )
        elif isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs(policy_resources(records), (config or {}).get(policy.name)), report)
    return found


def test_the_pack_serves_every_rule_once() -> None:
    names = [p.name for p in build_policies()]
    assert names == [r.name for r in RESOURCE_RULES] + [r.name for r in STACK_RULES]
    assert "scheduling-proof" in names and "neuron-cost-guard" in names
    assert PACK_NAME == "eks-neuron-llm"


def test_the_real_stacks_pass_the_pack(each_stack: Render) -> None:
    assert run_pack(each_stack.resources) == []


def test_the_pack_reports_a_defect_through_the_engine_objects(dev: Render) -> None:
    records = copy.deepcopy(dev.resources)
    for r in records:
        if r["inputs"].get("kind") == "RayService":
            r["inputs"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"].pop("schedulerName")
        if r["type"] == "aws:kms/key:Key":
            r["inputs"]["enableKeyRotation"] = False
    found = run_pack(records)
    assert "kms-rotation: KMS key does not rotate (enableKeyRotation)" in found
    assert any(f.startswith("scheduling-proof: RayService vllm/llm worker group") and "scheduler:" in f for f in found)


def test_policy_config_reaches_the_rule(dev: Render) -> None:
    assert run_pack(dev.resources, {"neuron-cost-guard": {"maxNeuronDevices": 4}}) == [
        "neuron-cost-guard: accelerator pools may launch 16 Neuron devices together; the ceiling (policy config "
        "maxNeuronDevices) is 4"
    ]
