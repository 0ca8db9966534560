-- PostgreSQL only. Materialize's mz_now() is the query's logical time; here it is the transaction's wall
-- clock, so views with temporal filters (`mz_now() <= ts + INTERVAL '7 days'`) run unchanged on PostgreSQL.
-- STABLE (not IMMUTABLE) because its value changes between statements, as mz_now() does.
CREATE OR REPLACE FUNCTION mz_now() RETURNS timestamptz LANGUAGE sql STABLE AS 'SELECT now()';
