-- For each transaction confirmed as fraud: its terminal, its own day, and the day its first fraud label
-- became known. Counting a transaction once, at its first fraud label, keeps later duplicate labels from
-- inflating fraud counts; keeping the known day lets a query ask "frauds known before day D" exactly.
CREATE OR REPLACE VIEW fraud_first_known AS
SELECT
    t.transaction_id,
    t.terminal_id,
    t.customer_id,
    (t.ts AT TIME ZONE 'UTC'::text)::date AS day,
    (min(l.ts) AT TIME ZONE 'UTC'::text)::date AS known_day
FROM transactions AS t
JOIN labels AS l ON l.transaction_id = t.transaction_id
WHERE l.is_fraud
GROUP BY t.transaction_id, t.terminal_id, t.customer_id, (t.ts AT TIME ZONE 'UTC'::text)::date;
