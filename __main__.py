"""eks-neuron-llm: an empty AWS account to Llama-3-8B-Instruct on Inferentia2, as one dependency graph."""

import pulumi
import pulumi_aws as aws

from infra.bench import Benchmark, BenchmarkArgs
from infra.ci import CiAccess, CiAccessArgs
from infra.cluster import DEFAULT_STORAGE_CLASS, RETAINED_STORAGE_CLASS, Cluster, ClusterArgs
from infra.config import load
from infra.karpenter import Karpenter, KarpenterArgs
from infra.kuberay import KubeRay, KubeRayArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.network import Network, NetworkArgs
from infra.neuron import Neuron, NeuronArgs
from infra.observability import Observability, ObservabilityArgs
from infra.openwebui import OpenWebUI, OpenWebUIArgs, port_forward_command
from infra.serving import Serving, ServingArgs, api_key_command, port_forward_commands
from workloads.bench import NAME as BENCH_JOB
from workloads.bench import NAMESPACE as BENCH_NAMESPACE
from workloads.presets import PRESETS
from workloads.topology import DEFAULT_POOL

# Config: one validated object; a bad value stops here with one line per problem.
cfg = load()

# Every AWS resource goes through this provider, so every one carries the stack's tags.
aws_provider = aws.Provider("aws", region=cfg.region, default_tags=aws.ProviderDefaultTagsArgs(tags=dict(cfg.tags)))
on_aws = pulumi.ResourceOptions(providers={"aws": aws_provider})

# The accelerator types the subnets' zones must sell: the serving type first (only it is required in every zone),
# then every type the accelerator pools may launch (zones selling more of them are preferred).  The serving preset's
# instance type goes here, in SERVING_INSTANCE_TYPE, and nowhere else.
SERVING_PRESET = PRESETS[cfg.serving.preset]
SERVING_INSTANCE_TYPE = SERVING_PRESET.instance_type
zone_instance_types = tuple(
    dict.fromkeys((SERVING_INSTANCE_TYPE, *cfg.capacity.inf2_instance_types, *cfg.capacity.trn1_instance_types))
)

# Network: subnets in zones that sell the accelerator the serving preset needs.
network = Network(
    "network",
    NetworkArgs(
        config=cfg.network,
        region=cfg.region,
        cluster_name=cfg.cluster.name,
        zone_instance_types=zone_instance_types,
    ),
    opts=on_aws,
)

# Cluster: control plane, system node group, managed add-ons, and the Kubernetes provider for everything after it.
cluster = Cluster(
    "cluster",
    ClusterArgs(
        config=cfg.cluster,
        vpc_id=network.vpc_id,
        private_subnet_ids=network.private_subnet_ids,
        public_subnet_ids=network.public_subnet_ids,
        private_egress=network.private_egress,
        retained_storage=cfg.is_prod,
        # The Ray head gets a security group of its own, the only one the GCS store admits.
        pod_security_groups=cfg.serving.gcs_fault_tolerance,
    ),
    opts=on_aws,
)

# Capacity: Karpenter (IAM, interruption queue, charts) and its node classes and pools: default, inf2, trn1.
karpenter = Karpenter(
    "karpenter",
    KarpenterArgs(
        config=cfg.capacity,
        cluster_name=cfg.cluster.name,
        cluster_version=cfg.cluster.version,
        region=cfg.region,
        cluster=cluster,
        tags=cfg.tags,
    ),
    opts=on_aws,
)

# Accelerators: the Neuron device plugin, scheduler extension and second scheduler (my-scheduler).
neuron = Neuron("neuron", NeuronArgs(cluster_version=cfg.cluster.version, cluster=cluster), opts=on_aws)

# Observability: CloudWatch Container Insights with Neuron metrics, and the accelerated-capacity dashboard.
observability = Observability(
    "observability",
    ObservabilityArgs(
        cluster_name=cfg.cluster.name,
        cluster_version=cfg.cluster.version,
        region=cfg.region,
        cluster=cluster,
        capacity=[karpenter.node_pools[DEFAULT_POOL]],
    ),
    opts=on_aws,
)

# Metrics: Prometheus, Alertmanager (alerts to an SNS topic), Grafana and kube-state-metrics on the default pool.
metrics = Monitoring(
    "monitoring",
    MonitoringArgs(
        config=cfg.monitoring,
        cluster_name=cfg.cluster.name,
        region=cfg.region,
        # prod: the metrics history's volume outlives the stack (Retain); dev: it goes with it.
        storage_class=RETAINED_STORAGE_CLASS if cfg.is_prod else DEFAULT_STORAGE_CLASS,
        protect_data=cfg.is_prod,
        cluster=cluster,
        capacity=[karpenter.node_pools[DEFAULT_POOL]],
    ),
    opts=on_aws,
)

# Serving: the KubeRay operator, then the vLLM RayService with its bucket, image repository, secrets and policies.
kuberay = KubeRay("kuberay", KubeRayArgs(cluster=cluster), opts=on_aws)
serving = Serving(
    "serving",
    ServingArgs(
        config=cfg.serving,
        cluster_name=cfg.cluster.name,
        region=cfg.region,
        protect_data=cfg.is_prod,
        cluster=cluster,
        kuberay=kuberay,
        vpc_id=network.vpc_id,
        private_subnet_ids=network.private_subnet_ids,
        capacity=[karpenter.node_pools[SERVING_PRESET.pool], neuron.release],
    ),
    opts=on_aws,
)

# UI: Open WebUI in front of the serve endpoint, on the default (x86) pool.
ui = OpenWebUI(
    "openwebui",
    OpenWebUIArgs(
        enable_signup=cfg.serving.openwebui_enable_signup,
        storage_gib=cfg.serving.openwebui_storage_gib,
        # prod: the chat history's volume outlives the stack (Retain); dev: it goes with it.
        storage_class=RETAINED_STORAGE_CLASS if cfg.is_prod else DEFAULT_STORAGE_CLASS,
        protect_data=cfg.is_prod,
        cluster=cluster,
        api_key=serving.api_key,
        capacity=[karpenter.node_pools[DEFAULT_POOL]],
    ),
    opts=on_aws,
)

# Benchmark: the vllm bench serve sweep against the serve endpoint, as a Job in namespace bench (only when enabled).
if cfg.benchmark.enabled:
    benchmark = Benchmark(
        "benchmark",
        BenchmarkArgs(
            config=cfg.benchmark,
            cluster_name=cfg.cluster.name,
            model_id=cfg.serving.model_id,
            hf_token=cfg.serving.hf_token,
            api_key=serving.api_key,
            cluster=cluster,
            artifact_bucket=serving.artifact_bucket,
            target=serving.rayservice,
            capacity=[karpenter.node_pools[DEFAULT_POOL]],
        ),
        opts=on_aws,
    )
    pulumi.export("benchmarkResultsUri", benchmark.results_uri)
    pulumi.export("benchmarkLogs", f"kubectl -n {BENCH_NAMESPACE} logs -f job/{BENCH_JOB} --all-containers")

# CI: GitHub OIDC provider and the preview/deploy roles of the workflows, only when a repository is configured.
if cfg.ci.enabled:
    ci = CiAccess("ci", CiAccessArgs(config=cfg.ci, region=cfg.region, cluster_name=cluster.name), opts=on_aws)
    pulumi.export("ciPreviewRoleArn", ci.preview_role_arn)
    pulumi.export("ciDeployRoleArn", ci.deploy_role_arn)

# Outputs.
pulumi.export("clusterName", cluster.name)
pulumi.export("region", cfg.region)
pulumi.export("vpcId", network.vpc_id)
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("oidcProviderArn", cluster.oidc_provider_arn)
pulumi.export("nodePoolNames", karpenter.node_pool_names)
pulumi.export("interruptionQueueName", karpenter.interruption_queue_name)
pulumi.export("dashboardUrl", observability.dashboard_url)
pulumi.export("grafanaPortForward", metrics.grafana_port_forward)
pulumi.export("alertTopicArn", metrics.alert_topic_arn)
pulumi.export("servingEndpoint", serving.endpoint)
pulumi.export("servingApiKeyCommand", api_key_command())
pulumi.export("modelId", serving.model_id)
pulumi.export("servingImage", serving.image)
pulumi.export("imageRepositoryUrl", serving.image_repository_url)
pulumi.export("artifactBucketName", serving.artifact_bucket_name)
pulumi.export("servePortForward", port_forward_commands()["serve"])
pulumi.export("rayDashboardPortForward", port_forward_commands()["dashboard"])
pulumi.export("openWebuiPortForward", port_forward_command())
pulumi.export(
    "kubectlSetup",
    cluster.name.apply(lambda n: f"aws eks update-kubeconfig --region {cfg.region} --name {n}"),
)
