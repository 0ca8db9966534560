-- PostgreSQL only. Stands in for Materialize's Kafka source `transactions_src` (FORMAT JSON, INCLUDE PARTITION,
-- OFFSET, TIMESTAMP): one jsonb document per message plus its Kafka coordinates, so the parsing views in
-- 20_parsed read the same columns on both systems. The local mirror flow (flows/mirror.py) fills it.
-- The primary key is PostgreSQL-only: it makes the mirror idempotent when Bytewax replays an epoch after a
-- restart (Materialize sources are exactly-once by themselves).
CREATE TABLE IF NOT EXISTS transactions_src (
    data jsonb NOT NULL,
    "partition" integer NOT NULL,
    "offset" bigint NOT NULL,
    "timestamp" timestamptz NOT NULL,
    PRIMARY KEY ("partition", "offset")
);
