"""The manifests of deploy/kubernetes/ as data, and the schema of the KEDA objects they use.

Shared by tests/test_kubernetes.py: loaders that resolve a workload's container, environment and
asynctask configuration; JSON schemas for KEDA's ScaledObject and TriggerAuthentication, which
the Kubernetes schemas do not cover.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from asynctask.core.config import Config
from asynctask.core.config_loader import parse_config

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
ROLES = {"asynctask-api": "api", "asynctask-workers": "workers", "asynctask-migrate": "migrate"}
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted([*MANIFESTS.glob("*.yaml"), *MANIFESTS.glob("examples/*.yaml")]):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                yield str(path.relative_to(MANIFESTS)), document


DOCUMENTS = list(_documents())


def objects(kind: str) -> dict[str, dict[str, Any]]:
    """The manifests' objects of one kind, by name."""
    return {doc["metadata"]["name"]: doc for _, doc in DOCUMENTS if doc["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    """Every object that runs asynctask pods: the two Deployments and the Job."""
    return {**objects("Deployment"), **objects("Job")}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(workload)["containers"]
    assert isinstance(only, dict)
    return only


def config_text() -> str:
    text: str = objects("ConfigMap")["asynctask-config"]["data"]["config.yaml"]
    return text


def container_environ(workload: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the pod sees it, secrets taken from the example Secret."""
    secrets = {name: doc["stringData"] for name, doc in objects("Secret").items()}
    environ = {}
    for variable in container(workload).get("env", []):
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            environ[variable["name"]] = secrets[ref["name"]][ref["key"]]
    return environ


def loaded_config(workload: dict[str, Any]) -> Config:
    """The ConfigMap's config.yaml with the container's environment, as asynctask loads it."""
    return parse_config(yaml.safe_load(config_text()), container_environ(workload))


def scaled_object() -> dict[str, Any]:
    (only,) = objects("ScaledObject").values()
    return only


def keda_trigger() -> dict[str, Any]:
    (trigger,) = scaled_object()["spec"]["triggers"]
    assert isinstance(trigger, dict)
    return trigger


def keda_query() -> str:
    return " ".join(keda_trigger()["metadata"]["query"].split())


# --- KEDA's custom resources: the fields asynctask relies on ------------------------------------

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_NUMBER_TEXT = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}  # KEDA metadata is strings
_METADATA = {"type": "object", "required": ["name"], "properties": {"name": _NAME}}

SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "minReplicaCount", "maxReplicaCount", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"const": "apps/v1"},
                        "kind": {"const": "Deployment"},
                        "name": _NAME,
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "advanced": {"type": "object"},
                "triggers": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/pg"}},
            },
        },
    },
    "$defs": {
        "pg": {
            "type": "object",
            "required": ["type", "metadata", "authenticationRef"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": "postgresql"},
                "metadata": {
                    "type": "object",
                    "required": ["query", "targetQueryValue"],
                    "additionalProperties": False,
                    "properties": {
                        "query": {"type": "string", "pattern": r"^\s*SELECT\b"},
                        "targetQueryValue": _NUMBER_TEXT,
                        "activationTargetQueryValue": _NUMBER_TEXT,
                    },
                },
                "authenticationRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": _NAME, "kind": {"const": "TriggerAuthentication"}},
                },
            },
        }
    },
}

TRIGGER_AUTHENTICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["secretTargetRef"],
            "additionalProperties": False,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "additionalProperties": False,
                        # The PostgreSQL scaler's parameter for a whole connection string.
                        "properties": {
                            "parameter": {"const": "connection"},
                            "name": _NAME,
                            "key": {"type": "string", "minLength": 1},
                        },
                    },
                }
            },
        },
    },
}
