-- Materialize only; not run by the tests here. People look terminals up by id in terminal_risk_current;
-- the index keeps the view maintained (its temporal filters retract rows at midnight) and makes
-- `WHERE terminal_id = '...'` a point lookup.
CREATE INDEX IF NOT EXISTS terminal_risk_current_idx
    IN CLUSTER streamguard_serving
    ON terminal_risk_current (terminal_id);
