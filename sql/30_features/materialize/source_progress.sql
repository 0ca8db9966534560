-- Materialize only; not run here. The store's freshness per source partition, the relation the flow waits on
-- (on PostgreSQL a table the mirror maintains). Materialize keeps this aggregate incrementally.
CREATE VIEW IF NOT EXISTS source_progress AS
SELECT 'transactions' AS source, "partition", max("offset") + 1 AS next_offset,
       max((data->>'ts')::timestamptz) AS max_event_ts
FROM transactions_src GROUP BY "partition"
UNION ALL
SELECT 'labels' AS source, "partition", max("offset") + 1 AS next_offset,
       max((data->>'ts')::timestamptz) AS max_event_ts
FROM labels_src GROUP BY "partition";
