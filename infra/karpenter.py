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
NODE_ROLE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)
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


def controller_policies(scope: Scope, node_role_arn: str, queue_arn: str) -> dict[str, PolicyDocument]:
    """The controller's managed policies by purpose, mirroring the v1 CloudFormation's split."""
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{scope.cluster}": "owned"}
    request_owned = {
        f"aws:RequestTag/kubernetes.io/cluster/{scope.cluster}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": scope.cluster,
    }
    launched = [
        scope.ec2(f"{r}/*")
        for r in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")
    ]
    node_lifecycle = _doc(
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
    region_tag = {"aws:ResourceTag/topology.kubernetes.io/region": scope.region}
    iam_integration = _doc(
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
    eks_and_queue = _doc(
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
    discovery = _doc(
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
    return {
        "node-lifecycle": node_lifecycle,
        "iam-integration": iam_integration,
        "eks-and-queue": eks_and_queue,
        "resource-discovery": discovery,
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
    config: CapacityConfig
    cluster_name: str
    # The cluster's Kubernetes minor (e.g. "1.35"): the AMI release must be published for it.
    cluster_version: str
    region: str
    cluster: Cluster
    # The stack's AWS tags, also put on everything Karpenter launches (Pulumi's default tags do not reach it).
    tags: Mapping[str, str] = field(default_factory=dict)


class Karpenter(pulumi.ComponentResource):
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
        child = pulumi.ResourceOptions(parent=self)
        cluster = args.cluster
        cluster_name = args.cluster_name
        on_k8s = pulumi.ResourceOptions(parent=self, provider=cluster.provider)

        # The AMI release every node class pins, published for this minor in each variant the classes boot, or the
        # program stops here with one line (a missing release would leave every pool without nodes, silently).
        capacity = args.config
        ami_alias = ami.require_release(
            capacity.ami_version,
            minor=args.cluster_version,
            arch=nodepools.AMI_ARCH,
            variants=list(nodepools.AMI_VARIANTS.values()),
            opts=pulumi.InvokeOptions(parent=self),
        )

        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self))
        partition = aws.get_partition_output(opts=pulumi.InvokeOptions(parent=self))

        # Nodes: their role, and the access entry that lets them join the cluster (API authentication mode).
        self.node_role, node_policies = iam.role_with_policies(
            f"{name}-node",
            trust=iam.EC2_TRUST,
            managed=NODE_ROLE_POLICIES,
            description=f"Nodes Karpenter launches for EKS cluster {cluster_name}",
            parent=self,
        )
        access_entry = aws.eks.AccessEntry(
            f"{name}-node",
            cluster_name=cluster.name,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            opts=child,
        )

        # Karpenter discovers security groups by tag: the EKS-created cluster security group gets it.
        discovery_tag = aws.ec2.Tag(
            f"{name}-cluster-sg-discovery",
            resource_id=cluster.cluster_security_group_id,
            key=nodepools.DISCOVERY_TAG,
            value=cluster_name,
            opts=child,
        )

        # Interruption handling: EventBridge -> SQS -> Karpenter drains a node before EC2 takes it away.
        self.queue = aws.sqs.Queue(
            f"{name}-interruption",
            name=f"{cluster_name}-karpenter",
            message_retention_seconds=QUEUE_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-interruption",
            queue_url=self.queue.url,
            policy=self.queue.arn.apply(lambda arn: iam.to_json(queue_policy(arn))),
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
                arn=self.queue.arn,
                opts=child,
            )

        # The controller: role bound to its service account through Pod Identity.
        controller_role, self.pod_identity, _ = iam.pod_identity_role(
            f"{name}-controller",
            cluster_name=cluster.name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            description=f"Karpenter controller of EKS cluster {cluster_name} (Pod Identity)",
            parent=self,
        )
        documents = pulumi.Output.all(caller.account_id, partition.partition, self.node_role.arn, self.queue.arn).apply(
            lambda a: controller_policies(
                Scope(cluster=cluster_name, region=args.region, account=a[0], partition=a[1]), a[2], a[3]
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

        # Charts: CRDs in their own release so `helm upgrade` upgrades them (Helm never upgrades a chart's crds/).
        self.crd_release = k8s.helm.v3.Release(
            f"{name}-crd",
            name="karpenter-crd",
            chart=CRD_CHART,
            version=KARPENTER_VERSION,
            namespace=NAMESPACE,
            opts=on_k8s,
        )
        values = pulumi.Output.all(cluster.endpoint, self.queue.name).apply(
            lambda a: controller_values(cluster_name, a[0], a[1])
        )
        self.controller_release = k8s.helm.v3.Release(
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
                    self.crd_release,
                    # Pod Identity injects credentials only into pods created after the association exists; a
                    # controller started earlier runs without AWS credentials until it is restarted.
                    self.pod_identity,
                    # Its pods only fit on the tainted system nodes; without them Helm's wait times out.
                    cluster.system_node_group,
                    # Its permissions: attached before it starts, and (on destroy) kept until it is gone, so it can
                    # still drain and terminate nodes while the pools and classes are deleted.
                    *attachments,
                ],
            ),
        )

        # Node classes and pools: pure builders, wrapped.  They depend on the controller release (and so, on
        # destroy, are deleted while the controller still runs to process their finalizers: drain and terminate the
        # nodes, delete the instance profiles), and on the CRD release that defines them.
        # The role name is filled in below, per node class, once IAM has it; everything else is known now.
        static = nodepools.plan(
            cluster_name=cluster_name,
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
        self.node_classes = {}
        for class_name in static.node_classes:
            self.node_classes[class_name] = k8s.apiextensions.CustomResource(
                f"{name}-nodeclass-{class_name}",
                api_version=nodepools.NODECLASS_API,
                kind="EC2NodeClass",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=class_name),
                spec=self.node_role.name.apply(_with_role(static.node_classes[class_name]["spec"])),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=cluster.provider,
                    # Its finalizer (karpenter.k8s.aws/termination) holds the delete until every NodeClaim launched
                    # from it is drained and its instance terminated: longer than the provider's default wait.
                    custom_timeouts=pulumi.CustomTimeouts(delete=NODE_DELETE_TIMEOUT),
                    depends_on=[
                        self.crd_release,
                        self.controller_release,
                        # Selected by this tag: without it the class never turns Ready.
                        discovery_tag,
                        # Nodes launched from this class can join only once their role has an access entry, and
                        # pull images only once its policies are attached; both stay until the nodes are gone.
                        access_entry,
                        *node_policies,
                    ],
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
                    provider=cluster.provider,
                    # A pool naming a class that does not exist yet stays NotReady; and on destroy the pool (and its
                    # nodes) must go before the class they were launched from.
                    depends_on=[self.node_classes[class_ref], self.crd_release, self.controller_release],
                    # Deleted with foreground propagation: the delete waits for the pool's NodeClaims (drain, then
                    # terminate) that own-reference it.
                    custom_timeouts=pulumi.CustomTimeouts(delete=NODE_DELETE_TIMEOUT),
                ),
            )

        self.node_pool_names = pulumi.Output.from_input(list(self.node_pools))
        self.interruption_queue_name = self.queue.name
        self.register_outputs(
            {"nodePoolNames": self.node_pool_names, "interruptionQueueName": self.interruption_queue_name}
        )
