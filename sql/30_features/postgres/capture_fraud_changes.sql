-- PostgreSQL only. Re-read the fraud_first_known view for the given transaction ids (index lookups through
-- the view: its definition stays the only one) and log what changed since the last capture: -1 frauds at
-- the old (terminal, day, known_day), +1 at the new. One statement: every part reads the state as it was
-- before it, and the state's deletes and upserts touch different ids. (plpgsql: its body is checked when it
-- first runs, after every table it names exists.)
CREATE OR REPLACE FUNCTION capture_fraud_changes(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
WITH now_rows AS (
    SELECT transaction_id, terminal_id, day, known_day
    FROM fraud_first_known
    WHERE transaction_id = ANY(ids)
),
old_rows AS (
    SELECT transaction_id, terminal_id, day, known_day
    FROM fraud_first_known_state
    WHERE transaction_id = ANY(ids)
),
moved AS (
    SELECT o.terminal_id, o.day, o.known_day, -1 AS delta
    FROM old_rows AS o
    LEFT JOIN now_rows AS n USING (transaction_id)
    WHERE n.transaction_id IS NULL
       OR (n.terminal_id, n.day, n.known_day) IS DISTINCT FROM (o.terminal_id, o.day, o.known_day)
    UNION ALL
    SELECT n.terminal_id, n.day, n.known_day, 1 AS delta
    FROM now_rows AS n
    LEFT JOIN old_rows AS o USING (transaction_id)
    WHERE o.transaction_id IS NULL
       OR (n.terminal_id, n.day, n.known_day) IS DISTINCT FROM (o.terminal_id, o.day, o.known_day)
),
logged AS (
    INSERT INTO terminal_feature_changes (terminal_id, day, known_day, n_frauds)
    SELECT terminal_id, day, known_day, sum(delta)
    FROM moved
    GROUP BY terminal_id, day, known_day
    HAVING sum(delta) <> 0
),
gone AS (
    DELETE FROM fraud_first_known_state AS s
    WHERE s.transaction_id = ANY(ids)
      AND NOT EXISTS (SELECT 1 FROM now_rows AS n WHERE n.transaction_id = s.transaction_id)
)
INSERT INTO fraud_first_known_state (transaction_id, terminal_id, day, known_day)
SELECT transaction_id, terminal_id, day, known_day FROM now_rows
ON CONFLICT (transaction_id) DO UPDATE SET
    terminal_id = excluded.terminal_id, day = excluded.day, known_day = excluded.known_day;
END
$$;
