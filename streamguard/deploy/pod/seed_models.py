"""Seed the shared model registry from the model baked into the image, once.

The release image carries the model registry it was built with (`/app/model-registry`). In the cluster
the registry lives on a shared volume (`STREAMGUARD_MODEL_DIR`) that the retraining CronJob promotes into,
so the baked copy only bootstraps an empty volume; after that the volume is the source of truth. Runs as
an init container of the flow pods (`python -m streamguard.deploy.pod.seed_models`); pods racing on a fresh
volume are safe because the copy is staged beside the target and renamed into place once.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path


def seed_registry(source: Path, target: Path) -> bool:
    """Copy `source` to `target` when `target` is missing or empty; return whether this call copied it."""
    if target.is_dir() and any(target.iterdir()):
        return False
    if not source.is_dir() or not any(source.iterdir()):
        raise FileNotFoundError(
            f"no model registry to seed from at {source} (was the image built with a model?)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".seed-{uuid.uuid4().hex}"
    shutil.copytree(source, staging)
    try:
        # rename(2) replaces an empty directory atomically and fails if another pod got there first.
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if target.is_dir() and any(target.iterdir()):
            return False
        raise
    return True


def main() -> None:
    from streamguard.core.settings import Settings
    from streamguard.deploy.pod.settings import PodSettings

    source = PodSettings.from_env(os.environ).model_seed_dir
    target = Settings().registry_dir
    try:
        copied = seed_registry(source, target)
    except PermissionError as exc:
        # NFS-like volumes (EFS, Filestore) ignore the pod's fsGroup: the export must let uid 10001 write.
        raise SystemExit(
            f"streamguard seed-models: cannot write {target.parent} ({exc}); make the models volume writable "
            f"by uid/gid {os.getuid()}/{os.getgid()} (fsGroup, or the NFS export / EFS access point owner)"
        ) from None
    verb = "seeded from" if copied else "already present; not touched by"
    print(f"streamguard seed-models: registry {target} {verb} {source}", file=sys.stderr)


if __name__ == "__main__":
    main()
