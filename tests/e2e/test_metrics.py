"""Operators' view: a real Prometheus scrapes the running workers and RabbitMQ, and sees what happened."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.contracts.events import EventCustomer, OrderStatusChanged
from tests.support import Publish, free_port, isolated_settings, settings_env, unique, wait_for
from tests.system import ORDERFLOW, System, new_order
from tests.unit.test_observability_assets import DEPLOY, alert_expressions, dashboard_expressions


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> dict[str, float]:
        """An instant query: each series' labels (as a sorted tuple string) -> value."""
        result = self.get("/api/v1/query", query=expression)["result"]
        return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in result}

    def scalar(self, expression: str) -> float:
        values = list(self.query(expression).values())
        return values[0] if values else 0.0


@pytest.fixture(scope="module")
def prometheus(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is installed by `make services`"
    home = tmp_path_factory.mktemp("prometheus")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", home / "alerts.yml")
    jobs = [
        {"job_name": f"orderflow-{service}", "static_configs": [{"targets": targets}]}
        for service, targets in system.workers.metrics_targets().items()
    ]
    jobs.append(
        {
            "job_name": "rabbitmq",
            "metrics_path": "/metrics/per-object",
            "static_configs": [{"targets": ["127.0.0.1:15692"]}],
        }
    )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": jobs,
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(home / "log").open("w"),
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"{server.url}/-/ready", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(ready, timeout=60, interval=0.2, what="Prometheus to start")
        targets = sum(len(t) for t in system.workers.metrics_targets().values()) + 1
        wait_for(
            lambda: server.scalar("sum(up)") == targets,
            timeout=60,
            interval=0.5,
            what=f"{targets} targets up",
        )
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_prometheus_sees_what_happened(system: System, prometheus: Prometheus) -> None:
    orders_by = "sum by (status, reason) (orderflow_orders_total)"
    before = prometheus.query(orders_by)
    payments_before = prometheus.query("sum by (outcome) (orderflow_payments_total)")
    sku = unique("METRIC")
    system.stock(sku, 10)
    good = [new_order((sku, 1)) for _ in range(4)]
    declined = new_order((sku, 1), token="tok_declined")
    short = new_order((sku, 20))
    invalid = new_order((sku, 1))
    invalid["items"] = []
    for order in [*good, declined, short, invalid]:
        system.submit(order)
    for order in [*good, declined, short, invalid]:
        system.outcome(order["order_id"])

    def key(status: str, reason: str = "") -> str:
        # An empty label is no label to Prometheus.
        return json.dumps({"status": status, **({"reason": reason} if reason else {})}, sort_keys=True)

    expected = {
        key("accepted"): 6,
        key("confirmed"): 4,
        key("cancelled", "payment_declined"): 1,
        key("cancelled", "out_of_stock"): 1,
        key("rejected", "invalid"): 1,
    }

    def counted() -> bool:
        now = prometheus.query(orders_by)
        return all(now.get(k, 0) - before.get(k, 0) == n for k, n in expected.items())

    wait_for(counted, timeout=30, interval=0.5, what="Prometheus to count the batch exactly")
    captured = json.dumps({"outcome": "captured"})
    wait_for(
        lambda: (
            prometheus.query("sum by (outcome) (orderflow_payments_total)").get(captured, 0)
            - payments_before.get(captured, 0)
            == 4
        ),
        timeout=30,
        interval=0.5,
        what="four captured payments",
    )

    assert prometheus.scalar('sum(orderflow_saga_duration_seconds_count{status="confirmed"})') >= 4
    assert prometheus.scalar("sum(orderflow_message_processing_seconds_count)") > 0
    assert prometheus.scalar("sum(orderflow_saga_step_duration_seconds_count)") > 0
    wait_for(
        lambda: prometheus.scalar(f'max(orderflow_stock_available{{sku="{sku}"}})') == 6,
        timeout=30,
        interval=0.5,
        what="the stock gauge",
    )
    vhost = urllib.parse.unquote(system.settings.amqp_url.rsplit("/", 1)[1])
    consumers = f'rabbitmq_queue_consumers{{vhost="{vhost}", queue="orderflow.inventory.stock.0"}}'
    assert prometheus.scalar(consumers) == 2
    assert prometheus.scalar("count(rabbitmq_queue_messages_ready)") > 0


def test_every_alert_and_dashboard_expression_evaluates(prometheus: Prometheus) -> None:
    def all_evaluated() -> list[dict[str, Any]] | None:
        rules = [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]
        done = all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)
        return rules if done and rules else None

    rules = wait_for(all_evaluated, timeout=30, interval=0.5, what="every alert rule to be evaluated")
    assert len(rules) == len(alert_expressions())
    assert [(r["name"], r.get("lastError", "")) for r in rules if r["health"] != "ok"] == []
    for expression in dashboard_expressions():
        prometheus.get("/api/v1/query", query=expression)  # raises on a parse or evaluation error


def test_a_pool_of_processes_serves_one_endpoint_for_all_of_them(tmp_path: Path) -> None:
    events = 12
    with isolated_settings() as settings:
        port = free_port()
        env = {**os.environ, **settings_env(settings), "ORDERFLOW_METRICS_PORT": str(port)}
        pool = subprocess.Popen(
            [ORDERFLOW, "worker", "reporting", "--processes", "2", "--threads", "1"],
            env=env,
            stdout=(tmp_path / "log").open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            with Publish(settings) as publish:
                for _ in range(events):
                    publish.event(
                        OrderStatusChanged(
                            type="order.cancelled",
                            order_id=unique("M"),
                            status="cancelled",
                            reason="out_of_stock",
                            customer=EventCustomer(customer_id="C", name="N", email="n@example.com"),
                        )
                    )

            def handled() -> float:
                try:
                    text = (
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                    )
                except OSError:
                    return 0
                return sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("orderflow_messages_processed_total{")
                    and 'outcome="succeeded"' in line
                )

            wait_for(lambda: handled() == events, timeout=60, interval=0.3, what=f"{events} messages counted")
        finally:
            pool.send_signal(signal.SIGTERM)
            assert pool.wait(60) == 0
