"""The render's dependency graph: edges from every recorded dependency (explicit, property and parent/provider)."""

from __future__ import annotations

from collections.abc import Iterable

from tools.render_model import Render


def edges(r: Render) -> dict[str, set[str]]:
    """urn -> the URNs it waits for on create (and that outlive it on destroy)."""
    out: dict[str, set[str]] = {}
    for res in r.resources:
        deps = set(res["dependencies"])
        for urns in res["propertyDependencies"].values():
            deps.update(urns)
        if res.get("provider"):
            deps.add(res["provider"].rsplit("::", 1)[0])
        out[res["urn"]] = deps
    return out


def depends_on(r: Render, a: str, b: str, graph: dict[str, set[str]] | None = None) -> bool:
    """True if ``a`` transitively waits for ``b`` (through dependencies and providers, or a component's children)."""
    graph = graph if graph is not None else edges(r)
    children: dict[str, set[str]] = {}
    for res in r.resources:
        if res.get("parent"):
            children.setdefault(res["parent"], set()).add(res["urn"])

    def expand(urns: Iterable[str]) -> set[str]:
        # waiting on a component means waiting on everything inside it
        seen: set[str] = set()
        stack = list(urns)
        while stack:
            u = stack.pop()
            if u not in seen:
                seen.add(u)
                stack.extend(children.get(u, ()))
        return seen

    seen: set[str] = set()
    stack = list(expand(graph.get(a, set())))
    while stack:
        u = stack.pop()
        if u == b:
            return True
        if u in seen:
            continue
        seen.add(u)
        stack.extend(expand(graph.get(u, set())))
    return False
