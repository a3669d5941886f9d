"""The CRDs' CEL validation rules (``x-kubernetes-validations``), evaluated on a custom resource as the API server
does when the resource is created.

jsonschema (``tools.schemas.custom_resource_problems``) checks a custom resource's structure; the rules checked here
are the rest of what the API server enforces at create time (exactly one of role/instanceProfile, restricted label
keys, a budget's schedule only with a duration, ...). For every vendored CRD version:

- the schema's ``default`` values are applied first, and ``null`` in a non-nullable field is pruned, as the API server
  does before it validates;
- every rule runs at its schema node for every instance of that node (inside arrays and maps too), with ``self``
  bound to the node's value converted by the schema's types (``integer`` -> int, ``number`` -> double,
  ``format: date-time`` -> timestamp, int-or-string as given);
- transition rules (rules that name ``oldSelf``) do not run on create and are skipped, unless ``optionalOldSelf`` is
  true: then they run with ``oldSelf`` an empty optional (``hasValue()`` false, ``orValue(x)`` x);
- a failing rule is one line with the object, the field path (plus the rule's ``fieldPath``) and the CRD's own
  ``message`` (or ``messageExpression``); a rule that does not evaluate is a problem too, never a pass.

The evaluator is cel-python (``celpy``) with the Kubernetes extension functions that the vendored rules call and
cel-python lacks (``find``, ``split``); ``unsupported_rules()`` names every rule that calls anything else or does not
compile, so a new CRD with new functions fails loudly instead of passing unevaluated.

Not modelled: pruning of unknown fields (the schema check refuses them first), the API server's CEL cost budget, and
its type check when the CRD is registered (the vendored CRDs are registered upstream; a type error here shows as a
rule that fails to evaluate).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, Final

import celpy
import celpy.celtypes as ct
import lark
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError, base_functions

from tools.schemas import EKS_BUILTIN_CRDS, crd_schemas

# ---------------------------------------------------------------------------------------------------------------
# Kubernetes CEL extension functions (k8s.io/apiserver's cel library: the strings and regex extensions).
# ---------------------------------------------------------------------------------------------------------------


def _regex(pattern: str) -> re.Pattern[str] | str:
    """The compiled pattern, or why it does not compile. Kubernetes uses RE2; the vendored rules' patterns
    (``^([^/]+)``, ``^[^@]+``) mean the same in Python's ``re``, and RE2-only syntax fails here loudly."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        return f"invalid regex {pattern!r}: {exc}"


def k8s_find(text: ct.StringType, pattern: ct.StringType) -> ct.StringType | CELEvalError:
    """``<string>.find(<regex>)``: the first match, or the empty string when there is none."""
    compiled = _regex(str(pattern))
    if isinstance(compiled, str):
        return CELEvalError(compiled)
    match = compiled.search(str(text))
    return ct.StringType(match.group(0) if match else "")


def k8s_split(text: ct.StringType, sep: ct.StringType, limit: ct.IntType | None = None) -> ct.ListType:
    """``<string>.split(<sep>[, <limit>])`` with Go's ``strings.SplitN`` semantics: a negative (or no) limit splits
    fully, 0 gives an empty list, n > 0 at most n parts (the last holds the rest); an empty separator splits into
    characters."""
    n = -1 if limit is None else int(limit)
    s, sp = str(text), str(sep)
    if n == 0:
        return ct.ListType([])
    if sp == "":
        chars = list(s)
        parts = chars if n < 0 or n >= len(chars) else [*chars[: n - 1], "".join(chars[n - 1 :])]
    else:
        parts = s.split(sp) if n < 0 else s.split(sp, n - 1)
    return ct.ListType([ct.StringType(p) for p in parts])


class _OptionalNone:
    """``oldSelf`` of an ``optionalOldSelf`` transition rule on create: an optional without a value."""

    def __repr__(self) -> str:
        return "optional.none()"


OPTIONAL_NONE: Final = _OptionalNone()


def _has_value(opt: object) -> ct.BoolType | CELEvalError:
    if opt is OPTIONAL_NONE:
        return ct.BoolType(False)
    return CELEvalError(f"hasValue() applies to an optional, not {type(opt).__name__}")


def _or_value(opt: object, other: Any) -> Any:
    if opt is OPTIONAL_NONE:
        return other
    return CELEvalError(f"orValue() applies to an optional, not {type(opt).__name__}")


def _value(opt: object) -> CELEvalError:
    return CELEvalError("optional.none() has no value" if opt is OPTIONAL_NONE else "value() applies to an optional")


EXTENSIONS: Final[dict[str, Callable[..., Any]]] = {
    "find": k8s_find,
    "split": k8s_split,
    "hasValue": _has_value,
    "orValue": _or_value,
    "value": _value,
}
# Macros cel-python expands itself (Kubernetes has the same). cel-python's own ``reduce``/``min`` macros are not
# Kubernetes CEL and are deliberately not accepted.
_MACROS: Final = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
_AVAILABLE: Final = frozenset(base_functions) | frozenset(EXTENSIONS) | _MACROS

# ---------------------------------------------------------------------------------------------------------------
# Rules.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One ``x-kubernetes-validations`` entry of a CRD version, compiled."""

    crd: str  # "<apiVersion> <kind>"
    where: str  # schema location, e.g. "spec.template.spec.requirements[*].key"
    rule: str
    message: str | None
    message_expression: str | None
    field_path: str | None
    transition: bool  # names oldSelf
    optional_old_self: bool
    program: celpy.Runner | None = field(compare=False, repr=False)
    message_program: celpy.Runner | None = field(compare=False, repr=False)
    unsupported: str | None  # why it cannot be evaluated here; None when it can

    @property
    def runs_on_create(self) -> bool:
        return not self.transition or self.optional_old_self

    def describe(self) -> str:
        return f"{self.crd} {self.where or '(root)'}: {self.rule}"


@cache
def _environment() -> celpy.Environment:
    return celpy.Environment()


def _calls(tree: lark.Tree[Any]) -> Iterator[str]:
    """Names of the functions, methods and macros an expression calls."""
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg":
            yield str(node.children[1])
        elif node.data in {"ident_arg", "dot_ident_arg"}:
            yield str(node.children[0])


def _idents(tree: lark.Tree[Any]) -> set[str]:
    return {str(n.children[0]) for n in tree.iter_subtrees() if n.data == "ident"}


def _compile(text: str) -> tuple[celpy.Runner | None, set[str], str | None]:
    """(program, identifiers, why it cannot run)."""
    env = _environment()
    try:
        tree = env.compile(text)
    except Exception as exc:  # any parser failure is the rule's problem
        return None, set(), f"cel-python cannot parse it: {str(exc).splitlines()[0]}"
    missing = sorted(set(_calls(tree)) - _AVAILABLE)
    if missing:
        return None, _idents(tree), f"calls {', '.join(missing)}, which this evaluator does not provide"
    return env.program(tree, functions=EXTENSIONS), _idents(tree), None


@cache
def _compiled(text: str) -> tuple[celpy.Runner | None, frozenset[str], str | None]:
    program, idents, why = _compile(text)
    return program, frozenset(idents), why


def _make_rule(crd: str, where: str, entry: Mapping[str, Any]) -> Rule:
    text = str(entry.get("rule", ""))
    program, idents, why = _compiled(text)
    transition = "oldSelf" in idents
    optional = bool(entry.get("optionalOldSelf"))
    if optional and not transition:
        why = why or "optionalOldSelf is set on a rule that does not name oldSelf (the API server rejects that CRD)"
    message_expression = entry.get("messageExpression")
    message_program = None
    if message_expression:
        message_program, _, message_why = _compiled(str(message_expression))
        why = why or (f"messageExpression: {message_why}" if message_why else None)
    return Rule(
        crd=crd,
        where=where,
        rule=text,
        message=entry.get("message"),
        message_expression=message_expression,
        field_path=entry.get("fieldPath"),
        transition=transition,
        optional_old_self=optional,
        program=program,
        message_program=message_program,
        unsupported=why,
    )


def _children(schema: Mapping[str, Any], where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The schema nodes below ``schema`` that describe values (properties, map values, list items). Rules under
    allOf/anyOf/oneOf/not are not looked for: none of the vendored CRDs has any (tests/test_cel.py counts every rule
    anywhere in each schema, so one there would fail that test instead of going unevaluated)."""
    for name, sub in (schema.get("properties") or {}).items():
        yield (f"{where}.{name}" if where else name), sub
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        yield f"{where}[*]", extra
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield f"{where}[*]", items


NodeRules = dict[int, tuple[Rule, ...]]  # id(schema node) -> that node's rules


def _index_schema(crd: str, schema: Mapping[str, Any], by_node: NodeRules) -> list[Rule]:
    """Compile every rule of ``schema`` into ``by_node`` (keyed by node identity: the caller keeps ``schema``
    alive as long as ``by_node``); returns them in schema order."""
    found: list[Rule] = []

    def walk(node: Mapping[str, Any], where: str) -> None:
        entries = node.get("x-kubernetes-validations") or []
        if entries:
            by_node[id(node)] = tuple(_make_rule(crd, where, e) for e in entries)
            found.extend(by_node[id(node)])
        for sub_where, sub in _children(node, where):
            walk(sub, sub_where)

    walk(schema, "")
    return found


@dataclass(frozen=True)
class _Index:
    by_node: NodeRules
    by_crd: dict[tuple[str, str], tuple[Rule, ...]]  # (apiVersion, kind) -> every rule, in schema order


@cache
def _index() -> _Index:
    """Every rule of every vendored CRD version, compiled once (the schemas live as long as ``crd_schemas()``)."""
    by_node: NodeRules = {}
    by_crd = {(v, k): tuple(_index_schema(f"{v} {k}", schema, by_node)) for (v, k), schema in crd_schemas().items()}
    return _Index(by_node, by_crd)


def rules(api_version: str | None = None, kind: str | None = None) -> list[Rule]:
    """Every rule of the vendored CRDs (or of one CRD version), in schema order."""
    return [
        r
        for (v, k), found in _index().by_crd.items()
        if (api_version is None or v == api_version) and (kind is None or k == kind)
        for r in found
    ]


def unsupported_rules() -> list[str]:
    """One line per rule that would run on create but cannot be evaluated here, with the reason."""
    return [f"{r.describe()}: {r.unsupported}" for r in rules() if r.unsupported and r.runs_on_create]


# ---------------------------------------------------------------------------------------------------------------
# What the API server does to an object before it validates: prune nulls, apply defaults.
# ---------------------------------------------------------------------------------------------------------------


def _child_schema(schema: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    props = schema.get("properties") or {}
    if key in props:
        sub: Mapping[str, Any] = props[key]
        return sub
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def apply_defaults(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """``value`` with the schema's defaults applied and nulls of non-nullable fields pruned (then defaulted), as the
    API server's structural defaulting does; defaults are themselves defaulted. Returns a new value."""
    if schema is None:
        return copy.deepcopy(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = _child_schema(schema, key)
            if item is None and not (sub or {}).get("nullable"):
                continue  # pruned; a default below may fill it
            out[key] = apply_defaults(item, sub)
        for key, sub in (schema.get("properties") or {}).items():
            if key not in out and "default" in sub:
                out[key] = apply_defaults(copy.deepcopy(sub["default"]), sub)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        return [apply_defaults(i, items if isinstance(items, Mapping) else None) for i in value]
    return value


# ---------------------------------------------------------------------------------------------------------------
# Values as CEL sees them.
# ---------------------------------------------------------------------------------------------------------------


def to_cel(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """A JSON value as a CEL value of the schema's type (Kubernetes' structural-schema to CEL type mapping)."""
    if schema is None or schema.get("x-kubernetes-int-or-string"):
        return json_to_cel(value)
    typ = schema.get("type")
    if isinstance(value, Mapping):
        return ct.MapType({ct.StringType(k): to_cel(v, _child_schema(schema, k)) for k, v in value.items()})
    if isinstance(value, list):
        items = schema.get("items")
        return ct.ListType([to_cel(v, items if isinstance(items, Mapping) else None) for v in value])
    if typ == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return ct.DoubleType(float(value))
    if typ == "string" and isinstance(value, str) and schema.get("format") in {"date-time", "date"}:
        try:
            return ct.TimestampType(value)
        except ValueError:
            return ct.StringType(value)
    return json_to_cel(value)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class CelReport:
    """What a check evaluated and what failed."""

    problems: list[str] = field(default_factory=list)
    evaluations: int = 0  # rule x instance evaluations
    rules: set[tuple[str, str, str]] = field(default_factory=set)  # distinct (crd, where, rule) evaluated
    skipped_transition: int = 0  # transition rules met on an instance and skipped (create)

    def add(self, other: CelReport) -> None:
        self.problems += other.problems
        self.evaluations += other.evaluations
        self.rules |= other.rules
        self.skipped_transition += other.skipped_transition


def _error_text(err: BaseException | CELEvalError) -> str:
    args = getattr(err, "args", ())
    return str(args[0]) if args else type(err).__name__


def _evaluate(program: celpy.Runner, activation: dict[str, Any]) -> Any:
    try:
        return program.evaluate(activation)
    except CELEvalError as exc:
        return exc
    except Exception as exc:  # cel-python raises plain Python errors for some mismatches
        return CELEvalError(f"{type(exc).__name__}: {exc}")


def _message(rule: Rule, activation: dict[str, Any]) -> str:
    if rule.message_program is not None:
        got = _evaluate(rule.message_program, activation)
        if isinstance(got, str) and got.strip() and "\n" not in got:
            return str(got)
    return rule.message or f"failed rule: {rule.rule}"


def _check_node(rule: Rule, self_value: Callable[[], Any], path: str, name: str, report: CelReport) -> None:
    if not rule.runs_on_create:
        report.skipped_transition += 1
        return
    where = (path or "(root)") + (rule.field_path or "")
    report.evaluations += 1
    report.rules.add((rule.crd, rule.where, rule.rule))
    if rule.program is None:
        report.problems.append(f"{name}: {where}: rule {rule.rule!r} cannot be evaluated: {rule.unsupported}")
        return
    activation: dict[str, Any] = {"self": self_value()}
    if rule.transition:
        activation["oldSelf"] = OPTIONAL_NONE
    result = _evaluate(rule.program, activation)
    if isinstance(result, ct.BoolType | bool):
        if not result:
            report.problems.append(f"{name}: {where}: {_message(rule, activation)}")
        return
    if isinstance(result, CELEvalError):
        report.problems.append(f"{name}: {where}: rule {rule.rule!r} failed to evaluate: {_error_text(result)}")
        return
    report.problems.append(f"{name}: {where}: rule {rule.rule!r} gave {result!r}, not a bool")


@dataclass
class _Walk:
    """One object's walk: every schema node that has rules is checked on every instance of it in the object."""

    name: str
    by_node: NodeRules
    report: CelReport

    def walk(self, value: Any, schema: Mapping[str, Any], path: str = "") -> None:
        if value is None:
            return
        node_rules = self.by_node.get(id(schema), ())
        if node_rules:
            self_value = cache(lambda: to_cel(value, schema))  # converted once per node, only if a rule runs
            for rule in node_rules:
                _check_node(rule, self_value, path, self.name, self.report)
        if isinstance(value, Mapping):
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    self.walk(item, props[key], f"{path}.{key}" if path else key)
                elif isinstance(extra, Mapping):
                    self.walk(item, extra, f"{path}[{key}]")
        elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
            for i, item in enumerate(value):
                self.walk(item, schema["items"], f"{path}[{i}]")


def _root_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as root-level rules see it: of metadata only name and generateName."""
    meta = obj.get("metadata") or {}
    out = {k: v for k, v in obj.items() if k != "metadata"}
    out["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
    return out


def _name(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')}"


def check(obj: Mapping[str, Any]) -> CelReport:
    """Evaluate every create-time rule of ``obj``'s CRD version (a vendored CRD) on ``obj``, after defaulting."""
    done = _check_json(json.dumps(obj, sort_keys=True))
    return CelReport(list(done.problems), done.evaluations, set(done.rules), done.skipped_transition)


@lru_cache(maxsize=512)
def _check_json(text: str) -> CelReport:
    """``check`` of one object, remembered: the result is a function of the object alone, and the renders of the
    stacks and presets repeat the same node classes and pools."""
    obj = json.loads(text)
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    report = CelReport()
    # EKS's own CRDs (written out in tools/schemas.py) carry no CEL rules, but their defaults still apply
    schema = crd_schemas().get(key) or EKS_BUILTIN_CRDS.get(key)
    if schema is None:
        report.problems.append(f"{_name(obj)}: no CRD schema for {key[0]} {key[1]} under schemas/crds")
        return report
    _Walk(_name(obj), _index().by_node, report).walk(apply_defaults(_root_view(obj), schema), schema)
    return report


def check_with_schema(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> CelReport:
    """``check`` against a given ``openAPIV3Schema`` (not cached; for schemas other than the vendored CRDs)."""
    by_node: NodeRules = {}
    _index_schema(f"{obj.get('apiVersion')} {obj.get('kind')}", schema, by_node)
    report = CelReport()
    _Walk(_name(obj), by_node, report).walk(apply_defaults(_root_view(obj), schema), schema)
    return report


def check_all(objs: Sequence[Mapping[str, Any]]) -> CelReport:
    report = CelReport()
    for obj in objs:
        report.add(check(obj))
    return report


def cel_problems(obj: Mapping[str, Any]) -> list[str]:
    """One line per CEL rule ``obj`` fails (or that cannot be evaluated); empty means the API server accepts it."""
    return check(obj).problems
