"""The kustomize subset renderer (streamguard.deploy.manifests.render), and its agreement with real kustomize."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from streamguard.deploy.manifests.render import (
    K8S_DIR,
    KustomizeError,
    merge_patch,
    object_id,
    render,
    split_image,
)

STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sg, labels: {a: b}}
spec:
  selector: {matchLabels: {a: b}}
  serviceName: sg
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: flow
          image: streamguard
          env: [{name: A, value: "1"}, {name: B, value: "2"}]
          volumeMounts: [{name: x, mountPath: /x}]
      initContainers: [{name: seed, image: "streamguard:old"}]
      tolerations: [{key: a, operator: Exists}]
"""
TOPIC = """
apiVersion: kafka.strimzi.io/v1
kind: KafkaTopic
metadata: {name: t1}
spec: {partitions: 3, config: {retention.ms: 1, x: 2}, list: [1, 2]}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tree(tmp_path):
    """A base (namespace, labels, three resources) and an overlay (patches, images), like k8s/."""
    write(tmp_path / "base/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: placeholder}\n")
    write(tmp_path / "base/sts.yaml", STATEFULSET)
    write(tmp_path / "base/topic.yaml", TOPIC)
    write(
        tmp_path / "base/pv.yaml", "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv1}\nspec: {}\n"
    )
    write(
        tmp_path / "base/kustomization.yaml",
        """
        namespace: streamguard
        labels:
          - pairs: {app.kubernetes.io/part-of: streamguard}
        resources: [ns.yaml, sts.yaml, topic.yaml, pv.yaml]
        """,
    )
    write(
        tmp_path / "overlay/patch.yaml",
        """
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {name: sg}
        spec:
          replicas: 3
          template:
            spec:
              containers:
                - name: flow
                  env: [{name: B, value: "20"}, {name: C, value: "3"}]
                  resources: {limits: {nvidia.com/gpu: 1}}
              tolerations: [{key: g, operator: Exists}]
        """,
    )
    write(
        tmp_path / "overlay/kustomization.yaml",
        """
        resources: [../base]
        patches:
          - path: patch.yaml
          - target: {group: kafka.strimzi.io, kind: KafkaTopic}
            patch: |-
              apiVersion: kafka.strimzi.io/v1
              kind: KafkaTopic
              metadata: {name: any}
              spec: {partitions: 6, config: {x: null, y: 3}, list: [9]}
        images:
          - {name: streamguard, newName: reg.example:5000/sg, newTag: "1.0"}
        """,
    )
    return tmp_path


def by_kind(objects):
    return {o["kind"]: o for o in objects}


def test_overlay_applies_namespace_labels_patches_and_images(tree):
    objects = render(tree / "overlay")
    assert [o["kind"] for o in objects] == ["Namespace", "PersistentVolume", "StatefulSet", "KafkaTopic"]
    kinds = by_kind(objects)
    assert kinds["Namespace"]["metadata"]["name"] == "streamguard"  # kustomize renames Namespace objects
    assert "namespace" not in kinds["PersistentVolume"]["metadata"]  # cluster-scoped
    sts = kinds["StatefulSet"]
    assert sts["metadata"]["namespace"] == "streamguard"
    assert sts["metadata"]["labels"] == {"a": "b", "app.kubernetes.io/part-of": "streamguard"}
    assert sts["spec"]["template"]["metadata"]["labels"] == {"a": "b"}  # labels touch metadata only
    pod = sts["spec"]["template"]["spec"]
    flow = pod["containers"][0]
    # Strategic merge: env merged by name, patch items first (kustomize's order); maps merged; lists
    # without a merge key (tolerations) replaced.
    assert flow["env"] == [
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
        {"name": "A", "value": "1"},
    ]
    assert flow["volumeMounts"] == [{"name": "x", "mountPath": "/x"}]
    assert flow["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert pod["tolerations"] == [{"key": "g", "operator": "Exists"}]
    assert flow["image"] == "reg.example:5000/sg:1.0"
    assert pod["initContainers"][0]["image"] == "reg.example:5000/sg:1.0"
    assert sts["spec"]["replicas"] == 3


def test_custom_resources_get_a_json_merge_patch(tree):
    topic = by_kind(render(tree / "overlay"))["KafkaTopic"]
    assert topic["metadata"]["name"] == "t1"  # a targeted patch's own name is a placeholder
    assert topic["spec"] == {"partitions": 6, "config": {"retention.ms": 1, "y": 3}, "list": [9]}


def test_unsupported_kustomization_fields_are_refused_by_name(tree):
    write(tree / "base/kustomization.yaml", "resources: [sts.yaml]\nnamePrefix: x-\ncommonLabels: {a: b}\n")
    with pytest.raises(KustomizeError, match=r"\['commonLabels', 'namePrefix'\] not implemented"):
        render(tree / "base")


@pytest.mark.parametrize(
    ("kustomization", "message"),
    [
        ("resources: [sts.yaml, sts.yaml]", "defined twice"),
        ("resources: [missing.yaml]", "does not exist"),
        ("resources: [https://example.com/x.yaml]", "remote resource"),
        (
            "resources: [sts.yaml]\npatches: [{patch: '{kind: StatefulSet, metadata: {name: nope}}'}]",
            "matches no resource",
        ),
        ("resources: [sts.yaml]\npatches: [{patch: '- op: add'}]", "only strategic-merge"),
        (
            "resources: [sts.yaml]\nlabels: [{pairs: {a: b}, includeSelectors: true}]",
            "only `labels` with pairs",
        ),
        ("resources: [sts.yaml]\nimages: [{name: x, newImage: y}]", "bad images entry"),
        ("resources: [.]", "cycle"),
    ],
)
def test_inconsistent_kustomizations_are_errors(tree, kustomization, message):
    write(tree / "base/kustomization.yaml", kustomization)
    with pytest.raises(KustomizeError, match=message):
        render(tree / "base")


def test_strategic_merge_refuses_what_it_cannot_do_right():
    with pytest.raises(KustomizeError, match="ports"):
        merge_patch({"ports": [{"containerPort": 1}]}, {"ports": [{"containerPort": 2}]}, strategic=True)
    with pytest.raises(KustomizeError, match="directives"):
        merge_patch({"a": 1}, {"$patch": "delete"}, strategic=True)


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("streamguard", ("streamguard", None, None)),
        ("streamguard:dev", ("streamguard", "dev", None)),
        ("reg.example:5000/team/sg:1.0@sha256:ab", ("reg.example:5000/team/sg", "1.0", "sha256:ab")),
        ("reg.example:5000/team/sg", ("reg.example:5000/team/sg", None, None)),
    ],
)
def test_split_image(image, parts):
    assert split_image(image) == parts


@functools.cache
def kustomize_command() -> list[str] | None:
    """Return a kustomize >= 5 command if one is installed (not available from PyPI or Debian bookworm)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True)
        version = json.loads(out.stdout or "{}").get("kustomizeVersion", "v0")
        if int(version.lstrip("v").split(".")[0]) >= 5:
            return ["kubectl", "kustomize"]
    return None


# prod is rendered inside gpu (gpu = prod + patches), so local and gpu cover every file under k8s/.
@pytest.mark.parametrize("target", ["local", "gpu", "fixture"])
def test_renders_exactly_what_kustomize_renders(tree, target):
    command = kustomize_command()
    if command is None:
        pytest.skip(
            "no kustomize >= 5 on PATH (neither PyPI nor Debian bookworm ships one); cross-check not run"
        )
    directory = tree / "overlay" if target == "fixture" else K8S_DIR / "overlays" / target
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, check=True).stdout
    expected = [doc for doc in yaml.safe_load_all(out) if doc]
    rendered = render(directory)
    assert [object_id(o) for o in rendered] == [object_id(o) for o in expected]
    for mine, theirs in zip(rendered, expected, strict=True):
        assert mine == theirs, object_id(mine)
