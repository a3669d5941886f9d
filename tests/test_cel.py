"""The CRDs' CEL rules (``x-kubernetes-validations``) on every custom resource the stack renders, evaluated as the API
server does on create (tools/cel.py): the dev and prod renders and a render of every serving preset pass; injected
violations fail with the CRD's own message."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import celpy.celtypes as ct
import pytest

from infra.config import KARPENTER_RESERVED_TAG_KEYS, KARPENTER_RESERVED_TAG_PREFIX
from tools import cel
from tools.render import Render, RenderConfigError
from tools.schemas import crd_schemas, is_custom_resource
from workloads.presets import PRESETS

from .conftest import preset_overrides, rendered

RENDERS = [("dev", {}), ("prod", {}), *(("dev", preset_overrides(p)) for p in sorted(PRESETS))]


def custom_resources(r: Render) -> list[dict[str, Any]]:
    return [m for m in r.manifests() if is_custom_resource(m)]


# --- the rules ----------------------------------------------------------------------------------------------------


def _raw_rule_count(node: Any) -> int:
    """Rules anywhere in a schema, found without knowing where the API server looks for them."""
    if isinstance(node, dict):
        own = len(node.get("x-kubernetes-validations") or [])
        return own + sum(_raw_rule_count(v) for k, v in node.items() if k != "x-kubernetes-validations")
    if isinstance(node, list):
        return sum(_raw_rule_count(v) for v in node)
    return 0


def test_every_rule_of_every_vendored_crd_is_found_and_can_be_evaluated() -> None:
    for (version, kind), schema in crd_schemas().items():
        assert len(cel.rules(version, kind)) == _raw_rule_count(schema), f"{version} {kind}"
    counts = Counter(r.crd for r in cel.rules())
    # Karpenter v1.14.1 (release commit c88abbbad) and KubeRay v1.7.0; KubeRay's v1alpha1 versions carry no rules.
    assert counts == {
        "karpenter.k8s.aws/v1 EC2NodeClass": 54,
        "karpenter.sh/v1 NodePool": 20,
        "karpenter.sh/v1 NodeClaim": 10,
        "ray.io/v1 RayCluster": 3,
        "ray.io/v1 RayService": 5,
    }
    transition = Counter(r.crd for r in cel.rules() if r.transition)
    assert sum(transition.values()) == 9 and not any(r.optional_old_self for r in cel.rules())
    assert cel.unsupported_rules() == []


# --- every render -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "overrides"), RENDERS, ids=[f"{s}-{o.get('servingPreset', 'default')}" for s, o in RENDERS]
)
def test_every_rendered_custom_resource_passes_its_crds_cel_rules(stack: str, overrides: dict[str, str]) -> None:
    crs = custom_resources(rendered(stack, **overrides))
    # prod's GCS store lets the Ray pods in by a SecurityGroupPolicy (EKS's own CRD: no CEL rules)
    store = {"SecurityGroupPolicy": 1} if stack == "prod" else {}
    assert Counter(m["kind"] for m in crs) == {"EC2NodeClass": 2, "NodePool": 3, "RayService": 1, **store}
    report = cel.check_all(crs)
    assert report.problems == []
    for m in crs:
        # KubeRay's create-time rules only constrain managedBy, which is not set; SecurityGroupPolicy has no rules
        if m["kind"] not in ("RayService", "SecurityGroupPolicy"):
            assert cel.check(m).evaluations > 0, m["metadata"]["name"]
    assert report.skipped_transition > 0  # the NodePools' immutability rules: not for create


# --- injected violations fail with the CRD's own message --------------------------------------------------------


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        node: Any = obj
        for key in path[:-1]:
            node = node[key] if isinstance(key, int) else node.setdefault(key, {})
        node[path[-1]] = value

    return change


def _append_requirement(req: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda obj: obj["spec"]["template"]["spec"]["requirements"].append(req)


INJECTED = [
    (
        "EC2NodeClass neuron",
        _set(("spec", "instanceProfile"), "KarpenterNodeInstanceProfile"),
        "spec: must specify exactly one of ['role', 'instanceProfile']",
    ),
    (
        "EC2NodeClass neuron",
        _set(("spec", "tags", "kubernetes.io/cluster/eks-neuron-llm-dev"), "owned"),
        "spec.tags: tag contains a restricted tag matching kubernetes.io/cluster/",
    ),
    (
        "EC2NodeClass neuron",
        _set(("spec", "amiSelectorTerms", 0), {"alias": "al2023"}),
        "spec.amiSelectorTerms[0].alias: 'alias' is improperly formatted, must match the format 'family@version'",
    ),
    (
        "EC2NodeClass default",
        _set(("spec", "amiSelectorTerms", 0), {"alias": "ubuntu@v20260930"}),
        "spec.amiSelectorTerms[0].alias: family is not supported, must be one of the following: 'al2', 'al2023', "
        "'bottlerocket', 'windows2019', 'windows2022', 'windows2025'",
    ),
    (
        "EC2NodeClass default",
        _set(("spec", "kubelet"), {"imageGCHighThresholdPercent": 60, "imageGCLowThresholdPercent": 80}),
        "spec.kubelet: imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent",
    ),
    (
        "NodePool default",
        _set(("spec", "template", "metadata", "labels", "karpenter.sh/team"), "ml"),
        'spec.template.metadata.labels: label domain "karpenter.sh" is restricted',
    ),
    (
        # the main-branch CRD vendored before allowed this label; Karpenter 1.14.1 does not know it
        "NodePool inf2",
        _set(("spec", "template", "metadata", "labels", "karpenter.k8s.aws/nitro-sandbox"), "true"),
        'spec.template.metadata.labels: label domain "karpenter.k8s.aws" is restricted',
    ),
    (
        "NodePool inf2",
        _set(("spec", "disruption", "budgets"), [{"nodes": "0", "schedule": "0 9 * * mon-fri"}]),
        "spec.disruption.budgets: 'schedule' must be set with 'duration'",
    ),
    (
        "NodePool trn1",
        _append_requirement({"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["4", "8"]}),
        "spec.template.spec.requirements: requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single "
        "positive integer value",
    ),
    (
        "NodePool trn1",
        _append_requirement({"key": "kubernetes.io/hostname", "operator": "Exists"}),
        'spec.template.spec.requirements[5].key: label "kubernetes.io/hostname" is restricted',
    ),
    (
        "NodePool default",
        _set(("spec", "replicas"), 2),
        "spec: only 'limits.nodes' is supported on static NodePools",
    ),
    (
        # KubeRay 1.7.0's only create-time rules: managedBy must name a known controller
        "RayService llm",
        _set(("spec", "rayClusterConfig", "managedBy"), "example.com/my-operator"),
        "spec.rayClusterConfig.managedBy: the managedBy field value must be either 'ray.io/kuberay-operator' or "
        "'kueue.x-k8s.io/multikueue'",
    ),
]


def _named(r: Render, name: str) -> dict[str, Any]:
    (found,) = [m for m in custom_resources(r) if f"{m['kind']} {m['metadata']['name']}" == name]
    return copy.deepcopy(found)


@pytest.mark.parametrize(("name", "change", "line"), INJECTED, ids=[f"{n}: {ln[:48]}" for n, _, ln in INJECTED])
def test_an_injected_violation_fails_with_the_crds_own_message(
    dev: Render, name: str, change: Callable[[dict[str, Any]], None], line: str
) -> None:
    obj = _named(dev, name)
    assert cel.cel_problems(obj) == []
    change(obj)
    assert cel.cel_problems(obj) == [f"{name}: {line}"]
    messages = {r.message for r in cel.rules()}
    assert line.split(": ", 1)[1] in messages  # the CRD's own words, not ours


def test_a_rule_that_does_not_evaluate_is_a_problem_not_a_pass(dev: Render) -> None:
    # Kubernetes fails the request as well: evictionSoftGracePeriod is absent, so the rule's selection errors.
    obj = _named(dev, "EC2NodeClass default")
    obj["spec"]["kubelet"] = {"evictionSoft": {"memory.available": "5%"}}
    (problem,) = cel.cel_problems(obj)
    assert problem.startswith("EC2NodeClass default: spec.kubelet: rule 'has(self.evictionSoft) ?")
    assert "failed to evaluate: no such member in mapping: 'evictionSoftGracePeriod'" in problem


# --- as the API server: defaults first, transition rules skipped, optionalOldSelf honoured ------------------------


def test_defaults_are_applied_before_the_rules_run(dev: Render) -> None:
    schema = crd_schemas()[("karpenter.sh/v1", "NodePool")]
    pool = _named(dev, "NodePool default")
    del pool["spec"]["disruption"]
    defaulted = cel.apply_defaults(pool, schema)
    assert defaulted["spec"]["disruption"] == {
        "budgets": [{"nodes": "10%"}],
        "consolidateAfter": "0s",
        "consolidationPolicy": "WhenEmptyOrUnderutilized",
    }
    budgets_rule = (
        "karpenter.sh/v1 NodePool",
        "spec.disruption.budgets",
        "self.all(x, has(x.schedule) == has(x.duration))",
    )
    assert budgets_rule in cel.check(pool).rules  # the defaulted budgets were validated
    assert "disruption" not in pool["spec"]  # the caller's object is left alone


TOY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "mode": {"type": "string", "default": "b"},
                "size": {"type": "number"},
                "name": {"type": "string"},
            },
            "x-kubernetes-validations": [
                {"rule": "self.mode == 'a'", "messageExpression": "'mode ' + self.mode + ' is not a'"},
                {"rule": "!has(self.size) || self.size > 0.5", "message": "size must exceed 0.5"},
                {"rule": "self == oldSelf", "message": "immutable"},
                {"rule": "oldSelf.hasValue()", "message": "only on update", "optionalOldSelf": True},
                {"rule": "!oldSelf.hasValue() || oldSelf.value() == self", "optionalOldSelf": True},
                {"rule": "oldSelf.orValue(self) == self", "optionalOldSelf": True},
            ],
        }
    },
}


def toy(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Toy", "metadata": {"name": "t"}, "spec": spec}


def test_a_defaulted_or_nulled_field_is_validated_and_message_expressions_are_evaluated() -> None:
    for spec in ({}, {"mode": None}):
        report = cel.check_with_schema(toy(spec), TOY_SCHEMA)
        assert report.problems == ["Toy t: spec: mode b is not a", "Toy t: spec: only on update"]
    # a number field is a double in CEL even when written as an integer (an int would not compare with 0.5)
    assert cel.check_with_schema(toy({"mode": "a", "size": 1}), TOY_SCHEMA).problems == ["Toy t: spec: only on update"]
    assert cel.check_with_schema(toy({"mode": "a", "size": 0}), TOY_SCHEMA).problems == [
        "Toy t: spec: size must exceed 0.5",
        "Toy t: spec: only on update",
    ]


def test_transition_rules_are_skipped_on_create_unless_old_self_is_optional() -> None:
    report = cel.check_with_schema(toy({"mode": "a"}), TOY_SCHEMA)
    assert report.skipped_transition == 1  # self == oldSelf
    assert report.evaluations == 5  # two plain rules and the three optionalOldSelf rules, with oldSelf empty
    assert report.problems == ["Toy t: spec: only on update"]


def test_a_rule_this_evaluator_cannot_run_fails_loudly() -> None:
    schema = copy.deepcopy(TOY_SCHEMA)
    schema["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "self.name.lowerAscii() == self.name", "message": "lower case"},
        {"rule": "self.name ==", "message": "broken"},
        {"rule": "self.name.size() < 3 || oldSelf.name.lowerAscii() == 'x'", "message": "transition, skipped"},
    ]
    problems = cel.check_with_schema(toy({"name": "ab"}), schema).problems
    assert len(problems) == 2
    assert "calls lowerAscii, which this evaluator does not provide" in problems[0]
    assert "cel-python cannot parse it" in problems[1]


def test_kubernetes_string_extensions_behave_like_kubernetes() -> None:
    split = cel.k8s_split
    assert split(ct.StringType("al2023@v20260930"), ct.StringType("@")) == ["al2023", "v20260930"]
    assert split(ct.StringType("a@b@c"), ct.StringType("@"), ct.IntType(2)) == ["a", "b@c"]
    assert split(ct.StringType("a@b"), ct.StringType("@"), ct.IntType(0)) == []
    assert split(ct.StringType("abc"), ct.StringType(""), ct.IntType(2)) == ["a", "bc"]
    find = cel.k8s_find
    assert find(ct.StringType("karpenter.sh/team"), ct.StringType("^([^/]+)")) == "karpenter.sh"
    assert find(ct.StringType("abc"), ct.StringType("[0-9]+")) == ""


# --- the defect this check found: stack tags that Karpenter's EC2NodeClass refuses -------------------------------


def _reserved_examples() -> list[str]:
    return [*KARPENTER_RESERVED_TAG_KEYS, f"{KARPENTER_RESERVED_TAG_PREFIX}/eks-neuron-llm-dev"]


def test_the_config_reserves_exactly_the_tag_keys_the_node_class_rules_refuse(dev: Render) -> None:
    tag_rules = {r.message for r in cel.rules("karpenter.k8s.aws/v1", "EC2NodeClass") if r.where == "spec.tags"}
    hit: set[str] = set()
    for key in [*_reserved_examples(), ""]:
        obj = _named(dev, "EC2NodeClass default")
        obj["spec"]["tags"] = {key: "x"}
        (problem,) = cel.cel_problems(obj)
        hit.add(problem.split("spec.tags: ", 1)[1])
    assert hit == tag_rules  # every rule on spec.tags is covered by a reserved key (or the empty key)


@pytest.mark.parametrize("key", _reserved_examples())
def test_a_tag_key_karpenter_reserves_stops_the_render_in_one_line(key: str) -> None:
    try:
        r = rendered("dev", tags=json.dumps({key: "x"}))
    except RenderConfigError as exc:
        (line,) = exc.lines
        assert line.startswith(f"eks-neuron-llm:tags: {key!r} is not allowed; allowed: tag keys Karpenter")
        return
    problems = cel.check_all(custom_resources(r)).problems
    pytest.fail("the config accepted it, and the API server would refuse the node classes:\n" + "\n".join(problems))
