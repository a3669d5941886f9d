"""Serving presets: which accelerator, how the model is split across NeuronCores, and the engine's shape.

A preset is named after the instance type its Ray workers run on.  One worker pod takes a whole node (all its Neuron
devices) and hosts ``replicas_per_worker`` Serve replicas of ``tensor_parallel_size`` NeuronCores each; Ray's
``neuron_cores`` resource divides the node's cores between them.  ``check`` validates a preset against the instance
facts and the model's architecture and returns one-line reasons, so a preset that cannot load the model never
reaches the cluster.

KV cache: with prefix caching and chunked prefill off (``serve.launch``), the Neuron plugin (vllm-neuron 0.5.x) keeps
a contiguous KV cache, one block of ``max_model_len`` tokens per sequence: it sets vLLM's block size to
``max_model_len`` itself, and the replica passes ``--num-gpu-blocks-override max_num_seqs`` as the Neuron SDK's vLLM
guide asks for that layout.  So a preset has no block size (vLLM 0.16 would reject one that large anyway: it accepts
1-256), and ``check`` sizes the cache as ``max_num_seqs x max_model_len`` tokens, which is what the engine allocates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from workloads.instances import InstanceFacts, facts
from workloads.topology import INF2_POOL, TRN1_POOL

GIB = 2**30
# Share of device memory kept free for the runtime, compiled graphs and scratch buffers.
DEVICE_MEMORY_RESERVE = 0.10
CORES_PER_DEVICE = 2  # Inferentia2 and Trainium1 alike


@dataclass(frozen=True)
class ModelFacts:
    """What decides whether a model fits a tensor-parallel layout (from the model's config.json)."""

    model_id: str
    parameters: float
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2  # bf16

    @property
    def weights_gib(self) -> float:
        return self.parameters * self.dtype_bytes / GIB

    def kv_cache_gib(self, tokens: int) -> float:
        """KV cache of ``tokens`` tokens: K and V, every layer, every KV head."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes * tokens / GIB


def _llama3_8b(model_id: str) -> ModelFacts:
    # config.json of Meta-Llama-3-8B(-Instruct): 32 layers, 32 attention heads, 8 KV heads, hidden 4096 (head 128).
    return ModelFacts(model_id, parameters=8.03e9, layers=32, attention_heads=32, kv_heads=8, head_dim=128)


MODELS: Final = MappingProxyType(
    {
        m.model_id: m
        for m in (
            _llama3_8b("NousResearch/Meta-Llama-3-8B-Instruct"),
            _llama3_8b("meta-llama/Meta-Llama-3-8B-Instruct"),
            _llama3_8b("meta-llama/Llama-3.1-8B-Instruct"),
        )
    }
)


@dataclass(frozen=True)
class Preset:
    name: str
    instance_type: str
    tensor_parallel_size: int
    replicas_per_worker: int
    max_model_len: int
    max_num_seqs: int
    min_replicas: int
    max_replicas: int
    target_ongoing_requests: int

    @property
    def instance(self) -> InstanceFacts:
        return facts(self.instance_type)

    @property
    def pool(self) -> str:
        return {"inf2": INF2_POOL, "trn1": TRN1_POOL}[self.instance.family]

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens of KV cache a replica holds: one contiguous block of max_model_len per sequence (module doc)."""
        return self.max_num_seqs * self.max_model_len

    @property
    def worker_neuron_cores(self) -> int:
        return self.tensor_parallel_size * self.replicas_per_worker

    @property
    def worker_neuron_devices(self) -> int:
        return math.ceil(self.worker_neuron_cores / CORES_PER_DEVICE)

    @property
    def min_workers(self) -> int:
        return math.ceil(self.min_replicas / self.replicas_per_worker)

    @property
    def max_workers(self) -> int:
        return math.ceil(self.max_replicas / self.replicas_per_worker)

    @property
    def worker_cpu(self) -> int:
        """CPUs a worker requests: the node's vCPUs less room for the kubelet and the node's DaemonSets."""
        return max(1, math.floor(self.instance.vcpu * 0.8))

    @property
    def worker_memory_gib(self) -> int:
        """Host memory a worker requests: weights are loaded (and compiled) in host memory first."""
        return max(1, math.floor(self.instance.memory_gib * 0.75))

    @property
    def shm_gib(self) -> int:
        """/dev/shm for Ray's object store: at most 30% of the worker's memory, at most 16 GiB."""
        return max(1, min(16, math.floor(self.worker_memory_gib * 0.3)))


def _preset(instance: str, tp: int, per_worker: int, seqs: int, max_replicas: int) -> Preset:
    return Preset(
        name=instance,
        instance_type=instance,
        tensor_parallel_size=tp,
        replicas_per_worker=per_worker,
        max_model_len=8192,
        max_num_seqs=seqs,
        min_replicas=1,
        max_replicas=max_replicas,
        # Scale out before a replica's batch is full: three quarters of max_num_seqs in flight per replica.
        target_ongoing_requests=max(1, seqs * 3 // 4),
    )


PRESETS: Final = MappingProxyType(
    {
        p.name: p
        for p in (
            # 1 device / 2 cores: one TP-2 replica per node; scale out to a second node.
            _preset("inf2.8xlarge", tp=2, per_worker=1, seqs=8, max_replicas=2),
            # 6 devices / 12 cores: three TP-4 replicas per node (TP 8 strands 4 cores; 12 does not divide 32 heads).
            _preset("inf2.24xlarge", tp=4, per_worker=3, seqs=16, max_replicas=3),
            # 12 devices / 24 cores: three TP-8 replicas per node.
            _preset("inf2.48xlarge", tp=8, per_worker=3, seqs=32, max_replicas=3),
            # 1 device / 2 cores, like inf2.8xlarge with a quarter of the host memory.
            _preset("trn1.2xlarge", tp=2, per_worker=1, seqs=8, max_replicas=2),
            # 16 devices / 32 cores: four TP-8 replicas per node.
            _preset("trn1.32xlarge", tp=8, per_worker=4, seqs=32, max_replicas=4),
        )
    }
)


def check(preset: Preset, model: ModelFacts) -> list[str]:
    """Why ``preset`` cannot serve ``model`` on its instance type, one line per reason; empty if it can."""
    inst = preset.instance
    tp = preset.tensor_parallel_size
    why: list[str] = []
    if tp > inst.neuron_cores:
        why.append(f"tensor parallel degree {tp} exceeds the {inst.neuron_cores} NeuronCores of {inst.name}")
    if preset.worker_neuron_cores > inst.neuron_cores:
        why.append(
            f"{preset.replicas_per_worker} replicas x TP {tp} need {preset.worker_neuron_cores} NeuronCores; "
            f"{inst.name} has {inst.neuron_cores}"
        )
    if model.attention_heads % tp:
        why.append(f"tensor parallel degree {tp} does not divide the {model.attention_heads} attention heads")
    if model.kv_heads % tp and tp % model.kv_heads:
        why.append(f"tensor parallel degree {tp} and the {model.kv_heads} KV heads do not divide one another")
    available = tp * inst.memory_per_core_gib * (1 - DEVICE_MEMORY_RESERVE)
    needed = model.weights_gib + model.kv_cache_gib(preset.kv_cache_tokens)
    if needed > available:
        why.append(
            f"weights + KV cache need {needed:.1f} GiB per replica; {tp} NeuronCores of {inst.name} offer "
            f"{available:.1f} GiB after a {DEVICE_MEMORY_RESERVE:.0%} reserve"
        )
    if not 1 <= preset.min_replicas <= preset.max_replicas:
        why.append(f"replicas {preset.min_replicas}..{preset.max_replicas} are not 1 <= min <= max")
    return why
