"""The Ray Serve application: one deployment whose replicas each run a vLLM engine and serve vLLM's own OpenAI app.

``build_app(args)`` is the application builder named in serveConfigV2 (``settings.APP_IMPORT_PATH``); ``args`` are
``ServeSettings.to_args()``.  A replica starts in ``__serve_build_asgi_app__`` (Ray Serve's late-bound ingress, run
after the constructor): restore compiled artifacts, start the engine, build vLLM's FastAPI app on it, and serve it
behind ``gate.Gate``: the OpenAI routes users need (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``)
with the endpoint's API key, ``/health`` and ``/metrics`` without, nothing else.

Only ``build_app`` imports Ray; ``VLLMServer`` takes its vLLM runtime and S3 client factories as parameters so the
whole start-up sequence is exercised in the default test tier with fakes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from . import cache, gate, launch
from .compat import VLLMOpenAI
from .settings import API_KEY_ENV, DEPLOYMENT_NAME, ServeSettings

log = logging.getLogger(__name__)


class VLLMServer:
    """A replica: engine + vLLM's OpenAI app.  Wrapped by ``serve.ingress()`` and ``serve.deployment`` in build_app."""

    def __init__(
        self,
        args: Mapping[str, Any],
        runtime_factory: Callable[[], Any] = VLLMOpenAI,
        s3_factory: Callable[[], cache.S3Client] = cache.boto3_client,
        versions: Callable[[], Mapping[str, str]] = cache.installed_versions,
    ) -> None:
        self.settings = ServeSettings.from_args(args)
        # Before anything costly: a replica that must ask for a key and has none fails here, in the constructor, and
        # Serve reports the deploy failed with this message instead of serving an open endpoint.
        self.api_key = api_key(self.settings, os.environ)
        self.runtime = runtime_factory()
        self._s3_factory = s3_factory
        self._versions = versions
        self.artifacts: cache.ArtifactPlan | None = None
        self.restore_result: str | None = None
        self.save_task: asyncio.Task[bool] | None = None

    def _prepare_artifacts(self) -> tuple[cache.S3Client | None, str | None]:
        """Restore compiled artifacts (Neuron with a cache URI) and return the S3 client and the artifacts path."""
        self.artifacts = cache.plan(self.settings, self._versions())
        if self.artifacts is None:
            return None, None
        path = self.artifacts.local_dir
        if self.artifacts.remote is None:
            return None, str(path)
        try:
            client = self._s3_factory()
        except Exception as exc:  # the cache is an optimisation: without S3 the engine still compiles and serves
            log.warning("artifact cache: no S3 client, cache off for this replica: %s", exc)
            self.restore_result = cache.FAILED
            return None, str(path)
        self.restore_result = cache.restore(client, self.artifacts.remote, self.artifacts.key, path)
        return client, str(path)

    async def __serve_build_asgi_app__(self) -> Any:
        client, artifacts_path = await asyncio.to_thread(self._prepare_artifacts)
        env = launch.engine_env(self.settings, artifacts_path)
        os.environ.update(env)
        log.info("starting vLLM (%s) with %s", self.settings.device, env)
        engine_args = self.runtime.parse_args(launch.engine_argv(self.settings))
        await self.runtime.start(engine_args)
        app = await self.runtime.build_asgi_app(engine_args)
        plan = self.artifacts
        if (
            client is not None
            and plan is not None
            and plan.remote is not None
            and self.restore_result != cache.RESTORED
        ):
            # The engine compiled (or found a local copy S3 lacks): upload in the background, serving meanwhile.
            remote = plan.remote
            self.save_task = asyncio.create_task(
                asyncio.to_thread(cache.save_if_absent, client, remote, plan.key, plan.local_dir)
            )
        return gate.Gate(app, self.api_key, alive=self.engine_alive)

    def engine_alive(self) -> bool:
        """False once the engine has died (vLLM's engine client reports ``errored``; 0.16 and 0.32 alike)."""
        client = getattr(self.runtime, "engine_client", None)
        return client is None or not bool(getattr(client, "errored", False))

    async def check_health(self) -> None:
        """Ray Serve's replica health check: the engine must be alive (a dead engine gets the replica replaced)."""
        await self.runtime.check_health()

    def __del__(self) -> None:
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.shutdown()


def api_key(settings: ServeSettings, environ: Mapping[str, str]) -> str | None:
    """The key the gate asks for: ``$LLM_API_KEY`` when the settings require one (it must be set), else None."""
    if not settings.require_api_key:
        return None
    key = environ.get(API_KEY_ENV, "")
    if not key:
        raise gate.GateError(
            f"serve args: require_api_key is true but {API_KEY_ENV} is not set in the replica's environment "
            "(the workers read it from the API key Secret)"
        )
    return key


def validated(args: Mapping[str, Any]) -> ServeSettings:
    """Settings whose every part the replica will use is well-formed: bad args fail the deploy with one line,
    in the controller, instead of failing every replica at start."""
    settings = ServeSettings.from_args(args)
    launch.engine_argv(settings)  # extra_engine_args expressible as vLLM flags
    if settings.artifact_cache_uri:
        cache.parse_uri(settings.artifact_cache_uri)
    return settings


def build_app(args: dict[str, Any]) -> Any:
    """Ray Serve application builder (``llm_serve.app:build_app`` in serveConfigV2)."""
    from ray import serve

    settings = validated(args)
    ingress = serve.ingress()(VLLMServer)
    deployment = serve.deployment(name=DEPLOYMENT_NAME, **launch.deployment_options(settings))(ingress)
    return deployment.bind(settings.to_args())
