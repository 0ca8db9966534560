-- Materialize only; not run by the tests here. How far the store has read each source partition: the next
-- offset and the latest event time (`ts` in the payload). The flow polls it before every feature read as
-- the store's freshness watermark (on PostgreSQL a table the mirror keeps, 10_sources/postgres).
-- Materialize's `offset` is uint8, which psycopg cannot read: it is cast to bigint as on PostgreSQL.
CREATE VIEW IF NOT EXISTS source_progress AS
SELECT
    'transactions' AS source,
    "partition",
    max("offset")::bigint + 1 AS next_offset,
    max((data->>'ts')::timestamptz) AS max_event_ts
FROM transactions_src
GROUP BY "partition"
UNION ALL
SELECT
    'labels' AS source,
    "partition",
    max("offset")::bigint + 1 AS next_offset,
    max((data->>'ts')::timestamptz) AS max_event_ts
FROM labels_src
GROUP BY "partition";
