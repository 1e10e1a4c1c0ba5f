"""deploy/k8s/: every overlay renders with kustomize and passes kubeconform's strict schemas (vendored
in deploy/k8s/schemas/, no network), and keeps what the workers rely on: probes at the metrics port,
a grace period that covers the drain, a disruption budget, its own credentials and no others, and in
production KEDA scaling on the queues each worker consumes.

kustomize and kubeconform are built once from the Go module proxy by scripts/k8s-tools.sh."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.messaging import topology
from shared.runtime import DRAIN_SECONDS, EXIT_GRACE_SECONDS
from shared.settings import SERVICES, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSIONS = sorted(
    path.name.removeprefix("v").removesuffix("-standalone-strict")
    for path in (SCHEMAS / "kubernetes").glob("v*-standalone-strict")
)
# supervise() (shared/runtime.py) waits this long for a process it had to kill.
KILL_WAIT_SECONDS = 1
# The queues each worker consumes; inventory's, one per partition, come from the settings.
QUEUES = {
    "order": {topology.ORDER_INTAKE_QUEUE, topology.ORDER_REQUESTS_QUEUE, topology.ORDER_SAGA_QUEUE},
    "payment": {topology.PAYMENT_QUEUE},
    "notification": {topology.NOTIFICATION_EVENTS_QUEUE},
    "reporting": {topology.REPORTING_EVENTS_QUEUE},
}
EGRESS_PORTS = {5671, 5672, 27017, 53}
SMTP_PORTS = {25, 465, 587}

Manifest = dict[str, Any]
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def credentials(role: str) -> set[str]:
    """The settings holding a role's credentials."""
    if role == "operator":  # KEDA reads queue depths with it; the CLI, run in a Job, uses both
        return {"ORDERFLOW_AMQP_URL_OPERATOR", "ORDERFLOW_MONGO_URL"}
    return {f"ORDERFLOW_AMQP_URL_{role.upper()}", f"ORDERFLOW_MONGO_URL_{role.upper()}"}


# --- rendering -------------------------------------------------------------------------------------


def tool(name: str) -> str:
    result = subprocess.run(
        [str(ROOT / "scripts" / "k8s-tools.sh"), name], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def kustomize() -> str:
    return tool("kustomize")


@pytest.fixture(scope="module")
def kubeconform() -> str:
    return tool("kubeconform")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/k8s/ with each overlay's credentials written from its examples, as an operator would."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("*.env"))
    for example in copy.glob("overlays/*/secrets/*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return copy


@pytest.fixture(scope="module")
def render(kustomize: str, tree: Path) -> Callable[[str], Rendered]:
    rendered: dict[str, Rendered] = {}

    def build(overlay: str) -> Rendered:
        if overlay not in rendered:
            result = subprocess.run(
                [kustomize, "build", str(tree / "overlays" / overlay)], capture_output=True, text=True
            )
            assert result.returncode == 0, result.stderr
            rendered[overlay] = Rendered(overlay, result.stdout)
        return rendered[overlay]

    return build


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, render: Callable[[str], Rendered]) -> Rendered:
    return render(request.param)


@pytest.fixture
def production(render: Callable[[str], Rendered]) -> Rendered:
    return render("production")


class Rendered:
    """One overlay's objects, looked up by kind and name."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.objects: list[Manifest] = [doc for doc in yaml.load_all(text, Loader=YamlLoader) if doc]

    def all(self, kind: str) -> list[Manifest]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        found = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: {len(found)} {kind} named {name}"
        return found[0]

    def worker(self, kind: str, service: str) -> Manifest:
        return self.get(kind, f"orderflow-{service}")

    def container(self, service: str) -> Manifest:
        (container,) = self.worker("Deployment", service)["spec"]["template"]["spec"]["containers"]
        return container

    def env(self, service: str) -> dict[str, str]:
        """The container's environment as the kubelet gives it: its ConfigMaps, then its own values."""
        container = self.container(service)
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            assert "configMapRef" in source, f"{service}: credentials come from its mounted Secret"
            env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
        env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
        return env

    def settings(self) -> dict[str, str]:
        (config,) = self.all("ConfigMap")
        data: dict[str, str] = config["data"]
        return data


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector
    return selector["matchLabels"].items() <= labels.items()


def pod_labels(rendered: Rendered, service: str) -> dict[str, str]:
    labels: dict[str, str] = rendered.worker("Deployment", service)["spec"]["template"]["metadata"]["labels"]
    return labels


def metrics_port(container: Manifest) -> int:
    (port,) = [port for port in container["ports"] if port.get("name") == "metrics"]
    number: int = port["containerPort"]
    return number


def probe_port(container: Manifest, probe: Manifest) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        (named,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
        return int(named)
    return int(port)


def kubeconform_errors(kubeconform: str, manifests: Path, version: str) -> tuple[int, str]:
    result = subprocess.run(
        [
            kubeconform,
            "-strict",
            "-summary",
            "-kubernetes-version",
            version,
            "-schema-location",
            f"{SCHEMAS}/kubernetes/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}"
            "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-schema-location",
            f"{SCHEMAS}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
            str(manifests),
        ],
        capture_output=True,
        text=True,
    )
    return result.returncode, result.stdout + result.stderr


# --- validity --------------------------------------------------------------------------------------


def test_schemas_are_vendored_for_the_oldest_and_newest_kubernetes() -> None:
    assert len(KUBERNETES_VERSIONS) >= 2, KUBERNETES_VERSIONS


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_overlay_passes_the_strict_schemas(
    overlay: Rendered, kubeconform: str, tmp_path: Path, version: str
) -> None:
    manifests = tmp_path / f"{overlay.name}.yaml"
    manifests.write_text(overlay.text)
    code, output = kubeconform_errors(kubeconform, manifests, version)
    assert code == 0, output
    count = len(overlay.objects)
    assert f"{count} resources found in 1 file - Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in output


def _unknown_field(kind: str, add: Callable[[Manifest], None]) -> Callable[[list[Manifest]], None]:
    def mutate(objects: list[Manifest]) -> None:
        add(next(obj for obj in objects if obj["kind"] == kind))

    return mutate


MUTATIONS: dict[str, Callable[[list[Manifest]], None]] = {
    "a misspelt probe field": _unknown_field(
        "Deployment",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].update(perodSeconds=5),
    ),
    "a misspelt PodDisruptionBudget field": _unknown_field(
        "PodDisruptionBudget", lambda p: p["spec"].update(maxUnavailible=1)
    ),
    "a misspelt ScaledObject field": _unknown_field(
        "ScaledObject", lambda s: s["spec"].update(minReplicas=2)
    ),
    "a misspelt ServiceMonitor field": _unknown_field(
        "ServiceMonitor", lambda s: s["spec"]["endpoints"][0].update(intervall="15s")
    ),
    "a kind with no schema": lambda objects: objects.append(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_the_schema_check_fails_on(
    mutation: str, production: Rendered, kubeconform: str, tmp_path: Path
) -> None:
    objects = [doc for doc in yaml.load_all(production.text, Loader=YamlLoader) if doc]
    MUTATIONS[mutation](objects)
    manifests = tmp_path / "mutated.yaml"
    manifests.write_text(yaml.safe_dump_all(objects))
    code, output = kubeconform_errors(kubeconform, manifests, KUBERNETES_VERSIONS[-1])
    assert code != 0, output


# --- what the workers rely on ----------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_each_worker_runs_with_requests_and_probes_at_its_metrics_port(
    overlay: Rendered, service: str
) -> None:
    deployment = overlay.worker("Deployment", service)
    container = overlay.container(service)
    assert container["args"][:2] == ["worker", service]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    port = metrics_port(container)
    assert overlay.env(service)["ORDERFLOW_METRICS_PORT"] == str(port)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe in container:
            assert probe_port(container, container[probe]) == port, probe
    # The Deployment's selector picks its own pods and no other worker's.
    selector = deployment["spec"]["selector"]
    for other in SERVICES:
        assert selects(selector, pod_labels(overlay, other)) == (other == service), other


@pytest.mark.parametrize("service", SERVICES)
def test_each_worker_serves_its_probes_and_metrics_beyond_loopback(overlay: Rendered, service: str) -> None:
    assert overlay.env(service)["ORDERFLOW_METRICS_ADDRESS"] == "0.0.0.0"


@pytest.mark.parametrize("service", SERVICES)
def test_the_grace_period_covers_the_prestop_sleep_and_the_drain(overlay: Rendered, service: str) -> None:
    pod = overlay.worker("Deployment", service)["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    sleep = overlay.container(service)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < grace
    assert grace >= sleep + DRAIN_SECONDS + EXIT_GRACE_SECONDS + KILL_WAIT_SECONDS


@pytest.mark.parametrize("service", SERVICES)
def test_each_worker_has_a_disruption_budget_for_its_pods(overlay: Rendered, service: str) -> None:
    budget = overlay.worker("PodDisruptionBudget", service)["spec"]
    assert selects(budget["selector"], pod_labels(overlay, service))
    # One eviction at a time whatever the replicas: a node drain goes through even with one pod
    # (minAvailable: 1 would block it for good), and an outage does not hold drains up.
    assert "minAvailable" not in budget
    assert budget["maxUnavailable"] == 1
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


@pytest.mark.parametrize("service", SERVICES)
def test_each_worker_gets_its_own_credentials_and_no_others(overlay: Rendered, service: str) -> None:
    pod = overlay.worker("Deployment", service)["spec"]["template"]["spec"]
    container = overlay.container(service)
    secrets = {volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume}
    # Through the mounted files only: no Secret in the environment, no other projected one.
    assert not [item for item in container.get("env", []) if "valueFrom" in item]
    assert not [source for source in container.get("envFrom", []) if "secretRef" in source]
    assert not [volume for volume in pod["volumes"] if "projected" in volume]
    (secret_name,) = secrets
    assert secret_name.startswith(f"orderflow-{service}-")  # its generated name, with the content hash
    secret = overlay.get("Secret", secret_name)
    assert set(secret["data"]) == credentials(service)
    (volume,) = [volume["name"] for volume in pod["volumes"] if "secret" in volume]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    assert mount["mountPath"] == overlay.env(service)["ORDERFLOW_SECRETS_DIR"]
    assert mount.get("readOnly") is True


def mount(secret: Manifest, directory: Path) -> Path:
    """`secret` as the kubelet mounts it: each key a link into a timestamped directory, which
    `..data` points to (and is swapped atomically when the Secret changes)."""
    directory.mkdir()
    (directory / "..2026_01_01_00_00_00.0").mkdir()
    for key, value in secret["data"].items():
        (directory / "..2026_01_01_00_00_00.0" / key).write_bytes(base64.b64decode(value))
        (directory / key).symlink_to(Path("..data") / key)
    (directory / "..data").symlink_to("..2026_01_01_00_00_00.0")
    return directory


@pytest.mark.parametrize("service", SERVICES)
def test_each_worker_reads_its_settings_as_the_pod_gives_them(
    overlay: Rendered, service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = overlay.worker("Deployment", service)["spec"]["template"]["spec"]
    (secret_name,) = [volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume]
    secret = overlay.get("Secret", secret_name)
    for name in [name for name in os.environ if name.startswith("ORDERFLOW_")]:
        monkeypatch.delenv(name)
    env = overlay.env(service)
    env["ORDERFLOW_SECRETS_DIR"] = str(mount(secret, tmp_path / "secrets"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()  # every value valid, as the worker would start

    for key, value in secret["data"].items():
        setting = getattr(settings, key.removeprefix("ORDERFLOW_").lower())
        read = setting.get_secret_value() if hasattr(setting, "get_secret_value") else setting
        assert read == base64.b64decode(value).decode(), key
    assert settings.metrics_address == "0.0.0.0"
    assert settings.metrics_port_of(service) == metrics_port(overlay.container(service))


def test_each_secret_belongs_to_one_role(overlay: Rendered) -> None:
    roles = [*SERVICES, "operator"] if overlay.name == "production" else list(SERVICES)
    names = sorted(secret["metadata"]["name"] for secret in overlay.all("Secret"))
    assert [name.rsplit("-", 1)[0] for name in names] == sorted(f"orderflow-{role}" for role in roles)


@pytest.mark.parametrize(
    "example",
    sorted(K8S.glob("overlays/*/secrets/*.env.example")),
    ids=lambda path: f"{path.parents[1].name}/{path.name}",
)
def test_the_credentials_in_the_repository_are_placeholders(example: Path) -> None:
    values = dict(
        line.split("=", 1)
        for line in example.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(values) == credentials(example.name.removesuffix(".env.example"))
    for url in values.values():
        for password in re.findall(r"://[^:/@]+:([^@]*)@", url):
            assert password == "CHANGE-ME", url


@pytest.mark.parametrize("service", SERVICES)
def test_each_worker_is_scraped_as_the_alerts_expect(production: Rendered, service: str) -> None:
    service_object = production.worker("Service", service)
    assert service_object["spec"]["selector"].items() <= pod_labels(production, service).items()
    (port,) = service_object["spec"]["ports"]
    assert port["targetPort"] in ("metrics", metrics_port(production.container(service)))
    monitor = production.worker("ServiceMonitor", service)["spec"]
    assert selects(monitor["selector"], service_object["metadata"]["labels"])
    assert [endpoint["port"] for endpoint in monitor["endpoints"]] == [port["name"]]
    # A target's job is its Service's name: the alerts pick the workers by it.
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    (job,) = set(re.findall(r'up\{job=~"([^"]+)"\}', alerts))
    assert re.fullmatch(job, service_object["metadata"]["name"])


def test_network_policies_let_in_only_prometheus_and_out_only_the_dependencies(overlay: Rendered) -> None:
    policies = overlay.all("NetworkPolicy")
    for service in SERVICES:
        labels = pod_labels(overlay, service)
        mine = [p["spec"] for p in policies if selects(p["spec"]["podSelector"], labels)]
        # Selected for both directions by some policy: what no rule allows is denied.
        assert {"Ingress", "Egress"} <= {kind for p in mine for kind in p["policyTypes"]}, service
        ingress = [rule for p in mine for rule in p.get("ingress", [])]
        assert ingress, service
        allowed = {"metrics", metrics_port(overlay.container(service))}
        for rule in ingress:
            assert rule.get("from"), f"{service}: ingress from anywhere"
            assert rule.get("ports"), f"{service}: ingress to any port"
            assert {port["port"] for port in rule["ports"]} <= allowed, service
        egress = [rule for p in mine for rule in p.get("egress", [])]
        assert all(rule.get("ports") for rule in egress), f"{service}: egress to any port"
        expected = EGRESS_PORTS | (SMTP_PORTS if service == "notification" else set())
        assert {port["port"] for rule in egress for port in rule["ports"]} == expected, service


# --- production ------------------------------------------------------------------------------------


def test_production_uses_quorum_queues(production: Rendered) -> None:
    assert production.settings()["ORDERFLOW_QUEUE_TYPE"] == "quorum"


def test_dev_runs_one_pod_of_each_worker(render: Callable[[str], Rendered]) -> None:
    dev = render("dev")
    for service in SERVICES:
        assert dev.worker("Deployment", service)["spec"]["replicas"] == 1
    assert not dev.all("ScaledObject")


def queues_of(service: str, settings: dict[str, str]) -> set[str]:
    if service == "inventory":
        partitions = int(settings.get("ORDERFLOW_INVENTORY_PARTITIONS", "1"))
        return {topology.stock_queue(partition) for partition in range(partitions)}
    return QUEUES[service]


@pytest.mark.parametrize("service", SERVICES)
def test_production_scales_each_worker_on_the_queues_it_consumes(production: Rendered, service: str) -> None:
    scaled = production.worker("ScaledObject", service)["spec"]
    assert scaled["scaleTargetRef"]["name"] == production.worker("Deployment", service)["metadata"]["name"]
    assert scaled.get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
    # KEDA owns the replica count: one in the manifest would reset it on every apply.
    assert "replicas" not in production.worker("Deployment", service)["spec"]
    assert 2 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    queues = {trigger["metadata"]["queueName"] for trigger in scaled["triggers"]}
    assert queues == queues_of(service, production.settings())
    if service == "inventory":
        # A pod beyond the partitions could only ever stand by.
        assert scaled["maxReplicaCount"] <= len(queues)
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert "host" not in trigger["metadata"], "credentials belong in the TriggerAuthentication"
        authentication = production.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
        (reference,) = authentication["spec"]["secretTargetRef"]
        assert reference["parameter"] == "host"
        secret = production.get("Secret", reference["name"])
        # The operator's credentials, which may read every queue: never a worker's own.
        assert reference["name"].startswith("orderflow-operator-")
        assert reference["key"] in secret["data"]
