"""Open WebUI: namespace, session-key Secret, data volume, Deployment and Service (``workloads.openwebui``).

Its backend URL is derived from the RayService's name (``workloads.rayservice.serve_base_url``), so the UI and the
serve Service KubeRay creates cannot disagree.  ``WEBUI_SECRET_KEY`` signs sessions: a random 48-character value
kept in the stack's encrypted state, in a Secret; replacing the RandomPassword (``pulumi up --replace``) rotates it
and signs everyone out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.serving import api_key_secret
from workloads import openwebui, rayservice

if TYPE_CHECKING:
    from infra.cluster import Cluster


@dataclass
class OpenWebUIArgs:
    enable_signup: bool
    storage_gib: int
    storage_class: str
    protect_data: bool  # prod: the data volume's claim is kept when the stack lets go of it
    # (the volume itself survives only if storage_class reclaims with Retain: RETAINED_STORAGE_CLASS in prod)
    cluster: Cluster
    # The serve endpoint's API key (secret), copied into a Secret here: the UI sends it as OPENAI_API_KEYS.
    api_key: pulumi.Input[str]
    # The Karpenter NodePool its pod lands on: Pulumi waits for the Deployment to become ready (see below).
    capacity: Sequence[pulumi.Resource] = field(default_factory=list)


class OpenWebUI(pulumi.ComponentResource):
    service_name: pulumi.Output[str]
    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: OpenWebUIArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:OpenWebUI", name, None, opts)
        on_k8s = pulumi.ResourceOptions(parent=self, provider=args.cluster.provider)
        objects = openwebui.manifests(
            openwebui.OpenWebUIInputs(
                openai_base_url=rayservice.serve_base_url(),
                enable_signup=args.enable_signup,
                storage_gib=args.storage_gib,
                storage_class=args.storage_class,
            )
        )

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(name=openwebui.NAMESPACE), opts=on_k8s
        )
        ns = namespace.metadata.name
        key = random.RandomPassword(
            f"{name}-secret-key", length=48, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        secret = k8s.core.v1.Secret(
            f"{name}-secret",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=openwebui.SECRET_NAME, namespace=ns),
            type="Opaque",
            string_data={openwebui.SECRET_KEY: key.result.apply(pulumi.Output.secret)},
            opts=on_k8s,
        )
        api_key = api_key_secret(f"{name}-api-key", ns, args.api_key, on_k8s)
        pvc_obj = objects["pvc"]
        pvc = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-data",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=pvc_obj["metadata"]["name"],
                namespace=ns,
                labels=openwebui.LABELS,
                # gp3 binds on first consumer: the claim stays Pending until the Deployment's pod is scheduled, so
                # Pulumi must not wait for it to bind before it creates the Deployment.
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec=pvc_obj["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.cluster.provider,
                retain_on_delete=args.protect_data,
                # Named, not referenced: the class must exist and the EBS CSI controller run to provision the volume;
                # on destroy the claim goes first, while the controller can still delete (or release) the volume.
                depends_on=[args.cluster.storage_classes[args.storage_class], args.cluster.ebs_csi_driver],
            ),
        )
        deployment = objects["deployment"]
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=deployment["metadata"]["name"], namespace=ns, labels=openwebui.LABELS
            ),
            spec=deployment["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.cluster.provider,
                depends_on=[
                    # Referenced by name from the pod: it must exist before the pod starts.
                    secret,
                    api_key,
                    pvc,
                    # Pulumi waits for the Deployment to become ready, and its pod only fits on nodes of this pool;
                    # on destroy, the pod goes before the pool that drains its node.
                    *args.capacity,
                ],
            ),
        )
        service = objects["service"]
        svc = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=service["metadata"]["name"], namespace=ns, labels=openwebui.LABELS
            ),
            spec=service["spec"],
            opts=on_k8s,
        )
        self.namespace = ns
        self.service_name = svc.metadata.name
        self.register_outputs({"namespace": self.namespace, "serviceName": self.service_name})


def port_forward_command() -> str:
    return f"kubectl -n {openwebui.NAMESPACE} port-forward svc/{openwebui.NAME} 8081:{openwebui.SERVICE_PORT}"
