-- Materialize only; not run by the tests here. Keeps the customers' sliding-window activity maintained in
-- the serving cluster, so `WHERE customer_id = '...'` is a point lookup and windows expire on time.
CREATE INDEX IF NOT EXISTS customer_activity_current_idx
    IN CLUSTER streamguard_serving
    ON customer_activity_current (customer_id);
