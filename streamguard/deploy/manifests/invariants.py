"""Rules that tie rendered objects together, which no schema can see.

Each rule guards a failure that only shows in a running cluster: a Bytewax cluster that never forms (replica
count and addresses disagree, peers not resolvable before Ready), input that stalls (Kafka partitions not a
multiple of the workers, bytewax GH#556), topics the flow writes to but nobody created, a retraining job
that disagrees with the flow about label delay, a reference to an object that does not exist, a GPU pod
on a CPU image. Every function returns a list of problems; empty means fine.
"""

from __future__ import annotations

from typing import Any

from streamguard.deploy.manifests.objects import (
    CONFIGMAP,
    FLOW_STATEFULSET,
    containers,
    find,
    literal_env,
    name_of,
    pod_spec,
    streamguard_image,
)
from streamguard.deploy.manifests.render import CLUSTER_SCOPED_KINDS, split_image

WORKER_PORT = 9999
API_PORT = 3030


def invariant_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Run every cross-object rule on one rendered overlay."""
    data = find(objects, "ConfigMap", CONFIGMAP)[0].get("data") or {}
    (sts,) = find(objects, "StatefulSet", FLOW_STATEFULSET)
    return (
        flow_cluster_problems(objects, sts, data)
        + topic_problems(objects, sts, data)
        + job_problems(objects, data)
        + reference_problems(objects)
        + security_problems(objects)
    )


def total_workers(sts: dict[str, Any]) -> int:
    env = literal_env(sts["spec"]["template"]["spec"]["containers"][0])
    return int(sts["spec"]["replicas"]) * int(env.get("BYTEWAX_WORKERS_PER_PROCESS", "1"))


def flow_cluster_problems(
    objects: list[dict[str, Any]], sts: dict[str, Any], data: dict[str, str]
) -> list[str]:
    """The StatefulSet, its env and its headless Service must describe one Bytewax cluster."""
    problems = []
    pod = sts["spec"]["template"]
    flow = pod["spec"]["containers"][0]
    env = literal_env(flow)
    replicas = sts["spec"]["replicas"]
    where = f"StatefulSet {FLOW_STATEFULSET}"
    if str(replicas) != env.get("BYTEWAX_REPLICAS"):
        problems.append(f"{where}: replicas {replicas} != BYTEWAX_REPLICAS {env.get('BYTEWAX_REPLICAS')}")
    if not 1 <= int(env.get("SG_RECOVERY_HOLDERS", "0")) <= replicas:
        problems.append(f"{where}: SG_RECOVERY_HOLDERS must be in 1..replicas ({replicas})")
    if env.get("BYTEWAX_STATEFULSET_NAME") != FLOW_STATEFULSET:
        problems.append(f"{where}: BYTEWAX_STATEFULSET_NAME must be {FLOW_STATEFULSET}")
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        problems.append(f"{where}: podManagementPolicy must be Parallel (every process starts together)")
    if int(data["STREAMGUARD_RECOVERY_PARTITIONS"]) < total_workers(sts):
        problems.append(
            f"STREAMGUARD_RECOVERY_PARTITIONS < {total_workers(sts)} workers: some snapshot nothing"
        )

    ports = {p["name"]: p["containerPort"] for p in flow.get("ports", [])}
    if ports != {"worker": WORKER_PORT, "api": API_PORT}:
        problems.append(f"{where}: flow ports must be worker {WORKER_PORT} and api {API_PORT}, got {ports}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if (flow.get(probe) or {}).get("httpGet", {}).get("port") != "api":
            problems.append(f"{where}: {probe} must be an HTTP GET on port `api` (Bytewax's /metrics)")
    mounts = {m["mountPath"]: m["name"] for m in flow.get("volumeMounts", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if mounts.get(env.get("BYTEWAX_RECOVERY_DIRECTORY", "")) not in claims:
        problems.append(
            f"{where}: BYTEWAX_RECOVERY_DIRECTORY must be a per-pod volume (volumeClaimTemplates)"
        )

    services = find(objects, "Service", sts["spec"]["serviceName"])
    if not services:
        return [*problems, f"{where}: no Service {sts['spec']['serviceName']}"]
    svc = services[0]["spec"]
    if svc.get("clusterIP") != "None" or not svc.get("publishNotReadyAddresses"):
        problems.append(
            "flow Service must be headless and publish not-ready addresses (peers meet before Ready)"
        )
    if not set(svc["selector"].items()) <= set(pod["metadata"]["labels"].items()):
        problems.append("flow Service selector does not select the flow pods")
    if [p["port"] for p in svc.get("ports", []) if p["name"] == "worker"] != [WORKER_PORT]:
        problems.append(f"flow Service must expose port `worker` {WORKER_PORT} (SG_PEER_PORT default)")
    return problems


def topic_problems(objects: list[dict[str, Any]], sts: dict[str, Any], data: dict[str, str]) -> list[str]:
    """Every logical topic exists once, with the configured partitions, spread evenly over the workers."""
    from streamguard.core.settings import TOPIC_NAMES

    topics = find(objects, "KafkaTopic")
    if not topics:
        return []
    problems = []
    names = sorted(t["spec"]["topicName"] for t in topics)
    expected = sorted(data.get("STREAMGUARD_TOPIC_PREFIX", "") + n for n in TOPIC_NAMES)
    if names != expected:
        problems.append(f"KafkaTopics {names} != STREAMGUARD_TOPIC_PREFIX + TOPIC_NAMES {expected}")
    workers = total_workers(sts)
    for topic in topics:
        spec, name = topic["spec"], name_of(topic)
        if str(spec["partitions"]) != data["STREAMGUARD_TOPIC_PARTITIONS"]:
            problems.append(f"{name}: partitions {spec['partitions']} != STREAMGUARD_TOPIC_PARTITIONS")
        if spec["partitions"] % workers:
            problems.append(
                f"{name}: {spec['partitions']} partitions do not split evenly over {workers} workers"
            )
        min_isr = spec["config"].get("min.insync.replicas", 1)
        if min_isr > spec["replicas"] or (spec["replicas"] > 1 and min_isr >= spec["replicas"]):
            problems.append(f"{name}: min.insync.replicas {min_isr} leaves no room for one broker down")
        bootstrap = f"{topic['metadata']['labels']['strimzi.io/cluster']}-kafka-bootstrap.{topic['metadata']['namespace']}."
        if not data["STREAMGUARD_KAFKA_BOOTSTRAP"].startswith(bootstrap):
            problems.append(f"{name}: STREAMGUARD_KAFKA_BOOTSTRAP does not start with {bootstrap}")
    return problems


def job_problems(objects: list[dict[str, Any]], data: dict[str, str]) -> list[str]:
    """The SQL Job targets Materialize; retraining uses the flow's label delay and promotes only if better."""
    problems = []
    for obj in find(objects, "Job") + find(objects, "CronJob"):
        args = next(containers(obj)).get("args", [])
        if args[:2] == ["sql", "apply"] and args[2:] != ["--target", "materialize"]:
            problems.append(f"{name_of(obj)}: must run `sql apply --target materialize`")
        if args[:1] == ["train"]:
            delay = args[args.index("--delay-days") + 1] if "--delay-days" in args else None
            if delay != data["STREAMGUARD_LABEL_DELAY_DAYS"]:
                problems.append(f"{name_of(obj)}: --delay-days {delay} != STREAMGUARD_LABEL_DELAY_DAYS")
            if "--promote-if-better" not in args:
                problems.append(f"{name_of(obj)}: must promote only if better (--promote-if-better)")
    return problems


def reference_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Objects have namespaces, refer to objects that exist, run one image; no Secret is rendered."""
    problems = []
    if find(objects, "Secret"):
        problems.append("a Secret is rendered: secret values must not live in the repository")
    image = streamguard_image(objects)
    existing = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED_KINDS and not obj["metadata"].get("namespace"):
            problems.append(f"{name_of(obj)} has no namespace")
        spec = pod_spec(obj)
        if spec is None:
            continue
        namespace = obj["metadata"].get("namespace")
        wanted = [("ServiceAccount", spec.get("serviceAccountName", "default"))]
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                wanted.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        for container in containers(obj):
            wanted += [
                ("ConfigMap", e["configMapRef"]["name"])
                for e in container.get("envFrom", [])
                if "configMapRef" in e
            ]
            same_repository = split_image(container["image"])[0] == split_image(image)[0]
            if same_repository and container["image"] != image:
                problems.append(
                    f"{name_of(obj)} {container['name']} runs {container['image']}, the flow {image}"
                )
        for kind, name in wanted:
            if name != "default" and (kind, namespace, name) not in existing:
                problems.append(f"{name_of(obj)} refers to a missing {kind} {namespace}/{name}")
    return problems


def security_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Pods run non-root with read-only roots and no capabilities; GPU pods run the GPU image on GPU nodes."""
    problems = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        if not (spec.get("securityContext") or {}).get("runAsNonRoot"):
            problems.append(f"{name_of(obj)}: the pod must set runAsNonRoot")
        for container in containers(obj):
            where = f"{name_of(obj)} {container['name']}"
            ctx = container.get("securityContext") or {}
            if not ctx.get("readOnlyRootFilesystem") or ctx.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: needs readOnlyRootFilesystem and allowPrivilegeEscalation: false")
            if (ctx.get("capabilities") or {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: must drop ALL capabilities")
            if not (container.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu"):
                continue
            if not (split_image(container["image"])[1] or "").endswith("-gpu"):
                problems.append(f"{where}: requests a GPU but runs a CPU image (tag without -gpu)")
            if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
                problems.append(f"{where}: requests a GPU but does not tolerate the nvidia.com/gpu taint")
            if literal_env(container).get("STREAMGUARD_SCORER_DEVICE") != "gpu":
                problems.append(f"{where}: requests a GPU but does not set STREAMGUARD_SCORER_DEVICE=gpu")
    return problems
