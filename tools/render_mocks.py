"""The offline render's mocks: realistic fake outputs for every resource type and invoke the program uses, so every
Output resolves (``pulumi.runtime.Mocks``, public API)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks

from tools.pulumi_internals import resource_reference
from tools.render_model import RenderDeployError

IMAGE_BUILD_TYPE = "pulumi-python:dynamic/image:ServingImageBuild"  # infra.image_build.RESOURCE_TYPE
ACCOUNT = "123456789012"

# Zones per region (name -> zone ID) and which zone IDs sell which accelerator families, for the mocked invokes.
# A zone that does not sell inf2 is included on purpose, so zone selection is exercised, not assumed.
MOCK_ZONES: dict[str, list[tuple[str, str]]] = {
    "us-east-1": [
        ("us-east-1a", "use1-az1"),
        ("us-east-1b", "use1-az2"),
        ("us-east-1c", "use1-az4"),
        ("us-east-1d", "use1-az6"),
        ("us-east-1e", "use1-az3"),
        ("us-east-1f", "use1-az5"),
    ],
    "us-east-2": [("us-east-2a", "use2-az1"), ("us-east-2b", "use2-az2"), ("us-east-2c", "use2-az3")],
    "us-west-2": [
        ("us-west-2a", "usw2-az1"),
        ("us-west-2b", "usw2-az2"),
        ("us-west-2c", "usw2-az3"),
        ("us-west-2d", "usw2-az4"),
    ],
}
MOCK_OFFERINGS: dict[str, set[str]] = {
    "inf2": {
        "use1-az1",
        "use1-az2",
        "use1-az4",
        "use1-az6",
        "use2-az1",
        "use2-az2",
        "use2-az3",
        "usw2-az1",
        "usw2-az2",
        "usw2-az3",
    },
    "trn1": {"use1-az4", "use1-az6", "use2-az1", "use2-az2", "usw2-az1", "usw2-az4"},
}


def _hex(*parts: str, n: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


_ID_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/eip:Eip": "eipalloc",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
}


def _arn(service: str, resource: str, region: str, *, global_: bool = False) -> str:
    return f"arn:aws:{service}:{'' if global_ else region}:{ACCOUNT}:{resource}"


class _Mocks(Mocks):
    """Outputs for each resource type and invoke the program uses; inputs are echoed back as state."""

    def __init__(self, region: str, image_build: str = "built") -> None:
        self.region = region
        self.image_build = image_build  # the fake AWS's answer to the serving image build (tools/build_fake.py)
        self.monitor: Any = None
        self.invokes: list[dict[str, Any]] = []  # every invoke: its token, arguments and provider reference

    # pulumi.runtime.Mocks interface --------------------------------------------------------------------------
    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        typ, name, inputs = args.typ, args.name, dict(args.inputs)
        rid = (
            f"{_ID_PREFIX.get(typ, name)}-{_hex(typ, name)}" if typ in _ID_PREFIX else f"{name}-{_hex(typ, name, n=8)}"
        )
        state: dict[str, Any] = dict(inputs)
        region = self.region
        physical = inputs.get("name") or f"{name}-{_hex(name, n=7)}"
        if typ.startswith("aws:"):
            service = typ.split(":")[1].split("/")[0]
            if typ == "aws:iam/role:Role":
                state.update(
                    name=physical,
                    arn=_arn("iam", f"role/{physical}", region, global_=True),
                    uniqueId="AROA" + _hex(name, n=17).upper(),
                )
                rid = physical
            elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
                # IAM names an OIDC provider by its URL without the scheme, one per URL per account.
                host = str(inputs.get("url", "")).removeprefix("https://")
                state.update(arn=f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}")
                rid = state["arn"]
            elif typ == "aws:iam/policy:Policy":
                state.update(name=physical, arn=_arn("iam", f"policy/{physical}", region, global_=True))
                rid = state["arn"]
            elif typ == "aws:kms/key:Key":
                key_id = (
                    f"{_hex(name, n=8)}-{_hex(name, 'a', n=4)}-{_hex(name, 'b', n=4)}-{_hex(name, 'c', n=4)}-"
                    f"{_hex(name, 'd', n=12)}"
                )
                state.update(keyId=key_id, arn=_arn("kms", f"key/{key_id}", region))
                rid = key_id
            elif typ == "aws:sqs/queue:Queue":
                state.update(
                    name=physical,
                    arn=_arn("sqs", physical, region),
                    url=f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{physical}",
                )
                rid = state["url"]
            elif typ in {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}:
                bucket = inputs.get("bucket") or f"{name}-{_hex(name, n=8)}"
                state.update(
                    bucket=bucket,
                    arn=f"arn:aws:s3:::{bucket}",
                    bucketRegionalDomainName=f"{bucket}.s3.{region}.amazonaws.com",
                )
                rid = bucket
            elif typ == "aws:ecr/repository:Repository":
                state.update(
                    name=physical,
                    arn=_arn("ecr", f"repository/{physical}", region),
                    repositoryUrl=f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{physical}",
                )
                rid = physical
            elif typ == "aws:eks/nodeGroup:NodeGroup":
                ng = inputs.get("nodeGroupName") or physical
                state.update(
                    arn=_arn("eks", f"nodegroup/{inputs.get('clusterName')}/{ng}/{_hex(name, n=8)}", region),
                    status="ACTIVE",
                )
            elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
                state.update(latestVersion=1, defaultVersion=1, arn=_arn("ec2", f"launch-template/{rid}", region))
            elif typ == "aws:elasticache/replicationGroup:ReplicationGroup":
                group = inputs.get("replicationGroupId") or physical
                short = {"us-east-1": "use1", "us-east-2": "use2", "us-west-2": "usw2"}.get(region, region)
                state.update(
                    arn=_arn("elasticache", f"replicationgroup:{group}", region),
                    primaryEndpointAddress=f"master.{group}.{_hex(group, n=6)}.{short}.cache.amazonaws.com",
                )
                rid = group
            elif typ == "aws:cloudwatch/eventRule:EventRule":
                state.update(name=physical, arn=_arn("events", f"rule/{physical}", region))
                rid = physical
            else:
                state.setdefault("arn", _arn(service, f"{typ.split(':')[-1].lower()}/{rid}", region))
                if typ in _ID_PREFIX or "name" not in state:
                    state.setdefault("name", physical)
        elif typ == "eks:index:Cluster":
            state.update(self._eks_cluster(name, inputs))
        elif typ == IMAGE_BUILD_TYPE:
            state.update(self._image_build(name, inputs))
        elif typ == "random:index/randomPassword:RandomPassword":
            state["result"] = _hex(name, "password", n=32)
        elif typ.startswith("kubernetes:") and "metadata" in inputs:
            meta = dict(inputs["metadata"] or {})
            meta.setdefault("name", physical)
            state["metadata"] = meta
        state.setdefault("id", rid)
        return rid, state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.invokes.append({"token": args.token, "args": dict(args.args), "provider": args.provider or None})
        return self._call(args), []

    def _call(self, args: MockCallArgs) -> dict[str, Any]:
        tok, a = args.token, dict(args.args)
        region = a.get("region") or self.region
        if tok == "aws:index/getAvailabilityZones:getAvailabilityZones":
            zones = MOCK_ZONES[region]
            return {
                "names": [z[0] for z in zones],
                "zoneIds": [z[1] for z in zones],
                "id": region,
                "groupNames": [region],
            }
        if tok == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            types = [v for f in a.get("filters", []) if f["name"] == "instance-type" for v in f["values"]]
            zone_ids = {z[1] for z in MOCK_ZONES[region]}
            out: list[tuple[str, str]] = []
            for t in types:
                offered = MOCK_OFFERINGS.get(t.split(".")[0], zone_ids)
                out += [(t, z) for z in sorted(offered & zone_ids)]
            return {
                "instanceTypes": [o[0] for o in out],
                "locations": [o[1] for o in out],
                "locationTypes": ["availability-zone-id"] * len(out),
                "id": region,
            }
        if tok == "aws:eks/getAddonVersion:getAddonVersion":
            return {
                "version": f"v0.0.0-default-for-{a['kubernetesVersion']}-eksbuild.1",
                "id": a["addonName"],
                "addonName": a["addonName"],
                "kubernetesVersion": a["kubernetesVersion"],
            }
        if tok == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/offline",
                "userId": "AIDAOFFLINE",
                "id": ACCOUNT,
            }
        if tok == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if tok == "aws:index/getRegion:getRegion":
            return {"region": region, "name": region, "id": region, "endpoint": f"ec2.{region}.amazonaws.com"}
        if tok == "aws:ssm/getParametersByPath:getParametersByPath":
            # AWS's public EKS AMI parameters, from the recorded release notes (tools/eks_ami_releases.yaml).
            from tools.eks_ami import parameter_names

            names = parameter_names(a["path"], recursive=bool(a.get("recursive")))
            return {
                "id": a["path"],
                "path": a["path"],
                "recursive": bool(a.get("recursive")),
                "withDecryption": bool(a.get("withDecryption")),
                "region": region,
                "names": names,
                "arns": [f"arn:aws:ssm:{region}::parameter{n}" for n in names],
                "types": ["String"] * len(names),
                "values": [f"ami-{_hex(n)}" for n in names],
            }
        raise NotImplementedError(f"offline render has no mock for invoke {tok}; add one in tools/render_mocks.py")

    # dynamic resources ----------------------------------------------------------------------------------------
    def _image_build(self, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The serving image build's outputs: its own provider's ``create``, run as Pulumi's provider process runs it,
        against a fake AWS (``tools/build_fake.py``); a failure fails the render as it would fail `pulumi up`."""
        from tools.build_fake import ProviderError, run_create

        try:
            return run_create(inputs, self.image_build, self.region)
        except ProviderError as exc:
            raise RenderDeployError([f"{name}: error: {line}" for line in exc.details.strip().splitlines()]) from None

    # remote component outputs -------------------------------------------------------------------------------
    def _eks_cluster(self, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        cluster = inputs.get("name") or f"{name}-{_hex(name, n=7)}"
        region = self.region
        oidc_id = _hex(cluster, "oidc", n=32).upper()
        issuer = f"https://oidc.eks.{region}.amazonaws.com/id/{oidc_id}"
        endpoint = f"https://{_hex(cluster, n=32).upper()}.gr7.{region}.eks.amazonaws.com"
        ca = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCm9mZmxpbmUKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "aws",
            "clusters": [{"name": "kubernetes", "cluster": {"server": endpoint, "certificate-authority-data": ca}}],
            "contexts": [{"name": "aws", "context": {"cluster": "kubernetes", "user": "aws"}}],
            "users": [
                {
                    "name": "aws",
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                cluster,
                                "--region",
                                region,
                                "--output",
                                "json",
                            ],
                        }
                    },
                }
            ],
        }
        # The wrapped aws.eks.Cluster is a resource reference: register it so `cluster.eks_cluster` resolves.
        parent = self.monitor.registering
        urn = self.monitor.make_urn(parent, "aws:eks/cluster:Cluster", f"{name}-eksCluster")
        eks_state = {
            "name": cluster,
            "arn": _arn("eks", f"cluster/{cluster}", region),
            # pulumi-eks creates the cluster role with an auto-named suffix.
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/{name}-eksRole-{_hex(cluster, 'role', n=7)}",
            "endpoint": endpoint,
            "version": inputs.get("version"),
            "status": "ACTIVE",
            "certificateAuthority": {"data": ca},
            # What pulumi-eks passes to the aws.eks.Cluster it creates, so policies see the real control plane.
            "encryptionConfig": {"provider": {"keyArn": inputs.get("encryptionConfigKeyArn")}, "resources": ["secrets"]}
            if inputs.get("encryptionConfigKeyArn")
            else None,
            "enabledClusterLogTypes": inputs.get("enabledClusterLogTypes") or [],
            "accessConfig": {"authenticationMode": inputs.get("authenticationMode")},
            "bootstrapSelfManagedAddons": inputs.get("bootstrapSelfManagedAddons"),
            "identities": [{"oidcs": [{"issuer": issuer}]}],
            "vpcConfig": {
                "clusterSecurityGroupId": f"sg-{_hex(cluster, 'csg')}",
                "vpcId": inputs.get("vpcId"),
                "subnetIds": [*(inputs.get("privateSubnetIds") or []), *(inputs.get("publicSubnetIds") or [])],
                "endpointPrivateAccess": inputs.get("endpointPrivateAccess", False),
                "endpointPublicAccess": inputs.get("endpointPublicAccess", True),
                "publicAccessCidrs": inputs.get("publicAccessCidrs") or ["0.0.0.0/0"],
            },
        }
        self.monitor.add_resource(urn, cluster, eks_state, parent=parent)
        csg = f"sg-{_hex(cluster, 'csg')}"
        return {
            "kubeconfig": kubeconfig,
            "kubeconfigJson": json.dumps(kubeconfig),
            "eksCluster": resource_reference(urn, cluster),
            "oidcProviderArn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.{region}.amazonaws.com/id/{oidc_id}",
            "oidcProviderUrl": issuer.removeprefix("https://"),
            "oidcIssuer": issuer.removeprefix("https://"),
            "clusterSecurityGroupId": csg,
            "nodeSecurityGroupId": f"sg-{_hex(cluster, 'nsg')}",
            "clusterIngressRuleId": f"sgr-{_hex(cluster, 'ing')}",
        }
