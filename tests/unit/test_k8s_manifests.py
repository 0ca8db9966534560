"""Every overlay renders, validates against the Kubernetes schemas (strict) and the CR schemas, and keeps
the cross-object rules; each check is also shown to catch the mistake it exists for."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from streamguard.deploy.manifests.checks import custom_resource_problems, schema_problems
from streamguard.deploy.manifests.invariants import invariant_problems
from streamguard.deploy.manifests.objects import find, literal_env
from streamguard.deploy.manifests.render import OVERLAYS, split_image


def flow_of(objects):
    (sts,) = find(objects, "StatefulSet", "streamguard-fraud")
    return sts, sts["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas_strictly(rendered, overlay):
    assert schema_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_custom_resources_match_their_crds(rendered, overlay):
    assert custom_resource_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_keeps_the_cross_object_rules(rendered, overlay):
    assert invariant_problems(rendered[overlay]) == []


def test_strict_schema_validation_catches_a_misspelt_field(prod):
    _, flow = flow_of(prod)
    flow["imagePullPolicyy"] = "Always"
    assert any("'imagePullPolicyy' was unexpected" in p for p in schema_problems(prod))


def test_schema_validation_catches_a_wrong_type(prod):
    _, flow = flow_of(prod)
    flow["resources"]["requests"]["cpu"] = [1]
    assert any("containers.0.resources.requests.cpu" in p for p in schema_problems(prod))


def test_crd_checks_catch_wrong_fields_values_and_unknown_kinds(prod):
    (topic,) = [t for t in find(prod, "KafkaTopic") if t["spec"]["topicName"] == "labels"]
    topic["spec"]["config"]["retention.msec"] = 1
    topic["spec"]["partitions"] = 0
    (mz,) = find(prod, "Materialize")
    mz["spec"]["authenticatorKind"] = "Passwd"
    del mz["spec"]["backendSecretName"]
    prod.append(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "x"}}
    )
    problems = "\n".join(custom_resource_problems(prod))
    assert "'retention.msec' was unexpected" in problems
    assert "partitions: 0 is less than the minimum of 1" in problems
    assert "'Passwd' is not one of" in problems
    assert "'backendSecretName' is a required property" in problems
    assert "no schema for example.com/v1 Widget" in problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda sts, flow, objs: sts["spec"].update(replicas=4), "replicas 4 != BYTEWAX_REPLICAS 3"),
        (lambda sts, flow, objs: sts["spec"].update(podManagementPolicy="OrderedReady"), "Parallel"),
        (
            lambda sts, flow, objs: find(objs, "Service", "streamguard-fraud")[0]["spec"].pop(
                "publishNotReadyAddresses"
            ),
            "not-ready",
        ),
        (lambda sts, flow, objs: flow["readinessProbe"]["httpGet"].update(port=9999), "readinessProbe"),
        (
            lambda sts, flow, objs: find(objs, "ConfigMap")[0]["data"].update(
                STREAMGUARD_TOPIC_PARTITIONS="10"
            ),
            "!= STREAMGUARD_TOPIC_PARTITIONS",
        ),
        (
            lambda sts, flow, objs: [t["spec"].update(partitions=10) for t in find(objs, "KafkaTopic")],
            "do not split evenly over 3",
        ),
        (
            lambda sts, flow, objs: objs.remove(find(objs, "KafkaTopic")[0]),
            "!= STREAMGUARD_TOPIC_PREFIX + TOPIC_NAMES",
        ),
        (
            lambda sts, flow, objs: find(objs, "ConfigMap")[0]["data"].update(
                STREAMGUARD_LABEL_DELAY_DAYS="5"
            ),
            "--delay-days 7 != STREAMGUARD_LABEL_DELAY_DAYS",
        ),
        (
            lambda sts, flow, objs: find(objs, "Job")[0]["spec"]["template"]["spec"]["containers"][0].update(
                args=["sql", "apply"]
            ),
            "--target materialize",
        ),
        (
            lambda sts, flow, objs: flow["resources"]["limits"].update({"nvidia.com/gpu": 1}),
            "requests a GPU but runs a CPU image",
        ),
        (
            lambda sts, flow, objs: sts["spec"]["template"]["spec"]["initContainers"][0].update(
                image=flow["image"] + "-old"
            ),
            "-old, the flow",
        ),
        (
            lambda sts, flow, objs: flow["securityContext"].update(readOnlyRootFilesystem=False),
            "readOnlyRootFilesystem",
        ),
        (
            lambda sts, flow, objs: objs.append(
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "streamguard"}}
            ),
            "secret values must not live",
        ),
        (
            lambda sts, flow, objs: objs.remove(find(objs, "PersistentVolumeClaim")[0]),
            "missing PersistentVolumeClaim streamguard/streamguard-models",
        ),
    ],
)
def test_cross_object_rules_catch_their_mistake(prod, mutate, expected):
    sts, flow = flow_of(prod)
    mutate(sts, flow, prod)
    assert any(expected in p for p in invariant_problems(prod)), invariant_problems(prod)


def test_prod_runs_three_processes_of_the_released_image(rendered):
    sts, flow = flow_of(rendered["prod"])
    assert sts["spec"]["replicas"] == 3
    assert flow["image"] == f"registry.example.com/streamguard:{version('streamguard')}"
    kinds = {o["kind"] for o in rendered["prod"]}
    assert {"PodMonitor", "Materialize", "KafkaTopic", "Job", "CronJob", "Namespace"} <= kinds


def test_gpu_requests_one_gpu_per_process_on_gpu_nodes(rendered):
    sts, flow = flow_of(rendered["gpu"])
    pod = sts["spec"]["template"]["spec"]
    assert flow["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert flow["resources"]["limits"]["memory"] == "6Gi"  # merged into prod's limits, not replacing them
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert split_image(flow["image"])[1] == f"{version('streamguard')}-gpu"
    assert literal_env(flow)["STREAMGUARD_SCORER_DEVICE"] == "gpu"
    for job in find(rendered["gpu"], "CronJob") + find(rendered["gpu"], "Job"):
        # Same image everywhere (one version), but the SQL Job and retraining ask for no GPU node.
        assert "nvidia.com/gpu" not in str(job)


def test_local_is_a_small_two_process_cluster_without_operators_it_lacks(rendered):
    sts, flow = flow_of(rendered["local"])
    assert sts["spec"]["replicas"] == 2 and literal_env(flow)["SG_RECOVERY_HOLDERS"] == "2"
    (pvc,) = find(rendered["local"], "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {t["spec"]["replicas"] for t in find(rendered["local"], "KafkaTopic")} == {1}
    assert not find(rendered["local"], "PodMonitor") and not find(rendered["local"], "Materialize")
