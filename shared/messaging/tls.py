"""TLS to RabbitMQ, the same for every client: an amqps:// node's certificate is verified, against
ORDERFLOW_AMQP_CA_FILE if set (else the system's CAs), and so is its name, against the URL's host;
a client certificate is presented if one is set. amqp:// URLs stay plain.

kombu (py-amqp) takes TLS as a dict of options and dramatiq (pika) as an SSLContext; both come from
the one AmqpTls here. py-amqp loads one CA file in place of the system's CAs, never beside them,
so pika's context does the same: with a CA file, only a certificate that CA signed is accepted.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
from kombu import Connection

from shared.errors import SettingError
from shared.settings import Settings, split_urls


@dataclass(frozen=True)
class AmqpTls:
    """How amqps:// connections check the broker, and the client certificate they present."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def of(cls, settings: Settings) -> AmqpTls:
        """The TLS settings, each file loaded once to check it: a SettingError names a bad one."""
        tls = cls(settings.amqp_ca_file, settings.amqp_cert_file, settings.amqp_key_file)
        if tls.ca_file is not None:
            try:
                ssl.create_default_context(cafile=tls.ca_file)
            except (ssl.SSLError, OSError) as e:
                raise SettingError(f"ORDERFLOW_AMQP_CA_FILE={tls.ca_file}: not a PEM certificate: {e}") from e
        if tls.cert_file is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(tls.cert_file, tls.key_file)
            except (ssl.SSLError, OSError) as e:
                raise SettingError(
                    f"ORDERFLOW_AMQP_CERT_FILE={tls.cert_file}, ORDERFLOW_AMQP_KEY_FILE={tls.key_file}: "
                    f"not a PEM certificate and its private key: {e}"
                ) from e
        return tls

    def connection(self, url: str, **options: Any) -> Connection:
        """A kombu connection to the nodes of `url` (`node1;node2`): TLS to amqps:// ones."""
        nodes = split_urls(url)
        if not _secure(nodes[0]):
            return Connection(";".join(nodes), **options)
        return _NodeCheckedConnection(";".join(nodes), ssl=self._kombu_options(_host(nodes[0])), **options)

    def pika_parameters(self, url: str) -> list[pika.URLParameters]:
        """pika's parameters for the nodes of `url`, each amqps:// one verified by this TLS."""
        parameters = [pika.URLParameters(each) for each in split_urls(url)]
        context: ssl.SSLContext | None = None
        for node in parameters:
            if node.ssl_options is not None:
                context = context or self._context()
                node.ssl_options = pika.SSLOptions(context, server_hostname=node.host)
        return parameters

    def _context(self) -> ssl.SSLContext:
        # Verifies the chain and, given the server's name, the name (create_default_context's defaults).
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def _kombu_options(self, hostname: str) -> dict[str, Any]:
        # py-amqp checks the name only when given server_hostname; without ca_certs it loads the
        # system's CAs.
        return {
            "cert_reqs": ssl.CERT_REQUIRED,
            "ca_certs": None if self.ca_file is None else str(self.ca_file),
            "certfile": None if self.cert_file is None else str(self.cert_file),
            "keyfile": None if self.key_file is None else str(self.key_file),
            "server_hostname": hostname,
        }


class _NodeCheckedConnection(Connection):
    """kombu's Connection, checking each node's certificate against that node's own name. kombu's
    `server_hostname: None` is filled in once, with the first node's name, and kept for the others."""

    def switch(self, conn_str: str) -> None:
        super().switch(conn_str)
        if isinstance(self.ssl, dict):
            self.ssl = {**self.ssl, "server_hostname": self.hostname}


def _secure(url: str) -> bool:
    return url.lower().startswith("amqps://")


def _host(url: str) -> str:
    return urlsplit(url).hostname or "localhost"
