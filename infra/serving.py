"""Serving: the vLLM RayService and what it needs around it.

- namespace ``vllm``; the serve code as a ConfigMap (``workloads.rayservice``); the HF token Secret (only when the
  ``hfToken`` secret is set); the NetworkPolicies (``workloads.netpol``);
- the worker service account and its Pod Identity role, which may read and write only the artifact prefix of
- the compiled-artifact bucket: private, encrypted, TLS-only, owner-enforced, incomplete uploads cleaned up;
- the ECR repository the serving image is pushed to (scan on push, immutable tags, lifecycle policy), and the image
  itself: built in-region by ``infra.image.ServingImage`` unless ``servingImage`` names a prebuilt one;
- the RayService itself, after the KubeRay operator (its chart installs the CRDs);
- the endpoint's API key (``random.RandomPassword``, a Secret the workers' gate reads; ``api_key`` for the other
  namespaces that call the endpoint), and a PodDisruptionBudget that keeps a serve worker up through node drains;
- with ``gcsFaultTolerance``: the GCS store (``infra/gcs_store.py``) and the RayService's ``gcsFaultToleranceOptions``.

The compiled-artifact cache: a worker restores the Neuron compile output for its exact inputs (model, engine shape,
SDK versions; ``workloads/serve/cache.py``) from ``s3://<bucket>/neuron-artifacts/`` before the engine starts, and
uploads it after a fresh compile, so a restarted or scaled-out worker loads instead of recompiling.
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


def artifact_policy(bucket_arn: str, prefix: str = ARTIFACT_PREFIX) -> dict[str, Any]:
    """What a worker may do: list its prefix, read and write objects under it; nothing else in the bucket."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListArtifactPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}},
            },
            {
                "Sid": "ReadWriteArtifacts",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": f"{bucket_arn}/{prefix}/*",
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
    config: ServingConfig
    cluster_name: str
    region: str
    protect_data: bool  # prod: the artifact bucket outlives the stack
    cluster: Cluster
    kuberay: KubeRay
    # Where the GCS store goes (gcsFaultTolerance): the VPC and its private subnets.
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[Sequence[str]]
    # The Karpenter NodePool the workers launch on and the Neuron device plugin release: ordering only (see below).
    capacity: Sequence[pulumi.Resource] = field(default_factory=list)


class Serving(pulumi.ComponentResource):
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
        cluster = args.cluster
        child = pulumi.ResourceOptions(parent=self)
        on_k8s = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        preset = presets.PRESETS[cfg.preset]
        ns_name = rayservice.NAMESPACE
        if base_image_warning(cfg.image):
            pulumi.log.warn(base_image_warning(cfg.image) or "", resource=self)

        # --- AWS: image repository, artifact bucket, worker role -------------------------------------------------
        self.repository = aws.ecr.Repository(
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
            f"{name}-image", repository=self.repository.name, policy=json.dumps(ecr_lifecycle()), opts=child
        )

        # prod: the bucket and its settings (encryption, public access block, TLS-only policy) outlive the stack; a
        # kept bucket whose public access block had been deleted would be weaker than the one the stack made.
        data = pulumi.ResourceOptions(parent=self, retain_on_delete=args.protect_data)
        self.artifact_bucket = aws.s3.Bucket(
            f"{name}-artifacts",
            bucket_prefix=f"{args.cluster_name.lower()}-artifacts-"[:37],  # S3: lowercase, prefix <= 37
            force_destroy=not args.protect_data,
            opts=data,
        )
        bucket_id = self.artifact_bucket.id
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
            policy=self.artifact_bucket.arn.apply(lambda arn: iam.to_json(tls_only_policy(arn))),
            # S3 rejects a bucket policy while the public access block is being changed concurrently.
            opts=pulumi.ResourceOptions.merge(data, pulumi.ResourceOptions(depends_on=[public_block])),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-artifacts",
            bucket=bucket_id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=f"{ARTIFACT_PREFIX}/"),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=1
                    ),
                )
            ],
            opts=data,
        )

        # --- The image: built in-region from workloads/image (the default), or the prebuilt one config names -------
        image: pulumi.Input[str] = cfg.image
        if cfg.builds_image:
            image = ServingImage(
                f"{name}-build",
                ServingImageArgs(
                    cluster_name=args.cluster_name,
                    region=args.region,
                    repository=self.repository,
                    bucket=self.artifact_bucket,
                ),
                opts=child,
            ).image
        self.image = pulumi.Output.from_input(image)

        # --- Kubernetes: namespace, service account, secrets, code, policies -------------------------------------
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(name=ns_name), opts=on_k8s
        )
        ns = namespace.metadata.name
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
            description=f"Ray workers of {args.cluster_name}: compiled-artifact cache in S3 (Pod Identity)",
            parent=self,
        )
        secrets: list[pulumi.Resource] = []
        hf_secret_name: str | None = None
        if cfg.hf_token is not None:
            hf_secret_name = rayservice.HF_TOKEN_SECRET
            secrets.append(hf_token_secret(f"{name}-hf-token", ns, cfg.hf_token, on_k8s))
        # The endpoint's API key: random, in the stack's encrypted state; `pulumi up --replace` on it rotates it.
        key = random.RandomPassword(f"{name}-api-key", length=48, special=False, opts=child)
        self.api_key = key.result.apply(pulumi.Output.secret)
        secrets.append(api_key_secret(f"{name}-api-key", ns, self.api_key, on_k8s))

        # GCS fault tolerance (prod): the store, its token Secret and the security group policy of the head pods.
        self.gcs_store = None
        gcs_ready: list[pulumi.Resource] = []
        gcs_address: pulumi.Output[str | None] = pulumi.Output.from_input(None)
        if cfg.gcs_fault_tolerance:
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
                opts=child,
            )
            gcs_ready = [*self.gcs_store.ready, *cluster.pod_security_groups]
            gcs_address = self.gcs_store.address
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

        # --- The RayService ----------------------------------------------------------------------------------------
        def build(bucket: str, image: str, address: str | None) -> dict[str, Any]:
            return rayservice.rayservice(
                rayservice.RayServiceInputs(
                    preset=preset,
                    model_id=cfg.model_id,
                    image=image,
                    region=args.region,
                    code_sha256=rayservice.code_hash(files),
                    artifact_cache_uri=f"s3://{bucket}/{ARTIFACT_PREFIX}",
                    hf_token_secret=hf_secret_name,
                    gcs_store=rayservice.GcsStore(address) if address else None,
                    # The Ray dashboard's metrics views: Prometheus and Grafana of the monitoring namespace.
                    head_env=monitoring.ray_dashboard_env(),
                )
            )

        # The image is an output of the build when the stack builds it: the RayService waits for the build.
        manifest = pulumi.Output.all(bucket=self.artifact_bucket.bucket, image=self.image, address=gcs_address).apply(
            lambda a: build(**a)
        )
        self.rayservice = k8s.apiextensions.CustomResource(
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
                provider=cluster.provider,
                depends_on=[
                    # The chart installs the RayService CRD and runs the operator that reconciles it.
                    args.kuberay.release,
                    # Mounted by name, not referenced: pods would wait on a missing ConfigMap or service account.
                    code_map,
                    service_account,
                    # Credentials (Pod Identity) and the permissions behind them, before the workers start.
                    *worker_identity.ready,
                    *secrets,
                    # Worker nodes come from this NodePool and advertise devices through the Neuron device plugin;
                    # on destroy, the RayService (and its nodes' pods) go first, while Karpenter can still drain.
                    *args.capacity,
                    # The head reads the store's token and gets its security group (pod ENIs on, the VPC resource
                    # controller allowed) before it starts; on destroy it goes first.
                    *gcs_ready,
                ],
            ),
        )
        budget = rayservice.worker_disruption_budget()
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-workers-pdb",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=budget["metadata"]["name"], namespace=ns, labels=budget["metadata"]["labels"]
            ),
            spec=budget["spec"],
            # Ordering only: on destroy the budget goes before the pool drains, so it can never hold a drain up.
            opts=pulumi.ResourceOptions(parent=self, provider=cluster.provider, depends_on=list(args.capacity)),
        )

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
