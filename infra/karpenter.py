"""Karpenter: its AWS side (IAM, Pod Identity, interruption queue and rules), its charts, its node classes and pools.

The controller's permissions follow Karpenter's own v1 CloudFormation (``schemas/iam/karpenter-cloudformation.yaml``,
vendored at 1.14.1), with every resource and condition scoped to this cluster, this region, this account and this
stack's node role.  The zonal-shift statement is left out: ``settings.enableZonalShift`` stays off.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import ami, iam
from infra.config import CapacityConfig
from workloads import nodepools
from workloads.topology import SYSTEM_NODEGROUP, SYSTEM_TOLERATION

if TYPE_CHECKING:
    from infra.cluster import Cluster

KARPENTER_VERSION = "1.14.1"
KARPENTER_REPOSITORY = "oci://public.ecr.aws/karpenter"
CRD_CHART = f"{KARPENTER_REPOSITORY}/karpenter-crd"
CONTROLLER_CHART = f"{KARPENTER_REPOSITORY}/karpenter"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"
# EventBridge events Karpenter reacts to before EC2 acts (detail-types as in the v1 CloudFormation).
INTERRUPTION_EVENTS: dict[str, tuple[str, str]] = {
    "scheduled-change": ("aws.health", "AWS Health Event"),
    "spot-interruption": ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    "rebalance": ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    "instance-state-change": ("aws.ec2", "EC2 Instance State-change Notification"),
    "capacity-reservation-interruption": ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
}
QUEUE_RETENTION_SECONDS = 300
# How long a NodePool/EC2NodeClass delete may wait for its nodes to drain and terminate (pods' grace periods,
# then EC2 termination); above the Kubernetes provider's 10-minute default.
NODE_DELETE_TIMEOUT = "30m"

PolicyDocument = dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------
# IAM documents (pure; the tests lint them and compare them with the upstream CloudFormation).
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    cluster: str
    region: str
    account: str
    partition: str

    def ec2(self, resource: str, *, account: bool = True) -> str:
        return f"arn:{self.partition}:ec2:{self.region}:{self.account if account else ''}:{resource}"

    @property
    def instance_profiles(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:instance-profile/*"

    @property
    def cluster_arn(self) -> str:
        return f"arn:{self.partition}:eks:{self.region}:{self.account}:cluster/{self.cluster}"


def _doc(*statements: dict[str, Any]) -> PolicyDocument:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _owned(scope: Scope) -> dict[str, str]:
    """Condition: the resource carries this cluster's ownership tag."""
    return {f"aws:ResourceTag/kubernetes.io/cluster/{scope.cluster}": "owned"}


def _request_owned(scope: Scope) -> dict[str, str]:
    """Condition: the request tags what it creates as owned by this cluster."""
    return {
        f"aws:RequestTag/kubernetes.io/cluster/{scope.cluster}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": scope.cluster,
    }


def node_lifecycle_policy(scope: Scope) -> PolicyDocument:
    """Launch, tag and terminate this cluster's instances, fleets and launch templates."""
    owned, request_owned = _owned(scope), _request_owned(scope)
    launched = [
        scope.ec2(f"{r}/*")
        for r in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")
    ]
    return _doc(
        {
            "Sid": "AllowScopedEC2InstanceAccessActions",
            "Effect": "Allow",
            "Resource": [
                scope.ec2("image/*", account=False),
                scope.ec2("snapshot/*", account=False),
                scope.ec2("security-group/*"),
                scope.ec2("subnet/*"),
                scope.ec2("capacity-reservation/*"),
                scope.ec2("placement-group/*"),
            ],
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
        },
        {
            "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
            "Effect": "Allow",
            "Resource": scope.ec2("launch-template/*"),
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
            "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
        },
        {
            "Sid": "AllowScopedEC2InstanceActionsWithTags",
            "Effect": "Allow",
            "Resource": launched,
            "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            "Condition": {
                "StringEquals": request_owned,
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceCreationTagging",
            "Effect": "Allow",
            "Resource": launched,
            "Action": "ec2:CreateTags",
            "Condition": {
                "StringEquals": {
                    **request_owned,
                    "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                },
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceTagging",
            "Effect": "Allow",
            "Resource": scope.ec2("instance/*"),
            "Action": "ec2:CreateTags",
            "Condition": {
                "StringEquals": owned,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": scope.cluster},
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                },
            },
        },
        {
            "Sid": "AllowScopedDeletion",
            "Effect": "Allow",
            "Resource": [scope.ec2("instance/*"), scope.ec2("launch-template/*")],
            "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
        },
    )


def iam_integration_policy(scope: Scope, node_role_arn: str) -> PolicyDocument:
    """Pass the node role to EC2 and manage the instance profiles of this cluster's node classes."""
    owned, request_owned = _owned(scope), _request_owned(scope)
    region_tag = {"aws:ResourceTag/topology.kubernetes.io/region": scope.region}
    return _doc(
        {
            "Sid": "AllowPassingInstanceRole",
            "Effect": "Allow",
            "Resource": node_role_arn,
            "Action": "iam:PassRole",
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        },
        {
            "Sid": "AllowScopedInstanceProfileCreationActions",
            "Effect": "Allow",
            "Resource": scope.instance_profiles,
            "Action": ["iam:CreateInstanceProfile"],
            "Condition": {
                "StringEquals": {**request_owned, "aws:RequestTag/topology.kubernetes.io/region": scope.region},
                "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
        {
            "Sid": "AllowScopedInstanceProfileTagActions",
            "Effect": "Allow",
            "Resource": scope.instance_profiles,
            "Action": ["iam:TagInstanceProfile"],
            "Condition": {
                "StringEquals": {
                    **owned,
                    **region_tag,
                    **request_owned,
                    "aws:RequestTag/topology.kubernetes.io/region": scope.region,
                },
                "StringLike": {
                    "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                },
            },
        },
        {
            # What the EC2NodeClass finalizer needs to clean up the instance profile it created.
            "Sid": "AllowScopedInstanceProfileActions",
            "Effect": "Allow",
            "Resource": scope.instance_profiles,
            "Action": [
                "iam:AddRoleToInstanceProfile",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:DeleteInstanceProfile",
            ],
            "Condition": {
                "StringEquals": {**owned, **region_tag},
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
    )


def eks_and_queue_policy(scope: Scope, queue_arn: str) -> PolicyDocument:
    """Find this cluster's API endpoint and consume its interruption queue."""
    return _doc(
        {
            "Sid": "AllowAPIServerEndpointDiscovery",
            "Effect": "Allow",
            "Resource": scope.cluster_arn,
            "Action": "eks:DescribeCluster",
        },
        {
            "Sid": "AllowInterruptionQueueActions",
            "Effect": "Allow",
            "Resource": queue_arn,
            "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
        },
    )


def resource_discovery_policy(scope: Scope) -> PolicyDocument:
    """Read what launching needs: instance types, offerings, prices, images, subnets, security groups, profiles."""
    return _doc(
        {
            "Sid": "AllowRegionalReadActions",
            "Effect": "Allow",
            "Resource": "*",
            "Action": [
                "ec2:DescribeCapacityReservations",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribePlacementGroups",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory",
                "ec2:DescribeSubnets",
            ],
            "Condition": {"StringEquals": {"aws:RequestedRegion": scope.region}},
        },
        {
            "Sid": "AllowSSMReadActions",
            "Effect": "Allow",
            "Resource": f"arn:{scope.partition}:ssm:{scope.region}::parameter/aws/service/*",
            "Action": "ssm:GetParameter",
        },
        {"Sid": "AllowPricingReadActions", "Effect": "Allow", "Resource": "*", "Action": "pricing:GetProducts"},
        {
            # The EC2NodeClass finalizer lists instance profiles to find the one it owns (no resource-level scope).
            "Sid": "AllowUnscopedInstanceProfileListAction",
            "Effect": "Allow",
            "Resource": "*",
            "Action": "iam:ListInstanceProfiles",
        },
        {
            "Sid": "AllowInstanceProfileReadActions",
            "Effect": "Allow",
            "Resource": scope.instance_profiles,
            "Action": "iam:GetInstanceProfile",
        },
    )


def controller_policies(scope: Scope, node_role_arn: str, queue_arn: str) -> dict[str, PolicyDocument]:
    """The controller's managed policies by purpose, mirroring the v1 CloudFormation's split."""
    return {
        "node-lifecycle": node_lifecycle_policy(scope),
        "iam-integration": iam_integration_policy(scope, node_role_arn),
        "eks-and-queue": eks_and_queue_policy(scope, queue_arn),
        "resource-discovery": resource_discovery_policy(scope),
    }


def queue_policy(queue_arn: str) -> PolicyDocument:
    """EventBridge (and SQS itself) may send to the queue; nothing may use it over plain HTTP."""
    return {
        "Version": "2012-10-17",
        "Id": "EC2InterruptionPolicy",
        "Statement": [
            {
                "Sid": "AllowEventBridgeSend",
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


# ---------------------------------------------------------------------------------------------------------------
# Chart values (pure).
# ---------------------------------------------------------------------------------------------------------------


def controller_values(cluster_name: str, cluster_endpoint: str, queue_name: str) -> dict[str, Any]:
    """Values of the karpenter chart: settings, 2 replicas on the system node group, a PDB."""
    return {
        "settings": {
            "clusterName": cluster_name,
            "clusterEndpoint": cluster_endpoint,
            "interruptionQueue": queue_name,
        },
        "serviceAccount": {"name": SERVICE_ACCOUNT},
        "replicas": 2,
        "podDisruptionBudget": {"name": "karpenter", "maxUnavailable": 1},
        # The system node group, the same placement as topology.system_placement(): the chart's nodeSelector map is
        # not free-form, so the node-group label goes into its (already present) required node affinity instead.
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"},
                                {"key": "eks.amazonaws.com/nodegroup", "operator": "In", "values": [SYSTEM_NODEGROUP]},
                            ]
                        }
                    ]
                }
            },
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname"}]
            },
        },
        "tolerations": [dict(SYSTEM_TOLERATION)],
        "controller": {
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"memory": "1Gi"},
            }
        },
    }


def _pick(purpose: str) -> Callable[[dict[str, PolicyDocument]], str]:
    return lambda documents: iam.to_json(documents[purpose])


def _with_role(spec: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    return lambda role: {**spec, "role": role}


# ---------------------------------------------------------------------------------------------------------------
# The component.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class KarpenterArgs:
    """What the Karpenter component needs; ``__main__.py`` fills it from the stack config and the cluster."""

    config: CapacityConfig
    """The capacity section of the stack config (``infra.config``): AMI release, disks, pool limits and types."""
    cluster_name: str
    """Name of the EKS cluster (config ``clusterName``): scopes the IAM policies, names the queue, tags discovery."""
    cluster_version: str
    """The cluster's Kubernetes minor (e.g. ``"1.35"``, config ``kubernetesVersion``): the AMI release must be
    published for it."""
    region: str
    """AWS region of the stack (config ``aws:region``): scopes the controller's policies."""
    cluster: Cluster
    """The cluster component: its name, endpoint, security group, system node group and Kubernetes provider."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """The stack's AWS tags (config ``tags``), also put on everything Karpenter launches (Pulumi's default tags do
    not reach it)."""


@dataclass(frozen=True)
class NodeAccess:
    """What nodes Karpenter launches need to join: their role (and its policies), access entry, discovery tag."""

    role: aws.iam.Role
    ready: tuple[pulumi.Resource, ...]
    """Everything a node class must be created after (and, on destroy, deleted before)."""


@dataclass(frozen=True)
class Controller:
    """The Karpenter controller: its Pod Identity association and its two chart releases."""

    pod_identity: aws.eks.PodIdentityAssociation
    crd_release: k8s.helm.v3.Release
    release: k8s.helm.v3.Release


class Karpenter(pulumi.ComponentResource):
    """Karpenter v1 on the cluster: node access, interruption handling, the controller, and its classes and pools.

    Outputs: ``node_pools`` (by pool name, for components whose pods need one), ``node_pool_names`` and
    ``interruption_queue_name``."""

    node_role: aws.iam.Role
    queue: aws.sqs.Queue
    crd_release: k8s.helm.v3.Release
    controller_release: k8s.helm.v3.Release
    pod_identity: aws.eks.PodIdentityAssociation
    node_classes: dict[str, k8s.apiextensions.CustomResource]
    node_pools: dict[str, k8s.apiextensions.CustomResource]
    node_pool_names: pulumi.Output[list[str]]
    interruption_queue_name: pulumi.Output[str]

    def __init__(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Karpenter", name, None, opts)
        # The AMI release every node class pins, published for this minor in each variant the classes boot, or the
        # program stops here with one line (a missing release would leave every pool without nodes, silently).
        ami_alias = ami.require_release(
            args.config.ami_version,
            minor=args.cluster_version,
            arch=nodepools.AMI_ARCH,
            variants=list(nodepools.AMI_VARIANTS.values()),
            opts=pulumi.InvokeOptions(parent=self),
        )
        nodes = self._node_access(name, args)
        self.node_role = nodes.role
        self.queue = self._interruption_handling(name, args.cluster_name)
        controller = self._controller(name, args, self.node_role, self.queue)
        self.pod_identity = controller.pod_identity
        self.crd_release = controller.crd_release
        self.controller_release = controller.release
        self._classes_and_pools(name, args, ami_alias, nodes, controller)

        self.node_pool_names = pulumi.Output.from_input(list(self.node_pools))
        self.interruption_queue_name = self.queue.name
        self.register_outputs(
            {"nodePoolNames": self.node_pool_names, "interruptionQueueName": self.interruption_queue_name}
        )

    def _node_access(self, name: str, args: KarpenterArgs) -> NodeAccess:
        """Nodes: their role, the access entry that lets them join (API authentication mode), and the tag by which
        Karpenter finds the EKS-created cluster security group."""
        child = pulumi.ResourceOptions(parent=self)
        role, policies = iam.node_role(
            f"{name}-node", description=f"Nodes Karpenter launches for EKS cluster {args.cluster_name}", parent=self
        )
        access_entry = aws.eks.AccessEntry(
            f"{name}-node",
            cluster_name=args.cluster.name,
            principal_arn=role.arn,
            type="EC2_LINUX",
            opts=child,
        )
        discovery_tag = aws.ec2.Tag(
            f"{name}-cluster-sg-discovery",
            resource_id=args.cluster.cluster_security_group_id,
            key=nodepools.DISCOVERY_TAG,
            value=args.cluster_name,
            opts=child,
        )
        # Selected by the tag: without it a class never turns Ready.  Nodes launched from a class can join only once
        # their role has an access entry, and pull images only once its policies are attached; all stay until the
        # nodes are gone.
        return NodeAccess(role, (discovery_tag, access_entry, *policies))

    def _interruption_handling(self, name: str, cluster_name: str) -> aws.sqs.Queue:
        """EventBridge -> SQS -> Karpenter drains a node before EC2 takes it away: the queue, its policy and rules."""
        child = pulumi.ResourceOptions(parent=self)
        queue = aws.sqs.Queue(
            f"{name}-interruption",
            name=f"{cluster_name}-karpenter",
            message_retention_seconds=QUEUE_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-interruption",
            queue_url=queue.url,
            policy=queue.arn.apply(lambda arn: iam.to_json(queue_policy(arn))),
            opts=child,
        )
        for rule_name, (source, detail_type) in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{rule_name}",
                description=f"{detail_type} -> Karpenter interruption queue of {cluster_name}",
                event_pattern=json.dumps({"source": [source], "detail-type": [detail_type]}),
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{rule_name}",
                rule=rule.name,
                target_id="KarpenterInterruptionQueueTarget",
                arn=queue.arn,
                opts=child,
            )
        return queue

    def _controller_permissions(
        self, name: str, args: KarpenterArgs, node_role: aws.iam.Role, queue: aws.sqs.Queue
    ) -> tuple[aws.eks.PodIdentityAssociation, list[pulumi.Resource]]:
        """The controller's role, bound to its service account through Pod Identity, and its four policies."""
        child = pulumi.ResourceOptions(parent=self)
        cluster_name = args.cluster_name
        controller_role, pod_identity, _ = iam.pod_identity_role(
            f"{name}-controller",
            cluster_name=args.cluster.name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            description=f"Karpenter controller of EKS cluster {cluster_name} (Pod Identity)",
            parent=self,
        )
        invoke = pulumi.InvokeOptions(parent=self)
        documents = pulumi.Output.all(
            account=aws.get_caller_identity_output(opts=invoke).account_id,
            partition=aws.get_partition_output(opts=invoke).partition,
            node_role_arn=node_role.arn,
            queue_arn=queue.arn,
        ).apply(
            lambda a: controller_policies(
                Scope(cluster=cluster_name, region=args.region, account=a["account"], partition=a["partition"]),
                a["node_role_arn"],
                a["queue_arn"],
            )
        )
        attachments: list[pulumi.Resource] = []
        for purpose in ("node-lifecycle", "iam-integration", "eks-and-queue", "resource-discovery"):
            policy = aws.iam.Policy(
                f"{name}-controller-{purpose}",
                description=f"Karpenter controller of {cluster_name}: {purpose}",
                policy=documents.apply(_pick(purpose)),
                opts=child,
            )
            attachments.append(
                aws.iam.RolePolicyAttachment(
                    f"{name}-controller-{purpose}", role=controller_role.name, policy_arn=policy.arn, opts=child
                )
            )
        return pod_identity, attachments

    def _controller(self, name: str, args: KarpenterArgs, node_role: aws.iam.Role, queue: aws.sqs.Queue) -> Controller:
        """The controller's permissions and its two charts."""
        cluster = args.cluster
        pod_identity, attachments = self._controller_permissions(name, args, node_role, queue)
        # Charts: CRDs in their own release so `helm upgrade` upgrades them (Helm never upgrades a chart's crds/).
        crd_release = k8s.helm.v3.Release(
            f"{name}-crd",
            name="karpenter-crd",
            chart=CRD_CHART,
            version=KARPENTER_VERSION,
            namespace=NAMESPACE,
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider),
        )
        cluster_name = args.cluster_name
        values = pulumi.Output.all(endpoint=cluster.endpoint, queue_name=queue.name).apply(
            lambda a: controller_values(cluster_name, a["endpoint"], a["queue_name"])
        )
        release = k8s.helm.v3.Release(
            f"{name}-controller",
            name="karpenter",
            chart=CONTROLLER_CHART,
            version=KARPENTER_VERSION,
            namespace=NAMESPACE,
            # The CRDs belong to the karpenter-crd release; two owners of one CRD would fight on upgrade.
            skip_crds=True,
            values=values,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=cluster.provider,
                depends_on=[
                    # The controller watches NodePools/EC2NodeClasses: their CRDs must exist before it starts.
                    crd_release,
                    # Pod Identity injects credentials only into pods created after the association exists; a
                    # controller started earlier runs without AWS credentials until it is restarted.
                    pod_identity,
                    # Its pods only fit on the tainted system nodes; without them Helm's wait times out.
                    cluster.system_node_group,
                    # Its permissions: attached before it starts, and (on destroy) kept until it is gone, so it can
                    # still drain and terminate nodes while the pools and classes are deleted.
                    *attachments,
                ],
            ),
        )
        return Controller(pod_identity, crd_release, release)

    def _classes_and_pools(
        self, name: str, args: KarpenterArgs, ami_alias: str, nodes: NodeAccess, controller: Controller
    ) -> None:
        """Node classes and pools: pure builders, wrapped.  They depend on the controller release (and so, on
        destroy, are deleted while the controller still runs to process their finalizers: drain and terminate the
        nodes, delete the instance profiles), and on the CRD release that defines them."""
        capacity = args.config
        provider = args.cluster.provider
        # The role name is filled in below, per node class, once IAM has it; everything else is known now.
        static = nodepools.plan(
            cluster_name=args.cluster_name,
            node_role="",
            ami_alias=ami_alias,
            default_disk_gib=capacity.default_disk_gib,
            neuron_disk_gib=capacity.neuron_disk_gib,
            default_pool_cpu_limit=capacity.default_pool_cpu_limit,
            default_pool_memory_gib=capacity.default_pool_memory_gib,
            inf2_instance_types=capacity.inf2_instance_types,
            trn1_instance_types=capacity.trn1_instance_types,
            accelerator_capacity_types=capacity.accelerator_capacity_types,
            accelerator_pool_cpu_limit=capacity.accelerator_pool_cpu_limit,
            accelerator_pool_memory_gib=capacity.accelerator_pool_memory_gib,
            inf2_neuron_device_limit=capacity.inf2_neuron_device_limit,
            trn1_neuron_device_limit=capacity.trn1_neuron_device_limit,
            accelerator_consolidate_after=capacity.accelerator_consolidate_after,
            accelerator_disruption_budget=capacity.accelerator_disruption_budget,
            node_expire_after=capacity.node_expire_after,
            tags=args.tags,
        )
        chart_releases = [controller.crd_release, controller.release]
        self.node_classes = {}
        for class_name, node_class in static.node_classes.items():
            self.node_classes[class_name] = k8s.apiextensions.CustomResource(
                f"{name}-nodeclass-{class_name}",
                api_version=nodepools.NODECLASS_API,
                kind="EC2NodeClass",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=class_name),
                spec=nodes.role.name.apply(_with_role(node_class["spec"])),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=provider,
                    # Its finalizer (karpenter.k8s.aws/termination) holds the delete until every NodeClaim launched
                    # from it is drained and its instance terminated: longer than the provider's default wait.
                    custom_timeouts=pulumi.CustomTimeouts(delete=NODE_DELETE_TIMEOUT),
                    depends_on=[*chart_releases, *nodes.ready],
                ),
            )
        self.node_pools = {}
        for pool_name, pool in static.node_pools.items():
            class_ref = pool["spec"]["template"]["spec"]["nodeClassRef"]["name"]
            self.node_pools[pool_name] = k8s.apiextensions.CustomResource(
                f"{name}-nodepool-{pool_name}",
                api_version=nodepools.NODEPOOL_API,
                kind="NodePool",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=pool_name),
                spec=pool["spec"],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=provider,
                    # A pool naming a class that does not exist yet stays NotReady; and on destroy the pool (and its
                    # nodes) must go before the class they were launched from.
                    depends_on=[self.node_classes[class_ref], *chart_releases],
                    # Deleted with foreground propagation: the delete waits for the pool's NodeClaims (drain, then
                    # terminate) that own-reference it.
                    custom_timeouts=pulumi.CustomTimeouts(delete=NODE_DELETE_TIMEOUT),
                ),
            )
