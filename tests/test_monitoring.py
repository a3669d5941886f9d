"""Monitoring in the render: the objects, their wiring to the RayService, the one-source configuration, the
dashboards (ours and Ray's), the config keys, and the PromQL metric-name reader the e2e tier relies on."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from infra import monitoring as infra_monitoring
from infra import tokens
from infra.config import ConfigError, parse
from tools.render import Render, stack_config
from workloads import monitoring, rayservice
from workloads.monitoring import dashboards, manifests, promql, rules, scrape

from .conftest import REPO, rendered

DOCS = REPO / "docs" / "observability.md"


def objects(r: Render, kind: str, namespace: str | None = monitoring.NAMESPACE) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m
        for m in r.manifests()
        if m.get("kind") == kind and (namespace is None or m["metadata"].get("namespace") == namespace)
    }


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


# --- the objects -----------------------------------------------------------------------------------------------------


def test_every_component_runs_on_the_default_pool_non_root(each_stack: Render) -> None:
    workloads = {**objects(each_stack, "Deployment"), **objects(each_stack, "StatefulSet")}
    assert set(workloads) == {"prometheus", "alertmanager", "grafana", "kube-state-metrics"}
    for name, obj in workloads.items():
        spec = pod_spec(obj)
        assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "default"}, name
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["securityContext"]["runAsNonRoot"] is True, name
            assert not any("secretKeyRef" in json.dumps(e) for e in c.get("env", [])), name


def test_prometheus_keeps_its_data_on_an_encrypted_claim_with_the_chosen_retention(dev: Render, prod: Render) -> None:
    for r, storage_class in ((dev, "gp3"), (prod, "gp3-retain")):
        claim = objects(r, "PersistentVolumeClaim")[manifests.PROMETHEUS_PVC]
        assert claim["spec"]["storageClassName"] == storage_class
        classes = objects(r, "StorageClass", None)
        assert classes[storage_class]["parameters"]["encrypted"] == "true"
        sts = objects(r, "StatefulSet")["prometheus"]
        args = pod_spec(sts)["containers"][0]["args"]
        assert "--storage.tsdb.retention.time=15d" in args
        volumes = {v["name"]: v for v in pod_spec(sts)["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == manifests.PROMETHEUS_PVC
    pvc = prod.one("kubernetes:core/v1:PersistentVolumeClaim", "monitoring-prometheus-data")
    assert pvc["retainOnDelete"] is True


def test_the_config_maps_are_the_one_source(dev: Render) -> None:
    maps = objects(dev, "ConfigMap")
    config = yaml.safe_load(maps[manifests.PROMETHEUS_CONFIG]["data"]["prometheus.yml"])
    assert config == scrape.prometheus_config(scrape.ScrapeInputs(dev.config["eks-neuron-llm:clusterName"]))
    thresholds = rules.AlertThresholds(ttft_p95_seconds=5.0, error_5xx_ratio=0.05)
    assert maps[manifests.PROMETHEUS_RULES]["data"] == rules.rule_files(thresholds)
    # A change of either rolls the Prometheus pod.
    annotation = objects(dev, "StatefulSet")["prometheus"]["spec"]["template"]["metadata"]["annotations"]
    assert annotation[manifests.CONFIG_HASH_ANNOTATION] == manifests.config_hash(
        maps[manifests.PROMETHEUS_CONFIG]["data"], maps[manifests.PROMETHEUS_RULES]["data"]
    )


def test_alert_thresholds_come_from_config() -> None:
    r = rendered("dev", alertTtftP95Ms="2500", alert5xxPercent="12")
    text = objects(r, "ConfigMap")[manifests.PROMETHEUS_RULES]["data"][rules.RULES_FILE]
    exprs = {rule["alert"]: rule["expr"] for rule in yaml.safe_load(text)["groups"][0]["rules"]}
    assert exprs["ServeTTFTHigh"].endswith("> 2.5")
    assert exprs["Serve5xxRateHigh"].endswith("> 0.12")


def test_alerts_go_to_an_encrypted_topic_alertmanager_may_only_publish_to(dev: Render) -> None:
    (topic,) = dev.of_type("aws:sns/topic:Topic")
    assert topic["inputs"]["kmsMasterKeyId"] == "alias/aws/sns"
    assert dev.of_type("aws:sns/topicSubscription:TopicSubscription") == []
    policies = [p for p in dev.of_type(tokens.IAM_ROLE_POLICY) if p["name"] == "monitoring-alertmanager-inline"]
    (policy,) = policies
    statements = json.loads(policy["inputs"]["policy"])["Statement"]
    assert [(s["Action"], s["Resource"].split(":")[2]) for s in statements] == [("sns:Publish", "sns")]
    (association,) = [
        a for a in dev.of_type(tokens.EKS_POD_IDENTITY) if a["inputs"]["serviceAccount"] == monitoring.ALERTMANAGER
    ]
    assert association["inputs"]["namespace"] == monitoring.NAMESPACE
    receiver = yaml.safe_load(objects(dev, "ConfigMap")[manifests.ALERTMANAGER_CONFIG]["data"]["alertmanager.yml"])
    sns = receiver["receivers"][0]["sns_configs"][0]
    assert sns["topic_arn"].startswith("arn:aws:sns:") and set(sns["sigv4"]) == {"region"}


def test_alert_emails_subscribe_to_the_topic() -> None:
    r = rendered("dev", alertEmails='["ops@example.com", "oncall@example.org"]')
    subs = r.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sorted(s["inputs"]["endpoint"] for s in subs) == ["oncall@example.org", "ops@example.com"]
    assert {s["inputs"]["protocol"] for s in subs} == {"email"}


def test_grafana_password_is_random_in_a_secret_read_as_a_file(dev: Render) -> None:
    secret = objects(dev, "Secret")[manifests.GRAFANA_ADMIN_SECRET]
    assert secret["stringData"] == {manifests.GRAFANA_ADMIN_PASSWORD_KEY: "[secret]"}
    assert dev.one("random:index/randomPassword:RandomPassword", "monitoring-grafana-admin")["inputs"]["length"] == 32
    env = {e["name"]: e.get("value") for e in pod_spec(objects(dev, "Deployment")["grafana"])["containers"][0]["env"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"].endswith(manifests.GRAFANA_ADMIN_PASSWORD_KEY)
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert dev.outputs["grafanaPortForward"] == "kubectl -n monitoring port-forward svc/grafana 3000:3000"


def test_the_ray_head_finds_prometheus_and_grafana_where_they_are(dev: Render) -> None:
    (rs,) = objects(dev, "RayService", rayservice.NAMESPACE).values()
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in head["env"] if "value" in e}
    services = objects(dev, "Service")
    for key, name in (("RAY_PROMETHEUS_HOST", "prometheus"), ("RAY_GRAFANA_HOST", "grafana")):
        port = services[name]["spec"]["ports"][0]["port"]
        assert env[key] == f"http://{name}.monitoring.svc.cluster.local:{port}"
    provisioning = yaml.safe_load(objects(dev, "ConfigMap")[manifests.GRAFANA_PROVISIONING]["data"]["datasources.yaml"])
    assert env["RAY_PROMETHEUS_NAME"] in {d["name"] for d in provisioning["datasources"]}
    local = dev.outputs["grafanaPortForward"].rsplit(" ", 1)[1].split(":")[0]
    assert env["RAY_GRAFANA_IFRAME_HOST"] == f"http://127.0.0.1:{local}"


def test_the_scrape_reaches_every_metrics_port_of_every_ray_pod(dev: Render) -> None:
    (rs,) = objects(dev, "RayService", rayservice.NAMESPACE).values()
    cluster = rs["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    (ray_job,) = [j for j in scrape.scrape_configs(scrape.ScrapeInputs("c")) if j["job_name"] == scrape.RAY_JOB]
    keeps = {r["source_labels"][0]: r["regex"] for r in ray_job["relabel_configs"] if r["action"] == "keep"}
    port_regex = re.compile(keeps["__meta_kubernetes_pod_container_port_name"])
    for pod in pods:
        for key, value in rayservice.RAY_POD_LABELS.items():
            assert pod["metadata"]["labels"][key] == value
            assert re.fullmatch(keeps[scrape.label_meta(key)], value)
        named = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        scraped = {n: p for n, p in named.items() if port_regex.fullmatch(n)}
        assert scraped and scraped.items() <= rayservice.METRICS_PORTS.items()
    # ...and the serving namespace admits exactly those ports, from Prometheus only.
    policy = objects(dev, "NetworkPolicy", rayservice.NAMESPACE)["metrics-from-prometheus"]
    (rule,) = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == sorted(rayservice.METRICS_PORTS.values())
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"] == monitoring.selector(monitoring.PROMETHEUS)
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": monitoring.NAMESPACE}


def test_monitoring_namespace_admits_only_each_components_clients(dev: Render) -> None:
    policies = objects(dev, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    admitted = {}
    for name, p in policies.items():
        if name == "default-deny-ingress":
            continue
        target = p["spec"]["podSelector"]["matchLabels"][monitoring.APP_LABEL_KEY]
        (rule,) = p["spec"]["ingress"]
        peers = sorted(
            f"{peer['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name']}/"
            + ",".join(f"{k}={v}" for k, v in sorted(peer["podSelector"]["matchLabels"].items()))
            for peer in rule["from"]
        )
        admitted[target] = (peers, [port["port"] for port in rule["ports"]])
    head = "vllm/" + ",".join(f"{k}={v}" for k, v in sorted(rayservice.HEAD_LABELS.items()))
    assert admitted == {
        "prometheus": (sorted(["monitoring/app.kubernetes.io/name=grafana", head]), [9090]),
        "grafana": ([head], [3000]),
        "alertmanager": (["monitoring/app.kubernetes.io/name=prometheus"], [9093]),
        "kube-state-metrics": (["monitoring/app.kubernetes.io/name=prometheus"], [8080]),
    }


# --- dashboards ------------------------------------------------------------------------------------------------------


def test_grafana_gets_the_serving_dashboard_and_rays_with_the_uids_the_ray_dashboard_links_to(dev: Render) -> None:
    maps = objects(dev, "ConfigMap")
    ray = maps[f"{manifests.DASHBOARDS_CONFIGMAP_PREFIX}ray"]["data"]
    uids = {json.loads(text)["uid"] for text in ray.values()}
    assert {"rayDefaultDashboard", "rayServeDashboard", "rayServeDeploymentDashboard"} <= uids
    serving = json.loads(maps[f"{manifests.DASHBOARDS_CONFIGMAP_PREFIX}eks-neuron-llm"]["data"]["serving.json"])
    assert serving["uid"] == dashboards.SERVING_UID
    for cm in (maps[f"{manifests.DASHBOARDS_CONFIGMAP_PREFIX}ray"], maps[manifests.GRAFANA_PROVISIONING]):
        assert len(json.dumps(cm["data"]).encode()) < 1024 * 1024  # a ConfigMap holds at most 1 MiB
    mounts = pod_spec(objects(dev, "Deployment")["grafana"])["containers"][0]["volumeMounts"]
    providers = yaml.safe_load(maps[manifests.GRAFANA_PROVISIONING]["data"]["dashboards.yaml"])["providers"]
    assert {p["options"]["path"] for p in providers} <= {m["mountPath"] for m in mounts}


def test_the_serving_dashboard_has_the_panels_an_operator_needs() -> None:
    board = dashboards.serving_dashboard("c")
    titles = [p["title"] for p in board["panels"]]
    assert titles == [p["title"] for p in dashboards.serving_panels("c")]
    exprs = dict(dashboards.prometheus_queries(board))
    for q in ("0.5", "0.95", "0.99"):
        assert any(
            f"histogram_quantile({q}, " in e and rules.TTFT in e for t, e in dashboards.prometheus_queries(board)
        )
        assert any(f"histogram_quantile({q}, " in e and rules.ITL in e for t, e in dashboards.prometheus_queries(board))
    assert rules.KV_CACHE_USAGE in exprs["KV cache used"]
    assert rules.HTTP_ERRORS in exprs["Errors by code"] and "error_code" in exprs["Errors by code"]
    neuron = board["panels"][titles.index("NeuronCore utilisation by node")]["targets"][0]
    assert dashboards.NEURONCORE_METRIC in neuron["expression"] and neuron["datasource"]["type"] == "cloudwatch"


def test_neuron_panel_reads_what_the_cloudwatch_dashboard_reads(dev: Render) -> None:
    from infra.observability import NAMESPACE, dashboard_body

    assert dashboards.CLOUDWATCH_NAMESPACE == NAMESPACE
    assert dashboards.NEURONCORE_METRIC in json.dumps(dashboard_body("c", "us-west-2"))


def test_every_metric_our_dashboard_and_alerts_read_has_a_declared_source() -> None:
    exprs = [e for _, e in dashboards.prometheus_queries(dashboards.serving_dashboard("c"))]
    exprs += [r["expr"] for r in rules.alert_rules(rules.AlertThresholds(1, 0.1))]
    known = set().union(*rules.METRIC_SOURCES.values())
    names = set().union(*(promql.metric_names(e) for e in exprs))
    assert names == known
    assert rules.METRIC_SOURCES[rules.KUBE_STATE_METRICS] <= set(manifests.KSM_METRICS)


def test_ray_dashboards_come_from_the_pinned_ray() -> None:
    import ray

    assert ray.__version__ == rayservice.RAY_VERSION
    pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("ray")]
    assert pins == [f"ray=={rayservice.RAY_VERSION}"]


def test_every_alert_and_panel_is_documented() -> None:
    text = DOCS.read_text()
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for rule in rules.alert_rules(rules.AlertThresholds(1, 0.1)):
        assert rule["annotations"]["runbook"] == f"docs/observability.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in headings, rule["alert"]
    for panel in dashboards.serving_panels("c"):
        assert f"**{panel['title']}**" in text, panel["title"]


# --- the PromQL reader ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('rate(a_total{x="b", y=~"c|d"}[5m])', {"a_total"}),
        ("histogram_quantile(0.95, sum by (le, model_name) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ('(sum(g{a="1"}) or vector(0)) < 1', {"g"}),
        ("sum(w) > 0 and deriv(sum(w)[10m:30s]) > 0", {"w"}),
        ('max by (n) (c{s="true"}) * on (ns, pod) group_left () l{k="v"} == 1', {"c", "l"}),
        ('count by (t) (up{job="ray"} == 1)', {"up"}),
        ("sum(x offset 5m) / ignoring (a) y", {"x", "y"}),
        ('sum(rate(x_total{a=~"$A", b="{c}"}[$__rate_interval])) by (route)', {"x_total"}),
        ('sum(rate(vllm:prompt_tokens_total{m="a"}[1m]))', {"vllm:prompt_tokens_total"}),
        ("1 - sum(a) / 1e3", {"a"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert promql.metric_names(expr) == names


def test_grafana_variables_are_filled_for_a_plain_prometheus() -> None:
    expr = 'sum(rate(x{ray_io_cluster=~"$Cluster", app="${app}", r!~"$r"}[$__rate_interval])) by (le)'
    assert promql.fill_grafana_variables(expr) == 'sum(rate(x{ray_io_cluster=~".*", app=~".*", r!~"^$"}[1m])) by (le)'


# --- config ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("alertEmails", '["not-an-address"]', "alertEmails: 'not-an-address' is not allowed; allowed: each entry"),
        ("alertEmails", '["a@b.co", "a@b.co"]', 'alertEmails: ["a@b.co", "a@b.co"] is not allowed; allowed: each'),
        ("alertTtftP95Ms", "10", "alertTtftP95Ms: 10 is not allowed; allowed: milliseconds from 100 to 600000"),
        ("alert5xxPercent", "0", "alert5xxPercent: 0 is not allowed; allowed: a percentage from 1 to 100"),
    ],
)
def test_bad_monitoring_config_is_one_line(key: str, value: str, message: str) -> None:
    _, values, _ = stack_config("dev", {f"eks-neuron-llm:{key}": value})
    with pytest.raises(ConfigError) as info:
        parse(values, stack="dev")
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(f"eks-neuron-llm:{message}")


def test_thresholds_convert_config_units() -> None:
    _, values, _ = stack_config("dev", {"eks-neuron-llm:alertTtftP95Ms": "1500"})
    t = infra_monitoring.thresholds(parse(values, stack="dev").monitoring)
    assert (t.ttft_p95_seconds, t.error_5xx_ratio) == (1.5, 0.05)


def test_the_unexported_metric_check_names_panel_and_metric() -> None:
    """What the e2e tier runs against the live app's metric names, here on a fixed list."""
    queries = list(dashboards.prometheus_queries(dashboards.serving_dashboard("c")))
    exported = set(rules.METRIC_SOURCES[rules.SERVE_APP]) | {"up"}
    assert promql.unexported(queries, exported) == []
    assert promql.unexported(queries, exported - {rules.KV_CACHE_USAGE}) == [
        f"KV cache used: {rules.KV_CACHE_USAGE} is not exported by the app"
    ]
    assert promql.unexported(queries, exported - {rules.KV_CACHE_USAGE}, frozenset({rules.KV_CACHE_USAGE})) == []
