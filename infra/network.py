"""The VPC: public and private subnets in each chosen zone, NAT, routes, the S3 gateway endpoint, discovery tags."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
    config: NetworkConfig
    region: str
    cluster_name: str
    # Instance types whose zones the subnets must cover; the first is the one serving needs.
    zone_instance_types: Sequence[str]


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_ids: pulumi.Output[list[str]]
    zones: list[Zone]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOptions(parent=self)
        cfg = args.config

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
        self.zones = choose_zones(all_zones, offered, args.zone_instance_types, cfg.availability_zone_count)
        plans = plan_subnets(cfg.vpc_cidr, self.zones)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cfg.vpc_cidr,
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

        publics: list[aws.ec2.Subnet] = []
        privates: list[aws.ec2.Subnet] = []
        nats: list[aws.ec2.NatGateway] = []
        private_rts: list[aws.ec2.RouteTable] = []
        private_routes: list[aws.ec2.RouteTableAssociation] = []
        for plan in plans:
            az = plan.zone.zone_id
            pub = aws.ec2.Subnet(
                f"{name}-public-{az}",
                vpc_id=vpc.id,
                cidr_block=plan.public_cidr,
                availability_zone_id=az,
                map_public_ip_on_launch=False,
                tags={"Name": f"{args.cluster_name}-public-{az}", "kubernetes.io/role/elb": "1"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{az}", subnet_id=pub.id, route_table_id=public_rt.id, opts=child
            )
            publics.append(pub)
            if cfg.nat_gateways == "perAz" or not nats:
                eip = aws.ec2.Eip(
                    f"{name}-nat-{az}", domain="vpc", tags={"Name": f"{args.cluster_name}-nat-{az}"}, opts=child
                )
                nats.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{az}",
                        allocation_id=eip.id,
                        subnet_id=pub.id,
                        tags={"Name": f"{args.cluster_name}-nat-{az}"},
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                    )
                )
            priv = aws.ec2.Subnet(
                f"{name}-private-{az}",
                vpc_id=vpc.id,
                cidr_block=plan.private_cidr,
                availability_zone_id=az,
                tags={
                    "Name": f"{args.cluster_name}-private-{az}",
                    "kubernetes.io/role/internal-elb": "1",
                    "karpenter.sh/discovery": args.cluster_name,
                },
                opts=child,
            )
            rt = aws.ec2.RouteTable(
                f"{name}-private-{az}",
                vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nats[-1].id)],
                tags={"Name": f"{args.cluster_name}-private-{az}"},
                opts=child,
            )
            private_routes.append(
                aws.ec2.RouteTableAssociation(
                    f"{name}-private-{az}", subnet_id=priv.id, route_table_id=rt.id, opts=child
                )
            )
            privates.append(priv)
            private_rts.append(rt)

        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts] + [public_rt.id],
            tags={"Name": f"{args.cluster_name}-s3"},
            opts=child,
        )

        self.vpc_id = vpc.id
        # A private subnet has egress only once its route table (default route to the NAT gateway) is associated:
        # nodes wait for these, and on destroy they keep the NAT path until the nodes are gone.
        self.private_egress: list[pulumi.Resource] = list(private_routes)
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in privates])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in publics])
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )
