"""GCS fault tolerance: the Redis-compatible store the Ray head persists its GCS to (only with ``gcsFaultTolerance``).

Without it the GCS keeps cluster state in memory: a restarted head pod (eviction, OOM, node replacement) comes back
to an empty GCS, the workers are "unknown" to it and are restarted, and serving stops until the replicas are back
(minutes of model load on Neuron).  With it, KubeRay points the head at this store (``gcsFaultToleranceOptions``),
the workers wait up to 600 s for a restarted GCS, and the replicas on the workers keep serving meanwhile.

- ElastiCache for Valkey, cluster mode disabled (Ray's GCS speaks to one primary, not a Redis cluster): a primary and
  a replica in different zones with automatic failover, in the private subnets;
- encrypted at rest and in transit (TLS required; the head connects with ``rediss://``), with an auth token from
  ``random.RandomPassword`` kept in the stack's encrypted state and handed to the head through a Secret;
- reachable only from the Ray head pods: the store's security group admits port 6379 from one security group only,
  which EKS security groups for pods (a ``SecurityGroupPolicy``; the cluster turns pod ENIs on for it) attaches to
  the head pods' own network interface, beside the cluster security group they would have anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.k8s_secret import opaque_secret
from workloads import rayservice

PORT: Final = 6379
ENGINE: Final = "valkey"
ENGINE_VERSION: Final = "8.2"
# The GCS holds cluster metadata (nodes, actors, placement groups, Serve's checkpoints): kilobytes to a few MB for
# one Serve application.  The smallest Graviton burstable node holds that many times over (0.5 GiB).
NODE_TYPE: Final = "cache.t4g.small"
# A primary and one replica in another zone: the store survives a node or a zone.
NODES: Final = 2
SNAPSHOT_DAYS: Final = 1
SECURITY_GROUP_POLICY_API: Final = "vpcresources.k8s.aws/v1beta1"
SECURITY_GROUP_POLICY: Final = "ray-head-gcs-store"
# ElastiCache replication group ids: 1-40 characters, lowercase letters, digits and single hyphens, a letter first.
_ID_LIMIT: Final = 40


def replication_group_id(cluster_name: str) -> str:
    base = f"{cluster_name.lower()}-gcs"
    if len(base) > _ID_LIMIT:
        base = base[: _ID_LIMIT - 4].rstrip("-") + "-gcs"
    return base


def redis_address(host: str, port: int = PORT) -> str:
    """The address KubeRay hands the head: ``rediss://`` makes Ray's GCS connect over TLS."""
    return f"rediss://{host}:{port}"


def security_group_policy(namespace: str, client_group_ids: Sequence[str]) -> dict[str, Any]:
    """Head pods (and KubeRay's Redis cleanup Job, built from the head's template) get the store's client group."""
    return {
        "apiVersion": SECURITY_GROUP_POLICY_API,
        "kind": "SecurityGroupPolicy",
        "metadata": {"name": SECURITY_GROUP_POLICY, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": dict(rayservice.HEAD_LABELS)},
            "securityGroups": {"groupIds": list(client_group_ids)},
        },
    }


@dataclass
class GcsStoreArgs:
    cluster_name: str
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    # The cluster security group: the head pods keep it on their own interface (Ray traffic, probes, the operator).
    cluster_security_group_id: pulumi.Input[str]
    namespace: pulumi.Input[str]
    provider: k8s.Provider


class GcsStore(pulumi.ComponentResource):
    address: pulumi.Output[str]
    # What the head pods must be created after (and, on destroy, deleted before): the Secret they read the token
    # from, the SecurityGroupPolicy that gives them the client group, and the store itself.
    ready: tuple[pulumi.Resource, ...]

    def __init__(self, name: str, args: GcsStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:GcsStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        on_k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)

        client = aws.ec2.SecurityGroup(
            f"{name}-client-sg",
            vpc_id=args.vpc_id,
            description="Ray head pods (security groups for pods): the only clients of the GCS store",
            opts=child,
        )
        store_sg = aws.ec2.SecurityGroup(
            f"{name}-store-sg",
            vpc_id=args.vpc_id,
            description="GCS store (ElastiCache): port 6379 from the Ray head pods' security group only",
            opts=child,
        )
        # One rule each way: the store admits the client group, the client group may reach the store.
        rules: list[tuple[Any, str, aws.ec2.SecurityGroup, aws.ec2.SecurityGroup]] = [
            (aws.vpc.SecurityGroupIngressRule, "store-from-client", store_sg, client),
            (aws.vpc.SecurityGroupEgressRule, "client-to-store", client, store_sg),
        ]
        for rule, suffix, own, peer in rules:
            rule(
                f"{name}-{suffix}",
                security_group_id=own.id,
                referenced_security_group_id=peer.id,
                ip_protocol="tcp",
                from_port=PORT,
                to_port=PORT,
                description="Ray head pods to the GCS store",
                opts=child,
            )
        subnets = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            name=f"{args.cluster_name.lower()}-gcs",
            description="Private subnets of the GCS store",
            subnet_ids=args.subnet_ids,
            opts=child,
        )
        # ElastiCache auth tokens: 16-128 printable characters without spaces, '"', '/' or '@'; letters and digits only.
        token = random.RandomPassword(f"{name}-auth-token", length=64, special=False, opts=child)
        group = aws.elasticache.ReplicationGroup(
            f"{name}-store",
            replication_group_id=replication_group_id(args.cluster_name),
            description=f"Ray GCS fault tolerance of {args.cluster_name} (KubeRay gcsFaultToleranceOptions)",
            engine=ENGINE,
            engine_version=ENGINE_VERSION,
            node_type=NODE_TYPE,
            num_cache_clusters=NODES,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            port=PORT,
            subnet_group_name=subnets.name,
            security_group_ids=[store_sg.id],
            at_rest_encryption_enabled=True,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            auth_token=token.result,
            snapshot_retention_limit=SNAPSHOT_DAYS,
            auto_minor_version_upgrade=True,
            opts=child,
        )
        secret = opaque_secret(
            f"{name}-auth-token",
            args.namespace,
            name=rayservice.GCS_STORE_SECRET,
            key=rayservice.GCS_STORE_SECRET_KEY,
            value=token.result.apply(pulumi.Output.secret),
            opts=on_k8s,
        )
        policy = pulumi.Output.all(
            namespace=args.namespace, cluster_group=args.cluster_security_group_id, client_group=client.id
        ).apply(lambda v: security_group_policy(v["namespace"], [v["cluster_group"], v["client_group"]]))
        sgp = k8s.apiextensions.CustomResource(
            f"{name}-security-group-policy",
            api_version=SECURITY_GROUP_POLICY_API,
            kind="SecurityGroupPolicy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SECURITY_GROUP_POLICY, namespace=args.namespace),
            spec=policy.apply(lambda p: p["spec"]),
            opts=on_k8s,
        )
        self.address = group.primary_endpoint_address.apply(redis_address)
        self.ready = (secret, sgp, group)
        self.register_outputs({"address": self.address})
