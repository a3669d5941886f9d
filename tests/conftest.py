"""Shared fixtures: every test that looks at the stack looks at an offline render of the real program.

The render (Pulumi and its providers) is imported only when a render is asked for, so the e2e tiers can run in venvs
that hold the serving image's packages and not the Pulumi program's (``make e2e-vllm016``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tools.render import Render

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@cache
def _render(stack: str, overrides_json: str) -> Render:
    from tools.render import render

    return render(stack, json.loads(overrides_json))


def rendered(stack: str = "dev", **overrides: str) -> Render:
    """The render of ``stack`` with config overrides (short keys get the project namespace); cached per process."""
    full = {k if ":" in k else f"eks-neuron-llm:{k}": v for k, v in overrides.items()}
    return _render(stack, json.dumps(full, sort_keys=True))


def preset_overrides(preset: str) -> dict[str, str]:
    """Config overrides that render ``preset`` (a key of workloads.presets.PRESETS) on the dev stack: trn1.32xlarge
    needs 16 Neuron devices, more than dev's trn1 pool limit."""
    overrides = {"servingPreset": preset}
    if preset == "trn1.32xlarge":
        overrides["trn1NeuronDeviceLimit"] = "16"
    return overrides


@pytest.fixture(scope="session")
def dev() -> Render:
    return rendered("dev")


@pytest.fixture(scope="session")
def prod() -> Render:
    return rendered("prod")


@pytest.fixture(params=["dev", "prod"], scope="session")
def each_stack(request: pytest.FixtureRequest) -> Render:
    return rendered(request.param)


RenderFn = Callable[..., "Render"]
