"""Run streamguard's flows on Kubernetes, in two rooms that never import each other.

- `pod`: what runs inside the image (stdlib, pydantic-settings and bytewax only): the entrypoint's Python
  half (`launch`), this pod's place in the Bytewax cluster (`process`), its share of the recovery
  partitions (`recovery`), seeding the shared model registry (`seed_models`), and the deploy-only `SG_*`
  variables (`settings`).
- `manifests`: what runs on a workstation or in CI (also needs PyYAML and kubernetes-validate): render
  k8s/ overlays (`render`, `objects`), check them (`checks`, `invariants`) and deploy with waxctl (`waxctl`).
"""
