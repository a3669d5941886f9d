"""Serving: the vLLM RayService and what it needs around it.

- namespace ``vllm``; the serve code as a ConfigMap (``workloads.rayservice``); the HF token Secret (only when the
  ``hfToken`` secret is set); the NetworkPolicies (``workloads.netpol``);
- the worker service account and its Pod Identity role, which may read and write only the artifact and weights
  prefixes of
- the compiled-artifact bucket: private, encrypted, TLS-only, owner-enforced, incomplete uploads cleaned up;
- the ECR repository the serving image is pushed to (scan on push, immutable tags, lifecycle policy), and the image
  itself: built in-region by ``infra.image.ServingImage`` unless ``servingImage`` names a prebuilt one;
- the RayService itself, after the KubeRay operator (its chart installs the CRDs);
- the endpoint's API key (``random.RandomPassword``, a Secret the workers' gate reads; ``api_key`` for the other
  namespaces that call the endpoint), and a PodDisruptionBudget that keeps a serve worker up through node drains;
- with ``gcsFaultTolerance``: the GCS store (``infra/gcs_store.py``) and the RayService's ``gcsFaultToleranceOptions``.

The compiled-artifact cache: a worker restores the Neuron compile output for its exact inputs (model, engine shape,
SDK versions; ``workloads/serve/cache.py``) from ``s3://<bucket>/neuron-artifacts/`` before the engine starts, and
uploads it after a fresh compile, so a restarted or scaled-out worker loads instead of recompiling.  The model's
weights likewise (``s3://<bucket>/model-weights/<model>/<revision>/``, ``workloads/serve/weights.py``): the first
worker downloads them from the Hugging Face Hub and uploads them, later workers restore them from the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra import iam
from infra.config import ServingConfig
from infra.gcs_store import GcsStore, GcsStoreArgs
from infra.image import ServingImage, ServingImageArgs, base_image, ecr_lifecycle
from infra.k8s_secret import opaque_secret
from infra.kuberay import NAMESPACE as KUBERAY_NAMESPACE
from workloads import monitoring, netpol, presets, rayservice

if TYPE_CHECKING:
    from infra.cluster import Cluster
    from infra.kuberay import KubeRay

ARTIFACT_PREFIX: Final = "neuron-artifacts"
WEIGHTS_PREFIX: Final = "model-weights"  # workloads/serve/weights.py: the model's files, saved by the first worker
WORKER_PREFIXES: Final = (ARTIFACT_PREFIX, WEIGHTS_PREFIX)


def artifact_policy(bucket_arn: str, prefixes: Sequence[str] = WORKER_PREFIXES) -> dict[str, Any]:
    """What a worker may do: list its prefixes, read and write objects under them; nothing else in the bucket."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListArtifactPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{p}/*" for p in prefixes]}},
            },
            {
                "Sid": "ReadWriteArtifacts",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": [f"{bucket_arn}/{p}/*" for p in prefixes],
            },
        ],
    }


def tls_only_policy(bucket_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def base_image_warning(image: str) -> str | None:
    """A warning when ``servingImage`` names the Neuron base image workloads/image builds on, else None."""
    base = base_image()
    repository = f"{base.registry}/{base.repository}"
    if not image.startswith((repository + ":", repository + "@")):
        return None
    return (
        f"servingImage is the Neuron base image {image}, which has no ray[serve]: the RayService will not become "
        "ready. Leave eks-neuron-llm:servingImage empty and `pulumi up` builds workloads/image on top of it "
        "(docs/serving-image.md); a RayService past its initializing timeout must be replaced "
        "(pulumi up --replace <its URN>)."
    )


def api_key_command(namespace: str = rayservice.NAMESPACE) -> str:
    """How an operator reads the serve endpoint's API key (stack output ``servingApiKeyCommand``)."""
    return (
        f"kubectl -n {namespace} get secret {rayservice.API_KEY_SECRET} "
        f"-o jsonpath='{{.data.{rayservice.API_KEY_SECRET_KEY}}}' | base64 -d"
    )


def api_key_secret(
    resource_name: str, namespace: pulumi.Input[str], key: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> k8s.core.v1.Secret:
    """The serve endpoint's API key as a Secret (the workers' gate, Open WebUI and the benchmark read it)."""
    return opaque_secret(
        resource_name,
        namespace,
        name=rayservice.API_KEY_SECRET,
        key=rayservice.API_KEY_SECRET_KEY,
        value=key,
        opts=opts,
    )


def port_forward_commands(namespace: str = rayservice.NAMESPACE, name: str = rayservice.NAME) -> dict[str, str]:
    return {
        "serve": f"kubectl -n {namespace} port-forward svc/{rayservice.serve_service_name(name)} 8000:8000",
        "dashboard": (
            f"kubectl -n {namespace} port-forward svc/{rayservice.head_service_name(name)} "
            f"{rayservice.DASHBOARD_PORT}:{rayservice.DASHBOARD_PORT}"
        ),
    }


def hf_token_secret(
    resource_name: str, namespace: pulumi.Input[str], token: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> k8s.core.v1.Secret:
    """The Hugging Face token as the Secret the Ray workers (and the benchmark's tokenizer) read it from."""
    return opaque_secret(
        resource_name, namespace, name=rayservice.HF_TOKEN_SECRET, key=rayservice.HF_TOKEN_KEY, value=token, opts=opts
    )


@dataclass
class ServingArgs:
    """What the serving component needs; ``__main__.py`` fills it from the stack config and the other components."""

    config: ServingConfig
    """The serving section of the stack config (``infra.config``): preset, model, image, HF token, GCS store."""
    cluster_name: str
    """Name of the EKS cluster (config ``clusterName``): names the image repository, the bucket and the GCS store."""
    region: str
    """AWS region of the stack (config ``aws:region``): where the image is built and the workers reach S3."""
    protect_data: bool
    """prod: the artifact bucket (and its settings) outlive the stack (``retainOnDelete``, no force-destroy)."""
    cluster: Cluster
    """The cluster component: Kubernetes provider, cluster name for Pod Identity, security groups for pods."""
    kuberay: KubeRay
    """The KubeRay component: its release installs the RayService CRD and the operator that reconciles it."""
    vpc_id: pulumi.Input[str]
    """The VPC (the network component's ``vpc_id``): where the GCS store goes (config ``gcsFaultTolerance``)."""
    private_subnet_ids: pulumi.Input[Sequence[str]]
    """Private subnets (the network's): where the GCS store's nodes go."""
    node_prerequisites: Sequence[pulumi.Resource] = field(default_factory=list)
    """Ordering only: the Karpenter NodePool the workers launch on and the Neuron device plugin release.  On destroy
    the RayService (and its pods) go first, while Karpenter can still drain."""


@dataclass(frozen=True)
class _GcsStoreUse:
    """What the RayService needs of the GCS store: what to wait for, and the store's address (``None`` without)."""

    ready: Sequence[pulumi.Resource]
    address: pulumi.Output[str | None]


@dataclass(frozen=True)
class _Mounted:
    """What the Ray pods mount or name: the serve code and its files, the worker service account, the Secrets."""

    code_map: k8s.core.v1.ConfigMap
    files: dict[str, str]
    service_account: k8s.core.v1.ServiceAccount
    worker_identity: Sequence[pulumi.Resource]
    secrets: Sequence[pulumi.Resource]
    hf_token_secret: str | None


class Serving(pulumi.ComponentResource):
    """The vLLM RayService and what it needs around it (see the module): the image repository and the image, the
    compiled-artifact cache bucket, the worker identity, Secrets, serve code, NetworkPolicies, the GCS store (with
    ``gcsFaultTolerance``) and the workers' disruption budget.

    Outputs: ``endpoint``, ``model_id``, ``image``, ``image_repository_url``, ``artifact_bucket_name`` and
    ``api_key`` (secret); ``rayservice`` and ``artifact_bucket`` for the benchmark."""

    rayservice: k8s.apiextensions.CustomResource
    artifact_bucket: aws.s3.Bucket
    repository: aws.ecr.Repository
    endpoint: pulumi.Output[str]
    # The endpoint's API key (secret): other namespaces that call the endpoint make their own Secret of it.
    api_key: pulumi.Output[str]
    gcs_store: GcsStore | None
    model_id: pulumi.Output[str]
    image: pulumi.Output[str]  # the image the Ray head and workers run
    image_repository_url: pulumi.Output[str]
    artifact_bucket_name: pulumi.Output[str]

    def __init__(self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Serving", name, None, opts)
        cfg = args.config
        if base_image_warning(cfg.image):
            pulumi.log.warn(base_image_warning(cfg.image) or "", resource=self)

        self.repository = self._image_repository(name, args)
        self.artifact_bucket = self._artifact_cache(name, args)
        self.image = self._image(name, args)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=rayservice.NAMESPACE),
            opts=pulumi.ResourceOptions(parent=self, provider=args.cluster.provider),
        )
        ns = namespace.metadata.name
        mounted = self._mounted(name, args, ns)
        gcs = self._gcs_store(name, args, ns)
        self.rayservice = self._rayservice(name, args, ns, mounted, gcs)
        self._disruption_budget(name, args, ns)

        self.endpoint = pulumi.Output.from_input(rayservice.serve_base_url())
        self.model_id = pulumi.Output.from_input(cfg.model_id)
        self.image_repository_url = self.repository.repository_url
        self.artifact_bucket_name = self.artifact_bucket.bucket
        self.register_outputs(
            {
                "servingApiKeyCommand": api_key_command(),
                "servingEndpoint": self.endpoint,
                "modelId": self.model_id,
                "servingImage": self.image,
                "imageRepositoryUrl": self.image_repository_url,
                "artifactBucketName": self.artifact_bucket_name,
            }
        )

    def _image_repository(self, name: str, args: ServingArgs) -> aws.ecr.Repository:
        """The ECR repository the serving image is pushed to (scan on push, immutable tags) and its lifecycle."""
        child = pulumi.ResourceOptions(parent=self)
        repository = aws.ecr.Repository(
            f"{name}-image",
            name=f"{args.cluster_name.lower()}/serving",  # ECR names are lowercase
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            # The stack rebuilds its image from workloads/image on the next `pulumi up`; a repository that refused to go
            # while it holds images would stop `pulumi destroy` halfway.
            force_delete=True,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-image", repository=repository.name, policy=json.dumps(ecr_lifecycle()), opts=child
        )
        return repository

    def _artifact_cache(self, name: str, args: ServingArgs) -> aws.s3.Bucket:
        """The compiled-artifact bucket: private, encrypted, TLS-only, owner-enforced, incomplete uploads cleaned up.

        prod: the bucket and its settings (encryption, public access block, TLS-only policy) outlive the stack; a
        kept bucket whose public access block had been deleted would be weaker than the one the stack made."""
        data = pulumi.ResourceOptions(parent=self, retain_on_delete=args.protect_data)
        bucket = aws.s3.Bucket(
            f"{name}-artifacts",
            bucket_prefix=f"{args.cluster_name.lower()}-artifacts-"[:37],  # S3: lowercase, prefix <= 37
            force_destroy=not args.protect_data,
            opts=data,
        )
        bucket_id = bucket.id
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-artifacts",
            bucket=bucket_id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=data,
        )
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-artifacts",
            bucket=bucket_id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=data,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-artifacts",
            bucket=bucket_id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=data,
        )
        aws.s3.BucketPolicy(
            f"{name}-artifacts",
            bucket=bucket_id,
            policy=bucket.arn.apply(lambda arn: iam.to_json(tls_only_policy(arn))),
            # S3 rejects a bucket policy while the public access block is being changed concurrently.
            opts=pulumi.ResourceOptions.merge(data, pulumi.ResourceOptions(depends_on=[public_block])),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-artifacts",
            bucket=bucket_id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads" + ("" if prefix == ARTIFACT_PREFIX else f"-{prefix}"),
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=f"{prefix}/"),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=1
                    ),
                )
                for prefix in WORKER_PREFIXES
            ],
            opts=data,
        )
        return bucket

    def _image(self, name: str, args: ServingArgs) -> pulumi.Output[str]:
        """The image: built in-region from workloads/image (the default), or the prebuilt one config names."""
        image: pulumi.Input[str] = args.config.image
        if args.config.builds_image:
            image = ServingImage(
                f"{name}-build",
                ServingImageArgs(
                    cluster_name=args.cluster_name,
                    region=args.region,
                    repository=self.repository,
                    bucket=self.artifact_bucket,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            ).image
        return pulumi.Output.from_input(image)

    def _mounted(self, name: str, args: ServingArgs, ns: pulumi.Output[str]) -> _Mounted:
        """The worker service account and its Pod Identity role (the artifact prefix only), the HF token and API key
        Secrets, the serve code ConfigMap and the NetworkPolicies."""
        cfg, cluster = args.config, args.cluster
        on_k8s = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-worker",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=rayservice.WORKER_SERVICE_ACCOUNT, namespace=ns),
            # No Kubernetes API access needed; Pod Identity mounts its own token.
            automount_service_account_token=False,
            opts=on_k8s,
        )
        worker_identity = iam.pod_identity_role(
            f"{name}-worker",
            cluster_name=cluster.name,
            namespace=ns,
            service_account=service_account.metadata.name,
            inline=self.artifact_bucket.arn.apply(lambda arn: iam.to_json(artifact_policy(arn))),
            description=f"Ray workers of {args.cluster_name}: compiled-artifact and weights cache in S3 (Pod Identity)",
            parent=self,
        )
        secrets: list[pulumi.Resource] = []
        hf_secret_name: str | None = None
        if cfg.hf_token is not None:
            hf_secret_name = rayservice.HF_TOKEN_SECRET
            secrets.append(hf_token_secret(f"{name}-hf-token", ns, cfg.hf_token, on_k8s))
        # The endpoint's API key: random, in the stack's encrypted state; `pulumi up --replace` on it rotates it.
        key = random.RandomPassword(
            f"{name}-api-key", length=48, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        self.api_key = key.result.apply(pulumi.Output.secret)
        secrets.append(api_key_secret(f"{name}-api-key", ns, self.api_key, on_k8s))
        files = rayservice.serve_code_files()
        code = rayservice.code_configmap(files)
        code_map = k8s.core.v1.ConfigMap(
            f"{name}-code",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=code["metadata"]["name"], namespace=ns, labels=code["metadata"]["labels"]
            ),
            data=code["data"],
            opts=on_k8s,
        )
        for policy in netpol.serving_policies(operator_namespace=KUBERAY_NAMESPACE):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol-{policy['metadata']['name']}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=policy["metadata"]["name"], namespace=ns),
                spec=policy["spec"],
                opts=on_k8s,
            )
        return _Mounted(code_map, files, service_account, worker_identity.ready, secrets, hf_secret_name)

    def _gcs_store(self, name: str, args: ServingArgs, ns: pulumi.Output[str]) -> _GcsStoreUse:
        """GCS fault tolerance (prod): the store, its token Secret and the security group policy of the head pods."""
        self.gcs_store = None
        if not args.config.gcs_fault_tolerance:
            return _GcsStoreUse((), pulumi.Output.from_input(None))
        cluster = args.cluster
        self.gcs_store = GcsStore(
            f"{name}-gcs",
            GcsStoreArgs(
                cluster_name=args.cluster_name,
                vpc_id=args.vpc_id,
                subnet_ids=args.private_subnet_ids,
                cluster_security_group_id=cluster.cluster_security_group_id,
                namespace=ns,
                provider=cluster.provider,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return _GcsStoreUse((*self.gcs_store.ready, *cluster.pod_security_groups), self.gcs_store.address)

    def _rayservice(
        self, name: str, args: ServingArgs, ns: pulumi.Output[str], mounted: _Mounted, gcs: _GcsStoreUse
    ) -> k8s.apiextensions.CustomResource:
        """The RayService (``workloads.rayservice``), after the operator and everything its pods mount or need."""
        cfg = args.config
        preset = presets.PRESETS[cfg.preset]

        def build(bucket: str, image: str, address: str | None) -> dict[str, Any]:
            return rayservice.rayservice(
                rayservice.RayServiceInputs(
                    preset=preset,
                    model_id=cfg.model_id,
                    image=image,
                    region=args.region,
                    code_sha256=rayservice.code_hash(mounted.files),
                    artifact_cache_uri=f"s3://{bucket}/{ARTIFACT_PREFIX}",
                    weights_cache_uri=f"s3://{bucket}/{WEIGHTS_PREFIX}",
                    hf_token_secret=mounted.hf_token_secret,
                    gcs_store=rayservice.GcsStore(address) if address else None,
                    # The Ray dashboard's metrics views: Prometheus and Grafana of the monitoring namespace.
                    head_env=monitoring.ray_dashboard_env(),
                )
            )

        # The image is an output of the build when the stack builds it: the RayService waits for the build.
        manifest = pulumi.Output.all(bucket=self.artifact_bucket.bucket, image=self.image, address=gcs.address).apply(
            lambda a: build(**a)
        )
        return k8s.apiextensions.CustomResource(
            f"{name}-rayservice",
            api_version=rayservice.API_VERSION,
            kind="RayService",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=rayservice.NAME,
                namespace=ns,
                labels=dict(rayservice.RAY_POD_LABELS),
                annotations=manifest.apply(lambda m: m["metadata"]["annotations"]),
            ),
            spec=manifest.apply(lambda m: m["spec"]),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.cluster.provider,
                depends_on=[
                    # The chart installs the RayService CRD and runs the operator that reconciles it.
                    args.kuberay.release,
                    # Mounted by name, not referenced: pods would wait on a missing ConfigMap or service account.
                    mounted.code_map,
                    mounted.service_account,
                    # Credentials (Pod Identity) and the permissions behind them, before the workers start.
                    *mounted.worker_identity,
                    *mounted.secrets,
                    # Worker nodes come from this NodePool and advertise devices through the Neuron device plugin;
                    # on destroy, the RayService (and its nodes' pods) go first, while Karpenter can still drain.
                    *args.node_prerequisites,
                    # The head reads the store's token and gets its security group (pod ENIs on, the VPC resource
                    # controller allowed) before it starts; on destroy it goes first.
                    *gcs.ready,
                ],
            ),
        )

    def _disruption_budget(self, name: str, args: ServingArgs, ns: pulumi.Output[str]) -> None:
        """The PodDisruptionBudget that keeps a serve worker up through node drains."""
        budget = rayservice.worker_disruption_budget()
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-workers-pdb",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=budget["metadata"]["name"], namespace=ns, labels=budget["metadata"]["labels"]
            ),
            spec=budget["spec"],
            # Ordering only: on destroy the budget goes before the pool drains, so it can never hold a drain up.
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.cluster.provider, depends_on=list(args.node_prerequisites)
            ),
        )
