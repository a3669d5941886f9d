"""A value the stack holds (a token, a key) as a Kubernetes Secret of its own, for pods to read by name."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s


def opaque_secret(
    resource_name: str,
    namespace: pulumi.Input[str],
    *,
    name: str,
    key: str,
    value: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> k8s.core.v1.Secret:
    return k8s.core.v1.Secret(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace),
        type="Opaque",
        string_data={key: value},
        opts=opts,
    )
