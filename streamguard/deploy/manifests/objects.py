"""Query rendered Kubernetes objects: find by kind and name, reach pod specs, containers and their env."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from streamguard.deploy.manifests.render import split_image

FLOW_STATEFULSET = "streamguard-fraud"
"""The fraud flow's StatefulSet, headless Service and waxctl dataflow name."""
CONFIGMAP = "streamguard-config"
"""Non-secret settings, one key per Settings field."""
SECRET = "streamguard-secrets"  # noqa: S105 - the Secret's name, not a value
"""Secret settings; created in the cluster, never kept in the repository."""
WORKLOAD_KINDS = ("StatefulSet", "Deployment", "DaemonSet", "Job", "ReplicaSet")


def name_of(obj: dict[str, Any]) -> str:
    """Return `Kind namespace/name` for messages."""
    meta = obj["metadata"]
    return f"{obj['kind']} {meta.get('namespace', '-')}/{meta['name']}"


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Return the objects of `kind` (and `name`, if given), in order."""
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Return the pod spec of a workload object, None for other kinds."""
    spec = obj.get("spec") or {}
    if obj["kind"] in WORKLOAD_KINDS:
        return spec["template"]["spec"]
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(obj: dict[str, Any], init: bool = True) -> Iterator[dict[str, Any]]:
    """Yield a workload's containers, then (if `init`) its init containers."""
    spec = pod_spec(obj)
    if spec is not None:
        yield from spec.get("containers", [])
        if init:
            yield from spec.get("initContainers", [])


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """Return a container's `env` entries that have a literal value."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def streamguard_image(objects: list[dict[str, Any]]) -> str:
    """Return the flow container's image: every streamguard container must run the same one."""
    (sts,) = find(objects, "StatefulSet", FLOW_STATEFULSET)
    return sts["spec"]["template"]["spec"]["containers"][0]["image"]


def streamguard_containers(objects: list[dict[str, Any]], init: bool = True) -> Iterator[tuple[str, dict]]:
    """Yield (owner, container) for every container running the streamguard image."""
    repository = split_image(streamguard_image(objects))[0]
    for obj in objects:
        for container in containers(obj, init):
            if split_image(container.get("image", ""))[0] == repository:
                yield f"{name_of(obj)} container {container['name']}", container
