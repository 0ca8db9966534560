-- Materialize only; not run by the tests here. The flow reads the freshness watermark before every feature
-- query; indexing it in the serving cluster keeps that read an in-memory peek instead of a recomputation
-- of max() over the sources (`sql check` verifies the key against streamguard/sql/lookup_check.py).
CREATE INDEX IF NOT EXISTS source_progress_idx
    IN CLUSTER streamguard_serving
    ON source_progress (source, "partition");
