"""The dashboards and alerts parse, and name only metrics the system really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# What RabbitMQ's rabbitmq_prometheus plugin exports per queue (checked against a live broker in
# tests/e2e/test_metrics.py), and Prometheus's own scrape health.
EXTERNAL = {"up", "rabbitmq_queue_messages_ready", "rabbitmq_queue_consumers"}
METRIC = re.compile(r"\b(orderflow_[a-z0-9_]+|rabbitmq_[a-z0-9_]+|up)\b(?!\s*\()")


def dashboard_expressions() -> list[str]:
    expressions = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            expressions.extend(target["expr"] for target in panel["targets"])
    return expressions


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def families() -> list:
    return [
        family
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]


def exported_names() -> set[str]:
    """Every sample name the metrics in shared/metrics.py produce."""
    names = set()
    for family in families():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def test_there_are_dashboards_and_alerts() -> None:
    assert len(dashboard_expressions()) >= 20
    assert len(alert_expressions()) >= 7


@pytest.mark.parametrize("expression", dashboard_expressions() + alert_expressions())
def test_every_expression_names_only_exported_metrics(expression: str) -> None:
    named = set(METRIC.findall(expression))
    assert named, expression
    assert named <= exported_names() | EXTERNAL, named - exported_names() - EXTERNAL


def test_every_expression_parses_and_the_config_is_valid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is installed by `make services`"
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:expression_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_expressions())
                ],
            }
        ]
    }
    (tmp_path / "dashboards.yml").write_text(yaml.safe_dump(rules))
    for args in (
        ["check", "rules", str(tmp_path / "dashboards.yml")],
        ["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
    ):
        result = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_metric_names_follow_the_conventions() -> None:
    for name in exported_names():
        assert name.startswith("orderflow_"), name
    for family in families():
        assert not family.name.endswith(("_milliseconds", "_ms")), family.name


def test_queue_alerts_watch_exactly_the_queues_a_worker_consumes() -> None:
    """A queue nobody is meant to consume (dead-letter, delay, dramatiq's) must not page anyone for
    having no consumer, and every consumed queue must."""
    from shared.messaging.topology import Topology

    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    (expression,) = [
        rule["expr"]
        for group in rules
        for rule in group["rules"]
        if rule["alert"] == "OrderflowConsumersMissing"
    ]
    included = re.search(r'queue=~"([^"]+)"', expression)
    excluded = re.search(r'queue!~"([^"]+)"', expression)
    assert included and excluded
    pattern, unwatched = (m.group(1).replace("\\\\", "\\") for m in (included, excluded))
    broker = Topology(partitions=2, delays=frozenset({200}), timer_delays=frozenset({30_000}))
    for entity in broker.entities():
        if entity.kind == "queue":
            watched = re.fullmatch(pattern, entity.name) and not re.fullmatch(unwatched, entity.name)
            assert bool(watched) == (entity.name in broker.consumed_queues), entity.name
