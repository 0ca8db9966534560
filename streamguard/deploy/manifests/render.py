"""Render a kustomize directory with the subset of kustomize that k8s/ uses, in Python.

No kustomize binary is available from PyPI or Debian bookworm (its kubectl 1.20 embeds kustomize v2, which
predates `labels` and `patches`), so the tests render overlays with this module and validate the result.
It implements exactly the fields k8s/ uses and refuses any other field, so a kustomization can never use a
feature that is silently ignored here. When a kustomize >= 5 is on PATH (`kubectl kustomize`), a test
compares both renderings object by object.

Supported: `resources` (files and directories), `namespace`, `labels` (metadata only), `patches`
(strategic merge for built-in kinds, JSON merge patch for custom resources; `target` by group, version,
kind, name, namespace) and `images`. Transformers run in kustomize's order: patches, namespace, labels,
images; the output is sorted in kustomize's legacy kind order.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from streamguard.core.paths import K8S_DIR

OVERLAYS = ("local", "prod", "gpu")

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "resources", "namespace", "labels", "patches", "images"})
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "APIService",
        "CSIDriver",
    }
)
# patchMergeKey of the list fields a strategic merge patch may touch (k8s.io/api types).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
}
# Same field name, different merge keys (containerPort in a container, port in a Service): not supported.
AMBIGUOUS_LIST_FIELDS = frozenset({"ports"})
_ORDER_FIRST = (
    "Namespace ResourceQuota StorageClass CustomResourceDefinition ServiceAccount PodSecurityPolicy Role "
    "ClusterRole RoleBinding ClusterRoleBinding ConfigMap Secret Endpoints Service LimitRange PriorityClass "
    "PersistentVolume PersistentVolumeClaim Deployment StatefulSet CronJob PodDisruptionBudget"
).split()
_ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not implement, or is inconsistent."""


def render(directory: Path | str) -> list[dict[str, Any]]:
    """Return the objects that `kustomize build directory` would print, in the same order."""
    return sorted(_build(Path(directory).resolve(), ()), key=_legacy_sort_key)


def render_overlay(name: str) -> list[dict[str, Any]]:
    """Render `k8s/overlays/<name>`."""
    return render(K8S_DIR / "overlays" / name)


def object_id(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """Return (apiVersion group, kind, namespace, name): what kustomize treats as an object's identity."""
    meta = obj.get("metadata") or {}
    return (api_group(obj), obj["kind"], meta.get("namespace") or "", meta["name"])


def api_group(obj: dict[str, Any]) -> str:
    api_version = obj.get("apiVersion", "")
    return api_version.split("/")[0] if "/" in api_version else ""


def is_builtin(obj: dict[str, Any]) -> bool:
    """Whether the kind is a Kubernetes built-in (strategic merge) rather than a custom resource."""
    group = api_group(obj)
    return "." not in group or group.endswith(".k8s.io")


def _build(directory: Path, stack: tuple[Path, ...]) -> list[dict[str, Any]]:
    if directory in stack:
        raise KustomizeError(f"cycle in resources: {' -> '.join(map(str, (*stack, directory)))}")
    kustomization_path = next((directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()), None)
    if kustomization_path is None:
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    spec = yaml.safe_load(kustomization_path.read_text()) or {}
    unsupported = sorted(set(spec) - SUPPORTED_FIELDS)
    if unsupported:
        raise KustomizeError(
            f"{kustomization_path}: {unsupported} not implemented by streamguard.deploy.manifests.render; "
            "implement them there (with a test) before using them"
        )

    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources") or []:
        if "://" in entry or entry.startswith("github.com/"):
            raise KustomizeError(f"{kustomization_path}: remote resource {entry!r} is not supported")
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += _build(path, (*stack, directory))
        elif path.is_file():
            objects += _load_objects(path)
        else:
            raise KustomizeError(f"{kustomization_path}: resource {entry!r} does not exist")
    _check_unique(objects, kustomization_path)

    for entry in spec.get("patches") or []:
        _apply_patch_entry(objects, entry, directory, kustomization_path)
    if spec.get("namespace"):
        _set_namespace(objects, spec["namespace"])
    for entry in spec.get("labels") or []:
        _add_labels(objects, entry, kustomization_path)
    for entry in spec.get("images") or []:
        _set_images(objects, entry, kustomization_path)
    _check_unique(objects, kustomization_path)
    return objects


def _load_objects(path: Path) -> list[dict[str, Any]]:
    objects = []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= set(doc):
            raise KustomizeError(f"{path}: every document needs apiVersion, kind and metadata")
        if not (doc["metadata"] or {}).get("name"):
            raise KustomizeError(f"{path}: a {doc['kind']} has no metadata.name")
        objects.append(doc)
    return objects


def _check_unique(objects: list[dict[str, Any]], where: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        oid = object_id(obj)
        if oid in seen:
            raise KustomizeError(f"{where}: {oid} is defined twice")
        seen.add(oid)


# -- patches -----------------------------------------------------------------------------------------------


def _apply_patch_entry(objects: list[dict[str, Any]], entry: dict, directory: Path, where: Path) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown or ("path" in entry) == ("patch" in entry):
        raise KustomizeError(
            f"{where}: a patch needs exactly one of path/patch (and maybe target), got {entry}"
        )
    text = (directory / entry["path"]).read_text() if "path" in entry else entry["patch"]
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise KustomizeError(
            f"{where}: only strategic-merge / merge patches (YAML objects) are supported: {entry}"
        )
    target = entry.get("target")
    for patch in docs:
        matches = (
            [o for o in objects if _matches_target(o, target)] if target else _match_by_id(objects, patch)
        )
        if not matches:
            raise KustomizeError(f"{where}: patch {target or _patch_id(patch)} matches no resource")
        for obj in matches:
            body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
            if target:
                # With a target, the patch's own name is only a placeholder (as in kustomize).
                body["metadata"] = {k: v for k, v in (body.get("metadata") or {}).items() if k != "name"}
            merged = merge_patch(obj, body, strategic=is_builtin(obj))
            obj.clear()
            obj.update(merged)


def _patch_id(patch: dict) -> str:
    return f"{patch.get('kind')}/{(patch.get('metadata') or {}).get('name')}"


def _match_by_id(objects: list[dict[str, Any]], patch: dict) -> list[dict[str, Any]]:
    meta = patch.get("metadata") or {}
    group = patch.get("apiVersion", "").split("/")[0] if "/" in patch.get("apiVersion", "") else ""
    return [
        o
        for o in objects
        if o["kind"] == patch.get("kind")
        and o["metadata"]["name"] == meta.get("name")
        and api_group(o) == group
        and (not meta.get("namespace") or o["metadata"].get("namespace") == meta["namespace"])
    ]


def _matches_target(obj: dict[str, Any], target: dict[str, str]) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace"}
    if unknown:
        raise KustomizeError(f"patch target fields {sorted(unknown)} are not supported")
    version = obj["apiVersion"].split("/")[-1]
    actual = {
        "group": api_group(obj),
        "version": version,
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace") or "",
    }
    return all(re.fullmatch(pattern, actual[field]) for field, pattern in target.items())


def merge_patch(base: Any, patch: Any, strategic: bool, field: str | None = None) -> Any:
    """Return `base` patched: maps merge and null deletes; lists merge by key (strategic) or are replaced.

    A strategic merge list keeps kustomize's order: the patch's items first (merged with their base
    counterparts), then the base items the patch does not name.
    """
    if isinstance(patch, dict):
        directives = [k for k in patch if isinstance(k, str) and k.startswith("$")]
        if directives:
            raise KustomizeError(f"patch directives {directives} are not supported")
        if not isinstance(base, dict):
            return _without_nulls(patch)
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge_patch(merged[key], value, strategic, key)
            else:
                merged[key] = _without_nulls(value)
        return merged
    if isinstance(patch, list) and strategic and isinstance(base, list):
        if field in AMBIGUOUS_LIST_FIELDS:
            raise KustomizeError(
                f"patching a `{field}` list is not supported (its merge key depends on the kind)"
            )
        if field in MERGE_KEYS:
            key = MERGE_KEYS[field]
            by_key = {item[key]: item for item in base}
            named = {item[key] for item in patch}
            head = [
                merge_patch(by_key[i[key]], i, True) if i[key] in by_key else _without_nulls(i) for i in patch
            ]
            return head + [copy.deepcopy(item) for item in base if item[key] not in named]
    return _without_nulls(patch)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return copy.deepcopy(value)


# -- namespace, labels, images -------------------------------------------------------------------------------


def _set_namespace(objects: list[dict[str, Any]], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif obj["kind"] not in CLUSTER_SCOPED_KINDS:
            obj["metadata"]["namespace"] = namespace


def _add_labels(objects: list[dict[str, Any]], entry: dict, where: Path) -> None:
    if (
        entry.get("includeSelectors")
        or entry.get("includeTemplates")
        or set(entry)
        - {
            "pairs",
            "includeSelectors",
            "includeTemplates",
        }
    ):
        raise KustomizeError(f"{where}: only `labels` with pairs on metadata are supported, got {entry}")
    for obj in objects:
        labels = obj["metadata"].setdefault("labels", {})
        labels.update({str(k): str(v) for k, v in entry["pairs"].items()})


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """Split `name[:tag][@digest]` into its parts (a registry port is part of the name)."""
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1 :], digest or None
    return rest, None, digest or None


def _set_images(objects: list[dict[str, Any]], entry: dict, where: Path) -> None:
    if "name" not in entry or set(entry) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"{where}: bad images entry {entry}")
    for container in _containers(objects):
        name, tag, digest = split_image(container.get("image", ""))
        if name != entry["name"]:
            continue
        image = entry.get("newName", name)
        if entry.get("digest"):
            image += f"@{entry['digest']}"
        elif entry.get("newTag") is not None:
            image += f":{entry['newTag']}"
        elif tag:
            image += f":{tag}" + (f"@{digest}" if digest else "")
        elif digest:
            image += f"@{digest}"
        container["image"] = image


def _containers(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, dict):
        for key, child in value.items():
            if key in ("containers", "initContainers") and isinstance(child, list):
                yield from (c for c in child if isinstance(c, dict))
            else:
                yield from _containers(child)
    elif isinstance(value, list):
        for child in value:
            yield from _containers(child)


def _legacy_sort_key(obj: dict[str, Any]) -> tuple:
    kind = obj["kind"]
    if kind in _ORDER_FIRST:
        rank = _ORDER_FIRST.index(kind) - len(_ORDER_FIRST)
    elif kind in _ORDER_LAST:
        rank = 1 + _ORDER_LAST.index(kind)
    else:
        rank = 0
    group, _, version = obj["apiVersion"].rpartition("/")
    gvk = "_".join((group or "~G", version or "~V", kind))
    meta = obj["metadata"]
    return (rank, gvk, meta.get("namespace") or "", meta["name"])


def dump(objects: list[dict[str, Any]]) -> str:
    """Return the objects as one multi-document YAML stream."""
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streamguard.deploy.manifests.render", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "target", help=f"an overlay name ({', '.join(OVERLAYS)}) or a kustomization directory"
    )
    args = parser.parse_args(argv)
    path = Path(args.target)
    directory = path if path.is_dir() else K8S_DIR / "overlays" / args.target
    try:
        sys.stdout.write(dump(render(directory)))
    except KustomizeError as exc:
        raise SystemExit(f"render: {exc}") from None


if __name__ == "__main__":
    main()
