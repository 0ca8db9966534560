-- Materialize only; not run by the tests here. How far the store has read each source partition: the next
-- offset (of any message, valid or not) and the latest event time of the messages the contract accepts
-- (the parsed views refuse e.g. a label stamped years ahead of its Kafka timestamp, so one such label cannot
-- make the store look fresh for every day to come). The flow reads it as the store's freshness watermark
-- (on PostgreSQL a table the mirror keeps, 10_sources/postgres). Materialize's `offset` is uint8, which
-- psycopg cannot read: it is cast to bigint as on PostgreSQL.
CREATE VIEW IF NOT EXISTS source_progress AS
SELECT 'transactions' AS source, r."partition", r.next_offset, v.max_event_ts
FROM (
    SELECT "partition", max("offset")::bigint + 1 AS next_offset FROM transactions_src GROUP BY "partition"
) AS r
LEFT JOIN (SELECT "partition", max(ts) AS max_event_ts FROM transactions GROUP BY "partition") AS v
    ON v."partition" = r."partition"
UNION ALL
SELECT 'labels' AS source, r."partition", r.next_offset, v.max_event_ts
FROM (SELECT "partition", max("offset")::bigint + 1 AS next_offset FROM labels_src GROUP BY "partition") AS r
LEFT JOIN (SELECT "partition", max(ts) AS max_event_ts FROM labels GROUP BY "partition") AS v
    ON v."partition" = r."partition";
