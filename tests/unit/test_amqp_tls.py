"""TLS to RabbitMQ as every client is given it: amqps:// verified (the chain and each node's own
name), amqp:// plain, and the settings that cannot work refused. tests/faults/test_tls.py runs it
against a broker that speaks TLS only."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from kombu.exceptions import OperationalError
from kombu.transport import pyamqp

from shared.errors import SettingError
from shared.messaging.saga_bus import SagaBroker
from shared.messaging.tls import AmqpTls
from shared.settings import ROLES, Settings

NODES = "amqps://u:p@rabbit-1.internal:5671/orders;amqps://u:p@rabbit-2.internal:5671/orders"


def settings(**given: Any) -> Settings:
    """Settings from `given` alone: no role URL of this machine's (tests/conftest.py sets them)."""
    return Settings(**{**{f"amqp_url_{role}": None for role in ROLES}, **given})


def test_amqp_urls_stay_plain() -> None:
    tls = AmqpTls(ca_file=Path("/ca.pem"))
    assert tls.connection("amqp://u:p@rabbit:5672/%2F").ssl is False
    assert [node.ssl_options for node in tls.pika_parameters("amqp://u:p@a/;amqp://u:p@b/")] == [None, None]


def test_kombu_verifies_the_chain_and_the_name_and_presents_the_client_certificate() -> None:
    tls = AmqpTls(Path("/etc/orderflow/ca.pem"), Path("/etc/orderflow/client.pem"), Path("/k.pem"))
    options = tls.connection(NODES).ssl
    assert options == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": "/etc/orderflow/ca.pem",
        "certfile": "/etc/orderflow/client.pem",
        "keyfile": "/k.pem",
        "server_hostname": "rabbit-1.internal",  # py-amqp checks no name without it
    }
    assert AmqpTls().connection(NODES).ssl["ca_certs"] is None, "no CA file: the system's CAs"


def test_kombu_checks_each_node_under_its_own_name_when_failing_over(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[tuple[str, str]] = []

    class Unreachable:  # py-amqp's Connection, as kombu makes one per attempt
        def __init__(self, **options: Any) -> None:
            tried.append((options["host"], options["ssl"]["server_hostname"]))
            raise ConnectionRefusedError("down")

    monkeypatch.setattr(pyamqp.Transport, "Connection", Unreachable)
    connection = AmqpTls().connection(NODES)
    with pytest.raises(OperationalError):
        connection.ensure_connection(max_retries=3, interval_start=0, interval_step=0)
    assert tried[:3] == [
        ("rabbit-1.internal:5671", "rabbit-1.internal"),
        ("rabbit-2.internal:5671", "rabbit-2.internal"),  # kombu alone would check rabbit-1's name
        ("rabbit-1.internal:5671", "rabbit-1.internal"),
    ]


def test_dramatiq_gets_every_node_verified_under_its_own_name() -> None:
    broker = SagaBroker(NODES, AmqpTls())
    nodes = broker.parameters
    assert [(node.host, node.ssl_options.server_hostname) for node in nodes] == [
        ("rabbit-1.internal", "rabbit-1.internal"),
        ("rabbit-2.internal", "rabbit-2.internal"),
    ]
    context = nodes[0].ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert SagaBroker("amqp://u:p@rabbit/%2F").parameters[0].ssl_options is None


def test_a_key_without_its_certificate_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("")
    with pytest.raises(SettingError, match="ORDERFLOW_AMQP_KEY_FILE is set without ORDERFLOW_AMQP_CERT_FILE"):
        settings(amqp_url="amqps://u:p@rabbit/%2F", amqp_key_file=key)


def test_tls_files_with_no_amqps_url_are_refused_rather_than_sent_in_clear(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    with pytest.raises(SettingError, match="ORDERFLOW_AMQP_CA_FILE set, but no broker URL is amqps://"):
        settings(amqp_url="amqp://u:p@rabbit/%2F", amqp_ca_file=ca)
    # One role reaching the broker over TLS is enough: the files are for it.
    settings(amqp_url="amqp://u:p@rabbit/%2F", amqp_url_order="amqps://order:p@rabbit/%2F", amqp_ca_file=ca)


def test_a_cluster_is_reached_one_way() -> None:
    with pytest.raises(ValueError, match="mixes amqp:// and amqps:// nodes"):
        settings(amqp_url="amqps://u:p@a/%2F,amqp://u:p@b/%2F")


def test_a_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    with pytest.raises(SettingError) as refused:
        AmqpTls.of(settings(amqp_url="amqps://u:p@rabbit/%2F", amqp_ca_file=junk))
    assert f"ORDERFLOW_AMQP_CA_FILE={junk}: not a PEM certificate" in str(refused.value)
    with pytest.raises(SettingError) as refused:
        AmqpTls.of(settings(amqp_url="amqps://u:p@rabbit/%2F", amqp_cert_file=junk))
    assert f"ORDERFLOW_AMQP_CERT_FILE={junk}" in str(refused.value)
    assert "not a PEM certificate and its private key" in str(refused.value)
