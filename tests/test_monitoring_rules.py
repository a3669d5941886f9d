"""The Prometheus side, checked by the real tools: ``promtool check config`` on the cluster's prometheus.yml,
``promtool check rules`` and ``promtool test rules`` (each alert firing and not firing) on the rule file,
``amtool check-config`` on Alertmanager's configuration.  Debian's ``prometheus`` and ``prometheus-alertmanager``
packages bring the tools (.ci/run installs them); a missing tool fails these tests, it does not skip them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from workloads.monitoring import manifests, rules, scrape

THRESHOLDS = rules.AlertThresholds(ttft_p95_seconds=5, error_5xx_ratio=0.05)
HEAD_LABEL = 'label_app_kubernetes_io_component="ray-head"'
HEALTHY = 'ray_serve_deployment_replica_healthy{application="llm", deployment="VLLMDeployment", replica="r1"}'


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install prometheus prometheus-alertmanager (.ci/run does)")
    return path


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def write_rules(tmp_path: Path, document: dict[str, Any] | None = None) -> Path:
    path = tmp_path / rules.RULES_FILE
    path.write_text(yaml.safe_dump(document or rules.rule_file(THRESHOLDS), sort_keys=False))
    return path


def test_promtool_accepts_the_rule_file(tmp_path: Path) -> None:
    result = run([tool("promtool"), "check", "rules", str(write_rules(tmp_path))], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules.alert_rules(THRESHOLDS))} rules found" in result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    broken = rules.rule_file(THRESHOLDS)
    broken["groups"][0]["rules"][0]["expr"] = "sum(rate(x[5m])"
    result = run([tool("promtool"), "check", "rules", str(write_rules(tmp_path, broken))], tmp_path)
    assert result.returncode != 0


def test_promtool_accepts_the_cluster_prometheus_config_with_file_discovery(tmp_path: Path) -> None:
    """Debian's Prometheus is built without Kubernetes discovery, so promtool checks the cluster's configuration with
    each job's kubernetes_sd_configs swapped for the file discovery the e2e tier uses (``scrape.local_config``):
    everything else (relabelling, rule files, globals) is the cluster's, byte for byte."""
    write_rules(tmp_path)
    inputs = scrape.ScrapeInputs("c", rule_files=[str(tmp_path / rules.RULES_FILE)])
    jobs = [job["job_name"] for job in scrape.prometheus_config(inputs)["scrape_configs"]]
    sd_files = {job: str(tmp_path / f"{job}.json") for job in jobs}
    config = scrape.local_config(inputs, sd_files, scrape_interval=scrape.SCRAPE_INTERVAL)
    assert [job["job_name"] for job in config["scrape_configs"]] == jobs
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = run([tool("promtool"), "check", "config", "prometheus.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    config["scrape_configs"][0]["relabel_configs"][0]["action"] = "keepp"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    assert run([tool("promtool"), "check", "config", "prometheus.yml"], tmp_path).returncode != 0


def test_amtool_accepts_the_alertmanager_config(tmp_path: Path) -> None:
    files = manifests.alertmanager_files("arn:aws:sns:us-west-2:123456789012:c-alerts", "us-west-2")
    (tmp_path / "alertmanager.yml").write_text(files["alertmanager.yml"])
    result = run([tool("amtool"), "check-config", "alertmanager.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = yaml.safe_load(files["alertmanager.yml"])
    bad["route"]["receiver"] = "nobody"
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(bad))
    assert run([tool("amtool"), "check-config", "alertmanager.yml"], tmp_path).returncode != 0


# ---------------------------------------------------------------------------------------------------------------
# promtool test rules: for every alert, series that make it fire and series that must not.
# ---------------------------------------------------------------------------------------------------------------


def alert(name: str, labels: dict[str, str]) -> dict[str, Any]:
    rule = next(r for r in rules.alert_rules(THRESHOLDS) if r["alert"] == name)
    merged = {**rule["labels"], **labels}
    annotations = {k: render(v, merged) for k, v in rule["annotations"].items()}
    return {"exp_labels": merged, "exp_annotations": annotations}


def render(template: str, labels: dict[str, str]) -> str:
    """The annotations use only ``{{ $labels.x }}``: fill them in as Prometheus would."""
    for key, value in labels.items():
        template = template.replace("{{ $labels." + key + " }}", value)
    return template


def bucket_series(family: str, le_rates: dict[str, int]) -> list[dict[str, str]]:
    return [
        {"series": f'{family}_bucket{{le="{le}", model_name="m", ReplicaId="r1"}}', "values": f"0+{rate}x40"}
        for le, rate in le_rates.items()
    ]


CASES: list[tuple[str, list[dict[str, str]], str, list[dict[str, Any]]]] = [
    ("ServeNoReadyReplica", [{"series": HEALTHY, "values": "0x20"}], "10m", [alert("ServeNoReadyReplica", {})]),
    ("ServeNoReadyReplica", [], "10m", [alert("ServeNoReadyReplica", {})]),
    ("ServeNoReadyReplica", [{"series": HEALTHY, "values": "1x20"}], "10m", []),
    ("ServeNoReadyReplica", [{"series": HEALTHY, "values": "0 0 0 1x20"}], "10m", []),  # recovered
    (
        "ServeTTFTHigh",
        bucket_series(rules.TTFT, {"1": 0, "10": 10, "+Inf": 10}),
        "30m",
        [alert("ServeTTFTHigh", {})],
    ),
    ("ServeTTFTHigh", bucket_series(rules.TTFT, {"1": 10, "10": 10, "+Inf": 10}), "30m", []),
    (
        "ServeRequestsWaitingGrowing",
        [{"series": f'{rules.WAITING}{{ReplicaId="r1"}}', "values": "0+1x40"}],
        "30m",
        [alert("ServeRequestsWaitingGrowing", {})],
    ),
    ("ServeRequestsWaitingGrowing", [{"series": f'{rules.WAITING}{{ReplicaId="r1"}}', "values": "5x40"}], "30m", []),
    (
        "Serve5xxRateHigh",
        [
            {"series": f'{rules.HTTP_REQUESTS}{{status_code="200"}}', "values": "0+100x20"},
            {"series": f'{rules.HTTP_REQUESTS}{{status_code="503"}}', "values": "0+10x20"},
        ],
        "15m",
        [alert("Serve5xxRateHigh", {})],
    ),
    (
        "Serve5xxRateHigh",
        [
            {"series": f'{rules.HTTP_REQUESTS}{{status_code="200"}}', "values": "0+100x20"},
            {"series": f'{rules.HTTP_REQUESTS}{{status_code="404"}}', "values": "0+50x20"},
            {"series": f'{rules.HTTP_REQUESTS}{{status_code="500"}}', "values": "0+1x20"},
        ],
        "15m",
        [],
    ),
    (
        "ServeKVCacheFull",
        [{"series": f'{rules.KV_CACHE_USAGE}{{model_name="m", ReplicaId="r1"}}', "values": "0.97x20"}],
        "10m",
        [alert("ServeKVCacheFull", {"model_name": "m", "ReplicaId": "r1"})],
    ),
    (
        "ServeKVCacheFull",
        [{"series": f'{rules.KV_CACHE_USAGE}{{model_name="m", ReplicaId="r1"}}', "values": "0.9x20"}],
        "10m",
        [],
    ),
    (
        "NeuronNodeUnhealthy",
        [
            {
                "series": f'{rules.NODE_CONDITION}{{condition="NeuronHealth", status="true", node="n1"}}',
                "values": "1x5",
            },
            {
                "series": f'{rules.NODE_CONDITION}{{condition="NeuronHealth", status="false", node="n2"}}',
                "values": "1x5",
            },
        ],
        "3m",
        [alert("NeuronNodeUnhealthy", {"node": "n1"})],
    ),
    (
        "NeuronNodeUnhealthy",
        [
            {
                "series": f'{rules.NODE_CONDITION}{{condition="NeuronHealth", status="true", node="n1"}}',
                "values": "0x5",
            },
            {"series": f'{rules.NODE_CONDITION}{{condition="Ready", status="true", node="n1"}}', "values": "1x5"},
        ],
        "3m",
        [],
    ),
    (
        "ServeWorkerUnscheduled",
        [
            {"series": f'{rules.POD_SCHEDULED}{{namespace="vllm", pod="w", condition="false"}}', "values": "1x20"},
            {
                "series": f'{rules.POD_LABELS}{{namespace="vllm", pod="w", {rules.WORKER_LABEL_SELECTOR}}}',
                "values": "1x20",
            },
        ],
        "15m",
        [alert("ServeWorkerUnscheduled", {"namespace": "vllm", "pod": "w"})],
    ),
    (
        "ServeWorkerUnscheduled",
        [
            # a worker scheduled after 5 minutes (a normal launch), and an unscheduled pod that is not a Ray worker
            {"series": f'{rules.POD_SCHEDULED}{{namespace="vllm", pod="w", condition="false"}}', "values": "1x5 0x15"},
            {
                "series": f'{rules.POD_LABELS}{{namespace="vllm", pod="w", {rules.WORKER_LABEL_SELECTOR}}}',
                "values": "1x20",
            },
            {"series": f'{rules.POD_SCHEDULED}{{namespace="vllm", pod="h", condition="false"}}', "values": "1x20"},
            {
                "series": f'{rules.POD_LABELS}{{namespace="vllm", pod="h", {HEAD_LABEL}}}',
                "values": "1x20",
            },
        ],
        "15m",
        [],
    ),
    (
        "MetricsTargetDown",
        [{"series": 'up{job="ray", instance="10.0.0.1:8080", pod="p"}', "values": "0x20"}],
        "15m",
        [alert("MetricsTargetDown", {"job": "ray", "instance": "10.0.0.1:8080", "pod": "p"})],
    ),
    ("MetricsTargetDown", [{"series": 'up{job="ray", instance="10.0.0.1:8080"}', "values": "1x20"}], "15m", []),
]


def unit_tests() -> dict[str, Any]:
    return {
        "rule_files": [rules.RULES_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": f"{name} {'fires' if expected else 'stays quiet'} #{i}",
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": expected}],
            }
            for i, (name, series, at, expected) in enumerate(CASES)
        ],
    }


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = {r["alert"] for r in rules.alert_rules(THRESHOLDS)}
    assert {n for n, _, _, e in CASES if e} == names
    assert {n for n, _, _, e in CASES if not e} == names


def test_promtool_unit_tests_of_every_alert(tmp_path: Path) -> None:
    write_rules(tmp_path)
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(unit_tests(), sort_keys=False))
    result = run([tool("promtool"), "test", "rules", "tests.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fail_on_a_wrong_threshold(tmp_path: Path) -> None:
    """The same tests against rules whose TTFT threshold is 100x too high: the firing case must now fail."""
    lax = rules.rule_file(rules.AlertThresholds(ttft_p95_seconds=500, error_5xx_ratio=0.05))
    write_rules(tmp_path, lax)
    tests = unit_tests()
    for test in tests["tests"]:  # the summary names the threshold: compare against the lax rule's text
        for case in test["alert_rule_test"]:
            for exp in case["exp_alerts"]:
                if case["alertname"] == "ServeTTFTHigh":
                    exp["exp_annotations"]["summary"] = "Time to first token p95 above 500 s"
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run([tool("promtool"), "test", "rules", "tests.yml"], tmp_path)
    assert result.returncode != 0
    assert "ServeTTFTHigh" in result.stdout + result.stderr
