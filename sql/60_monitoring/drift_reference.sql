-- Each model version's training-time distributions, as bins: per feature and for the score (feature
-- 'score'), `lower_bound < value <= upper_bound` (a NULL bound is unbounded) with the share of the training
-- rows in it, and one bin (is_missing) for NULL values. Written from the model's metadata
-- (`metadata.json` drift_reference, models/drift_reference.py) by `streamguard drift publish`; the drift
-- views compare the served features with it. A table on both systems: Materialize keeps tables too.
CREATE TABLE IF NOT EXISTS drift_reference (
    model_version text NOT NULL,
    feature text NOT NULL,
    bin integer NOT NULL,
    lower_bound double precision,
    upper_bound double precision,
    is_missing boolean NOT NULL,
    expected_share double precision NOT NULL
);
