"""tools/render_snapshot.py: the comparison that proves a refactor left the render as it was reports every change."""

from __future__ import annotations

import copy
from typing import Any

from tools.render_snapshot import differences

BEFORE: dict[str, Any] = {
    "resources": {
        "urn:a": {"type": "t", "inputs": {"x": 1}, "dependencies": ["urn:b"], "parent": None},
        "urn:b": {"type": "t", "inputs": {}, "dependencies": [], "parent": None},
    },
    "invokes": [{"token": "aws:index/getRegion:getRegion", "args": {}}],
    "outputs": {"o": "v"},
}


def test_identical_snapshots_have_no_differences() -> None:
    assert differences(BEFORE, copy.deepcopy(BEFORE)) == []


def test_every_kind_of_change_is_reported() -> None:
    after = copy.deepcopy(BEFORE)
    after["resources"]["urn:a"]["dependencies"] = []
    after["resources"]["urn:a"]["inputs"] = {"x": 2}
    del after["resources"]["urn:b"]
    after["resources"]["urn:c"] = {"type": "t", "inputs": {}, "dependencies": [], "parent": "urn:a"}
    after["outputs"]["o"] = "w"
    after["invokes"] = []
    assert differences(BEFORE, after) == [
        "removed urn:b",
        "added urn:c",
        "changed urn:a dependencies",
        "changed urn:a inputs",
        "output o changed",
        "invokes changed",
    ]
