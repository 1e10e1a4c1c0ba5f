"""docker-compose.yml is valid Compose, checked as `docker compose config` checks it (interpolated,
against the Compose Specification's schema, tests/schemas/compose-spec.json), and safe: nothing
published beyond the host's loopback, no guest user, no anonymous Grafana, every Orderflow container
with its own credentials only, every secret made by scripts/compose-secrets.sh."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

from services.backup import DATABASE_ORDER, suffix_of
from shared.settings import ROLES, SECRETS_VARIABLE, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = "./deploy/compose/secrets/"
LOOPBACK = {"127.0.0.1", "::1", "[::1]"}
# $$ (a literal $), ${NAME...} or $NAME, as Compose interpolates them.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))"
)


def interpolate(value: Any, without_default: set[str]) -> Any:
    """`value` as Compose sees it with no variable set: each `${NAME:-default}` its default; names
    that have none are added to `without_default`."""
    if isinstance(value, dict):
        return {key: interpolate(item, without_default) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, without_default) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["op"] in ("-", ":-"):
            return match["arg"]
        if match["op"] in ("+", ":+"):
            return ""
        without_default.add(match["braced"] or match["bare"])
        return ""

    return VARIABLE.sub(substitute, value)


def load() -> tuple[dict[str, Any], set[str]]:
    without_default: set[str] = set()
    return interpolate(yaml.safe_load(COMPOSE.read_text()), without_default), without_default


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()[0]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The secrets as scripts/compose-secrets.sh writes them, into a directory of the test's own."""
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compose-secrets.sh"), str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return directory


def init_script() -> ModuleType:
    path = ROOT / "deploy" / "mongo" / "init_replica_set.py"
    spec = importlib.util.spec_from_file_location("init_replica_set", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def orderflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the Orderflow image (built from the Dockerfile)."""
    return {name: service for name, service in services.items() if "build" in service}


def of_image(services: dict[str, dict[str, Any]], image: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image", "").split(":")[0] == image}


def secret_names(service: dict[str, Any]) -> set[str]:
    return {each if isinstance(each, str) else each["source"] for each in service.get("secrets", [])}


def test_the_file_is_valid_compose(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("order", "depends_on", {"broker-setup": {"condition": "service_done"}}),
        ("grafana", "port", ["127.0.0.1:3000:3000"]),
        ("mongo-1", "healthcheck", {"test": ["CMD", "true"], "every": "5s"}),
    ],
)
def test_the_schema_check_would_catch_a_mistake(
    compose: dict[str, Any], service: str, key: str, value: Any
) -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"][service][key] = value
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


def test_every_variable_has_a_default() -> None:
    assert load()[1] == set()
    assert interpolate("${A:-x} ${B} $C $${D}", found := set()) == "x   ${D}" and found == {"B", "C"}


def test_nothing_is_published_beyond_the_hosts_loopback(services: dict[str, dict[str, Any]]) -> None:
    published = set()
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:  # [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]
                parts = re.match(r"^(?:(\[[^\]]+\]|[^:\[]+):)?(?:([^:]*):)?([^:]+)$", str(port))
                assert parts, port
                host_ip = parts[1] if parts[2] is not None else None
            assert host_ip in LOOPBACK, f"{name} publishes {port} on every interface"
            published.add(name)
    assert published == {"rabbitmq-1", "prometheus", "grafana"}


def test_there_is_no_guest_user(compose: dict[str, Any], generated: Path) -> None:
    assert "guest" not in json.dumps(compose)
    assert not any("guest" in path.read_text() for path in generated.iterdir())
    cluster = (ROOT / "deploy" / "compose" / "rabbitmq-cluster.conf").read_text()
    assert re.search(r"^loopback_users\.guest\s*=\s*true\s*$", cluster, re.MULTILINE)
    assert not re.search(r"^loopback_users(\.guest)?\s*=\s*(false|none)", cluster, re.MULTILINE)
    entrypoint = (ROOT / "deploy" / "compose" / "rabbitmq-entrypoint.sh").read_text()
    (default_user,) = re.findall(r"default_user = (\S+?)\\n", entrypoint)
    assert default_user != "guest"
    assert "default_pass = %s" in entrypoint and "/run/secrets/rabbitmq_admin_password" in entrypoint


def test_grafana_asks_for_a_login(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    environment = grafana["environment"]
    assert str(environment["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    password_file = environment["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert password_file.startswith("/run/secrets/")
    assert password_file.removeprefix("/run/secrets/") in secret_names(grafana)


def test_each_orderflow_container_gets_only_its_own_credentials(services: dict[str, dict[str, Any]]) -> None:
    def amqp(role: str) -> str:
        return f"ORDERFLOW_AMQP_URL_{role.upper()}"

    def mongo(service: str) -> str:
        return f"ORDERFLOW_MONGO_URL_{service.upper()}"

    expected = {service: {amqp(service), mongo(service)} for service in SERVICES}
    expected["cli"] = {amqp("operator"), "ORDERFLOW_MONGO_URL"}
    expected["broker-setup"] = {amqp(role) for role in ROLES} | {"rabbitmq_admin_password"}
    expected["mongo-init"] = {mongo(s) for s in SERVICES} | {"ORDERFLOW_MONGO_URL", "mongo_root_password"}
    orderflow = orderflow_services(services)
    assert {name: secret_names(service) for name, service in orderflow.items()} == expected
    for name, service in orderflow.items():
        assert service["environment"]["ORDERFLOW_SECRETS_DIR"] == "/run/secrets", name
        # Credentials come as files, never in the environment (where `docker inspect` shows them).
        assert not [key for key in service["environment"] if "URL" in key or "PASS" in key], name


def test_every_orderflow_process_uses_quorum_queues(services: dict[str, dict[str, Any]]) -> None:
    orderflow = orderflow_services(services)
    assert set(SERVICES) <= set(orderflow)
    for name, service in orderflow.items():
        assert service["environment"]["ORDERFLOW_QUEUE_TYPE"] == "quorum", name


def test_three_rabbitmq_nodes_form_one_cluster_with_one_cookie(services: dict[str, dict[str, Any]]) -> None:
    nodes = of_image(services, "rabbitmq")
    assert sorted(nodes) == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    cluster = (ROOT / "deploy" / "compose" / "rabbitmq-cluster.conf").read_text()
    assert re.search(r"^cluster_formation\.peer_discovery_backend\s*=\s*classic_config$", cluster, re.M)
    listed = set(
        re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+\s*=\s*rabbit@(\S+)$", cluster, re.M)
    )
    assert listed == {node["hostname"] for node in nodes.values()} == set(nodes)
    entrypoint = (ROOT / "deploy" / "compose" / "rabbitmq-entrypoint.sh").read_text()
    assert "-m 0400 /run/secrets/rabbitmq_erlang_cookie /var/lib/rabbitmq/.erlang.cookie" in entrypoint
    for name, node in nodes.items():
        assert {"rabbitmq_erlang_cookie", "rabbitmq_admin_password"} <= secret_names(node), name
        assert (
            "./deploy/compose/rabbitmq-entrypoint.sh:/usr/local/bin/orderflow-entrypoint.sh:ro"
            in node["volumes"]
        )
        assert node["entrypoint"] == ["bash", "/usr/local/bin/orderflow-entrypoint.sh"], name
        assert (
            "./deploy/compose/rabbitmq-cluster.conf:/etc/rabbitmq/conf.d/30-orderflow-cluster.conf:ro"
            in node["volumes"]
        ), name
        assert "RABBITMQ_ERLANG_COOKIE" not in node.get("environment", {}), name


def test_mongodb_members_form_a_replica_set_with_keyfile_auth(services: dict[str, dict[str, Any]]) -> None:
    members = of_image(services, "mongo")
    assert sorted(members) == ["mongo-1", "mongo-2", "mongo-3"]
    installed = re.findall(
        r"install -o mongodb -g mongodb -m 0400 /run/secrets/mongo_keyfile (\S+)",
        (ROOT / "deploy" / "compose" / "mongo-entrypoint.sh").read_text(),
    )
    init = init_script()
    for name, member in members.items():
        command = member["command"]
        assert command[command.index("--keyFile") + 1] == installed[0], name
        assert command[command.index("--replSet") + 1] == init.REPLICA_SET, name
        assert "mongo_keyfile" in secret_names(member), name
        assert not member.get("ports"), name
    assert tuple(f"{name}:27017" for name in sorted(members)) == init.MEMBERS
    assert (
        services["mongo-1"]["environment"]["MONGO_INITDB_ROOT_PASSWORD_FILE"]
        == "/run/secrets/mongo_root_password"
    )


def test_workers_start_once_the_broker_and_store_are_set_up(services: dict[str, dict[str, Any]]) -> None:
    for name in (*SERVICES, "cli"):
        assert services[name]["depends_on"] == {
            "broker-setup": {"condition": "service_completed_successfully"},
            "mongo-init": {"condition": "service_completed_successfully"},
        }, name
    setup = services["broker-setup"]
    assert set(setup["depends_on"]) == set(of_image(services, "rabbitmq"))
    command = " ".join(setup["entrypoint"] + setup["command"])
    assert "orderflow broker setup" in command and "--secrets-dir /run/secrets" in command
    assert "$(cat /run/secrets/rabbitmq_admin_password)@rabbitmq-1:15672" in command
    assert set(services["mongo-init"]["depends_on"]) == set(of_image(services, "mongo"))


def test_every_secret_is_generated_and_every_mounted_file_exists(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], generated: Path
) -> None:
    declared = compose["secrets"]
    for name, secret in declared.items():
        assert secret["file"] == SECRETS + name, name  # a file, named as the secret
    assert {path.name for path in generated.iterdir()} == set(declared)
    assert set().union(*(secret_names(s) for s in services.values())) == set(declared)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file()
    ignored = (ROOT / "deploy" / "compose" / "secrets" / ".gitignore").read_text().split()
    assert ignored[-2:] == ["*", "!.gitignore"]
    assert "deploy/compose/secrets" in (ROOT / ".dockerignore").read_text().split()


def test_the_generated_secrets_are_private_and_kept(generated: Path) -> None:
    assert stat.S_IMODE(generated.stat().st_mode) == 0o700
    for name in ("mongo_keyfile", "rabbitmq_erlang_cookie"):
        assert stat.S_IMODE((generated / name).stat().st_mode) == 0o400, name
    keyfile = "".join((generated / "mongo_keyfile").read_text().split())
    assert 6 <= len(keyfile) <= 1024 and re.fullmatch(r"[A-Za-z0-9+/=]+", keyfile)
    before = {path.name: path.read_bytes() for path in generated.iterdir()}
    subprocess.run(["bash", str(ROOT / "scripts" / "compose-secrets.sh"), str(generated)], check=True)
    assert {path.name: path.read_bytes() for path in generated.iterdir()} == before


def test_the_generated_urls_name_each_role_on_every_node(generated: Path) -> None:
    passwords = []
    for role in ROLES:
        urls = [
            urlsplit(url) for url in (generated / f"ORDERFLOW_AMQP_URL_{role.upper()}").read_text().split(",")
        ]
        assert [url.hostname for url in urls] == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"], role
        assert {(url.username, url.password, url.path) for url in urls} == {(role, urls[0].password, "/%2F")}
        passwords.append(urls[0].password)
    for service in (*SERVICES, None):
        url = urlsplit(
            (generated / f"ORDERFLOW_MONGO_URL{f'_{service.upper()}' if service else ''}").read_text()
        )
        assert url.username == (service or "operator")
        assert url.netloc.rpartition("@")[2] == "mongo-1:27017,mongo-2:27017,mongo-3:27017"
        assert parse_qs(url.query) == {"replicaSet": ["rs0"], "authSource": ["admin"]}
        passwords.append(url.password)
    for name in ("rabbitmq_admin_password", "mongo_root_password", "grafana_admin_password"):
        passwords.append((generated / name).read_text())
    assert len(set(passwords)) == len(passwords) and all(len(p or "") >= 32 for p in passwords)


def test_the_settings_read_the_generated_secrets(monkeypatch: pytest.MonkeyPatch, generated: Path) -> None:
    for variable in list(os.environ):
        if variable.startswith(("ORDERFLOW_AMQP_URL", "ORDERFLOW_MONGO_URL")):
            monkeypatch.delenv(variable)
    monkeypatch.setenv(SECRETS_VARIABLE, str(generated))
    settings = Settings()
    for role in ROLES:
        assert len(settings.amqp_urls(role)) == 3, role
    for service in SERVICES:
        assert (
            settings.mongo_url_of(service)
            == (generated / f"ORDERFLOW_MONGO_URL_{service.upper()}").read_text()
        )
    assert settings.mongo_url_of(None) == (generated / "ORDERFLOW_MONGO_URL").read_text()


def test_each_store_user_may_use_its_own_databases_only(generated: Path) -> None:
    init = init_script()
    settings = Settings()
    grants = init.databases_of(settings)
    for service in SERVICES:
        secret = f"ORDERFLOW_MONGO_URL_{service.upper()}"
        assert grants[secret][0] == settings.database_name(service)
        others = {settings.database_name(other) for other in SERVICES if other != service}
        assert not others & set(grants[secret]), service
        assert init.credentials((generated / secret).read_text())[0] == service
    prefix = settings.db_prefix
    assert grants["ORDERFLOW_MONGO_URL_PAYMENT"] == [f"{prefix}_payments", f"{prefix}_simulated_gateway"]
    assert grants["ORDERFLOW_MONGO_URL"] == [f"{prefix}_{suffix_of(name)}" for name in DATABASE_ORDER]
    assert init.credentials((generated / "ORDERFLOW_MONGO_URL").read_text())[0] == "operator"
