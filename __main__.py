"""eks-neuron-llm: an empty AWS account to Llama-3-8B-Instruct on Inferentia2, as one dependency graph."""

import pulumi
import pulumi_aws as aws

from infra.cluster import Cluster, ClusterArgs
from infra.config import load
from infra.network import Network, NetworkArgs
from workloads.topology import DEFAULT_ACCELERATOR_INSTANCE_TYPE

# Config: one validated object; a bad value stops here with one line per problem.
cfg = load()

# Every AWS resource goes through this provider, so every one carries the stack's tags.
aws_provider = aws.Provider("aws", region=cfg.region, default_tags=aws.ProviderDefaultTagsArgs(tags=dict(cfg.tags)))
on_aws = pulumi.ResourceOptions(providers={"aws": aws_provider})

# Network: subnets in zones that sell the accelerator the serving preset needs.
network = Network(
    "network",
    NetworkArgs(
        config=cfg.network,
        region=cfg.region,
        cluster_name=cfg.cluster.name,
        zone_instance_types=(DEFAULT_ACCELERATOR_INSTANCE_TYPE,),
    ),
    opts=on_aws,
)

# Cluster: control plane, system node group, managed add-ons, and the Kubernetes provider for everything after it.
cluster = Cluster(
    "cluster",
    ClusterArgs(
        config=cfg.cluster,
        vpc_id=network.vpc_id,
        private_subnet_ids=network.private_subnet_ids,
        public_subnet_ids=network.public_subnet_ids,
    ),
    opts=on_aws,
)

# Outputs.
pulumi.export("clusterName", cluster.name)
pulumi.export("region", cfg.region)
pulumi.export("vpcId", network.vpc_id)
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("oidcProviderArn", cluster.oidc_provider_arn)
pulumi.export(
    "kubectlSetup",
    cluster.name.apply(lambda n: f"aws eks update-kubeconfig --region {cfg.region} --name {n}"),
)
