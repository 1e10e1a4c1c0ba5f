"""One typed settings object, read from ORDERFLOW_* environment variables."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, FilePath, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import money
from shared.errors import SettingError

SERVICES = ("order", "inventory", "payment", "notification", "reporting")


class Settings(BaseSettings):
    """Everything a worker or the CLI needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="ORDERFLOW_", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    db_prefix: str = Field(default="orderflow", pattern=r"^[A-Za-z0-9_-]{1,40}$")

    # An ISO 4217 code: its minor unit (0 decimals for JPY, 2 for CNY, 3 for KWD) is what amounts count.
    currency: str = "CNY"
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    # Where a worker pool serves /metrics: by default 9101 (order) to 9105 (reporting), on loopback.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_address: str = "127.0.0.1"

    # The largest intake message accepted; larger ones are dead-lettered unread. RabbitMQ itself
    # refuses any message over 1 MiB (max_message_size, deploy/rabbitmq/rabbitmq.conf).
    max_message_bytes: int = Field(default=64 * 1024, gt=0)
    # Each dead-letter queue holds at most this many messages and bytes of bodies (x-max-length,
    # x-max-length-bytes). A full one refuses more (x-overflow: reject-publish): a message due
    # there goes round its own queue's longest retry delay until there is room, and nothing is
    # dropped. Changing either needs `orderflow topology upgrade`.
    dead_letter_max_messages: int = Field(default=100_000, ge=1)
    dead_letter_max_bytes: int = Field(default=1024**3, ge=1)

    # A saga step with no reply within this many seconds is compensated and the order cancelled
    # (unless its command is still queued behind work that a consumer is working off).
    step_timeout: float = Field(default=30.0, gt=0)
    # How often each order worker looks for sagas past their deadline whose timer went missing.
    sweep_interval: float = Field(default=60.0, gt=0)
    # A release or refund outstanding for longer than this many seconds is overdue (it is still
    # asked for, with backoff), and units held that long make inventory ask their order whether
    # to sell or release them (orderflow_compensations_overdue, orderflow_stock_holds_overdue).
    compensation_grace: float = Field(default=300.0, gt=0)
    # A shipped order is completed this many days after shipping, if nobody completed it before;
    # the order worker looks for such orders every ORDERFLOW_COMPLETE_CHECK_INTERVAL seconds.
    complete_after_days: float = Field(default=14.0, gt=0)
    complete_check_interval: float = Field(default=3600.0, gt=0)

    # Sagas an order worker process keeps under way at once; more orders wait in the intake queue,
    # where they hold no stock and no step's clock runs for them.
    max_in_flight: int = Field(default=500, ge=1)
    # The most messages a consumer takes off a queue and handles together.
    batch_size: int = Field(default=100, ge=1, le=1000)
    # Stock is partitioned by SKU, one single-active-consumer queue per partition. Every process
    # of a deployment must agree on it; change it only with the stock queues drained.
    inventory_partitions: int = Field(default=1, ge=1, le=64)

    # Retries of transient failures (a dependency down, a gateway error), with exponential backoff.
    max_retries: int = Field(default=5, ge=0)
    min_backoff_ms: int = Field(default=200, gt=0)
    max_backoff_ms: int = Field(default=5_000, gt=0)
    payment_attempts: int = Field(default=3, gt=0)
    # How long the simulated gateway takes to answer a charge made with the token `tok_slow`.
    sim_gateway_delay: float = Field(default=5.0, ge=0)

    # Notifications: SMTP is optional; every notification is also recorded in the store.
    # smtp:// upgrades with STARTTLS (and never logs in without it), smtps:// is TLS from the start;
    # certificates are always verified, against the system's CAs plus this PEM file if set.
    smtp_url: str | None = None
    smtp_ca_file: FilePath | None = None
    mail_from: str = "Orderflow <orders@orderflow.invalid>"
    operator_email: str = "operators@orderflow.invalid"
    notification_lease_seconds: float = Field(default=30.0, gt=0)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, code: str) -> str:
        money.exponent(code)  # raises UnknownCurrency, naming the code
        return code

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, url: str) -> str:
        return _url(url, ("amqp", "amqps"), "amqp://user:password@host:5672/vhost")

    @field_validator("mongo_url")
    @classmethod
    def _mongo_url(cls, url: str) -> str:
        return _url(url, ("mongodb", "mongodb+srv"), "mongodb://host:27017/")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, url: str | None) -> str | None:
        return None if url is None else _url(url, ("smtp", "smtps"), "smtp://user:password@host:587")

    def metrics_port_of(self, service: str, *, all_pools: bool = False) -> int:
        """Where `service`'s pool serves /metrics: ORDERFLOW_METRICS_PORT as it is for `orderflow
        worker`; under `orderflow run` (`all_pools`), five pools on one machine, that port plus the
        pool's place in SERVICES (order +0, inventory +1, ... reporting +4). Unset: 9101 to 9105."""
        if self.metrics_port is None:
            return METRICS_PORTS[service]
        port = self.metrics_port + (SERVICES.index(service) if all_pools else 0)
        if port > 65535:
            raise SettingError(
                f"ORDERFLOW_METRICS_PORT={self.metrics_port}: orderflow run serves its five pools on "
                f"it and the four ports after it, so it must be at most {65535 - len(SERVICES) + 1}"
            )
        return port

    def database_name(self, service: str) -> str:
        """The database a worker owns: `<prefix>_orders`, `<prefix>_inventory`, ..."""
        return f"{self.db_prefix}_{DATABASES[service]}"


DATABASES = {
    "order": "orders",
    "inventory": "inventory",
    "payment": "payments",
    "notification": "notifications",
    "reporting": "reporting",
}

METRICS_PORTS = {"order": 9101, "inventory": 9102, "payment": 9103, "notification": 9104, "reporting": 9105}


def load_settings() -> Settings:
    """The settings from the environment; a SettingError names every bad variable, never a password."""
    try:
        return Settings()
    except ValidationError as e:
        raise SettingError("; ".join(_problem(error) for error in e.errors())) from e


def masked(text: str) -> str:
    """`text` with the password of any URL in it hidden: amqp://guest:***@host/."""
    return re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)


def _url(url: str, schemes: tuple[str, ...], example: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    if scheme.lower() not in schemes or not host:
        raise ValueError(f"not a URL of {' or '.join(f'{s}://' for s in schemes)}, such as {example}")
    return url


def _problem(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"])
    variable = f"ORDERFLOW_{field.upper()}"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str):
        return f"{variable}={masked(value)!r}: {message}"
    return f"{variable}: {message}"
