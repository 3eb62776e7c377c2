"""The Kubernetes base is valid and consistent, checked offline.

Core kinds against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields
are errors), the Prometheus Operator kinds against a schema written here, and the references
between objects (selectors, ports, ConfigMap and Secret names, settings) by hand.
"""

from __future__ import annotations

import base64
import shlex
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from deploy_support import (
    BASE,
    DEPLOY,
    OVERLAYS,
    by_kind,
    load_documents,
    referenced_files,
    render,
)

from shared import settings as settings_mod
from waitroom_cli.main import cli

# The oldest Kubernetes the base supports (native gRPC probes are GA since 1.27, the
# kubernetes.io/h2c appProtocol since 1.28) and the newest schema the validator ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())

SETTINGS_CLASSES = (
    settings_mod.CommonSettings,
    settings_mod.KafkaClientSettings,
    settings_mod.ApiSettings,
    settings_mod.AdmitterSettings,
    settings_mod.ConsumerSettings,
)
# The processes that sign checkout tokens (and refuse to start without the secret).
SIGNERS = {"waitroom-api", "waitroom-admitter"}
SETTING_NAMES = {name for cls in SETTINGS_CLASSES for name, _, _ in settings_mod.describe(cls)}

# The parts of the Prometheus Operator's CRD schemas (monitoring.coreos.com/v1) the base uses,
# with the fields the operator requires. Unknown fields are refused, as the API server's
# structural schemas would prune them silently.
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": {"type": "object"}},
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _STRING_MAP, "matchExpressions": {}},
                },
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z]+$"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": _DURATION,
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}


KUSTOMIZATIONS = [BASE, *OVERLAYS]
NAMES = [str(path.relative_to(DEPLOY / "kubernetes")) for path in KUSTOMIZATIONS]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=NAMES)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """What the base, and each overlay, produce: every check below holds for all of them."""
    directory: Path = request.param
    return render(directory)


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: d["spec"]["template"] for name, d in by_kind(objects, "Deployment").items()}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _container(template: dict[str, Any]) -> dict[str, Any]:
    containers = template["spec"]["containers"]
    assert len(containers) == 1, "one container per pod: the waitroom process"
    return dict(containers[0])


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=NAMES)
def test_kustomization_lists_only_files_that_exist(directory: Path) -> None:
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    files = referenced_files(kustomization)
    missing = [name for name in files if not (directory / name).exists()]
    assert missing == []
    unused = {p.name for p in directory.iterdir() if p.suffix == ".yaml"} - set(files)
    assert unused == {"kustomization.yaml"}, "a manifest that kustomize never applies"


def test_there_is_an_overlay_and_it_sets_a_namespace() -> None:
    assert OVERLAYS, "overlays/dev shows how to use the base"
    for overlay in OVERLAYS:
        namespaces = {obj["metadata"].get("namespace") for obj in render(overlay)}
        assert len(namespaces) == 1 and None not in namespaces, overlay
    assert all("namespace" not in obj["metadata"] for obj in render(BASE)), "namespace-agnostic"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_match_the_kubernetes_schema(
    objects: list[dict[str, Any]], version: str
) -> None:
    checked = 0
    for obj in objects:
        if obj["kind"] in CRD_SCHEMAS:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{name} is invalid for Kubernetes {version}: {path}: {exc.message}")
        checked += 1
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"ConfigMap", "Secret"} <= kinds
    assert checked == len([o for o in objects if o["kind"] not in CRD_SCHEMAS])


def test_schema_validation_catches_a_misspelt_field(objects: list[dict[str, Any]]) -> None:
    """The strict schemas refuse unknown fields, so the test above would catch a typo."""
    deployment = yaml.safe_load(yaml.safe_dump(by_kind(objects, "Deployment")["waitroom-api"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_prometheus_operator_objects_match_their_schema(objects: list[dict[str, Any]]) -> None:
    found = {obj["kind"] for obj in objects if obj["kind"] in CRD_SCHEMAS}
    assert found == set(CRD_SCHEMAS)
    for obj in objects:
        if obj["kind"] in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])


def test_prometheus_rule_holds_the_same_rules_as_alerts_yml(objects: list[dict[str, Any]]) -> None:
    (rule,) = by_kind(objects, "PrometheusRule").values()
    alerts = load_documents(DEPLOY / "prometheus" / "alerts.yml")[0]
    assert rule["spec"] == alerts, "deploy/prometheus/alerts.yml and prometheusrule.yaml differ"


def test_one_deployment_per_process_running_the_right_subcommand(
    objects: list[dict[str, Any]],
) -> None:
    pods = _pod_specs(objects)
    assert set(pods) == {"waitroom-api", "waitroom-admitter", "waitroom-consumer"}
    image_names = {
        image["name"]
        for directory in KUSTOMIZATIONS
        for image in load_documents(directory / "kustomization.yaml")[0].get("images", [])
    }
    for name, template in pods.items():
        container = _container(template)
        assert container["args"] == [name.removeprefix("waitroom-")]
        assert container["image"] in image_names, "the image transformer must rewrite it"
        assert cli.get_command(click.Context(cli), container["args"][0]) is not None, name


def test_every_waitroom_variable_is_a_real_setting_with_a_valid_value(
    objects: list[dict[str, Any]],
) -> None:
    (config,) = by_kind(objects, "ConfigMap").values()
    values: dict[str, str] = dict(config["data"])
    for template in _pod_specs(objects).values():
        for name, item in _env(_container(template)).items():
            if name.startswith("WAITROOM_"):
                assert name in SETTING_NAMES, f"{name} is not a setting"
                if "value" in item and "$(" not in item["value"]:
                    values[name] = item["value"]
    assert set(values) <= SETTING_NAMES
    assert "WAITROOM_JWT_SECRET" not in config["data"], "the secret belongs in the Secret"
    for cls in SETTINGS_CLASSES:
        settings_mod.load(cls, values)  # raises SettingsError on a value the process refuses


def test_configuration_and_secret_references_resolve(objects: list[dict[str, Any]]) -> None:
    config_maps = by_kind(objects, "ConfigMap")
    secrets = by_kind(objects, "Secret")
    for name, template in _pod_specs(objects).items():
        container = _container(template)
        refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
        assert refs and all(ref in config_maps for ref in refs), name
        env = _env(container)
        if name not in SIGNERS:
            assert "WAITROOM_JWT_SECRET" not in env, f"{name} has no use for the secret"
            continue
        secret_ref = env["WAITROOM_JWT_SECRET"]["valueFrom"]["secretKeyRef"]
        assert secret_ref["key"] in secrets[secret_ref["name"]]["data"], name


def _secret_value(directory: Path) -> str:
    secret = by_kind(render(directory), "Secret")["waitroom-jwt"]
    return base64.b64decode(secret["data"]["jwt-secret"]).decode()


def test_the_base_secret_is_empty_so_nothing_starts_with_a_known_secret() -> None:
    common = settings_mod.load(
        settings_mod.CommonSettings, {"WAITROOM_JWT_SECRET": _secret_value(BASE)}
    )
    with pytest.raises(settings_mod.SettingsError):
        common.require_secret()


def test_the_base_runs_at_least_two_of_each_process() -> None:
    """One pod of anything is a single point of failure; a second takes over at once."""
    objects = render(BASE)
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["minReplicas"] >= 2
    for name in ("waitroom-admitter", "waitroom-consumer"):
        assert by_kind(objects, "Deployment")[name]["spec"]["replicas"] >= 2, name


@pytest.mark.parametrize("overlay", OVERLAYS, ids=NAMES[1:])
def test_overlays_replace_the_secret_with_one_the_processes_accept(overlay: Path) -> None:
    value = _secret_value(overlay)
    common = settings_mod.load(settings_mod.CommonSettings, {"WAITROOM_JWT_SECRET": value})
    assert common.require_secret() == value


def test_services_select_pods_and_name_their_ports(objects: list[dict[str, Any]]) -> None:
    pods = _pod_specs(objects)
    for name, service in by_kind(objects, "Service").items():
        selector = service["spec"]["selector"]
        selected = [t for t in pods.values() if _matches(selector, t["metadata"]["labels"])]
        assert len(selected) == 1, f"Service {name} must select exactly one Deployment's pods"
        port_names = {port["name"] for port in _container(selected[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{name}: no container port {port}"


def test_deployment_selectors_match_their_own_pods_only(objects: list[dict[str, Any]]) -> None:
    deployments = by_kind(objects, "Deployment")
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        owners = [
            other
            for other, d in deployments.items()
            if _matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert owners == [name]


def test_every_process_has_a_disruption_budget(objects: list[dict[str, Any]]) -> None:
    pods = _pod_specs(objects)
    covered = set()
    for budget in by_kind(objects, "PodDisruptionBudget").values():
        selector = budget["spec"]["selector"]["matchLabels"]
        covered |= {n for n, t in pods.items() if _matches(selector, t["metadata"]["labels"])}
    assert covered == set(pods)


def test_the_api_scales_on_cpu_and_has_grpc_probes(objects: list[dict[str, Any]]) -> None:
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "waitroom-api",
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    deployment = by_kind(objects, "Deployment")["waitroom-api"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    container = _container(deployment["spec"]["template"])
    assert "cpu" in container["resources"]["requests"], "CPU utilisation needs a CPU request"
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    address = _env(container)["WAITROOM_API_ADDR"]["value"]
    assert address.endswith(f":{grpc_port}")
    # The kubelet's gRPC probes speak plaintext only: they use the health-only port, which
    # stays plaintext when the API serves TLS.
    health_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert _env(container)["WAITROOM_API_HEALTH_ADDR"]["value"].endswith(f":{health_port}")
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == health_port


@pytest.mark.parametrize("process", ["admitter", "consumer"])
def test_worker_liveness_probes_check_their_own_heartbeat(
    objects: list[dict[str, Any]], process: str
) -> None:
    deployment = by_kind(objects, "Deployment")[f"waitroom-{process}"]
    container = _container(deployment["spec"]["template"])
    env = _env(container)
    variable = f"WAITROOM_{process.upper()}_REPLICA_ID"
    assert env[variable]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    shell, flag, script = container["livenessProbe"]["exec"]["command"]
    assert (shell, flag) == ("sh", "-c")
    argv = shlex.split(script.replace(f'"${variable}"', "pod-1"))
    assert argv[:4] == ["exec", "waitroom", process, "check"]
    assert argv[4:] == ["--replica", "pod-1"]
    # The command and its --replica option exist.
    result = CliRunner().invoke(cli, [process, "check", "--help"])
    assert result.exit_code == 0 and "--replica" in result.output, result.output


def test_grace_periods_cover_each_drain(objects: list[dict[str, Any]]) -> None:
    (config,) = by_kind(objects, "ConfigMap").values()
    drains = {
        "waitroom-api": settings_mod.load(settings_mod.ApiSettings, config["data"]).grace_seconds,
        "waitroom-admitter": settings_mod.load(
            settings_mod.AdmitterSettings, config["data"]
        ).grace_seconds,
        "waitroom-consumer": settings_mod.load(
            settings_mod.ConsumerSettings, config["data"]
        ).grace_seconds,
    }
    for name, template in _pod_specs(objects).items():
        container = _container(template)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = float(pre_stop["command"][1]) if pre_stop else 0.0
        grace = template["spec"]["terminationGracePeriodSeconds"]
        assert grace >= sleep + drains[name] + 5, f"{name}: SIGKILL would cut the drain short"


def test_pods_run_locked_down_with_resources(objects: list[dict[str, Any]]) -> None:
    for name, template in _pod_specs(objects).items():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        container = _container(template)
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert "memory" in container["resources"]["limits"], name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


def test_service_monitor_scrapes_every_process(objects: list[dict[str, Any]]) -> None:
    (monitor,) = by_kind(objects, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        service
        for service in by_kind(objects, "Service").values()
        if _matches(selector, service["metadata"]["labels"])
    ]
    endpoint_ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    pods = _pod_specs(objects)
    covered = set()
    for service in scraped:
        ports = {port["name"] for port in service["spec"]["ports"]}
        assert endpoint_ports <= ports, service["metadata"]["name"]
        selected = [
            n
            for n, t in pods.items()
            if _matches(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        covered.update(selected)
    assert covered == set(pods), "every process's metrics are scraped"
    # Each process's metrics port is the one WAITROOM_METRICS_PORT tells it to serve on.
    for name, template in pods.items():
        container = _container(template)
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
        assert _env(container)["WAITROOM_METRICS_PORT"]["value"] == str(port), name


def _policies_of(objects: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        policy
        for policy in by_kind(objects, "NetworkPolicy").values()
        if _matches(policy["spec"]["podSelector"]["matchLabels"], labels)
    ]


def _is_gateway(peer: dict[str, Any]) -> bool:
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    return pods == {"app.kubernetes.io/name": "ticketbottle-gateway"}


def _is_monitoring(peer: dict[str, Any]) -> bool:
    namespaces = peer.get("namespaceSelector", {}).get("matchLabels", {})
    return namespaces == {"kubernetes.io/metadata.name": "monitoring"} and "podSelector" not in peer


def test_only_the_gateway_reaches_the_api_and_only_monitoring_the_metrics(
    objects: list[dict[str, Any]],
) -> None:
    """The API trusts the user_id it is sent, so its port must be the gateway's alone."""
    for name, template in _pod_specs(objects).items():
        policies = _policies_of(objects, template["metadata"]["labels"])
        assert policies, f"{name}: no NetworkPolicy selects it, so anyone may connect"
        container_ports = {port["name"] for port in _container(template)["ports"]}
        allowed: dict[str, list[dict[str, Any]]] = {}
        for policy in policies:
            assert policy["spec"]["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
            for rule in policy["spec"]["ingress"]:
                assert rule.get("from"), f"{policy['metadata']['name']}: a rule open to all"
                for port in rule["ports"]:
                    assert port["port"] in container_ports, f"{name} has no port {port['port']}"
                    allowed.setdefault(port["port"], []).extend(rule["from"])
        expected = {"grpc", "metrics"} if name == "waitroom-api" else {"metrics"}
        assert set(allowed) == expected, name
        assert all(_is_monitoring(peer) for peer in allowed["metrics"]), name
        if name == "waitroom-api":
            assert all(_is_gateway(peer) for peer in allowed["grpc"])
