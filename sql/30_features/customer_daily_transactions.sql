-- Per customer and UTC day: how many transactions and how much money, the customer twin of
-- terminal_daily_transactions. People and training use it for label-based customer history at any as-of
-- day; the flow computes its own exact rolling customer features and does not read this view.
CREATE OR REPLACE VIEW customer_daily_transactions AS
SELECT
    customer_id,
    (ts AT TIME ZONE 'UTC'::text)::date AS day,
    count(*) AS n_transactions,
    sum(amount) AS amount_sum
FROM transactions
GROUP BY customer_id, (ts AT TIME ZONE 'UTC'::text)::date;
