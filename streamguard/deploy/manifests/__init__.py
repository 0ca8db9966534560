"""Manifest tooling for a workstation or CI (also needs PyYAML and kubernetes-validate).

- `render`: the subset of kustomize that k8s/ uses; `objects`: queries over rendered objects;
- `checks` and `invariants`: Kubernetes and CR schemas, settings coverage, cross-object rules;
- `waxctl`: the exact `waxctl dataflow deploy` command mirroring an overlay (`make deploy`).
"""
