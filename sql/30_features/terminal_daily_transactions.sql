-- Per terminal and UTC day: how many transactions and how much money. The daily grain is what the flow's
-- label-based terminal features are built from (windows of whole days), and what its cache is keyed on.
-- `AT TIME ZONE 'UTC'::text`: Materialize needs the zone's type spelled out (a documented limitation).
CREATE OR REPLACE VIEW terminal_daily_transactions AS
SELECT
    terminal_id,
    (ts AT TIME ZONE 'UTC'::text)::date AS day,
    count(*) AS n_transactions,
    sum(amount) AS amount_sum
FROM transactions
GROUP BY terminal_id, (ts AT TIME ZONE 'UTC'::text)::date;
