"""Alerting rules (one Prometheus rule file) and the metric selectors they and the serving dashboard share.

Every alert carries ``summary``, ``description`` and ``runbook`` (a link to its section of docs/observability.md).
Thresholds that differ per deployment come from config (``AlertThresholds``); the others are fixed here with why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml

from workloads import rayservice
from workloads.serve.settings import APP_NAME, DEPLOYMENT_NAME

RUNBOOK_BASE: Final = "docs/observability.md"

# --- Metric families, as the Ray metrics agent exports them ----------------------------------------------------------
# vLLM's engine metrics, recorded per replica through vLLM's Ray stat logger: vLLM's names with ':' made '_' and Ray's
# 'ray_' prefix; every series carries the replica (ReplicaId) and the served model (model_name).
TTFT: Final = "ray_vllm_time_to_first_token_seconds"
ITL: Final = "ray_vllm_inter_token_latency_seconds"
E2E_LATENCY: Final = "ray_vllm_e2e_request_latency_seconds"
QUEUE_TIME: Final = "ray_vllm_request_queue_time_seconds"
RUNNING: Final = "ray_vllm_num_requests_running"
WAITING: Final = "ray_vllm_num_requests_waiting"
PROMPT_TOKENS: Final = "ray_vllm_prompt_tokens_total"
GENERATION_TOKENS: Final = "ray_vllm_generation_tokens_total"
KV_CACHE_USAGE: Final = "ray_vllm_kv_cache_usage_perc"
PREEMPTIONS: Final = "ray_vllm_num_preemptions_total"
# Ray Serve: replica health per deployment, HTTP requests and errors as the HAProxy ingress saw them.
REPLICA_HEALTHY: Final = "ray_serve_deployment_replica_healthy"
HTTP_REQUESTS: Final = "ray_serve_num_http_requests_total"
HTTP_ERRORS: Final = "ray_serve_num_http_error_requests_total"
# kube-state-metrics.
NODE_CONDITION: Final = "kube_node_status_condition"
POD_SCHEDULED: Final = "kube_pod_status_scheduled"
POD_LABELS: Final = "kube_pod_labels"

DEPLOYMENT_SELECTOR: Final = f'application="{APP_NAME}", deployment="{DEPLOYMENT_NAME}"'
NEURON_HEALTH_CONDITION: Final = "NeuronHealth"
WORKER_LABEL_SELECTOR: Final = (
    f'label_{rayservice.COMPONENT_LABEL_KEY.replace(".", "_").replace("/", "_")}="{rayservice.WORKER_COMPONENT}"'
)

# A worker pod waits for Karpenter to launch an inf2/trn1 node (~2 min, tools/timeline_durations.yaml) before it is
# scheduled; five times that without a node means capacity, quota or pool limits stop it.
WORKER_UNSCHEDULED_FOR: Final = "10m"
KV_CACHE_FULL_RATIO: Final = 0.95


@dataclass(frozen=True)
class AlertThresholds:
    ttft_p95_seconds: float
    error_5xx_ratio: float  # 0.05 = 5 %


def quantile(q: float, family: str, window: str, by: str = "") -> str:
    """The ``q`` quantile of histogram ``family`` over ``window`` (all replicas pooled; ``by`` keeps more labels)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({family}_bucket[{window}])))"


def error_5xx_ratio(window: str) -> str:
    return f'sum(rate({HTTP_REQUESTS}{{status_code=~"5.."}}[{window}])) / sum(rate({HTTP_REQUESTS}[{window}]))'


def runbook(alert: str) -> str:
    return f"{RUNBOOK_BASE}#{alert.lower()}"


def _alert(name: str, expr: str, duration: str, severity: str, *, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description, "runbook": runbook(name)},
    }


def alert_rules(t: AlertThresholds, ray_namespace: str = rayservice.NAMESPACE) -> list[dict[str, Any]]:
    """The alerts.  Annotations use labels only (no ``$value``), so ``promtool test rules`` can state them exactly;
    the serving dashboard shows the values."""
    healthy = f"{REPLICA_HEALTHY}{{{DEPLOYMENT_SELECTOR}}}"
    waiting = f"sum({WAITING})"
    worker_unscheduled = (
        f'max by (namespace, pod) ({POD_SCHEDULED}{{namespace="{ray_namespace}", condition="false"}} '
        f'* on (namespace, pod) group_left () {POD_LABELS}{{namespace="{ray_namespace}", {WORKER_LABEL_SELECTOR}}})'
        " == 1"
    )
    return [
        _alert(
            "ServeNoReadyReplica",
            f"(sum({healthy}) or vector(0)) < 1",
            "5m",
            "critical",
            summary="No healthy Serve replica: the model endpoint answers nothing",
            description="Ray Serve has reported no healthy replica of the LLM deployment for 5 minutes.",
        ),
        _alert(
            "ServeTTFTHigh",
            f"{quantile(0.95, TTFT, '5m')} > {t.ttft_p95_seconds:g}",
            "10m",
            "warning",
            summary=f"Time to first token p95 above {t.ttft_p95_seconds:g} s",
            description="The p95 time to first token over 5 minutes has stayed above the threshold for 10 minutes.",
        ),
        _alert(
            "ServeRequestsWaitingGrowing",
            f"{waiting} > 0 and deriv({waiting}[10m:30s]) > 0",
            "10m",
            "warning",
            summary="Requests are queueing and the queue keeps growing",
            description="Requests wait for a batch slot and their number has grown for 10 minutes.",
        ),
        _alert(
            "Serve5xxRateHigh",
            f"{error_5xx_ratio('5m')} > {t.error_5xx_ratio:g}",
            "5m",
            "critical",
            summary=f"More than {t.error_5xx_ratio:.0%} of serve responses are 5xx",
            description="The share of 5xx responses of the serve endpoint has been above the threshold for 5 minutes.",
        ),
        _alert(
            "ServeKVCacheFull",
            f"max by (model_name, ReplicaId) ({KV_CACHE_USAGE}) > {KV_CACHE_FULL_RATIO:g}",
            "5m",
            "warning",
            summary="Replica {{ $labels.ReplicaId }} has used more than 95 % of its KV cache for 5 minutes",
            description="New requests wait for cache blocks and running ones may be preempted.",
        ),
        _alert(
            "NeuronNodeUnhealthy",
            f'max by (node) ({NODE_CONDITION}{{condition="{NEURON_HEALTH_CONDITION}", status="true"}}) == 1',
            "1m",
            "critical",
            summary="Node {{ $labels.node }} reports a Neuron hardware error",
            description="The node problem detector set the NeuronHealth condition: an uncorrectable error.",
        ),
        _alert(
            "ServeWorkerUnscheduled",
            worker_unscheduled,
            WORKER_UNSCHEDULED_FOR,
            "warning",
            summary="Ray worker pod {{ $labels.pod }} has waited for a node longer than a launch takes",
            description="The pod has been Pending without a node for 10 minutes; a Karpenter launch takes about 2.",
        ),
        _alert(
            "MetricsTargetDown",
            'up{job=~"ray|karpenter|kube-state-metrics"} == 0',
            "10m",
            "warning",
            summary="Prometheus cannot scrape {{ $labels.job }} target {{ $labels.instance }}",
            description="The scrape has failed for 10 minutes; panels and alerts based on it are blind.",
        ),
    ]


RULE_GROUP: Final = "eks-neuron-llm"
RULES_FILE: Final = "alerts.yml"


def rule_file(t: AlertThresholds) -> dict[str, Any]:
    return {"groups": [{"name": RULE_GROUP, "rules": alert_rules(t)}]}


def rule_files(t: AlertThresholds) -> dict[str, str]:
    """File name -> text, as mounted into Prometheus's rules directory."""
    return {RULES_FILE: yaml.safe_dump(rule_file(t), sort_keys=False)}


# Where every metric the rules and the serving dashboard read comes from.  The e2e tier checks the "serve app" ones
# against what the running application exports; kube-state-metrics' against its allowlist (manifests.KSM_METRICS).
SERVE_APP: Final = "serve app"
KUBE_STATE_METRICS: Final = "kube-state-metrics"
PROMETHEUS_ITSELF: Final = "prometheus"
METRIC_SOURCES: Final[dict[str, frozenset[str]]] = {
    SERVE_APP: frozenset(
        {
            *(f"{h}_bucket" for h in (TTFT, ITL, E2E_LATENCY, QUEUE_TIME)),
            RUNNING,
            WAITING,
            PROMPT_TOKENS,
            GENERATION_TOKENS,
            KV_CACHE_USAGE,
            PREEMPTIONS,
            REPLICA_HEALTHY,
            HTTP_REQUESTS,
            HTTP_ERRORS,
        }
    ),
    KUBE_STATE_METRICS: frozenset({NODE_CONDITION, POD_SCHEDULED, POD_LABELS}),
    PROMETHEUS_ITSELF: frozenset({"up"}),
}
