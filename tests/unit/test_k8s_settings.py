"""ConfigMap and Secret references cover every Settings field the flow reads, in every overlay.

The field list is read from `Settings.model_fields` when the test runs, so a field added later must be
placed (ConfigMap key, Secret key for SecretStr fields, or listed as deliberately unset) or this fails,
naming it.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from streamguard.core.settings import Settings
from streamguard.deploy.manifests import checks
from streamguard.deploy.manifests.checks import UNSET_ANNOTATION, settings_coverage_problems, settings_fields
from streamguard.deploy.manifests.objects import find
from streamguard.deploy.manifests.render import OVERLAYS


def configmap(objects):
    return find(objects, "ConfigMap", "streamguard-config")[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_is_covered_in_every_overlay(rendered, overlay):
    assert settings_coverage_problems(rendered[overlay]) == []


def test_secret_fields_are_exactly_the_secretstr_fields():
    fields = settings_fields()
    assert set(fields) == {f"STREAMGUARD_{name.upper()}" for name in Settings.model_fields}
    secret = {k for k, is_secret in fields.items() if is_secret}
    assert "STREAMGUARD_SQL_URL" in secret and "STREAMGUARD_KAFKA_SASL_PASSWORD" in secret
    assert secret == {
        f"STREAMGUARD_{n.upper()}"
        for n, f in Settings.model_fields.items()
        if SecretStr in (f.annotation, *getattr(f.annotation, "__args__", ()))
    }


def test_a_field_added_to_settings_later_is_named_until_it_is_placed(prod, monkeypatch):
    class Grown(Settings):
        fraud_ring_window_s: int = 600

    monkeypatch.setattr("streamguard.core.settings.Settings", Grown)
    problems = settings_coverage_problems(prod)
    assert problems == [
        "STREAMGUARD_FRAUD_RING_WINDOW_S is neither a key of ConfigMap streamguard-config nor listed in "
        f"its {UNSET_ANNOTATION} annotation"
    ]
    configmap(prod)["data"]["STREAMGUARD_FRAUD_RING_WINDOW_S"] = "600"
    assert settings_coverage_problems(prod) == []


def test_a_dropped_key_is_named(prod):
    del configmap(prod)["data"]["STREAMGUARD_DECLINE_THRESHOLD"]
    assert any(
        p.startswith("STREAMGUARD_DECLINE_THRESHOLD is neither") for p in settings_coverage_problems(prod)
    )


def test_a_secret_in_the_configmap_is_refused(prod):
    configmap(prod)["data"]["STREAMGUARD_SQL_URL"] = "postgresql://u:p@h/db"
    assert any("holds secret STREAMGUARD_SQL_URL" in p for p in settings_coverage_problems(prod))


def test_a_misspelt_key_is_refused(prod):
    configmap(prod)["data"]["STREAMGUARD_KAFKA_BOOTSTRAP_SERVERS"] = "x:9092"
    assert any(
        "KAFKA_BOOTSTRAP_SERVERS is not a Settings field" in p for p in settings_coverage_problems(prod)
    )


def test_settings_the_cluster_needs_cannot_be_left_unset(prod):
    cm = configmap(prod)
    del cm["data"]["STREAMGUARD_KAFKA_BOOTSTRAP"]
    cm["metadata"]["annotations"][UNSET_ANNOTATION] += " STREAMGUARD_KAFKA_BOOTSTRAP"
    assert (
        f"{UNSET_ANNOTATION} lists STREAMGUARD_KAFKA_BOOTSTRAP, which the cluster needs set"
        in settings_coverage_problems(prod)
    )


def test_every_streamguard_container_gets_the_secrets_and_the_configmap(prod):
    (cronjob,) = find(prod, "CronJob")
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "STREAMGUARD_SQL_URL"]
    container["envFrom"] = []
    problems = settings_coverage_problems(prod)
    assert any(
        "container retrain: STREAMGUARD_SQL_URL is not taken from Secret streamguard-secrets" in p
        for p in problems
    )
    assert any("container retrain: does not load ConfigMap streamguard-config" in p for p in problems)


def test_the_sql_url_secret_may_not_be_optional(prod):
    (job,) = find(prod, "Job")
    for entry in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        if entry["name"] == "STREAMGUARD_SQL_URL":
            entry["valueFrom"]["secretKeyRef"]["optional"] = True
    assert any(
        "required in the cluster but its secretKeyRef is optional" in p
        for p in settings_coverage_problems(prod)
    )


def test_values_must_pass_settings_validation(prod):
    configmap(prod)["data"]["STREAMGUARD_REVIEW_THRESHOLD"] = "0.95"  # above the decline threshold
    assert any(
        "do not validate" in p and "DECLINE_THRESHOLD must be >=" in p
        for p in settings_coverage_problems(prod)
    )


def test_checks_module_reads_settings_at_call_time():
    # Guard for the monkeypatch above: the field list must not be captured at import time.
    assert "Settings" not in vars(checks)
