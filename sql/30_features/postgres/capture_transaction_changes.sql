-- PostgreSQL only. After each insert into transactions_src: log the change of each terminal's daily count.
-- The `transactions` view keeps the first row of each transaction id (by partition, offset), so a row
-- counts only if it is that first row, and a row that becomes first in place of an earlier-inserted one
-- moves the count from the old row's (terminal, day) to its own. Then re-capture the frauds of those ids
-- that have a fraud label already (it may arrive before its transaction).
CREATE OR REPLACE FUNCTION capture_transaction_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    ids := ARRAY(SELECT DISTINCT (data->>'transaction_id')::bigint FROM new_rows);
    INSERT INTO terminal_feature_changes (terminal_id, day, n_transactions)
    SELECT terminal_id, day, sum(delta)
    FROM (
        SELECT * FROM (
            SELECT DISTINCT ON (r.id) r.terminal_id, r.day, 1 AS delta
            FROM (
                SELECT (s.data->>'transaction_id')::bigint AS id, s.data->>'terminal_id' AS terminal_id,
                       ((s.data->>'ts')::timestamptz AT TIME ZONE 'UTC'::text)::date AS day,
                       s."partition", s."offset"
                FROM transactions_src AS s
                WHERE (s.data->>'transaction_id')::bigint = ANY(ids)
            ) AS r
            ORDER BY r.id, r."partition", r."offset"
        ) AS now_first
        UNION ALL
        SELECT * FROM (
            SELECT DISTINCT ON (r.id) r.terminal_id, r.day, -1 AS delta
            FROM (
                SELECT (s.data->>'transaction_id')::bigint AS id, s.data->>'terminal_id' AS terminal_id,
                       ((s.data->>'ts')::timestamptz AT TIME ZONE 'UTC'::text)::date AS day,
                       s."partition", s."offset"
                FROM transactions_src AS s
                WHERE (s.data->>'transaction_id')::bigint = ANY(ids)
                  AND NOT EXISTS (
                      SELECT 1 FROM new_rows AS n
                      WHERE n."partition" = s."partition" AND n."offset" = s."offset"
                  )
            ) AS r
            ORDER BY r.id, r."partition", r."offset"
        ) AS before_first
    ) AS d
    GROUP BY terminal_id, day
    HAVING sum(delta) <> 0;
    ids := ARRAY(
        SELECT DISTINCT (l.data->>'transaction_id')::bigint
        FROM labels_src AS l
        WHERE (l.data->>'transaction_id')::bigint = ANY(ids) AND (l.data->>'is_fraud')::boolean
    );
    IF cardinality(ids) > 0 THEN
        PERFORM capture_fraud_changes(ids);
    END IF;
    RETURN NULL;
END
$$;
