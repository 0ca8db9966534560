-- PostgreSQL only. Joins transactions to their labels and decisions by id.
CREATE INDEX IF NOT EXISTS transactions_src_transaction_idx ON transactions_src (((data->>'transaction_id')::bigint));
