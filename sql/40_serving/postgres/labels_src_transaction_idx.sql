-- PostgreSQL only. Joins labels to their transactions by id (fraud_first_known, training_examples).
CREATE INDEX IF NOT EXISTS labels_src_transaction_idx ON labels_src (((data->>'transaction_id')::bigint));
