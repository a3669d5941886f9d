"""NetworkPolicies of the serving namespace (enforced by the VPC CNI's network-policy agent).

- Everything in ``vllm`` is closed to ingress by default.
- Ray pods of the RayService reach each other on any port (GCS, raylets, object manager, workers, Serve's HAProxy
  ingress and the replicas' own HTTP ports, 30000-31000, it forwards to): this is also how the head reaches the
  workers' Serve port.
- The Serve port (8000) of the workers is open to Open WebUI's pods and to any pod of the ``bench`` namespace.
- The head's dashboard port (8265) is open only to the KubeRay operator, which deploys serveConfigV2 and reads the
  applications' status through it.  People reach the dashboard with ``kubectl port-forward``, which enters the pod
  through the kubelet and is not subject to NetworkPolicy.
- The Ray pods' metrics ports (``rayservice.METRICS_PORTS``) are open to the monitoring namespace's Prometheus.
- Kubelet probes come from the node's IP, which the agent always allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from workloads import monitoring, openwebui, rayservice
from workloads.serve.settings import SERVE_PORT

BENCH_NAMESPACE: Final = "bench"
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
# The operator's pods, as the kuberay-operator chart labels them.
OPERATOR_LABELS: Final[dict[str, str]] = {"app.kubernetes.io/name": "kuberay-operator"}


def _policy(name: str, namespace: str, selector: Mapping[str, str], ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": dict(selector)}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def _in_namespace(namespace: str, pods: Mapping[str, str] | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}
    if pods is not None:
        peer["podSelector"] = {"matchLabels": dict(pods)}
    return peer


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def serving_policies(
    *,
    namespace: str = rayservice.NAMESPACE,
    openwebui_namespace: str = openwebui.NAMESPACE,
    operator_namespace: str,
    bench_namespace: str = BENCH_NAMESPACE,
    monitoring_namespace: str = monitoring.NAMESPACE,
) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny-ingress", "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        _policy(
            "ray-internal",
            namespace,
            rayservice.RAY_POD_LABELS,
            [{"from": [{"podSelector": {"matchLabels": dict(rayservice.RAY_POD_LABELS)}}]}],
        ),
        _policy(
            "serve-clients",
            namespace,
            rayservice.WORKER_LABELS,
            [
                {
                    "from": [
                        _in_namespace(openwebui_namespace, openwebui.LABELS),
                        _in_namespace(bench_namespace),
                    ],
                    "ports": [_tcp(SERVE_PORT)],
                }
            ],
        ),
        _policy(
            "dashboard-from-operator",
            namespace,
            rayservice.HEAD_LABELS,
            [
                {
                    "from": [_in_namespace(operator_namespace, OPERATOR_LABELS)],
                    "ports": [_tcp(rayservice.DASHBOARD_PORT)],
                }
            ],
        ),
        _policy(
            "metrics-from-prometheus",
            namespace,
            rayservice.RAY_POD_LABELS,
            [
                {
                    "from": [_in_namespace(monitoring_namespace, monitoring.selector(monitoring.PROMETHEUS))],
                    "ports": [_tcp(port) for port in rayservice.METRICS_PORTS.values()],
                }
            ],
        ),
    ]
