"""Derive this pod's Bytewax process id and the cluster's peer addresses from StatefulSet facts.

A Bytewax cluster is a fixed set of processes; each runs `python -m bytewax.run ... -i ID -a "h:p;h:p"`.
In a StatefulSet the id is the pod ordinal (`<statefulset>-<ordinal>`) and the addresses are the pods'
stable DNS names behind the headless Service. Two sources of addresses are supported:

- `BYTEWAX_HOSTFILE_PATH`: one `host:port` per line, written by the Bytewax Helm chart's init container
  (the waxctl path);
- otherwise they are generated as `<sts>-<i>.<service>.<namespace>.svc.<cluster domain>:<port>` for
  `i < BYTEWAX_REPLICAS` (the kustomize path).

One process (`replicas == 1`) runs without `-i/-a`, so it needs no network and no ordinal in its name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamguard.deploy.pod.settings import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_WORKER_PORT,
    ClusterConfigError,
    PodSettings,
)

_ORDINAL = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class ClusterPlan:
    """Where this process sits in the Bytewax cluster."""

    process_id: int | None
    """Index of this process, or None for a single process run without `-i/-a`."""
    addresses: tuple[str, ...]
    """`host:port` of every process, this one included; empty for a single process."""

    @property
    def processes(self) -> int:
        return max(1, len(self.addresses))

    @property
    def own_address(self) -> str | None:
        return None if self.process_id is None else self.addresses[self.process_id]


def ordinal_from_pod_name(pod_name: str, statefulset_name: str) -> int | None:
    """Return the ordinal of pod `<statefulset_name>-<n>`, or None when the name has no such suffix."""
    prefix = f"{statefulset_name}-"
    if not statefulset_name or not pod_name.startswith(prefix):
        return None
    suffix = pod_name[len(prefix) :]
    return int(suffix) if _ORDINAL.fullmatch(suffix) else None


def peer_addresses(
    statefulset_name: str,
    service_name: str,
    namespace: str,
    replicas: int,
    port: int = DEFAULT_WORKER_PORT,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> tuple[str, ...]:
    """Return the stable `host:port` of every pod of a StatefulSet behind a headless Service."""
    if replicas < 1:
        raise ClusterConfigError(f"replicas must be >= 1, got {replicas}")
    domain = f"{service_name}.{namespace}.svc.{cluster_domain}"
    return tuple(f"{statefulset_name}-{i}.{domain}:{port}" for i in range(replicas))


def read_hostfile(path: Path) -> tuple[str, ...]:
    """Return the non-blank lines of a Bytewax hostfile, stripped."""
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def positive_int_env(env: Mapping[str, str], name: str) -> int | None:
    """Return the positive integer in variable `name` (a `BYTEWAX_*` one), None when unset or blank."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise ClusterConfigError(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)


def plan_cluster(env: Mapping[str, str]) -> ClusterPlan:
    """Work out this process's id and the cluster's addresses from the pod environment.

    Reads `BYTEWAX_POD_NAME`, `BYTEWAX_STATEFULSET_NAME`, `BYTEWAX_REPLICAS`, `BYTEWAX_HOSTFILE_PATH`,
    and for generated addresses `SG_NAMESPACE`, `SG_PEER_SERVICE` (default: the StatefulSet name),
    `SG_PEER_PORT` (9999) and `SG_CLUSTER_DOMAIN` (cluster.local). Explicit `BYTEWAX_PROCESS_ID` and
    `BYTEWAX_ADDRESSES` win, as they do in `bytewax.run`. Raises ClusterConfigError naming the variable
    at fault rather than letting Bytewax start a cluster that can never form.
    """
    pod = PodSettings.from_env(env)
    explicit = _explicit_plan(env)
    if explicit is not None:
        return explicit

    hostfile = env.get("BYTEWAX_HOSTFILE_PATH", "").strip()
    hosts = read_hostfile(Path(hostfile)) if hostfile else None
    replicas = positive_int_env(env, "BYTEWAX_REPLICAS")
    if hosts is not None:
        if not hosts:
            raise ClusterConfigError(f"hostfile {hostfile} (BYTEWAX_HOSTFILE_PATH) lists no address")
        if replicas is not None and replicas != len(hosts):
            raise ClusterConfigError(
                f"BYTEWAX_REPLICAS={replicas} but hostfile {hostfile} lists {len(hosts)} addresses"
            )
        replicas = len(hosts)
    if replicas is None or replicas == 1:
        return ClusterPlan(process_id=None, addresses=())

    pod_name = env.get("BYTEWAX_POD_NAME", "").strip()
    sts_name = env.get("BYTEWAX_STATEFULSET_NAME", "").strip()
    if not pod_name or not sts_name:
        raise ClusterConfigError(
            f"{replicas} processes need BYTEWAX_POD_NAME and BYTEWAX_STATEFULSET_NAME to pick this process's id"
        )
    ordinal = ordinal_from_pod_name(pod_name, sts_name)
    if ordinal is None:
        raise ClusterConfigError(
            f"pod name {pod_name!r} is not '{sts_name}-<ordinal>' (BYTEWAX_STATEFULSET_NAME={sts_name!r}); "
            "a multi-process flow must run in that StatefulSet"
        )
    if ordinal >= replicas:
        raise ClusterConfigError(
            f"pod {pod_name} has ordinal {ordinal} but the cluster has {replicas} processes "
            "(BYTEWAX_REPLICAS): scale by editing replicas and BYTEWAX_REPLICAS together, never with kubectl scale"
        )
    if hosts is None:
        if not pod.namespace:
            raise ClusterConfigError("SG_NAMESPACE (the pod's namespace, from the downward API) is not set")
        hosts = peer_addresses(
            statefulset_name=sts_name,
            service_name=pod.peer_service or sts_name,
            namespace=pod.namespace,
            replicas=replicas,
            port=pod.peer_port,
            cluster_domain=pod.cluster_domain,
        )
    return ClusterPlan(process_id=ordinal, addresses=hosts)


def _explicit_plan(env: Mapping[str, str]) -> ClusterPlan | None:
    raw_id = env.get("BYTEWAX_PROCESS_ID", "").strip()
    raw_addresses = env.get("BYTEWAX_ADDRESSES", "").strip()
    if not raw_id and not raw_addresses:
        return None
    if not (raw_id and raw_addresses):
        raise ClusterConfigError("set both BYTEWAX_PROCESS_ID and BYTEWAX_ADDRESSES, or neither")
    addresses = tuple(a.strip() for a in raw_addresses.split(";") if a.strip())
    if not _ORDINAL.fullmatch(raw_id) or int(raw_id) >= len(addresses):
        raise ClusterConfigError(
            f"BYTEWAX_PROCESS_ID={raw_id!r} is not an index into {len(addresses)} addresses"
        )
    return ClusterPlan(process_id=int(raw_id), addresses=addresses)
