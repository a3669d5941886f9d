"""The vendored upstream files under ``schemas/`` (CRDs, chart values), read as data.

One loader for everything that reads them: the policy pack (chart defaults for the scheduling proof) and the render
harness's validators (``tools/schemas.py``, ``tools/cel.py``).  It imports nothing of the project, so the policy
pack does not need the render harness beside it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
CRD_DIR = SCHEMAS / "crds"
HELM_VALUES_DIR = SCHEMAS / "helm-values"
# libyaml's loader when PyYAML has it: the KubeRay CRDs are 1 MB each.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> that version's ``openAPIV3Schema`` exactly as the vendored CRD has it (do not mutate)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=_LOADER):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = version["schema"][
                    "openAPIV3Schema"
                ]
    return out


def chart_values(filename: str) -> dict[str, Any]:
    """A vendored chart values.yaml (``schemas/helm-values/<filename>``)."""
    data = yaml.safe_load((HELM_VALUES_DIR / filename).read_text())
    return data if isinstance(data, dict) else {}
