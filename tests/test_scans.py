"""checkov on every rendered manifest: nothing fails unless suppressed with a reason, and no suppression is stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.render import write
from tools.scan import Finding, load_suppressions, run_checkov, unsuppressed, unused

from .conftest import rendered

BAD_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad, namespace: apps}
spec:
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers:
        - name: c
          image: busybox:latest
          securityContext: {privileged: true}
"""


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Finding]]:
    out = {}
    for stack in ("dev", "prod"):
        d = tmp_path_factory.mktemp(stack)
        write(rendered(stack), d)
        out[stack] = run_checkov(d / "manifests")
    return out


def test_no_unsuppressed_checkov_failure(findings: dict[str, list[Finding]]) -> None:
    suppressions = load_suppressions()
    for stack, found in findings.items():
        assert [str(f) for f in unsuppressed(found, suppressions)] == [], stack


def test_every_suppression_has_a_reason_and_still_matches_something(findings: dict[str, list[Finding]]) -> None:
    suppressions = load_suppressions()
    everything = [f for found in findings.values() for f in found]
    assert [s.check for s in unused(everything, suppressions)] == []
    assert all(len(s.reason) > 20 for s in suppressions)


def test_checkov_does_find_a_privileged_unpinned_pod(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_DEPLOYMENT)
    checks = {f.check for f in run_checkov(tmp_path)}
    assert {"CKV_K8S_16", "CKV_K8S_14"} <= checks  # privileged container; image tag latest
