"""The monitoring namespace's Kubernetes objects, as plain dicts (pure functions of ``MonitoringInputs``).

Everything runs on the Karpenter ``default`` pool, non-root, read-only root filesystems, no privilege escalation:

- Prometheus: a StatefulSet of one (at most one pod ever holds the TSDB lock) on an encrypted gp3 claim; its
  configuration and rule files are ConfigMaps whose hash is a pod-template annotation (a change rolls the pod);
- Alertmanager: one replica, routes every alert to the stack's SNS topic with its Pod Identity role;
- Grafana: one replica; data sources, dashboards and the admin password are provisioned, so its own database is
  disposable (an emptyDir);
- kube-state-metrics: node conditions and pod phases only (``--resources=nodes,pods``);
- RBAC: Prometheus may only read pods (its configuration limits the namespaces), kube-state-metrics only list and
  watch nodes and pods;
- NetworkPolicies: ingress to each component only from what talks to it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml

from workloads import rayservice
from workloads.monitoring import (
    ALERTMANAGER,
    ALERTMANAGER_IMAGE,
    ALERTMANAGER_PORT,
    CLOUDWATCH_DATASOURCE_UID,
    GRAFANA,
    GRAFANA_IMAGE,
    GRAFANA_PORT,
    KSM,
    KSM_IMAGE,
    KSM_PORT,
    KSM_TELEMETRY_PORT,
    NAMESPACE,
    PROMETHEUS,
    PROMETHEUS_DATASOURCE,
    PROMETHEUS_DATASOURCE_UID,
    PROMETHEUS_IMAGE,
    PROMETHEUS_PORT,
    labels,
    selector,
    service_url,
)
from workloads.monitoring.scrape import RULES_DIR
from workloads.netpol import NAMESPACE_NAME_LABEL
from workloads.topology import DEFAULT_POOL, NODEPOOL_LABEL

# Retention: 15 days holds two weekly traffic cycles to compare against, and the time from a regression to a weekly
# review.  What it costs: a worker pod exports ~3k series (Ray core + Serve + vLLM histograms), a few workers, the
# head, Karpenter and kube-state-metrics make ~20k; at a 15 s interval and ~1.5 bytes per sample on disk that is
# ~175 MB a day, ~2.6 GB for 15 days.  The size cap keeps the volume from filling if the series count grows.
RETENTION_TIME: Final = "15d"
STORAGE_GIB: Final = 20
RETENTION_SIZE: Final = "16GB"

CONFIG_HASH_ANNOTATION: Final = "eks-neuron-llm/config-sha256"
PROMETHEUS_CONFIG: Final = "prometheus-config"
PROMETHEUS_RULES: Final = "prometheus-rules"
PROMETHEUS_PVC: Final = "prometheus-data"
ALERTMANAGER_CONFIG: Final = "alertmanager-config"
GRAFANA_PROVISIONING: Final = "grafana-provisioning"
GRAFANA_ADMIN_SECRET: Final = "grafana-admin"
GRAFANA_ADMIN_PASSWORD_KEY: Final = "admin-password"
GRAFANA_DASHBOARD_DIR: Final = "/var/lib/grafana/dashboards"
DASHBOARDS_CONFIGMAP_PREFIX: Final = "grafana-dashboards-"

# The images' own users (prometheus, alertmanager and kube-state-metrics images run as nobody; Grafana's files are
# group-0 writable and run under any uid).
NOBODY: Final = 65534
GRAFANA_UID: Final = 10472

RESOURCES: Final[dict[str, dict[str, dict[str, str]]]] = {
    PROMETHEUS: {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
    ALERTMANAGER: {"requests": {"cpu": "25m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
    GRAFANA: {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    KSM: {"requests": {"cpu": "25m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}},
}

# kube-state-metrics: only what the rules and dashboards read (keeps its series and its RBAC small).
KSM_RESOURCES: Final = ("nodes", "pods")
KSM_METRICS: Final = (
    "kube_node_status_condition",
    "kube_node_labels",
    "kube_pod_status_phase",
    "kube_pod_status_scheduled",
    "kube_pod_labels",
    "kube_pod_info",
)
# Pod labels kube-state-metrics copies into kube_pod_labels (the Ray worker/head component label).
KSM_POD_LABELS: Final = (rayservice.COMPONENT_LABEL_KEY,)


@dataclass(frozen=True)
class MonitoringInputs:
    storage_class: str
    region: str
    namespace: str = NAMESPACE
    ray_namespace: str = rayservice.NAMESPACE


def config_hash(*documents: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        for key in sorted(doc):
            digest.update(key.encode() + b"\0" + doc[key].encode() + b"\0")
    return digest.hexdigest()


def _meta(name: str, namespace: str, component: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(component or name)}


def _security(user: int) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security(user: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _http_probe(path: str, port: str, *, period: int = 10, failures: int = 3, delay: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def _pod(
    *,
    service_account: str,
    automount: bool,
    user: int,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": automount,
        # The default (x86) Karpenter pool, by Karpenter's well-known label.
        "nodeSelector": {NODEPOOL_LABEL: DEFAULT_POOL},
        "securityContext": _pod_security(user),
        "containers": containers,
        "volumes": volumes,
    }


def service_account(name: str, namespace: str, *, automount: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(name, namespace),
        "automountServiceAccountToken": automount,
    }


def service(name: str, namespace: str, port: int, port_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}],
        },
    }


def configmap(name: str, namespace: str, data: Mapping[str, str], component: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, namespace, component), "data": dict(data)}


# ---------------------------------------------------------------------------------------------------------------
# Prometheus.
# ---------------------------------------------------------------------------------------------------------------


def prometheus_files(config: Mapping[str, Any]) -> dict[str, str]:
    return {"prometheus.yml": yaml.safe_dump(dict(config), sort_keys=False)}


def cluster_role(
    name: str, subject: str, namespace: str, resources: Sequence[str], verbs: Sequence[str]
) -> list[dict[str, Any]]:
    """A ClusterRole on core ``resources`` with ``verbs`` and its binding to service account ``subject``."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels(subject)},
            "rules": [{"apiGroups": [""], "resources": list(resources), "verbs": list(verbs)}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels(subject)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": subject, "namespace": namespace}],
        },
    ]


def prometheus_rbac(inputs: MonitoringInputs) -> list[dict[str, Any]]:
    """Service discovery reads pods (its configuration limits which namespaces); nothing else."""
    return cluster_role(f"{PROMETHEUS}-discovery", PROMETHEUS, inputs.namespace, ["pods"], ["get", "list", "watch"])


def prometheus_pvc(inputs: MonitoringInputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(PROMETHEUS_PVC, inputs.namespace, PROMETHEUS),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": inputs.storage_class,
            "resources": {"requests": {"storage": f"{STORAGE_GIB}Gi"}},
        },
    }


def prometheus_statefulset(inputs: MonitoringInputs, config_sha256: str) -> dict[str, Any]:
    container = {
        "name": PROMETHEUS,
        "image": PROMETHEUS_IMAGE,
        "imagePullPolicy": "Always",
        "args": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--storage.tsdb.retention.time={RETENTION_TIME}",
            f"--storage.tsdb.retention.size={RETENTION_SIZE}",
            f"--web.listen-address=:{PROMETHEUS_PORT}",
        ],
        "ports": [{"name": "http", "containerPort": PROMETHEUS_PORT}],
        "resources": RESOURCES[PROMETHEUS],
        # Replaying the write-ahead log after a restart can take minutes on a full volume.
        "startupProbe": _http_probe("/-/ready", "http", failures=60),
        "readinessProbe": _http_probe("/-/ready", "http"),
        "livenessProbe": _http_probe("/-/healthy", "http", period=20),
        "securityContext": _security(NOBODY),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
            {"name": "rules", "mountPath": RULES_DIR, "readOnly": True},
            {"name": "data", "mountPath": "/prometheus"},
        ],
    }
    pod = _pod(
        service_account=PROMETHEUS,
        automount=True,  # service discovery reads pods from the Kubernetes API
        user=NOBODY,
        containers=[container],
        volumes=[
            {"name": "config", "configMap": {"name": PROMETHEUS_CONFIG}},
            {"name": "rules", "configMap": {"name": PROMETHEUS_RULES}},
            {"name": "data", "persistentVolumeClaim": {"claimName": PROMETHEUS_PVC}},
        ],
    )
    # Two Prometheus pods never share the volume: the old one stops before the new one starts.
    pod["terminationGracePeriodSeconds"] = 300
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(PROMETHEUS, inputs.namespace),
        "spec": {
            "replicas": 1,
            "serviceName": PROMETHEUS,
            "selector": {"matchLabels": selector(PROMETHEUS)},
            "template": {
                "metadata": {
                    "labels": labels(PROMETHEUS),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_sha256},
                },
                "spec": pod,
            },
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Alertmanager.
# ---------------------------------------------------------------------------------------------------------------

SNS_SUBJECT: Final = "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .Alerts | len }})"
SNS_MESSAGE: Final = (
    "{{ range .Alerts }}{{ .Status | toUpper }} {{ .Labels.alertname }} {{ .Labels.severity }}\n"
    "{{ .Annotations.summary }}\n{{ .Annotations.description }}\n"
    "runbook: {{ .Annotations.runbook }}\nsince: {{ .StartsAt }}\n\n{{ end }}"
)


def alertmanager_config(topic_arn: str, region: str) -> dict[str, Any]:
    """Every alert to the SNS topic (Pod Identity credentials: no keys in the config)."""
    return {
        "route": {
            "receiver": "sns",
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [
            {
                "name": "sns",
                "sns_configs": [
                    {
                        "topic_arn": topic_arn,
                        "sigv4": {"region": region},
                        "subject": SNS_SUBJECT,
                        "message": SNS_MESSAGE,
                        "send_resolved": True,
                    }
                ],
            }
        ],
    }


def alertmanager_files(topic_arn: str, region: str) -> dict[str, str]:
    return {"alertmanager.yml": yaml.safe_dump(alertmanager_config(topic_arn, region), sort_keys=False)}


def alertmanager_deployment(inputs: MonitoringInputs, config_sha256: str) -> dict[str, Any]:
    container = {
        "name": ALERTMANAGER,
        "image": ALERTMANAGER_IMAGE,
        "imagePullPolicy": "Always",
        "args": [
            "--config.file=/etc/alertmanager/alertmanager.yml",
            "--storage.path=/alertmanager",
            f"--web.listen-address=:{ALERTMANAGER_PORT}",
            # One replica: no gossip cluster.
            "--cluster.listen-address=",
        ],
        "ports": [{"name": "http", "containerPort": ALERTMANAGER_PORT}],
        "resources": RESOURCES[ALERTMANAGER],
        "readinessProbe": _http_probe("/-/ready", "http"),
        "livenessProbe": _http_probe("/-/healthy", "http", period=20),
        "securityContext": _security(NOBODY),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/alertmanager", "readOnly": True},
            {"name": "data", "mountPath": "/alertmanager"},
        ],
    }
    pod = _pod(
        service_account=ALERTMANAGER,
        automount=False,  # no Kubernetes API access; Pod Identity mounts its own token
        user=NOBODY,
        containers=[container],
        volumes=[
            {"name": "config", "configMap": {"name": ALERTMANAGER_CONFIG}},
            # Silences and the notification log: lost on a restart (at worst a repeated notification).
            {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    )
    return _deployment(ALERTMANAGER, inputs.namespace, pod, config_sha256)


def _deployment(name: str, namespace: str, pod: dict[str, Any], config_sha256: str | None) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": labels(name)}
    if config_sha256:
        template_meta["annotations"] = {CONFIG_HASH_ANNOTATION: config_sha256}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(name)},
            "template": {"metadata": template_meta, "spec": pod},
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Grafana.
# ---------------------------------------------------------------------------------------------------------------


def grafana_datasources(inputs: MonitoringInputs) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": PROMETHEUS_DATASOURCE,
                "uid": PROMETHEUS_DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": service_url(PROMETHEUS, PROMETHEUS_PORT, inputs.namespace),
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": "15s"},
            },
            {
                # NeuronCore utilisation and Neuron memory stay in CloudWatch (Container Insights); Grafana reads them
                # with its Pod Identity role (the SDK's default credential chain).
                "name": "CloudWatch",
                "uid": CLOUDWATCH_DATASOURCE_UID,
                "type": "cloudwatch",
                "access": "proxy",
                "editable": False,
                "jsonData": {"authType": "default", "defaultRegion": inputs.region},
            },
        ],
    }


def grafana_dashboard_providers(folders: Sequence[str]) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": folder,
                "folder": folder,
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": f"{GRAFANA_DASHBOARD_DIR}/{folder}"},
            }
            for folder in folders
        ],
    }


def grafana_files(inputs: MonitoringInputs, folders: Sequence[str]) -> dict[str, str]:
    return {
        "datasources.yaml": yaml.safe_dump(grafana_datasources(inputs), sort_keys=False),
        "dashboards.yaml": yaml.safe_dump(grafana_dashboard_providers(folders), sort_keys=False),
    }


def dashboards_configmaps(
    inputs: MonitoringInputs, dashboards: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """One ConfigMap per Grafana folder: folder -> {file name: dashboard JSON}."""
    return [
        configmap(
            f"{DASHBOARDS_CONFIGMAP_PREFIX}{folder.lower()}",
            inputs.namespace,
            {f"{name}.json": json.dumps(board, sort_keys=True) for name, board in files.items()},
            GRAFANA,
        )
        for folder, files in dashboards.items()
    ]


def grafana_environment() -> list[dict[str, Any]]:
    def plain(name: str, value: str) -> dict[str, str]:
        return {"name": name, "value": value}

    return [
        plain("GF_SECURITY_ADMIN_USER", "admin"),
        # Read from the mounted Secret (Grafana's __FILE convention): the password is never an environment variable.
        plain("GF_SECURITY_ADMIN_PASSWORD__FILE", f"/etc/grafana/admin/{GRAFANA_ADMIN_PASSWORD_KEY}"),
        plain("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning"),
        plain("GF_PATHS_DATA", "/var/lib/grafana"),
        plain("GF_PATHS_PLUGINS", "/var/lib/grafana/plugins"),
        plain("GF_LOG_MODE", "console"),
        # The Ray dashboard embeds Grafana panels in iframes.
        plain("GF_SECURITY_ALLOW_EMBEDDING", "true"),
        plain("GF_AUTH_ANONYMOUS_ENABLED", "false"),
        plain("GF_USERS_ALLOW_SIGN_UP", "false"),
        plain("GF_ANALYTICS_REPORTING_ENABLED", "false"),
        plain("GF_ANALYTICS_CHECK_FOR_UPDATES", "false"),
        plain("GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES", "false"),
        plain("GF_NEWS_NEWS_FEED_ENABLED", "false"),
    ]


def grafana_deployment(inputs: MonitoringInputs, folders: Sequence[str], config_sha256: str) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        {
            "name": "provisioning",
            "mountPath": "/etc/grafana/provisioning/datasources/datasources.yaml",
            "subPath": "datasources.yaml",
            "readOnly": True,
        },
        {
            "name": "provisioning",
            "mountPath": "/etc/grafana/provisioning/dashboards/dashboards.yaml",
            "subPath": "dashboards.yaml",
            "readOnly": True,
        },
        {"name": "admin", "mountPath": "/etc/grafana/admin", "readOnly": True},
        {"name": "data", "mountPath": "/var/lib/grafana"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "provisioning", "configMap": {"name": GRAFANA_PROVISIONING}},
        {"name": "admin", "secret": {"secretName": GRAFANA_ADMIN_SECRET, "defaultMode": 0o440}},
        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    for folder in folders:
        volume = f"dashboards-{folder.lower()}"
        mounts.append({"name": volume, "mountPath": f"{GRAFANA_DASHBOARD_DIR}/{folder}", "readOnly": True})
        volumes.append({"name": volume, "configMap": {"name": f"{DASHBOARDS_CONFIGMAP_PREFIX}{folder.lower()}"}})
    container = {
        "name": GRAFANA,
        "image": GRAFANA_IMAGE,
        "imagePullPolicy": "Always",
        "env": grafana_environment(),
        "ports": [{"name": "http", "containerPort": GRAFANA_PORT}],
        "resources": RESOURCES[GRAFANA],
        "readinessProbe": _http_probe("/api/health", "http"),
        "livenessProbe": _http_probe("/api/health", "http", period=20, delay=60),
        "securityContext": _security(GRAFANA_UID),
        "volumeMounts": mounts,
    }
    pod = _pod(
        service_account=GRAFANA,
        automount=False,  # no Kubernetes API access; Pod Identity (CloudWatch) mounts its own token
        user=GRAFANA_UID,
        containers=[container],
        volumes=volumes,
    )
    return _deployment(GRAFANA, inputs.namespace, pod, config_sha256)


# ---------------------------------------------------------------------------------------------------------------
# kube-state-metrics.
# ---------------------------------------------------------------------------------------------------------------


def ksm_rbac(inputs: MonitoringInputs) -> list[dict[str, Any]]:
    return cluster_role(KSM, KSM, inputs.namespace, KSM_RESOURCES, ["list", "watch"])


def ksm_deployment(inputs: MonitoringInputs) -> dict[str, Any]:
    container = {
        "name": KSM,
        "image": KSM_IMAGE,
        "imagePullPolicy": "Always",
        "args": [
            f"--port={KSM_PORT}",
            f"--telemetry-port={KSM_TELEMETRY_PORT}",
            f"--resources={','.join(KSM_RESOURCES)}",
            f"--metric-allowlist={','.join(KSM_METRICS)}",
            f"--metric-labels-allowlist=pods=[{','.join(KSM_POD_LABELS)}]",
        ],
        "ports": [
            {"name": "http-metrics", "containerPort": KSM_PORT},
            {"name": "telemetry", "containerPort": KSM_TELEMETRY_PORT},
        ],
        "resources": RESOURCES[KSM],
        "readinessProbe": _http_probe("/readyz", "telemetry"),
        "livenessProbe": _http_probe("/livez", "http-metrics", period=20),
        "securityContext": _security(NOBODY),
    }
    pod = _pod(
        service_account=KSM, automount=True, user=NOBODY, containers=[container], volumes=[]
    )  # it lists nodes and pods from the Kubernetes API
    pod.pop("volumes")
    return _deployment(KSM, inputs.namespace, pod, None)


# ---------------------------------------------------------------------------------------------------------------
# NetworkPolicies of the monitoring namespace.
# ---------------------------------------------------------------------------------------------------------------


def _peer(namespace: str, pods: Mapping[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
        "podSelector": {"matchLabels": dict(pods)},
    }


def _ingress_policy(name: str, namespace: str, target: str, peers: list[dict[str, Any]], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": selector(target)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": port}]}],
        },
    }


def network_policies(inputs: MonitoringInputs) -> list[dict[str, Any]]:
    """Closed by default; each component admits only its clients.  People use kubectl port-forward (not filtered)."""
    ns = inputs.namespace
    prometheus = _peer(ns, selector(PROMETHEUS))
    ray_head = _peer(inputs.ray_namespace, rayservice.HEAD_LABELS)
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny-ingress", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        # Grafana queries Prometheus; the Ray dashboard (head) queries it for its own metrics views.
        _ingress_policy(
            "prometheus-clients", ns, PROMETHEUS, [_peer(ns, selector(GRAFANA)), ray_head], PROMETHEUS_PORT
        ),
        # The Ray dashboard checks Grafana's health from the head (RAY_GRAFANA_HOST).
        _ingress_policy("grafana-from-ray-head", ns, GRAFANA, [ray_head], GRAFANA_PORT),
        # Prometheus sends alerts to Alertmanager and scrapes it; it scrapes kube-state-metrics.
        _ingress_policy("alertmanager-from-prometheus", ns, ALERTMANAGER, [prometheus], ALERTMANAGER_PORT),
        _ingress_policy("kube-state-metrics-from-prometheus", ns, KSM, [prometheus], KSM_PORT),
    ]
