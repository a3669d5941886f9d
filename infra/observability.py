"""CloudWatch: the ``amazon-cloudwatch-observability`` add-on (Container Insights with enhanced observability and
Neuron metrics) and a dashboard for the accelerated capacity.

The add-on's configuration values are the ``amazon-cloudwatch-observability`` Helm chart's values; the tests check
every key against the vendored chart values (6.4.0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws

from infra import iam
from workloads.topology import NEURON_TOLERATION, SYSTEM_TOLERATION

if TYPE_CHECKING:
    from infra.cluster import Cluster

ADDON = "amazon-cloudwatch-observability"
AGENT_SERVICE_ACCOUNT = "cloudwatch-agent"
NAMESPACE = "ContainerInsights"
PERIOD = 60


def addon_values() -> dict[str, Any]:
    """Configuration of the add-on: enhanced Container Insights, Neuron monitor, reach onto tainted nodes."""
    return {
        # The root tolerations apply to every daemonset of the add-on (agent, Fluent Bit, neuron-monitor): exactly
        # the two taints this cluster uses, so the agent and neuron-monitor land on inf2/trn1 and system nodes.
        "tolerations": [dict(SYSTEM_TOLERATION), dict(NEURON_TOLERATION)],
        "agent": {
            "config": {
                "logs": {
                    "metrics_collected": {
                        "kubernetes": {
                            # Enhanced observability: per-container/pod metrics and the accelerated-compute
                            # (Neuron) metrics collected from neuron-monitor.
                            "enhanced_container_insights": True,
                            "accelerated_compute_metrics": True,
                        },
                        "application_signals": {},
                    }
                },
                "traces": {"traces_collected": {"application_signals": {}}},
            }
        },
        "neuronMonitor": {"enabled": True},
        # No NVIDIA GPUs in this cluster.
        "dcgmExporter": {"enabled": False},
        "containerLogs": {"enabled": True},
    }


def _search(metric: str, cluster: str, stat: str, label: str, expr_id: str) -> list[Any]:
    query = f'SEARCH(\'{{{NAMESPACE},ClusterName,NodeName}} MetricName="{metric}" ClusterName="{cluster}"\', '
    return [{"expression": f"{query}'{stat}', {PERIOD})", "label": label, "id": expr_id}]


def _metric_widget(title: str, metrics: list[Any], region: str, x: int, y: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {"title": title, "region": region, "metrics": metrics, "view": "timeSeries", **extra},
    }


def _pod_search(metric: str, cluster: str, stat: str, expr_id: str) -> list[Any]:
    query = f'SEARCH(\'{{{NAMESPACE},ClusterName,Namespace,PodName}} MetricName="{metric}" ClusterName="{cluster}"\''
    return [{"expression": f"{query}, '{stat}', {PERIOD})", "id": expr_id}]


def _container_search(metric: str, cluster: str, expr_id: str) -> list[Any]:
    # Unbraced schema: match the metric at whatever container-level dimension set Container Insights emits it.
    query = f'SEARCH(\'{NAMESPACE} MetricName="{metric}" ClusterName="{cluster}"\''
    return [{"expression": f"{query}, 'Average', {PERIOD})", "id": expr_id}]


def dashboard_body(cluster: str, region: str) -> dict[str, Any]:
    """Widgets: NeuronCore utilisation, Neuron memory, nodes by pool, pod restarts, container CPU and memory."""
    performance_logs = f"/aws/containerinsights/{cluster}/performance"
    nodes_by_pool = (
        f"SOURCE '{performance_logs}' "
        '| filter Type = "Node" '
        "| parse InstanceType /^(?<family>[a-z0-9-]+)\\./ "
        "| stats count_distinct(NodeName) as nodes by bin(5m), family"
    )
    return {
        "widgets": [
            _metric_widget(
                "NeuronCore utilisation by node (%)",
                [_search("node_neuroncore_utilization", cluster, "Average", "", "neuroncore")],
                region,
                0,
                0,
                yAxis={"left": {"min": 0, "max": 100}},
            ),
            _metric_widget(
                "Neuron device memory used by node (bytes)",
                [_search("node_neuroncore_memory_usage_total", cluster, "Average", "", "neuronmem")],
                region,
                12,
                0,
            ),
            {
                "type": "log",
                "x": 0,
                "y": 6,
                "width": 12,
                "height": 6,
                "properties": {
                    # Pools have disjoint instance families: inf2 = inf2 pool, trn1 = trn1 pool, the system node
                    # group's family (m6i by default) and the rest = default pool.
                    "title": "Nodes by pool (instance family)",
                    "region": region,
                    "query": nodes_by_pool,
                    "view": "timeSeries",
                    "stacked": True,
                },
            },
            _metric_widget(
                "Container restarts by pod",
                [_pod_search("pod_number_of_container_restarts", cluster, "Maximum", "restarts")],
                region,
                12,
                6,
            ),
            _metric_widget(
                "Container CPU utilisation (% of node)",
                [_container_search("container_cpu_utilization", cluster, "cpu")],
                region,
                0,
                12,
            ),
            _metric_widget(
                "Container memory utilisation (% of node)",
                [_container_search("container_memory_utilization", cluster, "memory")],
                region,
                12,
                12,
            ),
        ]
    }


def dashboard_url(region: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards/dashboard/{name}"


@dataclass
class ObservabilityArgs:
    """What the observability component needs; ``__main__.py`` fills it from the stack config and the cluster."""

    cluster_name: str
    """Name of the EKS cluster (config ``clusterName``): names the dashboard and selects its metrics."""
    cluster_version: str
    """The cluster's Kubernetes minor (config ``kubernetesVersion``): the add-on version is EKS's default for it."""
    region: str
    """AWS region of the stack (config ``aws:region``): the dashboard's metrics and console link."""
    cluster: Cluster
    """The cluster component: its name and the system node group the add-on's daemonsets run on."""
    node_prerequisites: Sequence[pulumi.Resource] = ()
    """Ordering only: where the add-on's Deployments (controller manager, cluster scraper) can run.  They do not
    tolerate the system taint, so they wait for Karpenter's default pool to exist and launch a node for them."""


class Observability(pulumi.ComponentResource):
    """CloudWatch Container Insights (the EKS add-on, with Neuron metrics) and the accelerated-capacity dashboard.

    Outputs: ``dashboard_url`` (the CloudWatch console link)."""

    addon: aws.eks.Addon
    dashboard: aws.cloudwatch.Dashboard
    dashboard_url: pulumi.Output[str]

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = iam.role(
            f"{name}-agent",
            trust=iam.POD_IDENTITY_TRUST,
            managed=("CloudWatchAgentServerPolicy",),
            description=f"CloudWatch agent of EKS cluster {args.cluster_name} (Pod Identity)",
            parent=self,
        )
        version = aws.eks.get_addon_version_output(
            addon_name=ADDON,
            kubernetes_version=args.cluster_version,
            most_recent=False,
            opts=pulumi.InvokeOptions(parent=self),
        )
        self.addon = aws.eks.Addon(
            f"{name}-{ADDON}",
            cluster_name=args.cluster.name,
            addon_name=ADDON,
            addon_version=version.version,
            configuration_values=json.dumps(addon_values(), sort_keys=True),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="PRESERVE",
            pod_identity_associations=[
                aws.eks.AddonPodIdentityAssociationArgs(service_account=AGENT_SERVICE_ACCOUNT, role_arn=role.arn)
            ],
            # Its pods need nodes (daemonsets on the system nodes, Deployments on Karpenter's default pool); without
            # them EKS leaves the add-on DEGRADED and the create times out.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[args.cluster.system_node_group, *args.node_prerequisites]
            ),
        )
        dashboard_name = f"{args.cluster_name}-accelerated-capacity"
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=dashboard_name,
            dashboard_body=json.dumps(dashboard_body(args.cluster_name, args.region)),
            opts=child,
        )
        self.dashboard_url = self.dashboard.dashboard_name.apply(lambda n: dashboard_url(args.region, n))
        self.register_outputs({"dashboardUrl": self.dashboard_url})
