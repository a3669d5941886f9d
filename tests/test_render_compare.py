"""The render comparison (tools/render_compare.py) sees every kind of change a refactor could make."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tools import render_compare
from tools.render import Render

from .conftest import rendered


def _dump(r: Render) -> dict[str, object]:
    return {"stack": r.stack, "config": r.config, "resources": r.resources, "invokes": r.invokes, "outputs": r.outputs}


def test_a_render_equals_itself_and_each_change_is_named(dev: Render) -> None:
    before = json.loads(json.dumps(_dump(dev)))
    assert render_compare.differences(before, copy.deepcopy(before)) == []
    after = copy.deepcopy(before)
    changed, removed = after["resources"][0], after["resources"].pop(1)
    changed["dependencies"] = [*changed["dependencies"], "urn:x"]
    after["outputs"]["extra"] = 1
    assert render_compare.differences(before, after) == [
        "outputs: differs",
        f"removed: {removed['urn']}",
        f"changed: {changed['urn']} dependencies",
    ]


def test_the_cli_dumps_and_diffs(tmp_path: Path) -> None:
    dump = tmp_path / "dev.json"
    assert render_compare.main(["dump", "--stack", "dev", str(dump)]) == 0
    assert render_compare.main(["diff", str(dump), str(dump)]) == 0
    data = json.loads(dump.read_text())
    assert len(data["resources"]) == len(rendered("dev").resources)
    data["resources"][0]["inputs"]["changed"] = True
    (tmp_path / "after.json").write_text(json.dumps(data))
    assert render_compare.main(["diff", str(dump), str(tmp_path / "after.json")]) == 1
