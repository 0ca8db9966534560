-- PostgreSQL only. The flow's as-of terminal lookups filter on the terminal inside a LATERAL subquery;
-- PostgreSQL pushes that filter through the grouped views down to the source table, where this index turns
-- a scan of every transaction into a scan of one terminal's. (Materialize serves from indexed views instead.)
CREATE INDEX IF NOT EXISTS transactions_src_terminal_idx ON transactions_src ((data->>'terminal_id'));
