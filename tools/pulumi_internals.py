"""Everything of the render harness that leans on Pulumi's private internals, in one place.

The offline render runs the program under ``pulumi.runtime.set_mocks`` (public) with a monitor that records every
registration; that needs parts of the SDK that are not public API and may change in any release:

- ``pulumi.runtime.mocks.MockMonitor``: subclassed; its ``RegisterResource(request)``, ``make_urn(parent, type_,
  name)``, ``resources`` map and ``ResourceRegistration(urn, id, state)`` tuple;
- the gRPC ``RegisterResourceRequest`` fields read from each registration;
- the wire format's signature keys (``pulumi.runtime.rpc``): secrets, resource references and unknowns;
- ``pulumi.runtime.sync_await._sync_await``, ``pulumi.runtime.stack.run_pulumi_func`` and
  ``pulumi.runtime.settings`` (``ROOT``, ``SETTINGS.outputs``, ``get_root_resource``) to run a program and read
  the stack's outputs outside the CLI.

``problems()`` checks each of them against the installed SDK and says what changed ("Pulumi x.y changed ..."):
``tests/test_pulumi_internals.py`` runs it, so an upgrade that moves one of them fails there, with that message,
and not as an obscure error in every test of the render.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any, TypeVar

from tools.render_model import SECRET, UNKNOWN

T = TypeVar("T")

# Signature keys of Pulumi's wire format (pulumi.runtime.rpc: _special_sig_key, _special_secret_sig,
# _special_resource_sig, UNKNOWN); kept as literals so loading this module needs no private import.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
UNKNOWN_VALUE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

# The RegisterResourceRequest fields RecordingMonitor reads.
REQUEST_FIELDS = (
    "type",
    "name",
    "custom",
    "remote",
    "parent",
    "provider",
    "dependencies",
    "propertyDependencies",
    "object",
    "deleteBeforeReplace",
    "protect",
    "retainOnDelete",
    "customTimeouts",
)


def clean(value: Any) -> Any:
    """Wire-format values to plain JSON: secrets masked, resource references shown as their URN."""
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG:
            # A secret map (a Secret's data) keeps its keys, so schemas still see its shape; every value is masked.
            inner = value.get("value")
            return {k: SECRET for k in inner} if isinstance(inner, dict) else SECRET
        if sig == RESOURCE_SIG:
            return value.get("urn")
        if sig is not None and "value" in value:
            return clean(value["value"])
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if value == UNKNOWN_VALUE:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def resource_reference(urn: str, rid: str) -> dict[str, Any]:
    """A mock output that the SDK turns into a reference to the resource registered as ``urn``."""
    return {SIG_KEY: RESOURCE_SIG, "urn": urn, "id": rid}


def make_monitor(mocks: Any) -> Any:
    """A ``MockMonitor`` that also records every registration (``records``), with the URN being registered in
    ``registering`` (a mock can name its remote component's children after it) and ``add_resource`` for them."""
    from google.protobuf import json_format
    from pulumi.runtime.mocks import MockMonitor

    class RecordingMonitor(MockMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(mocks)
            self.records: list[dict[str, Any]] = []
            # Per thread: the SDK sends registrations from a thread pool, and a mock reads this while its own
            # registration is in flight; one shared attribute let another thread's URN through (a child of the EKS
            # component parented to whatever registered meanwhile: a render that differed from run to run).
            self._registering = threading.local()

        @property
        def registering(self) -> str:
            return str(getattr(self._registering, "urn", ""))

        def add_resource(self, urn: str, rid: str, state: dict[str, Any], *, parent: str) -> None:
            """A child a remote component creates inside its provider: recorded so the graph has no dangling URN."""
            self.resources[urn] = MockMonitor.ResourceRegistration(urn, rid, state)
            typ = urn.split("::")[2].rsplit("$", maxsplit=1)[-1]
            self.records.append(
                {
                    "urn": urn,
                    "type": typ,
                    "name": urn.rsplit("::", maxsplit=1)[-1],
                    "custom": True,
                    "remote": False,
                    "parent": parent,
                    "provider": None,
                    "dependencies": [],
                    "propertyDependencies": {},
                    "inputs": clean(state),
                    "deleteBeforeReplace": False,
                    "protect": False,
                    "retainOnDelete": False,
                    "customTimeouts": {},
                    "createdBy": "remote component",
                }
            )

        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
            self._registering.urn = self.make_urn(request.parent, request.type, request.name)
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
            if request.type != "pulumi:pulumi:Stack":
                self.records.append(
                    {
                        "urn": response.urn,
                        "type": request.type,
                        "name": request.name,
                        "custom": bool(request.custom),
                        "remote": bool(request.remote),
                        "parent": request.parent or None,
                        "provider": request.provider or None,
                        "dependencies": sorted(request.dependencies),
                        "propertyDependencies": {k: sorted(v.urns) for k, v in request.propertyDependencies.items()},
                        "inputs": clean(json_format.MessageToDict(request.object)),
                        "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                        "protect": bool(request.protect) if request.HasField("protect") else False,
                        "retainOnDelete": bool(request.retainOnDelete) if request.HasField("retainOnDelete") else False,
                        # e.g. {"delete": "30m"}: only the operations given a timeout
                        "customTimeouts": {
                            op: getattr(request.customTimeouts, op)
                            for op in ("create", "update", "delete")
                            if getattr(request.customTimeouts, op)
                        },
                    }
                )
            return response

    return RecordingMonitor()


def sync_await(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` on the SDK's event loop, as the SDK itself does outside a running loop."""
    from pulumi.runtime.sync_await import _sync_await

    return _sync_await(awaitable)


def reset_runtime() -> None:
    """Forget the previous program's stack resource and outputs, so another render can run in this process."""
    from pulumi.runtime import settings

    settings.ROOT.set(None)
    settings.SETTINGS.outputs.clear()


def run_program(program: Callable[[], None]) -> None:
    """Run ``program`` as the Pulumi language host does: inside a stack resource, waiting for every output."""
    from pulumi.runtime.stack import run_pulumi_func

    sync_await(run_pulumi_func(program))


def stack_outputs() -> dict[str, Any]:
    """The stack's exports (``pulumi.export``) of the program that just ran: name -> value or Output."""
    from pulumi.runtime import settings

    root: Any = settings.get_root_resource()
    return dict(root.outputs) if root is not None else {}


def resolve_output(value: Any) -> tuple[bool, Any]:
    """(is it secret, its resolved value) of an export: ``Output.is_secret()`` and ``Output.future()`` are not part
    of the documented API."""
    from pulumi import Output

    output = Output.from_input(value)
    return sync_await(output.is_secret()), sync_await(output.future())


def _signature_problem(what: str, func: Any, params: tuple[str, ...]) -> tuple[str, str] | None:
    if func is None:
        return what, "it is gone"
    try:
        names = tuple(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return what, "it has no inspectable signature"
    missing = [p for p in params if p not in names]
    return (what, f"it lost parameter(s) {', '.join(missing)}") if missing else None


def problems() -> list[str]:
    """What the installed Pulumi SDK no longer has of the internals above, one line each ("Pulumi x.y changed
    <what>: <how>"); empty when everything is in place."""
    from pulumi import Output, runtime
    from pulumi.runtime import mocks, rpc, settings, stack
    from pulumi.runtime import sync_await as sync_await_module
    from pulumi.runtime.proto import resource_pb2

    found: list[tuple[str, str] | None] = []
    monitor = getattr(mocks, "MockMonitor", None)
    if monitor is None:
        found.append(("pulumi.runtime.mocks.MockMonitor", "it is gone"))
    else:
        found.append(_signature_problem("MockMonitor.__init__", monitor.__init__, ("mocks",)))
        found.append(_signature_problem("MockMonitor.RegisterResource", monitor.RegisterResource, ("request",)))
        found.append(
            _signature_problem("MockMonitor.make_urn", getattr(monitor, "make_urn", None), ("parent", "type_", "name"))
        )
        if getattr(getattr(monitor, "ResourceRegistration", None), "_fields", None) != ("urn", "id", "state"):
            found.append(("MockMonitor.ResourceRegistration", "it is no longer the tuple (urn, id, state)"))
        if "self.resources" not in inspect.getsource(monitor.__init__):
            found.append(("MockMonitor.resources", "the monitor no longer keeps its registrations there"))
    found.append(_signature_problem("pulumi.runtime.set_mocks", runtime.set_mocks, ("mocks", "monitor")))
    fields = set(resource_pb2.RegisterResourceRequest.DESCRIPTOR.fields_by_name)
    gone = [f for f in REQUEST_FIELDS if f not in fields]
    if gone:
        found.append(("RegisterResourceRequest", f"it lost field(s) {', '.join(gone)}"))
    wire = {
        "_special_sig_key": SIG_KEY,
        "_special_secret_sig": SECRET_SIG,
        "_special_resource_sig": RESOURCE_SIG,
        "UNKNOWN": UNKNOWN_VALUE,
    }
    for name, value in wire.items():
        if getattr(rpc, name, None) != value:
            found.append((f"pulumi.runtime.rpc.{name}", f"it is no longer {value!r}"))
    found.append(
        _signature_problem(
            "pulumi.runtime.sync_await._sync_await", getattr(sync_await_module, "_sync_await", None), ("awaitable",)
        )
    )
    found.append(
        _signature_problem("pulumi.runtime.stack.run_pulumi_func", getattr(stack, "run_pulumi_func", None), ("func",))
    )
    if not hasattr(getattr(settings, "ROOT", None), "set"):
        found.append(("pulumi.runtime.settings.ROOT", "it is no longer a context variable"))
    if not callable(getattr(getattr(getattr(settings, "SETTINGS", None), "outputs", None), "clear", None)):
        found.append(("pulumi.runtime.settings.SETTINGS.outputs", "it is no longer a collection the harness can clear"))
    root = getattr(settings, "get_root_resource", None)
    found.append(_signature_problem("pulumi.runtime.settings.get_root_resource", root, ()))
    for method in ("from_input", "is_secret", "future"):
        found.append(_signature_problem(f"pulumi.Output.{method}", getattr(Output, method, None), ()))
    return [f"Pulumi {version('pulumi')} changed {what}: {how}" for what, how in filter(None, found)]
