"""The offline render: run ``__main__.py`` under Pulumi's mock engine and record everything it would create.

It applies config the way the Pulumi CLI does (the ``config:`` defaults of ``Pulumi.yaml``, then
``Pulumi.<stack>.yaml``, then overrides), runs the program against a monitor that records every resource
registration (``tools/pulumi_internals.py``) with realistic fake outputs (``tools/render_mocks.py``), and returns a
``Render`` (``tools/render_model.py``).  ``write`` lays a render out as files.  The CLI is ``tools/render.py``.

The same ``render()`` function is the fixture of the unit tests: one mechanism, not two.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import runpy
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tools import pulumi_internals
from tools.render_mocks import MOCK_ZONES, _Mocks
from tools.render_model import SECRET, Render, RenderConfigError, RenderDeployError

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER_SECRET = "offline-render-placeholder"


# ---------------------------------------------------------------------------------------------------------------
# Config, applied like the CLI does.
# ---------------------------------------------------------------------------------------------------------------


def _engine_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def stack_config(
    stack: str, overrides: Mapping[str, str] | None = None, root: Path = REPO
) -> tuple[str, dict[str, str], list[str]]:
    """(project, config as the engine passes it, secret keys) for ``stack``."""
    project_file = yaml.safe_load((root / "Pulumi.yaml").read_text())
    project = project_file["name"]
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, decl in (project_file.get("config") or {}).items():
        full = key if ":" in key else f"{project}:{key}"
        if isinstance(decl, dict) and "default" in decl:
            values[full] = _engine_value(decl["default"])
        elif isinstance(decl, dict) and "value" in decl:
            values[full] = _engine_value(decl["value"])
    stack_file = root / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        raise RenderConfigError(
            [
                f"--stack: {stack!r} has no Pulumi.{stack}.yaml; allowed: "
                + ", ".join(sorted(p.name[7:-5] for p in root.glob("Pulumi.*.yaml")))
            ]
        )
    for key, value in ((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            # Encrypted with the stack's secrets provider: not readable offline, so a placeholder stands in.
            values[key] = PLACEHOLDER_SECRET
            secret_keys.append(key)
        else:
            values[key] = _engine_value(value)
    for key, value in (overrides or {}).items():
        values[key] = value
    return project, values, secret_keys


def _ensure_event_loop() -> None:
    """Pulumi's SDK needs a current event loop; ``asyncio.run`` elsewhere in the process leaves none behind."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    if loop.get_exception_handler() is None:
        loop.set_exception_handler(_not_twice)


def _cancel_pending() -> None:
    """After a resource failed, the program's other registrations and outputs never complete: cancel them, so the next
    render starts on a clean loop and none is left pending when the process exits."""
    loop = asyncio.get_event_loop()
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _not_twice(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A failed resource's error reaches the caller as ``RenderDeployError``; the SDK's other futures that hold the
    same exception are not logged again when they are collected.  Anything else goes to asyncio's default handler."""
    if not isinstance(context.get("exception"), RenderDeployError):
        loop.default_exception_handler(context)


def _resolve_outputs(exports: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in exports.items():
        secret, resolved = pulumi_internals.resolve_output(value)
        out[key] = SECRET if secret else pulumi_internals.clean(json.loads(json.dumps(resolved, default=str)))
    return out


def _run_program(root: Path) -> None:
    runpy.run_path(str(root / "__main__.py"), run_name="__main__")


def render(
    stack: str = "dev", overrides: Mapping[str, str] | None = None, root: Path = REPO, *, image_build: str = "built"
) -> Render:
    """Run the program offline for ``stack``; raise ``RenderConfigError`` if the config is rejected.

    ``image_build`` is how the fake AWS answers the serving image build (``tools.build_fake.OUTCOMES``); with
    ``failed`` the render fails like `pulumi up` does, with ``RenderDeployError``."""
    import pulumi

    start = time.perf_counter()
    project, values, secret_keys = stack_config(stack, overrides, root)
    region = values.get("aws:region", "")
    if region not in MOCK_ZONES:
        # Let the program's validation produce the message; zones only matter once config passes.
        region = "us-west-2"
    mocks = _Mocks(region, image_build)
    monitor = pulumi_internals.make_monitor(mocks)
    mocks.monitor = monitor
    pulumi_internals.reset_runtime()
    _ensure_event_loop()
    pulumi.runtime.set_all_config(values, secret_keys)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)

    log = io.StringIO()
    cwd, path = Path.cwd(), list(sys.path)
    os.chdir(root)
    sys.path.insert(0, str(root))
    try:
        with contextlib.redirect_stdout(log):
            pulumi_internals.run_program(lambda: _run_program(root))
        outputs = _resolve_outputs(pulumi_internals.stack_outputs())
    except pulumi.RunError as exc:
        raise RenderConfigError(str(exc).splitlines()) from None
    except RenderDeployError:
        _cancel_pending()
        raise
    finally:
        os.chdir(cwd)
        sys.path[:] = path
    return Render(stack, values, monitor.records, outputs, time.perf_counter() - start, log.getvalue(), mocks.invokes)


def _manifest_filename(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}-{meta.get('namespace') or 'cluster'}-{meta.get('name')}.yaml"


def write(result: Render, out: Path) -> None:
    if out.exists():
        for old in sorted(out.rglob("*"), reverse=True):
            old.unlink() if old.is_file() else old.rmdir()
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    (out / "helm").mkdir(parents=True, exist_ok=True)
    (out / "resources.json").write_text(json.dumps(result.resources, indent=2, sort_keys=True) + "\n")
    (out / "outputs.json").write_text(json.dumps(result.outputs, indent=2, sort_keys=True) + "\n")
    for obj in result.manifests():
        path = out / "manifests" / _manifest_filename(obj)
        if path.exists():
            raise SystemExit(f"two Kubernetes objects render to {path.name}")
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
    for rel in result.helm_releases():
        body = {k: v for k, v in rel.items() if k != "urn"}
        (out / "helm" / f"{rel['namespace']}-{rel['name']}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
