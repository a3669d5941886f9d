"""Lint every IAM policy document of a render with ``parliament`` (with its community auditors).

    python -m tools.iam_lint [--stack dev]

A policy document is any input of any recorded resource that is (or is a JSON string of) an object with a
``Statement``: role trust policies, inline and managed policies, SQS/S3/other resource policies; so every component's
IAM is linted, not only a list someone remembered to update.  Trust and resource policies get a ``Resource`` where
they have none (a trust policy's resource is the role itself) so parliament checks their actions and principals.

A finding of MEDIUM or above fails, unless an entry of ``tools/parliament-allowlist.yaml`` matches it (issue,
resource name glob, a substring of the finding) and gives a reason.  An entry that matches nothing is reported too:
the allow-list cannot keep exceptions for policies that no longer exist.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tools.render import SECRET, UNKNOWN, Render, RenderConfigError, render

ALLOWLIST = Path(__file__).resolve().parent / "parliament-allowlist.yaml"
SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
BLOCKING = "MEDIUM"


@dataclass(frozen=True)
class PolicyDocument:
    resource: str  # the recorded resource's name
    type: str
    field: str  # dotted path of the input holding the document
    document: dict[str, Any]


@dataclass(frozen=True)
class Finding:
    resource: str
    field: str
    issue: str
    severity: str
    title: str
    detail: str

    def line(self) -> str:
        return f"{self.resource} ({self.field}): {self.severity} {self.issue}: {self.title}: {self.detail}"

    @property
    def blocking(self) -> bool:
        rank = SEVERITIES.index(self.severity) if self.severity in SEVERITIES else len(SEVERITIES)
        return rank >= SEVERITIES.index(BLOCKING)


@dataclass(frozen=True)
class AllowEntry:
    issue: str
    resource: str  # glob on the resource name
    match: str  # substring of the finding's title, detail or actions
    reason: str
    field: str = "*"  # glob on the input holding the document, e.g. assumeRolePolicy

    def allows(self, f: Finding) -> bool:
        return (
            f.issue == self.issue
            and fnmatch.fnmatchcase(f.resource, self.resource)
            and fnmatch.fnmatchcase(f.field, self.field)
            and self.match in f"{f.title} {f.detail}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Finding the documents.
# ---------------------------------------------------------------------------------------------------------------


def _as_policy(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and value not in (SECRET, UNKNOWN) and "Statement" in value:
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, dict) and "Statement" in value:
        return value
    return None


def _walk(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    doc = _as_policy(value)
    if doc is not None:
        yield path, doc
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def documents(resources: Sequence[Mapping[str, Any]]) -> list[PolicyDocument]:
    out: list[PolicyDocument] = []
    for r in resources:
        for path, doc in _walk(r.get("inputs") or {}, ""):
            out.append(PolicyDocument(r["name"], r["type"], path, doc))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Linting.
# ---------------------------------------------------------------------------------------------------------------


def _statements(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    stmts = doc.get("Statement")
    return list(stmts) if isinstance(stmts, list) else [stmts] if isinstance(stmts, dict) else []


def normalise(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy parliament can analyse: statements with a Principal but no Resource (trust policies) get ``*``."""
    out = copy.deepcopy(dict(doc))
    stmts = _statements(out)
    for s in stmts:
        if ("Principal" in s or "NotPrincipal" in s) and "Resource" not in s and "NotResource" not in s:
            s["Resource"] = "*"
    out["Statement"] = stmts
    return out


@cache
def _parliament() -> Any:
    """parliament, with its community auditors' finding definitions loaded (as its CLI does)."""
    import parliament

    override = Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml"
    parliament.override_config(str(override))
    return parliament


def lint_document(doc: PolicyDocument) -> list[Finding]:
    parliament = _parliament()
    analyze_policy_string, enhance_finding = parliament.analyze_policy_string, parliament.enhance_finding

    policy = analyze_policy_string(
        json.dumps(normalise(doc.document), indent=2),
        ignore_private_auditors=True,
        include_community_auditors=True,
    )
    out: list[Finding] = []
    for raw in policy.findings:
        f = enhance_finding(raw)
        detail = f.detail if isinstance(f.detail, str) else json.dumps(f.detail, default=str, sort_keys=True)
        actions = (f.location or {}).get("actions") if isinstance(f.location, dict) else None
        if actions:
            detail = f"{detail} actions: {', '.join(sorted(actions))}".strip()
        out.append(Finding(doc.resource, doc.field, f.issue, str(f.severity), str(f.title), detail))
    return out


def load_allowlist(path: Path = ALLOWLIST) -> list[AllowEntry]:
    data = yaml.safe_load(path.read_text()) or []
    entries: list[AllowEntry] = []
    for i, item in enumerate(data):
        missing = [k for k in ("issue", "resource", "match", "reason") if not str(item.get(k) or "").strip()]
        if missing:
            raise ValueError(f"{path.name} entry {i}: missing {', '.join(missing)} (every exception needs a reason)")
        entries.append(
            AllowEntry(item["issue"], item["resource"], item["match"], item["reason"], item.get("field") or "*")
        )
    return entries


@dataclass(frozen=True)
class Report:
    documents: list[PolicyDocument]
    findings: list[Finding]
    violations: list[Finding]
    unused_allowlist: list[AllowEntry]

    def problems(self) -> list[str]:
        lines = [f.line() for f in self.violations]
        lines += [
            f"allow-list entry {e.issue} on {e.resource} matching {e.match!r} matches no finding; remove it"
            for e in self.unused_allowlist
        ]
        return lines


def lint(resources: Sequence[Mapping[str, Any]], allowlist: Sequence[AllowEntry] | None = None) -> Report:
    entries = list(load_allowlist() if allowlist is None else allowlist)
    docs = documents(resources)
    findings = [f for d in docs for f in lint_document(d)]
    used: set[int] = set()
    violations: list[Finding] = []
    for f in findings:
        if not f.blocking:
            continue
        hits = [i for i, e in enumerate(entries) if e.allows(f)]
        used.update(hits)
        if not hits:
            violations.append(f)
    unused = [e for i, e in enumerate(entries) if i not in used]
    return Report(docs, findings, violations, unused)


def lint_render(r: Render, allowlist: Sequence[AllowEntry] | None = None) -> Report:
    return lint(r.resources, allowlist)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.iam_lint", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default="dev")
    args = parser.parse_args(argv)
    try:
        result = render(args.stack)
    except RenderConfigError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    report = lint_render(result)
    for f in report.findings:
        print(f.line())
    print(
        f"{len(report.documents)} policy documents, {len(report.findings)} findings, {len(report.violations)} blocking"
    )
    for line in report.problems():
        print(f"FAIL {line}", file=sys.stderr)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
