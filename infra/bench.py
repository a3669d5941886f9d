"""Benchmark: the ``vllm bench serve`` sweep as a Job in namespace ``bench`` (only when ``benchmarkEnabled``).

- namespace ``bench`` (the serve NetworkPolicy admits its pods on the Serve port), the sweep script as a ConfigMap,
  a service account, the serve endpoint's API key Secret, the HF token Secret when one is configured (gated
  tokenizers), and the Job (``workloads.bench``);
- with ``benchmarkResultsPrefix`` set: a Pod Identity role that may only write objects under
  ``s3://<artifact bucket>/<prefix>/``, and an upload container that copies the result files there.

The Job is created once; `pulumi up` does not wait for it (``pulumi.com/skipAwait``).  Re-run it by replacing it:
``pulumi up --replace <the Job's URN>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import iam
from infra.config import BenchmarkConfig
from infra.serving import api_key_secret, hf_token_secret
from workloads import bench, rayservice

if TYPE_CHECKING:
    from infra.cluster import Cluster


@dataclass
class BenchmarkArgs:
    config: BenchmarkConfig
    cluster_name: str
    model_id: str
    hf_token: pulumi.Output[str] | None
    # The serve endpoint's API key (secret): copied into a Secret in the bench namespace for the sweep.
    api_key: pulumi.Input[str]
    cluster: Cluster
    artifact_bucket: aws.s3.Bucket
    # The RayService the Job measures: ordering only (see below).
    target: pulumi.Resource
    # The default NodePool the Job's pod lands on: ordering only.
    capacity: Sequence[pulumi.Resource] = field(default_factory=list)


class Benchmark(pulumi.ComponentResource):
    job: k8s.batch.v1.Job
    results_uri: pulumi.Output[str]

    def __init__(self, name: str, args: BenchmarkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Benchmark", name, None, opts)
        cfg = args.config
        on_k8s = pulumi.ResourceOptions(parent=self, provider=args.cluster.provider)

        ns_obj = bench.namespace()
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=ns_obj["metadata"]["name"], labels=ns_obj["metadata"]["labels"]),
            opts=on_k8s,
        )
        ns = namespace.metadata.name
        sa_obj = bench.service_account(bench.BenchInputs(model_id=args.model_id))
        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=sa_obj["metadata"]["name"], namespace=ns, labels=sa_obj["metadata"]["labels"]
            ),
            automount_service_account_token=False,
            opts=on_k8s,
        )
        mounted: list[pulumi.Resource] = [service_account, api_key_secret(f"{name}-api-key", ns, args.api_key, on_k8s)]

        hf_secret_name: str | None = None
        if args.hf_token is not None:
            hf_secret_name = rayservice.HF_TOKEN_SECRET
            mounted.append(hf_token_secret(f"{name}-hf-token", ns, args.hf_token, on_k8s))

        if cfg.results_prefix:
            prefix = cfg.results_prefix
            results = iam.pod_identity_role(
                f"{name}-results",
                cluster_name=args.cluster.name,
                namespace=ns,
                service_account=service_account.metadata.name,
                inline=args.artifact_bucket.arn.apply(lambda arn: iam.to_json(bench.results_policy(arn, prefix))),
                description=f"Benchmark Job of {args.cluster_name}: writes result files under one S3 prefix",
                parent=self,
            )
            mounted.extend(results.ready)
            self.results_uri = args.artifact_bucket.bucket.apply(lambda b: f"s3://{b}/{prefix}")
        else:
            self.results_uri = pulumi.Output.from_input("")

        def inputs(uri: str) -> bench.BenchInputs:
            return bench.BenchInputs(model_id=args.model_id, results_uri=uri or None, hf_token_secret=hf_secret_name)

        script = bench.script_configmap(inputs(""))
        mounted.append(
            k8s.core.v1.ConfigMap(
                f"{name}-script",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=script["metadata"]["name"], namespace=ns, labels=script["metadata"]["labels"]
                ),
                data=script["data"],
                opts=on_k8s,
            )
        )

        manifest: pulumi.Output[dict[str, Any]] = self.results_uri.apply(lambda uri: bench.job(inputs(uri)))
        self.job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=bench.NAME,
                namespace=ns,
                labels=dict(bench.LABELS),
                annotations=dict(bench.SKIP_AWAIT),
            ),
            spec=manifest.apply(lambda m: m["spec"]),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.cluster.provider,
                depends_on=[
                    # Mounted or named by the pod, not referenced: it would wait or run without credentials.
                    *mounted,
                    # The endpoint under test: measured once it exists (the first step still waits for it to be
                    # ready); on destroy, the Job goes before the RayService it loads.
                    args.target,
                    # The pod only fits on nodes of the default pool; on destroy it goes before the pool drains.
                    *args.capacity,
                ],
            ),
        )
        self.register_outputs({"benchmarkJob": self.job.metadata.name, "benchmarkResultsUri": self.results_uri})
