"""A real Prometheus scrapes the running serve app the way the cluster's does, then every serving-dashboard query,
every alert expression and every query of Ray's own dashboards is evaluated against it.

The scrape configuration is the cluster's (``workloads.monitoring.scrape``): the ``ray`` job's relabelling runs
unchanged on a file-discovered target that carries the ``__meta_kubernetes_*`` labels a Ray pod would have, pointing
at the local Ray node's metrics agent (a pod's port 8080 in the cluster).  The rule file is the cluster's too.
Debian's Prometheus 2.42 (``apt-get install prometheus``) runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from openai import OpenAI

from tools.bench_servers import free_port
from workloads import rayservice
from workloads.monitoring import dashboards, promql, rules, scrape

from .conftest import Endpoint

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

THRESHOLDS = rules.AlertThresholds(ttft_p95_seconds=5, error_5xx_ratio=0.05)
# The local Ray node stands in for the head pod of RayCluster "llm-local" (it runs the replica too).
LOCAL_POD = scrape.LocalPod(
    name="llm-local-head",
    namespace=rayservice.NAMESPACE,
    labels={
        **rayservice.HEAD_LABELS,
        "ray.io/cluster": "llm-local",
        "ray.io/node-type": "head",
        "ray.io/group": "headgroup",
    },
    ports={},
)
# Panels that count events the load does not cause: their queries must be accepted, their metrics exported or
# declared, but they may be empty.  (vLLM's Ray counters appear at their first increment; nothing is preempted.)
EVENT_PANELS = {"Preemptions per second"}
REQUESTS = 12
MAX_TOKENS = 24


@dataclass(frozen=True)
class LocalPrometheus:
    url: str
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; an expression Prometheus cannot parse or evaluate fails the test (HTTP 400/422)."""
        try:
            data = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus rejected {expr!r}: {exc.read().decode()}") from exc
        return list(data["result"]) if data["resultType"] in ("vector", "matrix") else [data["result"]]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install prometheus (.ci/run does)")
    return path


@pytest.fixture(scope="module")
def prometheus(endpoint: Endpoint) -> Iterator[LocalPrometheus]:
    work = Path(tempfile.mkdtemp(prefix="prom-", dir="/tmp"))
    (work / rules.RULES_FILE).write_text(rules.rule_files(THRESHOLDS)[rules.RULES_FILE])
    pod = replace(LOCAL_POD, ports={"metrics": endpoint.metrics_port})
    (work / "ray.json").write_text(json.dumps(scrape.pod_target_groups(pod)))
    inputs = scrape.ScrapeInputs("local", rule_files=[str(work / rules.RULES_FILE)])
    (work / "prometheus.yml").write_text(
        yaml.safe_dump(scrape.local_config(inputs, {scrape.RAY_JOB: str(work / "ray.json")}), sort_keys=False)
    )
    port = free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LocalPrometheus(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"prometheus did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def loaded(endpoint: Endpoint, prometheus: LocalPrometheus) -> LocalPrometheus:
    """A small load (streamed chats at concurrency 4, a 404 and a 400), then wait until Prometheus has it."""
    client = OpenAI(base_url=endpoint.openai_url, api_key=endpoint.api_key, timeout=120, max_retries=0)

    def one(i: int) -> int:
        stream = client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": f"metrics request {i}"}],
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        return [c for c in stream][-1].usage.completion_tokens  # type: ignore[union-attr]

    # A first request creates vLLM's series; once Prometheus holds them the main load makes their rates non-zero
    # (a series that first appears with its final value has no rate yet).
    tokens = f"sum({rules.GENERATION_TOKENS})"
    _wait_for(prometheus, f'sum(up{{job="{scrape.RAY_JOB}"}})', 1)  # scraped at least once
    before = _value(prometheus, tokens)  # earlier tests of the session may have generated tokens already
    assert one(-1) == MAX_TOKENS
    _wait_for(prometheus, tokens, before + MAX_TOKENS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(one, range(REQUESTS), timeout=300)) == [MAX_TOKENS] * REQUESTS
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=endpoint.model, prompt="x", max_tokens=8, temperature=-1)
    _wait_for(prometheus, tokens, before + (REQUESTS + 1) * MAX_TOKENS)
    time.sleep(12)  # two more scrapes, so rates over the window have samples after the load
    return prometheus


def _wait_for(prometheus: LocalPrometheus, expr: str, at_least: float) -> None:
    deadline = time.monotonic() + 90
    while _value(prometheus, expr) < at_least:
        if time.monotonic() > deadline:
            pytest.fail(f"{expr} never reached {at_least} in Prometheus through Ray's metrics agent")
        time.sleep(2)


def _value(prometheus: LocalPrometheus, expr: str) -> float:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def exported_names(prometheus: LocalPrometheus) -> set[str]:
    return set(prometheus.get("/api/v1/label/__name__/values"))


def test_the_scrape_reaches_the_ray_node_with_the_clusters_relabelling(loaded: LocalPrometheus) -> None:
    (target,) = loaded.get("/api/v1/targets")["activeTargets"]
    assert target["health"] == "up", target
    assert target["labels"]["job"] == scrape.RAY_JOB
    assert {k: target["labels"][k] for k in ("namespace", "pod", "port", "ray_io_cluster", "ray_io_node_type")} == {
        "namespace": "vllm",
        "pod": LOCAL_POD.name,
        "port": "metrics",
        "ray_io_cluster": "llm-local",
        "ray_io_node_type": "head",
    }
    # A pod that is not the RayService's, or a port that is not a metrics port, is dropped by the same rules.
    (ray_job,) = [j for j in scrape.scrape_configs(scrape.ScrapeInputs("c")) if j["job_name"] == scrape.RAY_JOB]
    assert len(loaded.get("/api/v1/targets")["droppedTargets"]) == 0
    assert ray_job["relabel_configs"] == yaml.safe_load(
        json.dumps(scrape.local_config(scrape.ScrapeInputs("c"), {"ray": "x"})["scrape_configs"][0]["relabel_configs"])
    )


def test_the_app_exports_every_metric_the_dashboard_and_alerts_read(loaded: LocalPrometheus) -> None:
    names = exported_names(loaded)
    missing = sorted((rules.METRIC_SOURCES[rules.SERVE_APP] | {"up"}) - names)
    print(
        f"\ne2e metrics: {len(names)} metric names exported; vLLM: "
        + ", ".join(sorted(n for n in names if n.startswith("ray_vllm_") and not n.endswith(("_sum", "_count"))))
    )
    print("e2e metrics: Serve: " + ", ".join(sorted(n for n in names if n.startswith("ray_serve_"))))
    # Histograms arrive whole: buckets, sum and count.
    for family in (rules.TTFT, rules.ITL, rules.E2E_LATENCY, rules.QUEUE_TIME):
        assert {f"{family}_bucket", f"{family}_sum", f"{family}_count"} <= names, family
    # Preemptions are a counter vLLM creates at its first increment; everything else must be there now.
    assert missing == [rules.PREEMPTIONS] or missing == [], missing


def test_vllm_series_are_per_replica(loaded: LocalPrometheus) -> None:
    """Each series carries the Serve replica that recorded it, the same id Ray Serve reports for the replica: with
    more replicas per node the node's agent exports one series per replica."""
    vllm = {s["metric"].get("ReplicaId") for s in loaded.query(f"{rules.RUNNING}")}
    serve = {s["metric"].get("replica") for s in loaded.query(f"{rules.REPLICA_HEALTHY}")}
    assert len(vllm) == 1 and vllm == serve and "" not in vllm, (vllm, serve)


def serving_queries() -> list[tuple[str, str]]:
    return [
        (t, promql.fill_grafana_variables(e))
        for t, e in dashboards.prometheus_queries(dashboards.serving_dashboard("c"))
    ]


def test_every_serving_dashboard_query_returns_data(loaded: LocalPrometheus) -> None:
    exported = exported_names(loaded)
    assert promql.unexported(serving_queries(), exported, frozenset({rules.PREEMPTIONS})) == []
    empty = []
    for title, expr in serving_queries():
        result = loaded.query(expr)
        if not result and title not in EVENT_PANELS:
            empty.append(f"{title}: {expr}")
    assert empty == []
    ttft_p95 = _value(loaded, promql.fill_grafana_variables(rules.quantile(0.95, rules.TTFT, "5m")))
    tokens = _value(loaded, f"sum({rules.GENERATION_TOKENS})")
    print(f"\ne2e metrics: TTFT p95 {ttft_p95 * 1000:.0f} ms, {tokens:.0f} output tokens counted")
    assert 0 < ttft_p95 < 60


def test_every_alert_expression_is_evaluated_and_names_exported_metrics(loaded: LocalPrometheus) -> None:
    exported = exported_names(loaded)
    elsewhere = rules.METRIC_SOURCES[rules.KUBE_STATE_METRICS] | {rules.PREEMPTIONS}
    alert_rules = rules.alert_rules(THRESHOLDS)
    assert promql.unexported([(r["alert"], r["expr"]) for r in alert_rules], exported, elsewhere) == []
    for rule in alert_rules:
        loaded.query(rule["expr"])  # accepted and evaluated
    # The rule file loaded into Prometheus, every rule evaluated without error, and on a healthy app none is pending.
    (group,) = loaded.get("/api/v1/rules")["groups"]
    assert [(r["name"], r["health"]) for r in group["rules"]] == [(r["alert"], "ok") for r in alert_rules]
    assert {r["name"]: r["state"] for r in group["rules"]} == {r["alert"]: "inactive" for r in alert_rules}


def test_a_dashboard_naming_a_metric_the_app_does_not_export_fails_the_check(loaded: LocalPrometheus) -> None:
    board = dashboards.serving_dashboard("c")
    board["panels"][0]["targets"][0]["expr"] = board["panels"][0]["targets"][0]["expr"].replace(
        rules.TTFT, "ray_vllm_time_to_first_token_secs"
    )
    queries = list(dashboards.prometheus_queries(board))
    assert promql.unexported(queries, exported_names(loaded), frozenset({rules.PREEMPTIONS})) == [
        "Time to first token: ray_vllm_time_to_first_token_secs_bucket is not exported by the app"
    ]


def test_rays_own_dashboards_are_well_formed_and_show_the_serve_app(loaded: LocalPrometheus) -> None:
    with_data: dict[str, int] = {}
    totals: dict[str, int] = {}
    for name, board in dashboards.ray_dashboards().items():
        queries = [promql.fill_grafana_variables(e) for _, e in dashboards.prometheus_queries(board)]
        totals[name] = len(queries)
        with_data[name] = sum(1 for q in queries if loaded.query(q))
    print(
        "\ne2e metrics: Ray dashboards, queries with data / all: "
        + ", ".join(f"{n} {with_data[n]}/{totals[n]}" for n in totals)
    )
    # Every query was accepted (Prometheus.query fails on a rejected one); each dashboard draws something of the app.
    assert all(with_data.values()), with_data
