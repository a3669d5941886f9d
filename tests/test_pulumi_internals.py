"""The Pulumi internals the render harness relies on (tools/pulumi_internals.py) are all in the installed SDK."""

from __future__ import annotations

import pytest
from pulumi.runtime import mocks, rpc

from tools import pulumi_internals


def test_the_installed_pulumi_has_every_internal_the_harness_uses() -> None:
    found = pulumi_internals.problems()
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("owner", "name", "expected"),
    [
        (mocks.MockMonitor, "make_urn", "changed MockMonitor.make_urn: it is gone"),
        (rpc, "_special_resource_sig", "changed pulumi.runtime.rpc._special_resource_sig: it is no longer"),
    ],
)
def test_a_missing_internal_is_named(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, expected: str) -> None:
    monkeypatch.delattr(owner, name)
    found = pulumi_internals.problems()
    assert len(found) == 1 and found[0].startswith("Pulumi 3.") and expected in found[0], found


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def register(self: object, req: object) -> None: ...

    monkeypatch.setattr(mocks.MockMonitor, "RegisterResource", register)
    release = pulumi_internals.version("pulumi")
    assert pulumi_internals.problems() == [
        f"Pulumi {release} changed MockMonitor.RegisterResource: it lost parameter(s) request"
    ]
