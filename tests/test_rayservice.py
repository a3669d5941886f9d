"""The rendered RayService: KubeRay 1.7 fields, serveConfigV2 against the serve contract, head and worker specs, and
the serve code shipped as a ConfigMap."""

from __future__ import annotations

import copy
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy.scheduling import DeclaredOverhead, Machine, PodTemplate, node_sources, pod_templates, prove
from tools.render import Render
from tools.schemas import custom_resource_problems
from workloads import rayservice, topology
from workloads.instances import INSTANCES
from workloads.presets import PRESETS
from workloads.serve import launch
from workloads.serve.settings import (
    API_KEY_ENV,
    APP_IMPORT_PATH,
    DEPLOYMENT_NAME,
    NEURON_CORES_RAY_RESOURCE,
    RAY_SERVE_ENV,
    ROUTE_PREFIX,
    SERVE_PACKAGE,
    SERVE_PORT,
    ServeSettings,
)

from .conftest import REPO, preset_overrides, rendered

RAYSERVICE = "kubernetes:ray.io/v1:RayService"


def rs(r: Render) -> dict[str, Any]:
    (record,) = r.of_type(RAYSERVICE)
    return record


def obj(r: Render) -> dict[str, Any]:
    return {k: v for k, v in rs(r)["inputs"].items() if not k.startswith("__")}


def serve_config(r: Render) -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(obj(r)["spec"]["serveConfigV2"])
    return parsed


def worker(r: Render) -> dict[str, Any]:
    (group,) = obj(r)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return dict(group)


def head(r: Render) -> dict[str, Any]:
    return dict(obj(r)["spec"]["rayClusterConfig"]["headGroupSpec"])


def test_rayservice_uses_current_kuberay_fields(each_stack: Render) -> None:
    o = obj(each_stack)
    assert o["apiVersion"] == "ray.io/v1" and o["metadata"]["namespace"] == "vllm"
    assert o["metadata"]["annotations"]["ray.io/initializing-timeout"] == rayservice.INITIALIZING_TIMEOUT
    # NewCluster: the old cluster keeps serving until the new one's Serve app is healthy.
    assert o["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert "serviceUnhealthySecondThreshold" not in o["spec"]
    assert "deploymentUnhealthySecondThreshold" not in o["spec"]
    assert "metadata" not in head(each_stack).get("headService", {})
    assert custom_resource_problems(o) == []


_GO_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+")


def kuberay_admission_problems(o: dict[str, Any]) -> list[str]:
    """The RayService rules KubeRay 1.7 enforces in code, beyond the CRD schema (ray-operator utils/validation.go)."""
    why = []
    spec, cluster = o["spec"], o["spec"]["rayClusterConfig"]
    if spec.get("upgradeStrategy", {}).get("type") not in {
        None,
        "NewCluster",
        "NewClusterWithIncrementalUpgrade",
        "None",
    }:
        why.append("upgradeStrategy.type")
    timeout = o["metadata"].get("annotations", {}).get("ray.io/initializing-timeout")
    if timeout is not None and not (_GO_DURATION.fullmatch(timeout) or timeout.isdigit()):
        why.append("ray.io/initializing-timeout")
    if cluster["headGroupSpec"].get("headService", {}).get("metadata", {}).get("name"):
        why.append("headService.metadata.name")
    # GCS fault tolerance (validation.go ValidateRayClusterSpec, validateGcsFaultToleranceBackend); the CRD's only
    # CEL rule on gcsFaultToleranceOptions is that backend is immutable.
    annotations = o["metadata"].get("annotations", {})
    ft = cluster.get("gcsFaultToleranceOptions")
    head_params = cluster["headGroupSpec"].get("rayStartParams", {})
    head_env = {e["name"] for e in cluster["headGroupSpec"]["template"]["spec"]["containers"][0].get("env", [])}
    if ft is not None:
        if annotations.get("ray.io/ft-enabled"):
            why.append("ray.io/ft-enabled annotation with gcsFaultToleranceOptions")
        if head_params.get("redis-password"):
            why.append("redis-password in rayStartParams with gcsFaultToleranceOptions")
        for name in ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS"):
            if name in head_env:
                why.append(f"{name} env on the head with gcsFaultToleranceOptions")
        if annotations.get("ray.io/external-storage-namespace"):
            why.append("ray.io/external-storage-namespace annotation with gcsFaultToleranceOptions")
        if ft.get("backend", "redis") == "redis" and ft.get("storage") is not None:
            why.append("gcsFaultToleranceOptions.storage with the redis backend")
        if ft.get("backend") == "rocksdb":
            why.append("gcsFaultToleranceOptions.backend rocksdb (needs a feature gate this stack does not set)")
    elif "RAY_REDIS_ADDRESS" in head_env and not annotations.get("ray.io/ft-enabled"):
        why.append("RAY_REDIS_ADDRESS env without gcsFaultToleranceOptions")
    if head_params.get("redis-username") or "REDIS_USERNAME" in head_env:
        why.append("redis username outside gcsFaultToleranceOptions")
    v2 = cluster.get("autoscalerOptions", {}).get("version") == "v2"
    for group in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]:
        params = group.get("rayStartParams", {})
        if group.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            why.append("resources in both rayStartParams and resources")
        if "labels" in params:
            why.append("rayStartParams labels")
        if group.get("idleTimeoutSeconds") is not None and not v2:
            why.append("idleTimeoutSeconds without autoscaler v2")
    return why


def test_rayservice_passes_kuberay_admission_rules(each_stack: Render) -> None:
    assert kuberay_admission_problems(obj(each_stack)) == []


def _head_env_plus(o: dict[str, Any], name: str) -> dict[str, Any]:
    bad = copy.deepcopy(o)
    bad["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": name, "value": "x"}
    )
    return bad


def test_kuberay_gcs_fault_tolerance_rules_can_fail(prod: Render, dev: Render) -> None:
    o = obj(prod)
    assert "gcsFaultToleranceOptions" in o["spec"]["rayClusterConfig"]
    for name in ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS", "REDIS_USERNAME"):
        assert any(name in p or "username" in p for p in kuberay_admission_problems(_head_env_plus(o, name))), name
    bad = copy.deepcopy(o)
    bad["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["redis-password"] = "x"
    assert any("redis-password" in p for p in kuberay_admission_problems(bad))
    bad = copy.deepcopy(o)
    bad["metadata"]["annotations"]["ray.io/external-storage-namespace"] = "ns"
    assert any("external-storage-namespace" in p for p in kuberay_admission_problems(bad))
    bad = copy.deepcopy(o)
    bad["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["storage"] = {"size": "1Gi"}
    assert any("storage" in p for p in kuberay_admission_problems(bad))
    # Without the options, the address alone is refused (it would turn fault tolerance on behind KubeRay's back).
    assert any("without" in p for p in kuberay_admission_problems(_head_env_plus(obj(dev), "RAY_REDIS_ADDRESS")))


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("spec", "upgradeStrategy", "type"), "BlueGreen", "upgradeStrategy.type"),
        (("metadata", "annotations", "ray.io/initializing-timeout"), "an hour", "ray.io/initializing-timeout"),
        (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "idleTimeoutSeconds"), 60, "idleTimeoutSeconds"),
        (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "resources"), {"neuron_cores": "2"}, "resources in"),
    ],
)
def test_kuberay_admission_rules_can_fail(dev: Render, path: tuple[Any, ...], value: Any, problem: str) -> None:
    bad = copy.deepcopy(obj(dev))
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert any(p.startswith(problem) for p in kuberay_admission_problems(bad))


def test_crd_validation_catches_a_misspelled_rayservice_field(dev: Render) -> None:
    bad = copy.deepcopy(obj(dev))
    bad["spec"]["upgradeStrategies"] = bad["spec"].pop("upgradeStrategy")
    assert any("upgradeStrategies" in p for p in custom_resource_problems(bad))
    wrong = copy.deepcopy(obj(dev))
    wrong["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "two"
    assert custom_resource_problems(wrong)


def test_serve_config_follows_the_settings_contract(dev: Render) -> None:
    cfg = serve_config(dev)
    (app,) = cfg["applications"]
    assert app["import_path"] == APP_IMPORT_PATH and app["route_prefix"] == ROUTE_PREFIX
    assert cfg["http_options"]["port"] == SERVE_PORT
    settings = ServeSettings.from_args(app["args"])
    preset = PRESETS["inf2.8xlarge"]
    assert settings.model == "NousResearch/Meta-Llama-3-8B-Instruct" and settings.device == "neuron"
    assert (settings.tensor_parallel_size, settings.max_model_len, settings.max_num_seqs) == (
        preset.tensor_parallel_size,
        preset.max_model_len,
        preset.max_num_seqs,
    )
    assert settings.block_size is None  # the Neuron plugin sets it (workloads/presets.py)
    (deployment,) = app["deployments"]
    assert deployment["name"] == DEPLOYMENT_NAME
    assert set(deployment["autoscaling_config"]) == {
        "min_replicas",
        "max_replicas",
        "target_ongoing_requests",
        "downscale_delay_s",
    }
    assert deployment["ray_actor_options"] == {
        "num_cpus": launch.REPLICA_NUM_CPUS,
        "resources": {NEURON_CORES_RAY_RESOURCE: preset.tensor_parallel_size},
    }
    deprecated = {"target_num_ongoing_requests_per_replica", "max_concurrent_queries", "num_replicas"}
    assert not deprecated & set(_all_keys(cfg))


def _all_keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [k for k, v in node.items() for k in [k, *_all_keys(v)]]
    if isinstance(node, list):
        return [k for v in node for k in _all_keys(v)]
    return []


def test_artifact_cache_uri_points_at_the_stack_bucket(dev: Render) -> None:
    (bucket,) = dev.of_type("aws:s3/bucket:Bucket")
    args = serve_config(dev)["applications"][0]["args"]
    name = dev.outputs["artifactBucketName"]
    assert args["artifact_cache_uri"] == f"s3://{name}/neuron-artifacts"
    assert args["compiled_artifacts_dir"].startswith(rayservice.CACHE_MOUNT + "/")
    assert bucket["urn"]


def test_worker_spec_of_the_default_preset(dev: Render) -> None:
    preset = PRESETS["inf2.8xlarge"]
    group = worker(dev)
    spec = group["template"]["spec"]
    for key, value in topology.accelerator_placement(topology.INF2_POOL, "inf2.8xlarge").items():
        assert spec[key] == value
    assert (group["minReplicas"], group["maxReplicas"]) == (preset.min_workers, preset.max_workers)
    ray_resources = json.loads(json.loads(group["rayStartParams"]["resources"]))
    assert ray_resources == {NEURON_CORES_RAY_RESOURCE: 2}
    (container,) = spec["containers"]
    res = container["resources"]
    assert res["requests"][topology.NEURON_DEVICE_RESOURCE] == res["limits"][topology.NEURON_DEVICE_RESOURCE] == "1"
    assert group["rayStartParams"]["num-cpus"] == res["requests"]["cpu"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm" and mounts[rayservice.CACHE_MOUNT] == "cache"
    assert {"name": "serve", "containerPort": SERVE_PORT} in container["ports"]
    env = {e["name"]: e for e in container["env"]}
    assert "HF_TOKEN" not in env  # no token configured: no Secret, no reference to one
    assert spec["serviceAccountName"] == rayservice.WORKER_SERVICE_ACCOUNT


def test_hf_token_reaches_the_worker_only_through_a_secret() -> None:
    r = rendered("dev", hfToken="hf_test_sentinel_ABC123")
    env = {e["name"]: e for e in worker(r)["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    }
    secret = r.one("kubernetes:core/v1:Secret", "serving-hf-token")
    assert secret["inputs"]["metadata"]["namespace"] == "vllm"
    assert secret["urn"] in rs(r)["dependencies"]


def test_head_runs_no_replicas_on_the_system_nodes(each_stack: Render) -> None:
    group = head(each_stack)
    spec = group["template"]["spec"]
    assert group["rayStartParams"]["num-cpus"] == "0"
    assert group["rayStartParams"]["dashboard-port"] == str(rayservice.DASHBOARD_PORT)
    for key, value in topology.system_placement().items():
        assert spec[key] == value
    ports = {p["name"]: p["containerPort"] for p in spec["containers"][0]["ports"]}
    assert ports["dashboard"] == 8265
    assert obj(each_stack)["spec"]["excludeHeadPodFromServeSvc"] is True


def _machines() -> dict[str, Machine]:
    return {
        i.name: Machine(i.name, i.vcpu, i.memory_gib * 1024, i.max_pods, i.neuron_devices, i.neuron_cores)
        for i in INSTANCES.values()
    }


# Stand-in for the Neuron chart's device plugin (its DaemonSet is not a rendered manifest): it tolerates the Neuron
# taint and makes Neuron nodes advertise devices and cores.
DEVICE_PLUGIN = PodTemplate(
    "DaemonSet kube-system/neuron-device-plugin (stand-in)",
    {
        "containers": [{"name": "p", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}],
        "tolerations": [dict(topology.NEURON_TOLERATION)],
    },
    daemonset=True,
    provides=(topology.NEURON_DEVICE_RESOURCE, topology.NEURON_CORE_RESOURCE),
)
# Node DaemonSets (CNI, kube-proxy, EBS CSI node, Pod Identity agent, CloudWatch agent and Fluent Bit, Neuron
# monitor and node problem detector): a generous per-node figure.
NODE_DAEMONSETS = DeclaredOverhead("node DaemonSets", 600, 800, "add-on and chart DaemonSet requests, rounded up")
# What shares a system node with the head (one of each per node; the declared figures are the charts' requests):
# Karpenter (500m/512Mi), the KubeRay operator (500m/512Mi), CoreDNS (100m/70Mi), my-scheduler and the Neuron
# scheduler extension (~100m/128Mi each), the EBS CSI controller (~60m/240Mi), plus the node DaemonSets.
SYSTEM_NEIGHBOURS = DeclaredOverhead("system neighbours of the Ray head", 1960, 2400, "charts' requests, see above")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_head_and_workers_fit_their_nodes(preset: str) -> None:
    r = rendered("dev", **preset_overrides(preset))
    pods = [p for p in pod_templates(r.resources) if p.name.startswith("RayService")]
    (head_pod,) = [p for p in pods if p.name.endswith(" head")]
    # KubeRay adds the autoscaler as a sidecar of the head: count it.
    autoscaler = {"name": "autoscaler", "resources": rayservice.AUTOSCALER_RESOURCES}
    head_pod.spec = {**head_pod.spec, "containers": [*head_pod.spec["containers"], autoscaler]}
    sources = node_sources(r.resources, _machines())
    (head_verdict,) = prove([head_pod], sources, [SYSTEM_NEIGHBOURS])
    assert head_verdict.ok, head_verdict.message()
    assert {s for s, _ in head_verdict.fits} == {"NodeGroup system"}
    workers = [p for p in pods if " worker group " in p.name]
    worker_verdict = prove([*workers, DEVICE_PLUGIN], sources, [NODE_DAEMONSETS])[0]
    assert worker_verdict.ok, worker_verdict.message()
    assert {m for _, m in worker_verdict.fits} == {preset}


def test_the_fit_check_fails_for_an_oversized_head(dev: Render) -> None:
    pods = [p for p in pod_templates(dev.resources) if p.name == "RayService vllm/llm head"]
    big = copy.deepcopy(pods[0].spec)
    big["containers"][0]["resources"] = {"requests": {"cpu": "3", "memory": "13Gi"}}
    (v,) = prove([PodTemplate("head", big)], node_sources(dev.resources, _machines()), [SYSTEM_NEIGHBOURS])
    assert not v.ok and "NodeGroup system" in v.message() and "cpu" in v.message()


# --- the serve code as a ConfigMap ------------------------------------------------------------------------------


def test_code_configmap_holds_exactly_the_serve_modules(dev: Render) -> None:
    cm = dev.one("kubernetes:core/v1:ConfigMap", "serving-code")["inputs"]
    on_disk = {p.name: p.read_text() for p in (REPO / "workloads" / "serve").glob("*.py")}
    assert cm["data"] == on_disk
    assert cm["metadata"] == {**cm["metadata"], "name": rayservice.CODE_CONFIGMAP, "namespace": "vllm"}


def test_code_is_mounted_as_the_package_the_import_path_names(dev: Render) -> None:
    assert APP_IMPORT_PATH.startswith(SERVE_PACKAGE + ".")
    assert rayservice.CODE_MOUNT.endswith(f"/{SERVE_PACKAGE}")
    assert rayservice.CODE_MOUNT.removesuffix(f"/{SERVE_PACKAGE}") == rayservice.APP_ROOT
    for spec in (head(dev)["template"]["spec"], worker(dev)["template"]["spec"]):
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PYTHONPATH"] == rayservice.APP_ROOT
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == rayservice.CODE_MOUNT)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == rayservice.CODE_CONFIGMAP


def test_a_code_change_rolls_both_pod_templates(dev: Render) -> None:
    files = rayservice.serve_code_files()
    digest = rayservice.code_hash(files)
    for group in (head(dev), worker(dev)):
        assert group["template"]["metadata"]["annotations"][rayservice.CODE_HASH_ANNOTATION] == digest
    changed = {**files, "app.py": files["app.py"] + "\n# changed\n"}
    assert rayservice.code_hash(changed) != digest
    assert rayservice.code_hash({**files, "extra.py": ""}) != digest


def test_code_files_exclude_tests_and_caches(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "test_app.py").write_text("")
    (tmp_path / "conftest.py").write_text("")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("")
    assert set(rayservice.serve_code_files(tmp_path)) == {"__init__.py", "app.py"}
    (tmp_path / "__init__.py").unlink()
    with pytest.raises(ValueError, match="not a package"):
        rayservice.serve_code_files(tmp_path)


def test_every_ray_container_runs_serve_the_way_the_benchmarks_measured(each_stack: Render) -> None:
    # Ray Serve reads these once per process: the head (controller, HAProxy) and the workers (replicas, HAProxy)
    # must all start with them, and they are what tools/bench_servers gives the local servers.
    for group in (head(each_stack), worker(each_stack)):
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in RAY_SERVE_ENV} == dict(RAY_SERVE_ENV)
    assert RAY_SERVE_ENV["RAY_SERVE_ENABLE_HA_PROXY"] == "1"


def test_local_servers_default_to_the_cluster_serve_env() -> None:
    from tools import bench_servers

    default = inspect.signature(bench_servers.serve_app).parameters["serve_env"].default
    assert default is RAY_SERVE_ENV


def test_local_servers_refuse_a_driver_whose_serve_flags_were_read_with_other_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    from tools import bench_servers

    stale = types.ModuleType("ray.serve._private.constants")
    stale.RAY_SERVE_ENABLE_HA_PROXY = False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray.serve._private.constants", stale)
    with pytest.raises(RuntimeError, match="imported before RAY_SERVE_ENABLE_HA_PROXY=1 was set"):
        bench_servers._check_serve_constants(RAY_SERVE_ENV)
    stale.RAY_SERVE_ENABLE_HA_PROXY = True  # type: ignore[attr-defined]
    bench_servers._check_serve_constants(RAY_SERVE_ENV)  # read with the same values: fine


def test_rayservice_waits_for_the_operator_and_what_its_pods_mount(dev: Render) -> None:
    deps = set(rs(dev)["dependencies"])
    operator = next(r for r in dev.helm_releases() if r["name"] == "kuberay-operator")
    assert operator["urn"] in deps
    for typ, name in [
        ("kubernetes:core/v1:ConfigMap", "serving-code"),
        ("kubernetes:core/v1:ServiceAccount", "serving-worker"),
        ("aws:eks/podIdentityAssociation:PodIdentityAssociation", "serving-worker"),
        # The artifact-cache permissions behind those credentials: a replica's first restore needs them.
        ("aws:iam/rolePolicy:RolePolicy", "serving-worker-inline"),
        ("kubernetes:karpenter.sh/v1:NodePool", "karpenter-nodepool-inf2"),
    ]:
        assert dev.one(typ, name)["urn"] in deps, name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_engine_gets_the_kv_cache_presets_check_sized(name: str) -> None:
    """presets.check sizes a replica's KV cache as max_num_seqs x max_model_len tokens. That is what the rendered
    engine flags ask for: prefix caching and chunked prefill off (contiguous layout: the Neuron plugin makes each
    block max_model_len long), no block size of our own, and exactly max_num_seqs blocks."""
    preset = PRESETS[name]
    inputs = rayservice.RayServiceInputs(
        preset, "NousResearch/Meta-Llama-3-8B-Instruct", "i:1", "us-east-1", "0", None, None
    )
    (app,) = yaml.safe_load(rayservice.rayservice(inputs)["spec"]["serveConfigV2"])["applications"]
    argv = launch.engine_argv(ServeSettings.from_args(app["args"]))
    assert "--block-size" not in argv
    assert "--no-enable-prefix-caching" in argv and "--no-enable-chunked-prefill" in argv
    blocks = int(argv[argv.index("--num-gpu-blocks-override") + 1])
    block_tokens = int(argv[argv.index("--max-model-len") + 1])
    assert blocks * block_tokens == preset.kv_cache_tokens == preset.max_num_seqs * preset.max_model_len


def test_ray_version_matches_the_serving_image() -> None:
    serve_layer = (REPO / "workloads" / "image" / "serve-requirements.txt").read_text()
    match = re.search(r"^ray\[serve\]==(\S+)$", serve_layer, re.MULTILINE)
    assert match, "workloads/image/serve-requirements.txt pins ray[serve]"
    assert match.group(1) == rayservice.RAY_VERSION


def test_names_fit_kubernetes_limits() -> None:
    # KubeRay truncates names longer than 63 characters (utils.CheckName); ours must not need it.
    assert len(rayservice.serve_service_name()) <= 63 and len(rayservice.head_service_name()) <= 63


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_renders_args_the_serve_app_accepts(preset: str) -> None:
    inputs = rayservice.RayServiceInputs(
        preset=PRESETS[preset],
        model_id="NousResearch/Meta-Llama-3-8B-Instruct",
        image="example.com/serving:1",
        region="us-east-1",
        code_sha256="0" * 64,
        artifact_cache_uri="s3://bucket/neuron-artifacts",
        hf_token_secret=None,
    )
    (app,) = rayservice.serve_config(inputs)["applications"]
    settings = ServeSettings.from_args(app["args"])
    argv = launch.engine_argv(settings)
    assert argv[argv.index("--tensor-parallel-size") + 1] == str(PRESETS[preset].tensor_parallel_size)
    # serveConfigV2's actor options replace the code's: they must be the same as the code would choose.
    assert app["deployments"][0]["ray_actor_options"] == launch.deployment_options(settings)["ray_actor_options"]
    group = rayservice.worker_group(inputs)
    cores = json.loads(json.loads(group["rayStartParams"]["resources"]))[NEURON_CORES_RAY_RESOURCE]
    assert cores // settings.tensor_parallel_size == PRESETS[preset].replicas_per_worker


# --- the endpoint's key, its queue bound, and the workers' disruption budget -------------------------------------


def test_serve_config_bounds_the_queue_and_refuses_with_a_retryable_status(each_stack: Render) -> None:
    (app,) = serve_config(each_stack)["applications"]
    (deployment,) = app["deployments"]
    settings = ServeSettings.from_args(app["args"])
    assert deployment["max_queued_requests"] == settings.max_num_seqs
    assert deployment["backpressure_config"] == {"status_code": 429, "retry_after_s": launch.BACKPRESSURE_RETRY_AFTER_S}
    assert {k: v for k, v in launch.admission_options(settings).items()} == {
        k: deployment[k] for k in ("max_queued_requests", "backpressure_config")
    }


def test_workers_ask_for_the_key_from_its_secret_and_the_args_require_it(each_stack: Render) -> None:
    (app,) = serve_config(each_stack)["applications"]
    assert app["args"]["require_api_key"] is True
    env = {e["name"]: e for e in worker(each_stack)["template"]["spec"]["containers"][0]["env"]}
    ref = env[API_KEY_ENV]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": rayservice.API_KEY_SECRET, "key": rayservice.API_KEY_SECRET_KEY}
    (secret,) = [
        m
        for m in each_stack.manifests()
        if m["kind"] == "Secret"
        and m["metadata"]["name"] == ref["name"]
        and m["metadata"]["namespace"] == rayservice.NAMESPACE
    ]
    assert secret["stringData"] == {ref["key"]: "[secret]"}
    key = each_stack.one("random:index/randomPassword:RandomPassword", "serving-api-key")["inputs"]
    assert key["length"] >= 32
    (rs_record,) = each_stack.of_type(RAYSERVICE)
    secret_urn = each_stack.one("kubernetes:core/v1:Secret", "serving-api-key")["urn"]
    assert secret_urn in rs_record["dependencies"]  # named, not referenced: the workers must not start without it


def test_the_api_key_output_says_how_to_read_it(dev: Render) -> None:
    command = dev.outputs["servingApiKeyCommand"]
    assert f"-n {rayservice.NAMESPACE} get secret {rayservice.API_KEY_SECRET}" in command
    assert f"{{.data.{rayservice.API_KEY_SECRET_KEY}}}" in command and command.endswith("base64 -d")


def pdb(r: Render) -> dict[str, Any]:
    (found,) = [m for m in r.manifests() if m["kind"] == "PodDisruptionBudget"]
    return found


def test_a_disruption_budget_keeps_a_serve_worker_through_drains(each_stack: Render) -> None:
    budget = pdb(each_stack)
    assert budget["metadata"]["namespace"] == rayservice.NAMESPACE
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selector.items() <= worker(each_stack)["template"]["metadata"]["labels"].items()
    assert not selector.items() <= head(each_stack)["template"]["metadata"]["labels"].items()
    # RayCluster has no scale subresource: only an integer minAvailable can be evaluated for its pods.
    assert isinstance(budget["spec"]["minAvailable"], int) and "maxUnavailable" not in budget["spec"]
    assert budget["spec"]["minAvailable"] == rayservice.WORKERS_MIN_AVAILABLE
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
