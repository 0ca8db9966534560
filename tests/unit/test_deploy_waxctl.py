"""The waxctl path mirrors the overlays: the exact `waxctl dataflow deploy` command and its chart values."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from streamguard.deploy.manifests import waxctl
from streamguard.deploy.manifests.objects import find
from streamguard.deploy.manifests.render import render_overlay
from streamguard.deploy.manifests.waxctl import WaxctlDeploy, chart_values, plan_from_objects, waxctl_argv


@pytest.fixture(scope="module")
def prod():
    return render_overlay("prod")


def test_prod_command_is_exactly_this(prod):
    deploy, _ = plan_from_objects(prod)
    assert waxctl_argv(deploy, Path("build/waxctl/prod-values.yaml"), Path("k8s/waxctl/fraud_flow.py")) == [
        "waxctl", "dataflow", "deploy", "k8s/waxctl/fraud_flow.py",
        "--name=streamguard-fraud",
        "--namespace=streamguard",
        "--processes=3",
        "--workers=1",
        "--image-repository=registry.example.com/streamguard",
        "--image-tag=0.1.0",
        "--image-pull-policy=IfNotPresent",
        "--recovery",
        "--recovery-parts=12",
        "--recovery-snapshot-interval=5",
        "--recovery-backup-interval=30",
        "--recovery-size=20Gi",
        "--chart-values-file=build/waxctl/prod-values.yaml",
        "--yes",
    ]  # fmt: skip


def test_settings_travel_in_the_values_file_and_secrets_stay_in_the_secret(prod):
    _, values = plan_from_objects(prod)
    configmap = find(prod, "ConfigMap", "streamguard-config")[0]["data"]
    env = values["env"]
    assert set(env) == set(configmap) | {"SG_RECOVERY_HOLDERS"}
    assert env["SG_RECOVERY_HOLDERS"] == "3"
    assert env["STREAMGUARD_MODEL_DIR"] == "/app/model-registry"  # the chart cannot mount the shared registry
    assert env["STREAMGUARD_STATE_DIR"].startswith("/var/bytewax/")  # the chart's writable emptyDir
    assert not any(k.startswith("BYTEWAX_") for k in env)  # the chart sets its own
    assert "STREAMGUARD_SQL_URL" not in env and "STREAMGUARD_KAFKA_SASL_PASSWORD" not in env
    assert values["envFromSecret"] == "streamguard-secrets"
    assert values["configuration"] == {"keepAlive": False}
    assert values["podAnnotations"]["prometheus.io/port"] == "3030"


def test_a_comma_in_a_value_survives_because_nothing_goes_through_dash_e(prod):
    objects = copy.deepcopy(prod)
    find(objects, "ConfigMap")[0]["data"]["STREAMGUARD_KAFKA_BOOTSTRAP"] = "b0:9092,b1:9092"
    deploy, values = plan_from_objects(objects)
    assert values["env"]["STREAMGUARD_KAFKA_BOOTSTRAP"] == "b0:9092,b1:9092"
    assert not any(arg in ("-e", "--environment-variables") for arg in waxctl_argv(deploy, Path("v.yaml")))


def test_values_the_chart_template_would_mangle_are_refused():
    pod = {"metadata": {}, "spec": {"securityContext": {}, "containers": [{}]}}
    with pytest.raises(ValueError, match="cannot pass through"):
        chart_values({"STREAMGUARD_TOPIC_PREFIX": 'a"b'}, {}, pod)


def test_gpu_command_and_values():
    deploy, values = plan_from_objects(render_overlay("gpu"))
    assert deploy.image_tag == "0.1.0-gpu"
    assert values["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert values["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert values["env"]["STREAMGUARD_SCORER_DEVICE"] == "gpu"


def test_optional_flags_appear_only_when_set():
    deploy = WaxctlDeploy("n", "ns", 2, 1, "r", "t", "Always", "regcred", 4, 5, 30, "1Gi", "fast-ssd")
    argv = waxctl_argv(deploy, Path("v.yaml"))
    assert "--image-pull-secret=regcred" in argv and "--recovery-storageclass=fast-ssd" in argv


def test_dry_run_writes_the_values_file_and_prints_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(waxctl, "VALUES_DIR", tmp_path / "build" / "waxctl")
    monkeypatch.setattr(waxctl, "K8S_DIR", tmp_path / "k8s")
    monkeypatch.setattr(waxctl, "FLOW_FILE", tmp_path / "k8s" / "waxctl" / "fraud_flow.py")
    waxctl.main(["--overlay", "local", "--dry-run"])
    out = capsys.readouterr().out
    command = out.strip().splitlines()[-1]
    assert command.startswith("waxctl dataflow deploy k8s/waxctl/fraud_flow.py --name=streamguard-fraud")
    assert "--processes=2" in command and "--chart-values-file=build/waxctl/local-values.yaml" in command
    written = yaml.safe_load((tmp_path / "build/waxctl/local-values.yaml").read_text())
    assert written["env"]["SG_RECOVERY_HOLDERS"] == "2"


def test_deploy_without_waxctl_points_at_the_manifests_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(waxctl, "VALUES_DIR", tmp_path / "values")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match=r"bytewax.io/downloads.*kubectl apply -k k8s/overlays/prod"):
        waxctl.main([])
    assert not (tmp_path / "values").exists()


def test_the_uploaded_flow_file_names_the_fraud_flow():
    source = waxctl.FLOW_FILE.read_text()
    assert "from flows.fraud import flow" in source
