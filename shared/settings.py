"""One typed settings object, read from ORDERFLOW_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("order", "inventory", "payment", "notification", "reporting")


class Settings(BaseSettings):
    """Everything a worker or the CLI needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="ORDERFLOW_", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    db_prefix: str = Field(default="orderflow", pattern=r"^[A-Za-z0-9_-]{1,40}$")

    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
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

    # Notifications: SMTP is optional; every notification is also recorded in the store.
    smtp_url: str | None = None
    mail_from: str = "Orderflow <orders@orderflow.invalid>"
    operator_email: str = "operators@orderflow.invalid"
    notification_lease_seconds: float = Field(default=30.0, gt=0)

    def metrics_port_of(self, service: str) -> int:
        return self.metrics_port or METRICS_PORTS[service]

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
