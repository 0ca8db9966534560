"""Process id and peer addresses from StatefulSet facts (streamguard.deploy.pod.process)."""

from __future__ import annotations

import re
import sys

import pytest

from streamguard.deploy.pod.process import (
    ClusterConfigError,
    ClusterPlan,
    ordinal_from_pod_name,
    peer_addresses,
    plan_cluster,
)

STS = "streamguard-fraud"


def sts_env(pod: str, replicas: int | None, **extra: str) -> dict[str, str]:
    env = {"BYTEWAX_POD_NAME": pod, "BYTEWAX_STATEFULSET_NAME": STS, "SG_NAMESPACE": "fraud", **extra}
    if replicas is not None:
        env["BYTEWAX_REPLICAS"] = str(replicas)
    return env


@pytest.mark.parametrize(
    ("pod", "sts", "expected"),
    [
        ("streamguard-fraud-0", STS, 0),
        ("streamguard-fraud-11", STS, 11),
        ("flow-2-3", "flow-2", 3),  # a StatefulSet name that itself ends in -<digits>
        ("streamguard-fraud", STS, None),  # no ordinal: a Deployment, Job or `docker run`
        ("streamguard-fraud-", STS, None),
        ("streamguard-fraud-7d9f8", STS, None),  # a Deployment pod's hash suffix
        ("streamguard-fraud-01", STS, None),  # Kubernetes never pads ordinals
        ("streamguard-fraud-\u00b2", STS, None),  # str.isdigit() would accept this
        ("other-0", STS, None),
        ("streamguard-fraud-0", "", None),
    ],
)
def test_ordinal_from_pod_name(pod, sts, expected):
    assert ordinal_from_pod_name(pod, sts) == expected


def test_peer_addresses_are_the_pods_stable_dns_names():
    assert peer_addresses(STS, STS, "fraud", 3) == (
        "streamguard-fraud-0.streamguard-fraud.fraud.svc.cluster.local:9999",
        "streamguard-fraud-1.streamguard-fraud.fraud.svc.cluster.local:9999",
        "streamguard-fraud-2.streamguard-fraud.fraud.svc.cluster.local:9999",
    )
    with pytest.raises(ClusterConfigError):
        peer_addresses(STS, STS, "fraud", 0)


def test_multi_process_pod_gets_its_ordinal_and_every_address():
    plan = plan_cluster(sts_env("streamguard-fraud-2", 3))
    assert plan.process_id == 2
    assert plan.processes == 3
    assert plan.addresses == peer_addresses(STS, STS, "fraud", 3)
    assert plan.own_address == plan.addresses[2]


def test_service_port_and_cluster_domain_can_be_overridden():
    env = sts_env(
        "streamguard-fraud-1",
        2,
        SG_PEER_SERVICE="peers",
        SG_PEER_PORT="2101",
        SG_CLUSTER_DOMAIN="k8s.example",
    )
    assert plan_cluster(env).addresses == (
        "streamguard-fraud-0.peers.fraud.svc.k8s.example:2101",
        "streamguard-fraud-1.peers.fraud.svc.k8s.example:2101",
    )


@pytest.mark.parametrize("pod", ["streamguard-fraud-0", "streamguard-fraud", "whatever-abc", ""])
def test_one_replica_runs_as_a_single_process_whatever_the_pod_name(pod):
    assert plan_cluster(sts_env(pod, 1)) == ClusterPlan(process_id=None, addresses=())


def test_no_cluster_facts_at_all_is_a_single_process():
    assert plan_cluster({}) == ClusterPlan(process_id=None, addresses=())


def test_pod_name_without_ordinal_cannot_join_a_cluster():
    with pytest.raises(
        ClusterConfigError, match=r"'streamguard-fraud-7d9f8' is not 'streamguard-fraud-<ordinal>'"
    ):
        plan_cluster(sts_env("streamguard-fraud-7d9f8", 3))


def test_ordinal_beyond_the_cluster_size_is_refused():
    # What `kubectl scale` without updating BYTEWAX_REPLICAS produces.
    with pytest.raises(ClusterConfigError, match="ordinal 3 but the cluster has 3 processes"):
        plan_cluster(sts_env("streamguard-fraud-3", 3))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            sts_env("streamguard-fraud-0", None, BYTEWAX_REPLICAS="three"),
            "BYTEWAX_REPLICAS must be a positive integer",
        ),
        (
            sts_env("streamguard-fraud-0", None, BYTEWAX_REPLICAS="0"),
            "BYTEWAX_REPLICAS must be a positive integer",
        ),
        ({"BYTEWAX_REPLICAS": "2"}, "need BYTEWAX_POD_NAME and BYTEWAX_STATEFULSET_NAME"),
        ({**sts_env("streamguard-fraud-0", 2), "SG_NAMESPACE": ""}, "SG_NAMESPACE"),
        (sts_env("streamguard-fraud-0", 2, SG_PEER_PORT="-1"), "SG_PEER_PORT"),
    ],
)
def test_inconsistent_environments_name_the_variable_at_fault(env, message):
    with pytest.raises(ClusterConfigError, match=message):
        plan_cluster(env)


def test_hostfile_addresses_are_used_as_written(tmp_path):
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text("a-0.a.ns.svc.cluster.local:9999\n\n  a-1.a.ns.svc.cluster.local:9999  \n")
    env = {"BYTEWAX_POD_NAME": "a-1", "BYTEWAX_STATEFULSET_NAME": "a", "BYTEWAX_HOSTFILE_PATH": str(hostfile)}
    assert plan_cluster(env) == ClusterPlan(
        process_id=1, addresses=("a-0.a.ns.svc.cluster.local:9999", "a-1.a.ns.svc.cluster.local:9999")
    )
    assert plan_cluster({**env, "BYTEWAX_REPLICAS": "2"}).process_id == 1
    with pytest.raises(ClusterConfigError, match="BYTEWAX_REPLICAS=3 but hostfile"):
        plan_cluster({**env, "BYTEWAX_REPLICAS": "3"})


def test_hostfile_with_one_address_is_a_single_process_and_an_empty_one_an_error(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("a-0.a.ns.svc.cluster.local:9999\n")
    assert plan_cluster({"BYTEWAX_HOSTFILE_PATH": str(one)}).process_id is None
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ClusterConfigError, match="lists no address"):
        plan_cluster({"BYTEWAX_HOSTFILE_PATH": str(empty)})


def test_explicit_process_id_and_addresses_win_as_in_bytewax_run():
    env = {**sts_env("streamguard-fraud-0", 3), "BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "h0:1;h1:1"}
    assert plan_cluster(env) == ClusterPlan(process_id=1, addresses=("h0:1", "h1:1"))
    with pytest.raises(ClusterConfigError, match="both"):
        plan_cluster({"BYTEWAX_PROCESS_ID": "1"})
    with pytest.raises(ClusterConfigError, match="not an index"):
        plan_cluster({"BYTEWAX_PROCESS_ID": "2", "BYTEWAX_ADDRESSES": "h0:1;h1:1"})


def test_plan_agrees_with_bytewax_runs_own_derivation(tmp_path, monkeypatch):
    """Where bytewax.run derives -i/-a itself (chart env + hostfile), it picks what plan_cluster picks."""
    from bytewax import run

    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text("".join(f"{STS}-{i}.{STS}.ns.svc.cluster.local:9999\n" for i in range(3)))
    env = {
        "BYTEWAX_POD_NAME": f"{STS}-2",
        "BYTEWAX_STATEFULSET_NAME": STS,
        "BYTEWAX_HOSTFILE_PATH": str(hostfile),
    }
    for key in ("BYTEWAX_PROCESS_ID", "BYTEWAX_ADDRESSES", "BYTEWAX_RECOVERY_DIRECTORY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["bytewax.run", "flows.fraud:flow"])
    args = run._parse_args()
    plan = plan_cluster(env)
    assert (args.process_id, tuple(args.addresses.split(";"))) == (plan.process_id, plan.addresses)


def test_pod_settings_read_the_sg_variables_blank_as_unset_and_name_a_bad_one():
    from pathlib import Path

    from pydantic import ValidationError

    from streamguard.deploy.pod.settings import PodSettings

    pod = PodSettings.from_env(
        {"SG_NAMESPACE": " ns ", "SG_DNS_WAIT_S": "5", "SG_MODEL_SEED_DIR": "/seed", "SG_PEER_PORT": " "}
    )
    assert (pod.namespace, pod.dns_wait_s, pod.model_seed_dir) == ("ns", 5, Path("/seed"))
    assert (pod.peer_port, pod.cluster_domain, pod.recovery_holders) == (9999, "cluster.local", None)
    with pytest.raises(ValidationError):
        pod.namespace = "other"  # frozen
    for bad in ("5s", "0", "+5", "\u00b2"):
        with pytest.raises(
            ClusterConfigError, match=re.escape(f"SG_DNS_WAIT_S must be a positive integer, got {bad!r}")
        ):
            PodSettings.from_env({"SG_DNS_WAIT_S": bad})
