"""Prometheus's configuration: what it scrapes, how targets become labels, where alerts go.

One source for two consumers: ``prometheus_config`` is the cluster's ``prometheus.yml`` (Kubernetes service
discovery of pods), ``local_config`` is the same document for the e2e tier's local Prometheus, where only the
discovery differs: each job's ``kubernetes_sd_configs`` becomes a ``file_sd_configs`` whose targets carry the
``__meta_kubernetes_*`` labels a pod would have, so the same ``relabel_configs`` run on them unchanged.

Scrape paths (why each one):

- ``ray``: every Ray pod of the RayService (head and workers), each on its own IP, on the ports named ``metrics``
  (Ray's per-node metrics agent, 8080), ``as-metrics`` (the autoscaler) and ``dash-metrics`` (the dashboard).  The
  metrics agent exports every metric any process of that node records through ``ray.util.metrics``: Ray core, Ray
  Serve (replicas, ongoing requests, latency, errors) and vLLM's engine metrics, which each replica records through
  vLLM's Ray stat logger (``ray_vllm_*``, histograms intact, labelled with the replica).  Scraping a Service would
  reach one pod per scrape; with HAProxy direct ingress even a pod's :8000 reaches one replica of many.
- ``karpenter``: the Karpenter controller pods' ``http-metrics`` port (kube-system).
- ``kube-state-metrics``: node conditions (``NeuronHealth``) and pod phases, for the node and Pending alerts.
- ``prometheus``/``alertmanager``: themselves.

Neuron device metrics are not scraped: the Neuron chart exposes none for Prometheus, and the CloudWatch add-on's
neuron-monitor serves its Prometheus endpoint over TLS with the add-on's own certificate for the CloudWatch agent
only.  They stay in CloudWatch; Grafana reads them there (its CloudWatch data source).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from workloads import rayservice
from workloads.monitoring import (
    ALERTMANAGER,
    ALERTMANAGER_PORT,
    KSM,
    NAMESPACE,
    PROMETHEUS_PORT,
)

SCRAPE_INTERVAL: Final = "15s"
EVALUATION_INTERVAL: Final = "15s"
RULES_DIR: Final = "/etc/prometheus/rules"
META: Final = "__meta_kubernetes_"

RAY_JOB: Final = "ray"
KARPENTER_JOB: Final = "karpenter"
KSM_JOB: Final = "kube-state-metrics"
# Karpenter's controller pods, as its chart labels them, and its metrics port's name (charts/karpenter deployment).
KARPENTER_NAMESPACE: Final = "kube-system"
KARPENTER_POD_LABELS: Final[dict[str, str]] = {"app.kubernetes.io/name": "karpenter"}
KARPENTER_METRICS_PORT_NAME: Final = "http-metrics"
KSM_METRICS_PORT_NAME: Final = "http-metrics"


def label_meta(label: str) -> str:
    """The discovery meta label of a pod label (``ray.io/node-type`` -> ``..._pod_label_ray_io_node_type``)."""
    return f"{META}pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def _keep(source: str, regex: str) -> dict[str, Any]:
    return {"action": "keep", "source_labels": [source], "regex": regex}


def _copy(source: str, target: str) -> dict[str, Any]:
    return {"action": "replace", "source_labels": [source], "target_label": target}


def _pod_job(
    name: str,
    namespace: str,
    pod_labels: Mapping[str, str],
    port_names: Sequence[str],
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A job over the pods of ``namespace`` that carry ``pod_labels``, one target per named container port."""
    relabel = [
        *(_keep(label_meta(k), v) for k, v in pod_labels.items()),
        _keep(f"{META}pod_container_port_name", "|".join(port_names)),
        # A pod that is starting or gone has no metrics to give; Pending pods would only count as failed scrapes.
        _keep(f"{META}pod_phase", "Running"),
        _copy(f"{META}namespace", "namespace"),
        _copy(f"{META}pod_name", "pod"),
        _copy(f"{META}pod_node_name", "node"),
        _copy(f"{META}pod_container_port_name", "port"),
        *(_copy(label_meta(k), v) for k, v in (extra_labels or {}).items()),
    ]
    return {
        "job_name": name,
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
        "relabel_configs": relabel,
    }


# Ray pod labels kept as series labels: ray_io_cluster is what Ray's own Grafana dashboards filter on ($Cluster).
RAY_POD_LABELS_KEPT: Final[dict[str, str]] = {
    "ray.io/cluster": "ray_io_cluster",
    "ray.io/node-type": "ray_io_node_type",
    "ray.io/group": "ray_io_group",
}
RAY_METRICS_PORT_NAMES: Final = ("metrics", "as-metrics", "dash-metrics")


@dataclass(frozen=True)
class ScrapeInputs:
    cluster_name: str
    ray_namespace: str = rayservice.NAMESPACE
    namespace: str = NAMESPACE
    rule_files: Sequence[str] = field(default_factory=lambda: [f"{RULES_DIR}/*.yml"])


def scrape_configs(inputs: ScrapeInputs) -> list[dict[str, Any]]:
    return [
        _pod_job(
            RAY_JOB,
            inputs.ray_namespace,
            rayservice.RAY_POD_LABELS,
            RAY_METRICS_PORT_NAMES,
            RAY_POD_LABELS_KEPT,
        ),
        _pod_job(KARPENTER_JOB, KARPENTER_NAMESPACE, KARPENTER_POD_LABELS, [KARPENTER_METRICS_PORT_NAME]),
        # kube-state-metrics speaks for other objects: its namespace/pod labels are the objects', keep them.
        {
            **_pod_job(KSM_JOB, inputs.namespace, {"app.kubernetes.io/name": KSM}, [KSM_METRICS_PORT_NAME]),
            "honor_labels": True,
        },
        {"job_name": "prometheus", "static_configs": [{"targets": [f"localhost:{PROMETHEUS_PORT}"]}]},
        {
            "job_name": ALERTMANAGER,
            "static_configs": [{"targets": [f"{ALERTMANAGER}.{inputs.namespace}.svc:{ALERTMANAGER_PORT}"]}],
        },
    ]


def prometheus_config(inputs: ScrapeInputs) -> dict[str, Any]:
    """The cluster's prometheus.yml."""
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "evaluation_interval": EVALUATION_INTERVAL,
            "external_labels": {"cluster": inputs.cluster_name},
        },
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"{ALERTMANAGER}.{inputs.namespace}.svc:{ALERTMANAGER_PORT}"]}]}
            ]
        },
        "rule_files": list(inputs.rule_files),
        "scrape_configs": scrape_configs(inputs),
    }


# ---------------------------------------------------------------------------------------------------------------
# The e2e tier's Prometheus: the same jobs, discovery from a file instead of the Kubernetes API.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalPod:
    """A local process standing in for a pod: where it listens and the labels Kubernetes would report for it."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int]  # container port name -> port on 127.0.0.1
    node: str = "local"
    ip: str = "127.0.0.1"


def pod_target_groups(pod: LocalPod) -> list[dict[str, Any]]:
    """What Kubernetes pod discovery yields for ``pod``: one target per container port, with its meta labels."""
    groups = []
    for port_name, port in pod.ports.items():
        meta = {
            f"{META}namespace": pod.namespace,
            f"{META}pod_name": pod.name,
            f"{META}pod_ip": pod.ip,
            f"{META}pod_node_name": pod.node,
            f"{META}pod_phase": "Running",
            f"{META}pod_ready": "true",
            f"{META}pod_container_port_name": port_name,
            f"{META}pod_container_port_number": str(port),
            f"{META}pod_container_port_protocol": "TCP",
            **{label_meta(k): v for k, v in pod.labels.items()},
        }
        groups.append({"targets": [f"{pod.ip}:{port}"], "labels": meta})
    return groups


def local_config(inputs: ScrapeInputs, sd_files: Mapping[str, str], *, scrape_interval: str = "5s") -> dict[str, Any]:
    """prometheus.yml for a local Prometheus: every job that has a file in ``sd_files`` (job -> path), discovered
    from that file; jobs with nothing to scrape locally are left out, and so is Alertmanager."""
    config = prometheus_config(inputs)
    config["global"] = {**config["global"], "scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}
    config.pop("alerting")
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in sd_files:
            continue
        local = copy.deepcopy(job)
        local.pop("kubernetes_sd_configs", None)
        local.pop("static_configs", None)
        local["file_sd_configs"] = [{"files": [sd_files[job["job_name"]]], "refresh_interval": "5s"}]
        jobs.append(local)
    config["scrape_configs"] = jobs
    return config
