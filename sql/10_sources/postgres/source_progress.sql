-- PostgreSQL only. How far the store has read each source partition: the next offset and the latest event
-- time (`ts` in the payload) ingested. The mirror updates it in the same transaction as the rows, so it never
-- runs ahead of the data. The scoring flow reads it as the store's freshness watermark: it waits until every
-- partition has passed the event time a batch needs, so a replay gives the same features at any speed.
-- On Materialize the same relation is a view over the sources (see 30_features/materialize/source_progress.sql).
CREATE TABLE IF NOT EXISTS source_progress (
    source text NOT NULL,
    "partition" integer NOT NULL,
    next_offset bigint NOT NULL,
    max_event_ts timestamptz NOT NULL,
    PRIMARY KEY (source, "partition")
);
