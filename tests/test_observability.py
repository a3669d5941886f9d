"""CloudWatch: the observability add-on (Pod Identity, enhanced, Neuron monitor, tolerations) and the dashboard."""

from __future__ import annotations

import json
from typing import Any

from infra import tokens
from infra.observability import ADDON, AGENT_SERVICE_ACCOUNT, addon_values
from tools.render import Render
from tools.schemas import chart_values, helm_value_problems
from workloads.topology import NEURON_TAINT, SYSTEM_TAINT

CHART_VALUES = "amazon-cloudwatch-observability-6.4.0.values.yaml"


def addon(r: Render) -> dict[str, Any]:
    (a,) = [x for x in r.of_type(tokens.EKS_ADDON) if x["inputs"]["addonName"] == ADDON]
    return a


def tolerates(tolerations: list[dict[str, str]], taint: dict[str, str], effect: str) -> bool:
    return any(
        t.get("key") == taint["key"]
        and t.get("effect", effect) == effect
        and (t.get("operator") == "Exists" or t.get("value") == taint["value"])
        for t in tolerations
    )


def test_addon_is_pinned_and_uses_a_pod_identity_role_with_the_agent_policy(each_stack: Render) -> None:
    a = addon(each_stack)["inputs"]
    assert a["addonVersion"] == f"v0.0.0-default-for-{each_stack.config['eks-neuron-llm:clusterVersion']}-eksbuild.1"
    (assoc,) = a["podIdentityAssociations"]
    assert assoc["serviceAccount"] == AGENT_SERVICE_ACCOUNT
    (role,) = [r for r in each_stack.of_type(tokens.IAM_ROLE) if r["name"] == "observability-agent"]
    trust = json.loads(role["inputs"]["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    attached = [
        x["inputs"]["policyArn"]
        for x in each_stack.of_type(tokens.IAM_POLICY_ATTACHMENT)
        if role["urn"] in x["dependencies"]
    ]
    assert attached == ["arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"]


def test_configuration_keys_exist_in_the_charts_values(dev: Render) -> None:
    config = json.loads(addon(dev)["inputs"]["configurationValues"])
    assert config == addon_values()
    assert helm_value_problems(ADDON, config, chart_values(CHART_VALUES)) == []


def test_a_misspelled_configuration_key_is_named() -> None:
    bad = {**addon_values(), "neuronMonitors": {"enabled": True}}
    (problem,) = helm_value_problems(ADDON, bad, chart_values(CHART_VALUES))
    assert "'neuronMonitors'" in problem


def test_enhanced_observability_and_neuron_metrics_are_on(dev: Render) -> None:
    config = json.loads(addon(dev)["inputs"]["configurationValues"])
    k8s = config["agent"]["config"]["logs"]["metrics_collected"]["kubernetes"]
    assert k8s["enhanced_container_insights"] is True and k8s["accelerated_compute_metrics"] is True
    assert config["neuronMonitor"]["enabled"] is True
    assert config["containerLogs"]["enabled"] is True
    assert config["dcgmExporter"]["enabled"] is False


def test_daemonsets_tolerate_the_neuron_and_system_taints(dev: Render) -> None:
    tolerations = json.loads(addon(dev)["inputs"]["configurationValues"])["tolerations"]
    assert tolerates(tolerations, NEURON_TAINT, "NoSchedule")
    assert tolerates(tolerations, {**SYSTEM_TAINT, "effect": "NoSchedule"}, "NoSchedule")
    assert not tolerates(tolerations, {"key": "other", "value": "x"}, "NoSchedule")


def test_addon_waits_for_the_system_nodes_and_the_default_pool(dev: Render) -> None:
    (ng,) = dev.of_type(tokens.EKS_NODE_GROUP)
    deps = addon(dev)["dependencies"]
    assert ng["urn"] in deps
    (pool,) = [p for p in dev.of_type(tokens.NODE_POOL) if p["name"].endswith("-default")]
    assert pool["urn"] in deps


def test_dashboard_has_the_accelerated_capacity_widgets_for_this_cluster(each_stack: Render) -> None:
    (dash,) = each_stack.of_type("aws:cloudwatch/dashboard:Dashboard")
    body = json.loads(dash["inputs"]["dashboardBody"])
    text = json.dumps(body)
    cluster = each_stack.outputs["clusterName"]
    for metric in (
        "node_neuroncore_utilization",
        "node_neuroncore_memory_usage_total",
        "pod_number_of_container_restarts",
        "container_cpu_utilization",
        "container_memory_utilization",
    ):
        assert f'MetricName=\\"{metric}\\" ClusterName=\\"{cluster}\\"' in text, metric
    (nodes,) = [w for w in body["widgets"] if w["type"] == "log"]
    assert f"/aws/containerinsights/{cluster}/performance" in nodes["properties"]["query"]
    assert "count_distinct(NodeName)" in nodes["properties"]["query"]
    for w in body["widgets"]:
        assert w["properties"]["region"] == each_stack.outputs["region"]
    name = dash["inputs"]["dashboardName"]
    assert each_stack.outputs["dashboardUrl"].endswith(f"#dashboards/dashboard/{name}")
    assert each_stack.outputs["dashboardUrl"].startswith(f"https://{each_stack.outputs['region']}.console.aws")
