"""The Kubernetes manifests in deploy/kubernetes/, checked offline (there is no cluster here).

Every built-in object is validated strictly (unknown fields rejected) against the Kubernetes JSON
schemas that the kubernetes-validate package ships, with no network. KEDA's ScaledObject and
TriggerAuthentication are custom resources those schemas do not cover: a small schema of our own
checks the fields asynctask relies on. The rest cross-checks the manifests against asynctask
itself: its config loader, its API routes, its shutdown timing, the Dockerfile, a real database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import psycopg2.extensions
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_schemas

from asynctask.core.config_loader import parse_config
from asynctask.core.errors import ConfigError
from asynctask.service.app import create_app
from asynctask.service.status_views import READY_TIMEOUT_SECONDS
from asynctask.service.waiters import LISTEN_CONNECTIONS
from asynctask.workers import registry
from asynctask.workers.budget import CONNECTIONS_PER_WORKER
from asynctask.workers.supervisor import STOP_GRACE_SECONDS
from tests.kubernetes_manifests import (
    DOCUMENTS,
    KEDA_KINDS,
    ROLES,
    ROOT,
    SCALED_OBJECT_SCHEMA,
    TRIGGER_AUTHENTICATION_SCHEMA,
    config_text,
    container,
    container_environ,
    keda_query,
    keda_trigger,
    loaded_config,
    objects,
    pod_spec,
    scaled_object,
    workloads,
)

# The oldest Kubernetes the manifests claim (README), and the newest schema the package ships.
KUBERNETES_VERSIONS = ("1.29", kubernetes_schemas.latest_version())
# Connections KEDA's pgx pool may open (its default maximum is 4 or the operator's CPU count) and
# the migrate Job's (one at a time), for the budget README states.
KEDA_CONNECTIONS = 4
MIGRATE_CONNECTIONS = 1


# --- the Kubernetes schemas, offline -----------------------------------------------------------


def test_the_manifests_hold_what_the_deployment_needs() -> None:
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in DOCUMENTS)
    assert kinds == [
        ("ConfigMap", "asynctask-config"),
        ("Deployment", "asynctask-api"),
        ("Deployment", "asynctask-workers"),
        ("Job", "asynctask-migrate"),
        ("PodDisruptionBudget", "asynctask-api"),
        ("ScaledObject", "asynctask-workers"),
        ("Secret", "asynctask"),
        ("Service", "asynctask-api"),
        ("TriggerAuthentication", "asynctask-postgres"),
    ]
    # No namespace in the files: `kubectl -n` picks it, and KEDA's references stay within it.
    assert all("namespace" not in doc["metadata"] for _, doc in DOCUMENTS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_builtin_object_validates_strictly_against_the_kubernetes_schema(
    version: str,
) -> None:
    checked = []
    for filename, doc in DOCUMENTS:
        if doc["kind"] in KEDA_KINDS:
            continue
        # Raises on the first error, or SchemaNotFoundError for a kind it has no schema for (which
        # the command-line tool would only warn about): both fail the test.
        validated = kubernetes_schemas.validate(doc, version, strict=True)
        checked.append(f"{filename} {doc['kind']}/{doc['metadata']['name']} against {validated}")
    assert len(checked) == len(DOCUMENTS) - 2, checked


def test_strict_validation_rejects_a_misspelled_field() -> None:
    api = json.loads(json.dumps(objects("Deployment")["asynctask-api"]))
    context = container(api)["securityContext"]
    context["readOnlyRootFilesytem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_schemas.ValidationError, match="readOnlyRootFilesytem"):
        kubernetes_schemas.validate(api, KUBERNETES_VERSIONS[-1], strict=True)


# --- KEDA: our own schema for the custom resources (tests/kubernetes_manifests.py) ---------------


def test_the_keda_objects_match_their_schema() -> None:
    for doc in objects("ScaledObject").values():
        jsonschema.validate(doc, SCALED_OBJECT_SCHEMA)
    for doc in objects("TriggerAuthentication").values():
        jsonschema.validate(doc, TRIGGER_AUTHENTICATION_SCHEMA)


def test_the_keda_schema_rejects_what_keda_would() -> None:
    bad = json.loads(json.dumps(scaled_object()))
    bad["spec"]["triggers"][0]["metadata"]["targetQueryValue"] = 500  # a number, not a string
    with pytest.raises(jsonschema.ValidationError, match="not of type 'string'"):
        jsonschema.validate(bad, SCALED_OBJECT_SCHEMA)
    bad["spec"]["triggers"][0] = {**keda_trigger(), "type": "postgres"}
    with pytest.raises(jsonschema.ValidationError, match="postgresql"):
        jsonschema.validate(bad, SCALED_OBJECT_SCHEMA)


def test_the_keda_references_point_at_objects_that_exist() -> None:
    spec = scaled_object()["spec"]
    assert spec["scaleTargetRef"]["name"] in objects("Deployment")
    assert ROLES[spec["scaleTargetRef"]["name"]] == "workers"
    assert keda_trigger()["authenticationRef"]["name"] in objects("TriggerAuthentication")
    secrets = objects("Secret")
    for auth in objects("TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets[ref["name"]]["stringData"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_the_keda_query_caps_its_count_where_it_already_asks_for_every_pod() -> None:
    spec = scaled_object()["spec"]
    cap = int(re.findall(r"\bLIMIT (\d+)\b", keda_query())[-1])
    target = float(keda_trigger()["metadata"]["targetQueryValue"])
    # A lower cap would stop the scale-out short of maxReplicaCount.
    assert cap >= spec["maxReplicaCount"] * target


# --- cross-checks against asynctask itself -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(ROLES))
def test_the_configmap_loads_with_asynctasks_own_loader(name: str) -> None:
    config = loaded_config(workloads()[name])
    assert config.database.url is not None
    assert registry.load_handlers(config)  # every configured handler imports
    environ = container_environ(workloads()[name])
    assert environ["ASYNCTASK_CONFIG"] == "/etc/asynctask/config.yaml"
    mounts = {m["mountPath"]: m for m in container(workloads()[name])["volumeMounts"]}
    assert mounts["/etc/asynctask"]["readOnly"] is True


@pytest.mark.parametrize("name", sorted(ROLES))
def test_each_workload_runs_its_asynctask_command_under_tini(name: str) -> None:
    # The image's ENTRYPOINT is `tini -- asynctask`: `command` would replace it (no PID 1 to pass
    # SIGTERM on), `args` replaces the CMD only.
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert entrypoint is not None and json.loads(entrypoint.group(1)) == ["tini", "--", "asynctask"]
    assert "command" not in container(workloads()[name])
    assert container(workloads()[name])["args"] == [ROLES[name]]
    images = {container(workload)["image"] for workload in workloads().values()}
    assert len(images) == 1, images


def test_the_workers_outlive_their_shutdown_timeout() -> None:
    workers = workloads()["asynctask-workers"]
    config = loaded_config(workers)
    grace = pod_spec(workers)["terminationGracePeriodSeconds"]
    assert grace > config.shutdown_timeout_seconds
    # The supervisor SIGKILLs its children STOP_GRACE_SECONDS after the timeout: Kubernetes must
    # not kill the pod before the supervisor has had its say.
    assert grace > config.shutdown_timeout_seconds + STOP_GRACE_SECONDS
    # A rollout replaces the next pod only after the last replaced one has surely exited.
    assert workers["spec"]["minReadySeconds"] >= grace
    # KEDA owns the pod count; a `replicas` here would reset it on every apply.
    assert "replicas" not in workers["spec"]


def test_the_probes_ask_routes_the_api_serves() -> None:
    api = workloads()["asynctask-api"]
    config = loaded_config(api)
    routes = {
        (route.method, route.resource.canonical)
        for route in create_app(config).router.routes()
        if route.resource is not None
    }
    box = container(api)
    ports = {port["name"]: port["containerPort"] for port in box["ports"]}
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = box[probe]["httpGet"]
        assert get["path"] == path and ("GET", path) in routes
        assert ports[get["port"]] == config.api.port
    # /ready waits up to READY_TIMEOUT_SECONDS for the database before it answers 503.
    assert box["readinessProbe"]["timeoutSeconds"] > READY_TIMEOUT_SECONDS


def test_the_workers_metrics_port_is_the_configured_one() -> None:
    workers = workloads()["asynctask-workers"]
    ports = {port["name"]: port["containerPort"] for port in container(workers)["ports"]}
    assert ports == {"metrics": loaded_config(workers).metrics_port}


def test_selectors_and_labels_match() -> None:
    labels = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in workloads().items()}

    def selects(selector: dict[str, str], name: str) -> bool:
        return selector.items() <= labels[name].items()

    for name, workload in objects("Deployment").items():
        assert selects(workload["spec"]["selector"]["matchLabels"], name)
        assert labels[name]["app.kubernetes.io/component"] == ROLES[name]
    api = objects("Deployment")["asynctask-api"]
    service = objects("Service")["asynctask-api"]
    budget = objects("PodDisruptionBudget")["asynctask-api"]
    for selector in (service["spec"]["selector"], budget["spec"]["selector"]["matchLabels"]):
        assert [name for name in labels if selects(selector, name)] == ["asynctask-api"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container(api)["ports"]}
    # With minAvailable equal to the replicas, a node drain could never evict an API pod.
    assert budget["spec"]["minAvailable"] < api["spec"]["replicas"]


# --- every pod locked down ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_pod_runs_as_the_images_non_root_user(name: str) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    pod = pod_spec(workloads()[name])
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": int(user.group(1)),
        "runAsGroup": int(user.group(2)),
        "fsGroup": int(user.group(2)),
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    assert container(workloads()[name])["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


@pytest.mark.parametrize("name", sorted(ROLES))
def test_a_read_only_pod_gets_an_empty_dir_at_tmp(name: str) -> None:
    # The workers write their metrics files under $TMPDIR (/tmp); nothing else writes.
    pod = pod_spec(workloads()[name])
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (tmp,) = [m for m in container(workloads()[name])["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "sizeLimit" in volumes[tmp["name"]]["emptyDir"]


def _quantity(text: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi)?", str(text))
    assert match is not None, text
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_container_has_requests_and_limits(name: str) -> None:
    resources = container(workloads()[name])["resources"]
    for resource in ("cpu", "memory"):
        assert (
            0
            < _quantity(resources["requests"][resource])
            <= _quantity(resources["limits"][resource])
        )


def test_the_workers_memory_limit_leaves_the_supervisor_the_first_word() -> None:
    # A worker above worker_max_memory_mb is replaced by the supervisor (its task retried) before
    # the kernel's OOM killer, which takes the whole container, would act. The supervisor and
    # multiprocessing's resource tracker use about 52 MiB (measured idle); allow 96.
    workers = workloads()["asynctask-workers"]
    config = loaded_config(workers)
    assert config.worker_max_memory_mb is not None
    need = sum(config.priority_queues.values()) * config.worker_max_memory_mb + 96
    assert need * 2**20 <= _quantity(container(workers)["resources"]["limits"]["memory"])


def _service_link_environ(service: dict[str, Any]) -> dict[str, str]:
    """The variables kubelet injects for a Service when a pod keeps enableServiceLinks on."""
    prefix = service["metadata"]["name"].upper().replace("-", "_")
    environ = {f"{prefix}_SERVICE_HOST": "10.0.0.10"}
    for port in service["spec"]["ports"]:
        number, protocol = port["port"], port.get("protocol", "TCP")
        address = f"{protocol.lower()}://10.0.0.10:{number}"
        environ[f"{prefix}_PORT"] = address
        environ[f"{prefix}_SERVICE_PORT"] = str(number)
        environ[f"{prefix}_PORT_{number}_{protocol}"] = address
    return environ


def test_service_links_are_off_because_they_would_break_the_config() -> None:
    api = workloads()["asynctask-api"]
    links = _service_link_environ(objects("Service")["asynctask-api"])
    with pytest.raises(ConfigError, match="ASYNCTASK_API_PORT"):
        parse_config(yaml.safe_load(config_text()), {**container_environ(api), **links})
    assert all(pod_spec(w)["enableServiceLinks"] is False for w in workloads().values())


def test_the_example_secret_holds_placeholders_only() -> None:
    (secret,) = objects("Secret").values()
    assert all("REPLACE-ME" in value for value in secret["stringData"].values())
    assert "data" not in secret


def test_the_migrate_job_retries_a_few_times_and_stops() -> None:
    job = workloads()["asynctask-migrate"]
    assert 1 <= job["spec"]["backoffLimit"] <= 10
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"


# --- the KEDA query on a real database ----------------------------------------------------------


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def _keda_count(sql: psycopg2.extensions.cursor) -> tuple[float, list[dict[str, Any]]]:
    sql.execute("VACUUM ANALYZE tasks")  # the statistics autovacuum keeps on a real server
    sql.execute("EXPLAIN (FORMAT JSON) " + keda_query())
    row = sql.fetchone()
    assert row is not None
    nodes = list(_plan_nodes(row[0][0]["Plan"]))
    sql.execute(keda_query())
    value = sql.fetchone()
    assert value is not None and isinstance(value[0], float)
    return value[0], nodes


def _insert(sql: psycopg2.extensions.cursor, count: int, state: str, scheduled: str) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, state, attempts, scheduled_at)"
        " SELECT 'report', 1 + g %% 3, %s, 1, now() + %s::interval FROM generate_series(1, %s) g",
        (state, scheduled, count),
    )


def _uses_the_due_index(nodes: list[dict[str, Any]]) -> bool:
    scans = [node for node in nodes if "Relation Name" in node]
    return bool(scans) and all(node.get("Index Name") == "tasks_due_idx" for node in scans)


def test_the_keda_query_counts_due_tasks_through_the_due_index(
    sql: psycopg2.extensions.cursor,
) -> None:
    # A long-lived table: mostly finished tasks (retention keeps a week of them), a few due ones.
    _insert(sql, 20_000, "completed", "-1 hour")
    _insert(sql, 300, "available", "-1 second")
    _insert(sql, 40, "retrying", "-1 second")  # its retry is due
    _insert(sql, 70, "retrying", "1 minute")  # backing off: not due yet
    _insert(sql, 100, "available", "1 hour")  # scheduled for later: not due yet
    _insert(sql, 30, "running", "-1 minute")  # being run: not waiting
    value, nodes = _keda_count(sql)
    assert value == 340.0
    assert _uses_the_due_index(nodes), nodes
    assert not any(node["Node Type"].startswith("Seq Scan") for node in nodes)


def test_a_backlog_larger_than_the_cap_stops_at_the_cap_and_stays_on_the_index(
    sql: psycopg2.extensions.cursor,
) -> None:
    cap = int(re.findall(r"\bLIMIT (\d+)\b", keda_query())[-1])
    # Most of the table due: without the ORDER BY, PostgreSQL picks a sequential scan here.
    _insert(sql, 2_000, "completed", "-1 hour")
    _insert(sql, cap + 20_000, "available", "-1 second")
    value, nodes = _keda_count(sql)
    assert value == float(cap)
    assert _uses_the_due_index(nodes), nodes


# --- what README states ------------------------------------------------------------------------


def _readme() -> str:
    return " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())


def test_readme_shows_the_query_keda_runs() -> None:
    assert keda_query() in _readme()


def peak_connections() -> int:
    """Connections the manifests can hold at once: a rollout of each Deployment, KEDA, migrate."""
    deployments = objects("Deployment")
    api, workers = deployments["asynctask-api"], deployments["asynctask-workers"]
    api_config, workers_config = loaded_config(api), loaded_config(workers)
    api_roll = api["spec"]["strategy"]["rollingUpdate"]
    # One surge pod, plus a replaced pod still draining while the next one starts.
    api_pods = api["spec"]["replicas"] + api_roll["maxSurge"] + 1
    workers_roll = workers["spec"]["strategy"]["rollingUpdate"]
    # minReadySeconds >= the grace period: at most maxUnavailable pods drain at a time.
    worker_pods = scaled_object()["spec"]["maxReplicaCount"] + workers_roll["maxUnavailable"]
    per_worker_pod = sum(workers_config.priority_queues.values()) * CONNECTIONS_PER_WORKER
    return (
        api_pods * (api_config.database.pool_size + LISTEN_CONNECTIONS)
        + worker_pods * per_worker_pod
        + KEDA_CONNECTIONS
        + MIGRATE_CONNECTIONS
    )


def test_readme_states_the_connection_budget_of_these_manifests() -> None:
    assert f"{peak_connections()} connections" in _readme()
