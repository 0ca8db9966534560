"""Start one Bytewax process of a streamguard flow inside a pod: the Python half of the image entrypoint.

`k8s/image/entrypoint.sh` runs `python -m streamguard.deploy.pod.launch [IMPORT_STR]`. This module derives the
process id and peer addresses (`process`), creates this pod's recovery partitions on first start
(`recovery`), waits until the pod's own DNS name resolves (Bytewax binds to it and fails at once if it
does not), then replaces itself with `python -m bytewax.run IMPORT_STR -w W [-i ID -a ADDRS] [-r DIR -s S -b B]`
(built by `streamguard.core.run_command`, as `streamguard flow run` builds it).
The recovery intervals and partition count come from `streamguard.core.settings.Settings`, so the flow and the
launcher read the same `STREAMGUARD_*` values. Deploy-only variables use the `SG_` prefix (k8s/README.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamguard.core.run_command import RecoveryArgs, bytewax_run_argv
from streamguard.deploy.pod.process import ClusterConfigError, ClusterPlan, plan_cluster, positive_int_env
from streamguard.deploy.pod.recovery import PartitionLayout, RecoveryLayoutError, ensure_owned_partitions
from streamguard.deploy.pod.settings import PodSettings

DEFAULT_FLOW = "flows.fraud:flow"


def recovery_holders(env: Mapping[str, str], processes: int) -> int:
    """Return H from `SG_RECOVERY_HOLDERS`; a single process may leave it unset (H = 1)."""
    holders = PodSettings.from_env(env).recovery_holders
    if holders is not None:
        return holders
    if processes == 1:
        return 1
    raise ClusterConfigError(
        "SG_RECOVERY_HOLDERS is not set: set it to the replica count the recovery store was created with "
        "(the current BYTEWAX_REPLICAS on a first deploy) and never change it afterwards"
    )


def wait_until_resolvable(
    address: str,
    timeout_s: float,
    resolve: Callable[[str, int], object] = socket.getaddrinfo,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Block until the host of `host:port` resolves; return the seconds waited.

    A StatefulSet pod's DNS record appears a moment after the pod starts; Bytewax (timely) binds to its own
    address once and exits if the name is unknown, while it retries connections to peers by itself.
    """
    host, _, port = address.rpartition(":")
    started = clock()
    delay = 0.25
    while True:
        try:
            resolve(host, int(port))
            return clock() - started
        except OSError as exc:
            waited = clock() - started
            if waited >= timeout_s:
                raise TimeoutError(f"{host} did not resolve within {timeout_s:.0f} s: {exc}") from exc
            sleep(min(delay, max(0.0, timeout_s - waited)))
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True)
class Launch:
    """What `prepare` decided: the command to exec, what to log, and the address to wait for."""

    argv: list[str]
    log: list[str]
    plan: ClusterPlan


def prepare(import_str: str, env: Mapping[str, str]) -> Launch:
    """Check the environment and create this pod's recovery partitions if due; return the launch."""
    from streamguard.core.settings import Settings

    settings = Settings()
    plan = plan_cluster(env)
    workers = positive_int_env(env, "BYTEWAX_WORKERS_PER_PROCESS") or 1
    where = "single process" if plan.process_id is None else f"process {plan.process_id} of {plan.processes}"
    log = [f"{where}, {workers} worker(s) per process, flow {import_str}"]

    recovery = None
    directory = env.get("BYTEWAX_RECOVERY_DIRECTORY", "").strip()
    if directory:
        layout = PartitionLayout(settings.recovery_partitions, recovery_holders(env, plan.processes))
        layout.check_cluster_size(plan.processes)
        created = ensure_owned_partitions(Path(directory), layout, plan.process_id or 0)
        owned = layout.owned_by(plan.process_id or 0)
        log.append(
            f"recovery {directory}: holds partitions {list(owned)} of {layout.partitions}"
            + (f" (created {list(created)})" if created else "")
        )
        recovery = RecoveryArgs.from_settings(Path(directory), settings)
    else:
        log.append(
            "BYTEWAX_RECOVERY_DIRECTORY is not set: running WITHOUT recovery (state and offsets are lost)"
        )
    argv = bytewax_run_argv(
        import_str, workers, recovery, process_id=plan.process_id, addresses=plan.addresses
    )
    return Launch(argv, log, plan)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streamguard.deploy.pod.launch", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "import_str",
        nargs="?",
        help=f"flow to run: module:attr or a .py path (default: $BYTEWAX_PYTHON_FILE_PATH, else {DEFAULT_FLOW})",
    )
    parser.add_argument(
        "--print-only", action="store_true", help="print the bytewax.run argv instead of running it"
    )
    args = parser.parse_args(argv)
    env = os.environ
    import_str = args.import_str or env.get("BYTEWAX_PYTHON_FILE_PATH", "").strip() or DEFAULT_FLOW
    try:
        launch = prepare(import_str, env)
        for line in launch.log:
            print(f"streamguard launch: {line}", file=sys.stderr)
        if args.print_only:
            print(shlex.join(launch.argv))
            return
        own_address = launch.plan.own_address
        if own_address is not None:
            timeout = PodSettings.from_env(env).dns_wait_s
            waited = wait_until_resolvable(own_address, timeout)
            print(f"streamguard launch: {own_address} resolved after {waited:.1f} s", file=sys.stderr)
    except (ClusterConfigError, RecoveryLayoutError, TimeoutError) as exc:
        # These mean "fix the deployment", not a crash to debug: one line, no traceback, exit 2.
        print(f"streamguard launch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"streamguard launch: exec {shlex.join(launch.argv)}", file=sys.stderr, flush=True)
    os.execv(launch.argv[0], launch.argv)  # noqa: S606 - becoming bytewax.run (PID 1 keeps the stop signal)


if __name__ == "__main__":
    main()
