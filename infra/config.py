"""The one typed, validated configuration object of the stack.

Nothing else in the program reads configuration: ``load()`` turns the engine's raw config (a flat mapping of
``namespace:key`` to the string the Pulumi engine passes) into a frozen ``StackConfig``.  Defaults live in one place,
the ``config:`` block of ``Pulumi.yaml``; the Pulumi CLI (and the offline render harness, which mimics it) applies
them before the program runs, so this module only validates.

Every problem becomes one line naming the key, the bad value and what is allowed.  All problems are collected first,
so a stack with three bad values reports three lines, not one at a time.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, cast

import pulumi

from workloads import presets as serving_presets
from workloads.topology import INF2_POOL

PROJECT = "eks-neuron-llm"

# Regions that sell both inf2 and trn1 capacity.  Kept to the regions where both families have been generally
# available longest; the network component additionally checks, at deploy time, that enough availability zones of
# the chosen region offer the accelerator instance types.
ACCELERATOR_REGIONS: tuple[str, ...] = ("us-east-1", "us-east-2", "us-west-2")

# EKS Kubernetes versions in standard support that this stack is tested against (kubernetes-validate schemas and
# the Karpenter/KubeRay/Neuron versions pinned here).  The first entry is the oldest allowed.  1.34 was dropped when it
# left standard support (2026-12-02): a cluster in extended support costs six times as much per hour, and the stack
# pins nothing that needs it; a stack still on 1.34 gets a one-line refusal and upgrades to 1.35 (docs/versions.md).
EKS_VERSIONS: tuple[str, ...] = ("1.35", "1.36")
# The clusterVersion default of Pulumi.yaml (tests/test_config.py keeps the two equal).
DEFAULT_EKS_VERSION = "1.35"

# Tag keys Karpenter 1.14.1's EC2NodeClass refuses in spec.tags (CEL rules of its CRD; Karpenter sets them itself on
# what it launches). The stack's tags go to both node classes, so such a key would fail `pulumi up` at the node class.
# tests/test_cel.py keeps this list equal to the vendored CRD's rules.
KARPENTER_RESERVED_TAG_KEYS = (
    "eks:eks-cluster-name",
    "karpenter.sh/nodepool",
    "karpenter.sh/nodeclaim",
    "karpenter.k8s.aws/ec2nodeclass",
)
KARPENTER_RESERVED_TAG_PREFIX = "kubernetes.io/cluster"


Environment = Literal["dev", "prod"]
NatMode = Literal["single", "perAz"]


class ConfigError(pulumi.RunError):
    """Raised with one line per invalid key; ``pulumi.RunError`` makes the engine print it without a traceback."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class NetworkConfig:
    availability_zone_count: int
    vpc_cidr: str
    nat_gateways: NatMode


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    version: str
    public_access_cidrs: tuple[str, ...]
    admin_principal_arns: tuple[str, ...]
    system_node_instance_type: str
    system_node_count: int
    system_node_max_count: int
    system_node_disk_gib: int


CapacityType = Literal["on-demand", "spot"]


@dataclass(frozen=True)
class CapacityConfig:
    """Karpenter node classes and pools: the AMI, the disks, the instance types, limits and disruption settings."""

    ami_version: str  # vYYYYMMDD: the AL2023 release (infra/ami.py checks it is published before deploy)
    default_disk_gib: int
    neuron_disk_gib: int
    default_pool_cpu_limit: int
    default_pool_memory_gib: int
    inf2_instance_types: tuple[str, ...]
    trn1_instance_types: tuple[str, ...]
    accelerator_capacity_types: tuple[CapacityType, ...]
    accelerator_pool_cpu_limit: int
    accelerator_pool_memory_gib: int
    inf2_neuron_device_limit: int
    trn1_neuron_device_limit: int
    accelerator_consolidate_after: str
    accelerator_disruption_budget: str
    node_expire_after: str


@dataclass(frozen=True)
class ServingConfig:
    """KubeRay, the vLLM RayService and Open WebUI (infra/kuberay.py, infra/serving.py, infra/openwebui.py)."""

    preset: str  # a key of workloads.presets.PRESETS, named after the worker instance type
    model_id: str  # a key of workloads.presets.MODELS
    image: str  # a prebuilt serving image pinned by tag or digest, or "" for the one the stack builds
    # Hugging Face token: a secret Output, or None when unset (the default model is not gated).
    hf_token: pulumi.Output[str] | None
    openwebui_enable_signup: bool
    openwebui_storage_gib: int
    # GCS fault tolerance: an ElastiCache (Valkey) store the Ray head persists the GCS to, so a head restart does not
    # restart the Ray cluster (infra/gcs_store.py).  Off in dev (cost), on in prod.
    gcs_fault_tolerance: bool

    @property
    def builds_image(self) -> bool:
        """True when the stack builds workloads/image itself (``servingImage`` left empty, the default)."""
        return not self.image


@dataclass(frozen=True)
class CiConfig:
    """GitHub Actions bootstrap: the OIDC provider and the preview/deploy roles, only when a repository is named."""

    github_repository: str  # owner/name, or "" for no CI bootstrap

    @property
    def enabled(self) -> bool:
        return bool(self.github_repository)


@dataclass(frozen=True)
class BenchmarkConfig:
    """The benchmark Job (infra/bench.py, workloads/bench): off unless enabled."""

    enabled: bool
    results_prefix: str  # key prefix in the artifact bucket for the result files, or "" for the Job's log only


@dataclass(frozen=True)
class MonitoringConfig:
    """Prometheus, Grafana and the alerts (infra/monitoring.py, workloads/monitoring): thresholds and recipients."""

    alert_emails: tuple[str, ...]  # SNS email subscriptions of the alert topic (each confirms by mail)
    ttft_p95_alert_ms: int  # time-to-first-token p95 above this for 10 minutes alerts
    error_5xx_alert_percent: int  # share of 5xx responses above this for 5 minutes alerts


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    environment: Environment
    region: str
    tags: Mapping[str, str]
    network: NetworkConfig
    cluster: ClusterConfig
    capacity: CapacityConfig
    serving: ServingConfig
    benchmark: BenchmarkConfig
    ci: CiConfig
    monitoring: MonitoringConfig

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"


def _fmt(value: object) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


class _Reader:
    """Typed access to the raw config that records problems instead of raising on the first one."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw
        self.problems: list[str] = []
        self.read: set[str] = set()
        # The value each key falls back to when it is missing or bad (so later cross-checks still run); the test
        # suite holds every non-empty one equal to the key's Pulumi.yaml default.
        self.fallbacks: dict[str, object] = {}

    def _full(self, key: str) -> str:
        return key if ":" in key else f"{PROJECT}:{key}"

    def bad(self, key: str, value: object, allowed: str) -> None:
        self.problems.append(f"{self._full(key)}: {_fmt(value)} is not allowed; allowed: {allowed}")

    def _get(self, key: str) -> str | None:
        full = self._full(key)
        self.read.add(full)
        value = self.raw.get(full)
        if value is None:
            self.problems.append(f"{full}: not set; set it with `pulumi config set {full} <value>`")
        return value

    def text(
        self,
        key: str,
        *,
        choices: tuple[str, ...] | None = None,
        pattern: str | None = None,
        allowed: str = "",
        fallback: str = "",
    ) -> str:
        self.fallbacks[self._full(key)] = fallback
        value = self._get(key)
        if value is None:
            return fallback
        if choices is not None and value not in choices:
            self.bad(key, value, " | ".join(choices))
            return fallback
        if pattern is not None and not re.fullmatch(pattern, value):
            self.bad(key, value, allowed)
            return fallback
        return value

    def integer(self, key: str, lo: int, hi: int, *, allowed: str = "", fallback: int = 0) -> int:
        self.fallbacks[self._full(key)] = fallback
        value = self._get(key)
        if value is None:
            return fallback
        try:
            number = int(value)
        except ValueError:
            self.bad(key, value, allowed or f"an integer from {lo} to {hi}")
            return fallback
        if not lo <= number <= hi:
            self.bad(key, number, allowed or f"an integer from {lo} to {hi}")
            return fallback
        return number

    def _json(self, key: str, kind: type, what: str) -> Any:
        value = self._get(key)
        if value is None:
            return kind()
        try:
            parsed = json.loads(value)
        except ValueError:
            self.bad(key, value, what)
            return kind()
        if not isinstance(parsed, kind):
            self.bad(key, parsed, what)
            return kind()
        return parsed

    def text_list(self, key: str, item_ok: Callable[[str], bool], item_allowed: str) -> tuple[str, ...]:
        items = self._json(key, list, f"a list of {item_allowed}")
        out: list[str] = []
        for item in items:
            if not isinstance(item, str) or not item_ok(item):
                self.bad(key, item, f"each entry must be {item_allowed}")
            else:
                out.append(item)
        return tuple(out)

    def text_map(self, key: str) -> dict[str, str]:
        items = self._json(key, dict, "a map of string keys to string values")
        out: dict[str, str] = {}
        for k, v in items.items():
            if not isinstance(v, str | int | float | bool) or isinstance(v, bool):
                self.bad(key, {k: v}, "string values (AWS tag values)")
            elif not re.fullmatch(r"[\w .:/=+\-@]{1,128}", k) or k.lower().startswith("aws:"):
                self.bad(key, k, "tag keys of 1-128 letters, digits, spaces or _.:/=+-@, not starting with aws:")
            elif k in KARPENTER_RESERVED_TAG_KEYS or k.startswith(KARPENTER_RESERVED_TAG_PREFIX):
                reserved = ", ".join([f"{KARPENTER_RESERVED_TAG_PREFIX}*", *KARPENTER_RESERVED_TAG_KEYS])
                self.bad(key, k, f"tag keys Karpenter's EC2NodeClass accepts, so not {reserved}")
            else:
                out[k] = str(v)
        return out

    def unknown_keys(self, known: frozenset[str]) -> None:
        for full in sorted(self.raw):
            if full.startswith(f"{PROJECT}:") and full not in known:
                near = difflib.get_close_matches(full, sorted(known), n=1)
                hint = f"did you mean {near[0]}?" if near else "remove it"
                self.problems.append(f"{full}: unknown key for this project; {hint}")


def _cidr_ok(value: str) -> bool:
    if "/" not in value:
        return False
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return False
    return ":" not in value


_IAM_ARN = r"arn:aws[a-z-]*:(iam|sts)::\d{12}:(role|user|assumed-role)/[\w+=,.@/-]+"


def _network(r: _Reader) -> NetworkConfig:
    azs = r.integer("availabilityZoneCount", 2, 3, allowed="2 or 3", fallback=2)
    cidr = r.text("vpcCidr", fallback="10.0.0.0/16")
    if cidr:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            r.bad("vpcCidr", cidr, "an IPv4 network in CIDR form with host bits zero, e.g. 10.0.0.0/16")
        else:
            if net.version != 4 or not 16 <= net.prefixlen <= 20 or not net.is_private:
                r.bad("vpcCidr", cidr, "a private (RFC 1918) IPv4 network from /16 to /20")
    nat = r.text("natGateways", choices=("single", "perAz"), fallback="single")
    return NetworkConfig(azs, cidr, cast(NatMode, nat))


def _cluster(r: _Reader, environment: str) -> ClusterConfig:
    name = r.text(
        "clusterName",
        pattern=r"[a-zA-Z][a-zA-Z0-9-]{0,37}",
        allowed="1-38 letters, digits or hyphens, starting with a letter (IAM role names are derived from it)",
    )
    version = r.text("clusterVersion", choices=EKS_VERSIONS, fallback=DEFAULT_EKS_VERSION)
    cidrs = r.text_list("publicAccessCidrs", _cidr_ok, "an IPv4 CIDR such as 203.0.113.0/24")
    if environment == "prod" and not cidrs:
        r.bad("publicAccessCidrs", [], "at least one narrowed CIDR in prod")
    if environment == "prod" and "0.0.0.0/0" in cidrs:
        r.bad("publicAccessCidrs", list(cidrs), "CIDRs narrower than 0.0.0.0/0 in prod (the API would be open)")
    admins = r.text_list(
        "adminPrincipalArns",
        lambda v: re.fullmatch(_IAM_ARN, v) is not None,
        "an IAM role or user ARN, e.g. arn:aws:iam::123456789012:role/Admin",
    )
    instance_type = r.text(
        "systemNodeInstanceType",
        pattern=r"[a-z][a-z0-9-]*\.[0-9]*(nano|micro|small|medium|large|xlarge)",
        allowed="an EC2 instance type such as m6i.xlarge",
    )
    if re.match(r"(inf|trn|p|g)\d", instance_type):
        r.bad(
            "systemNodeInstanceType", instance_type, "a general-purpose x86 type (m/c/r/t families), not an accelerator"
        )
    count = r.integer("systemNodeCount", 2, 10, allowed="2 to 10 (at least 2 nodes across AZs)", fallback=2)
    max_count = r.integer("systemNodeMaxCount", 2, 20, fallback=count)
    if max_count < count:
        r.bad("systemNodeMaxCount", max_count, f"at least systemNodeCount ({count})")
    disk = r.integer("systemNodeDiskGiB", 20, 1000, fallback=50)
    return ClusterConfig(name, version, cidrs, admins, instance_type, count, max_count, disk)


_DURATION = r"([0-9]+(s|m|h))+"


def _empty_list(r: _Reader, key: str) -> bool:
    """The raw value is literally an empty list (entries that were all rejected are reported on their own)."""
    value = r.raw.get(r._full(key))
    try:
        return value is not None and json.loads(value) == []
    except ValueError:
        return False


def _instance_types(r: _Reader, key: str, family: str) -> tuple[str, ...]:
    types = r.text_list(
        key,
        lambda v: re.fullmatch(rf"{family}\.[0-9]*(xlarge|large)", v) is not None,
        f"a {family} instance type such as {family}.32xlarge",
    )
    if _empty_list(r, key):
        r.bad(key, [], f"at least one {family} instance type")
    if len(set(types)) != len(types):
        r.bad(key, list(types), "each instance type once")
    return types


def _capacity(r: _Reader) -> CapacityConfig:
    ami = r.text(
        "nodeAmiVersion",
        pattern=r"v20[0-9]{6}",
        allowed="a pinned EKS AL2023 AMI release such as v20260714 (awslabs/amazon-eks-ami releases); not latest",
        fallback="v20260714",
    )
    default_disk = r.integer("defaultNodeDiskGiB", 20, 16384, fallback=100)
    neuron_disk = r.integer(
        "neuronNodeDiskGiB",
        500,
        16384,
        allowed="500 to 16384 (the serving image, model weights and compiled Neuron artifacts need at least 500)",
        fallback=500,
    )
    default_cpu = r.integer("defaultPoolCpuLimit", 4, 100000, fallback=256)
    default_mem = r.integer("defaultPoolMemoryGiB", 8, 400000, fallback=1024)
    inf2 = _instance_types(r, "inf2InstanceTypes", "inf2")
    trn1 = _instance_types(r, "trn1InstanceTypes", "trn1")
    capacity_types = r.text_list("acceleratorCapacityTypes", lambda v: v in ("on-demand", "spot"), "on-demand or spot")
    if _empty_list(r, "acceleratorCapacityTypes"):
        r.bad("acceleratorCapacityTypes", [], "at least one of on-demand, spot")
    acc_cpu = r.integer("acceleratorPoolCpuLimit", 4, 100000, fallback=384)
    acc_mem = r.integer("acceleratorPoolMemoryGiB", 8, 400000, fallback=1536)
    inf2_devices = r.integer("inf2NeuronDeviceLimit", 1, 1000, fallback=12)
    trn1_devices = r.integer("trn1NeuronDeviceLimit", 1, 1000, fallback=4)
    consolidate_after = r.text(
        "acceleratorConsolidateAfter", pattern=_DURATION, allowed="a duration such as 30m or 1h30m", fallback="30m"
    )
    budget = r.text(
        "acceleratorDisruptionBudget",
        pattern=r"[0-9]+|(100|[0-9]{1,2})%",  # the NodePool CRD's budgets[].nodes pattern
        allowed="a node count such as 1, or a percentage from 0% to 100%; 0 blocks voluntary disruption",
        fallback="1",
    )
    expire_after = r.text(
        "nodeExpireAfter", pattern=rf"{_DURATION}|Never", allowed="a duration such as 720h, or Never", fallback="720h"
    )
    return CapacityConfig(
        ami_version=ami,
        default_disk_gib=default_disk,
        neuron_disk_gib=neuron_disk,
        default_pool_cpu_limit=default_cpu,
        default_pool_memory_gib=default_mem,
        inf2_instance_types=inf2,
        trn1_instance_types=trn1,
        accelerator_capacity_types=cast(tuple[CapacityType, ...], capacity_types),
        accelerator_pool_cpu_limit=acc_cpu,
        accelerator_pool_memory_gib=acc_mem,
        inf2_neuron_device_limit=inf2_devices,
        trn1_neuron_device_limit=trn1_devices,
        accelerator_consolidate_after=consolidate_after,
        accelerator_disruption_budget=budget,
        node_expire_after=expire_after,
    )


# An OCI image reference with a tag or a digest: [registry[:port]/]path[:tag][@sha256:<64 hex>].
_IMAGE = (
    r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)+"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?"
)


def _serving(r: _Reader, capacity: CapacityConfig) -> ServingConfig:
    presets = serving_presets.PRESETS
    preset_name = r.text("servingPreset", choices=tuple(presets), fallback="")
    model_id = r.text("modelId", choices=tuple(serving_presets.MODELS), fallback="")
    if preset_name and model_id:
        for reason in serving_presets.check(presets[preset_name], serving_presets.MODELS[model_id]):
            r.bad("servingPreset", preset_name, f"a preset that fits {model_id}: {reason}")
    image = r.text(
        "servingImage",
        pattern=f"(?:{_IMAGE})?",
        allowed="empty (the stack builds workloads/image) or an image reference pinned by tag or digest, e.g. "
        "<account>.dkr.ecr.<region>.amazonaws.com/repo:tag",
    )
    if image and "@" not in image and ":" not in image.rsplit("/", 1)[-1]:
        r.bad("servingImage", image, "an image pinned by a tag or a digest (this one has neither)")
    elif image.rsplit("/", 1)[-1].split("@")[0].endswith(":latest"):
        r.bad("servingImage", image, "a pinned tag or digest, not the moving tag latest")
    token = r.text("hfToken", fallback="")
    signup = r.text("openWebuiEnableSignup", choices=("true", "false"), fallback="false")
    storage = r.integer("openWebuiStorageGiB", 1, 1000, fallback=10)
    gcs_ft = r.text("gcsFaultTolerance", choices=("true", "false"), fallback="false")
    # Cross-check with capacity: the preset's workers must be launchable by their pool.
    if preset_name:
        _preset_fits_pool(r, presets[preset_name], capacity)
    return ServingConfig(
        preset=preset_name,
        model_id=model_id,
        image=image,
        hf_token=pulumi.Output.secret(token) if token else None,
        openwebui_enable_signup=signup == "true",
        openwebui_storage_gib=storage,
        gcs_fault_tolerance=gcs_ft == "true",
    )


def _preset_fits_pool(r: _Reader, preset: serving_presets.Preset, capacity: CapacityConfig) -> None:
    """The one place the serving preset is checked against the capacity config (pool types and device limits)."""
    if preset.pool == INF2_POOL:
        types, limit = capacity.inf2_instance_types, capacity.inf2_neuron_device_limit
    else:
        types, limit = capacity.trn1_instance_types, capacity.trn1_neuron_device_limit
    types_key, limit_key = f"{preset.pool}InstanceTypes", f"{preset.pool}NeuronDeviceLimit"
    if types and preset.instance_type not in types:
        r.bad(types_key, list(types), f"a list that includes {preset.instance_type}, the servingPreset's instance type")
    need = preset.worker_neuron_devices * preset.max_workers
    if need > limit:
        r.bad(
            limit_key,
            limit,
            f"at least {need} ({preset.max_workers} worker(s) of {preset.worker_neuron_devices} Neuron devices for "
            f"servingPreset {preset.name})",
        )


def _benchmark(r: _Reader) -> BenchmarkConfig:
    enabled = r.text("benchmarkEnabled", choices=("true", "false"), fallback="false")
    prefix = r.text(
        "benchmarkResultsPrefix",
        pattern=r"|[a-z0-9][a-z0-9-]{0,62}(?:/[a-z0-9][a-z0-9-]{0,62}){0,3}",
        allowed="empty (results in the Job's log only) or an S3 key prefix of lowercase words, e.g. benchmarks",
    )
    return BenchmarkConfig(enabled=enabled == "true", results_prefix=prefix)


_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"


def _monitoring(r: _Reader) -> MonitoringConfig:
    emails = r.text_list(
        "alertEmails", lambda v: re.fullmatch(_EMAIL, v) is not None, "an e-mail address such as ops@example.com"
    )
    if len(set(emails)) != len(emails):
        r.bad("alertEmails", list(emails), "each address once")
    ttft = r.integer("alertTtftP95Ms", 100, 600000, allowed="milliseconds from 100 to 600000", fallback=5000)
    errors = r.integer("alert5xxPercent", 1, 100, allowed="a percentage from 1 to 100", fallback=5)
    return MonitoringConfig(alert_emails=emails, ttft_p95_alert_ms=ttft, error_5xx_alert_percent=errors)


def _ci(r: _Reader) -> CiConfig:
    repository = r.text(
        "githubRepository",
        pattern=r"|[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}",
        allowed="empty (no CI bootstrap) or a GitHub repository as owner/name, e.g. acme/eks-neuron-llm",
    )
    return CiConfig(github_repository=repository)


def parse(raw: Mapping[str, str], *, stack: str) -> StackConfig:
    """Validate the raw engine config as a whole; raise ``ConfigError`` listing every problem."""
    r = _Reader(raw)
    sections = _read_all(r)
    r.unknown_keys(KNOWN_KEYS)
    if r.problems:
        raise ConfigError(r.problems)
    tags = sections.pop("tags")
    return StackConfig(
        project=PROJECT,
        stack=stack,
        tags=MappingProxyType({"project": PROJECT, "stack": stack, **tags}),
        **sections,
    )


def _read_all(r: _Reader) -> dict[str, Any]:
    """Read every key once, section by section; the keys read here are the set of known keys.

    Each section's parser reads all of its keys unconditionally (so an empty probe discovers them) and records
    problems on ``r``; checks that span sections go after the sections they compare.
    """
    environment = r.text("environment", choices=("dev", "prod"), fallback="dev")
    return {
        "environment": cast(Environment, environment),
        "region": r.text("aws:region", choices=ACCELERATOR_REGIONS, fallback=ACCELERATOR_REGIONS[0]),
        "tags": r.text_map("tags"),
        "network": _network(r),
        "cluster": _cluster(r, environment),
        "capacity": (capacity := _capacity(r)),
        "serving": _serving(r, capacity),
        "benchmark": _benchmark(r),
        "ci": _ci(r),
        "monitoring": _monitoring(r),
    }


def _keys_read() -> set[str]:
    probe = _Reader({})
    _read_all(probe)
    return probe.read


KNOWN_KEYS: frozenset[str] = frozenset(_keys_read())


def raw_from_engine() -> dict[str, str]:
    """Every config value the engine passed to this program (the CLI, or the render harness's mocks)."""
    values: dict[str, Any] = dict(pulumi.runtime.config.get_config_env())
    values.update(pulumi.runtime.config.CONFIG.get())
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def load() -> StackConfig:
    """Build the stack's config from what the Pulumi engine passed in."""
    return parse(raw_from_engine(), stack=pulumi.get_stack())
