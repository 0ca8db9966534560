-- Materialize only; not run by the tests here. The cluster that runs the Kafka sources, apart from the one
-- that serves the flow's lookups (40_serving), so that a backfill after a re-create cannot slow serving.
-- Materialize has no CREATE CLUSTER IF NOT EXISTS: `sql apply` skips this file when the cluster exists.
-- The size is a starting point for three append-only JSON topics; change it with ALTER CLUSTER ... SET (SIZE).
CREATE CLUSTER streamguard_ingest (SIZE = '50cc', REPLICATION FACTOR = 1);
