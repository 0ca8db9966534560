-- Materialize only; not run here. The flow polls the freshness watermark before every feature read.
CREATE INDEX IF NOT EXISTS source_progress_idx ON source_progress (source, "partition");
