"""Security scans of the rendered stack that run offline: checkov on the Kubernetes manifests.

checkov cannot share the project's environment (it pins ``packaging<24`` where Pulumi needs ``>=26``), so it lives in
its own virtualenv (``make`` creates ``venv-scan``) and is found through ``$CHECKOV`` or ``PATH``.  Failed checks are
compared with ``policy/checkov-suppressions.yaml``, where every entry names a check, the resources it covers and the
reason; an entry that suppresses nothing is reported too, so the file cannot rot.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUPPRESSIONS = Path(__file__).resolve().parent.parent / "policy" / "checkov-suppressions.yaml"


class ScanError(RuntimeError):
    pass


@dataclass(frozen=True)
class Finding:
    check: str
    resource: str  # Kind.namespace.name, as checkov names Kubernetes resources
    title: str

    def __str__(self) -> str:
        return f"{self.check} {self.resource}: {self.title}"


@dataclass(frozen=True)
class Suppression:
    check: str
    resources: tuple[str, ...]  # fnmatch patterns over Kind.namespace.name
    reason: str

    def covers(self, f: Finding) -> bool:
        return f.check == self.check and any(fnmatch.fnmatchcase(f.resource, p) for p in self.resources)


def checkov_binary() -> str:
    found = os.environ.get("CHECKOV") or shutil.which("checkov")
    if not found or not Path(found).exists():
        raise ScanError(
            "checkov not found: run the tests through `make test` (it installs checkov into venv-scan) "
            "or set CHECKOV to a checkov executable"
        )
    return found


def run_checkov(manifest_dir: Path) -> list[Finding]:
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
    proc = subprocess.run(
        [
            checkov_binary(),
            "-d",
            str(manifest_dir),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise ScanError(f"checkov exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    data: Any = json.loads(proc.stdout)
    reports = data if isinstance(data, list) else [data]
    findings = []
    for report in reports:
        for c in (report.get("results") or {}).get("failed_checks") or []:
            findings.append(Finding(c["check_id"], c["resource"], c["check_name"]))
    return sorted(set(findings), key=str)


def load_suppressions(path: Path = SUPPRESSIONS) -> list[Suppression]:
    entries = yaml.safe_load(path.read_text()) or []
    out = []
    for e in entries:
        if (
            not isinstance(e, Mapping)
            or not e.get("check")
            or not e.get("resources")
            or not str(e.get("reason") or "").strip()
        ):
            raise ScanError(f"{path.name}: every entry needs check, resources and a reason: {e!r}")
        out.append(Suppression(str(e["check"]), tuple(e["resources"]), str(e["reason"]).strip()))
    return out


def unsuppressed(findings: Sequence[Finding], suppressions: Sequence[Suppression]) -> list[Finding]:
    return [f for f in findings if not any(s.covers(f) for s in suppressions)]


def unused(findings: Sequence[Finding], suppressions: Sequence[Suppression]) -> list[Suppression]:
    return [s for s in suppressions if not any(s.covers(f) for f in findings)]
