"""Create this pod's share of the Bytewax recovery partitions on its first start.

Bytewax needs the cluster as a whole to see every partition `part-0 .. part-{N-1}` exactly once; which
process holds which file does not matter, and state is re-routed on resume, so the worker count may change
(docs/guide/concepts/recovery.md and rescaling.md@v0.21.1). With one recovery volume per pod, partitions are
therefore spread over the first H pods ("holders"): pod `i < H` holds every `k` with `k % H == i`.

H is fixed when the store is created, like N: later pods (after a scale-up) hold nothing and create
nothing, and scaling below H would hide partitions, so that is refused here before Bytewax starts. If every
pod created all N partitions instead (what an init container running `python -m bytewax.recovery` on each
volume does), every partition would exist once per pod; Bytewax balances primaries over the copies, so the
copy it reads changes with the cluster size and a rescale would resume from stale or empty snapshots.

The same rule works on one shared volume (each pod creates its own files in the same directory).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path


class RecoveryLayoutError(RuntimeError):
    """The recovery volume does not match the configured partition layout."""


@dataclass(frozen=True)
class PartitionLayout:
    """How N recovery partitions are spread over the first H pods of the StatefulSet."""

    partitions: int
    """N: `STREAMGUARD_RECOVERY_PARTITIONS`, fixed for the life of the store."""
    holders: int
    """H: `SG_RECOVERY_HOLDERS`, the replica count when the store was created, fixed too."""

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.holders < 1:
            raise RecoveryLayoutError(f"partitions and holders must be >= 1, got {self}")

    def owned_by(self, process_id: int) -> tuple[int, ...]:
        """Return the partition indices that process `process_id` holds (none for `process_id >= H`)."""
        if process_id >= self.holders:
            return ()
        return tuple(range(process_id, self.partitions, self.holders))

    def check_cluster_size(self, processes: int) -> None:
        """Raise unless a cluster of `processes` pods can see every partition."""
        if processes < self.holders:
            raise RecoveryLayoutError(
                f"{processes} processes cannot see partitions held by pods {processes}..{self.holders - 1} "
                f"(SG_RECOVERY_HOLDERS={self.holders}); copy their part-*.sqlite3* files onto lower pods' "
                "volumes and lower SG_RECOVERY_HOLDERS first (k8s/README.md, 'Rescaling')"
            )


def partition_file(directory: Path, index: int) -> Path:
    return directory / f"part-{index}.sqlite3"


def read_partition_header(path: Path) -> tuple[int, int]:
    """Return `(part_index, part_count)` recorded in a Bytewax recovery partition.

    Opened `immutable`: plain read-only access to a WAL database would still create its -wal/-shm files,
    and the `parts` row is written once, when the partition is created.
    """
    with closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)) as db:
        row = db.execute("SELECT part_index, part_count FROM parts").fetchone()
    if row is None:
        raise RecoveryLayoutError(f"{path} has no row in its `parts` table")
    return int(row[0]), int(row[1])


def ensure_owned_partitions(directory: Path, layout: PartitionLayout, process_id: int) -> tuple[int, ...]:
    """Create this process's partitions in `directory` if none exist yet; return the indices created.

    Creates only the directory when the process holds no partitions or all of its partitions are there. Raises
    RecoveryLayoutError when only some are there (a lost file would otherwise be replaced by an empty
    one and its state silently dropped) or when an existing file was made for a different N.
    """
    # Bytewax aborts on a missing recovery directory, even for a process that holds no partition.
    directory.mkdir(parents=True, exist_ok=True)
    owned = layout.owned_by(process_id)
    if not owned:
        return ()
    present = [k for k in owned if partition_file(directory, k).exists()]
    for k in present:
        index, count = read_partition_header(partition_file(directory, k))
        if (index, count) != (k, layout.partitions):
            raise RecoveryLayoutError(
                f"{partition_file(directory, k)} is partition {index} of {count}, expected {k} of "
                f"{layout.partitions} (STREAMGUARD_RECOVERY_PARTITIONS cannot change for an existing store)"
            )
    if present:
        missing = sorted(set(owned) - set(present))
        if missing:
            raise RecoveryLayoutError(
                f"recovery volume {directory} holds partitions {present} but not {missing}; restore them from "
                "a backup, or delete every part-* file of the flow to start over"
            )
        return ()
    _create_partitions(directory, layout.partitions, owned)
    return owned


def _create_partitions(directory: Path, count: int, indices: tuple[int, ...]) -> None:
    # Bytewax only creates a full set; build it beside the target (same filesystem, so the renames are
    # atomic and a crash never leaves a half-written partition under its final name) and keep ours.
    from bytewax.recovery import init_db_dir

    scratch = Path(tempfile.mkdtemp(prefix=".init-", dir=directory))
    try:
        init_db_dir(scratch, count)
        for k in indices:
            partition_file(scratch, k).rename(partition_file(directory, k))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
