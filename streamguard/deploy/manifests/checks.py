"""Check rendered manifests: Kubernetes schemas, custom resources, settings coverage and cross-object rules.

Every check returns a list of problems (strings naming the object and what is wrong); empty means fine.
The cross-object rules live in `invariants`. `python -m streamguard.deploy.manifests.checks [OVERLAY ...]` runs
them all on the k8s/ overlays; tests/unit/test_k8s_*.py run them inside `make test`.
"""

from __future__ import annotations

import argparse
import functools
import json
import typing
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version
from pydantic import SecretBytes, SecretStr
from referencing import Registry, Resource

from streamguard.deploy.manifests.invariants import invariant_problems
from streamguard.deploy.manifests.objects import (
    CONFIGMAP,
    SECRET,
    find,
    literal_env,
    name_of,
    streamguard_containers,
)
from streamguard.deploy.manifests.render import K8S_DIR, OVERLAYS, is_builtin, render_overlay

MIN_K8S_VERSION = "1.29"
"""Oldest Kubernetes the manifests target (the Materialize operator needs 1.29)."""
UNSET_ANNOTATION = "streamguard.io/unset-settings"
CLUSTER_REQUIRED_SETTINGS = ("state_dir", "model_dir", "kafka_bootstrap", "sql_url")
"""Settings whose defaults only make sense on a workstation (embedded broker/PostgreSQL, relative paths)."""
CR_SCHEMAS = {
    ("kafka.strimzi.io/v1", "KafkaTopic"): "kafkatopic.yaml",
    ("materialize.cloud/v1alpha1", "Materialize"): "materialize.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.yaml",
}
SCHEMA_DIR = K8S_DIR / "schemas"


# -- schemas ---------------------------------------------------------------------------------------------------


def schema_problems(objects: list[dict[str, Any]], versions: tuple[str, ...] | None = None) -> list[str]:
    """Validate built-in kinds with `kubernetes-validate --strict` against each Kubernetes version."""
    versions = versions or (MIN_K8S_VERSION, latest_version())
    problems = []
    for obj in objects:
        if not is_builtin(obj):
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except SchemaNotFoundError:
                problems.append(f"{name_of(obj)}: {obj['apiVersion']} does not exist in Kubernetes {version}")
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path) or "(root)"
                problems.append(f"{name_of(obj)} (Kubernetes {version}): {path}: {exc.message}")
    return problems


@functools.cache
def _cr_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    metadata = yaml.safe_load((SCHEMA_DIR / "_metadata.yaml").read_text())
    registry = Resource.from_contents(metadata) @ Registry()
    validators = {}
    for key, filename in CR_SCHEMAS.items():
        schema = yaml.safe_load((SCHEMA_DIR / filename).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


def custom_resource_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Validate custom resources against the schemas in k8s/schemas; unknown kinds are problems too."""
    problems = []
    for obj in objects:
        if is_builtin(obj):
            continue
        validator = _cr_validators().get((obj["apiVersion"], obj["kind"]))
        if validator is None:
            problems.append(
                f"{name_of(obj)}: no schema for {obj['apiVersion']} {obj['kind']} in {SCHEMA_DIR}"
            )
            continue
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.path) or "(root)"
            problems.append(f"{name_of(obj)}: {path}: {error.message}")
    return problems


# -- settings coverage ------------------------------------------------------------------------------------------


def settings_fields() -> dict[str, bool]:
    """Return `{STREAMGUARD_<FIELD>: is_secret}` for every field of Settings, read now (fields may be added)."""
    from streamguard.core.settings import Settings

    def is_secret(annotation: Any) -> bool:
        return annotation in (SecretStr, SecretBytes) or any(
            is_secret(a) for a in typing.get_args(annotation)
        )

    return {
        f"STREAMGUARD_{name.upper()}": is_secret(f.annotation) for name, f in Settings.model_fields.items()
    }


def settings_coverage_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Check that ConfigMap and Secret references give every streamguard container every setting.

    Each Settings field must be a ConfigMap key, a `streamguard-secrets` key (SecretStr fields only, and
    then never a ConfigMap key), or be listed in the ConfigMap's unset-settings annotation; the fields in
    CLUSTER_REQUIRED_SETTINGS may not be left unset. The values must pass Settings' own validation.
    """
    fields = settings_fields()
    configmaps = find(objects, "ConfigMap", CONFIGMAP)
    if not configmaps:
        return [f"no ConfigMap {CONFIGMAP}"]
    data = configmaps[0].get("data") or {}
    unset = set((configmaps[0]["metadata"].get("annotations") or {}).get(UNSET_ANNOTATION, "").split())
    required = {f"STREAMGUARD_{f.upper()}" for f in CLUSTER_REQUIRED_SETTINGS}
    problems = [
        f"{UNSET_ANNOTATION} lists {k}, which is not a Settings field" for k in sorted(unset - set(fields))
    ]
    problems += [
        f"{UNSET_ANNOTATION} lists {k}, which the cluster needs set" for k in sorted(unset & required)
    ]
    problems += [f"{k} is both set and listed in {UNSET_ANNOTATION}" for k in sorted(unset & set(data))]
    for key in sorted(data):
        if key not in fields:
            problems.append(f"ConfigMap {CONFIGMAP} key {key} is not a Settings field (typo or stale key?)")
        elif fields[key]:
            problems.append(f"ConfigMap {CONFIGMAP} holds secret {key}: secrets belong in Secret {SECRET}")
    secret_fields = sorted(k for k, secret in fields.items() if secret)
    for key, secret in sorted(fields.items()):
        if key not in data and key not in unset and not secret:
            problems.append(
                f"{key} is neither a key of ConfigMap {CONFIGMAP} nor listed in its {UNSET_ANNOTATION} annotation"
            )

    for owner, container in streamguard_containers(objects):
        if {"configMapRef": {"name": CONFIGMAP}} not in container.get("envFrom", []):
            problems.append(f"{owner}: does not load ConfigMap {CONFIGMAP} with envFrom")
    for owner, container in streamguard_containers(objects, init=False):
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        for key in secret_fields:
            ref = refs.get(key)
            if ref is None or ref.get("name") != SECRET or ref.get("key") != key:
                problems.append(f"{owner}: {key} is not taken from Secret {SECRET} key {key}")
            elif key in required and ref.get("optional"):
                problems.append(f"{owner}: {key} is required in the cluster but its secretKeyRef is optional")
        problems += _settings_parse_problems(owner, {**data, **literal_env(container)}, secret_fields)
    return problems


def _settings_parse_problems(owner: str, env: dict[str, str], secret_keys: list[str]) -> list[str]:
    from pydantic import ValidationError

    from streamguard.core.settings import Settings

    values = {
        k.removeprefix("STREAMGUARD_").lower(): v for k, v in env.items() if k.startswith("STREAMGUARD_")
    }
    values.update({k.removeprefix("STREAMGUARD_").lower(): "postgresql://u:p@db:6875/x" for k in secret_keys})

    class FromManifestsOnly(Settings):
        # Only the given values: nothing from this machine's environment or .env may fill a gap.
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **sources):
            return (init_settings,)

    try:
        FromManifestsOnly(**values)
    except ValidationError as exc:
        return [f"{owner}: its settings do not validate: {exc.errors(include_url=False)}"]
    return []


def check_objects(objects: list[dict[str, Any]]) -> list[str]:
    """Run every check on one rendered overlay."""
    return (
        schema_problems(objects)
        + custom_resource_problems(objects)
        + settings_coverage_problems(objects)
        + invariant_problems(objects)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streamguard.deploy.manifests.checks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("overlays", nargs="*", default=list(OVERLAYS), help=f"default: {' '.join(OVERLAYS)}")
    args = parser.parse_args(argv)
    failed = False
    for overlay in args.overlays:
        problems = check_objects(render_overlay(overlay))
        print(
            json.dumps({"overlay": overlay, "problems": problems}, indent=2) if problems else f"{overlay}: ok"
        )
        failed |= bool(problems)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
