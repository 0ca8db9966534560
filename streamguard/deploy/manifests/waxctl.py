"""Build the exact `waxctl dataflow deploy` command for an overlay, and run it (`make deploy`).

Everything comes from the rendered kustomize overlay, so the waxctl path and the manifests path deploy the
same flow: processes = the StatefulSet's replicas, workers = BYTEWAX_WORKERS_PER_PROCESS, image, recovery
partitions and intervals from the ConfigMap, recovery volume size and class from the volumeClaimTemplate.
The settings go into a chart values file (`-V`) rather than `-e KEY=VALUE`, because waxctl parses `-e` as a
comma-separated list and would split a value such as a broker list. Secrets stay in the Secret
`streamguard-secrets` (chart value `envFromSecret`).

waxctl renders Bytewax's Helm chart, which differs from k8s/base in two ways that matter (k8s/README.md):
its pods cannot mount the shared model registry (the chart mounts extra volumes into its init container
only), so the flow scores with the model baked into the image; and its pods run the image's `entrypoint.sh`
with the flow file waxctl uploads (k8s/waxctl/fraud_flow.py) and the chart's hostfile for peer addresses.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streamguard.deploy.manifests.objects import CONFIGMAP, FLOW_STATEFULSET, SECRET, find, literal_env
from streamguard.deploy.manifests.render import K8S_DIR, OVERLAYS, render_overlay, split_image

FLOW_FILE = K8S_DIR / "waxctl" / "fraud_flow.py"
VALUES_DIR = K8S_DIR.parent / "build" / "waxctl"
WAXCTL_URL = "https://bytewax.io/downloads"
# Chart paths: the flow file lands in /var/bytewax (an emptyDir), the image's model registry in /app.
CHART_STATE_DIR = "/var/bytewax/state"
IMAGE_MODEL_DIR = "/app/model-registry"
# Set by the chart itself, or only meaningful with generated addresses (not the chart's hostfile).
CHART_OWNED_ENV = ("BYTEWAX_", "SG_NAMESPACE", "SG_PEER_", "SG_CLUSTER_DOMAIN")


@dataclass(frozen=True)
class WaxctlDeploy:
    """The `waxctl dataflow deploy` flags streamguard sets."""

    name: str
    namespace: str
    processes: int
    workers: int
    image_repository: str
    image_tag: str
    image_pull_policy: str
    image_pull_secret: str | None
    recovery_parts: int
    snapshot_interval_s: int
    backup_interval_s: int
    recovery_size: str
    recovery_storage_class: str | None


def plan_from_objects(objects: list[dict[str, Any]]) -> tuple[WaxctlDeploy, dict[str, Any]]:
    """Return the deploy flags and the chart values for a rendered overlay."""
    (sts,) = find(objects, "StatefulSet", FLOW_STATEFULSET)
    data = find(objects, "ConfigMap", CONFIGMAP)[0].get("data") or {}
    pod = sts["spec"]["template"]
    spec = pod["spec"]
    flow = spec["containers"][0]
    env = literal_env(flow)
    repository, tag, digest = split_image(flow["image"])
    if digest or not tag:
        raise ValueError(f"waxctl needs a repository:tag image, the overlay has {flow['image']}")
    (recovery_claim,) = [
        t for t in sts["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == "recovery"
    ]
    secrets = spec.get("imagePullSecrets") or []
    deploy = WaxctlDeploy(
        name=FLOW_STATEFULSET,
        namespace=sts["metadata"]["namespace"],
        processes=int(sts["spec"]["replicas"]),
        workers=int(env.get("BYTEWAX_WORKERS_PER_PROCESS", "1")),
        image_repository=repository,
        image_tag=tag,
        image_pull_policy=flow.get("imagePullPolicy", "IfNotPresent"),
        image_pull_secret=secrets[0]["name"] if secrets else None,
        recovery_parts=int(data["STREAMGUARD_RECOVERY_PARTITIONS"]),
        snapshot_interval_s=int(data["STREAMGUARD_SNAPSHOT_INTERVAL_S"]),
        backup_interval_s=int(data["STREAMGUARD_BACKUP_INTERVAL_S"]),
        recovery_size=str(recovery_claim["spec"]["resources"]["requests"]["storage"]),
        recovery_storage_class=recovery_claim["spec"].get("storageClassName"),
    )
    return deploy, chart_values(data, env, pod)


def chart_values(configmap: dict[str, str], env: dict[str, str], pod: dict[str, Any]) -> dict[str, Any]:
    """Return Bytewax Helm chart values carrying the overlay's settings, scheduling and pod security."""
    chart_env = {**configmap, **{k: v for k, v in env.items() if not k.startswith(CHART_OWNED_ENV)}}
    chart_env.update({"STREAMGUARD_STATE_DIR": CHART_STATE_DIR, "STREAMGUARD_MODEL_DIR": IMAGE_MODEL_DIR})
    for key, value in chart_env.items():
        # The chart renders `value: "{{ tpl (print $value) $ }}"`: quotes, backslashes and templates break it.
        if any(c in value for c in ('"', "\\", "{{")):
            raise ValueError(f"{key}={value!r} cannot pass through the Bytewax chart's env template")
    spec = pod["spec"]
    flow = spec["containers"][0]
    values: dict[str, Any] = {
        "env": dict(sorted(chart_env.items())),
        "envFromSecret": SECRET,
        "podAnnotations": dict(pod["metadata"].get("annotations") or {}),
        "podSecurityContext": spec["securityContext"],
        "resources": flow.get("resources") or {},
        "configuration": {"keepAlive": False},
    }
    for key in ("nodeSelector", "tolerations", "affinity"):
        if spec.get(key):
            values[key] = spec[key]
    return values


def waxctl_argv(deploy: WaxctlDeploy, values_file: Path, flow_file: Path = FLOW_FILE) -> list[str]:
    """Return the `waxctl dataflow deploy` argv."""
    argv = [
        "waxctl",
        "dataflow",
        "deploy",
        str(flow_file),
        f"--name={deploy.name}",
        f"--namespace={deploy.namespace}",
        f"--processes={deploy.processes}",
        f"--workers={deploy.workers}",
        f"--image-repository={deploy.image_repository}",
        f"--image-tag={deploy.image_tag}",
        f"--image-pull-policy={deploy.image_pull_policy}",
    ]
    if deploy.image_pull_secret:
        argv.append(f"--image-pull-secret={deploy.image_pull_secret}")
    argv += [
        "--recovery",
        f"--recovery-parts={deploy.recovery_parts}",
        f"--recovery-snapshot-interval={deploy.snapshot_interval_s}",
        f"--recovery-backup-interval={deploy.backup_interval_s}",
        f"--recovery-size={deploy.recovery_size}",
    ]
    if deploy.recovery_storage_class:
        argv.append(f"--recovery-storageclass={deploy.recovery_storage_class}")
    # --yes: an update restarts every process at once, which is how a Bytewax cluster must be updated.
    argv += [f"--chart-values-file={values_file}", "--yes"]
    return argv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streamguard.deploy.manifests.waxctl", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--overlay", default="prod", choices=OVERLAYS, help="overlay to mirror (default prod)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write the values file, print it and the command"
    )
    args = parser.parse_args(argv)

    if not args.dry_run and shutil.which("waxctl") is None:
        raise SystemExit(
            f"waxctl is not on PATH: get it from {WAXCTL_URL} (vendor site, may go away), or deploy the "
            f"manifests instead: kubectl apply -k k8s/overlays/{args.overlay} (k8s/README.md)"
        )
    deploy, values = plan_from_objects(render_overlay(args.overlay))
    values_file = VALUES_DIR / f"{args.overlay}-values.yaml"
    values_file.parent.mkdir(parents=True, exist_ok=True)
    values_file.write_text(
        f"# Generated by `python -m streamguard.deploy.manifests.waxctl --overlay {args.overlay}` from k8s/overlays/"
        f"{args.overlay}; do not edit.\n" + yaml.safe_dump(values, sort_keys=False)
    )
    command = waxctl_argv(
        deploy, values_file.relative_to(K8S_DIR.parent), FLOW_FILE.relative_to(K8S_DIR.parent)
    )
    if args.dry_run:
        print(f"# {values_file.relative_to(K8S_DIR.parent)}\n{values_file.read_text()}")
        print(shlex.join(command))
        return
    print(shlex.join(command), file=sys.stderr)
    raise SystemExit(subprocess.run(command, cwd=K8S_DIR.parent, check=False).returncode)


if __name__ == "__main__":
    main()
