"""Modeled deploy timeline: the critical path of a cold ``pulumi up`` to first token, and of a warm RayService restart.

    python -m tools.timeline [--stack dev] [--config KEY=VALUE ...]

The graph is the render's (``tools.graph.edges``: explicit, property and provider dependencies); waiting on a
component means waiting on everything inside it, and the children of a remote component (``eks:index:Cluster``)
wait for what the component waits for.  Each resource takes the typical time its type takes to create
(``tools/timeline_durations.yaml``, with sources); Pulumi starts a resource as soon as everything it depends on
exists, so the deploy takes as long as the longest (critical) path.  After Pulumi created the RayService, the
serving phases follow (node launch, image pull, model download, compile or cache restore, load, ready).

The serving image build (``infra/image.py``) is a resource like the others: it starts when its repository, cache
rule, role and sources exist and runs beside the network and the cluster; the summary prints when it ends and how
long before the RayService (the only thing that waits for it) that is.

Warm restart: the RayService's worker is recreated while the compiled artifacts are in the S3 cache (a pod
restart, a node interruption, a rolled RayCluster).  "node present": the pod comes back on the node it ran on,
whose image is cached.  "node replaced": Karpenter launches a new node first and the image is pulled again.  Both
download the weights again (they are not cached) and restore, never recompile.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.graph import edges
from tools.render_harness import render
from tools.render_model import Render, RenderConfigError

DURATIONS = Path(__file__).with_name("timeline_durations.yaml")
RAYSERVICE = "kubernetes:ray.io/v1:RayService"
IMAGE_BUILD = "pulumi-python:dynamic/image:ServingImageBuild"  # infra.image_build.RESOURCE_TYPE
FIRST_TOKEN = "first token"


@dataclass(frozen=True)
class Durations:
    default_seconds: float
    resources: tuple[Mapping[str, Any], ...]
    phases: Mapping[str, Mapping[str, Any]]

    def of(self, typ: str, name: str) -> float:
        for entry in self.resources:
            if entry["type"] == typ and str(entry.get("match", "")) in name:
                return float(entry["seconds"])
        return self.default_seconds

    def phase(self, key: str) -> float:
        return float(self.phases[key]["seconds"])

    def label(self, key: str) -> str:
        return str(self.phases[key]["label"])


def load_durations(path: Path = DURATIONS) -> Durations:
    data = yaml.safe_load(path.read_text())
    return Durations(float(data["default_seconds"]), tuple(data["resources"]), data["phases"])


@dataclass
class Model:
    """A DAG of steps: ``seconds`` each, ``deps`` what each waits for, ``labels`` how to print them."""

    seconds: dict[str, float] = field(default_factory=dict)
    deps: dict[str, set[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, seconds: float, deps: Sequence[str] | set[str] = (), label: str | None = None) -> None:
        self.seconds[key] = seconds
        self.deps[key] = set(deps)
        self.labels[key] = label or key


@dataclass(frozen=True)
class CriticalPath:
    total: float
    steps: tuple[tuple[str, float, float], ...]  # (label, start, seconds)

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        return sorted(((label, s) for label, _, s in self.steps), key=lambda x: -x[1])[:n]


def critical_path(model: Model, target: str | None = None) -> CriticalPath:
    """Longest path (earliest finish) to ``target``, or to whichever step finishes last."""
    finish, via = earliest_finish(model)
    end = target if target is not None else max(finish, key=lambda k: finish[k])
    chain: list[tuple[str, float, float]] = []
    cur: str | None = end
    while cur is not None:
        chain.append((model.labels[cur], finish[cur] - model.seconds[cur], model.seconds[cur]))
        cur = via[cur]
    chain.reverse()
    return CriticalPath(finish[end], tuple(s for s in chain if s[2] > 0))


def earliest_finish(model: Model) -> tuple[dict[str, float], dict[str, str | None]]:
    """(when each step finishes if started as soon as its dependencies end, the dependency that ended last)."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    visiting: set[str] = set()

    def visit(key: str) -> float:
        if key in finish:
            return finish[key]
        if key in visiting:
            raise ValueError(f"dependency cycle through {key}")
        visiting.add(key)
        start, before = 0.0, None
        for d in sorted(model.deps.get(key, ())):
            if d not in model.seconds:
                continue
            f = visit(d)
            if f > start:
                start, before = f, d
        visiting.discard(key)
        finish[key] = start + model.seconds[key]
        via[key] = before
        return finish[key]

    for key in model.seconds:
        visit(key)
    return finish, via


def _short(res: Mapping[str, Any]) -> str:
    typ = res["type"].split(":")[-1]
    return f"{res['name']} ({typ})"


def deploy_model(r: Render, durations: Durations) -> tuple[Model, str]:
    """The render's resources as steps, plus the serving phases after the RayService; returns (model, RayService)."""
    graph = edges(r)
    by_urn = {x["urn"]: x for x in r.resources}
    children: dict[str, list[str]] = {}
    for x in r.resources:
        if x.get("parent"):
            children.setdefault(x["parent"], []).append(x["urn"])

    def is_step(x: Mapping[str, Any]) -> bool:
        return bool(x["custom"]) and not x.get("remote")

    def inside(urn: str) -> set[str]:
        # a component is done when everything inside it is
        out: set[str] = set()
        stack = [urn]
        while stack:
            u = stack.pop()
            if u in by_urn and is_step(by_urn[u]):
                out.add(u)
            stack.extend(children.get(u, ()))
        return out

    model = Model()
    for x in r.resources:
        if not is_step(x):
            continue
        deps: set[str] = set()
        waits = set(graph.get(x["urn"], ()))
        parent: str | None = x.get("parent")
        while parent is not None and parent in by_urn:
            # children of a remote component get the component's input dependencies from its provider
            if by_urn[parent].get("remote"):
                waits |= graph.get(parent, set())
            parent = by_urn[parent].get("parent")
        for d in waits:
            deps |= inside(d) if d in by_urn else set()
        deps.discard(x["urn"])
        seconds = 0.0 if x["type"].startswith("pulumi:providers:") else durations.of(x["type"], x["name"])
        model.add(x["urn"], seconds, deps, _short(x))

    (rs,) = r.of_type(RAYSERVICE)
    p = durations.phase
    lb = durations.label
    model.add("head_start", p("head_start"), [rs["urn"]], lb("head_start"))
    model.add("serving_node_launch", p("serving_node_launch"), [rs["urn"]], lb("serving_node_launch"))
    model.add("serving_image_pull", p("serving_image_pull"), ["serving_node_launch"], lb("serving_image_pull"))
    model.add("model_download", p("model_download"), ["serving_image_pull"], lb("model_download"))
    model.add("neuron_compile", p("neuron_compile"), ["model_download"], lb("neuron_compile"))
    model.add("model_load", p("model_load"), ["neuron_compile"], lb("model_load"))
    model.add(FIRST_TOKEN, p("serve_ready"), ["model_load", "head_start"], lb("serve_ready"))
    return model, rs["urn"]


def warm_model(durations: Durations, *, node_present: bool) -> Model:
    """A worker restart with the compiled artifacts in S3 (the head keeps running)."""
    p, lb = durations.phase, durations.label
    m = Model()
    if node_present:
        m.add("worker_restart", p("worker_restart"), (), lb("worker_restart"))
        first = "worker_restart"
    else:
        m.add("serving_node_launch", p("serving_node_launch"), (), lb("serving_node_launch"))
        m.add("serving_image_pull", p("serving_image_pull"), ["serving_node_launch"], lb("serving_image_pull"))
        first = "serving_image_pull"
    m.add("model_download", p("model_download"), [first], lb("model_download"))
    m.add("cache_restore", p("cache_restore"), ["model_download"], lb("cache_restore"))
    m.add("model_load", p("model_load"), ["cache_restore"], lb("model_load"))
    m.add(FIRST_TOKEN, p("serve_ready"), ["model_load"], lb("serve_ready"))
    return m


@dataclass(frozen=True)
class Slack:
    """A step off (or on) the path to the RayService: when it ends, and when the RayService can start."""

    label: str
    start: float
    finish: float
    rayservice_start: float

    @property
    def seconds(self) -> float:
        return self.rayservice_start - self.finish


@dataclass(frozen=True)
class Timeline:
    pulumi_up: CriticalPath  # the whole `pulumi up` (every resource created)
    cold: CriticalPath  # `pulumi up` on an empty account to the first token
    warm_node_present: CriticalPath
    warm_node_replaced: CriticalPath
    image_build: Slack | None  # the serving image build, when the stack builds it


def timeline(r: Render, durations: Durations | None = None) -> Timeline:
    durations = durations or load_durations()
    model, rs = deploy_model(r, durations)
    finish, _ = earliest_finish(model)
    build: Slack | None = None
    for x in r.of_type(IMAGE_BUILD):
        start = finish[x["urn"]] - model.seconds[x["urn"]]
        build = Slack(model.labels[x["urn"]], start, finish[x["urn"]], finish[rs] - model.seconds[rs])
    infra = Model(
        {k: v for k, v in model.seconds.items() if k.startswith("urn:")},
        {k: v for k, v in model.deps.items() if k.startswith("urn:")},
        model.labels,
    )
    return Timeline(
        pulumi_up=critical_path(infra),
        cold=critical_path(model, FIRST_TOKEN),
        warm_node_present=critical_path(warm_model(durations, node_present=True), FIRST_TOKEN),
        warm_node_replaced=critical_path(warm_model(durations, node_present=False), FIRST_TOKEN),
        image_build=build,
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def summary(r: Render, durations: Durations | None = None) -> list[str]:
    """Lines for the render summary: totals, the cold critical path step by step, its top three contributors."""
    t = timeline(r, durations)
    lines = [
        f"cold `pulumi up` to first token: {_minutes(t.cold.total)} "
        f"(`pulumi up` itself: {_minutes(t.pulumi_up.total)}; modeled, tools/timeline_durations.yaml)",
    ]
    lines += [f"  +{_minutes(start):>9}  {_minutes(s):>8}  {label}" for label, start, s in t.cold.steps]
    lines.append("  top contributors: " + "; ".join(f"{label} {_minutes(s)}" for label, s in t.cold.top(3)))
    if t.image_build is not None:
        b = t.image_build
        where = (
            f"off the critical path, it ends {_minutes(b.seconds)} before the RayService's start"
            if b.seconds > 0
            else "ON the critical path, the RayService waits for it to start"
        )
        lines.append(
            f"  serving image build {_minutes(b.finish - b.start)}, +{_minutes(b.start)} to +{_minutes(b.finish)}: "
            f"{where} (+{_minutes(b.rayservice_start)})"
        )
    lines.append(
        f"warm RayService restart to first token (artifacts in S3): node present {_minutes(t.warm_node_present.total)}"
        f", node replaced {_minutes(t.warm_node_replaced.total)}"
    )
    lines.append(
        "  top contributors (node replaced): "
        + "; ".join(f"{label} {_minutes(s)}" for label, s in t.warm_node_replaced.top(3))
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.timeline", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.config:
        key, _, value = item.partition("=")
        overrides[key if ":" in key else f"eks-neuron-llm:{key}"] = value
    try:
        r = render(args.stack, overrides)
    except RenderConfigError as e:
        print("\n".join(e.lines), file=sys.stderr)
        return 2
    print("\n".join(summary(r)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
