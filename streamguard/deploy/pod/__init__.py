"""What runs inside a flow pod (stdlib, pydantic-settings and bytewax only).

- `launch`: the Python half of k8s/image/entrypoint.sh, which execs `python -m bytewax.run`;
- `process`: this pod's Bytewax process id and the peer addresses, from StatefulSet facts;
- `recovery`: this pod's share of the recovery partitions, created on first start;
- `seed_models`: copy the model baked into the image into the shared registry volume, once;
- `settings`: the deploy-only `SG_*` variables, read in one place.
"""
