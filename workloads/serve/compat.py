"""ALL vLLM-version-specific glue of the serve application, in one place.

The replica serves vLLM's own OpenAI server (its FastAPI app, routers, protocol and metrics); this module finds the
four entry points that build it, whose module paths and signatures differ between the vLLM the Neuron image pins
(0.16: ``vllm.entrypoints.openai.api_server`` / ``.cli_args``) and the CPU build the e2e tier installs (0.32:
``vllm.entrypoints.launchers...``, with the old paths kept as deprecated re-exports):

- the CLI parser (``make_arg_parser`` on a ``FlexibleArgumentParser``) and ``validate_parsed_serve_args``;
- ``build_async_engine_client(args)``: async context manager yielding the engine client;
- ``build_app(args[, supported_tasks[, model_config]])``: the FastAPI app with every vLLM route;
- ``init_app_state(engine_client, state, args[, supported_tasks])`` (older releases also took ``vllm_config``);
- ``AsyncLLM`` (its ``from_vllm_config`` takes ``stat_loggers``), ``RayPrometheusStatLogger`` and
  ``PrometheusStatLogger``: the engine records its metrics through vLLM's Ray stat logger into ``ray.util.metrics``,
  so each node's Ray metrics agent exports every replica's TTFT/ITL/latency histograms, queue and KV-cache gauges
  (labelled with the replica); the default Prometheus logger is kept beside it, so the replica's own ``/metrics``
  route still answers.  ``build_async_engine_client`` offers no way to pass stat loggers, so while it builds the
  engine, ``AsyncLLM.from_vllm_config`` is wrapped to add them (``engine_stat_loggers``).

Candidates are tried newest first; optional parameters are passed only when the function declares them.  Adding a
vLLM version means adding a candidate path here, nowhere else.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from types import ModuleType
from typing import Any

# name -> (module, attribute) candidates, newest layout first.
CANDIDATES: Mapping[str, Sequence[tuple[str, str]]] = {
    "FlexibleArgumentParser": (
        ("vllm.utils.argparse_utils", "FlexibleArgumentParser"),
        ("vllm.utils", "FlexibleArgumentParser"),
    ),
    "make_arg_parser": (
        ("vllm.entrypoints.launchers.cli_args", "make_arg_parser"),
        ("vllm.entrypoints.openai.cli_args", "make_arg_parser"),
    ),
    "validate_parsed_serve_args": (
        ("vllm.entrypoints.launchers.cli_args", "validate_parsed_serve_args"),
        ("vllm.entrypoints.openai.cli_args", "validate_parsed_serve_args"),
    ),
    "build_async_engine_client": (
        ("vllm.entrypoints.launchers.api_server.entry", "build_async_engine_client"),
        ("vllm.entrypoints.openai.api_server", "build_async_engine_client"),
    ),
    "build_app": (
        ("vllm.entrypoints.launchers.app", "build_app"),
        ("vllm.entrypoints.openai.api_server", "build_app"),
    ),
    "init_app_state": (
        ("vllm.entrypoints.launchers.api_server.app_state", "init_app_state"),
        ("vllm.entrypoints.openai.api_server", "init_app_state"),
    ),
    "AsyncLLM": (("vllm.v1.engine.async_llm", "AsyncLLM"),),
    "RayPrometheusStatLogger": (("vllm.v1.metrics.ray_wrappers", "RayPrometheusStatLogger"),),
    "PrometheusStatLogger": (("vllm.v1.metrics.loggers", "PrometheusStatLogger"),),
}
STAT_LOGGERS = ("RayPrometheusStatLogger", "PrometheusStatLogger")

Importer = Callable[[str], ModuleType]


class CompatError(ImportError):
    """No candidate of an entry point exists in the installed vLLM; the message names what was tried."""


class EngineArgsError(ValueError):
    """vLLM's own parser rejected the engine arguments; the message is one line carrying the parser's."""


def _is_missing(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``exc`` says the candidate module itself (or a package above it) does not exist.

    Anything else, such as a module the candidate imports failing (a fastapi/starlette mismatch), is a broken
    install, not another layout, and must surface as it is.
    """
    missing = exc.name or ""
    return bool(missing) and (module_name == missing or module_name.startswith(missing + "."))


def resolve(name: str, importer: Importer = importlib.import_module) -> Any:
    """The first importable candidate of entry point ``name``."""
    tried: list[str] = []
    for module_name, attr in CANDIDATES[name]:
        tried.append(f"{module_name}.{attr}")
        try:
            module = importer(module_name)
        except ModuleNotFoundError as exc:
            if not _is_missing(exc, module_name):
                raise
            continue
        if hasattr(module, attr):
            return getattr(module, attr)
    raise CompatError(f"vLLM entry point {name} not found; tried {', '.join(tried)}")


def call_with_accepted(fn: Callable[..., Any], *args: Any, **optional: Any) -> Any:
    """Call ``fn(*args, **k)`` with only those optional keyword arguments that ``fn`` declares."""
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    passed = {k: v for k, v in optional.items() if accepts_any or k in params}
    return fn(*args, **passed)


@contextmanager
def engine_stat_loggers(engine_class: Any, loggers: Sequence[Any]) -> Iterator[None]:
    """While the block runs, ``engine_class.from_vllm_config`` builds engines with ``loggers`` as stat loggers."""
    original = engine_class.__dict__["from_vllm_config"]
    bound = engine_class.from_vllm_config

    def with_loggers(cls: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["stat_loggers"] = [*(kwargs.get("stat_loggers") or []), *loggers]
        return bound(*args, **kwargs)

    engine_class.from_vllm_config = classmethod(with_loggers)
    try:
        yield
    finally:
        engine_class.from_vllm_config = original


class VLLMOpenAI:
    """vLLM's OpenAI server, assembled from whatever layout the installed vLLM has."""

    def __init__(self, importer: Importer = importlib.import_module, *, ray_metrics: bool = True) -> None:
        self._importer = importer
        self._stack = AsyncExitStack()
        self._ray_metrics = ray_metrics
        self.engine_client: Any = None

    def _get(self, name: str) -> Any:
        return resolve(name, self._importer)

    def parse_args(self, argv: Sequence[str]) -> Any:
        """argv -> the argparse Namespace of ``vllm serve``, validated by vLLM itself.

        argparse reports a bad flag on stderr and exits; here that becomes an ``EngineArgsError`` carrying the
        parser's message, so it reaches the Serve status (a ``SystemExit`` would only kill the replica silently).
        """
        parser = self._get("make_arg_parser")(self._get("FlexibleArgumentParser")())
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = parser.parse_args(list(argv))
        except SystemExit as exit_:
            lines = [line.strip() for line in stderr.getvalue().splitlines() if line.strip()]
            reason = next((line for line in reversed(lines) if "error:" in line), lines[-1] if lines else "")
            raise EngineArgsError(
                f"vLLM rejected the engine arguments (exit {exit_.code}): {reason or 'no message'}"
            ) from None
        finally:
            sys.stderr.write(stderr.getvalue())  # what the parser said is still logged, failure or not
        self._get("validate_parsed_serve_args")(args)
        return args

    async def start(self, args: Any) -> Any:
        """Start the engine (kept running until ``shutdown``) and return its client; with ``ray_metrics`` its
        metrics also go to Ray's metrics agent (vLLM's Ray stat logger)."""
        build = self._get("build_async_engine_client")
        if self._ray_metrics:
            loggers = [self._get(name) for name in STAT_LOGGERS]
            with engine_stat_loggers(self._get("AsyncLLM"), loggers):
                client = await self._stack.enter_async_context(build(args))
        else:
            client = await self._stack.enter_async_context(build(args))
        self.engine_client = client
        return client

    async def build_asgi_app(self, args: Any) -> Any:
        """vLLM's FastAPI app for the running engine, its state initialised as ``vllm serve`` does."""
        client = self.engine_client
        if client is None:
            raise RuntimeError("start() the engine before building the app")
        optional: dict[str, Any] = {}
        get_tasks = getattr(client, "get_supported_tasks", None)
        if get_tasks is not None:
            tasks = get_tasks()
            optional["supported_tasks"] = await tasks if inspect.isawaitable(tasks) else tasks
        app = call_with_accepted(
            self._get("build_app"), args, model_config=getattr(client, "model_config", None), **optional
        )
        init = self._get("init_app_state")
        if "vllm_config" in inspect.signature(init).parameters:  # releases before the engine client carried it
            vllm_config = client.get_vllm_config()
            await init(client, vllm_config, app.state, args)
        else:
            await call_with_accepted(init, client, app.state, args, **optional)
        return app

    async def check_health(self) -> None:
        if self.engine_client is None:
            raise RuntimeError("engine not started")
        await self.engine_client.check_health()

    def shutdown(self) -> None:
        """Stop the engine (synchronous, so it also runs from a replica's ``__del__``)."""
        client, self.engine_client = self.engine_client, None
        if client is not None and hasattr(client, "shutdown"):
            client.shutdown()
