"""Monitoring: Prometheus, Alertmanager, Grafana and kube-state-metrics in namespace ``monitoring``, the alert SNS
topic and its subscriptions (``workloads.monitoring``).

- The SNS topic (``<cluster>-alerts``, encrypted with the AWS-managed SNS key) receives every alert through
  Alertmanager's SNS receiver, with a Pod Identity role that may only publish to it; ``alertEmails`` subscribe to it.
- Grafana's admin password is a random 32-character value kept in the stack's encrypted state, in a Secret it reads
  as a file; replacing the RandomPassword (``pulumi up --replace``) rotates it.  Grafana's Pod Identity role may read
  CloudWatch metrics (NeuronCore utilisation from Container Insights).
- Prometheus keeps its data on an encrypted gp3 claim (kept in prod, like Open WebUI's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra import iam
from infra.config import MonitoringConfig
from workloads import monitoring
from workloads.monitoring import dashboards, manifests, rules, scrape

if TYPE_CHECKING:
    from infra.cluster import Cluster

# Only what Grafana's CloudWatch data source calls to draw metric panels; none of these has resource-level
# permissions, so their resource is "*".
CLOUDWATCH_READ_ACTIONS = ("cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "cloudwatch:GetMetricStatistics")


def publish_policy(topic_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "PublishAlerts", "Effect": "Allow", "Action": "sns:Publish", "Resource": topic_arn}],
    }


def cloudwatch_read_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadMetrics", "Effect": "Allow", "Action": list(CLOUDWATCH_READ_ACTIONS), "Resource": "*"}
        ],
    }


def thresholds(config: MonitoringConfig) -> rules.AlertThresholds:
    return rules.AlertThresholds(
        ttft_p95_seconds=config.ttft_p95_alert_ms / 1000, error_5xx_ratio=config.error_5xx_alert_percent / 100
    )


# Typed resource per (apiVersion, kind); every other top-level field of an object is passed as a keyword argument.
_KINDS: Mapping[tuple[str, str], Any] = {
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaim,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}
_ARGS = {"roleRef": "role_ref", "automountServiceAccountToken": "automount_service_account_token"}


@dataclass
class MonitoringArgs:
    """What the monitoring component needs; ``__main__.py`` fills it from the stack config and the other components."""

    config: MonitoringConfig
    """The monitoring section of the stack config (``infra.config``): alert e-mails and thresholds."""
    cluster_name: str
    """Name of the EKS cluster (config ``clusterName``): names the alert topic, labels metrics and dashboards."""
    region: str
    """AWS region of the stack (config ``aws:region``): where Alertmanager publishes and Grafana reads CloudWatch."""
    storage_class: str
    """StorageClass of Prometheus's data claim (``infra.cluster``): the retained class in prod, the default in dev."""
    protect_data: bool
    """prod: Prometheus's claim is kept when the stack lets go of it (``retainOnDelete``)."""
    cluster: Cluster
    """The cluster component: Kubernetes provider, storage classes, EBS CSI driver, cluster name for Pod Identity."""
    node_prerequisites: Sequence[pulumi.Resource] = field(default_factory=list)
    """Ordering only: what the pods need before they can be scheduled (the Karpenter NodePool they land on); Pulumi
    waits for the workloads to become ready, and on destroy they go before the pool."""


@dataclass(frozen=True)
class _Context:
    """What every step of the component shares: the name prefix, the provider, the namespace and its inputs."""

    name: str
    provider: k8s.Provider
    inputs: manifests.MonitoringInputs
    namespace: k8s.core.v1.Namespace


class Monitoring(pulumi.ComponentResource):
    """Prometheus, Alertmanager (alerts to an SNS topic), Grafana and kube-state-metrics in namespace ``monitoring``.

    Outputs: ``alert_topic_arn`` (subscribe other receivers to it) and ``grafana_port_forward`` (a command)."""

    alert_topic_arn: pulumi.Output[str]
    grafana_port_forward: str

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Monitoring", name, None, opts)
        provider = args.cluster.provider
        inputs = manifests.MonitoringInputs(storage_class=args.storage_class, region=args.region)
        topic = self._alert_topic(name, args)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=inputs.namespace),
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        ctx = _Context(name, provider, inputs, namespace)
        accounts = {
            n: self._create(ctx, manifests.service_account(n, inputs.namespace, automount=auto), depends_on=[namespace])
            for n, auto in (
                (monitoring.PROMETHEUS, True),
                (monitoring.ALERTMANAGER, False),
                (monitoring.GRAFANA, False),
                (monitoring.KSM, True),
            )
        }
        alertmanager_identity = iam.pod_identity_role(
            f"{name}-alertmanager",
            cluster_name=args.cluster.name,
            namespace=inputs.namespace,
            service_account=accounts[monitoring.ALERTMANAGER].metadata.name,
            inline=topic.arn.apply(lambda arn: iam.to_json(publish_policy(arn))),
            description=f"Alertmanager of {args.cluster_name}: publish alerts to their SNS topic (Pod Identity)",
            parent=self,
        )
        grafana_identity = iam.pod_identity_role(
            f"{name}-grafana",
            cluster_name=args.cluster.name,
            namespace=inputs.namespace,
            service_account=accounts[monitoring.GRAFANA].metadata.name,
            inline=iam.to_json(cloudwatch_read_policy()),
            description=f"Grafana of {args.cluster_name}: read CloudWatch metrics (Pod Identity)",
            parent=self,
        )
        self._prometheus(ctx, args, accounts[monitoring.PROMETHEUS])
        self._alertmanager(ctx, args, topic, alertmanager_identity.ready)
        self._grafana(ctx, args, grafana_identity.ready)
        self._kube_state_metrics(ctx, args, accounts[monitoring.KSM])
        for policy in manifests.network_policies(inputs):
            self._create(ctx, policy, depends_on=[namespace])

        self.alert_topic_arn = topic.arn
        self.grafana_port_forward = monitoring.grafana_port_forward(inputs.namespace)
        self.register_outputs({"alertTopicArn": self.alert_topic_arn, "grafanaPortForward": self.grafana_port_forward})

    def _create(
        self, ctx: _Context, obj: Mapping[str, Any], *, depends_on: Sequence[pulumi.Resource] = (), **extra: Any
    ) -> Any:
        """The typed Kubernetes resource of a pure-builder object, named ``<component>-<kind>-<name>``."""
        cls = _KINDS[(obj["apiVersion"], obj["kind"])]
        meta = obj["metadata"]
        fields = {_ARGS.get(k, k): v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        fields.update(extra)
        return cls(
            f"{ctx.name}-{obj['kind'].lower()}-{meta['name']}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=meta["name"],
                namespace=meta.get("namespace"),
                labels=meta.get("labels"),
                annotations=meta.get("annotations"),
            ),
            **fields,
            opts=pulumi.ResourceOptions(parent=self, provider=ctx.provider, depends_on=list(depends_on)),
        )

    def _alert_topic(self, name: str, args: MonitoringArgs) -> aws.sns.Topic:
        """The SNS topic every alert goes to, and its e-mail subscriptions."""
        child = pulumi.ResourceOptions(parent=self)
        topic = aws.sns.Topic(
            f"{name}-alerts",
            name=f"{args.cluster_name}-alerts",
            kms_master_key_id="alias/aws/sns",
            opts=child,
        )
        for i, email in enumerate(args.config.alert_emails):
            aws.sns.TopicSubscription(
                f"{name}-alerts-email-{i}", topic=topic.arn, protocol="email", endpoint=email, opts=child
            )
        return topic

    def _prometheus(self, ctx: _Context, args: MonitoringArgs, account: pulumi.Resource) -> None:
        """Prometheus: RBAC, scrape config and alert rules, its data claim, the StatefulSet and Service."""
        inputs, ns_name, in_ns = ctx.inputs, ctx.inputs.namespace, [ctx.namespace]
        for obj in manifests.prometheus_rbac(inputs):
            self._create(ctx, obj)
        prom_files = manifests.prometheus_files(scrape.prometheus_config(scrape.ScrapeInputs(args.cluster_name)))
        rule_files = rules.rule_files(thresholds(args.config))
        prom_config = self._create(
            ctx,
            manifests.configmap(manifests.PROMETHEUS_CONFIG, ns_name, prom_files, monitoring.PROMETHEUS),
            depends_on=in_ns,
        )
        prom_rules = self._create(
            ctx,
            manifests.configmap(manifests.PROMETHEUS_RULES, ns_name, rule_files, monitoring.PROMETHEUS),
            depends_on=in_ns,
        )
        pvc_obj = manifests.prometheus_pvc(inputs)
        pvc = k8s.core.v1.PersistentVolumeClaim(
            f"{ctx.name}-prometheus-data",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=pvc_obj["metadata"]["name"],
                namespace=ns_name,
                labels=pvc_obj["metadata"]["labels"],
                # gp3 binds on first consumer: Pulumi must not wait for it to bind before the pod exists.
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec=pvc_obj["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=ctx.provider,
                retain_on_delete=args.protect_data,
                # The class must exist and the EBS CSI controller run to provision (and on destroy delete) the volume.
                depends_on=[
                    ctx.namespace,
                    args.cluster.storage_classes[args.storage_class],
                    args.cluster.ebs_csi_driver,
                ],
            ),
        )
        self._create(
            ctx,
            manifests.prometheus_statefulset(inputs, manifests.config_hash(prom_files, rule_files)),
            depends_on=[prom_config, prom_rules, pvc, account, *args.node_prerequisites],
        )
        self._create(
            ctx, manifests.service(monitoring.PROMETHEUS, ns_name, monitoring.PROMETHEUS_PORT, "http"), depends_on=in_ns
        )

    def _alertmanager(
        self, ctx: _Context, args: MonitoringArgs, topic: aws.sns.Topic, identity: Sequence[pulumi.Resource]
    ) -> None:
        """Alertmanager: its config (the SNS receiver), Deployment and Service."""
        ns_name = ctx.inputs.namespace
        am_files = topic.arn.apply(lambda arn: manifests.alertmanager_files(arn, args.region))
        am_config = k8s.core.v1.ConfigMap(
            f"{ctx.name}-configmap-{manifests.ALERTMANAGER_CONFIG}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=manifests.ALERTMANAGER_CONFIG, namespace=ns_name, labels=monitoring.labels(monitoring.ALERTMANAGER)
            ),
            data=am_files,
            opts=pulumi.ResourceOptions(parent=self, provider=ctx.provider, depends_on=[ctx.namespace]),
        )
        am_deployment = am_files.apply(
            lambda files: manifests.alertmanager_deployment(ctx.inputs, manifests.config_hash(files))
        )
        k8s.apps.v1.Deployment(
            f"{ctx.name}-deployment-{monitoring.ALERTMANAGER}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=monitoring.ALERTMANAGER, namespace=ns_name, labels=monitoring.labels(monitoring.ALERTMANAGER)
            ),
            spec=am_deployment.apply(lambda d: d["spec"]),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=ctx.provider,
                depends_on=[am_config, *identity, *args.node_prerequisites],
            ),
        )
        self._create(
            ctx,
            manifests.service(monitoring.ALERTMANAGER, ns_name, monitoring.ALERTMANAGER_PORT, "http"),
            depends_on=[ctx.namespace],
        )

    def _grafana(self, ctx: _Context, args: MonitoringArgs, identity: Sequence[pulumi.Resource]) -> None:
        """Grafana: its admin password Secret, provisioning and dashboards, Deployment and Service."""
        inputs, ns_name, in_ns = ctx.inputs, ctx.inputs.namespace, [ctx.namespace]
        boards = dashboards.all_dashboards(args.cluster_name)
        folders = list(boards)
        password = random.RandomPassword(
            f"{ctx.name}-grafana-admin", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        secret = k8s.core.v1.Secret(
            f"{ctx.name}-grafana-admin",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=manifests.GRAFANA_ADMIN_SECRET, namespace=ns_name, labels=monitoring.labels(monitoring.GRAFANA)
            ),
            type="Opaque",
            string_data={manifests.GRAFANA_ADMIN_PASSWORD_KEY: password.result.apply(pulumi.Output.secret)},
            opts=pulumi.ResourceOptions(parent=self, provider=ctx.provider, depends_on=in_ns),
        )
        grafana_files = manifests.grafana_files(inputs, folders)
        provisioning = self._create(
            ctx,
            manifests.configmap(manifests.GRAFANA_PROVISIONING, ns_name, grafana_files, monitoring.GRAFANA),
            depends_on=in_ns,
        )
        board_maps = [
            self._create(ctx, obj, depends_on=in_ns) for obj in manifests.dashboards_configmaps(inputs, boards)
        ]
        self._create(
            ctx,
            manifests.grafana_deployment(inputs, folders, manifests.config_hash(grafana_files)),
            depends_on=[secret, provisioning, *board_maps, *identity, *args.node_prerequisites],
        )
        self._create(
            ctx, manifests.service(monitoring.GRAFANA, ns_name, monitoring.GRAFANA_PORT, "http"), depends_on=in_ns
        )

    def _kube_state_metrics(self, ctx: _Context, args: MonitoringArgs, account: pulumi.Resource) -> None:
        """kube-state-metrics: RBAC, Deployment and Service."""
        for obj in manifests.ksm_rbac(ctx.inputs):
            self._create(ctx, obj)
        self._create(ctx, manifests.ksm_deployment(ctx.inputs), depends_on=[account, *args.node_prerequisites])
        self._create(
            ctx,
            manifests.service(monitoring.KSM, ctx.inputs.namespace, monitoring.KSM_PORT, scrape.KSM_METRICS_PORT_NAME),
            depends_on=[ctx.namespace],
        )
