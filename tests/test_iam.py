"""Every IAM policy document in the render passes parliament (MEDIUM and above), exceptions allow-listed one by one."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from infra import tokens
from tools.iam_lint import ALLOWLIST, AllowEntry, documents, lint, load_allowlist
from tools.render import Render


def test_every_policy_document_passes_parliament(each_stack: Render) -> None:
    report = lint(each_stack.resources)
    assert report.problems() == []


def test_the_lint_finds_every_kind_of_document(dev: Render) -> None:
    docs = documents(dev.resources)
    by_type = {(d.type, d.field) for d in docs}
    assert (tokens.IAM_ROLE, "assumeRolePolicy") in by_type
    assert ("aws:iam/policy:Policy", "policy") in by_type
    assert ("aws:sqs/queuePolicy:QueuePolicy", "policy") in by_type
    # every role's trust policy is among them
    roles = {r["name"] for r in dev.of_type(tokens.IAM_ROLE)}
    assert roles == {d.resource for d in docs if d.field == "assumeRolePolicy"}


def _with(dev: Render, name: str, typ: str, inputs: dict) -> list[dict]:
    resources = copy.deepcopy(dev.resources)
    resources.append(
        {
            "urn": f"urn:pulumi:dev::eks-neuron-llm::{typ}::{name}",
            "type": typ,
            "name": name,
            "custom": True,
            "inputs": inputs,
            "dependencies": [],
            "propertyDependencies": {},
        }
    )
    return resources


def test_an_over_broad_inline_policy_fails_naming_it(dev: Render) -> None:
    admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}
    resources = _with(dev, "serving-too-broad", tokens.IAM_ROLE_POLICY, {"policy": json.dumps(admin)})
    problems = lint(resources).problems()
    assert problems
    assert all(p.startswith("serving-too-broad (policy): ") for p in problems)
    assert any("PRIVILEGE_ESCALATION" in p or "PERMISSIONS_MANAGEMENT_ACTIONS" in p for p in problems)


def test_an_identity_policy_granting_assume_role_is_not_excused_by_the_trust_policy_entry(dev: Render) -> None:
    assume = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
    }
    resources = _with(dev, "hop", "aws:iam/policy:Policy", {"policy": json.dumps(assume)})
    problems = lint(resources).problems()
    assert any(p.startswith("hop (policy): MEDIUM CREDENTIALS_EXPOSURE") for p in problems), problems


def test_a_stale_allowlist_entry_fails(dev: Render) -> None:
    entries = [*load_allowlist(), AllowEntry("PRIVILEGE_ESCALATION", "gone-role", "iam:*", "was needed once")]
    problems = lint(dev.resources, entries).problems()
    assert problems == [
        "allow-list entry PRIVILEGE_ESCALATION on gone-role matching 'iam:*' matches no finding; remove it"
    ]


def test_without_the_allowlist_the_known_false_positives_block(dev: Render) -> None:
    report = lint(dev.resources, [])
    assert {f.issue for f in report.violations} >= {"RESOURCE_MISMATCH", "PERMISSIONS_MANAGEMENT_ACTIONS"}


def test_every_allowlist_entry_needs_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "allow.yaml"
    bad.write_text("- issue: RESOURCE_MISMATCH\n  resource: x\n  match: y\n")
    with pytest.raises(ValueError, match="missing reason"):
        load_allowlist(bad)
    assert all(e.reason.strip() for e in load_allowlist(ALLOWLIST))


MANAGED_POLICY_LIMIT = 6144  # characters, whitespace not counted (IAM quota, not adjustable)


def managed_policy_sizes(resources: list[dict]) -> dict[str, int]:
    return {
        r["name"]: len("".join(r["inputs"]["policy"].split()))
        for r in resources
        if r["type"] == "aws:iam/policy:Policy" and r["inputs"].get("policy", "[secret]") != "[secret]"
    }


def test_every_managed_policy_fits_the_iam_size_limit(each_stack: Render) -> None:
    sizes = managed_policy_sizes(each_stack.resources)
    assert sizes
    assert {k: v for k, v in sizes.items() if v > MANAGED_POLICY_LIMIT} == {}


def test_the_size_check_can_fail(dev: Render) -> None:
    huge = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "x" * 7000}],
    }
    resources = _with(dev, "huge", "aws:iam/policy:Policy", {"policy": json.dumps(huge)})
    assert managed_policy_sizes(resources)["huge"] > MANAGED_POLICY_LIMIT
