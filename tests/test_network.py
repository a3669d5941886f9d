"""Network: zones chosen by zone ID among those selling the accelerator, subnets per zone, tags, NAT per mode."""

from __future__ import annotations

import ipaddress

import pytest

from infra import tokens
from infra.network import Zone, ZoneSelectionError, choose_zones, plan_subnets
from tools.render import MOCK_OFFERINGS, Render

from .conftest import rendered

RT = "aws:ec2/routeTable:RouteTable"

ZONES = [Zone("r-a", "z1"), Zone("r-b", "z2"), Zone("r-c", "z3"), Zone("r-d", "z4")]


def test_zones_are_chosen_among_those_offering_the_serving_type() -> None:
    offered = {"inf2.8xlarge": {"z2", "z3", "z4"}}
    assert [z.zone_id for z in choose_zones(ZONES, offered, ["inf2.8xlarge"], 2)] == ["z2", "z3"]


def test_zones_offering_more_of_the_other_types_are_preferred() -> None:
    offered = {"inf2.8xlarge": {"z1", "z2", "z3"}, "trn1.2xlarge": {"z3"}}
    assert [z.zone_id for z in choose_zones(ZONES, offered, ["inf2.8xlarge", "trn1.2xlarge"], 2)] == ["z1", "z3"]


def test_too_few_offering_zones_is_a_one_line_error_naming_the_key() -> None:
    with pytest.raises(ZoneSelectionError) as info:
        choose_zones(ZONES, {"inf2.8xlarge": {"z4"}}, ["inf2.8xlarge"], 2)
    message = str(info.value)
    assert message.startswith("eks-neuron-llm:availabilityZoneCount: 2 zones needed but only 1 zone(s)")
    assert "\n" not in message


@pytest.mark.parametrize("cidr", ["10.0.0.0/16", "172.16.0.0/18", "192.168.0.0/20"])
@pytest.mark.parametrize("count", [2, 3])
def test_subnet_plan_fits_in_the_vpc_without_overlap(cidr: str, count: int) -> None:
    plans = plan_subnets(cidr, ZONES[:count])
    nets = [ipaddress.ip_network(c) for p in plans for c in (p.private_cidr, p.public_cidr)]
    vpc = ipaddress.ip_network(cidr)
    assert all(n.subnet_of(vpc) for n in nets)  # type: ignore[arg-type]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    # private subnets hold the pod IPs (VPC CNI): they are the large ones
    assert all(ipaddress.ip_network(p.private_cidr).num_addresses >= vpc.num_addresses // 4 for p in plans)


def _subnets(r: Render, kind: str) -> list[dict]:
    return [s for s in r.of_type(tokens.SUBNET) if f"-{kind}-" in s["name"]]


@pytest.mark.parametrize(("stack", "count"), [("dev", 2), ("prod", 3)])
def test_one_public_and_one_private_subnet_per_zone(stack: str, count: int) -> None:
    r = rendered(stack)
    for kind in ("public", "private"):
        subnets = _subnets(r, kind)
        assert len(subnets) == count
        assert len({s["inputs"]["availabilityZoneId"] for s in subnets}) == count


def test_subnets_only_use_zones_that_sell_inf2(each_stack: Render) -> None:
    for s in each_stack.of_type(tokens.SUBNET):
        assert s["inputs"]["availabilityZoneId"] in MOCK_OFFERINGS["inf2"]


def test_subnet_tags_for_load_balancers_and_karpenter_discovery(each_stack: Render) -> None:
    cluster = each_stack.outputs["clusterName"]
    for s in _subnets(each_stack, "public"):
        assert s["inputs"]["tags"]["kubernetes.io/role/elb"] == "1"
        assert "karpenter.sh/discovery" not in s["inputs"]["tags"]
        assert s["inputs"].get("mapPublicIpOnLaunch") is False
    for s in _subnets(each_stack, "private"):
        assert s["inputs"]["tags"]["kubernetes.io/role/internal-elb"] == "1"
        # every private subnet is discoverable, so every node pool can use every zone
        assert s["inputs"]["tags"]["karpenter.sh/discovery"] == cluster


@pytest.mark.parametrize(
    ("mode", "zones", "nats"), [("single", "2", 1), ("single", "3", 1), ("perAz", "2", 2), ("perAz", "3", 3)]
)
def test_nat_gateway_count_follows_the_mode(mode: str, zones: str, nats: int) -> None:
    r = rendered("dev", natGateways=mode, availabilityZoneCount=zones)
    assert len(r.of_type(tokens.NAT_GATEWAY)) == nats
    assert len(r.of_type("aws:ec2/eip:Eip")) == nats


def test_per_az_nat_keeps_each_zone_on_its_own_gateway(prod: Render) -> None:
    nat_subnet = {n["inputs"]["allocationId"]: n for n in prod.of_type(tokens.NAT_GATEWAY)}
    assert len(nat_subnet) == 3
    private_rts = [rt for rt in prod.of_type(RT) if "-private-" in rt["name"]]
    nat_urn_by_zone = {
        n["name"].rsplit("-", 2)[-2] + "-" + n["name"].rsplit("-", 1)[-1]: n["urn"]
        for n in prod.of_type(tokens.NAT_GATEWAY)
    }
    for rt in private_rts:
        zone = rt["name"].split("-private-")[1]
        assert nat_urn_by_zone[zone] in rt["propertyDependencies"]["routes"]


def test_s3_gateway_endpoint_serves_every_route_table(each_stack: Render) -> None:
    (endpoint,) = each_stack.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    region = each_stack.outputs["region"]
    assert endpoint["inputs"]["serviceName"] == f"com.amazonaws.{region}.s3"
    assert endpoint["inputs"]["vpcEndpointType"] == "Gateway"
    route_tables = {rt["urn"] for rt in each_stack.of_type(RT)}
    assert set(endpoint["propertyDependencies"]["routeTableIds"]) == route_tables


def test_vpc_has_dns_for_eks(each_stack: Render) -> None:
    (vpc,) = each_stack.of_type("aws:ec2/vpc:Vpc")
    assert vpc["inputs"]["enableDnsHostnames"] is True and vpc["inputs"]["enableDnsSupport"] is True
