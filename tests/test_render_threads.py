"""The recording monitor's ``registering`` is per thread: the SDK registers resources from a thread pool."""

from __future__ import annotations

import threading
from typing import Any

import pulumi
from pulumi.runtime.proto import resource_pb2

from tools import pulumi_internals


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.b_registering = threading.Event()
        self.seen: dict[str, str] = {}
        self.monitor: Any = None

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        if args.name == "a":  # A's mock reads `registering` only after B has started registering in another thread
            assert self.b_registering.wait(10)
        else:
            self.b_registering.set()
        self.seen[args.name] = self.monitor.registering
        return f"{args.name}-id", {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


def test_a_mock_sees_the_urn_its_own_thread_is_registering() -> None:
    mocks = _Mocks()
    monitor = pulumi_internals.make_monitor(mocks)
    mocks.monitor = monitor
    pulumi.runtime.set_mocks(mocks, project="p", stack="s", preview=False, monitor=monitor)

    def register(name: str) -> None:
        monitor.RegisterResource(resource_pb2.RegisterResourceRequest(type="test:index:Thing", name=name, custom=True))

    a = threading.Thread(target=register, args=("a",))
    try:
        a.start()
        register("b")
        a.join(10)
    finally:
        pulumi_internals.reset_runtime()
    assert mocks.seen["a"].endswith("::a"), mocks.seen
    assert mocks.seen["b"].endswith("::b"), mocks.seen
