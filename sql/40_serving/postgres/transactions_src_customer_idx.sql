-- PostgreSQL only. People look customers up (customer_risk_current, customer_activity_current); PostgreSQL
-- pushes `customer_id = '...'` through the views down to the source table, where this index reads one
-- customer's transactions instead of all. (Materialize serves from indexed views instead.)
CREATE INDEX IF NOT EXISTS transactions_src_customer_idx ON transactions_src ((data->>'customer_id'));
