"""What the replica hands to vLLM and Ray: pure functions of ``ServeSettings``, no Ray or vLLM import.

vLLM is configured through its own command-line parser (``compat.parse_engine_args``), so the settings become an
argv list here.  Command-line flags are the most stable surface vLLM has: they are the same in the Neuron image's
vLLM 0.16 and in the CPU build the e2e tier runs, while the Python-level engine-argument classes move.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .settings import NEURON_CORES_RAY_RESOURCE, ServeSettings

# Environment of the vLLM Neuron plugin (vllm-neuron 0.5.x on NxD Inference, as in the Neuron vLLM 0.16 image):
# NEURON_COMPILED_ARTIFACTS is where the model loader looks for a compiled model first and, when loading from it
# fails, compiles and saves the result. The plugin always runs on NxD Inference and reads no framework variable.
NEURON_COMPILED_ARTIFACTS_ENV = "NEURON_COMPILED_ARTIFACTS"


def neuron_default_flags(settings: ServeSettings) -> dict[str, Any]:
    """Engine flags every Neuron replica starts with; extra_engine_args can override any of them (later flags win).

    vLLM turns prefix caching on by default; without it the Neuron plugin serves from a contiguous KV cache (it sets
    the block size to max_model_len itself), the layout the inf2/trn1 presets are sized for, and the Neuron SDK's vLLM
    guide asks for exactly max_num_seqs KV blocks with it (the plugin adds vLLM's null block on top). Its scheduler
    turns chunked prefill off on its own; saying so here keeps the logged engine config truthful. Neuron-specific
    settings go through ``additional_config={"override_neuron_config": {...}}`` (vLLM 0.16 has no
    ``--override-neuron-config``).
    """
    return {
        "enable_prefix_caching": False,
        "enable_chunked_prefill": False,
        "num_gpu_blocks_override": settings.max_num_seqs,
    }


# Overload: a replica admits max_ongoing_requests (handed to vLLM, which runs max_num_seqs of them and queues the
# rest) plus max_queued_requests waiting in the replica for a slot; Serve refuses the next one at once with this
# status and a Retry-After header, instead of queueing without bound. 429 is what OpenAI clients retry with backoff.
# One batch of queue: a request admitted last waits about two full generations before its first token, which keeps
# the admitted requests' TTFT bounded (docs/failure-modes.md, "Overload").
BACKPRESSURE_STATUS = 429
BACKPRESSURE_RETRY_AFTER_S = 2

# CPUs a replica's Ray actor reserves. On Neuron the engine's work is on the NeuronCores; one CPU covers the
# API process. On CPU the engine core runs in its own process beside the actor, outside Ray's accounting.
REPLICA_NUM_CPUS = 1


class LaunchError(ValueError):
    """An engine argument cannot be expressed as a vLLM flag; the message is one line naming it."""


def flag_args(name: str, value: Any) -> list[str]:
    """One engine argument as vLLM command-line tokens (``max_num_seqs=4`` -> ``--max-num-seqs 4``)."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise LaunchError(f"serve args: extra_engine_args key {name!r} is not allowed; allowed: a vLLM flag name")
    flag = "--" + name.replace("_", "-")
    if value is None:
        return []
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + flag[2:]]
    if isinstance(value, Mapping):
        return [flag, json.dumps(dict(value), sort_keys=True)]
    if isinstance(value, list | tuple):
        if not value:
            return []
        return [flag, *(str(v) for v in value)]
    if isinstance(value, str | int | float):
        return [flag, str(value)]
    raise LaunchError(
        f"serve args: extra_engine_args.{name}={value!r} is not allowed; allowed: str, int, float, bool, list, mapping"
    )


def engine_argv(settings: ServeSettings) -> list[str]:
    """The vLLM ``serve`` command line (without the program name) that the replica parses with vLLM's parser."""
    argv = [
        "--model",
        settings.model,
        "--served-model-name",
        settings.served_model_name,
        "--tensor-parallel-size",
        str(settings.tensor_parallel_size),
        "--max-model-len",
        str(settings.max_model_len),
        "--max-num-seqs",
        str(settings.max_num_seqs),
        "--dtype",
        settings.dtype,
    ]
    if settings.block_size is not None:
        argv += ["--block-size", str(settings.block_size)]
    if settings.enforce_eager:
        argv.append("--enforce-eager")
    if settings.device == "neuron":
        for name, value in neuron_default_flags(settings).items():
            argv += flag_args(name, value)
    for name, value in settings.extra_engine_args.items():
        argv += flag_args(name, value)
    return argv


def engine_env(settings: ServeSettings, artifacts_path: str | None) -> dict[str, str]:
    """Environment variables the replica sets before the engine starts (none are needed on CPU)."""
    if settings.device != "neuron" or artifacts_path is None:
        return {}
    return {NEURON_COMPILED_ARTIFACTS_ENV: artifacts_path}


def deployment_options(settings: ServeSettings) -> dict[str, Any]:
    """Ray Serve options of the deployment the builder creates; serveConfigV2 may override any of them.

    A Neuron replica asks for ``tensor_parallel_size`` NeuronCores through Ray's ``neuron_cores`` resource, which is
    also what makes Ray set ``NEURON_RT_VISIBLE_CORES`` for the replica's process.
    """
    actor: dict[str, Any] = {"num_cpus": REPLICA_NUM_CPUS}
    if settings.device == "neuron":
        actor["resources"] = {NEURON_CORES_RAY_RESOURCE: settings.tensor_parallel_size}
    return {
        "ray_actor_options": actor,
        # vLLM's engine handles its own batching and queueing; Serve must not cap it below max_num_seqs.
        "max_ongoing_requests": max(settings.max_num_seqs * 2, 8),
        **admission_options(settings),
        # A cold Neuron start compiles or loads the model; Serve's default health-check timeout is too short for
        # the first check to answer while the engine is busy starting.
        "health_check_period_s": 10,
        "health_check_timeout_s": 60,
    }


def admission_options(settings: ServeSettings) -> dict[str, Any]:
    """Serve's queue bound and how it refuses beyond it; serveConfigV2 states the same values deliberately."""
    return {
        "max_queued_requests": settings.max_num_seqs,
        "backpressure_config": {"status_code": BACKPRESSURE_STATUS, "retry_after_s": BACKPRESSURE_RETRY_AFTER_S},
    }
