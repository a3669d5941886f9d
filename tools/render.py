"""Offline render harness: run ``__main__.py`` under Pulumi's mock engine and record everything it would create.

    python -m tools.render [--stack dev] [--out DIR] [--config KEY=VALUE ...]

It applies config the way the Pulumi CLI does (the ``config:`` defaults of ``Pulumi.yaml``, then
``Pulumi.<stack>.yaml``, then ``--config`` overrides), runs the program against a monitor that records every
resource registration, and writes ``resources.json``, ``manifests/``, ``helm/`` and ``outputs.json`` to DIR
(default ``build/render/<stack>``).  A config error prints its one-line message(s) and exits with status 2.

The same ``render()`` function is the fixture of the unit tests: one mechanism, not two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import runpy
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks

REPO = Path(__file__).resolve().parent.parent
IMAGE_BUILD_TYPE = "pulumi-python:dynamic/image:ServingImageBuild"  # infra.image_build.RESOURCE_TYPE
SECRET = "[secret]"
UNKNOWN = "[unknown]"
ACCOUNT = "123456789012"
PLACEHOLDER_SECRET = "offline-render-placeholder"

# Sig keys of Pulumi's wire format (pulumi.runtime.rpc); kept here so recording needs no private imports at load.
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_UNKNOWN_VALUE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

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


class RenderConfigError(Exception):
    """The stack config was rejected; ``lines`` are the one-line messages."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


class RenderDeployError(Exception):
    """A resource's provider failed during the mocked `pulumi up`; ``lines`` are what the engine would print."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# Config, applied like the CLI does.
# ---------------------------------------------------------------------------------------------------------------


def _engine_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def stack_config(
    stack: str, overrides: Mapping[str, str] | None = None, root: Path = REPO
) -> tuple[str, dict[str, str], list[str]]:
    """(project, config as the engine passes it, secret keys) for ``stack``."""
    project_file = yaml.safe_load((root / "Pulumi.yaml").read_text())
    project = project_file["name"]
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, decl in (project_file.get("config") or {}).items():
        full = key if ":" in key else f"{project}:{key}"
        if isinstance(decl, dict) and "default" in decl:
            values[full] = _engine_value(decl["default"])
        elif isinstance(decl, dict) and "value" in decl:
            values[full] = _engine_value(decl["value"])
    stack_file = root / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        raise RenderConfigError(
            [
                f"--stack: {stack!r} has no Pulumi.{stack}.yaml; allowed: "
                + ", ".join(sorted(p.name[7:-5] for p in root.glob("Pulumi.*.yaml")))
            ]
        )
    for key, value in ((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            # Encrypted with the stack's secrets provider: not readable offline, so a placeholder stands in.
            values[key] = PLACEHOLDER_SECRET
            secret_keys.append(key)
        else:
            values[key] = _engine_value(value)
    for key, value in (overrides or {}).items():
        values[key] = value
    return project, values, secret_keys


# ---------------------------------------------------------------------------------------------------------------
# Mocks: realistic fake outputs so every Output resolves.
# ---------------------------------------------------------------------------------------------------------------


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
        raise NotImplementedError(f"offline render has no mock for invoke {tok}; add one in tools/render.py")

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
            "eksCluster": {_SIG: _RESOURCE_SIG, "urn": urn, "id": cluster},
            "oidcProviderArn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.{region}.amazonaws.com/id/{oidc_id}",
            "oidcProviderUrl": issuer.removeprefix("https://"),
            "oidcIssuer": issuer.removeprefix("https://"),
            "clusterSecurityGroupId": csg,
            "nodeSecurityGroupId": f"sg-{_hex(cluster, 'nsg')}",
            "clusterIngressRuleId": f"sgr-{_hex(cluster, 'ing')}",
        }


# ---------------------------------------------------------------------------------------------------------------
# Recording monitor.
# ---------------------------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """Wire-format values to plain JSON: secrets masked, resource references shown as their URN."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            # A secret map (a Secret's data) keeps its keys, so schemas still see its shape; every value is masked.
            inner = value.get("value")
            return {k: SECRET for k in inner} if isinstance(inner, dict) else SECRET
        if sig == _RESOURCE_SIG:
            return value.get("urn")
        if sig is not None and "value" in value:
            return _clean(value["value"])
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if value == _UNKNOWN_VALUE:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _make_monitor(mocks: _Mocks, project: str, stack: str) -> Any:
    from google.protobuf import json_format
    from pulumi.runtime.mocks import MockMonitor

    class RecordingMonitor(MockMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(mocks)
            self.project, self.stack = project, stack
            self.records: list[dict[str, Any]] = []
            self.registering = ""

        def add_resource(self, urn: str, rid: str, state: dict[str, Any], *, parent: str) -> None:
            """A child a remote component creates inside its provider: recorded so the graph has no dangling URN."""
            self.resources[urn] = MockMonitor.ResourceRegistration(urn, rid, state)
            typ = urn.split("::")[2].rsplit("$", maxsplit=1)[-1]
            self.records.append(
                {
                    "urn": urn,
                    "type": typ,
                    "name": urn.rsplit("::", maxsplit=1)[-1],
                    "custom": True,
                    "remote": False,
                    "parent": parent,
                    "provider": None,
                    "dependencies": [],
                    "propertyDependencies": {},
                    "inputs": _clean(state),
                    "deleteBeforeReplace": False,
                    "protect": False,
                    "retainOnDelete": False,
                    "customTimeouts": {},
                    "createdBy": "remote component",
                }
            )

        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
            self.registering = self.make_urn(request.parent, request.type, request.name)
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
            if request.type != "pulumi:pulumi:Stack":
                self.records.append(
                    {
                        "urn": response.urn,
                        "type": request.type,
                        "name": request.name,
                        "custom": bool(request.custom),
                        "remote": bool(request.remote),
                        "parent": request.parent or None,
                        "provider": request.provider or None,
                        "dependencies": sorted(request.dependencies),
                        "propertyDependencies": {k: sorted(v.urns) for k, v in request.propertyDependencies.items()},
                        "inputs": _clean(json_format.MessageToDict(request.object)),
                        "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                        "protect": bool(request.protect) if request.HasField("protect") else False,
                        "retainOnDelete": bool(request.retainOnDelete) if request.HasField("retainOnDelete") else False,
                        # e.g. {"delete": "30m"}: only the operations given a timeout
                        "customTimeouts": {
                            op: getattr(request.customTimeouts, op)
                            for op in ("create", "update", "delete")
                            if getattr(request.customTimeouts, op)
                        },
                    }
                )
            return response

    return RecordingMonitor()


# ---------------------------------------------------------------------------------------------------------------
# The render.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Render:
    stack: str
    config: dict[str, str]
    resources: list[dict[str, Any]]
    outputs: dict[str, Any]
    wall_seconds: float
    log: str = ""
    invokes: list[dict[str, Any]] = field(default_factory=list)
    _by_urn: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_urn = {r["urn"]: r for r in self.resources}

    def by_urn(self, urn: str) -> dict[str, Any]:
        return self._by_urn[urn]

    def of_type(self, typ: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == typ]

    def one(self, typ: str, name: str) -> dict[str, Any]:
        found = [r for r in self.of_type(typ) if r["name"] == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources of type {typ} named {name}")
        return found[0]

    def ancestors(self, urn: str) -> Iterator[str]:
        parent = self._by_urn.get(urn, {}).get("parent")
        while parent and parent in self._by_urn:
            yield parent
            parent = self._by_urn[parent].get("parent")

    def manifests(self) -> list[dict[str, Any]]:
        """Every Kubernetes object declared directly (typed resources and CustomResources), as plain objects."""
        out = []
        for r in self.resources:
            if is_kubernetes_object(r):
                out.append({k: v for k, v in r["inputs"].items() if not k.startswith("__")})
        return out

    def helm_releases(self) -> list[dict[str, Any]]:
        out = []
        for r in self.of_type("kubernetes:helm.sh/v3:Release"):
            i = r["inputs"]
            out.append(
                {
                    "name": i.get("name", r["name"]),
                    "chart": i.get("chart"),
                    "repository": (i.get("repositoryOpts") or {}).get("repo"),
                    "version": i.get("version"),
                    "namespace": i.get("namespace"),
                    "values": i.get("values") or {},
                    "urn": r["urn"],
                }
            )
        return out

    def summary(self) -> str:
        counts = Counter(r["type"] for r in self.resources)
        width = max(len(t) for t in counts) if counts else 0
        lines = [f"stack {self.stack}: {len(self.resources)} resources"]
        lines += [f"  {t:<{width}}  {n}" for t, n in sorted(counts.items())]
        lines.append("outputs:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in sorted(self.outputs.items())]
        from policy.proof import summary as proof_summary

        lines.append("scheduling proof:")
        lines += [f"  {line}" for line in proof_summary(self.resources)]
        from tools.timeline import summary as timeline_summary

        lines.append("deploy timeline (modeled critical path):")
        lines += [f"  {line}" for line in timeline_summary(self)]
        lines.append(f"rendered in {self.wall_seconds:.2f} s wall")
        return "\n".join(lines)


def is_kubernetes_object(r: Mapping[str, Any]) -> bool:
    typ = r["type"]
    if not typ.startswith("kubernetes:") or not r["custom"]:
        return False
    return not (
        typ.startswith("kubernetes:helm.sh/")
        or typ.startswith("kubernetes:yaml")
        or typ.startswith("kubernetes:kustomize")
    )


def _reset_pulumi() -> None:
    from pulumi.runtime import settings

    settings.ROOT.set(None)
    settings.SETTINGS.outputs.clear()


def _ensure_event_loop() -> None:
    """Pulumi's SDK needs a current event loop; ``asyncio.run`` elsewhere in the process leaves none behind."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    if loop.get_exception_handler() is None:
        loop.set_exception_handler(_not_twice)


def _cancel_pending() -> None:
    """After a resource failed, the program's other registrations and outputs never complete: cancel them, so the next
    render starts on a clean loop and none is left pending when the process exits."""
    loop = asyncio.get_event_loop()
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _not_twice(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A failed resource's error reaches the caller as ``RenderDeployError``; the SDK's other futures that hold the
    same exception are not logged again when they are collected.  Anything else goes to asyncio's default handler."""
    if not isinstance(context.get("exception"), RenderDeployError):
        loop.default_exception_handler(context)


def _resolve_outputs(root: Any) -> dict[str, Any]:
    from pulumi import Output
    from pulumi.runtime.sync_await import _sync_await

    out: dict[str, Any] = {}
    for key, value in root.outputs.items():
        o = Output.from_input(value)
        secret = _sync_await(o.is_secret())
        resolved = _sync_await(o.future())
        out[key] = SECRET if secret else _clean(json.loads(json.dumps(resolved, default=str)))
    return out


def _run_program(root: Path) -> None:
    runpy.run_path(str(root / "__main__.py"), run_name="__main__")


def render(
    stack: str = "dev", overrides: Mapping[str, str] | None = None, root: Path = REPO, *, image_build: str = "built"
) -> Render:
    """Run the program offline for ``stack``; raise ``RenderConfigError`` if the config is rejected.

    ``image_build`` is how the fake AWS answers the serving image build (``tools.build_fake.OUTCOMES``); with
    ``failed`` the render fails like `pulumi up` does, with ``RenderDeployError``."""
    import pulumi
    from pulumi.runtime import settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    start = time.perf_counter()
    project, values, secret_keys = stack_config(stack, overrides, root)
    region = values.get("aws:region", "")
    if region not in MOCK_ZONES:
        # Let the program's validation produce the message; zones only matter once config passes.
        region = "us-west-2"
    mocks = _Mocks(region, image_build)
    monitor = _make_monitor(mocks, project, stack)
    mocks.monitor = monitor
    _reset_pulumi()
    _ensure_event_loop()
    pulumi.runtime.set_all_config(values, secret_keys)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)

    log = io.StringIO()
    cwd, path = Path.cwd(), list(sys.path)
    os.chdir(root)
    sys.path.insert(0, str(root))
    try:
        with contextlib.redirect_stdout(log):
            _sync_await(run_pulumi_func(lambda: _run_program(root)))
        outputs = _resolve_outputs(settings.get_root_resource())
    except pulumi.RunError as exc:
        raise RenderConfigError(str(exc).splitlines()) from None
    except RenderDeployError:
        _cancel_pending()
        raise
    finally:
        os.chdir(cwd)
        sys.path[:] = path
    return Render(stack, values, monitor.records, outputs, time.perf_counter() - start, log.getvalue(), mocks.invokes)


def _manifest_filename(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}-{meta.get('namespace') or 'cluster'}-{meta.get('name')}.yaml"


def write(result: Render, out: Path) -> None:
    if out.exists():
        for old in sorted(out.rglob("*"), reverse=True):
            old.unlink() if old.is_file() else old.rmdir()
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    (out / "helm").mkdir(parents=True, exist_ok=True)
    (out / "resources.json").write_text(json.dumps(result.resources, indent=2, sort_keys=True) + "\n")
    (out / "outputs.json").write_text(json.dumps(result.outputs, indent=2, sort_keys=True) + "\n")
    for obj in result.manifests():
        path = out / "manifests" / _manifest_filename(obj)
        if path.exists():
            raise SystemExit(f"two Kubernetes objects render to {path.name}")
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
    for rel in result.helm_releases():
        body = {k: v for k, v in rel.items() if k != "urn"}
        (out / "helm" / f"{rel['namespace']}-{rel['name']}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))


def _parse_overrides(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RenderConfigError(
                [f"--config: {item!r} is not allowed; allowed: KEY=VALUE, e.g. eks-neuron-llm:availabilityZoneCount=3"]
            )
        out[key if ":" in key else f"eks-neuron-llm:{key}"] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.render", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default="dev", help="stack name (reads Pulumi.<stack>.yaml); default dev")
    parser.add_argument("--out", type=Path, help="output directory; default build/render/<stack>")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value as the engine would pass it (repeatable)",
    )
    parser.add_argument(
        "--image-build",
        choices=("built", "exists", "failed"),
        default="built",
        help="how the fake AWS answers the serving image build (default built; failed shows how `pulumi up` fails)",
    )
    args = parser.parse_args(argv)
    try:
        result = render(args.stack, _parse_overrides(args.config), image_build=args.image_build)
    except RenderConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    except RenderDeployError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 1
    out = args.out or REPO / "build" / "render" / args.stack
    write(result, out)
    print(result.summary())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
