"""The vLLM RayService (``ray.io/v1``, KubeRay 1.7) and the ConfigMap that carries the serve code, as plain dicts.

- Head: on the system node group (``topology.system_placement``), ``num-cpus: 0`` so no replica lands there, the
  dashboard on 8265; it runs the GCS, the Serve controller and the autoscaler sidecar, and must not be consolidated
  or reclaimed, nor wait for Karpenter on a cold start.  It is kept out of the serve Service
  (``excludeHeadPodFromServeSvc``): requests go straight to the workers, and the small system node carries no traffic.
- Workers: one pod per accelerator node of the preset's pool (``topology.accelerator_placement``), all of the node's
  Neuron devices, the Ray resource ``neuron_cores`` that Serve replicas ask for, ``/dev/shm`` in memory, a cache
  volume for weights and compiled artifacts, the HF token from a Secret, the worker service account (Pod Identity for
  the artifact bucket).
- Code: the ``.py`` files of ``workloads/serve`` in a ConfigMap mounted as the package ``llm_serve``; a hash of them
  in both pod templates, so a code change rolls the cluster through KubeRay's zero-downtime ``NewCluster`` upgrade.
- The endpoint asks for an API key: the workers read it from a Secret (``LLM_API_KEY``); serveConfigV2 bounds the
  queue (``max_queued_requests``, 429 beyond it); a PodDisruptionBudget keeps a worker through node drains; with a
  GCS store (prod), ``gcsFaultToleranceOptions`` lets the head restart without restarting the cluster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from workloads import topology
from workloads.presets import Preset
from workloads.serve import launch
from workloads.serve.settings import (
    API_KEY_ENV,
    APP_IMPORT_PATH,
    APP_NAME,
    DEPLOYMENT_NAME,
    NEURON_CORES_RAY_RESOURCE,
    RAY_SERVE_ENV,
    ROUTE_PREFIX,
    SERVE_PACKAGE,
    SERVE_PORT,
    ServeSettings,
)

API_VERSION: Final = "ray.io/v1"
NAMESPACE: Final = "vllm"
NAME: Final = "llm"
WORKER_GROUP: Final = "neuron"
WORKER_SERVICE_ACCOUNT: Final = "vllm-worker"
CODE_CONFIGMAP: Final = "llm-serve-code"
HF_TOKEN_SECRET: Final = "hf-token"
HF_TOKEN_KEY: Final = "HF_TOKEN"
# The serve endpoint's API key: a Secret of this name in every namespace whose pods call or serve the endpoint
# (vllm: the workers' gate; open-webui; bench), key API_KEY_SECRET_KEY.
API_KEY_SECRET: Final = "llm-api-key"
API_KEY_SECRET_KEY: Final = "api-key"
# GCS fault tolerance (prod): the Redis-compatible store's auth token, in namespace vllm.
GCS_STORE_SECRET: Final = "ray-gcs-store"
GCS_STORE_SECRET_KEY: Final = "password"
# The CA bundle the GCS verifies the store's TLS certificate with (Ray's RAY_REDIS_CA_CERT; ElastiCache presents a
# certificate of Amazon's public CA, which the Ubuntu image's bundle holds).  Without it Ray's TLS client may find
# no trust anchors at all.
REDIS_CA_CERT_ENV: Final = "RAY_REDIS_CA_CERT"
SYSTEM_CA_BUNDLE: Final = "/etc/ssl/certs/ca-certificates.crt"
# Voluntary disruption of serve workers (Karpenter drift or consolidation, `kubectl drain`): at least this many
# worker pods stay up.  KubeRay 1.7 has no disruption mechanism of its own for RayService workers and RayCluster has
# no scale subresource, so the budget is a PodDisruptionBudget with an integer minAvailable (the only form the
# disruption controller can evaluate for pods whose owner it cannot scale).
WORKERS_MIN_AVAILABLE: Final = 1
DASHBOARD_PORT: Final = 8265
GCS_PORT: Final = 6379
CLIENT_PORT: Final = 10001
METRICS_PORT: Final = 8080
# Ports Prometheus scrapes on Ray pods, by container port name: every node's metrics agent (Ray core, Ray Serve and
# vLLM's engine metrics through its Ray stat logger); on the head also the autoscaler's and the dashboard's.
METRICS_PORTS: Final[dict[str, int]] = {"metrics": METRICS_PORT, "as-metrics": 44217, "dash-metrics": 44227}
# A cold start is: Karpenter launches a node (~3 min), the ~15 GB image is pulled, 16 GB of weights are downloaded
# and, without a cached artifact, the model is compiled for Neuron.  KubeRay fails the RayService for good (delete and
# recreate to retry) once initialization exceeds this, so it is generous.
INITIALIZING_TIMEOUT: Final = "60m"
# KubeRay 1.7: a new RayCluster is brought up beside the old one and traffic switches when its Serve app is healthy.
UPGRADE_STRATEGY: Final = "NewCluster"
# Ray in the serving image (workloads/image/serve-requirements.txt; a test keeps the two equal).
RAY_VERSION: Final = "2.60.0"

APP_ROOT: Final = "/opt/app"
CODE_MOUNT: Final = f"{APP_ROOT}/{SERVE_PACKAGE}"
CACHE_MOUNT: Final = "/cache"
COMPILED_ARTIFACTS_DIR: Final = f"{CACHE_MOUNT}/neuron-compiled-artifacts"
HF_HOME: Final = f"{CACHE_MOUNT}/huggingface"
CODE_HASH_ANNOTATION: Final = "eks-neuron-llm/serve-code-sha256"

# Labels this stack puts on the Ray pods (KubeRay adds its own ray.io/* labels); the NetworkPolicies select on them.
APP_LABEL_KEY: Final = "app.kubernetes.io/name"
APP_LABEL: Final = "llm-serve"
COMPONENT_LABEL_KEY: Final = "app.kubernetes.io/component"
HEAD_COMPONENT: Final = "ray-head"
WORKER_COMPONENT: Final = "ray-worker"
RAY_POD_LABELS: Final[dict[str, str]] = {APP_LABEL_KEY: APP_LABEL}
HEAD_LABELS: Final[dict[str, str]] = {**RAY_POD_LABELS, COMPONENT_LABEL_KEY: HEAD_COMPONENT}
WORKER_LABELS: Final[dict[str, str]] = {**RAY_POD_LABELS, COMPONENT_LABEL_KEY: WORKER_COMPONENT}

# Head sizing: it must fit an m6i.xlarge system node (4 vCPU, 16 GiB; ~3.9 vCPU / ~13.9 GiB allocatable) beside
# CoreDNS, a Karpenter replica, the KubeRay operator, the EBS CSI controller, my-scheduler and the node DaemonSets.
HEAD_RESOURCES: Final = {"requests": {"cpu": "1", "memory": "5Gi"}, "limits": {"cpu": "2", "memory": "5Gi"}}
AUTOSCALER_RESOURCES: Final = {
    "requests": {"cpu": "200m", "memory": "512Mi"},
    "limits": {"cpu": "500m", "memory": "1Gi"},
}
# The cache volume holds the model weights (~16 GB) and the compiled artifacts on the node's 500 GiB root volume.
CACHE_SIZE: Final = "200Gi"
# Idle workers are removed after this (autoscalerOptions: the per-group field needs autoscaler v2); a replica's cold
# start is minutes, so scale-in is slow on purpose.
WORKER_IDLE_TIMEOUT_SECONDS: Final = 900
SERVE_DOWNSCALE_DELAY_S: Final = 600


def serve_service_name(rayservice: str = NAME) -> str:
    """The Service KubeRay 1.7 creates for a RayService's Serve endpoint (utils.GenerateServeServiceName)."""
    return f"{rayservice}-serve-svc"


def serve_base_url(rayservice: str = NAME, namespace: str = NAMESPACE) -> str:
    """The in-cluster OpenAI base URL of the RayService."""
    return f"http://{serve_service_name(rayservice)}.{namespace}.svc.cluster.local:{SERVE_PORT}/v1"


def head_service_name(rayservice: str = NAME) -> str:
    """The head Service KubeRay creates for a RayService (stable across cluster upgrades): the dashboard's."""
    return f"{rayservice}-head-svc"


# ---------------------------------------------------------------------------------------------------------------
# The serve code, shipped as a ConfigMap.
# ---------------------------------------------------------------------------------------------------------------

SERVE_SOURCE: Final = Path(__file__).resolve().parent / "serve"
CONFIGMAP_LIMIT_BYTES: Final = 1024 * 1024


def serve_code_files(root: Path = SERVE_SOURCE) -> dict[str, str]:
    """File name -> text of every module of the serve package (tests and caches excluded), read at render time."""
    files = {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted(root.glob("*.py"))
        if not p.name.startswith("test_") and not p.name.endswith("_test.py") and p.name != "conftest.py"
    }
    if "__init__.py" not in files:
        raise ValueError(f"{root} is not a package: no __init__.py")
    size = sum(len(t.encode()) for t in files.values())
    if size > CONFIGMAP_LIMIT_BYTES:
        raise ValueError(f"serve code is {size} bytes; a ConfigMap holds at most {CONFIGMAP_LIMIT_BYTES}")
    return files


def code_hash(files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()


def code_configmap(files: Mapping[str, str], namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CODE_CONFIGMAP, "namespace": namespace, "labels": dict(RAY_POD_LABELS)},
        "data": dict(files),
    }


# ---------------------------------------------------------------------------------------------------------------
# The RayService.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GcsStore:
    """Where the GCS persists its state (KubeRay ``gcsFaultToleranceOptions``): a Redis-compatible store over TLS."""

    address: str  # rediss://host:port (rediss: TLS, which Ray turns on from the scheme)
    password_secret: str = GCS_STORE_SECRET
    password_key: str = GCS_STORE_SECRET_KEY


@dataclass(frozen=True)
class RayServiceInputs:
    preset: Preset
    model_id: str
    image: str
    region: str
    code_sha256: str
    artifact_cache_uri: str | None
    hf_token_secret: str | None  # name of the Secret holding HF_TOKEN, or None
    name: str = NAME
    namespace: str = NAMESPACE
    # None: the GCS keeps its state in memory and a head restart restarts the whole Ray cluster (dev).
    gcs_store: GcsStore | None = None
    # Extra environment of the head only: where the Ray dashboard finds Prometheus and Grafana.
    head_env: Mapping[str, str] = field(default_factory=dict)


def serve_settings(inputs: RayServiceInputs) -> ServeSettings:
    p = inputs.preset
    return ServeSettings(
        model=inputs.model_id,
        served_model_name=inputs.model_id,
        device="neuron",
        tensor_parallel_size=p.tensor_parallel_size,
        max_model_len=p.max_model_len,
        max_num_seqs=p.max_num_seqs,
        artifact_cache_uri=inputs.artifact_cache_uri,
        compiled_artifacts_dir=COMPILED_ARTIFACTS_DIR,
        require_api_key=True,
    )


def serve_config(inputs: RayServiceInputs) -> dict[str, Any]:
    """serveConfigV2 as a mapping: one application, its deployment's autoscaling, queue bound and Neuron cores."""
    p = inputs.preset
    settings = serve_settings(inputs)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
        "applications": [
            {
                "name": APP_NAME,
                "import_path": APP_IMPORT_PATH,
                "route_prefix": ROUTE_PREFIX,
                "args": settings.to_args(),
                "deployments": [
                    {
                        "name": DEPLOYMENT_NAME,
                        "autoscaling_config": {
                            "min_replicas": p.min_replicas,
                            "max_replicas": p.max_replicas,
                            "target_ongoing_requests": p.target_ongoing_requests,
                            "downscale_delay_s": SERVE_DOWNSCALE_DELAY_S,
                        },
                        # Overload is refused (429 + Retry-After) beyond one batch of queue per replica, not queued
                        # without bound: stated here, where operators read the deployment's settings.
                        **launch.admission_options(settings),
                        "ray_actor_options": {
                            "num_cpus": launch.REPLICA_NUM_CPUS,
                            "resources": {NEURON_CORES_RAY_RESOURCE: p.tensor_parallel_size},
                        },
                    }
                ],
            }
        ],
    }


def _code_volume() -> dict[str, Any]:
    return {"name": "serve-code", "configMap": {"name": CODE_CONFIGMAP}}


def _code_mount() -> dict[str, Any]:
    return {"name": "serve-code", "mountPath": CODE_MOUNT, "readOnly": True}


def _common_env(inputs: RayServiceInputs) -> list[dict[str, Any]]:
    return [
        {"name": "PYTHONPATH", "value": APP_ROOT},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},  # the code mount is read-only
        {"name": "AWS_REGION", "value": inputs.region},
        *({"name": k, "value": v} for k, v in RAY_SERVE_ENV.items()),
    ]


def _container_security(*, drop_capabilities: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"allowPrivilegeEscalation": False}
    if drop_capabilities:
        out["capabilities"] = {"drop": ["ALL"]}
    return out


def _head_env(inputs: RayServiceInputs) -> list[dict[str, Any]]:
    env = [*_common_env(inputs), *({"name": k, "value": v} for k, v in inputs.head_env.items())]
    if inputs.gcs_store is not None:
        env.append({"name": REDIS_CA_CERT_ENV, "value": SYSTEM_CA_BUNDLE})
    return env


def gcs_fault_tolerance(store: GcsStore) -> dict[str, Any]:
    """KubeRay 1.7 ``gcsFaultToleranceOptions``: the store's address and a password from a Secret.

    KubeRay puts them into the head's ``RAY_REDIS_ADDRESS`` and ``REDIS_PASSWORD`` (``--redis-password``) itself and
    refuses a RayService that also sets those, ``redis-password`` in rayStartParams or the external-storage-namespace
    annotation; it keys the GCS state by the RayCluster's UID, so the two clusters of a NewCluster upgrade never share
    it, and it gives the workers ``RAY_gcs_rpc_server_reconnect_timeout_s=600`` so they wait for a restarted head.
    """
    return {
        "redisAddress": store.address,
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": store.password_secret, "key": store.password_key}}},
    }


def head_group(inputs: RayServiceInputs) -> dict[str, Any]:
    return {
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0", "dashboard-port": str(DASHBOARD_PORT)},
        "template": {
            "metadata": {"labels": dict(HEAD_LABELS), "annotations": {CODE_HASH_ANNOTATION: inputs.code_sha256}},
            "spec": {
                **topology.system_placement(),
                "containers": [
                    {
                        "name": "ray-head",
                        "image": inputs.image,
                        "env": _head_env(inputs),
                        "ports": [
                            {"name": "gcs-server", "containerPort": GCS_PORT},
                            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
                            {"name": "client", "containerPort": CLIENT_PORT},
                            *({"name": n, "containerPort": p} for n, p in METRICS_PORTS.items()),
                        ],
                        "resources": HEAD_RESOURCES,
                        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, _code_mount()],
                        "securityContext": _container_security(),
                    }
                ],
                # The head stores few objects, but Ray's object store needs more than the runtime's 64 MiB /dev/shm.
                "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}, _code_volume()],
            },
        },
    }


def worker_group(inputs: RayServiceInputs) -> dict[str, Any]:
    p = inputs.preset
    memory = f"{p.worker_memory_gib}Gi"
    cpu = str(p.worker_cpu)
    devices = str(p.worker_neuron_devices)
    env = [
        *_common_env(inputs),
        {"name": "HF_HOME", "value": HF_HOME},
        # The replicas' gate asks callers for this key (serve settings require_api_key).
        {"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": API_KEY_SECRET, "key": API_KEY_SECRET_KEY}}},
    ]
    if inputs.hf_token_secret:
        env.append(
            {
                "name": HF_TOKEN_KEY,
                "valueFrom": {"secretKeyRef": {"name": inputs.hf_token_secret, "key": HF_TOKEN_KEY}},
            }
        )
    return {
        "groupName": WORKER_GROUP,
        "replicas": p.min_workers,
        "minReplicas": p.min_workers,
        "maxReplicas": p.max_workers,
        "rayStartParams": {
            "num-cpus": cpu,
            # Double JSON: KubeRay passes the value to `ray start --resources=` through a shell.
            "resources": json.dumps(json.dumps({NEURON_CORES_RAY_RESOURCE: p.worker_neuron_cores})),
        },
        "template": {
            "metadata": {"labels": dict(WORKER_LABELS), "annotations": {CODE_HASH_ANNOTATION: inputs.code_sha256}},
            "spec": {
                **topology.accelerator_placement(p.pool, p.instance_type),
                "serviceAccountName": WORKER_SERVICE_ACCOUNT,
                "containers": [
                    {
                        "name": "ray-worker",
                        "image": inputs.image,
                        "env": env,
                        "ports": [
                            {"name": "serve", "containerPort": SERVE_PORT},
                            {"name": "metrics", "containerPort": METRICS_PORT},
                        ],
                        "resources": {
                            "requests": {"cpu": cpu, "memory": memory, topology.NEURON_DEVICE_RESOURCE: devices},
                            "limits": {"cpu": cpu, "memory": memory, topology.NEURON_DEVICE_RESOURCE: devices},
                        },
                        "volumeMounts": [
                            {"name": "dshm", "mountPath": "/dev/shm"},
                            {"name": "cache", "mountPath": CACHE_MOUNT},
                            _code_mount(),
                        ],
                        # Capabilities are left as the runtime grants them: the Neuron runtime's needs inside a
                        # container are not pinned down here, and a worker that cannot open its devices serves nothing.
                        "securityContext": _container_security(drop_capabilities=False),
                    }
                ],
                "volumes": [
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{p.shm_gib}Gi"}},
                    {"name": "cache", "emptyDir": {"sizeLimit": CACHE_SIZE}},
                    _code_volume(),
                ],
            },
        },
    }


def worker_disruption_budget(name: str = NAME, namespace: str = NAMESPACE) -> dict[str, Any]:
    """At most all-but-WORKERS_MIN_AVAILABLE serve workers may be evicted at once (Karpenter drains, kubectl drain).

    With two or more workers a drain takes one, the others keep serving, and the next eviction waits until the
    replacement is Ready.  With a single worker (the presets' minimum) no voluntary eviction is allowed: Karpenter
    skips the node for drift and consolidation and an expiring node waits out the pool's terminationGracePeriod, so
    the only serving pod is never taken down on purpose (docs/failure-modes.md, "Node drains").  Deleting pods
    (a NewCluster upgrade, `kubectl delete pod`) is not an eviction and is not held back.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{name}-workers", "namespace": namespace, "labels": dict(RAY_POD_LABELS)},
        "spec": {
            "minAvailable": WORKERS_MIN_AVAILABLE,
            "selector": {"matchLabels": dict(WORKER_LABELS)},
            # A worker that is not Ready (a cold start, a dead engine) does not hold a drain up.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def rayservice(inputs: RayServiceInputs) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": WORKER_IDLE_TIMEOUT_SECONDS,
            "resources": AUTOSCALER_RESOURCES,
            "securityContext": _container_security(),
        },
    }
    if inputs.gcs_store is not None:
        cluster["gcsFaultToleranceOptions"] = gcs_fault_tolerance(inputs.gcs_store)
    cluster["headGroupSpec"] = head_group(inputs)
    cluster["workerGroupSpecs"] = [worker_group(inputs)]
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": {
            "name": inputs.name,
            "namespace": inputs.namespace,
            "labels": dict(RAY_POD_LABELS),
            "annotations": {"ray.io/initializing-timeout": INITIALIZING_TIMEOUT},
        },
        "spec": {
            "upgradeStrategy": {"type": UPGRADE_STRATEGY},
            "excludeHeadPodFromServeSvc": True,
            "serveConfigV2": yaml.safe_dump(serve_config(inputs), sort_keys=False),
            "rayClusterConfig": cluster,
        },
    }
