"""One typed settings object, read from ORDERFLOW_* environment variables and, below them, from the
TOML file ORDERFLOW_CONFIG names (`orderflow --config FILE` sets it for a command and what it starts)."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared import money
from shared.errors import SettingError

SERVICES = ("order", "inventory", "payment", "notification", "reporting")
# Who connects to RabbitMQ, each as a user of its own (shared/messaging/roles.py): upstream systems,
# the five worker pools, outside subscribers to events, and operators (the CLI).
ROLES = ("upstream", *SERVICES, "subscriber", "operator")


class Settings(BaseSettings):
    """Everything a worker or the CLI needs to know about its environment."""

    # An empty variable is an unset one: a process started with ORDERFLOW_AMQP_URL_ORDER="" uses
    # the administrative URL, whatever the environment it inherits says.
    model_config = SettingsConfigDict(env_prefix="ORDERFLOW_", frozen=True, env_ignore_empty=True)

    # The broker and the store as an administrator sees them: the URL of every role (and every
    # worker's store) whose own is not set. Several URLs, separated by commas or semicolons, are
    # nodes of one cluster, tried in turn.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    # Each role's own broker user (ORDERFLOW_AMQP_URL_ORDER, ...), secrets: never shown or logged.
    amqp_url_upstream: SecretStr | None = None
    amqp_url_order: SecretStr | None = None
    amqp_url_inventory: SecretStr | None = None
    amqp_url_payment: SecretStr | None = None
    amqp_url_notification: SecretStr | None = None
    amqp_url_reporting: SecretStr | None = None
    amqp_url_subscriber: SecretStr | None = None
    amqp_url_operator: SecretStr | None = None
    # Each worker's own store user, allowed its own database only (ORDERFLOW_MONGO_URL_ORDER, ...).
    mongo_url_order: SecretStr | None = None
    mongo_url_inventory: SecretStr | None = None
    mongo_url_payment: SecretStr | None = None
    mongo_url_notification: SecretStr | None = None
    mongo_url_reporting: SecretStr | None = None
    # amqps:// URLs verify the broker's certificate, and its name, against this PEM file's CAs
    # (in place of the system's: py-amqp takes one or the other), the system's if unset; a client
    # certificate and its key (or one PEM file holding both), if the broker asks for one
    # (shared/messaging/tls.py). MongoDB takes its TLS options in its URL: ?tls=true&tlsCAFile=...
    amqp_ca_file: FilePath | None = None
    amqp_cert_file: FilePath | None = None
    amqp_key_file: FilePath | None = None

    # Classic queues on a single broker; quorum queues, replicated on a cluster's nodes, survive
    # losing a node. Unset: quorum when a broker URL names several nodes, classic otherwise.
    # Changing it needs `orderflow topology upgrade` with the queues drained.
    queue_type: Literal["classic", "quorum"] | None = None
    # A message delivered this many times without being settled (its consumer died with it, again
    # and again) is a poison message: quorum queues dead-letter it with the reason.
    delivery_limit: int = Field(default=20, ge=1)
    db_prefix: str = Field(default="orderflow", pattern=r"^[A-Za-z0-9_-]{1,40}$")

    # An ISO 4217 code: its minor unit (0 decimals for JPY, 2 for CNY, 3 for KWD) is what amounts count.
    currency: str = "CNY"
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    # Where a worker pool serves /metrics: by default 9101 (order) to 9105 (reporting), on loopback;
    # 0: any free port, each pool printing the one it got.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment wins over the configuration file, the file over the defaults."""
        path = config_file()
        in_file = () if path is None else (ConfigFile(settings_cls, path),)
        secrets = os.environ.get(SECRETS_VARIABLE)
        in_secrets = () if not secrets else (SecretsSettingsSource(settings_cls, secrets_dir=secrets),)
        return init_settings, env_settings, dotenv_settings, *in_secrets, *in_file

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, code: str) -> str:
        money.exponent(code)  # raises UnknownCurrency, naming the code
        return code

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, url: str) -> str:
        _amqp_nodes(url)
        return url

    @field_validator("mongo_url")
    @classmethod
    def _mongo_url(cls, url: str) -> str:
        return _url(url, ("mongodb", "mongodb+srv"), MONGO_EXAMPLE)

    @field_validator(
        *(f"amqp_url_{role}" for role in ROLES),
        *(f"mongo_url_{service}" for service in SERVICES),
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # An empty secrets file, or a variable of spaces, names no URL: the role uses the administrative one.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(*(f"amqp_url_{role}" for role in ROLES))
    @classmethod
    def _role_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            _amqp_nodes(url.get_secret_value())
        return url

    @field_validator(*(f"mongo_url_{service}" for service in SERVICES))
    @classmethod
    def _service_mongo_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            _url(url.get_secret_value(), ("mongodb", "mongodb+srv"), MONGO_EXAMPLE)
        return url

    def has_own_amqp_url(self, role: str | None) -> bool:
        """Whether `role` connects as a broker user of its own (else as the administrator)."""
        return role is not None and getattr(self, f"amqp_url_{role}") is not None

    def amqp_urls(self, role: str | None = None) -> list[str]:
        """The broker nodes `role` connects to, as its own user (the administrative URL's if it has
        none of its own, or if `role` is None)."""
        own: SecretStr | None = getattr(self, f"amqp_url_{role}") if role is not None else None
        return split_urls(own.get_secret_value() if own is not None else self.amqp_url)

    def amqp_url_of(self, role: str | None = None) -> str:
        """`amqp_urls(role)` as one string, as kombu and dramatiq take a list of nodes to fail over."""
        return ";".join(self.amqp_urls(role))

    def mongo_url_of(self, service: str | None = None) -> str:
        """The store as `service`'s own user sees it (the administrative URL if it has none)."""
        own: SecretStr | None = getattr(self, f"mongo_url_{service}") if service is not None else None
        return own.get_secret_value() if own is not None else self.mongo_url

    @property
    def quorum_queues(self) -> bool:
        """Whether queues are quorum queues: as set, or, unset, when the broker has several nodes."""
        if self.queue_type is not None:
            return self.queue_type == "quorum"
        return any(len(self.amqp_urls(role)) > 1 for role in (None, *ROLES))

    @model_validator(mode="after")
    def _amqp_tls(self) -> Settings:
        # A SettingError, not a ValueError: pydantic would name no variable for a check of several.
        if self.amqp_key_file is not None and self.amqp_cert_file is None:
            raise SettingError(
                "ORDERFLOW_AMQP_KEY_FILE is set without ORDERFLOW_AMQP_CERT_FILE, the certificate of the key"
            )
        named = [name for name in ("amqp_ca_file", "amqp_cert_file", "amqp_key_file") if getattr(self, name)]
        if named and not any(url.lower().startswith("amqps://") for url in self._all_amqp_urls()):
            raise SettingError(
                f"{', '.join(f'ORDERFLOW_{name.upper()}' for name in named)} set, but no broker URL is "
                "amqps://: connections to RabbitMQ would not be encrypted (its TLS port is usually 5671)"
            )
        return self

    def _all_amqp_urls(self) -> list[str]:
        return [url for role in (None, *ROLES) for url in self.amqp_urls(role)]

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
        if self.metrics_port == 0:
            return 0
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


CONFIG_VARIABLE = "ORDERFLOW_CONFIG"
# A directory of files, each named as a variable (ORDERFLOW_AMQP_URL_ORDER) and holding its value:
# how containers get their secrets (/run/secrets), below the environment and above the file.
SECRETS_VARIABLE = "ORDERFLOW_SECRETS_DIR"

AMQP_EXAMPLE = "amqp://user:password@host:5672/vhost"
MONGO_EXAMPLE = "mongodb://host:27017/"

Origin = Literal["default", "file", "secrets", "environment"]


class ConfigFile(TomlConfigSettingsSource):
    """The settings a TOML file gives, keyed as the fields are named (`step_timeout = 30`)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        if not path.is_file():  # the TOML source would quietly read nothing
            raise SettingError(
                f"configuration file {path}: {'not a file' if path.exists() else 'no such file'}"
            )
        super().__init__(settings_cls, toml_file=path)
        # As written, not matched case-insensitively as the environment is: a key that is not a
        # field's exact name reaches validation as an extra, which refuses it (unknown setting).
        self.init_kwargs = dict(self.toml_data)

    def _read_file(self, path: Any) -> dict[str, Any]:
        try:
            return super()._read_file(path)
        except tomllib.TOMLDecodeError as e:
            raise SettingError(f"configuration file {path}: not TOML: {e}") from e
        except UnicodeDecodeError as e:
            raise SettingError(f"configuration file {path}: not TOML: not UTF-8 at byte {e.start}") from e
        except OSError as e:
            raise SettingError(f"configuration file {path}: {e.strerror or e}") from e


def config_file() -> Path | None:
    """The configuration file ORDERFLOW_CONFIG names, if it names one."""
    path = os.environ.get(CONFIG_VARIABLE)
    return Path(path) if path else None


def origins() -> dict[str, Origin]:
    """Where each setting comes from: the environment, the configuration file, or its default."""
    from_environment = EnvSettingsSource(Settings)()
    secrets = os.environ.get(SECRETS_VARIABLE)
    from_secrets = SecretsSettingsSource(Settings, secrets_dir=secrets)() if secrets else {}
    path = config_file()
    from_file = ConfigFile(Settings, path).toml_data if path is not None else {}

    def origin(name: str) -> Origin:
        if name in from_environment:
            return "environment"
        return "secrets" if name in from_secrets else "file" if name in from_file else "default"

    return {name: origin(name) for name in Settings.model_fields}


def load_settings() -> Settings:
    """The settings from the environment and the configuration file; a SettingError names every bad
    variable or key (and its file), never a password."""
    try:
        return Settings()
    except ValidationError as e:
        where = origins()
        raise SettingError("; ".join(_problem(error, where) for error in e.errors())) from e


def check_config_file() -> None:
    """Every value of the configuration file valid in itself, even one the environment overrides: a
    SettingError names each bad key and the file."""
    path = config_file()
    if path is None:
        return
    data = ConfigFile(Settings, path).toml_data
    try:
        Settings(**data)
    except ValidationError as e:
        in_file: dict[str, Origin] = {name: "file" for name in data}
        problems = [_problem(error, in_file) for error in e.errors() if error["loc"][0] in data]
        if problems:
            raise SettingError("; ".join(problems)) from e


def masked(text: str) -> str:
    """`text` with the password of any URL in it hidden: amqp://guest:***@host/. The password runs
    to the last `@` before the host (it may hold one), with or without a scheme; each node of a
    list (`amqp://a:p1@h1,amqp://a:p2@h2`) apart."""
    return re.sub(r"[^\s'\"]+@[^\s'\"@]*", _masked_urls, text)


def _masked_urls(match: re.Match[str]) -> str:
    # A comma or semicolon followed by a scheme starts the next node of a list.
    pieces = re.split(r"([,;](?=[A-Za-z][A-Za-z0-9+.-]*://))", match.group(0))
    return "".join(piece if piece in (",", ";") else _masked_url(piece) for piece in pieces)


def _masked_url(url: str) -> str:
    if "@" not in url:
        return url
    credentials, _, host = url.rpartition("@")
    scheme, separator, user = credentials.rpartition("://") if "://" in credentials else ("", "", credentials)
    if ":" not in user:
        return url
    return f"{scheme}{separator}{user.split(':', 1)[0]}:***@{host}"


def _amqp_nodes(urls: str) -> None:
    nodes = split_urls(urls)
    for each in nodes:
        _url(each, ("amqp", "amqps"), AMQP_EXAMPLE)
    if len({node.partition("://")[0].lower() for node in nodes}) > 1:
        raise ValueError("mixes amqp:// and amqps:// nodes: reach every node of a cluster the same way")


def credentials_of(urls: str) -> tuple[str, str]:
    """The user and password a URL (or the first of a list of nodes) connects with."""
    parts = urlsplit(split_urls(urls)[0])
    return unquote(parts.username or ""), unquote(parts.password or "")


def read_variables(path: Path) -> dict[str, str]:
    """The `NAME=value` lines of an env file (none if it is not there)."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def split_urls(urls: str) -> list[str]:
    """The URLs of a setting that names several nodes: separated by commas, semicolons or spaces."""
    return [url for url in re.split(r"[,;\s]+", urls) if url]


def _url(url: str, schemes: tuple[str, ...], example: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    if scheme.lower() not in schemes or not host:
        raise ValueError(f"not a URL of {' or '.join(f'{s}://' for s in schemes)}, such as {example}")
    return url


def _problem(error: Any, where: dict[str, Origin]) -> str:
    field = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = repr(masked(value)) if isinstance(value, str) else masked(repr(value))
    if error["type"] == "extra_forbidden":  # only a file has keys that name no setting
        close = difflib.get_close_matches(field.lower(), Settings.model_fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{config_file()}: unknown setting {field!r}{hint}"
    if where.get(field) == "file":
        return f"{config_file()}: {field} = {shown}: {message}"
    variable = f"ORDERFLOW_{field.upper()}"
    if isinstance(value, str):
        return f"{variable}={shown}: {message}"
    return f"{variable}: {message}"
