"""The VPC: public and private subnets in each chosen zone, NAT, routes, the S3 gateway endpoint, discovery tags."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.config import NetworkConfig


class ZoneSelectionError(pulumi.RunError):
    """Not enough zones of the region offer the accelerator instance types."""


@dataclass(frozen=True)
class Zone:
    name: str
    zone_id: str


@dataclass(frozen=True)
class SubnetPlan:
    zone: Zone
    private_cidr: str
    public_cidr: str


def choose_zones(
    zones: Sequence[Zone], offered: Mapping[str, set[str]], instance_types: Sequence[str], count: int
) -> list[Zone]:
    """Pick ``count`` zones that offer the first (serving) instance type, preferring zones offering more of the rest.

    ``offered`` maps an instance type to the zone IDs that sell it.  Zone IDs, not names, are compared: names are
    shuffled per account, IDs are the physical zones.  The choice is deterministic (ties broken by zone ID).
    """
    primary, *others = instance_types
    candidates = [z for z in zones if z.zone_id in offered.get(primary, set())]
    candidates.sort(key=lambda z: (-sum(z.zone_id in offered.get(t, set()) for t in others), z.zone_id))
    if len(candidates) < count:
        have = ", ".join(z.zone_id for z in candidates) or "none"
        raise ZoneSelectionError(
            f"eks-neuron-llm:availabilityZoneCount: {count} zones needed but only {len(candidates)} zone(s) of this "
            f"region offer {primary} ({have}); lower the count or choose another region"
        )
    return sorted(candidates[:count], key=lambda z: z.zone_id)


def plan_subnets(vpc_cidr: str, zones: Sequence[Zone]) -> list[SubnetPlan]:
    """Quarter the VPC: one quarter per private subnet (pod IPs come from them), the last quarter for public /+6s."""
    vpc = ipaddress.IPv4Network(vpc_cidr)
    quarters = list(vpc.subnets(prefixlen_diff=2))
    publics = list(quarters[3].subnets(prefixlen_diff=4))
    return [SubnetPlan(z, str(quarters[i]), str(publics[i])) for i, z in enumerate(zones)]


@dataclass
class NetworkArgs:
    """What the network component needs; ``__main__.py`` fills it from the stack config."""

    config: NetworkConfig
    """The network section of the stack config (``infra.config``): VPC CIDR, zone count, NAT gateway layout."""
    region: str
    """AWS region of the stack (config ``aws:region``): the zones and the S3 endpoint's service name."""
    cluster_name: str
    """Name of the EKS cluster (config ``clusterName``): names the resources and tags the subnets for discovery."""
    zone_instance_types: Sequence[str]
    """Instance types (e.g. ``inf2.xlarge``) whose zones the subnets must cover; the first is the one serving needs
    (required in every zone), the rest only rank zones (``__main__.py``: the preset's type, then the pools')."""


@dataclass(frozen=True)
class _Vpc:
    """The VPC, its internet gateway and the public route table every public subnet shares."""

    vpc: aws.ec2.Vpc
    igw: aws.ec2.InternetGateway
    public_rt: aws.ec2.RouteTable


@dataclass
class _Subnets:
    """What the per-zone subnets built so far are: subnets, NAT gateways, private route tables and associations."""

    publics: list[aws.ec2.Subnet] = field(default_factory=list)
    privates: list[aws.ec2.Subnet] = field(default_factory=list)
    nats: list[aws.ec2.NatGateway] = field(default_factory=list)
    private_rts: list[aws.ec2.RouteTable] = field(default_factory=list)
    private_routes: list[aws.ec2.RouteTableAssociation] = field(default_factory=list)


class Network(pulumi.ComponentResource):
    """The VPC: a public and a private subnet in each chosen zone (zones that sell the serving instance type), NAT,
    routes, the S3 gateway endpoint and the tags by which load balancers and Karpenter find the subnets.

    Outputs: ``vpc_id``, ``private_subnet_ids``, ``public_subnet_ids``, and ``private_egress`` (the private subnets'
    route-table associations, for what needs the NAT path before it starts and until it is gone)."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_ids: pulumi.Output[list[str]]
    zones: list[Zone]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Network", name, None, opts)
        cfg = args.config
        self.zones = self._choose_zones(args)
        core = self._vpc(name, args)
        subnets = _Subnets()
        for plan in plan_subnets(cfg.vpc_cidr, self.zones):
            self._zone_subnets(name, args, core, plan, subnets)

        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=core.vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in subnets.private_rts] + [core.public_rt.id],
            tags={"Name": f"{args.cluster_name}-s3"},
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.vpc_id = core.vpc.id
        # A private subnet has egress only once its route table (default route to the NAT gateway) is associated:
        # nodes wait for these, and on destroy they keep the NAT path until the nodes are gone.
        self.private_egress: list[pulumi.Resource] = list(subnets.private_routes)
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in subnets.privates])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in subnets.publics])
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )

    def _choose_zones(self, args: NetworkArgs) -> list[Zone]:
        """The region's zones, which of them sell each instance type, and the ``availabilityZoneCount`` chosen."""
        invoke = pulumi.InvokeOptions(parent=self)
        azs = aws.get_availability_zones(
            state="available",
            filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
            opts=invoke,
        )
        all_zones = [Zone(n, i) for n, i in zip(azs.names, azs.zone_ids, strict=True)]
        offered: dict[str, set[str]] = {}
        for itype in dict.fromkeys(args.zone_instance_types):
            res = aws.ec2.get_instance_type_offerings(
                location_type="availability-zone-id",
                filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=[itype])],
                opts=invoke,
            )
            offered[itype] = set(res.locations)
        return choose_zones(all_zones, offered, args.zone_instance_types, args.config.availability_zone_count)

    def _vpc(self, name: str, args: NetworkArgs) -> _Vpc:
        """The VPC, its internet gateway and the public route table."""
        child = pulumi.ResourceOptions(parent=self)
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.config.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{args.cluster_name}-vpc"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{args.cluster_name}-igw"}, opts=child
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={"Name": f"{args.cluster_name}-public"},
            opts=child,
        )
        return _Vpc(vpc, igw, public_rt)

    def _zone_subnets(self, name: str, args: NetworkArgs, core: _Vpc, plan: SubnetPlan, out: _Subnets) -> None:
        """One zone's public subnet (with a NAT gateway: every zone's in ``perAz``, the first zone's in ``single``),
        its private subnet and the private route table to the zone's (or the single) NAT gateway; added to ``out``."""
        child = pulumi.ResourceOptions(parent=self)
        cluster_name, az = args.cluster_name, plan.zone.zone_id
        pub = aws.ec2.Subnet(
            f"{name}-public-{az}",
            vpc_id=core.vpc.id,
            cidr_block=plan.public_cidr,
            availability_zone_id=az,
            map_public_ip_on_launch=False,
            tags={"Name": f"{cluster_name}-public-{az}", "kubernetes.io/role/elb": "1"},
            opts=child,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public-{az}", subnet_id=pub.id, route_table_id=core.public_rt.id, opts=child
        )
        out.publics.append(pub)
        if args.config.nat_gateways == "perAz" or not out.nats:
            eip = aws.ec2.Eip(f"{name}-nat-{az}", domain="vpc", tags={"Name": f"{cluster_name}-nat-{az}"}, opts=child)
            out.nats.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{az}",
                    allocation_id=eip.id,
                    subnet_id=pub.id,
                    tags={"Name": f"{cluster_name}-nat-{az}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[core.igw]),
                )
            )
        priv = aws.ec2.Subnet(
            f"{name}-private-{az}",
            vpc_id=core.vpc.id,
            cidr_block=plan.private_cidr,
            availability_zone_id=az,
            tags={
                "Name": f"{cluster_name}-private-{az}",
                "kubernetes.io/role/internal-elb": "1",
                "karpenter.sh/discovery": cluster_name,
            },
            opts=child,
        )
        rt = aws.ec2.RouteTable(
            f"{name}-private-{az}",
            vpc_id=core.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=out.nats[-1].id)],
            tags={"Name": f"{cluster_name}-private-{az}"},
            opts=child,
        )
        out.private_routes.append(
            aws.ec2.RouteTableAssociation(f"{name}-private-{az}", subnet_id=priv.id, route_table_id=rt.id, opts=child)
        )
        out.privates.append(priv)
        out.private_rts.append(rt)
