"""The policies of the pack, built from the plain rule functions; ``__main__.py`` serves them as a PolicyPack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.rules import RESOURCE_RULES, Rule
from policy.stack_rules import DEFAULT_MAX_NEURON_DEVICES, STACK_RULES, StackRule

PACK_NAME = "eks-neuron-llm"

CONFIG_SCHEMAS: dict[str, PolicyConfigSchema] = {
    "eks-public-endpoint": PolicyConfigSchema(
        properties={"prodStacks": {"type": "array", "items": {"type": "string"}, "default": ["prod"]}}
    ),
    "neuron-cost-guard": PolicyConfigSchema(
        properties={"maxNeuronDevices": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_NEURON_DEVICES}}
    ),
}


def to_record(r: PolicyResource) -> dict[str, Any]:
    """The engine's view of a resource in the shape of the render's records."""
    return {
        "type": r.resource_type,
        "name": r.name,
        "urn": r.urn,
        "inputs": dict(r.props),
        "dependencies": [d.urn for d in r.dependencies],
        "propertyDependencies": {k: [d.urn for d in v] for k, v in r.property_dependencies.items()},
    }


def _resource_policy(rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        rule.validate(args, lambda message: report(message, None))

    return ResourceValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        config_schema=CONFIG_SCHEMAS.get(rule.name),
    )


def _stack_policy(rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        records: Sequence[Mapping[str, Any]] = [to_record(r) for r in args.resources]
        rule.validate(records, args.get_config(), lambda message: report(message, None))

    return StackValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        config_schema=CONFIG_SCHEMAS.get(rule.name),
    )


def build_policies() -> list[Policy]:
    return [*(_resource_policy(r) for r in RESOURCE_RULES), *(_stack_policy(r) for r in STACK_RULES)]


ENFORCEMENT = EnforcementLevel.MANDATORY
