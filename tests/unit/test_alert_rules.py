"""The alert rules: valid for Prometheus, each tested with `promtool test rules`, each with a runbook entry."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "k8s" / "monitoring"
RULE = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
TESTS = MONITORING / "tests" / "streamguard-alerts.test.yaml"
ALERTS = [r["alert"] for g in RULE["spec"]["groups"] for r in g["rules"] if "alert" in r]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian/Ubuntu: `apt-get install prometheus`; .ci/run installs it)",
)


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    """The PrometheusRule's spec as a plain rule file, beside a copy of the promtool test file."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(RULE["spec"]))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return tmp_path


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


@needs_promtool
def test_the_rules_are_valid_for_prometheus(rules_dir):
    got = _promtool("check", "rules", str(rules_dir / "rules.yaml"))
    assert got.returncode == 0, got.stdout + got.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in got.stdout


@needs_promtool
def test_every_rule_behaves_as_its_promtool_cases_say(rules_dir):
    got = _promtool("test", "rules", str(rules_dir / TESTS.name))
    assert got.returncode == 0, got.stdout + got.stderr


def test_every_alert_has_a_case_that_fires_it():
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {c["alertname"] for t in cases for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    quiet = {c["alertname"] for t in cases for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
    assert fired == set(ALERTS), f"no firing case for {set(ALERTS) - fired}"
    assert quiet == set(ALERTS), f"no quiet case for {set(ALERTS) - quiet}"


def test_every_alert_has_a_runbook_entry_that_its_annotation_names():
    readme = (MONITORING / "README.md").read_text()
    headings = {line[4:].strip() for line in readme.splitlines() if line.startswith("### ")}
    for group in RULE["spec"]["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert name in headings, f"k8s/monitoring/README.md has no '### {name}' runbook entry"
            assert rule["annotations"]["runbook"] == f"k8s/monitoring/README.md#{name.lower()}"
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert {"summary", "description"} <= set(rule["annotations"])
