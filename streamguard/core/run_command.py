"""Build the `python -m bytewax.run` command that runs a flow: the one place that knows its flags.

Both ways a flow starts use it: `streamguard flow run` on a workstation (streamguard/local/flow_runner.py)
and the pod entrypoint (streamguard/deploy/pod/launch.py). Bytewax keeps Kafka input offsets only in its
recovery snapshots, so both pass the recovery flags built here from the same settings.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamguard.core.settings import Settings


@dataclass(frozen=True)
class RecoveryArgs:
    """The `-r/-s/-b` flags of `bytewax.run`."""

    directory: Path
    snapshot_interval_s: int
    backup_interval_s: int

    @classmethod
    def from_settings(cls, directory: Path, settings: Settings) -> RecoveryArgs:
        """Recovery in `directory` at the snapshot and backup intervals of `settings`."""
        return cls(directory, settings.snapshot_interval_s, settings.backup_interval_s)


def bytewax_run_argv(
    import_str: str,
    workers: int,
    recovery: RecoveryArgs | None = None,
    *,
    process_id: int | None = None,
    addresses: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """Return the argv that runs `import_str` with `workers` workers per process.

    `process_id` and `addresses` make it process `process_id` of a cluster (`-i/-a`); `recovery` adds the
    recovery flags.
    """
    argv = [python, "-m", "bytewax.run", import_str, "-w", str(workers)]
    if process_id is not None:
        argv += ["-i", str(process_id), "-a", ";".join(addresses)]
    if recovery is not None:
        argv += [
            "-r",
            str(recovery.directory),
            "-s",
            str(recovery.snapshot_interval_s),
            "-b",
            str(recovery.backup_interval_s),
        ]
    return argv
