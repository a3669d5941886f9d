"""Modeled deploy timeline: the critical-path model on synthetic graphs, then on the real render."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tools.render import Render
from tools.timeline import (
    DURATIONS,
    FIRST_TOKEN,
    Durations,
    Model,
    critical_path,
    deploy_model,
    load_durations,
    summary,
    timeline,
)

from .conftest import rendered

# ---------------------------------------------------------------------------------------------------------------
# The model on small synthetic graphs.
# ---------------------------------------------------------------------------------------------------------------


def _diamond() -> Model:
    #   a(2) -> b(10) -> d(1)
    #   a(2) -> c(3)  -> d(1);  e(4) stands alone
    m = Model()
    m.add("a", 2)
    m.add("b", 10, ["a"])
    m.add("c", 3, ["a"])
    m.add("d", 1, ["b", "c"])
    m.add("e", 4)
    return m


def test_critical_path_takes_the_longest_branch() -> None:
    p = critical_path(_diamond())
    assert p.total == 13
    assert [(label, start, s) for label, start, s in p.steps] == [("a", 0, 2), ("b", 2, 10), ("d", 12, 1)]
    assert p.top(2) == [("b", 10), ("a", 2)]


def test_critical_path_to_a_target_and_when_a_branch_grows() -> None:
    m = _diamond()
    assert critical_path(m, "e").total == 4
    m.seconds["c"] = 20
    p = critical_path(m, "d")
    assert p.total == 23 and [label for label, _, _ in p.steps] == ["a", "c", "d"]


def test_a_cycle_is_reported() -> None:
    m = Model()
    m.add("x", 1, ["y"])
    m.add("y", 1, ["x"])
    with pytest.raises(ValueError, match="dependency cycle"):
        critical_path(m)


def _record(urn: str, typ: str, *, parent: str | None = None, deps: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    return {
        "urn": urn,
        "type": typ,
        "name": urn.rsplit("::", 1)[-1],
        "custom": kw.get("custom", True),
        "remote": kw.get("remote", False),
        "parent": parent,
        "provider": None,
        "dependencies": list(deps),
        "propertyDependencies": {},
        "inputs": {},
        "protect": False,
        "retainOnDelete": False,
        "customTimeouts": {},
    }


SYNTHETIC = Durations(
    default_seconds=1,
    resources=(
        {"type": "t:slow", "seconds": 100},
        {"type": "t:mid", "match": "big", "seconds": 50},
        {"type": "t:mid", "seconds": 5},
    ),
    phases={k: {"seconds": 1, "label": k} for k in ("head_start", "serving_node_launch", "serving_image_pull")}
    | {k: {"seconds": 1, "label": k} for k in ("model_download", "neuron_compile", "model_load", "serve_ready")},
)


def test_waiting_on_a_component_waits_for_its_children_and_remote_children_inherit_inputs() -> None:
    u = "urn:pulumi:s::p::"
    resources = [
        _record(u + "net", "t:mid"),  # 5 s
        # a remote component (like eks:index:Cluster) whose child has no recorded dependency of its own
        _record(u + "remote", "x:index:Remote", custom=False, remote=True, deps=(u + "net",)),
        _record(u + "cp", "t:slow", parent=u + "remote"),  # 100 s, after net through its remote parent
        _record(u + "comp", "x:Comp", custom=False),
        _record(u + "bigone", "t:mid", parent=u + "comp"),  # 50 s (the name matches "big")
        _record(u + "other", "t:mid", parent=u + "comp", deps=(u + "remote",)),  # 5 s after cp
        # waits for the component, so for both children
        _record(u + "rs", "kubernetes:ray.io/v1:RayService", deps=(u + "comp",)),  # default 1 s
    ]
    r = Render("s", {}, resources, {}, 0.0)
    model, rs = deploy_model(r, SYNTHETIC)
    assert model.deps[u + "cp"] == {u + "net"}
    assert model.deps[rs] == {u + "bigone", u + "other"}
    p = critical_path(model, rs)
    assert p.total == 5 + 100 + 5 + 1
    assert [label.split(" ")[0] for label, _, _ in p.steps] == ["net", "cp", "other", "rs"]


# ---------------------------------------------------------------------------------------------------------------
# The durations table.
# ---------------------------------------------------------------------------------------------------------------


def test_every_duration_has_a_source_and_lies_in_its_range() -> None:
    data = yaml.safe_load(DURATIONS.read_text())
    for entry in [*data["resources"], *data["phases"].values()]:
        assert entry.get("source"), entry
        low, high = entry["range"]
        assert low <= entry["seconds"] <= high, entry
    for key, phase in data["phases"].items():
        assert phase.get("label"), key


def test_the_gcs_store_is_modeled_and_stays_off_the_cold_path(prod: Render) -> None:
    # ElastiCache takes minutes to create; it starts with the network, in parallel with the control plane, and must
    # be ready before the RayService needs it, not delay it.
    assert load_durations().of("aws:elasticache/replicationGroup:ReplicationGroup", "serving-gcs-store") >= 420
    names = _path_names([label for label, _, _ in timeline(prod).cold.steps])
    assert "serving-rayservice" in names and not [n for n in names if "gcs" in n], names
    # The check can fail: a store slower than the control plane, the system nodes and Karpenter together would be.
    d = load_durations()
    slow = Durations(
        d.default_seconds,
        tuple({**e, "seconds": 3000} if "elasticache" in e["type"] else e for e in d.resources),
        d.phases,
    )
    slow_names = _path_names([label for label, _, _ in timeline(prod, slow).cold.steps])
    assert "serving-gcs-store" in slow_names, slow_names


def test_the_table_covers_the_long_running_types(dev: Render) -> None:
    d = load_durations()
    for typ in (
        "aws:eks/cluster:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "aws:ec2/natGateway:NatGateway",
        "aws:eks/addon:Addon",
        "kubernetes:helm.sh/v3:Release",
    ):
        assert typ in {e["type"] for e in d.resources}, typ
        assert any(x["type"] == typ for x in dev.resources), f"{typ} is not in the render any more"


# ---------------------------------------------------------------------------------------------------------------
# The real render.
# ---------------------------------------------------------------------------------------------------------------


def _path_names(labels: list[str]) -> list[str]:
    return [label.split(" (")[0] for label in labels]


def test_cold_path_runs_through_cluster_nodes_karpenter_pool_rayservice_and_compile(each_stack: Render) -> None:
    t = timeline(each_stack)
    names = _path_names([label for label, _, _ in t.cold.steps])
    expected = [
        "cluster-eks-eksCluster",
        "cluster-system",
        "karpenter-controller",
        "karpenter-nodepool-inf2",
        "serving-rayservice",
        "serving node launch",
        "serving image pull",
        "model download",
        "Neuron compile",
        "load onto the NeuronCores, engine warm-up",
        "Serve replica healthy, RayService Ready, first token",
    ]
    positions = [names.index(e) for e in expected]
    assert positions == sorted(positions), names
    # steps follow each other without gaps: each starts when the one before it finishes
    for (_, start, seconds), (_, nxt, _) in zip(t.cold.steps, t.cold.steps[1:], strict=False):
        assert nxt == pytest.approx(start + seconds)
    assert t.cold.total == pytest.approx(t.cold.steps[-1][1] + t.cold.steps[-1][2])
    # the top three: compile, then the control plane, then the image pull
    top = _path_names([label for label, _ in t.cold.top(3)])
    assert top == ["Neuron compile", "cluster-eks-eksCluster", "serving image pull"]


def test_warm_restarts_restore_instead_of_compiling_and_are_faster(dev: Render) -> None:
    t = timeline(dev)
    for p in (t.warm_node_present, t.warm_node_replaced):
        names = _path_names([label for label, _, _ in p.steps])
        assert "Neuron compile" not in names and "compiled-artifact restore from S3" in names
    assert t.warm_node_present.total < t.warm_node_replaced.total < t.cold.total
    replaced = _path_names([label for label, _, _ in t.warm_node_replaced.steps])
    assert replaced[:2] == ["serving node launch", "serving image pull"]


def test_the_model_follows_the_graph_a_slow_nat_gateway_moves_onto_the_path(dev: Render) -> None:
    # The system nodes wait for the NAT routes (tests/test_destroy.py): a NAT gateway slower than the control plane
    # must therefore show up on the path, which it cannot if the edge (or the model's use of it) is missing.
    d = load_durations()
    slow = Durations(
        d.default_seconds,
        ({"type": "aws:ec2/natGateway:NatGateway", "seconds": 3600}, *d.resources),
        d.phases,
    )
    names = _path_names([label for label, _, _ in timeline(dev, slow).cold.steps])
    assert names.index("network-nat-usw2-az1") < names.index("cluster-system"), names
    # and the control plane still does not wait for it
    assert "cluster-eks-eksCluster" not in names


def test_the_render_summary_prints_the_modeled_critical_path(dev: Render) -> None:
    text = dev.summary()
    assert "deploy timeline (modeled critical path):" in text
    assert "cold `pulumi up` to first token:" in text and "warm RayService restart to first token" in text
    assert "top contributors:" in text


def test_first_token_is_the_end_of_the_cold_path(dev: Render) -> None:
    model, rs = deploy_model(dev, load_durations())
    assert rs in model.deps["serving_node_launch"] and FIRST_TOKEN in model.seconds


# ---------------------------------------------------------------------------------------------------------------
# The serving image build: off the critical path.
# ---------------------------------------------------------------------------------------------------------------

PREBUILT = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/serving:2026-11-30"


def test_the_image_build_is_off_the_cold_path_and_the_cold_deploy_does_not_grow(each_stack: Render) -> None:
    t = timeline(each_stack)
    assert t.image_build is not None
    names = _path_names([label for label, _, _ in t.cold.steps])
    assert "serving-build" not in names
    # it starts as soon as its repository, cache rule, role and sources exist, and ends before the RayService starts
    assert t.image_build.start < 60 and t.image_build.seconds > 0
    # the same stack with a prebuilt image (no build at all) takes exactly as long: the build adds nothing
    prebuilt = timeline(rendered(each_stack.stack, servingImage=PREBUILT))
    assert prebuilt.image_build is None
    assert t.cold.total == pytest.approx(prebuilt.cold.total)
    assert t.pulumi_up.total == pytest.approx(prebuilt.pulumi_up.total)


def test_a_build_slower_than_its_slack_would_move_onto_the_path(dev: Render) -> None:
    # The check above can fail: the model does put the build before the RayService.
    d = load_durations()
    t = timeline(dev, d)
    assert t.image_build is not None
    slow = Durations(
        d.default_seconds,
        ({"type": "pulumi-python:dynamic/image:ServingImageBuild", "seconds": 3600}, *d.resources),
        d.phases,
    )
    s = timeline(dev, slow)
    names = _path_names([label for label, _, _ in s.cold.steps])
    assert names.index("serving-build") < names.index("serving-rayservice"), names
    # the RayService now starts when the build ends, 3600 s after the build's start
    b = t.image_build
    assert s.cold.total == pytest.approx(t.cold.total + b.start + 3600 - b.rayservice_start)
    assert s.image_build is not None and s.image_build.seconds == 0
    assert "ON the critical path" in "\n".join(summary(dev, slow))


def test_the_summary_says_where_the_build_runs(dev: Render) -> None:
    (line,) = [x for x in summary(dev) if "serving image build" in x]
    assert "off the critical path" in line and "before the RayService's start" in line
