"""What every layer shares; imports nothing of ours outside `streamguard.core` (docs/architecture.md).

`settings` (STREAMGUARD_* variables, topic names, devices), `events` (the Kafka event contracts), `topics`,
`features` (the feature catalogue), `store` (connecting to the SQL store), `lookups` (what the flow reads
from the store, with its SQL), `run_command` (the `bytewax.run` argv), `paths`, `env_example`.
"""
