-- Per customer, transaction day and known day: confirmed frauds, the customer twin of
-- terminal_daily_frauds. Summing over day in [a, b) with known_day < D gives "frauds among the customer's
-- transactions of days [a, b), as known before day D" for any D, live or historical.
CREATE OR REPLACE VIEW customer_daily_frauds AS
SELECT
    customer_id,
    day,
    known_day,
    count(*) AS n_frauds
FROM fraud_first_known
GROUP BY customer_id, day, known_day;
