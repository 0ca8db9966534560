"""Run streamguard's flows on Kubernetes: derive the Bytewax cluster inside a pod, render and check manifests.

Used inside the image (stdlib, pydantic-settings and bytewax only):
- `process`: this pod's Bytewax process id and the peer addresses, from StatefulSet facts;
- `recovery`: this pod's share of the recovery partitions, created on first start;
- `launch`: the Python half of k8s/image/entrypoint.sh, which execs `python -m bytewax.run`;
- `seed_models`: copy the model baked into the image into the shared registry volume, once.

Used on a workstation or in CI (they also need PyYAML and kubernetes-validate):
- `render`: the subset of kustomize that k8s/ uses; `objects`: queries over rendered objects;
- `checks` and `invariants`: Kubernetes and CR schemas, settings coverage, cross-object rules;
- `waxctl`: the exact `waxctl dataflow deploy` command mirroring an overlay (`make deploy`).
"""
