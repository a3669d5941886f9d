"""The render's data model: what an offline run of the program recorded, and the errors a render ends with.

It imports nothing of the project, so everything that reads a render (the graph, the timeline, the policy
checks, the tests) can depend on it without depending on how the render is made (``tools/render_harness.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

SECRET = "[secret]"  # what a secret value shows as
UNKNOWN = "[unknown]"  # what a value unknown until deploy shows as


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


@dataclass
class Render:
    """One stack's render: every registration (``resources``: URN, type, name, parent, provider, inputs,
    dependencies, options), the stack outputs, the invokes the program made, its log and the config it ran with."""

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


def is_kubernetes_object(r: Mapping[str, Any]) -> bool:
    typ = r["type"]
    if not typ.startswith("kubernetes:") or not r["custom"]:
        return False
    return not (
        typ.startswith("kubernetes:helm.sh/")
        or typ.startswith("kubernetes:yaml")
        or typ.startswith("kubernetes:kustomize")
    )
