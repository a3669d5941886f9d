"""Validators for everything the stack renders, against real upstream schemas (vendored under ``schemas/``).

- ``kubernetes_problems``: strict Kubernetes JSON schema for the cluster's minor (``kubernetes-validate``); built-in
  kinds only (custom resources are not in those schemas and are rejected here so they cannot pass silently).
- ``custom_resource_problems``: a custom resource against its CRD's ``openAPIV3Schema`` (jsonschema), with the
  Kubernetes structural-schema extensions translated and unknown fields rejected unless the schema preserves them.
  ``crd_schemas`` gives the CRDs' schemas unchanged (tools/cel.py evaluates their CEL rules).
- ``helm_value_problems``: every key path of a Helm release's values must exist in the chart's own values.yaml.

Each returns a list of one-line problems; empty means valid.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
CRD_DIR = SCHEMAS / "crds"
HELM_VALUES_DIR = SCHEMAS / "helm-values"
# libyaml's loader when PyYAML has it: the KubeRay CRDs are 1 MB each.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ---------------------------------------------------------------------------------------------------------------
# Custom resources.
# ---------------------------------------------------------------------------------------------------------------


def _structural_to_jsonschema(node: Any) -> Any:
    """Translate a CRD openAPIV3Schema node to plain JSON schema (draft 7 vocabulary)."""
    if isinstance(node, list):
        return [_structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"properties", "patternProperties"}:
            out[key] = {k: _structural_to_jsonschema(v) for k, v in value.items()}
        elif key.startswith("x-kubernetes-") or key in {"nullable", "format"}:
            continue  # handled below, or not a validation keyword jsonschema should enforce
        else:
            out[key] = _structural_to_jsonschema(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if node.get("x-kubernetes-embedded-resource"):
        # an embedded object carries apiVersion/kind/metadata even when the schema lists no properties for them
        props = out.setdefault("properties", {})
        for field in ("apiVersion", "kind"):
            props.setdefault(field, {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    return out


def _label_selector() -> dict[str, Any]:
    requirement = {
        "type": "object",
        "required": ["key", "operator"],
        "properties": {
            "key": {"type": "string"},
            "operator": {"type": "string"},
            "values": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "type": "object",
        "properties": {
            "matchExpressions": {"type": "array", "items": requirement},
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }


# CRDs EKS installs in every cluster, which no chart of this stack vendors: their schemas written out here from the
# upstream definition's fields (no copy of it is vendored), in the CRD openAPIV3Schema vocabulary.
# SecurityGroupPolicy: aws/amazon-vpc-resource-controller-k8s config/crd/bases (v1beta1): a pod or service-account
# label selector and 1-16 security group IDs.
EKS_BUILTIN_CRDS: dict[tuple[str, str], dict[str, Any]] = {
    ("vpcresources.k8s.aws/v1beta1", "SecurityGroupPolicy"): {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "podSelector": _label_selector(),
                    "serviceAccountSelector": _label_selector(),
                    "securityGroups": {
                        "type": "object",
                        "properties": {
                            "groupIds": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 16}
                        },
                    },
                },
            },
        },
    },
}


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


@cache
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema of that version, for every vendored CRD and EKS's own."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, structural in (*EKS_BUILTIN_CRDS.items(), *crd_schemas().items()):
        out[key] = _object_schema(_structural_to_jsonschema(structural))
    return out


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.setdefault("properties", {})
    # the API server owns these; the CRD lists them loosely
    props["metadata"] = {"type": "object"}
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    return schema


def custom_resource_kinds() -> set[tuple[str, str]]:
    return set(_crds())


def is_custom_resource(obj: Mapping[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in _crds()


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(root)"


def custom_resource_problems(obj: Mapping[str, Any]) -> list[str]:
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    name = f"{key[1]} {(obj.get('metadata') or {}).get('name')}"
    schema = _crds().get(key)
    if schema is None:
        return [f"{name}: no CRD schema for {key[0]} {key[1]} under schemas/crds"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{name}: {_where(e)}: {e.message}" for e in sorted(validator.iter_errors(obj), key=str)]


# ---------------------------------------------------------------------------------------------------------------
# Built-in Kubernetes kinds.
# ---------------------------------------------------------------------------------------------------------------


def kubernetes_problems(obj: Mapping[str, Any], version: str) -> list[str]:
    import kubernetes_validate

    name = f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')}"
    if is_custom_resource(obj):
        return [f"{name}: is a custom resource; validate it with custom_resource_problems"]
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(root)"
        return [f"{name}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: {obj.get('apiVersion')} {obj.get('kind')} is not a Kubernetes {version} kind"]
    return []


def manifest_problems(obj: Mapping[str, Any], version: str) -> list[str]:
    """Whichever validation applies to ``obj``."""
    if is_custom_resource(obj):
        return custom_resource_problems(obj)
    return kubernetes_problems(obj, version)


# ---------------------------------------------------------------------------------------------------------------
# Helm values.
# ---------------------------------------------------------------------------------------------------------------


def chart_values(filename: str) -> dict[str, Any]:
    """A vendored chart values.yaml (``schemas/helm-values/<filename>``)."""
    data = yaml.safe_load((HELM_VALUES_DIR / filename).read_text())
    return data if isinstance(data, dict) else {}


def _paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path, value
        if isinstance(value, Mapping):
            yield from _paths(value, path)


# Maps that charts pass through to Kubernetes verbatim: any key below them is the user's, not the chart's.
FREE_FORM_KEYS = ("nodeSelector", "podAnnotations", "podLabels", "annotations", "labels", "commonLabels")


def helm_value_problems(
    release: str, values: Mapping[str, Any], chart: Mapping[str, Any], free_form: tuple[str, ...] = FREE_FORM_KEYS
) -> list[str]:
    """Key paths in ``values`` that the chart's values.yaml does not have.

    Below a key whose chart default is an empty map, or a key listed in ``free_form`` (maps the chart passes through
    verbatim, such as ``nodeSelector`` or ``podAnnotations``), anything goes; everywhere else an unknown key is a
    misspelling the chart would silently ignore.
    """
    problems: list[str] = []

    def walk(given: Mapping[str, Any], known: Mapping[str, Any], prefix: str) -> None:
        for key, value in given.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in known:
                problems.append(f"{release}: values key {path!r} does not exist in the chart's values.yaml")
                continue
            default = known[key]
            if path in free_form or key in free_form:
                continue
            if isinstance(value, Mapping) and isinstance(default, Mapping) and default:
                walk(value, default, path)

    walk(values, chart, "")
    return problems


def all_value_paths(values: Mapping[str, Any]) -> list[str]:
    return [p for p, _ in _paths(values)]
