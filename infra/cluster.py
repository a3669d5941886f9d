"""The EKS control plane, the managed system node group, the managed add-ons and the Kubernetes provider."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from infra import iam
from infra.config import ClusterConfig
from workloads.topology import SYSTEM_NODEGROUP, SYSTEM_TAINT

CONTROL_PLANE_LOGS = ("api", "audit", "authenticator")
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
DEFAULT_STORAGE_CLASS = "gp3"
RETAINED_STORAGE_CLASS = "gp3-retain"

# Add-ons the nodes need before they can turn Ready (networking, service routing, credentials for pods).
ADDONS_BEFORE_NODES: dict[str, dict[str, object]] = {
    # The VPC CNI's network-policy agent enforces the stack's NetworkPolicies.
    "vpc-cni": {"enableNetworkPolicy": "true"},
    "kube-proxy": {},
    "eks-pod-identity-agent": {},
}
# EKS security groups for pods (pods selected by a SecurityGroupPolicy get a branch interface with their own security
# groups; infra/gcs_store.py gives the Ray head the only group its GCS store admits): the VPC CNI manages pod ENIs,
# "standard" mode keeps NetworkPolicies and node-local traffic as they are, and kubelet probes reach pods on branch
# interfaces only with TCP early demux off.  The cluster role needs the VPC resource controller's policy.
POD_ENI_VALUES: dict[str, object] = {
    "env": {"ENABLE_POD_ENI": "true", "POD_SECURITY_GROUP_ENFORCING_MODE": "standard"},
    "init": {"env": {"DISABLE_TCP_EARLY_DEMUX": "true"}},
}
VPC_RESOURCE_CONTROLLER_POLICY = "AmazonEKSVPCResourceController"
# Add-ons whose pods must be scheduled somewhere before EKS reports them ACTIVE.
ADDONS_AFTER_NODES = ("coredns", "aws-ebs-csi-driver")
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"


@dataclass
class ClusterArgs:
    config: ClusterConfig
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[list[str]]
    public_subnet_ids: pulumi.Input[list[str]]
    # The private subnets' NAT routes: nodes need them to join and pull images, and the Karpenter controller (on the
    # system nodes) needs them on destroy to terminate its instances, so the routes must outlive the node group.
    private_egress: Sequence[pulumi.Resource] = ()
    # prod: also a StorageClass whose volumes outlive their claims (RETAINED_STORAGE_CLASS), for data worth keeping.
    retained_storage: bool = False
    # Security groups for pods (POD_ENI_VALUES): on when a pod needs a security group of its own (the GCS store).
    pod_security_groups: bool = False


class Cluster(pulumi.ComponentResource):
    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]
    system_node_group: aws.eks.NodeGroup
    provider: k8s.Provider

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Cluster", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)

        secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {cfg.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-secrets", name=f"alias/{cfg.name}-eks-secrets", target_key_id=secrets_key.key_id, opts=child
        )

        self.control_plane = eks.Cluster(
            f"{name}-eks",
            name=cfg.name,
            version=cfg.version,
            vpc_id=args.vpc_id,
            private_subnet_ids=args.private_subnet_ids,
            public_subnet_ids=args.public_subnet_ids,
            authentication_mode=eks.AuthenticationMode.API,
            endpoint_private_access=True,
            endpoint_public_access=True,
            public_access_cidrs=list(cfg.public_access_cidrs),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            encryption_config_key_arn=secrets_key.arn,
            create_oidc_provider=True,
            skip_default_node_group=True,
            # Every add-on is an EKS managed add-on declared below, so none is bootstrapped or self-managed.
            bootstrap_self_managed_addons=False,
            use_default_vpc_cni=True,
            coredns_addon_options=eks.CoreDnsAddonOptionsArgs(enabled=False),
            kube_proxy_addon_options=eks.KubeProxyAddonOptionsArgs(enabled=False),
            opts=child,
        )
        eks_cluster = self.control_plane.eks_cluster
        cluster_name = eks_cluster.name

        for i, arn in enumerate(cfg.admin_principal_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{i}", cluster_name=cluster_name, principal_arn=arn, type="STANDARD", opts=child
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{i}",
                cluster_name=cluster_name,
                principal_arn=entry.principal_arn,
                policy_arn=CLUSTER_ADMIN_POLICY,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=child,
            )

        early = [
            self._addon(
                name,
                cluster_name,
                cfg.version,
                addon,
                {**values, **POD_ENI_VALUES} if addon == "vpc-cni" and args.pod_security_groups else values,
            )
            for addon, values in ADDONS_BEFORE_NODES.items()
        ]
        # What a pod with its own security group needs before it starts and, on destroy, until it is gone (the VPC
        # resource controller deletes its branch interface with the cluster role's permissions).
        self.pod_security_groups: tuple[pulumi.Resource, ...] = ()
        if args.pod_security_groups:
            self.pod_security_groups = (
                aws.iam.RolePolicyAttachment(
                    f"{name}-vpc-resource-controller",
                    role=eks_cluster.role_arn.apply(lambda arn: arn.rsplit("/", 1)[-1]),
                    policy_arn=iam.managed_policy_arn(VPC_RESOURCE_CONTROLLER_POLICY),
                    opts=child,
                ),
                *early,
            )

        node_role, node_policies = iam.role_with_policies(
            f"{name}-system-node",
            trust=iam.EC2_TRUST,
            managed=(
                "AmazonEKSWorkerNodePolicy",
                "AmazonEKS_CNI_Policy",
                "AmazonEC2ContainerRegistryPullOnly",
                "AmazonSSMManagedInstanceCore",
            ),
            description=f"System node group of EKS cluster {cfg.name}",
            parent=self,
        )
        template = aws.ec2.LaunchTemplate(
            f"{name}-system",
            description=f"System nodes of {cfg.name}: IMDSv2 only, encrypted gp3 root volume",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                # 2 hops: the EBS CSI node plugin and the CloudWatch agent read instance metadata from pods.
                http_put_response_hop_limit=2,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=cfg.system_node_disk_gib,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type="instance", tags={"Name": f"{cfg.name}-{SYSTEM_NODEGROUP}"}
                )
            ],
            opts=child,
        )
        self.system_node_group = aws.eks.NodeGroup(
            f"{name}-{SYSTEM_NODEGROUP}",
            cluster_name=cluster_name,
            node_group_name=SYSTEM_NODEGROUP,
            node_role_arn=node_role.arn,
            subnet_ids=args.private_subnet_ids,
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            instance_types=[cfg.system_node_instance_type],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                desired_size=cfg.system_node_count, min_size=cfg.system_node_count, max_size=cfg.system_node_max_count
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            taints=[aws.eks.NodeGroupTaintArgs(**SYSTEM_TAINT)],
            opts=pulumi.ResourceOptions(
                parent=self,
                # Nodes only turn Ready once the CNI, kube-proxy and the Pod Identity agent are installed, and
                # reach ECR/STS only through the NAT routes (kept on destroy until these nodes are gone).
                # Its policies (ECR pull, CNI) are attached before the nodes start and kept until they are gone.
                depends_on=[*early, *args.private_egress, *node_policies],
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

        ebs_role, ebs_policies = iam.role_with_policies(
            f"{name}-ebs-csi",
            trust=iam.POD_IDENTITY_TRUST,
            managed=("service-role/AmazonEBSCSIDriverPolicy",),
            description=f"EBS CSI controller of EKS cluster {cfg.name} (Pod Identity)",
            parent=self,
        )
        after_nodes: dict[str, aws.eks.Addon] = {}
        for addon in ADDONS_AFTER_NODES:
            after_nodes[addon] = self._addon(
                name,
                cluster_name,
                cfg.version,
                addon,
                {},
                pod_identity=(EBS_CSI_SERVICE_ACCOUNT, ebs_role.arn) if addon == "aws-ebs-csi-driver" else None,
                # Their pods need nodes; without them EKS leaves the add-on DEGRADED and the update times out.  The
                # EBS CSI controller keeps its permissions until it is gone: on destroy it still deletes volumes.
                after=[self.system_node_group, *(ebs_policies if addon == "aws-ebs-csi-driver" else ())],
            )

        self.kubeconfig = pulumi.Output.secret(self.control_plane.kubeconfig_json)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            delete_unreachable=False,
            opts=child,
        )
        # Volumes are provisioned and deleted by the EBS CSI controller: a claim must go (on destroy) while it runs.
        self.ebs_csi_driver = after_nodes["aws-ebs-csi-driver"]
        self.storage_classes: dict[str, k8s.storage.v1.StorageClass] = {}
        classes = [(DEFAULT_STORAGE_CLASS, "Delete", True)]
        if args.retained_storage:
            # Data that must survive the stack: the EBS volume stays (released) when its claim or namespace goes.
            classes.append((RETAINED_STORAGE_CLASS, "Retain", False))
        for class_name, reclaim, default_class in classes:
            self.storage_classes[class_name] = k8s.storage.v1.StorageClass(
                f"{name}-{class_name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=class_name,
                    annotations={"storageclass.kubernetes.io/is-default-class": "true" if default_class else "false"},
                ),
                provisioner="ebs.csi.aws.com",
                parameters={"type": "gp3", "encrypted": "true", "fsType": "ext4"},
                reclaim_policy=reclaim,
                volume_binding_mode="WaitForFirstConsumer",
                allow_volume_expansion=True,
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
            )

        self.name = cluster_name
        self.endpoint = eks_cluster.endpoint
        self.oidc_provider_arn = self.control_plane.oidc_provider_arn
        self.cluster_security_group_id = self.control_plane.cluster_security_group_id
        self.register_outputs({"name": self.name, "endpoint": self.endpoint, "oidcProviderArn": self.oidc_provider_arn})

    def _addon(
        self,
        name: str,
        cluster_name: pulumi.Output[str],
        version: str,
        addon: str,
        values: dict[str, object],
        *,
        pod_identity: tuple[str, pulumi.Output[str]] | None = None,
        after: list[pulumi.Resource] | None = None,
    ) -> aws.eks.Addon:
        # Pin the add-on to the version EKS marks default for this Kubernetes minor, so a preview shows it.
        default = aws.eks.get_addon_version_output(
            addon_name=addon,
            kubernetes_version=version,
            most_recent=False,
            opts=pulumi.InvokeOptions(parent=self),
        )
        return aws.eks.Addon(
            f"{name}-{addon}",
            cluster_name=cluster_name,
            addon_name=addon,
            addon_version=default.version,
            configuration_values=json.dumps(values) if values else None,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="PRESERVE",
            pod_identity_associations=(
                [aws.eks.AddonPodIdentityAssociationArgs(service_account=pod_identity[0], role_arn=pod_identity[1])]
                if pod_identity
                else None
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=after or []),
        )
