-- PostgreSQL only. Lets the decisions view collapse duplicates by transaction id without sorting everything.
CREATE INDEX IF NOT EXISTS decisions_src_transaction_idx
    ON decisions_src (((data->>'transaction_id')::bigint), "partition", "offset");
