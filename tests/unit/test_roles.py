"""Roles, their URLs and permissions, and the definitions file made from them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.messaging import roles, topology
from shared.messaging.transport import topology_of
from shared.settings import ROLES, Settings, load_settings, masked

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"


@pytest.fixture(autouse=True)
def no_role_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings as the code defaults them, whatever this machine's role users."""
    for role in ROLES:
        monkeypatch.delenv(f"ORDERFLOW_AMQP_URL_{role.upper()}", raising=False)


def test_the_definitions_file_is_what_the_code_declares() -> None:
    committed = json.loads(DEFINITIONS.read_text())
    assert committed == roles.definitions(topology_of(Settings(amqp_url="amqp://a:b@h/%2F"))), (
        "regenerate it: orderflow topology definitions > deploy/rabbitmq/definitions.json"
    )


def test_every_role_has_a_user_and_no_password_is_in_the_file() -> None:
    committed = json.loads(DEFINITIONS.read_text())
    assert {user["name"] for user in committed["users"]} == set(ROLES)
    assert not any("password" in user or "password_hash" in user for user in committed["users"])


def _allowed(pattern: str, name: str) -> bool:
    return re.fullmatch(pattern, name) is not None


def test_each_pool_configures_only_what_it_owns() -> None:
    broker = topology.Topology(partitions=2, delays=frozenset({200}), timer_delays=frozenset({30_000}))
    for pool in topology.POOLS:
        granted = roles.PERMISSIONS[pool]
        for entity in broker.entities():
            assert _allowed(granted.configure, entity.name) == (entity.owner == pool), (pool, entity.name)


def test_each_pool_can_bind_what_it_declares() -> None:
    broker = topology.Topology(partitions=2, delays=frozenset({200}), timer_delays=frozenset({30_000}))
    for pool in topology.POOLS:
        granted = roles.PERMISSIONS[pool]
        for entity in broker.owned(pool):
            for exchange, _ in entity.bindings:
                assert _allowed(granted.write, entity.name), (pool, entity.name)
                assert _allowed(granted.read, exchange), (pool, exchange)
            if "x-dead-letter-exchange" in entity.arguments:
                assert _allowed(granted.write, entity.arguments["x-dead-letter-exchange"])


def test_saga_messages_can_go_only_where_the_saga_sends_them() -> None:
    def writes(role: str, queue: str) -> bool:
        granted, exchange = roles.PERMISSIONS[role], topology.exchange_to(queue)
        return _allowed(granted.write, exchange) and _allowed(granted.topics.get(exchange, ".*"), queue)

    assert writes("order", topology.PAYMENT_QUEUE) and writes("order", topology.stock_queue(3))
    assert writes("payment", topology.ORDER_SAGA_QUEUE) and writes("inventory", topology.ORDER_SAGA_QUEUE)
    assert not writes("payment", topology.stock_queue(0))
    assert not writes("payment", topology.ORDER_INTAKE_QUEUE) and not writes(
        "inventory", topology.ORDER_REQUESTS_QUEUE
    )
    assert not writes("order", topology.dead_letter_queue(topology.PAYMENT_QUEUE))
    assert writes("payment", topology.dead_letter_queue(topology.PAYMENT_QUEUE)), "its own, to dead-letter"
    assert not writes("inventory", topology.PAYMENT_QUEUE)
    assert not any(
        writes(role, topology.PAYMENT_QUEUE) for role in ("upstream", "subscriber", "notification")
    )
    assert not any(
        _allowed(roles.PERMISSIONS[role].write, "amq.default") for role in ROLES if role != "operator"
    )


def test_a_role_without_a_url_of_its_own_connects_as_the_administrator() -> None:
    settings = Settings(
        amqp_url="amqp://admin:secret@h1/v", amqp_url_order="amqp://order:pw@h1/v,amqp://order:pw@h2/v"
    )
    assert settings.amqp_urls("order") == ["amqp://order:pw@h1/v", "amqp://order:pw@h2/v"]
    assert settings.amqp_url_of("order") == "amqp://order:pw@h1/v;amqp://order:pw@h2/v"
    assert settings.amqp_urls("payment") == ["amqp://admin:secret@h1/v"]
    assert settings.mongo_url_of("payment") == settings.mongo_url


def test_role_urls_are_secrets() -> None:
    settings = Settings(amqp_url_order="amqp://order:hunter2@h/v", mongo_url_order="mongodb://o:hunter2@h/")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


def test_a_bad_role_url_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.errors import SettingError

    monkeypatch.setenv("ORDERFLOW_AMQP_URL_PAYMENT", "http://payment:hunter2@h/v")
    with pytest.raises(SettingError) as refused:
        load_settings()
    assert "ORDERFLOW_AMQP_URL_PAYMENT" in str(refused.value) and "hunter2" not in str(refused.value)
    assert masked("amqp://payment:hunter2@h/v") == "amqp://payment:***@h/v"


def test_queues_are_quorum_queues_when_the_broker_has_several_nodes() -> None:
    assert not Settings().quorum_queues
    assert Settings(amqp_url="amqp://a:b@h1/v;amqp://a:b@h2/v").quorum_queues
    assert Settings(amqp_url_order="amqp://a:b@h1/v,amqp://a:b@h2/v").quorum_queues
    assert not Settings(amqp_url="amqp://a:b@h1/v,amqp://a:b@h2/v", queue_type="classic").quorum_queues
    assert Settings(queue_type="quorum").quorum_queues


def test_quorum_queues_have_a_delivery_limit_and_dead_letter_at_least_once() -> None:
    broker = topology_of(Settings(queue_type="quorum", delivery_limit=7))
    for entity in broker.entities():
        if entity.kind == "queue":
            assert entity.arguments["x-queue-type"] == "quorum", entity.name
    stock = broker.queue_arguments(topology.stock_queue(0))
    assert stock["x-delivery-limit"] == 7 and stock["x-single-active-consumer"] is True
    assert stock["x-dead-letter-routing-key"] == topology.dead_letter_queue(topology.stock_queue(0))
    delay = broker.delay_queue_arguments("payment", 200)
    assert delay["x-dead-letter-strategy"] == "at-least-once" and delay["x-overflow"] == "reject-publish"
    assert "x-queue-type" not in topology_of(Settings()).queue_arguments(topology.PAYMENT_QUEUE)


def test_settings_come_from_a_secrets_directory_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ORDERFLOW_AMQP_URL_PAYMENT").write_text("amqp://payment:from-file@h/v\n")
    (tmp_path / "ORDERFLOW_AMQP_URL_ORDER").write_text("amqp://order:from-file@h/v")
    monkeypatch.setenv("ORDERFLOW_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("ORDERFLOW_AMQP_URL_ORDER", "amqp://order:from-env@h/v")
    settings = load_settings()
    assert settings.amqp_urls("payment") == ["amqp://payment:from-file@h/v"]
    assert settings.amqp_urls("order") == ["amqp://order:from-env@h/v"]


def test_every_node_of_a_url_list_has_its_password_masked() -> None:
    nodes = "amqp://operator:TopSecret1@h1:5672/%2F,amqp://operator:TopSecret2@h2/%2F;amqp://o:Top@3@h3/v"
    shown = masked(f"cannot reach RabbitMQ at {nodes}: refused")
    assert "TopSecret" not in shown and "Top@3" not in shown
    assert shown.count("operator:***@") == 2 and "o:***@h3/v" in shown


def test_a_blank_role_url_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ORDERFLOW_AMQP_URL_INVENTORY").write_text("\n")
    monkeypatch.setenv("ORDERFLOW_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("ORDERFLOW_AMQP_URL_PAYMENT", "  ")
    settings = load_settings()
    assert settings.amqp_url_inventory is None and settings.amqp_url_payment is None
    assert settings.amqp_urls("inventory") == settings.amqp_urls("payment") == [settings.amqp_url]


def test_the_management_api_is_reached_over_https_beside_an_amqps_broker() -> None:
    from shared.messaging.management import Management

    assert Management.beside("amqps://admin:pw@rabbit-1:5671/%2F")._base == "https://rabbit-1:15671/api"
    assert Management.beside("amqp://admin:pw@rabbit-1:5672/%2F")._base == "http://rabbit-1:15672/api"
