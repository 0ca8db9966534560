-- Materialize only; not run by the tests here. The cluster that holds the indexes the flow's lookups read.
-- An index serves only sessions in its own cluster, so streamguard's connections to Materialize set
-- `cluster = streamguard_serving` (streamguard/sql/apply.py connect); sources run in streamguard_ingest.
-- No CREATE CLUSTER IF NOT EXISTS in Materialize: `sql apply` skips this file when the cluster exists.
-- Two replicas so that lookups survive the loss of one; resize with ALTER CLUSTER ... SET (SIZE = ...).
CREATE CLUSTER streamguard_serving (SIZE = '100cc', REPLICATION FACTOR = 2);
